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
    let https = config.rustls_https_connector_with_connector(http)?;
    let hyper = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(https);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .map_err(|err: hyper_util::client::legacy::Error| -> proxy::BoxError { err.into() })
        .service(hyper);
    Ok(Client::new(service, config.default_namespace.clone()))
}

/// Binds the kubelet API and serves it until the process ends.
pub async fn start(
    settings: &Settings,
    host: Client,
    target: Target,
    metrics: Arc<Metrics>,
) -> anyhow::Result<SocketAddr> {
    let tls = identity::server_config(settings)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding the kubelet API to {}", settings.listen))?;
    let bound = listener.local_addr()?;
    let proxy = Arc::new(proxy::Proxy::new(host, target, metrics));
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
            // As on the host side (see `stream_client`).
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::debug!(%peer, %err, "kubelet API: TCP_NODELAY");
            }
            let acceptor = acceptor.clone();
            let proxy = proxy.clone();
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(tls) => tls,
                    Err(err) => {
                        tracing::debug!(%peer, %err, "kubelet API: TLS handshake refused");
                        return;
                    }
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
