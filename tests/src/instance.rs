//! Runs a virtual cluster as the operator rendered it into a local cluster, but as local
//! processes: the containers of the control plane's StatefulSet and then those of the syncer's
//! Deployment, with the binaries built for the local cluster and this workspace, on free
//! loopback ports, with their volumes as folders under `DIR/instances/NS/NAME/`.
//!
//! The processes are recorded in `DIR/state.json` next to the cluster's own, so
//! `tests/local-cluster down DIR` stops them too; [`stop_instance`] stops one instance only.

pub mod plan;
#[cfg(test)]
mod rendered;
pub mod syncer;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use virtualcluster_crds::instance::{InstanceRef, KUBECONFIG_KEY};

use crate::binaries::{self, FileLock};
use crate::cluster::{self, STARTUP_TIMEOUT, State};
use crate::kubeconfig;
use crate::loopback;
use crate::process::{self, Lifetime, Started};

use plan::{Addresses, LocalPod, LocalProcess, Mounted, Plan};

/// Where the instance `namespace/name` of the cluster in `dir` keeps its folders, logs and
/// kubeconfig.
pub fn instance_dir(dir: &Path, namespace: &str, name: &str) -> PathBuf {
    dir.join("instances").join(namespace).join(name)
}

/// How [`run_instance`] runs an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// What ends the instance's processes.
    pub lifetime: Lifetime,
    /// Also run the syncer, from its Deployment `NAME-syncer`, once the control plane is ready.
    pub syncer: bool,
}

impl Options {
    /// The control plane and the syncer, as `tests/local-cluster run-instance` runs them.
    pub fn with_syncer(lifetime: Lifetime) -> Self {
        Options {
            lifetime,
            syncer: true,
        }
    }

    /// The control plane only.
    pub fn control_plane_only(lifetime: Lifetime) -> Self {
        Options {
            lifetime,
            syncer: false,
        }
    }
}

