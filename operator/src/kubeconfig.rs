//! Kubeconfig files with the certificates embedded, so that one file is all a client needs.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Who connects where: PEM bytes of the CA that signed the server's certificate, and of the
/// client's certificate and key.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub server: &'a str,
    pub ca_cert: &'a [u8],
    pub cert: &'a [u8],
    pub key: &'a [u8],
    pub user: &'a str,
}

/// Context, cluster and user name in every kubeconfig the operator writes.
pub const CONTEXT: &str = "virtualcluster";

/// The kubeconfig for `identity`, as YAML.
pub fn render(identity: &Identity<'_>) -> String {
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": CONTEXT,
            "cluster": {
                "server": identity.server,
                "certificate-authority-data": STANDARD.encode(identity.ca_cert),
            },
        }],
        "users": [{
            "name": identity.user,
            "user": {
                "client-certificate-data": STANDARD.encode(identity.cert),
                "client-key-data": STANDARD.encode(identity.key),
            },
        }],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": identity.user}}],
        "current-context": CONTEXT,
        "preferences": {},
    });
    serde_yaml::to_string(&config).expect("a kubeconfig always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_reads_what_render_writes() {
        let yaml = render(&Identity {
            server: "https://vc.ns.svc:443",
            ca_cert: b"ca",
            cert: b"cert",
            key: b"key",
            user: "admin",
        });
        let parsed = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
        assert_eq!(parsed.current_context.as_deref(), Some(CONTEXT));
        let cluster = parsed.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://vc.ns.svc:443"));
        let user = parsed.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(
            user.client_certificate_data.as_deref(),
            Some(STANDARD.encode("cert").as_str())
        );
    }
}
