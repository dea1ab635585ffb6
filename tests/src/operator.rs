//! The operator as it runs when deployed: its own binary, authenticated as a ServiceAccount
//! bound to the ClusterRole in `config/rbac/role.yaml`, never as cluster admin, so every test
//! that runs it tests that role too.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::harness::{TestCluster, unique_name};
use crate::loopback::http_get;
use crate::process::{self, Lifetime, Started};

/// Name of the operator's ServiceAccount (in the namespace it runs in) and ClusterRole.
pub const NAME: &str = "virtualcluster-operator";

/// `config/rbac/role.yaml`, the operator's ClusterRole.
pub fn cluster_role() -> ClusterRole {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/rbac/role.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(path).expect("reading config/rbac/role.yaml"))
        .expect("config/rbac/role.yaml is a ClusterRole")
}

/// The operator binary of this workspace (debug build), built once per process if needed.
pub fn binary() -> Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build(false).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Builds the operator (optimised with `release`) and returns its path.
pub fn build(release: bool) -> Result<PathBuf> {
    cargo_build("virtualcluster-operator", NAME, release)
}

/// Builds the binary `binary` of the workspace's package `package` (optimised with `release`)
/// and returns its path.
pub fn cargo_build(package: &str, binary: &str, release: bool) -> Result<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args(["build", "--quiet", "-p", package, "--bin", binary]);
    // What cargo sets for the package running this (a test, a benchmark) would reach the build
    // scripts' `rerun-if-env-changed` checks (ring's reads CARGO_PKG_NAME) and rebuild them on
    // every switch between this build and the workspace's own.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
            || ["OUT_DIR", "CARGO_PRIMARY_PACKAGE"].contains(&name.as_ref())
        {
            cmd.env_remove(name.as_ref());
        }
    }
    if release {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .with_context(|| format!("running cargo build for {binary}"))?;
    ensure!(
        status.success(),
        "cargo build of {binary} failed ({status})"
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let path = target
        .join(if release { "release" } else { "debug" })
        .join(binary);
    ensure!(path.is_file(), "no {binary} binary at {}", path.display());
    Ok(path)
}

/// Gives the operator its deployed identity in `namespace`: the ClusterRole, a ServiceAccount
/// bound to it, and a kubeconfig with a token of that ServiceAccount. Returns the kubeconfig.
pub async fn identity(cluster: &TestCluster, namespace: &str) -> Result<PathBuf> {
    let client = cluster.client().await;
    let params = PatchParams::apply("virtualcluster-tests").force();
    Api::<ClusterRole>::all(client.clone())
        .patch(NAME, &params, &Patch::Apply(cluster_role()))
        .await
        .context("applying the operator's ClusterRole")?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let account: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": NAME}}))?;
    accounts
        .patch(NAME, &params, &Patch::Apply(&account))
        .await
        .context("creating the operator's ServiceAccount")?;
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("{NAME}-{namespace}"), "labels": {"virtualcluster.dev/test": "true"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
        "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}],
    }))?;
    Api::<ClusterRoleBinding>::all(client.clone())
        .patch(
            &format!("{NAME}-{namespace}"),
            &params,
            &Patch::Apply(&binding),
        )
        .await
        .context("binding the operator's ClusterRole")?;
    let path = cluster
        .dir()
        .join("operators")
        .join(namespace)
        .join("kubeconfig");
    token_kubeconfig(
        cluster,
        namespace,
        NAME,
        Duration::from_secs(6 * 3600),
        &path,
    )
    .await
    .context("the operator's kubeconfig")?;
    Ok(path)
}

/// Grants the operator of `namespace` what the chart's `platform.customResources` would: the
/// custom resources it may grant syncers.
pub async fn grant_custom_resources(
    cluster: &TestCluster,
    namespace: &str,
    to_host: &[String],
    from_host: &[String],
) -> Result<()> {
    let client = cluster.client().await;
    let params = PatchParams::apply("virtualcluster-tests").force();
    let name = format!("{NAME}-custom-resources-{namespace}");
    let rules =
        virtualcluster_crds::syncer_access::operator_custom_resource_rules(to_host, from_host);
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"virtualcluster.dev/test": "true"}},
        "rules": rules,
    }))?;
    Api::<ClusterRole>::all(client.clone())
        .patch(&name, &params, &Patch::Apply(&role))
        .await
        .context("applying the operator's custom resource ClusterRole")?;
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"virtualcluster.dev/test": "true"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}],
    }))?;
    Api::<ClusterRoleBinding>::all(client)
        .patch(&name, &params, &Patch::Apply(&binding))
        .await
        .context("binding the operator's custom resource ClusterRole")?;
    Ok(())
}

/// Writes to `path` a kubeconfig for the cluster of `cluster` that authenticates as the
/// ServiceAccount `namespace/account`, with a token from a TokenRequest valid for `valid_for`.
pub async fn token_kubeconfig(
    cluster: &TestCluster,
    namespace: &str,
    account: &str,
    valid_for: Duration,
    path: &Path,
) -> Result<()> {
    let client = crate::kubeconfig::client(cluster.kubeconfig_path()).await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client, namespace);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(valid_for.as_secs().try_into()?),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = accounts
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .with_context(|| format!("requesting a token for ServiceAccount {namespace}/{account}"))?
        .status
        .and_then(|s| s.token)
        .context("the token request has no token")?;
    crate::kubeconfig::write_token(
        path,
        &cluster.server().await?,
        &cluster.ca_cert(),
        &token,
        account,
    )
}