/// Starts the VirtualCluster `namespace/name` from what the operator rendered into the cluster
/// of `dir` (read with `DIR/kubeconfig`), and returns the path of a kubeconfig for it (the
/// admin kubeconfig of Secret `vc-NAME`, pointed at the local API server).
///
/// First the control plane, from its StatefulSet and the Secrets it mounts, until its API
/// server is ready and every container has kept running for a moment. Then, with
/// [`Options::syncer`], one pod of the syncer's Deployment (named `NAME-syncer-local`), from the
/// Deployment and the Secret and ConfigMap it mounts, with the virtual API server's Service
/// replaced by the local API server and its host credentials by a kubeconfig with a token of
/// its ServiceAccount (see [`syncer`]); it returns once the syncer too has kept running for a
/// moment. Containers that exit meanwhile are started again, as the kubelet would; after it
/// returns, nothing restarts them. On failure, what was started is stopped again.
pub async fn run_instance(
    dir: &Path,
    namespace: &str,
    name: &str,
    options: Options,
) -> Result<PathBuf> {
    let since = Instant::now();
    let dir = std::path::absolute(dir)?;
    let what = format!("instance {namespace}/{name}");
    let id = InstanceRef {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        uid: String::new(),
    };
    let objects = read_objects(&dir, &id, options.syncer).await?;
    let control_plane = LocalPod::of_stateful_set(&objects.stateful_set)?;

    let bin_dir = tokio::task::spawn_blocking(binaries::ensure).await??;
    let syncer_binary = match options.syncer {
        true => Some(tokio::task::spawn_blocking(syncer::binary).await??),
        false => None,
    };
    let root = instance_dir(&dir, namespace, name);
    let addresses = Addresses {
        ports: local_ports(&control_plane)?,
        services: BTreeMap::new(),
    };
    let plan = plan::plan(&control_plane, &objects.control_plane, &addresses, &root)?;
    let api_server_port = plan
        .api_server_port
        .context("no container of the control plane runs kube-apiserver")?;
    let api_server = format!("{}:{api_server_port}", plan::POD_IP);
    let mut processes = local_binaries(&plan, &bin_dir, None)?;
    let control_plane_containers = processes.len();

    // The syncer's volumes go to a folder of their own, as each pod has its own volumes.
    let syncer_root = root.join("syncer");
    let host_kubeconfig = syncer_root.join("host-kubeconfig");
    let syncer_plan = match &objects.syncer {
        None => None,
        Some((deployment, mounted)) => {
            let pod = LocalPod::of_deployment(deployment, syncer::POD_SUFFIX)?;
            let ports = local_ports(&pod)?;
            let mut services = syncer::api_server_addresses(&id, &api_server);
            services.extend(syncer::kubelet_addresses(deployment, &ports));
            let addresses = Addresses { ports, services };
            let plan = syncer::plan(
                deployment,
                mounted,
                &addresses,
                &syncer_root,
                &host_kubeconfig,
            )
            .with_context(|| format!("the syncer of {what}"))?;
            for (process, binary) in local_binaries(&plan, &bin_dir, syncer_binary.as_deref())? {
                if processes
                    .iter()
                    .any(|(p, _)| p.container == process.container)
                {
                    bail!(
                        "the syncer's container {} has the name of a control plane container",
                        process.container
                    );
                }
                processes.push((process, binary));
            }
            Some(plan)
        }
    };

    let kubeconfig_path = root.join("kubeconfig");
    let local_config =
        plan::local_kubeconfig(&objects.admin_kubeconfig, &format!("https://{api_server}"))
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
    let logs = root.join("logs");
    prepare(&logs, [&plan].into_iter().chain(&syncer_plan))?;
    write_private(&kubeconfig_path, local_config.as_bytes())?;
    if let Some(plan) = &syncer_plan {
        let account = plan
            .service_account
            .as_deref()
            .expect("syncer::plan has checked it");
        syncer::write_host_kubeconfig(&dir, namespace, account, &host_kubeconfig).await?;
    }

    let mut pod = Pod {
        dir: dir.clone(),
        root: root.clone(),
        lifetime: options.lifetime,
        since,
        containers: Vec::new(),
    };
    let result = async {
        let client = kubeconfig::client(&kubeconfig_path).await?;
        let probe = || {
            let client = client.clone();
            async move {
                let request = http::Request::get("/readyz").body(Vec::new())?;
                client.request_text(request).await?;
                Ok(())
            }
        };
        let mut processes = processes.into_iter();
        for (process, binary) in processes.by_ref().take(control_plane_containers) {
            pod.start(Container::new(&prefix, &logs, process, binary))?;
        }
        pod.wait_ready(&what, probe).await?;
        if let Some(plan) = &syncer_plan {
            eprintln!(
                "local-cluster: {:>5.1?} {what}: control plane ready, starting the syncer",
                since.elapsed()
            );
            for (process, binary) in processes {
                pod.start(Container::new(&prefix, &logs, process, binary))?;
            }
            // Its own readiness probes, as rendered: the syncer is ready once it leads and
            // its caches are filled.
            let probes = plan.http_readiness.clone();
            ensure!(
                !probes.is_empty(),
                "the syncer's pod has no HTTP readiness probe"
            );
            pod.wait_ready(&what, || {
                let probes = probes.clone();
                async move {
                    for probe in &probes {
                        let (code, body) = loopback::http_get(probe.port, &probe.path).await?;
                        ensure!(
                            code == 200,
                            "{} {}: {code} {}",
                            probe.container,
                            probe.path,
                            body.trim()
                        );
                    }
                    Ok(())
                }
            })
            .await?;
        }
        Ok(())
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

/// Each process of `plan` with the binary it runs: `syncer_binary` (this workspace's build) for
/// the syncer, the local cluster's binaries in `bin_dir` for the rest.
fn local_binaries(
    plan: &Plan,
    bin_dir: &Path,
    syncer_binary: Option<&Path>,
) -> Result<Vec<(LocalProcess, PathBuf)>> {
    plan.processes
        .iter()
        .map(|p| {
            let path = match syncer_binary {
                Some(built) if p.binary == syncer::BINARY => built.to_owned(),
                _ => bin_dir.join(&p.binary),
            };
            if !path.is_file() {
                bail!(
                    "container {} runs {}, which is not among the binaries in {}",
                    p.container,
                    p.binary,
                    bin_dir.display()
                );
            }
            Ok((p.clone(), path))
        })
        .collect()
}

/// Each declared port of `pod` to a free loopback port.
fn local_ports(pod: &LocalPod<'_>) -> Result<BTreeMap<u16, u16>> {
    let declared = pod.declared_ports()?;
    let free = cluster::free_loopback_ports(declared.len())?;
    Ok(declared.into_iter().zip(free).collect())
}

/// What [`run_instance`] reads from the cluster.
struct Objects {
    stateful_set: StatefulSet,
    /// What the control plane mounts.
    control_plane: Mounted,
    /// The admin kubeconfig of Secret `vc-NAME`.
    admin_kubeconfig: Vec<u8>,
    /// The syncer's Deployment and what it mounts, when it is to run.
    syncer: Option<(Deployment, Mounted)>,
}

/// The control plane's StatefulSet, the admin kubeconfig and, with `syncer`, the syncer's
/// Deployment, each with the Secrets and ConfigMaps it mounts (those that exist), read as
/// cluster admin of the cluster in `dir`.
async fn read_objects(dir: &Path, id: &InstanceRef, syncer: bool) -> Result<Objects> {
    let admin = kubeconfig::client(&dir.join("kubeconfig")).await?;
    let namespace = id.namespace.as_str();
    let sts_name = id.control_plane();
    let stateful_set = Api::<StatefulSet>::namespaced(admin.clone(), namespace)
        .get(&sts_name)
        .await
        .with_context(|| format!("reading StatefulSet {namespace}/{sts_name}"))?;
    let control_plane = read_mounted(&admin, &LocalPod::of_stateful_set(&stateful_set)?).await?;
    let admin_secret = id.kubeconfig_secret();
    let admin_kubeconfig = Api::<Secret>::namespaced(admin.clone(), namespace)
        .get(&admin_secret)
        .await
        .with_context(|| format!("reading Secret {namespace}/{admin_secret}"))?
        .data
        .and_then(|mut d| d.remove(KUBECONFIG_KEY))
        .with_context(|| format!("Secret {namespace}/{admin_secret} has no key {KUBECONFIG_KEY}"))?
        .0;
    let syncer = if syncer {
        let name = id.syncer();
        let deployment = Api::<Deployment>::namespaced(admin.clone(), namespace)
            .get(&name)
            .await
            .with_context(|| format!("reading Deployment {namespace}/{name}"))?;
        let mounted = read_mounted(
            &admin,
            &LocalPod::of_deployment(&deployment, syncer::POD_SUFFIX)?,
        )
        .await?;
        Some((deployment, mounted))
    } else {
        None
    };
    Ok(Objects {
        stateful_set,
        control_plane,
        admin_kubeconfig,
        syncer,
    })
}

/// The Secrets and ConfigMaps `pod` mounts, those that exist.
async fn read_mounted(client: &kube::Client, pod: &LocalPod<'_>) -> Result<Mounted> {
    let namespace = pod.namespace.as_str();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let mut mounted = Mounted::default();
    for name in pod.mounted_secrets() {
        if let Some(found) = secrets
            .get_opt(&name)
            .await
            .with_context(|| format!("reading Secret {namespace}/{name}"))?
        {
            mounted.secrets.push(found);
        }
    }
    for name in pod.mounted_config_maps() {
        if let Some(found) = config_maps
            .get_opt(&name)
            .await
            .with_context(|| format!("reading ConfigMap {namespace}/{name}"))?
        {
            mounted.config_maps.push(found);
        }
    }
    Ok(mounted)
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

impl Container {
    /// `process` running `binary`, recorded under the instance's record `prefix`, logging to
    /// `logs/CONTAINER.log`.
    fn new(prefix: &str, logs: &Path, process: LocalProcess, binary: PathBuf) -> Self {
        Container {
            record_name: format!("{prefix}{}", process.container),
            log: logs.join(format!("{}.log", process.container)),
            process,
            binary,
            running: None,
            restarts: 0,
        }
    }
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

/// Makes the folders (emptying all but claims) and writes the files of `plans`, with a fresh
/// `logs` folder.
fn prepare<'a>(logs: &Path, plans: impl IntoIterator<Item = &'a Plan>) -> Result<()> {
    let plans: Vec<&Plan> = plans.into_iter().collect();
    let folders = || plans.iter().flat_map(|p| &p.folders);
    for folder in folders()
        .filter(|f| !f.keep)
        .map(|f| f.path.as_path())
        .chain([logs])
    {
        match fs::remove_dir_all(folder) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                return Err(err).with_context(|| format!("removing {}", folder.display()));
            }
            _ => {}
        }
    }
    for folder in folders().map(|f| f.path.as_path()).chain([logs]) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(folder)
            .with_context(|| format!("creating {}", folder.display()))?;
    }
    for file in plans.iter().flat_map(|p| &p.files) {
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
