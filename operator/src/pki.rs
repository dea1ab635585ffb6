//! The instance's certificates and keys: a CA, serving and peer certificates for the API server
//! and etcd, the service-account signing key, client certificates for the admin, the
//! controller manager and the syncer, and the pair of the kubelet API the syncer serves (its
//! serving certificate, the virtual API server's client certificate). Issued once into `<name>-certs` and kept while valid;
//! [`plan`] decides from the stored Secret alone whether anything must be issued again.

use std::collections::BTreeMap;
use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::kubeconfig;
use virtualcluster_crds::kubelet;

/// File names (Secret keys) of the bundle; the control plane mounts them under
/// [`crate::build::PKI_DIR`].
pub mod file {
    pub const CA_CERT: &str = "ca.crt";
    pub const CA_KEY: &str = "ca.key";
    pub const API_SERVER_CERT: &str = "apiserver.crt";
    pub const API_SERVER_KEY: &str = "apiserver.key";
    pub const API_SERVER_ETCD_CLIENT_CERT: &str = "apiserver-etcd-client.crt";
    pub const API_SERVER_ETCD_CLIENT_KEY: &str = "apiserver-etcd-client.key";
    pub const ETCD_SERVER_CERT: &str = "etcd-server.crt";
    pub const ETCD_SERVER_KEY: &str = "etcd-server.key";
    pub const ETCD_PEER_CERT: &str = "etcd-peer.crt";
    pub const ETCD_PEER_KEY: &str = "etcd-peer.key";
    pub const SERVICE_ACCOUNT_KEY: &str = "sa.key";
    pub const SERVICE_ACCOUNT_PUB: &str = "sa.pub";
    pub const ADMIN_CERT: &str = "admin.crt";
    pub const ADMIN_KEY: &str = "admin.key";
    pub const CONTROLLER_MANAGER_CERT: &str = "controller-manager.crt";
    pub const CONTROLLER_MANAGER_KEY: &str = "controller-manager.key";
    pub const SYNCER_CERT: &str = "syncer.crt";
    pub const SYNCER_KEY: &str = "syncer.key";
    pub const KUBELET_SERVING_CERT: &str = "kubelet-serving.crt";
    pub const KUBELET_SERVING_KEY: &str = "kubelet-serving.key";
    pub const KUBELET_CLIENT_CERT: &str = "kubelet-client.crt";
    pub const KUBELET_CLIENT_KEY: &str = "kubelet-client.key";
    /// The controller manager's kubeconfig (it reaches the API server on loopback).
    pub const CONTROLLER_MANAGER_KUBECONFIG: &str = "controller-manager.conf";

    pub const ALL: [&str; 23] = [
        CA_CERT,
        CA_KEY,
        API_SERVER_CERT,
        API_SERVER_KEY,
        API_SERVER_ETCD_CLIENT_CERT,
        API_SERVER_ETCD_CLIENT_KEY,
        ETCD_SERVER_CERT,
        ETCD_SERVER_KEY,
        ETCD_PEER_CERT,
        ETCD_PEER_KEY,
        SERVICE_ACCOUNT_KEY,
        SERVICE_ACCOUNT_PUB,
        ADMIN_CERT,
        ADMIN_KEY,
        CONTROLLER_MANAGER_CERT,
        CONTROLLER_MANAGER_KEY,
        SYNCER_CERT,
        SYNCER_KEY,
        KUBELET_SERVING_CERT,
        KUBELET_SERVING_KEY,
        KUBELET_CLIENT_CERT,
        KUBELET_CLIENT_KEY,
        CONTROLLER_MANAGER_KUBECONFIG,
    ];
}

/// Files read at every reconcile: they go into the kubeconfigs and the syncer's credentials.
const READ_OFTEN: [&str; 7] = [
    file::CA_CERT,
    file::ADMIN_CERT,
    file::ADMIN_KEY,
    file::SYNCER_CERT,
    file::SYNCER_KEY,
    file::KUBELET_SERVING_CERT,
    file::KUBELET_SERVING_KEY,
];

