//! What the benchmarks (`bench-operator`, `bench-syncer`, `bench-kubelet`) share: waiting on
//! watch caches, the API server's own request counters, the memory and CPU time of a process,
//! and the local syncer restarted as another build.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::PostParams;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use virtualcluster_crds::VirtualCluster;
use virtualcluster_crds::instance::InstanceRef;

use crate::cluster::State;
use crate::process::{self, Lifetime, ProcessRecord, Started};

/// Checks `check` (on watch caches) every 100 ms until it is true; gives up after `timeout`.
pub async fn wait_for(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !check() {
        ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// A cache of the metadata of `api`'s objects, kept by a watch.
pub fn watch_metadata<K>(
    api: Api<PartialObjectMeta<K>>,
    config: &watcher::Config,
) -> Store<PartialObjectMeta<K>>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K: Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    tokio::spawn(
        watcher(api, config.clone())
            .default_backoff()
            .reflect(writer)
            .for_each(|_| futures::future::ready(())),
    );
    store
}

/// One series of the API server's `apiserver_request_total`, summed over response codes,
/// API groups, versions and scopes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestKind {
    pub resource: String,
    pub subresource: String,
    pub verb: String,
}

impl RequestKind {
    /// Whether requests of this kind change objects.
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE" | "DELETECOLLECTION"
        )
    }
}

impl std::fmt::Display for RequestKind {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.subresource.as_str() {
            "" => write!(out, "{} {}", self.verb, self.resource),
            sub => write!(out, "{} {}/{sub}", self.verb, self.resource),
        }
    }
}

/// The `/metrics` text of the API server `client` talks to.
async fn metrics(client: &Client) -> Result<String> {
    client
        .request_text(http::Request::get("/metrics").body(Vec::new())?)
        .await
        .context("reading the API server's metrics")
}

/// Requests an API server has served so far, by kind, from its `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestCounts(pub BTreeMap<RequestKind, f64>);

impl RequestCounts {
    /// Reads the counters of the API server `client` talks to (which needs access to
    /// `/metrics`).
    pub async fn read(client: &Client) -> Result<RequestCounts> {
        Ok(Self::parse(&metrics(client).await?))
    }

    /// The `apiserver_request_total` series of a `/metrics` text.
    pub fn parse(text: &str) -> RequestCounts {
        Self::parse_series(text, "apiserver_request_total")
    }

