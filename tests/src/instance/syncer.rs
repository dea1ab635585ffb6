//! The instance's syncer as a local process: the pod of the Deployment the operator rendered,
//! planned like the control plane's pod (see [`super::plan`]), with the Service of the virtual
//! API server replaced by the local API server, and the in-cluster credentials of its
//! ServiceAccount by a kubeconfig with a token of the same ServiceAccount.

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use virtualcluster_crds::instance::{API_SERVER_SERVICE_PORT, InstanceRef};
use virtualcluster_crds::kubelet;

use super::plan::{self, Addresses, LocalPod, Mounted, Plan};
use crate::harness::TestCluster;

/// The syncer's binary, the base name of its container's command.
pub const BINARY: &str = "virtualcluster-syncer";
/// The end of the local syncer pod's name (`NAME-syncer-local`), where a replica's name has the
/// hashes of its ReplicaSet and itself.
pub const POD_SUFFIX: &str = "local";
/// How long the token of the syncer's ServiceAccount is valid. The kubelet renews the token of
/// a pod; nothing renews the local one, so a syncer running longer must be started again.
pub const TOKEN_VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// The flag that gives the syncer its host credentials when it runs outside a pod.
const HOST_KUBECONFIG_FLAG: &str = "--host-kubeconfig";
/// The syncer's flag for the address of its `/metrics`, `/healthz` and `/readyz`.
pub const METRICS_ADDR_FLAG: &str = "--metrics-addr";

/// The port of the syncer's endpoints, from its command line `args`.
pub fn metrics_port(args: &[String]) -> Option<u16> {
    args.iter()
        .find_map(|a| a.strip_prefix(METRICS_ADDR_FLAG)?.strip_prefix('='))
        .and_then(|addr| addr.rsplit_once(':'))
        .and_then(|(_, port)| port.parse().ok())
}

/// The syncer binary of this workspace (debug build), built once per process if needed.
pub fn binary() -> Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build(false).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Builds the syncer (optimised with `release`) and returns its path.
pub fn build(release: bool) -> Result<PathBuf> {
    crate::operator::cargo_build("virtualcluster-syncer", BINARY, release)
}

/// The address (`host:port`) of the instance's API server Service, in each DNS form a pod in
/// its namespace can reach it by (the syncer's kubeconfig uses `NAME.NAMESPACE.svc:443`), each
/// to `local`.
pub fn api_server_addresses(id: &InstanceRef, local: &str) -> BTreeMap<String, String> {
    let service = id.api_server_service();
    let namespace = &id.namespace;
    [
        format!("{service}.{namespace}.svc.cluster.local"),
        id.api_server_host(),
        format!("{service}.{namespace}"),
        service.clone(),
    ]
    .into_iter()
    .map(|host| {
        (
            format!("{host}:{API_SERVER_SERVICE_PORT}"),
            local.to_owned(),
        )
    })
    .collect()
}

/// The address the syncer's virtual nodes advertise for their kubelet (its Service's, from the
/// syncer's `--kubelet-advertise`), to the local port of its kubelet API: the local virtual
/// API server reaches it there. Empty when the syncer serves no kubelet API.
pub fn kubelet_addresses(
    deployment: &Deployment,
    ports: &BTreeMap<u16, u16>,
) -> BTreeMap<String, String> {
    let args = deployment
        .spec
        .template
        .spec
        .iter()
        .flat_map(|pod| pod.containers.iter())
        .flat_map(|c| c.args.iter().flatten());
    let prefix = format!("{}=", kubelet::flag::ADVERTISE);
    args.filter_map(|a| a.strip_prefix(&prefix))
        .filter_map(|advertised| {
            let local = ports.get(&kubelet::PORT)?;
            Some((advertised.to_owned(), format!("{}:{local}", plan::POD_IP)))
        })
        .collect()
}

/// The process and files that run one pod of the syncer `deployment` in `root`: what
/// [`plan::plan`] makes of it, with [`HOST_KUBECONFIG_FLAG`] added to the syncer's arguments,
/// pointing at `host_kubeconfig`, a kubeconfig of the ServiceAccount the pod would take its
/// host credentials from ([`Plan::service_account`]).
pub fn plan(
    deployment: &Deployment,
    mounted: &Mounted,
    addresses: &Addresses,
    root: &Path,
    host_kubeconfig: &Path,
) -> Result<Plan> {
    let pod = LocalPod::of_deployment(deployment, POD_SUFFIX)?;
    let mut plan = plan::plan(&pod, mounted, addresses, root)?;
    ensure!(
        plan.service_account.is_some(),
        "the syncer's pod mounts no ServiceAccount token, so it has no host credentials"
    );
    let mut syncers = plan.processes.iter_mut().filter(|p| p.binary == BINARY);
    let (Some(syncer), None) = (syncers.next(), syncers.next()) else {
        bail!("the syncer's pod does not have exactly one container running {BINARY}");
    };
    if let Some(arg) = syncer
        .args
        .iter()
        .find(|a| a.split('=').next() == Some(HOST_KUBECONFIG_FLAG))
    {
        bail!("the syncer already has host credentials: {arg}");
    }
    syncer.args.push(format!(
        "{HOST_KUBECONFIG_FLAG}={}",
        host_kubeconfig.display()
    ));
    Ok(plan)
}

/// Writes to `path` (readable by its owner only) a kubeconfig for the cluster in `dir` that
/// authenticates as the ServiceAccount `namespace/account`, with a new token valid for
/// [`TOKEN_VALIDITY`]: the identity and RBAC the syncer has in its pod.
pub async fn write_host_kubeconfig(
    dir: &Path,
    namespace: &str,
    account: &str,
    path: &Path,
) -> Result<()> {
    let cluster = TestCluster::open(dir)?;
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let _ = std::fs::remove_file(path);
    crate::operator::token_kubeconfig(&cluster, namespace, account, TOKEN_VALIDITY, path)
        .await
        .with_context(|| format!("the host kubeconfig of the syncer ({})", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))
}

#[cfg(test)]
mod tests;
