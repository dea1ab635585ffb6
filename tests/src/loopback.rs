//! Loopback network for tests: plain HTTP as the kubelet probes a container and Prometheus
//! scrapes it, HTTPS with client certificates as an API server calls a kubelet, and an echo
//! server to forward ports to.

use std::time::Duration;

use anyhow::{Context, Result};

/// A plain HTTP/1.0 GET on loopback: status code and body.
pub async fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response)).await??;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status line")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// A client certificate and its key, PEM.
pub struct ClientCert<'a> {
    pub cert: &'a [u8],
    pub key: &'a [u8],
}

/// An HTTP/1.0 GET over TLS on loopback, as a kubelet's client makes it: the server verified
/// against `ca` under `server_name` (an IP or DNS name its certificate must cover), `client`
/// presented when given. Status code and body; a handshake or read the server refuses is an
/// error.
pub async fn https_get(
    port: u16,
    server_name: &str,
    ca: &[u8],
    client: Option<ClientCert<'_>>,
    path: &str,
) -> Result<(u16, String)> {
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca) {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match client {
        Some(client) => config.with_client_auth_cert(
            CertificateDer::pem_slice_iter(client.cert).collect::<Result<Vec<_>, _>>()?,
            PrivateKeyDer::from_pem_slice(client.key)?,
        )?,
        None => config.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from(server_name.to_owned())?;
    let exchange = async {
        let mut tls = connector.connect(name, tcp).await?;
        tls.write_all(format!("GET {path} HTTP/1.0\r\nHost: {server_name}\r\n\r\n").as_bytes())
            .await?;
        let mut response = Vec::new();
        tls.read_to_end(&mut response).await?;
        anyhow::Ok(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange).await??;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status line")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// A TCP echo server on loopback, for as long as the runtime runs: its port.
pub async fn echo_server() -> Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    Ok(port)
}