/// The bundle as the operator keeps it in memory: the files it reads at every reconcile, and
/// the SHA-256 of each other one (enough to tell whether it is there and when it changed). A
/// stored bundle is read whole only to issue leaves with its CA.
pub fn digested(data: &mut BTreeMap<String, Vec<u8>>) {
    use sha2::{Digest, Sha256};
    for (key, value) in data.iter_mut() {
        if !READ_OFTEN.contains(&key.as_str()) && !value.is_empty() {
            *value = Sha256::digest(value.as_slice()).to_vec();
        }
    }
}

/// Annotations on the certs Secret that let [`plan`] judge it without parsing certificates.
pub mod annotation {
    /// RFC 3339 time after which the CA is no longer valid.
    pub const CA_NOT_AFTER: &str = "virtualcluster.dev/ca-not-after";
    /// RFC 3339 time after which the first leaf certificate expires.
    pub const LEAF_NOT_AFTER: &str = "virtualcluster.dev/leaf-not-after";
    /// The names and addresses the API server's serving certificate covers, comma-separated,
    /// then `;` and those of the syncer's kubelet API.
    pub const SERVING_NAMES: &str = "virtualcluster.dev/serving-names";
}

/// How long a CA is valid.
const CA_VALIDITY: Duration = Duration::days(3650);
/// How long a leaf certificate is valid.
const LEAF_VALIDITY: Duration = Duration::days(365);
/// Certificates closer to expiry than this are issued again.
const RENEW_BEFORE: Duration = Duration::days(30);

/// Identity (common name, organization) of each client certificate.
pub const ADMIN_USER: (&str, &str) = ("virtualcluster:admin", "system:masters");
pub const SYNCER_USER: (&str, &str) = ("virtualcluster:syncer", "system:masters");
pub const CONTROLLER_MANAGER_USER: &str = "system:kube-controller-manager";

/// Port the virtual API server listens on inside the control plane pod.
pub const API_SERVER_PORT: u16 = 6443;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("generating certificates: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("the stored CA key cannot be read: {0}")]
    CaKey(rcgen::Error),
    #[error("{0} is not a DNS name or IP address")]
    BadName(String),
}

/// What the certificates must cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    /// Common name of the CA, unique per instance (`namespace/name`).
    pub ca_name: String,
    /// DNS names and IP addresses of the API server's serving certificate.
    pub api_server: Vec<String>,
    /// DNS names and IP addresses of etcd's serving and peer certificates.
    pub etcd: Vec<String>,
    /// DNS names and IP addresses of the syncer's kubelet API (its Service's).
    pub kubelet: Vec<String>,
}

impl Subjects {
    fn serving_names(&self) -> String {
        format!("{};{}", self.api_server.join(","), self.kubelet.join(","))
    }
}

/// What to do with the stored bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// It is complete, valid for long enough and covers every name: keep it as it is.
    Keep,
    /// The CA is fine, but a leaf expires soon or the serving certificate misses a name: issue
    /// the leaves again with the same CA, so existing trust stays.
    ReissueLeaves,
    /// Nothing usable is stored (or the CA expires soon): issue everything.
    IssueAll,
}

