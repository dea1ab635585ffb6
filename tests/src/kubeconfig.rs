//! Kubeconfig files with embedded certificates, and clients built from them.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::pki::CertFiles;

/// Writes a kubeconfig for `user` authenticating with `identity`, embedding all certificate
/// data so that the file works from any directory.
pub fn write(
    path: &Path,
    server: &str,
    ca_cert: &Path,
    identity: &CertFiles,
    user: &str,
) -> Result<()> {
    let credentials = serde_json::json!({
        "client-certificate-data": read_base64(&identity.cert)?,
        "client-key-data": read_base64(&identity.key)?,
    });
    write_with(path, server, ca_cert, user, credentials)
}

/// Writes a kubeconfig for `user` authenticating with a bearer `token` (a ServiceAccount's).
pub fn write_token(
    path: &Path,
    server: &str,
    ca_cert: &Path,
    token: &str,
    user: &str,
) -> Result<()> {
    write_with(
        path,
        server,
        ca_cert,
        user,
        serde_json::json!({ "token": token }),
    )
}

/// Writes a kubeconfig for `user` with the given credentials (the `user` entry's fields).
fn write_with(
    path: &Path,
    server: &str,
    ca_cert: &Path,
    user: &str,
    credentials: serde_json::Value,
) -> Result<()> {
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "local",
            "cluster": {"server": server, "certificate-authority-data": read_base64(ca_cert)?},
        }],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
        "current-context": "local",
        "preferences": {},
    });
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, serde_yaml::to_string(&config)?)
        .with_context(|| format!("writing {}", path.display()))
}

fn read_base64(path: &Path) -> Result<String> {
    Ok(
        STANDARD
            .encode(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?),
    )
}

/// The client configuration a kubeconfig file describes.
pub async fn config(path: &Path) -> Result<kube::Config> {
    let kubeconfig = Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .with_context(|| format!("loading kubeconfig {}", path.display()))?;
    // Everything is on loopback: a connection that takes longer is a hang, not a slow network.
    config.connect_timeout = Some(Duration::from_secs(5));
    Ok(config)
}

/// A client for the cluster a kubeconfig file points at.
pub async fn client(path: &Path) -> Result<kube::Client> {
    Ok(kube::Client::try_from(config(path).await?)?)
}
