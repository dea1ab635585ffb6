//! The cluster shared by the integration tests of one test process.
//!
//! - `VIRTUALCLUSTER_TEST_CLUSTER=DIR` (an absolute path: tests run in `tests/`) uses a cluster
//!   already started with `tests/local-cluster up DIR --with-nodes 2` instead of starting one.
//! - `VIRTUALCLUSTER_KEEP_CLUSTER=1` leaves the started cluster running after the tests and
//!   prints its DIR (stop it with `tests/local-cluster down DIR`).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::OnceCell;

use crate::binaries;
use crate::cluster::{self, State, UpOptions};
use crate::kubeconfig;
use crate::process::Lifetime;

/// Simulated nodes in the shared cluster.
pub const SHARED_NODES: u32 = 2;

/// A running cluster the tests talk to. Holds only paths, so it can be shared by tests running
/// on different tokio runtimes; clients are made per call.
#[derive(Debug, Clone)]
pub struct TestCluster {
    dir: PathBuf,
    kubeconfig: PathBuf,
    bin_dir: PathBuf,
}

/// The cluster of this test process, started (with [`SHARED_NODES`] simulated nodes) by the
/// first caller; the others wait for it. Panics if it cannot be started.
pub async fn shared_cluster() -> &'static TestCluster {
    // A failure is kept too, so that every test reports it instead of each one retrying.
    static SHARED: OnceCell<Result<TestCluster, String>> = OnceCell::const_new();
    let cluster = SHARED
        .get_or_init(|| async { start_shared().await.map_err(|err| format!("{err:#}")) })
        .await;
    match cluster {
        Ok(cluster) => cluster,
        Err(err) => panic!("the shared test cluster is not available: {err}"),
    }
}

async fn start_shared() -> Result<TestCluster> {
    if let Some(dir) = std::env::var_os("VIRTUALCLUSTER_TEST_CLUSTER").filter(|v| !v.is_empty()) {
        let cluster =
            TestCluster::open(&PathBuf::from(dir)).context("VIRTUALCLUSTER_TEST_CLUSTER")?;
        cluster
            .client()
            .await
            .apiserver_version()
            .await
            .context("reaching VIRTUALCLUSTER_TEST_CLUSTER")?;
        return Ok(cluster);
    }

    let keep =
        std::env::var("VIRTUALCLUSTER_KEEP_CLUSTER").is_ok_and(|v| !v.is_empty() && v != "0");
    let bin_dir = tokio::task::spawn_blocking(binaries::ensure).await??;
    let root = clusters_root();
    prune_stale(&root);
    let dir = root.join(unique_name("shared"));
    let cluster = cluster::up(
        &dir,
        &UpOptions {
            bin_dir,
            nodes: Some(SHARED_NODES),
            lifetime: if keep {
                Lifetime::Detached
            } else {
                Lifetime::TiedToThisProcess
            },
        },
    )
    .await?;
    if keep {
        // Straight to the stream: libtest captures only the print macros.
        let _ = writeln!(
            std::io::stderr(),
            "VIRTUALCLUSTER_KEEP_CLUSTER: the test cluster keeps running in {0}\n  \
             export KUBECONFIG={1}\n  stop it with: tests/local-cluster down {0}",
            cluster.dir.display(),
            cluster.kubeconfig.display()
        );
    }
    Ok(TestCluster {
        dir: cluster.dir,
        kubeconfig: cluster.kubeconfig,
        bin_dir: cluster.bin_dir,
    })
}

/// `<workspace>/target/local-clusters`, where test clusters live.
pub fn clusters_root() -> PathBuf {
    let tests_crate = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests_crate
        .parent()
        .expect("the tests crate is in the workspace")
        .join("target/local-clusters")
}

