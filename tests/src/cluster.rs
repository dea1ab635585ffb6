//! `up` and `down` of one local control plane living in a directory: etcd, kube-apiserver and
//! kube-controller-manager, plus kube-scheduler and kwok when simulated nodes are asked for.

use std::fs;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use serde::{Deserialize, Serialize};

use crate::binaries::{self, FileLock};
use crate::kubeconfig;
use crate::nodes;
use crate::pki::{Client, FRONT_PROXY_CLIENT, Pki};
use crate::process::{self, Lifetime, ProcessRecord, Started};

pub const STATE_FILE: &str = "state.json";
/// Held while `state.json` is read, changed and written back.
const STATE_LOCK: &str = ".state.lock";
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

pub(crate) const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Everything `up` creates in DIR (and replaces on the next `up`), including what
/// [`crate::instance::run_instance`] adds later.
const GENERATED: &[&str] = &[
    "etcd",
    "instances",
    "logs",
    "pki",
    "kubeconfigs",
    "kwok",
    "kubeconfig",
    STATE_FILE,
];

/// What `up` recorded in `DIR/state.json`; `down` stops `processes` in reverse order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub bin_dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub server: String,
    /// Number of simulated nodes, if kube-scheduler and kwok were started.
    pub nodes: Option<u32>,
    /// In start order.
    pub processes: Vec<ProcessRecord>,
}

impl State {
    /// The state recorded in `dir`, if any.
    pub fn read(dir: &Path) -> Result<Option<State>> {
        let path = dir.join(STATE_FILE);
        match fs::read(&path) {
            Ok(data) => Ok(Some(
                serde_json::from_slice(&data)
                    .with_context(|| format!("parsing {}", path.display()))?,
            )),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Reads the state of `dir`, lets `change` edit it and writes it back, holding a lock so
    /// that concurrent updates (instances started next to the cluster, `down`) are not lost.
    pub fn update<T>(dir: &Path, change: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let _lock = FileLock::acquire(&dir.join(STATE_LOCK))?;
        let mut state = State::read(dir)?.with_context(|| {
            format!(
                "{} has no {STATE_FILE}: start a cluster there with `tests/local-cluster up`",
                dir.display()
            )
        })?;
        let result = change(&mut state)?;
        state.write(dir)?;
        Ok(result)
    }

    fn write(&self, dir: &Path) -> Result<()> {
        // Written whole and renamed so that a concurrent `down` never reads half a file.
        let tmp = dir.join(format!(".{STATE_FILE}.tmp"));
        fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        fs::rename(&tmp, dir.join(STATE_FILE))?;
        Ok(())
    }

    pub fn running(&self) -> impl Iterator<Item = &ProcessRecord> {
        self.processes.iter().filter(|p| p.is_running())
    }
}

#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Folder holding the binaries (see [`binaries::ensure`]).
    pub bin_dir: PathBuf,
    /// Start kube-scheduler and kwok, and create this many simulated nodes.
    pub nodes: Option<u32>,
    pub lifetime: Lifetime,
}

/// A running control plane.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub dir: PathBuf,
    /// Cluster-admin kubeconfig.
    pub kubeconfig: PathBuf,
    pub bin_dir: PathBuf,
    pub server: String,
}