/// Decides from the stored Secret's data and annotations what must be issued.
pub fn plan(
    data: Option<&BTreeMap<String, Vec<u8>>>,
    annotations: Option<&BTreeMap<String, String>>,
    subjects: &Subjects,
    now: OffsetDateTime,
) -> Plan {
    let (Some(data), Some(annotations)) = (data, annotations) else {
        return Plan::IssueAll;
    };
    let time = |key: &str| {
        annotations.get(key).and_then(|t| {
            OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
    };
    let fresh = |t: Option<OffsetDateTime>| t.is_some_and(|t| t - RENEW_BEFORE > now);
    let has_ca = [file::CA_CERT, file::CA_KEY]
        .iter()
        .all(|k| data.get(*k).is_some_and(|v| !v.is_empty()));
    if !has_ca || !fresh(time(annotation::CA_NOT_AFTER)) {
        return Plan::IssueAll;
    }
    let complete = file::ALL
        .iter()
        .all(|k| data.get(*k).is_some_and(|v| !v.is_empty()));
    let names_covered =
        annotations.get(annotation::SERVING_NAMES) == Some(&subjects.serving_names());
    if complete && names_covered && fresh(time(annotation::LEAF_NOT_AFTER)) {
        Plan::Keep
    } else {
        Plan::ReissueLeaves
    }
}

/// A freshly issued bundle: the Secret's data and annotations.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub data: BTreeMap<String, Vec<u8>>,
    pub annotations: BTreeMap<String, String>,
}

/// Issues the bundle `plan` asked for. With [`Plan::ReissueLeaves`], the CA and the
/// service-account key come from `stored`; everything else is new.
pub fn issue(
    plan: Plan,
    stored: Option<&BTreeMap<String, Vec<u8>>>,
    stored_annotations: Option<&BTreeMap<String, String>>,
    subjects: &Subjects,
    now: OffsetDateTime,
) -> Result<Bundle, Error> {
    let mut data = BTreeMap::new();
    let mut annotations = BTreeMap::new();
    let ca_params = ca_params(&subjects.ca_name, now);
    let reuse = match (plan, stored) {
        (Plan::ReissueLeaves, Some(stored)) => Some(stored),
        _ => None,
    };
    let ca = match reuse {
        Some(stored) => {
            let pem = String::from_utf8_lossy(&stored[file::CA_KEY]).into_owned();
            let key = KeyPair::from_pem(&pem).map_err(Error::CaKey)?;
            for k in [file::CA_CERT, file::CA_KEY] {
                data.insert(k.to_owned(), stored[k].clone());
            }
            let ca_not_after = stored_annotations
                .and_then(|a| a.get(annotation::CA_NOT_AFTER))
                .cloned()
                .unwrap_or_default();
            annotations.insert(annotation::CA_NOT_AFTER.to_owned(), ca_not_after);
            // Signing needs only the CA's name and key: the stored certificate was made from
            // the same name, so certificates signed now chain to it.
            Issuer::new(ca_params, key)
        }
        None => {
            let key = KeyPair::generate()?;
            let cert = ca_params.self_signed(&key)?;
            data.insert(file::CA_CERT.to_owned(), cert.pem().into_bytes());
            data.insert(file::CA_KEY.to_owned(), key.serialize_pem().into_bytes());
            annotations.insert(
                annotation::CA_NOT_AFTER.to_owned(),
                rfc3339(ca_params.not_after),
            );
            Issuer::new(ca_params, key)
        }
    };

    // The service-account key signs every token of the virtual cluster; a new one would void
    // them all, so it is kept whenever the CA is.
    match reuse.filter(|s| s.contains_key(file::SERVICE_ACCOUNT_KEY)) {
        Some(stored) => {
            for k in [file::SERVICE_ACCOUNT_KEY, file::SERVICE_ACCOUNT_PUB] {
                data.insert(k.to_owned(), stored.get(k).cloned().unwrap_or_default());
            }
        }
        None => {
            let sa = KeyPair::generate()?;
            data.insert(
                file::SERVICE_ACCOUNT_KEY.to_owned(),
                sa.serialize_pem().into_bytes(),
            );
            data.insert(
                file::SERVICE_ACCOUNT_PUB.to_owned(),
                sa.public_key_pem().into_bytes(),
            );
        }
    }

    use ExtendedKeyUsagePurpose::{ClientAuth as client, ServerAuth as server};
    let mut leaf = |cert: &str, key: &str, params: CertificateParams| -> Result<(), Error> {
        let (c, k) = sign(params, &ca)?;
        data.insert(cert.to_owned(), c.into_bytes());
        data.insert(key.to_owned(), k.into_bytes());
        Ok(())
    };
    leaf(
        file::API_SERVER_CERT,
        file::API_SERVER_KEY,
        leaf_params("kube-apiserver", None, &[server], &subjects.api_server, now)?,
    )?;
    leaf(
        file::API_SERVER_ETCD_CLIENT_CERT,
        file::API_SERVER_ETCD_CLIENT_KEY,
        leaf_params("kube-apiserver-etcd-client", None, &[client], &[], now)?,
    )?;
    leaf(
        file::ETCD_SERVER_CERT,
        file::ETCD_SERVER_KEY,
        leaf_params("etcd-server", None, &[server, client], &subjects.etcd, now)?,
    )?;
    leaf(
        file::ETCD_PEER_CERT,
        file::ETCD_PEER_KEY,
        leaf_params("etcd-peer", None, &[server, client], &subjects.etcd, now)?,
    )?;
    leaf(
        file::ADMIN_CERT,
        file::ADMIN_KEY,
        leaf_params(ADMIN_USER.0, Some(ADMIN_USER.1), &[client], &[], now)?,
    )?;
    leaf(
        file::CONTROLLER_MANAGER_CERT,
        file::CONTROLLER_MANAGER_KEY,
        leaf_params(CONTROLLER_MANAGER_USER, None, &[client], &[], now)?,
    )?;
    leaf(
        file::SYNCER_CERT,
        file::SYNCER_KEY,
        leaf_params(SYNCER_USER.0, Some(SYNCER_USER.1), &[client], &[], now)?,
    )?;
    leaf(
        file::KUBELET_SERVING_CERT,
        file::KUBELET_SERVING_KEY,
        leaf_params(
            "virtualcluster-syncer-kubelet",
            None,
            &[server],
            &subjects.kubelet,
            now,
        )?,
    )?;
    leaf(
        file::KUBELET_CLIENT_CERT,
        file::KUBELET_CLIENT_KEY,
        leaf_params(kubelet::CLIENT_COMMON_NAME, None, &[client], &[], now)?,
    )?;

    let controller_manager = kubeconfig::render(&kubeconfig::Identity {
        server: &format!("https://127.0.0.1:{API_SERVER_PORT}"),
        ca_cert: &data[file::CA_CERT],
        cert: &data[file::CONTROLLER_MANAGER_CERT],
        key: &data[file::CONTROLLER_MANAGER_KEY],
        user: CONTROLLER_MANAGER_USER,
    });
    data.insert(
        file::CONTROLLER_MANAGER_KUBECONFIG.to_owned(),
        controller_manager.into_bytes(),
    );

    annotations.insert(
        annotation::LEAF_NOT_AFTER.to_owned(),
        rfc3339(now + LEAF_VALIDITY),
    );
    annotations.insert(
        annotation::SERVING_NAMES.to_owned(),
        subjects.serving_names(),
    );
    Ok(Bundle { data, annotations })
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("a certificate time always formats")
}

fn ca_params(name: &str, now: OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + CA_VALIDITY;
    params
}

fn leaf_params(
    cn: &str,
    org: Option<&str>,
    usages: &[ExtendedKeyUsagePurpose],
    names: &[String],
    now: OffsetDateTime,
) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    if let Some(org) = org {
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = usages.to_vec();
    params.use_authority_key_identifier_extension = true;
    // A little backdating tolerates clocks that are slightly apart.
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + LEAF_VALIDITY;
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) if n.split('.').all(virtualcluster_crds::dns::is_label) => n
                .as_str()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|_| Error::BadName(n.clone())),
            Err(_) => Err(Error::BadName(n.clone())),
        })
        .collect::<Result<_, _>>()?;
    Ok(params)
}