    /// The series of metric `name` of a `/metrics` text, by request kind.
    fn parse_series(text: &str, name: &str) -> RequestCounts {
        let prefix = format!("{name}{{");
        let mut counts = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(prefix.as_str()) else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            let labels: BTreeMap<&str, &str> = labels
                .split("\",")
                .filter_map(|kv| kv.split_once("=\""))
                .map(|(k, v)| (k, v.trim_end_matches('"')))
                .collect();
            let label = |name: &str| labels.get(name).copied().unwrap_or_default().to_owned();
            let kind = RequestKind {
                resource: label("resource"),
                subresource: label("subresource"),
                verb: label("verb"),
            };
            *counts.entry(kind).or_insert(0.0) += value.trim().parse::<f64>().unwrap_or(0.0);
        }
        RequestCounts(counts)
    }

    /// The requests served since `earlier` was read, kinds without any left out.
    pub fn since(&self, earlier: &RequestCounts) -> RequestCounts {
        RequestCounts(
            self.0
                .iter()
                .map(|(kind, n)| (kind, n - earlier.0.get(kind).copied().unwrap_or(0.0)))
                .filter(|(_, n)| *n > 0.0)
                .map(|(kind, n)| (kind.clone(), n))
                .collect(),
        )
    }

    /// Write requests of the kinds `filter` selects.
    pub fn writes(&self, filter: impl Fn(&RequestKind) -> bool) -> f64 {
        self.0
            .iter()
            .filter(|(kind, _)| kind.is_write() && filter(kind))
            .map(|(_, n)| n)
            // An empty sum of floats is -0.
            .fold(0.0, |sum, n| sum + n)
    }

    /// Write requests of each kind `filter` selects, as `VERB resource[/subresource] N, ...`
    /// (`none` without any).
    pub fn describe_writes(&self, filter: impl Fn(&RequestKind) -> bool) -> String {
        self.describe(|kind| kind.is_write() && filter(kind))
    }

    /// The requests `filter` takes, by kind.
    pub fn describe(&self, filter: impl Fn(&RequestKind) -> bool) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .filter(|(kind, _)| filter(kind))
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect();
        if parts.is_empty() {
            "none".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// Time an API server spent serving requests so far, by kind, from its
/// `apiserver_request_duration_seconds` (sum and count), for the mean latency of a window.
#[derive(Debug, Clone, Default)]
pub struct RequestTimes {
    seconds: RequestCounts,
    served: RequestCounts,
}

impl RequestTimes {
    pub async fn read(client: &Client) -> Result<RequestTimes> {
        let text = metrics(client).await?;
        Ok(RequestTimes {
            seconds: RequestCounts::parse_series(&text, "apiserver_request_duration_seconds_sum"),
            served: RequestCounts::parse_series(&text, "apiserver_request_duration_seconds_count"),
        })
    }

    pub fn since(&self, earlier: &RequestTimes) -> RequestTimes {
        RequestTimes {
            seconds: self.seconds.since(&earlier.seconds),
            served: self.served.since(&earlier.served),
        }
    }

    /// Mean time to serve each write kind `filter` selects: `VERB resource 12 ms (N), ...`.
    pub fn describe_writes(&self, filter: impl Fn(&RequestKind) -> bool) -> String {
        let parts: Vec<String> = self
            .served
            .0
            .iter()
            .filter(|(kind, _)| kind.is_write() && filter(kind))
            .map(|(kind, n)| {
                let seconds = self.seconds.0.get(kind).copied().unwrap_or(0.0);
                format!("{kind} {:.0} ms ({n})", 1e3 * seconds / n)
            })
            .collect();
        if parts.is_empty() {
            "none".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// Watches the API server `client` talks to is serving now, all clients together
/// (`apiserver_longrunning_requests` with verb WATCH).
pub async fn open_watches(client: &Client) -> Result<f64> {
    let counts =
        RequestCounts::parse_series(&metrics(client).await?, "apiserver_longrunning_requests");
    Ok(counts
        .0
        .iter()
        .filter(|(kind, _)| kind.verb == "WATCH")
        .map(|(_, n)| n)
        .sum())
}

/// Peak and current resident set size of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmHWM:")?, field("VmRSS:")?))
}

/// CPU time (user and system) process `pid` has used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name in parentheses may hold spaces; the fields after it do not.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .with_context(|| format!("parsing /proc/{pid}/stat"))?
        .1
        .split_whitespace()
        .collect();
    // Fields 14 and 15 (utime, stime), counted from 1 with the two before `)`.
    let ticks = |index: usize| -> Result<f64> {
        fields
            .get(index - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("no field {index} in /proc/{pid}/stat"))
    };
    // SAFETY: sysconf only reads a constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((ticks(14)? + ticks(15)?) / per_second)
}

/// CPU seconds each running process of a local cluster (and this one) has used so far, by
/// process name: where a benchmark's CPU went, since everything shares the machine.
#[derive(Debug, Clone, Default)]
pub struct CpuByProcess(BTreeMap<String, f64>);

impl CpuByProcess {
    /// Reads the processes `DIR/state.json` records (the cluster's and its instances').
    pub fn read(dir: &std::path::Path) -> Result<CpuByProcess> {
        let state = crate::cluster::State::read(dir)?
            .with_context(|| format!("no cluster state in {}", dir.display()))?;
        let mut cpu = BTreeMap::new();
        for process in state.running() {
            if let Ok(seconds) = cpu_seconds(process.pid) {
                *cpu.entry(process.name.clone()).or_insert(0.0) += seconds;
            }
        }
        cpu.insert("benchmark".to_owned(), cpu_seconds(std::process::id())?);
        Ok(CpuByProcess(cpu))
    }

    /// With `pid` (a process the state file does not record) counted as `name`.
    pub fn with(mut self, name: &str, pid: u32) -> Result<CpuByProcess> {
        self.0.insert(name.to_owned(), cpu_seconds(pid)?);
        Ok(self)
    }

    /// Seconds of process `name` (0 if it was not running).
    pub fn of(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(0.0)
    }

    pub fn since(&self, earlier: &CpuByProcess) -> CpuByProcess {
        CpuByProcess(
            self.0
                .iter()
                .map(|(name, now)| (name.clone(), now - earlier.0.get(name).unwrap_or(&0.0)))
                .collect(),
        )
    }

    /// `name 12.3 s, ...`, largest first, and the total.
    pub fn describe(&self) -> String {
        let mut parts: Vec<(&String, &f64)> = self.0.iter().filter(|(_, s)| **s >= 0.05).collect();
        parts.sort_by(|a, b| b.1.total_cmp(a.1));
        let total: f64 = self.0.values().sum();
        let list: Vec<String> = parts
            .iter()
            .map(|(name, s)| format!("{name} {s:.1}"))
            .collect();
        format!("{total:.1} s in all: {}", list.join(", "))
    }
}

/// The instance's syncer process, as [`crate::instance::run_instance`] started it: its record in
/// `DIR/state.json` and the command line, environment and working folder to start it again.
pub struct LocalSyncer {
    dir: PathBuf,
    pub record: ProcessRecord,
    program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    cwd: PathBuf,
    lifetime: Lifetime,
    /// The process this benchmark started, once it has.
    started: Option<Started>,
    /// Where in the log the current process's output starts.
    log_offset: u64,
}

impl LocalSyncer {
    /// The syncer `tests/local-cluster run-instance` runs for instance `namespace/instance`.
    pub fn running(
        dir: &Path,
        namespace: &str,
        instance: &str,
        lifetime: Lifetime,
    ) -> Result<LocalSyncer> {
        let name = format!("instances/{namespace}/{instance}/syncer");
        let record = State::read(dir)?
            .context("no cluster state")?
            .running()
            .find(|p| p.name == name)
            .cloned()
            .with_context(|| format!("no running {name} in the cluster state"))?;
        let pid = record.pid;
        let (mut args, env) = process::command_of(pid)?;
        ensure!(
            !args.is_empty(),
            "the syncer (pid {pid}) has no command line"
        );
        let program = PathBuf::from(args.remove(0));
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))
            .with_context(|| format!("reading the working folder of pid {pid}"))?;
        Ok(LocalSyncer {
            dir: dir.to_owned(),
            log_offset: 0,
            record,
            program,
            args,
            env,
            cwd,
            lifetime,
            started: None,
        })
    }

    /// Stops the syncer (SIGTERM: it hands its Lease back) and starts it again with the same
    /// command line, environment, working folder, record name and log, running `binary`
    /// instead when given.
    pub fn restart(&mut self, binary: Option<&Path>) -> Result<()> {
        ensure!(
            process::stop(&self.record, Duration::from_secs(30))?,
            "the syncer (pid {}) was no longer running\n{}",
            self.record.pid,
            process::log_tail(&self.record.log, 40)
        );
        if let Some(mut started) = self.started.take() {
            let _ = started.child.wait();
        }
        if let Some(binary) = binary {
            self.program = binary.to_owned();
        }
        self.log_offset = std::fs::metadata(&self.record.log)
            .map(|m| m.len())
            .unwrap_or(0);
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd);
        let started = process::spawn(&self.record.name, cmd, &self.record.log, self.lifetime)?;
        let previous = std::mem::replace(&mut self.record, started.record.clone());
        let record = self.record.clone();
        State::update(&self.dir, |state| {
            state
                .processes
                .retain(|p| *p != previous && p.name != record.name);
            state.processes.push(record);
            Ok(())
        })?;
        self.started = Some(started);
        Ok(())
    }

    /// Fails if the process this benchmark started has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(started) = &mut self.started
            && let Some(status) = started.child.try_wait()?
        {
            bail!(
                "the syncer exited ({status})\n{}",
                process::log_tail(&self.record.log, 40)
            );
        }
        Ok(())
    }

    /// Waits until the current process logs that its caches are ready.
    pub async fn wait_caches_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            self.check_running()?;
            let log = std::fs::read(&self.record.log).unwrap_or_default();
            let ours = log.get(self.log_offset as usize..).unwrap_or_default();
            if String::from_utf8_lossy(ours).contains("caches ready") {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the syncer did not get its caches ready within 300 s\n{}",
                process::log_tail(&self.record.log, 40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The text of its `/metrics`, at the address its command line names.
    pub async fn metrics(&self) -> Result<String> {
        let port = crate::instance::syncer::metrics_port(&self.args)
            .context("the syncer's command line has no --metrics-addr")?;
        let (code, text) = crate::loopback::http_get(port, "/metrics").await?;
        ensure!(code == 200, "the syncer's /metrics answered {code}");
        Ok(text)
    }
}

/// Creates VirtualCluster `namespace/name` with `spec` and waits until the operator rendered
/// what [`crate::instance::run_instance`] reads.
pub async fn create_instance(
    admin: &Client,
    namespace: &str,
    name: &str,
    spec: serde_json::Value,
) -> Result<InstanceRef> {
    let vcs: Api<VirtualCluster> = Api::namespaced(admin.clone(), namespace);
    let vc: VirtualCluster = serde_json::from_value(serde_json::json!({
        "apiVersion": "virtualcluster.dev/v1alpha1",
        "kind": "VirtualCluster",
        "metadata": {"name": name},
        "spec": spec,
    }))?;
    let vc = vcs.create(&PostParams::default(), &vc).await?;
    let id = InstanceRef::of(&vc);
    let sets: Api<StatefulSet> = Api::namespaced(admin.clone(), namespace);
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), namespace);
    let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), namespace);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let rendered = sets.get_opt(&id.control_plane()).await?.is_some()
            && deployments.get_opt(&id.syncer()).await?.is_some()
            && secrets.get_opt(&id.kubeconfig_secret()).await?.is_some()
            && secrets
                .get_opt(&id.syncer_kubeconfig_secret())
                .await?
                .is_some()
            && config_maps.get_opt(&id.syncer_config()).await?.is_some();
        if rendered {
            return Ok(id);
        }
        ensure!(
            Instant::now() < deadline,
            "the operator did not render {namespace}/{name} within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