/// Starts a fresh control plane in `dir` and returns once it serves requests (and its nodes
/// are Ready). On failure, whatever was started is stopped again.
pub async fn up(dir: &Path, options: &UpOptions) -> Result<Cluster> {
    let started = Instant::now();
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = std::path::absolute(dir)?;
    if let Some(state) = State::read(&dir)? {
        let running: Vec<_> = state
            .running()
            .map(|p| format!("{} (pid {})", p.name, p.pid))
            .collect();
        if !running.is_empty() {
            bail!(
                "{} already has a running cluster: {}; stop it with `tests/local-cluster down {}`",
                dir.display(),
                running.join(", "),
                dir.display()
            );
        }
    }
    for name in GENERATED {
        let path = dir.join(name);
        if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path).or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
        }
        .with_context(|| format!("removing {}", path.display()))?;
    }
    binaries::verify(&options.bin_dir)?;

    let pki = Pki::new(&dir);
    pki.generate()?;
    let [
        etcd_port,
        etcd_peer_port,
        apiserver_port,
        kcm_port,
        scheduler_port,
        kubelet_port,
    ] = free_ports()?;
    let server = format!("https://127.0.0.1:{apiserver_port}");
    let admin_kubeconfig = dir.join("kubeconfig");
    kubeconfig::write(
        &admin_kubeconfig,
        &server,
        &pki.ca_cert(),
        &pki.client(Client::Admin),
        "admin",
    )?;
    for client in [Client::ControllerManager, Client::Scheduler, Client::Kwok] {
        kubeconfig::write(
            &component_kubeconfig(&dir, client),
            &server,
            &pki.ca_cert(),
            &pki.client(client),
            client.file_stem(),
        )?;
    }

    let mut run = Run {
        dir: dir.clone(),
        lifetime: options.lifetime,
        state: State {
            bin_dir: options.bin_dir.clone(),
            kubeconfig: admin_kubeconfig.clone(),
            server: server.clone(),
            nodes: options.nodes,
            processes: Vec::new(),
        },
        children: Vec::new(),
        since: started,
    };
    let result = async {
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer_port}");
        run.start("etcd", |cmd| {
            cmd.args([
                "--name=local",
                &format!("--data-dir={}", dir.join("etcd").display()),
                &format!("--listen-client-urls={etcd_url}"),
                &format!("--advertise-client-urls={etcd_url}"),
                &format!("--listen-peer-urls={peer_url}"),
                &format!("--initial-advertise-peer-urls={peer_url}"),
                &format!("--initial-cluster=local={peer_url}"),
                // Throwaway data: durability only costs time.
                "--unsafe-no-fsync",
            ]);
        })?;

        let path = |p: PathBuf| p.display().to_string();
        let apiserver = pki.apiserver();
        run.start("kube-apiserver", |cmd| {
            cmd.args([
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={apiserver_port}"),
                format!("--tls-cert-file={}", path(apiserver.cert.clone())),
                format!("--tls-private-key-file={}", path(apiserver.key.clone())),
                format!("--client-ca-file={}", path(pki.ca_cert())),
                // Lets aggregated API servers work, and components that read the
                // request-header CA (controller manager, scheduler) find one.
                format!(
                    "--requestheader-client-ca-file={}",
                    path(pki.front_proxy_ca_cert())
                ),
                format!("--requestheader-allowed-names={FRONT_PROXY_CLIENT}"),
                "--requestheader-username-headers=X-Remote-User".into(),
                "--requestheader-uid-headers=X-Remote-Uid".into(),
                "--requestheader-group-headers=X-Remote-Group".into(),
                "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
                format!(
                    "--proxy-client-cert-file={}",
                    path(pki.front_proxy_client().cert)
                ),
                format!(
                    "--proxy-client-key-file={}",
                    path(pki.front_proxy_client().key)
                ),
                "--authorization-mode=Node,RBAC".into(),
                // On top of the default admission plugins, as kubeadm does.
                "--enable-admission-plugins=NodeRestriction".into(),
                format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
                format!("--api-audiences={SERVICE_ACCOUNT_ISSUER}"),
                format!(
                    "--service-account-key-file={}",
                    path(pki.service_account_pub())
                ),
                format!(
                    "--service-account-signing-key-file={}",
                    path(pki.service_account_key())
                ),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--allow-privileged=true".into(),
                // The lease reconciler would publish 127.0.0.1 as the `kubernetes` Service's
                // endpoint, which endpoint validation rejects as loopback.
                "--endpoint-reconciler-type=none".into(),
                // The simulated nodes' kubelet API is kwok's, on loopback, which they name as
                // their InternalDNS address (see `nodes::KUBELET_HOST`).
                "--kubelet-preferred-address-types=InternalDNS,InternalIP".into(),
            ]);
        })?;

        let admin = kubeconfig::client(&admin_kubeconfig).await?;
        run.wait_until("kube-apiserver /readyz", || {
            let admin = admin.clone();
            async move {
                let request = http::Request::get("/readyz").body(Vec::new())?;
                admin.request_text(request).await?;
                Ok(true)
            }
        })
        .await?;

        let kcm_kubeconfig = path(component_kubeconfig(&dir, Client::ControllerManager));
        run.start("kube-controller-manager", |cmd| {
            cmd.args([
                format!("--kubeconfig={kcm_kubeconfig}"),
                format!("--authentication-kubeconfig={kcm_kubeconfig}"),
                format!("--authorization-kubeconfig={kcm_kubeconfig}"),
                "--leader-elect=false".into(),
                // Each controller's client is held to 20 requests/s by default, which a test
                // or benchmark that creates hundreds of workloads waits on; the loopback API
                // server takes far more.
                "--kube-api-qps=500".into(),
                "--kube-api-burst=1000".into(),
                "--use-service-account-credentials=true".into(),
                format!(
                    "--service-account-private-key-file={}",
                    path(pki.service_account_key())
                ),
                format!("--root-ca-file={}", path(pki.ca_cert())),
                format!("--cluster-signing-cert-file={}", path(pki.ca_cert())),
                format!("--cluster-signing-key-file={}", path(pki.ca_key())),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={kcm_port}"),
            ]);
        })?;

        if let Some(count) = options.nodes {
            let scheduler_kubeconfig = path(component_kubeconfig(&dir, Client::Scheduler));
            run.start("kube-scheduler", |cmd| {
                cmd.args([
                    format!("--kubeconfig={scheduler_kubeconfig}"),
                    format!("--authentication-kubeconfig={scheduler_kubeconfig}"),
                    format!("--authorization-kubeconfig={scheduler_kubeconfig}"),
                    "--leader-elect=false".into(),
                    "--kube-api-qps=500".into(),
                    "--kube-api-burst=1000".into(),
                    "--bind-address=127.0.0.1".into(),
                    format!("--secure-port={scheduler_port}"),
                ]);
            })?;
            let kwok_args = nodes::kwok_args(
                &dir,
                &options.bin_dir,
                &component_kubeconfig(&dir, Client::Kwok),
                kubelet_port,
            )?;
            // kwok watches its per-pod rules from the start.
            let crds = options.bin_dir.join(binaries::KWOK_CRDS_FILE);
            let crds =
                fs::read_to_string(&crds).with_context(|| format!("reading {}", crds.display()))?;
            crate::crd::apply_crds(&admin, &crds).await?;
            run.start("kwok", |cmd| {
                cmd.args(&kwok_args.args).envs(kwok_args.env.clone());
            })?;
            nodes::create(&admin, count).await?;
            run.wait_until(&format!("{count} Ready kwok nodes"), || {
                let admin = admin.clone();
                async move { Ok(nodes::ready_count(&admin).await? >= count) }
            })
            .await?;
        }

        // The controller manager makes it; pods can be created only once it exists.
        let service_accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
        run.wait_until("the default ServiceAccount", || {
            let service_accounts = service_accounts.clone();
            async move { Ok(service_accounts.get_opt("default").await?.is_some()) }
        })
        .await?;
        anyhow::Ok(())
    }
    .await;
    if let Err(err) = result {
        run.stop_all();
        return Err(err);
    }
    eprintln!(
        "local-cluster: {} is up after {:.1?}",
        dir.display(),
        started.elapsed()
    );
    Ok(Cluster {
        dir,
        kubeconfig: admin_kubeconfig,
        bin_dir: options.bin_dir.clone(),
        server,
    })
}

