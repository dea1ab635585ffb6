//! Certificates and keys for one local control plane, written as PEM files into `DIR/pki/`.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The first address of the service CIDR, which the `kubernetes` Service gets.
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

/// Common name of the front proxy client certificate, the only one the apiserver accepts
/// request-header identities from.
pub const FRONT_PROXY_CLIENT: &str = "front-proxy-client";

/// A certificate and its private key on disk.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The client identities the control plane needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    Admin,
    ControllerManager,
    Scheduler,
    Kwok,
}

impl Client {
    pub const ALL: [Client; 4] = [
        Client::Admin,
        Client::ControllerManager,
        Client::Scheduler,
        Client::Kwok,
    ];

    /// File stem under `pki/`.
    pub fn file_stem(self) -> &'static str {
        match self {
            Client::Admin => "admin",
            Client::ControllerManager => "kube-controller-manager",
            Client::Scheduler => "kube-scheduler",
            Client::Kwok => "kwok",
        }
    }

    fn subject(self) -> (&'static str, Option<&'static str>) {
        match self {
            Client::Admin => ("admin", Some("system:masters")),
            Client::ControllerManager => ("system:kube-controller-manager", None),
            Client::Scheduler => ("system:kube-scheduler", None),
            // kwok updates node and pod status and renews node leases for many nodes; no
            // bootstrap role covers that, so it runs as a cluster admin, as kwokctl does.
            Client::Kwok => ("kwok-controller", Some("system:masters")),
        }
    }
}

/// Paths of everything in `DIR/pki/`.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new(cluster_dir: &Path) -> Self {
        Self {
            dir: cluster_dir.join("pki"),
        }
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    pub fn apiserver(&self) -> CertFiles {
        self.pair("apiserver")
    }

    /// CA that the apiserver trusts for identities passed on in request headers by an
    /// authenticating proxy: itself, when it proxies to an aggregated API server.
    pub fn front_proxy_ca_cert(&self) -> PathBuf {
        self.dir.join("front-proxy-ca.crt")
    }

    /// The apiserver's client certificate for aggregated API servers.
    pub fn front_proxy_client(&self) -> CertFiles {
        self.pair("front-proxy-client")
    }

    pub fn client(&self, client: Client) -> CertFiles {
        self.pair(client.file_stem())
    }

    /// Private key that signs service account tokens.
    pub fn service_account_key(&self) -> PathBuf {
        self.dir.join("sa.key")
    }

    /// Its public half, which verifies them.
    pub fn service_account_pub(&self) -> PathBuf {
        self.dir.join("sa.pub")
    }

    fn pair(&self, stem: &str) -> CertFiles {
        CertFiles {
            cert: self.dir.join(format!("{stem}.crt")),
            key: self.dir.join(format!("{stem}.key")),
        }
    }

    /// Generates a fresh CA and every certificate and key, replacing earlier ones.
    pub fn generate(&self) -> Result<()> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;

        let ca = self.generate_ca(&self.ca_cert(), &self.ca_key(), "virtualcluster-local-ca")?;
        let front_proxy_ca = self.generate_ca(
            &self.front_proxy_ca_cert(),
            &self.dir.join("front-proxy-ca.key"),
            "virtualcluster-local-front-proxy-ca",
        )?;
        let front_proxy = leaf(
            FRONT_PROXY_CLIENT,
            None,
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        self.issue(&self.front_proxy_client(), &front_proxy, &front_proxy_ca)?;

        let mut serving = leaf("kube-apiserver", None, ExtendedKeyUsagePurpose::ServerAuth)?;
        serving.subject_alt_names = [
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        .into_iter()
        .map(|name| Ok(SanType::DnsName(name.try_into()?)))
        .chain([
            Ok(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST))),
            Ok(SanType::IpAddress(IpAddr::V4(KUBERNETES_SERVICE_IP))),
        ])
        .collect::<Result<_>>()?;
        self.issue(&self.apiserver(), &serving, &ca)?;

        for client in Client::ALL {
            let (cn, org) = client.subject();
            let params = leaf(cn, org, ExtendedKeyUsagePurpose::ClientAuth)?;
            self.issue(&self.client(client), &params, &ca)?;
        }

        let sa = KeyPair::generate()?;
        write_secret(&self.service_account_key(), &sa.serialize_pem())?;
        write(&self.service_account_pub(), &sa.public_key_pem())?;
        Ok(())
    }

    fn generate_ca(&self, cert: &Path, key: &Path, name: &str) -> Result<Issuer<'static, KeyPair>> {
        let ca_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = params.self_signed(&ca_key)?;
        write(cert, &ca_cert.pem())?;
        write_secret(key, &ca_key.serialize_pem())?;
        Ok(Issuer::new(params, ca_key))
    }

    fn issue(
        &self,
        files: &CertFiles,
        params: &CertificateParams,
        ca: &Issuer<'_, KeyPair>,
    ) -> Result<()> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, ca)?;
        write(&files.cert, &cert.pem())?;
        write_secret(&files.key, &key.serialize_pem())
    }
}

fn leaf(cn: &str, org: Option<&str>, usage: ExtendedKeyUsagePurpose) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
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
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn write(path: &Path, pem: &str) -> Result<()> {
    fs::write(path, pem).with_context(|| format!("writing {}", path.display()))
}

fn write_secret(path: &Path, pem: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(pem.as_bytes())?;
    Ok(())
}