/// Removes cluster folders of earlier test runs whose processes are all gone (an etcd data
/// folder alone is over 60 MB). Folders without a state file yet may belong to a cluster that is
/// just starting, so only old ones go.
fn prune_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let stale = match State::read(&path) {
            Ok(Some(state)) => state.running().count() == 0,
            Ok(None) => entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(3600)),
            Err(_) => false,
        };
        if stale && path.is_dir() {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

impl From<cluster::Cluster> for TestCluster {
    fn from(cluster: cluster::Cluster) -> Self {
        TestCluster {
            dir: cluster.dir,
            kubeconfig: cluster.kubeconfig,
            bin_dir: cluster.bin_dir,
        }
    }
}

impl TestCluster {
    /// The running cluster that `tests/local-cluster up DIR` started.
    pub fn open(dir: &Path) -> Result<TestCluster> {
        let dir = std::path::absolute(dir)?;
        let state = State::read(&dir)?
            .with_context(|| format!("{}: no {}", dir.display(), cluster::STATE_FILE))?;
        if state.running().count() == 0 {
            bail!(
                "the cluster in {} is not running; start it with \
                 `tests/local-cluster up {} --with-nodes {SHARED_NODES}`",
                dir.display(),
                dir.display()
            );
        }
        Ok(TestCluster {
            dir,
            kubeconfig: state.kubeconfig,
            bin_dir: state.bin_dir,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Cluster-admin kubeconfig.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The API server's address.
    pub async fn server(&self) -> Result<String> {
        Ok(kubeconfig::config(&self.kubeconfig)
            .await?
            .cluster_url
            .to_string())
    }

    /// The cluster CA's certificate (PEM file).
    pub fn ca_cert(&self) -> PathBuf {
        crate::pki::Pki::new(&self.dir).ca_cert()
    }

    /// Folder with kubectl and the control plane binaries.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// A new cluster-admin client, bound to the calling test's runtime.
    pub async fn client(&self) -> kube::Client {
        kubeconfig::client(&self.kubeconfig)
            .await
            .expect("client for the test cluster")
    }

    /// Runs kubectl against the cluster as cluster admin.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        std::process::Command::new(self.bin_dir.join("kubectl"))
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .output()
            .expect("running kubectl")
    }

    /// Creates a namespace with a fresh name starting with `prefix`, and returns the name once
    /// pods can be created in it (its `default` ServiceAccount exists).
    pub async fn namespace(&self, prefix: &str) -> String {
        let client = self.client().await;
        let name = unique_name(prefix);
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"virtualcluster.dev/test": "true"}},
        }))
        .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|err| panic!("creating namespace {name}: {err}"));
        let service_accounts: Api<ServiceAccount> = Api::namespaced(client, &name);
        let deadline = Instant::now() + Duration::from_secs(60);
        while service_accounts
            .get_opt("default")
            .await
            .ok()
            .flatten()
            .is_none()
        {
            assert!(
                Instant::now() < deadline,
                "namespace {name} got no default ServiceAccount"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        name
    }
}

/// How long [`eventually`] waits.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Polls `check` every 200 ms until it returns `Some`, failing the test after [`TIMEOUT`].
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(what, TIMEOUT, check).await
}

/// Polls `check` every 200 ms until it returns `Some`, failing the test after `timeout`.
pub async fn eventually_within<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `name` no longer exists.
pub async fn wait_gone<K>(what: &str, api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually(what, || async {
        api.get_opt(name).await.unwrap().is_none().then_some(())
    })
    .await
}

/// Whether `err` is an API error with HTTP status `code`.
pub fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == code)
}

/// A fresh DNS-1123 label (also valid where names must start with a letter): the sanitised
/// `prefix`, cut to 40 characters, a dash and 6 random characters.
pub fn unique_name(prefix: &str) -> String {
    let mut name = String::new();
    for c in prefix.chars().map(|c| c.to_ascii_lowercase()) {
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if !(c == '-' && (name.is_empty() || name.ends_with('-'))) && name.len() < 40 {
            name.push(c);
        }
    }
    let mut name = name.trim_end_matches('-').to_owned();
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        name.insert_str(0, if name.is_empty() { "t" } else { "t-" });
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.write_u32(std::process::id());
    let mut random = hasher.finish();
    let mut suffix = String::with_capacity(6);
    for _ in 0..6 {
        suffix.push(b"abcdefghijklmnopqrstuvwxyz0123456789"[(random % 36) as usize] as char);
        random /= 36;
    }
    format!("{name}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::unique_name;

    #[test]
    fn unique_names_are_dns_labels() {
        for prefix in ["rbac", "Some_Test::Name", "", "9lives", &"x".repeat(80)] {
            let name = unique_name(prefix);
            assert!(name.len() <= 49, "{name}");
            assert!(name.starts_with(|c: char| c.is_ascii_lowercase()), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.contains("--"), "{name}");
        }
        assert_ne!(unique_name("a"), unique_name("a"));
    }
}