/// Stops what `up` started in `dir`, newest first; does nothing for processes that are already
/// gone (and never signals a process that merely reuses a recorded pid). Returns how many
/// processes it stopped.
pub fn down(dir: &Path) -> Result<usize> {
    let dir = std::path::absolute(dir)?;
    if State::read(&dir)?.is_none() {
        return Ok(0);
    }
    State::update(&dir, |state| {
        let stopped = stop_records(&state.processes)?;
        state.processes.clear();
        Ok(stopped)
    })
}

/// Stops the recorded processes that still run, newest first; returns how many it stopped.
pub(crate) fn stop_records(records: &[ProcessRecord]) -> Result<usize> {
    let mut stopped = 0;
    for record in records.iter().rev() {
        if process::stop(record, STOP_GRACE)? {
            eprintln!(
                "local-cluster: stopped {} (pid {})",
                record.name, record.pid
            );
            stopped += 1;
        }
    }
    Ok(stopped)
}

/// Where a component's kubeconfig lives.
pub fn component_kubeconfig(dir: &Path, client: Client) -> PathBuf {
    dir.join("kubeconfigs")
        .join(format!("{}.kubeconfig", client.file_stem()))
}

/// `count` distinct free ports for listeners. They are drawn below the kernel's ephemeral
/// range: a port from that range can be taken at any moment as the local end of some
/// process's outbound connection (a long watch holds it for minutes), and a listener started
/// later on it fails with "address in use". Each candidate is bound on every address, as the
/// components listen, and held until all are picked so that none is handed out twice.
pub fn free_loopback_ports(count: usize) -> Result<Vec<u16>> {
    let (low, _) = ephemeral_range();
    let first = 10_000u16.min(low.saturating_sub(1_000));
    let span = u64::from(low - first);
    let mut seed = random_seed();
    let mut held = Vec::with_capacity(count);
    for _ in 0..(count * 200).max(200) {
        if held.len() == count {
            break;
        }
        // xorshift: a cheap spread over the range, seeded per call.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let port = first + (seed % span) as u16;
        if let Ok(listener) = TcpListener::bind(("0.0.0.0", port)) {
            held.push(listener);
        }
    }
    if held.len() < count {
        bail!(
            "found only {} of {count} free ports below {low}",
            held.len()
        );
    }
    Ok(held
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<_>>()?)
}

