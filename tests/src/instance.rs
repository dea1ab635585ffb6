//! Runs a virtual control plane as the operator rendered it into a local cluster, but as local
//! processes: the StatefulSet's containers, with the binaries built for the local cluster, on
//! free loopback ports, with their volumes as folders under `DIR/instances/NS/NAME/`.
//!
//! The processes are recorded in `DIR/state.json` next to the cluster's own, so
//! `tests/local-cluster down DIR` stops them too; [`stop_instance`] stops one instance only.

pub mod plan;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use virtualcluster_crds::instance::{InstanceRef, KUBECONFIG_KEY};

use crate::binaries::{self, FileLock};
use crate::cluster::{self, STARTUP_TIMEOUT, State};
use crate::kubeconfig;
use crate::process::{self, Lifetime, Started};

use plan::{LocalProcess, Plan};

/// Where the instance `namespace/name` of the cluster in `dir` keeps its folders, logs and
/// kubeconfig.
pub fn instance_dir(dir: &Path, namespace: &str, name: &str) -> PathBuf {
    dir.join("instances").join(namespace).join(name)
}

/// Starts the control plane of the VirtualCluster `namespace/name` from its StatefulSet and
/// Secrets in the cluster of `dir` (read with `DIR/kubeconfig`), and returns the path of a
/// kubeconfig for it (the admin kubeconfig of Secret `vc-NAME`, pointed at the local API
/// server) once its API server is ready and every container has kept running for a moment.
/// Containers that exit meanwhile are started again, as the kubelet would; after it returns,
/// nothing restarts them. On failure, what was started is stopped again.
pub async fn run_instance(
    dir: &Path,
    namespace: &str,
    name: &str,
    lifetime: Lifetime,
) -> Result<PathBuf> {
    let since = Instant::now();
    let dir = std::path::absolute(dir)?;
    let what = format!("instance {namespace}/{name}");
    let (sts, secrets, admin_config) = read_objects(&dir, namespace, name).await?;

    let bin_dir = tokio::task::spawn_blocking(binaries::ensure).await??;
    let old_ports = plan::declared_ports(&sts)?;
    let new_ports = cluster::free_loopback_ports(old_ports.len())?;
    let ports: BTreeMap<u16, u16> = old_ports.into_iter().zip(new_ports).collect();
    let root = instance_dir(&dir, namespace, name);
    let plan = plan::plan(&sts, &secrets, &ports, &root)?;
    let binaries: Vec<PathBuf> = plan
        .processes
        .iter()
        .map(|p| {
            let path = bin_dir.join(&p.binary);
            if !path.is_file() {
                bail!(
                    "container {} runs {}, which is not among the binaries in {}",
                    p.container,
                    p.binary,
                    bin_dir.display()
                );
            }
            Ok(path)
        })
        .collect::<Result<Vec<_>>>()?;
    let kubeconfig_path = root.join("kubeconfig");
    let local_config = plan::local_kubeconfig(
        &admin_config,
        &format!("https://{}:{}", plan::POD_IP, plan.api_server_port),
    )
    .with_context(|| format!("the admin kubeconfig of {what}"))?;

    // One start of an instance at a time; a second one waits, then finds it running.
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let _lock = FileLock::acquire(&root.with_extension("lock"))?;
    let prefix = record_prefix(namespace, name);
    State::update(&dir, |state| {
        let running: Vec<_> = state
            .running()
            .filter(|p| p.name.starts_with(&prefix))
            .map(|p| format!("{} (pid {})", p.name, p.pid))
            .collect();
        if !running.is_empty() {
            bail!("{what} is already running: {}", running.join(", "));
        }
        state.processes.retain(|p| !p.name.starts_with(&prefix));
        Ok(())
    })?;
    prepare(&root, &plan)?;
    write_private(&kubeconfig_path, local_config.as_bytes())?;

    let mut pod = Pod {
        dir: dir.clone(),
        root: root.clone(),
        lifetime,
        since,
        containers: Vec::new(),
    };
    let result = async {
        for (process, binary) in plan.processes.iter().zip(binaries) {
            pod.start(Container {
                record_name: format!("{prefix}{}", process.container),
                process: process.clone(),
                binary,
                log: root.join("logs").join(format!("{}.log", process.container)),
                running: None,
                restarts: 0,
            })?;
        }
        let client = kubeconfig::client(&kubeconfig_path).await?;
        pod.wait_ready(&what, || {
            let client = client.clone();
            async move {
                let request = http::Request::get("/readyz").body(Vec::new())?;
                client.request_text(request).await?;
                Ok(())
            }
        })
        .await
    }
    .await;
    if let Err(err) = result {
        pod.stop_all();
        return Err(err);
    }
    eprintln!(
        "local-cluster: {what} is ready after {:.1?}",
        since.elapsed()
    );
    Ok(kubeconfig_path)
}

