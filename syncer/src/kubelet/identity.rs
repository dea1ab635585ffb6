//! Who may call the kubelet API: TLS with a client certificate the instance's CA signed, whose
//! common name is the virtual API server's kubelet client. The CA signs other clients too (the
//! admin, the syncer itself), so the name is checked as well.

use std::sync::Arc;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use virtualcluster_crds::kubelet::CLIENT_COMMON_NAME;

use super::Settings;

/// The caller of a connection, from its verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The virtual API server.
    ApiServer,
    /// Another client of the instance's CA, by common name.
    Other(String),
}

/// TLS that requires a client certificate signed by the CA in `client_ca_file`.
pub fn server_config(settings: &Settings) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = CertificateDer::pem_file_iter(&settings.cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading {}", settings.cert_file.display()))?;
    let key = PrivateKeyDer::from_pem_file(&settings.key_file)
        .with_context(|| format!("reading {}", settings.key_file.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&settings.client_ca_file)
        .with_context(|| format!("reading {}", settings.client_ca_file.display()))?
    {
        roots.add(ca?)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .context("the kubelet API's serving certificate and key")?;
    // Upgraded streams (SPDY, WebSocket) need HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The caller presenting `certificates` (already verified against the CA).
pub fn caller(certificates: Option<&[CertificateDer<'_>]>) -> Caller {
    let Some(leaf) = certificates.and_then(|c| c.first()) else {
        return Caller::Other(String::new());
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else {
        return Caller::Other(String::new());
    };
    let names: Vec<&str> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .collect();
    match names.as_slice() {
        [CLIENT_COMMON_NAME] => Caller::ApiServer,
        _ => Caller::Other(names.join(",")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn only_the_kubelet_client_name_is_the_api_server() {
        assert_eq!(caller(Some(&[cert(CLIENT_COMMON_NAME)])), Caller::ApiServer);
        assert_eq!(
            caller(Some(&[cert("virtualcluster:admin")])),
            Caller::Other("virtualcluster:admin".into())
        );
        assert!(matches!(caller(None), Caller::Other(_)));
    }
}
