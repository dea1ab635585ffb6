//! The kubelet API of the virtual nodes. The virtual API server sends `kubectl logs`, `exec`,
//! `attach` and `port-forward` to the kubelet of a pod's node; the virtual nodes advertise the
//! syncer's Service, so they reach this server. It answers the virtual API server only (its
//! kubelet client certificate, see [`identity`]) and for this instance's pods only, each call
//! made on the host API as the syncer (see [`proxy`]).
//!
//! Every replica serves, the standby too: a call needs no cache, only the host API.

mod identity;
mod proxy;
pub mod route;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kube::Client;
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::translate::Target;

/// Bounds on what the kubelet API's callers hold. Its only caller is the virtual API server,
/// but that relays the tenant's calls, and anyone who reaches the syncer's Service can open a
/// connection: neither is trusted with the syncer's memory or the host API's connections.
pub(crate) mod limits {
    use std::time::Duration;

    /// Connecting to the host API server.
    pub const CONNECT: Duration = Duration::from_secs(10);
    /// A caller's TLS handshake.
    pub const HANDSHAKE: Duration = Duration::from_secs(10);
    /// A request's headers, counted from when the connection is ready for it (so an idle
    /// connection is closed too).
    pub const HEADERS: Duration = Duration::from_secs(30);
    /// Reading the pods a call names, before its stream starts.
    pub const LOOKUP: Duration = Duration::from_secs(10);
    /// Connections open at once, TLS sessions made; more are closed.
    pub const CONNECTIONS: usize = 1024;
    /// TLS handshakes under way from one address at once; more are closed. Anyone who reaches
    /// the Service can start handshakes, so they get no share of [`CONNECTIONS`] until they
    /// end, and the virtual API server's own address has its own allowance.
    pub const HANDSHAKES_PER_PEER: usize = 16;
    /// TCP keepalive on both sides: a stream whose peer vanished without closing ends (and
    /// frees its share of [`CALLS`]) within minutes, not never.
    pub const KEEPALIVE: Duration = Duration::from_secs(60);
    /// Calls answered at once (a log stream, an exec, attach or port-forward lasts as long as
    /// the caller keeps it); more are refused with 503.
    pub const CALLS: usize = 256;
}

/// Handshakes under way, counted per address.
mod handshakes {
    use std::collections::HashMap;
    use std::net::IpAddr;
    use std::sync::{Arc, Mutex};

    #[derive(Default, Clone)]
    pub struct PerPeer(Arc<Mutex<HashMap<IpAddr, usize>>>);

    /// One handshake of `peer`, counted until dropped.
    pub struct Handshake {
        of: PerPeer,
        peer: IpAddr,
    }

    impl PerPeer {
        /// Counts a handshake of `peer`, unless it has `most` under way already.
        pub fn start(&self, peer: IpAddr, most: usize) -> Option<Handshake> {
            let mut counts = self.0.lock().expect("handshake counts");
            let count = counts.entry(peer).or_default();
            if *count >= most {
                return None;
            }
            *count += 1;
            Some(Handshake {
                of: self.clone(),
                peer,
            })
        }
    }

    impl Drop for Handshake {
        fn drop(&mut self) {
            let mut counts = self.of.0.lock().expect("handshake counts");
            if let Some(count) = counts.get_mut(&self.peer) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&self.peer);
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn each_address_has_its_own_allowance_and_gets_it_back() {
            let counts = super::PerPeer::default();
            let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
            let first = counts.start(a, 2).unwrap();
            let _second = counts.start(a, 2).unwrap();
            assert!(counts.start(a, 2).is_none());
            assert!(counts.start(b, 2).is_some());
            drop(first);
            assert!(counts.start(a, 2).is_some());
        }
    }
}

/// Where the kubelet API listens and with which certificates.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The CA of the virtual API server's client certificate.
    pub client_ca_file: PathBuf,
}

/// A client of the host API server for the kubelet API's calls: the syncer's credentials, on
/// connections that send small writes at once. Streams are interactive (a keystroke, a frame
/// opening exec's stdout): with Nagle's algorithm each waits for the peer's delayed ACK, tens
/// of milliseconds per exchange. kube's own client leaves it on.
pub fn stream_client(config: &kube::Config) -> anyhow::Result<Client> {
    use kube::client::ConfigExt as _;
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(limits::CONNECT));
    http.set_keepalive(Some(limits::KEEPALIVE));
    let https = config.rustls_https_connector_with_connector(http)?;
    let hyper = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(https);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(|err: hyper_util::client::legacy::Error| -> proxy::BoxError { err.into() })
        .service(hyper);
    Ok(Client::new(service, config.default_namespace.clone()))
}

/// Binds the kubelet API and serves it until the process ends. `host` makes the calls,
/// `virt` reads the virtual pods they name.
pub async fn start(
    settings: &Settings,
    host: Client,
    virt: Client,
    target: Target,
    metrics: Arc<Metrics>,
) -> anyhow::Result<SocketAddr> {
    let tls = identity::server_config(settings)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding the kubelet API to {}", settings.listen))?;
    let bound = listener.local_addr()?;
    let proxy = Arc::new(proxy::Proxy::new(host, virt, target, metrics));
    let connections = Arc::new(tokio::sync::Semaphore::new(limits::CONNECTIONS));
    let handshakes = handshakes::PerPeer::default();
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(%err, "kubelet API: accepting a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(handshake) = handshakes.start(peer.ip(), limits::HANDSHAKES_PER_PEER) else {
                tracing::debug!(%peer, "kubelet API: too many handshakes from one address");
                continue;
            };
            // As on the host side (see `stream_client`).
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::debug!(%peer, %err, "kubelet API: TCP_NODELAY");
            }
            let keepalive = socket2::TcpKeepalive::new().with_time(limits::KEEPALIVE);
            if let Err(err) = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive) {
                tracing::debug!(%peer, %err, "kubelet API: TCP keepalive");
            }
            let acceptor = acceptor.clone();
            let proxy = proxy.clone();
            let connections = connections.clone();
            tokio::spawn(async move {
                let tls = tokio::time::timeout(limits::HANDSHAKE, acceptor.accept(tcp)).await;
                drop(handshake);
                let tls = match tls {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(err)) => {
                        tracing::debug!(%peer, %err, "kubelet API: TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "kubelet API: TLS handshake timed out");
                        return;
                    }
                };
                let Ok(_permit) = connections.try_acquire_owned() else {
                    tracing::warn!(%peer, "kubelet API: {} connections open, closing one more",
                        limits::CONNECTIONS);
                    return;
                };
                let caller = identity::caller(tls.get_ref().1.peer_certificates());
                let service = service_fn(move |request| {
                    let proxy = proxy.clone();
                    let caller = caller.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(proxy.handle(request, &caller).await)
                    }
                });
                if let Err(err) = http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(limits::HEADERS)
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades()
                    .await
                {
                    tracing::debug!(%peer, %err, "kubelet API: connection ended");
                }
            });
        }
    });
    tracing::info!(address = %bound, "serving the kubelet API of the virtual nodes");
    Ok(bound)
}
