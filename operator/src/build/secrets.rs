//! The Secrets: `<name>-certs` (issued once, see [`crate::pki`]), the admin kubeconfig
//! `vc-<name>` users read, and the syncer's kubeconfig.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use virtualcluster_crds::instance::{API_SERVER_SERVICE_PORT, Component, KUBECONFIG_KEY};
use virtualcluster_crds::{keys, kubelet};

use super::{Error, Instance};
use crate::kubeconfig::{self, Identity};
use crate::pki::{self, file};

/// Keys of the admin kubeconfig Secret besides [`KUBECONFIG_KEY`], as users of the documented
/// product know them.
pub const CERTIFICATE_AUTHORITY_KEY: &str = "certificate-authority";
pub const CLIENT_CERTIFICATE_KEY: &str = "client-certificate";
pub const CLIENT_KEY_KEY: &str = "client-key";

/// The certs Secret holding `bundle`.
pub fn certs_secret(instance: &Instance<'_>, bundle: &pki::Bundle) -> Secret {
    let mut metadata = instance.meta(instance.id().certs_secret(), Component::ControlPlane);
    metadata.annotations = Some(bundle.annotations.clone());
    metadata
        .labels
        .get_or_insert_default()
        .insert(keys::CERTIFICATES.into(), "true".into());
    Secret {
        metadata,
        type_: Some("Opaque".into()),
        data: Some(bytes(&bundle.data)),
        ..Default::default()
    }
}

/// The two kubeconfig Secrets.
pub struct KubeconfigSecrets {
    /// `vc-<name>`: the virtual cluster's admin.
    pub admin: Secret,
    /// The syncer's, mounted into its pods: its kubeconfig and its kubelet API's certificates.
    pub syncer: Secret,
}

/// Both kubeconfig Secrets, for the certificates in `certs`.
pub fn kubeconfig_secrets(
    instance: &Instance<'_>,
    certs: &BTreeMap<String, Vec<u8>>,
) -> Result<KubeconfigSecrets, Error> {
    let id = instance.id();
    let get = |key: &'static str| {
        certs
            .get(key)
            .map(Vec::as_slice)
            .ok_or(Error::MissingCert(key))
    };
    let in_cluster = format!("https://{}:{API_SERVER_SERVICE_PORT}", id.api_server_host());
    let admin_server = instance
        .vc
        .spec
        .export_kube_config
        .as_ref()
        .and_then(|e| e.server.clone())
        .unwrap_or_else(|| in_cluster.clone());
    let ca = get(file::CA_CERT)?;
    let (admin_cert, admin_key) = (get(file::ADMIN_CERT)?, get(file::ADMIN_KEY)?);
    let admin_config = kubeconfig::render(&Identity {
        server: &admin_server,
        ca_cert: ca,
        cert: admin_cert,
        key: admin_key,
        user: pki::ADMIN_USER.0,
    });
    let syncer_config = kubeconfig::render(&Identity {
        server: &in_cluster,
        ca_cert: ca,
        cert: get(file::SYNCER_CERT)?,
        key: get(file::SYNCER_KEY)?,
        user: pki::SYNCER_USER.0,
    });
    let secret = |name: String, component, data: BTreeMap<String, Vec<u8>>| Secret {
        metadata: instance.meta(name, component),
        type_: Some("Opaque".into()),
        data: Some(bytes(&data)),
        ..Default::default()
    };
    Ok(KubeconfigSecrets {
        admin: secret(
            id.kubeconfig_secret(),
            Component::ControlPlane,
            BTreeMap::from([
                (KUBECONFIG_KEY.to_owned(), admin_config.into_bytes()),
                (CERTIFICATE_AUTHORITY_KEY.to_owned(), ca.to_vec()),
                (CLIENT_CERTIFICATE_KEY.to_owned(), admin_cert.to_vec()),
                (CLIENT_KEY_KEY.to_owned(), admin_key.to_vec()),
            ]),
        ),
        syncer: secret(
            id.syncer_kubeconfig_secret(),
            Component::Syncer,
            BTreeMap::from([
                (KUBECONFIG_KEY.to_owned(), syncer_config.into_bytes()),
                (
                    kubelet::SERVING_CERT_KEY.to_owned(),
                    get(file::KUBELET_SERVING_CERT)?.to_vec(),
                ),
                (
                    kubelet::SERVING_KEY_KEY.to_owned(),
                    get(file::KUBELET_SERVING_KEY)?.to_vec(),
                ),
                (kubelet::CLIENT_CA_KEY.to_owned(), ca.to_vec()),
            ]),
        ),
    })
}

fn bytes(data: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, ByteString> {
    data.iter()
        .map(|(k, v)| (k.clone(), ByteString(v.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;
    use crate::settings::Settings;

    #[test]
    fn the_admin_kubeconfig_reaches_the_service_or_the_exported_address() {
        let settings = Settings::default();
        for (export, expected) in [
            (None, "https://demo.team-a.svc:443"),
            (Some("https://vc.example.com"), "https://vc.example.com"),
        ] {
            let vc = fixtures::vc(|vc| {
                vc.spec.export_kube_config =
                    export.map(|s: &str| virtualcluster_crds::v1alpha1::ExportKubeConfig {
                        server: Some(s.into()),
                    })
            });
            let valid = fixtures::valid(&vc);
            let instance = Instance {
                vc: &vc,
                valid: &valid,
                settings: &settings,
            };
            let certs = fixtures::certs(&instance);
            let secrets = kubeconfig_secrets(&instance, &certs).unwrap();
            assert_eq!(secrets.admin.metadata.name.as_deref(), Some("vc-demo"));
            let data = secrets.admin.data.unwrap();
            let config = String::from_utf8(data[KUBECONFIG_KEY].0.clone()).unwrap();
            let parsed = kube::config::Kubeconfig::from_yaml(&config).unwrap();
            let server = parsed.clusters[0].cluster.as_ref().unwrap().server.clone();
            assert_eq!(server.as_deref(), Some(expected));
            assert_eq!(data[CERTIFICATE_AUTHORITY_KEY].0, certs[file::CA_CERT]);
            assert_eq!(data[CLIENT_CERTIFICATE_KEY].0, certs[file::ADMIN_CERT]);
            assert_eq!(data[CLIENT_KEY_KEY].0, certs[file::ADMIN_KEY]);
        }
    }

    #[test]
    fn a_certs_secret_without_a_key_is_an_error_not_an_empty_kubeconfig() {
        let settings = Settings::default();
        let vc = fixtures::vc(|_| {});
        let valid = fixtures::valid(&vc);
        let instance = Instance {
            vc: &vc,
            valid: &valid,
            settings: &settings,
        };
        let mut certs = fixtures::certs(&instance);
        certs.remove(file::ADMIN_KEY);
        assert!(matches!(
            kubeconfig_secrets(&instance, &certs),
            Err(Error::MissingCert(file::ADMIN_KEY))
        ));
    }
}