/// A running operator process; killed when dropped unless it was started detached.
pub struct Operator {
    started: Started,
    pub metrics_url: String,
    pub identity: String,
    lifetime: Lifetime,
}

/// How to start an operator.
#[derive(Debug, Clone)]
pub struct Start<'a> {
    /// Namespaces it watches for VirtualClusters; the Lease lives in the first.
    pub namespaces: &'a [&'a str],
    pub kubeconfig: &'a Path,
    /// Further flags.
    pub args: &'a [&'a str],
}

impl Operator {
    /// Starts the operator and returns once its `/readyz` answers.
    pub async fn start(cluster: &TestCluster, start: Start<'_>) -> Result<Operator> {
        let binary = tokio::task::spawn_blocking(binary).await??;
        Self::start_binary(cluster, start, &binary).await
    }

    /// [`Operator::start`] with a given build of the operator.
    pub async fn start_binary(
        cluster: &TestCluster,
        start: Start<'_>,
        binary: &Path,
    ) -> Result<Operator> {
        Self::spawn(cluster, start, binary, Lifetime::TiedToThisProcess).await
    }

    /// Starts `binary` with the given lifetime and returns once its `/readyz` answers.
    pub async fn spawn(
        cluster: &TestCluster,
        start: Start<'_>,
        binary: &Path,
        lifetime: Lifetime,
    ) -> Result<Operator> {
        let [port] = crate::cluster::free_loopback_ports(1)?[..] else {
            unreachable!("one port asked for")
        };
        let identity = unique_name("operator");
        let mut cmd = Command::new(binary);
        cmd.env("KUBECONFIG", start.kubeconfig)
            .env("RUST_LOG", "info,virtualcluster_operator=debug")
            .args(
                (!start.args.iter().any(|a| a.starts_with("--namespaces")))
                    .then(|| format!("--namespaces={}", start.namespaces.join(","))),
            )
            .arg(format!("--lease-namespace={}", start.namespaces[0]))
            .arg(format!("--metrics-addr=127.0.0.1:{port}"))
            .arg(format!("--identity={identity}"))
            .args(start.args);
        let log = cluster
            .dir()
            .join("operators")
            .join(start.namespaces[0])
            .join(format!("{identity}.log"));
        let started = process::spawn(NAME, cmd, &log, lifetime)?;
        let mut operator = Operator {
            started,
            metrics_url: format!("http://127.0.0.1:{port}/metrics"),
            identity,
            lifetime,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = operator.started.child.try_wait()? {
                bail!(
                    "the operator exited ({status})\n{}",
                    process::log_tail(&log, 40)
                );
            }
            if http_get(port, "/readyz")
                .await
                .is_ok_and(|(code, _)| code == 200)
            {
                return Ok(operator);
            }
            if Instant::now() > deadline {
                bail!(
                    "the operator was not ready after 60 s\n{}",
                    process::log_tail(&log, 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Where it logs.
    pub fn log_path(&self) -> PathBuf {
        self.started.record.log.clone()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.started.record.log).unwrap_or_default()
    }

    /// The last lines of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        process::log_tail(&self.started.record.log, 60)
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.started.child.kill();
        let _ = self.started.child.wait();
    }

    /// Stops it cleanly (SIGTERM).
    pub fn stop(&mut self) -> Result<()> {
        process::stop(&self.started.record, Duration::from_secs(10))?;
        let _ = self.started.child.wait();
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.started.record.pid
    }

    /// Whether it is still running; `Some(exit status)` once it stopped.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.started.child.try_wait().ok().flatten()
    }

    /// Its `/metrics` text.
    pub async fn metrics(&self) -> Result<String> {
        let port: u16 = self
            .metrics_url
            .trim_start_matches("http://127.0.0.1:")
            .trim_end_matches("/metrics")
            .parse()?;
        let (code, body) = http_get(port, "/metrics").await?;
        ensure!(code == 200, "/metrics answered {code}");
        Ok(body)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if self.lifetime == Lifetime::TiedToThisProcess {
            let _ = self.started.child.kill();
            let _ = self.started.child.wait();
        }
    }
}

/// The namespace `run` deploys the operator's identity to, as `config/rbac/` does.
pub const SYSTEM_NAMESPACE: &str = "virtualcluster-system";

/// Runs the operator (debug build) for the cluster in `dir`, watching every namespace, with
/// its deployed identity in [`SYSTEM_NAMESPACE`], until `tests/local-cluster down DIR`. Returns
/// the path of its log.
pub async fn run(dir: &Path) -> Result<PathBuf> {
    let cluster = TestCluster::open(dir)?;
    let client = cluster.client().await;
    crate::crd::install(&client).await?;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
    let namespace: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": SYSTEM_NAMESPACE}}))?;
    namespaces
        .patch(
            SYSTEM_NAMESPACE,
            &PatchParams::apply("virtualcluster-tests"),
            &Patch::Apply(&namespace),
        )
        .await?;
    let kubeconfig = identity(&cluster, SYSTEM_NAMESPACE).await?;
    let binary = tokio::task::spawn_blocking(binary).await??;
    // Watching all namespaces: `--namespaces` empty; the Lease in the system namespace.
    let operator = Operator::spawn(
        &cluster,
        Start {
            namespaces: &[SYSTEM_NAMESPACE],
            kubeconfig: &kubeconfig,
            args: &["--namespaces="],
        },
        &binary,
        Lifetime::Detached,
    )
    .await?;
    let record = operator.started.record.clone();
    crate::cluster::State::update(cluster.dir(), |state| {
        state.processes.push(record);
        Ok(())
    })?;
    Ok(operator.log_path())
}
