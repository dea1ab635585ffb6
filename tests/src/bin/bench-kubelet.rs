//! Benchmark of the kubelet API the syncer serves for its virtual nodes: runs one
//! VirtualCluster on a fresh local cluster (control plane and syncer as local processes, the
//! syncer a release build) with one virtual pod, and prints, side by side in one run, the same
//! kubectl commands on the virtual pod and directly on its host copy:
//!
//! - `kubectl logs` of a `--log-mib` MiB log: throughput, and the virtual side's share of the
//!   host's;
//! - `--execs` sequential `kubectl exec -- true`, interleaved: median and p99 of each side and
//!   the latency the virtual cluster adds;
//! - `kubectl port-forward`: `--forward-mib` MiB through each side to a local echo server and
//!   back, throughput.
//!
//! ```text
//! cargo run --release -p virtualcluster-tests --bin bench-kubelet -- [--log-mib 100]
//!     [--execs 200] [--forward-mib 64] [--rounds 3] [--keep]
//! ```
//!
//! The host side is kubectl → the host API server → kwok's kubelet API; the virtual side is
//! kubectl → the virtual API server → the syncer → the host API server → kwok. Both run on this
//! machine at the same time as everything else, so the ratios, not the absolute figures, are
//! the result.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::Parser;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use virtualcluster_crds::naming;
use virtualcluster_tests::bench::{self, LocalSyncer};
use virtualcluster_tests::cluster::{self, UpOptions, free_loopback_ports};
use virtualcluster_tests::harness::{TestCluster, clusters_root, unique_name};
use virtualcluster_tests::instance::{self, syncer};
use virtualcluster_tests::kubectl::Kubectl;
use virtualcluster_tests::nodes::{self, cri_log_line};
use virtualcluster_tests::operator::{self, Operator, Start};
use virtualcluster_tests::process::Lifetime;
use virtualcluster_tests::{binaries, crd, kubeconfig, loopback};

#[derive(Parser)]
struct Args {
    /// Size of the log `kubectl logs` reads, MiB.
    #[arg(long, default_value_t = 100)]
    log_mib: usize,
    /// Sequential `kubectl exec -- true` on each side.
    #[arg(long, default_value_t = 200)]
    execs: usize,
    /// Bytes sent through each port-forward and echoed back, MiB.
    #[arg(long, default_value_t = 64)]
    forward_mib: usize,
    /// Times each throughput is measured on each side; the median is printed.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Leave the cluster running afterwards.
    #[arg(long)]
    keep: bool,
}