/// The kernel's ephemeral port range, or Linux's default when it cannot be read.
fn ephemeral_range() -> (u16, u16) {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .filter(|(low, _)| *low > 2_000)
        .unwrap_or((32_768, 60_999))
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish() | 1
}

fn free_ports<const N: usize>() -> Result<[u16; N]> {
    Ok(free_loopback_ports(N)?.try_into().expect("N ports"))
}

/// Processes started so far by one `up`.
struct Run {
    dir: PathBuf,
    lifetime: Lifetime,
    state: State,
    children: Vec<Started>,
    since: Instant,
}

impl Run {
    fn start(&mut self, name: &str, configure: impl FnOnce(&mut Command)) -> Result<()> {
        let mut cmd = Command::new(self.state.bin_dir.join(name));
        configure(&mut cmd);
        let log = self.dir.join("logs").join(format!("{name}.log"));
        let started = process::spawn(name, cmd, &log, self.lifetime)?;
        eprintln!(
            "local-cluster: {:>5.1?} started {name} (pid {}), log {}",
            self.since.elapsed(),
            started.record.pid,
            log.display()
        );
        self.state.processes.push(started.record.clone());
        self.children.push(started);
        self.state.write(&self.dir)
    }

    /// Fails if a started process has exited, with the end of its log.
    fn check_alive(&mut self) -> Result<()> {
        for started in &mut self.children {
            if let Some(status) = started.child.try_wait()? {
                bail!(
                    "{} exited during startup ({status})\n{}",
                    started.record.name,
                    process::log_tail(&started.record.log, 40)
                );
            }
        }
        Ok(())
    }

    /// Polls `probe` until it returns `Ok(true)`; errors count as "not yet". Fails early if a
    /// process exits, and after [`STARTUP_TIMEOUT`] with the ends of all logs.
    async fn wait_until<F, Fut>(&mut self, what: &str, mut probe: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<bool>>,
    {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            self.check_alive()?;
            let last = match tokio::time::timeout(Duration::from_secs(5), probe()).await {
                Ok(Ok(true)) => {
                    eprintln!("local-cluster: {:>5.1?} {what}: ok", self.since.elapsed());
                    return Ok(());
                }
                Ok(Ok(false)) => "not yet".to_owned(),
                Ok(Err(err)) => format!("{err:#}"),
                Err(_) => "probe timed out".to_owned(),
            };
            if Instant::now() > deadline {
                return Err(process::startup_timeout(
                    STARTUP_TIMEOUT,
                    what,
                    &last,
                    self.children.iter().map(|s| s.record.log.as_path()),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn stop_all(&mut self) {
        for started in self.children.iter().rev() {
            if let Err(err) = process::stop(&started.record, Duration::from_secs(5)) {
                eprintln!("local-cluster: {err:#}");
            }
        }
        for started in &mut self.children {
            let _ = started.child.try_wait();
        }
        self.state.processes.clear();
        let _ = self.state.write(&self.dir);
    }
}