fn sign(params: CertificateParams, ca: &Issuer<'_, KeyPair>) -> Result<(String, String), Error> {
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, ca)?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subjects() -> Subjects {
        Subjects {
            ca_name: "virtualcluster-ca ns/vc".into(),
            api_server: vec!["vc.ns.svc".into(), "10.96.0.10".into(), "localhost".into()],
            etcd: vec!["localhost".into(), "127.0.0.1".into()],
            kubelet: vec!["vc-syncer.ns.svc".into(), "10.96.0.11".into()],
        }
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    #[test]
    fn nothing_stored_issues_everything() {
        assert_eq!(plan(None, None, &subjects(), now()), Plan::IssueAll);
        let bundle = issue(Plan::IssueAll, None, None, &subjects(), now()).unwrap();
        for key in file::ALL {
            assert!(!bundle.data[key].is_empty(), "{key}");
        }
        assert_eq!(
            plan(
                Some(&bundle.data),
                Some(&bundle.annotations),
                &subjects(),
                now()
            ),
            Plan::Keep
        );
    }

    #[test]
    fn a_new_service_address_reissues_leaves_with_the_same_ca_and_signing_key() {
        let first = issue(Plan::IssueAll, None, None, &subjects(), now()).unwrap();
        let mut moved = subjects();
        moved.api_server[1] = "10.96.0.11".into();
        let p = plan(Some(&first.data), Some(&first.annotations), &moved, now());
        assert_eq!(p, Plan::ReissueLeaves);
        let second = issue(
            p,
            Some(&first.data),
            Some(&first.annotations),
            &moved,
            now(),
        )
        .unwrap();
        for kept in [
            file::CA_CERT,
            file::CA_KEY,
            file::SERVICE_ACCOUNT_KEY,
            file::SERVICE_ACCOUNT_PUB,
        ] {
            assert_eq!(first.data[kept], second.data[kept], "{kept}");
        }
        assert_ne!(
            first.data[file::API_SERVER_CERT],
            second.data[file::API_SERVER_CERT]
        );
        assert_eq!(
            first.annotations[annotation::CA_NOT_AFTER],
            second.annotations[annotation::CA_NOT_AFTER]
        );
        assert_eq!(
            plan(Some(&second.data), Some(&second.annotations), &moved, now()),
            Plan::Keep
        );
    }

    #[test]
    fn a_new_syncer_service_address_reissues_the_kubelet_serving_certificate() {
        let first = issue(Plan::IssueAll, None, None, &subjects(), now()).unwrap();
        let mut moved = subjects();
        moved.kubelet[1] = "10.96.0.12".into();
        let p = plan(Some(&first.data), Some(&first.annotations), &moved, now());
        assert_eq!(p, Plan::ReissueLeaves);
        let second = issue(
            p,
            Some(&first.data),
            Some(&first.annotations),
            &moved,
            now(),
        )
        .unwrap();
        assert_eq!(first.data[file::CA_CERT], second.data[file::CA_CERT]);
        assert_ne!(
            first.data[file::KUBELET_SERVING_CERT],
            second.data[file::KUBELET_SERVING_CERT]
        );
    }

    #[test]
    fn expiry_decides_what_is_renewed() {
        let bundle = issue(Plan::IssueAll, None, None, &subjects(), now()).unwrap();
        let later = |days| now() + Duration::days(days);
        let at = |t| {
            plan(
                Some(&bundle.data),
                Some(&bundle.annotations),
                &subjects(),
                t,
            )
        };
        assert_eq!(at(later(300)), Plan::Keep);
        assert_eq!(at(later(340)), Plan::ReissueLeaves);
        assert_eq!(at(later(3640)), Plan::IssueAll);
    }

    #[test]
    fn a_missing_key_or_annotation_is_not_kept() {
        let bundle = issue(Plan::IssueAll, None, None, &subjects(), now()).unwrap();
        let mut data = bundle.data.clone();
        data.remove(file::SYNCER_KEY);
        assert_eq!(
            plan(Some(&data), Some(&bundle.annotations), &subjects(), now()),
            Plan::ReissueLeaves
        );
        data.remove(file::CA_KEY);
        assert_eq!(
            plan(Some(&data), Some(&bundle.annotations), &subjects(), now()),
            Plan::IssueAll
        );
        let mut annotations = bundle.annotations.clone();
        annotations.remove(annotation::CA_NOT_AFTER);
        assert_eq!(
            plan(Some(&bundle.data), Some(&annotations), &subjects(), now()),
            Plan::IssueAll
        );
    }

    #[test]
    fn a_digested_bundle_keeps_what_kubeconfigs_need_and_is_still_kept() {
        let bundle = issue(Plan::IssueAll, None, None, &subjects(), now()).unwrap();
        let mut data = bundle.data.clone();
        digested(&mut data);
        assert_eq!(data[file::ADMIN_KEY], bundle.data[file::ADMIN_KEY]);
        assert_eq!(data[file::CA_KEY].len(), 32);
        assert_ne!(data[file::CA_KEY], bundle.data[file::CA_KEY]);
        assert_eq!(
            plan(Some(&data), Some(&bundle.annotations), &subjects(), now()),
            Plan::Keep
        );
    }

    #[test]
    fn names_that_are_neither_dns_nor_ip_are_refused() {
        let mut bad = subjects();
        bad.api_server.push("not a name!".into());
        assert!(matches!(
            issue(Plan::IssueAll, None, None, &bad, now()),
            Err(Error::BadName(_))
        ));
    }
}