/// The StatefulSet `namespace/name`, the Secrets it mounts (those that exist) and the admin
/// kubeconfig of the instance, read as cluster admin of the cluster in `dir`.
async fn read_objects(
    dir: &Path,
    namespace: &str,
    name: &str,
) -> Result<(StatefulSet, Vec<Secret>, Vec<u8>)> {
    let admin = kubeconfig::client(&dir.join("kubeconfig")).await?;
    let sts = Api::<StatefulSet>::namespaced(admin.clone(), namespace)
        .get(name)
        .await
        .with_context(|| format!("reading StatefulSet {namespace}/{name}"))?;
    let secrets_api: Api<Secret> = Api::namespaced(admin, namespace);
    let mut secrets = Vec::new();
    for secret in plan::mounted_secrets(&sts)? {
        if let Some(found) = secrets_api
            .get_opt(&secret)
            .await
            .with_context(|| format!("reading Secret {namespace}/{secret}"))?
        {
            secrets.push(found);
        }
    }
    let id = InstanceRef {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        uid: String::new(),
    };
    let admin_secret = id.kubeconfig_secret();
    let admin_config = secrets_api
        .get(&admin_secret)
        .await
        .with_context(|| format!("reading Secret {namespace}/{admin_secret}"))?
        .data
        .and_then(|mut d| d.remove(KUBECONFIG_KEY))
        .with_context(|| {
            format!("Secret {namespace}/{admin_secret} has no key {KUBECONFIG_KEY}")
        })?;
    Ok((sts, secrets, admin_config.0))
}

/// How often a container that exits while [`run_instance`] waits is started again, as the
/// kubelet restarts the containers of a pod (a controller manager that starts before the API
/// server has made its RBAC roles exits once, for instance).
const MAX_RESTARTS: u32 = 5;
/// How long after an exit a container is started again.
const RESTART_DELAY: Duration = Duration::from_secs(1);
/// How long every container must have run, after the API server turned ready, before the
/// instance counts as started.
const SETTLE: Duration = Duration::from_secs(2);

/// The running containers of one instance.
struct Pod {
    dir: PathBuf,
    root: PathBuf,
    lifetime: Lifetime,
    since: Instant,
    containers: Vec<Container>,
}

struct Container {
    record_name: String,
    process: LocalProcess,
    binary: PathBuf,
    log: PathBuf,
    /// The current process and when it started.
    running: Option<(Started, Instant)>,
    restarts: u32,
}

impl Pod {
    fn start(&mut self, container: Container) -> Result<()> {
        self.containers.push(container);
        self.spawn(self.containers.len() - 1)
    }

    /// Starts container `index` and records its process in place of the previous one.
    fn spawn(&mut self, index: usize) -> Result<()> {
        let container = &mut self.containers[index];
        let process = &container.process;
        let mut cmd = Command::new(&container.binary);
        cmd.args(&process.args)
            .env_clear()
            .envs(process.env.iter().map(|(k, v)| (k, v)))
            .current_dir(process.working_dir.as_deref().unwrap_or(&self.root));
        let started = process::spawn(&container.record_name, cmd, &container.log, self.lifetime)?;
        eprintln!(
            "local-cluster: {:>5.1?} started {} (pid {}), log {}",
            self.since.elapsed(),
            container.record_name,
            started.record.pid,
            container.log.display()
        );
        let record = started.record.clone();
        let previous = container
            .running
            .replace((started, Instant::now()))
            .map(|(old, _)| old.record);
        State::update(&self.dir, |state| {
            state.processes.retain(|p| Some(p) != previous.as_ref());
            state.processes.push(record);
            Ok(())
        })
    }