const INSTANCE: &str = "vc";
const VIRTUAL_NAMESPACE: &str = "bench";
const POD: &str = "web";
const FORWARDED_PORT: u16 = 8080;
const MIB: f64 = 1024.0 * 1024.0;

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        args.rounds > 0 && args.execs > 0,
        "--rounds and --execs must be at least 1"
    );
    eprintln!("bench: building the operator and the syncer (release)");
    let operator_binary = tokio::task::spawn_blocking(|| operator::build(true)).await??;
    let syncer_binary = tokio::task::spawn_blocking(|| syncer::build(true)).await??;
    let bin_dir = tokio::task::spawn_blocking(binaries::ensure).await??;
    let dir = clusters_root().join(unique_name("bench-kubelet"));
    eprintln!("bench: starting a cluster in {}", dir.display());
    let lifetime = if args.keep {
        Lifetime::Detached
    } else {
        Lifetime::TiedToThisProcess
    };
    let cluster: TestCluster = cluster::up(
        &dir,
        &UpOptions {
            bin_dir,
            nodes: Some(1),
            lifetime,
        },
    )
    .await?
    .into();
    let result = run(&args, &cluster, lifetime, &operator_binary, &syncer_binary).await;
    if let Err(err) = &result {
        eprintln!("bench: failed: {err:#}");
    }
    if args.keep {
        eprintln!(
            "bench: the cluster keeps running in {0}; stop it with `tests/local-cluster down {0}`",
            dir.display()
        );
    } else {
        cluster::down(&dir)?;
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// The virtual pod's kubectl and its host copy's.
struct Sides {
    virt: Kubectl,
    host: Kubectl,
    host_pod: String,
}

impl Sides {
    /// `(side name, kubectl, pod name)`, host first.
    fn each(&self) -> [(&'static str, &Kubectl, &str); 2] {
        [
            ("host", &self.host, &self.host_pod),
            ("virtual", &self.virt, POD),
        ]
    }
}

async fn run(
    args: &Args,
    cluster: &TestCluster,
    lifetime: Lifetime,
    operator_binary: &Path,
    syncer_binary: &Path,
) -> Result<()> {
    let admin = cluster.client().await;
    crd::install(&admin).await?;
    let namespace = cluster.namespace("bench").await;
    let identity = operator::identity(cluster, &namespace).await?;
    let _operator = Operator::spawn(
        cluster,
        Start {
            namespaces: &[&namespace],
            kubeconfig: &identity,
            args: &[],
        },
        operator_binary,
        lifetime,
    )
    .await?;
    let spec = json!({"controlPlane": {"persistence": {"enabled": false}}});
    bench::create_instance(&admin, &namespace, INSTANCE, spec).await?;
    eprintln!("bench: running {namespace}/{INSTANCE} locally");
    let kubeconfig = instance::run_instance(
        cluster.dir(),
        &namespace,
        INSTANCE,
        instance::Options::with_syncer(lifetime),
    )
    .await?;
    let virt = kubeconfig::client(&kubeconfig).await?;
    let mut syncer = LocalSyncer::running(cluster.dir(), &namespace, INSTANCE, lifetime)?;
    syncer.restart(Some(syncer_binary))?;
    syncer.wait_caches_ready().await?;
    eprintln!(
        "bench: syncer restarted as a release build (pid {})",
        syncer.record.pid
    );

    // The pod's log, exec folder and port-forward target, as kwok's rules for its host copy.
    let host_pod = naming::host_name(POD, VIRTUAL_NAMESPACE, INSTANCE);
    let files = cluster.dir().join("kwok").join("bench");
    std::fs::create_dir_all(files.join("exec"))?;
    let log = files.join("web.log");
    let log_bytes = write_log(&log, args.log_mib)?;
    let echo = loopback::echo_server().await?;
    let path = |p: &Path| p.display().to_string();
    for (kind, spec) in [
        ("Logs", json!({"logs": [{"logsFile": path(&log)}]})),
        (
            "Exec",
            json!({"execs": [{"local": {"workDir": path(&files.join("exec"))}}]}),
        ),
        (
            "PortForward",
            json!({"forwards": [{"ports": [FORWARDED_PORT],
                                 "target": {"address": "127.0.0.1", "port": echo}}]}),
        ),
    ] {
        nodes::pod_rule(&admin, kind, &namespace, &host_pod, spec).await?;
    }
    create_pod(&virt).await?;
    let kubectl = cluster.bin_dir().join("kubectl");
    let sides = Sides {
        virt: Kubectl {
            binary: kubectl.clone(),
            kubeconfig,
            namespace: VIRTUAL_NAMESPACE.into(),
        },
        host: Kubectl {
            binary: kubectl,
            kubeconfig: cluster.kubeconfig_path().to_owned(),
            namespace: namespace.clone(),
        },
        host_pod,
    };
    wait_served(&sides).await?;

    eprintln!(
        "bench: kubectl logs of a {:.0} MiB log, {} rounds per side",
        log_bytes as f64 / MIB,
        args.rounds
    );
    let mut rates = [Vec::new(), Vec::new()];
    for _ in 0..args.rounds {
        for (i, (_, kubectl, pod)) in sides.each().into_iter().enumerate() {
            let (bytes, took) = read_logs(kubectl, pod).await?;
            ensure!(
                bytes == log_bytes,
                "kubectl logs read {bytes} bytes, the log's text is {log_bytes}"
            );
            rates[i].push(bytes as f64 / MIB / took.as_secs_f64());
        }
    }
    let [host_logs, virt_logs] = rates.map(median);
    println!(
        "logs: host {host_logs:.1} MiB/s, virtual {virt_logs:.1} MiB/s ({:.0}% of the host's)",
        100.0 * virt_logs / host_logs
    );

    eprintln!(
        "bench: {} sequential kubectl exec -- true per side",
        args.execs
    );
    let mut latencies = [Vec::new(), Vec::new()];
    for _ in 0..args.execs {
        for (i, (side, kubectl, pod)) in sides.each().into_iter().enumerate() {
            let started = Instant::now();
            let out = kubectl.run(&["exec", pod, "--", "true"], None).await?;
            ensure!(
                out.status.success(),
                "{side}: kubectl exec failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            latencies[i].push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let [host_exec, virt_exec] = latencies.map(|mut l| {
        l.sort_by(f64::total_cmp);
        (percentile(&l, 0.5), percentile(&l, 0.99))
    });
    println!(
        "exec: host median {:.0} ms p99 {:.0} ms; virtual median {:.0} ms p99 {:.0} ms; \
         added median {:.0} ms p99 {:.0} ms",
        host_exec.0,
        host_exec.1,
        virt_exec.0,
        virt_exec.1,
        virt_exec.0 - host_exec.0,
        virt_exec.1 - host_exec.1
    );

    eprintln!(
        "bench: port-forward of {} MiB each way, {} rounds per side",
        args.forward_mib, args.rounds
    );
    let mut rates = [Vec::new(), Vec::new()];
    for _ in 0..args.rounds {
        for (i, (_, kubectl, pod)) in sides.each().into_iter().enumerate() {
            let took = forward(kubectl, pod, args.forward_mib).await?;
            rates[i].push(args.forward_mib as f64 / took.as_secs_f64());
        }
    }
    let [host_forward, virt_forward] = rates.map(median);
    println!(
        "port-forward: host {host_forward:.1} MiB/s, virtual {virt_forward:.1} MiB/s ({:.0}% of \
         the host's)",
        100.0 * virt_forward / host_forward
    );
    syncer.check_running()?;
    Ok(())
}

/// Writes, in the CRI format kwok reads, a log whose text (what `kubectl logs` prints) is at
/// least `mib` MiB; returns the size of that text.
fn write_log(path: &Path, mib: usize) -> Result<u64> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let filler = "x".repeat(180);
    let now = chrono::Utc::now();
    let mut text = 0u64;
    let mut line = 0u64;
    while text < (mib * 1024 * 1024) as u64 {
        let body = format!("{line:08} {filler}");
        out.write_all(cri_log_line(now, "stdout", &body).as_bytes())?;
        text += body.len() as u64 + 1;
        line += 1;
    }
    out.flush()?;
    Ok(text)
}

/// Creates the virtual pod in its namespace and waits until it runs.
async fn create_pod(virt: &kube::Client) -> Result<()> {
    Api::<Namespace>::all(virt.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": VIRTUAL_NAMESPACE}}))?,
        )
        .await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(virt.clone(), VIRTUAL_NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(virt.clone(), VIRTUAL_NAMESPACE);
    let deadline = Instant::now() + Duration::from_secs(300);
    while accounts.get_opt("default").await?.is_none() {
        ensure!(Instant::now() < deadline, "no default ServiceAccount");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": POD},
            "spec": {"containers": [{"name": POD, "image": "nginx"}]},
        }))?,
    )
    .await?;
    loop {
        let pod = pods.get(POD).await?;
        if pod.status.and_then(|s| s.phase).as_deref() == Some("Running") {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the virtual pod did not run within 300 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until kwok answers from the pod's rules (it sees them through a watch).
async fn wait_served(sides: &Sides) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = sides
            .host
            .run(&["logs", &sides.host_pod, "--tail=1"], None)
            .await?;
        if String::from_utf8_lossy(&out.stdout).contains("xxxx") {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "kwok did not serve the pod's log within 60 s: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `kubectl logs POD` read to its end: bytes and time.
async fn read_logs(kubectl: &Kubectl, pod: &str) -> Result<(u64, Duration)> {
    let started = Instant::now();
    let mut child = kubectl
        .command(&["logs", pod])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdout = child.stdout.take().context("kubectl's stdout")?;
    let bytes = tokio::io::copy(&mut stdout, &mut tokio::io::sink()).await?;
    let status = child.wait().await?;
    ensure!(status.success(), "kubectl logs {pod}: {status}");
    Ok((bytes, started.elapsed()))
}

/// `mib` MiB through `kubectl port-forward POD` to the echo server and back: the time from
/// the first byte sent to the last byte received.
async fn forward(kubectl: &Kubectl, pod: &str, mib: usize) -> Result<Duration> {
    let [local] = free_loopback_ports(1)?[..] else {
        unreachable!("one port asked for")
    };
    let mut child = kubectl
        .command(&[
            "port-forward",
            pod,
            &format!("{local}:{FORWARDED_PORT}"),
            "--address=127.0.0.1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().context("kubectl's stdout")?);
    let mut line = String::new();
    while !line.contains("Forwarding from") {
        line.clear();
        let read = tokio::time::timeout(Duration::from_secs(30), lines.read_line(&mut line))
            .await
            .context("kubectl port-forward did not start within 30 s")??;
        ensure!(read > 0, "kubectl port-forward {pod} ended");
    }
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", local)).await?;
    let (mut read, mut write) = stream.split();
    let chunk = vec![0x5a_u8; 1024 * 1024];
    let started = Instant::now();
    let send = async {
        for _ in 0..mib {
            write.write_all(&chunk).await?;
        }
        anyhow::Ok(())
    };
    let receive = async {
        let mut buffer = vec![0u8; 256 * 1024];
        let mut left = mib * 1024 * 1024;
        while left > 0 {
            let n = read.read(&mut buffer).await?;
            ensure!(
                n > 0,
                "the forwarded connection closed with {left} bytes to come"
            );
            left = left.saturating_sub(n);
        }
        Ok(())
    };
    let (sent, received) = tokio::time::timeout(
        Duration::from_secs(600),
        futures::future::join(send, receive),
    )
    .await
    .context("the port-forward did not echo within 600 s")?;
    sent?;
    received?;
    let took = started.elapsed();
    let _ = child.kill().await;
    Ok(took)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    percentile(&values, 0.5)
}

/// The `p` quantile of sorted `values` (nearest rank).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