    /// Waits until `probe` succeeds and every container has run for [`SETTLE`] since, starting
    /// containers again that exit (at most [`MAX_RESTARTS`] times each). Fails after
    /// [`STARTUP_TIMEOUT`] with the ends of all logs.
    async fn wait_ready<F, Fut>(&mut self, what: &str, mut probe: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut ready_since: Option<Instant> = None;
        let mut last = "not yet".to_owned();
        loop {
            for index in 0..self.containers.len() {
                let container = &mut self.containers[index];
                let Some((started, since)) = &mut container.running else {
                    continue;
                };
                let Some(status) = started.child.try_wait()? else {
                    continue;
                };
                if container.restarts >= MAX_RESTARTS {
                    bail!(
                        "{} exited {} times during startup, last with {status}\n{}",
                        container.record_name,
                        container.restarts + 1,
                        process::log_tail(&container.log, 40)
                    );
                }
                if since.elapsed() < RESTART_DELAY {
                    // Measured from the start, which is close enough to the exit.
                    continue;
                }
                eprintln!(
                    "local-cluster: {:>5.1?} {} exited ({status}), starting it again",
                    self.since.elapsed(),
                    container.record_name
                );
                container.restarts += 1;
                self.spawn(index)?;
            }
            let all_settled = self.containers.iter().all(|c| {
                c.running.as_ref().is_some_and(|(_, since)| {
                    ready_since.is_some_and(|ready| since.max(&ready).elapsed() >= SETTLE)
                })
            });
            if ready_since.is_none() {
                match tokio::time::timeout(Duration::from_secs(5), probe()).await {
                    Ok(Ok(())) => {
                        eprintln!(
                            "local-cluster: {:>5.1?} {what}: kube-apiserver /readyz ok",
                            self.since.elapsed()
                        );
                        ready_since = Some(Instant::now());
                    }
                    Ok(Err(err)) => last = format!("{err:#}"),
                    Err(_) => last = "probe timed out".to_owned(),
                }
            } else if all_settled {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(process::startup_timeout(
                    STARTUP_TIMEOUT,
                    what,
                    &last,
                    self.containers.iter().map(|c| c.log.as_path()),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops what runs and forgets it.
    fn stop_all(&mut self) {
        let records: Vec<_> = self
            .containers
            .iter()
            .filter_map(|c| c.running.as_ref().map(|(s, _)| s.record.clone()))
            .collect();
        if let Err(err) = cluster::stop_records(&records) {
            eprintln!("local-cluster: {err:#}");
        }
        for (started, _) in self
            .containers
            .iter_mut()
            .filter_map(|c| c.running.as_mut())
        {
            let _ = started.child.try_wait();
        }
        let _ = State::update(&self.dir, |state| {
            state.processes.retain(|p| !records.contains(p));
            Ok(())
        });
    }
}

/// Stops the processes [`run_instance`] started for `namespace/name` in `dir` and forgets
/// them; returns how many were still running.
pub fn stop_instance(dir: &Path, namespace: &str, name: &str) -> Result<usize> {
    let dir = std::path::absolute(dir)?;
    let prefix = record_prefix(namespace, name);
    State::update(&dir, |state| {
        let (mine, others) = std::mem::take(&mut state.processes)
            .into_iter()
            .partition::<Vec<_>, _>(|p| p.name.starts_with(&prefix));
        state.processes = others;
        cluster::stop_records(&mine)
    })
}

/// Names of an instance's process records start with this.
fn record_prefix(namespace: &str, name: &str) -> String {
    format!("instances/{namespace}/{name}/")
}

/// Makes the folders (emptying all but claims) and writes the files of `plan`, with a fresh
/// `logs` folder.
fn prepare(root: &Path, plan: &Plan) -> Result<()> {
    let logs = root.join("logs");
    for folder in plan
        .folders
        .iter()
        .filter(|f| !f.keep)
        .map(|f| &f.path)
        .chain([&logs])
    {
        match fs::remove_dir_all(folder) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                return Err(err).with_context(|| format!("removing {}", folder.display()));
            }
            _ => {}
        }
    }
    for folder in plan.folders.iter().map(|f| &f.path).chain([&logs]) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(folder)
            .with_context(|| format!("creating {}", folder.display()))?;
    }
    for file in &plan.files {
        if let Some(parent) = file.path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)?;
        }
        write_private(&file.path, &file.contents)?;
    }
    Ok(())
}

/// Writes `contents` to a new file readable by its owner only.
fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    let _ = fs::remove_file(path);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(contents))
        .with_context(|| format!("writing {}", path.display()))
}
