//! Benchmark of the syncer: runs one VirtualCluster on a fresh local cluster with simulated
//! nodes (control plane and syncer as local processes, the syncer a release build), creates
//! pods in it and prints how long each took to get its host copy and to be Running in the
//! virtual cluster, the syncer's peak RSS, its host writes per created pod and on a restart
//! with nothing to change (counted by the API servers' own request metrics), and its
//! throughput next to the rate the host API server takes the same pods directly.
//!
//!   cargo run --release -p virtualcluster-tests --bin bench-syncer -- [--pods N] [--rate R]
//!       [--concurrency C] [--nodes N] [--pod-workers W] [--syncer-env NAME=VALUE]
//!       [--syncer-binary PATH] [--patches] [--keep]
//!
//! With `--custom-resources N` it syncs N objects of a custom resource instead: the time until
//! all have host copies beside the time the host API server takes the same creates directly,
//! and the syncer's RSS before and after.
//!
//! With `--mapped-namespaces N` it runs a namespace-syncing instance instead of the pod
//! phases: N virtual namespaces, each mapped to a host namespace of its own with a ConfigMap
//! in it, and prints the syncer's RSS and the host watches it holds, with none and with N.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service, ServiceAccount};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use virtualcluster_crds::instance::InstanceRef;
use virtualcluster_crds::{marks, naming};
use virtualcluster_tests::bench::{
    self, CpuByProcess, LocalSyncer, RequestCounts, RequestKind, RequestTimes, cpu_seconds, rss_kib,
};
use virtualcluster_tests::cluster::{self, UpOptions};
use virtualcluster_tests::harness::{TestCluster, clusters_root, unique_name};
use virtualcluster_tests::instance::{self, syncer};
use virtualcluster_tests::operator::{self, Operator, Start};
use virtualcluster_tests::process::Lifetime;
use virtualcluster_tests::{binaries, crd, kubeconfig};

#[derive(Parser)]
struct Args {
    /// Pods created in each phase (paced, direct, unpaced).
    #[arg(long, default_value_t = 1000)]
    pods: usize,
    /// Creates per second in the paced phase; 0 creates as fast as `--concurrency` allows.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Creates in flight at once, in every phase.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Simulated nodes (110 pods each); by default enough for twice `--pods` and some spare.
    #[arg(long)]
    nodes: Option<u32>,
    /// Run the syncer with this many pod workers instead of what its Deployment says (the
    /// syncer's default, 16, unless the operator renders one).
    #[arg(long)]
    pod_workers: Option<usize>,
    /// Run the syncer with this environment variable (`NAME=VALUE`) added; repeatable.
    #[arg(long = "syncer-env", value_parser = parse_env)]
    syncer_env: Vec<(String, String)>,
    /// Run this syncer binary instead of building the workspace's (another version's release
    /// build, to compare with).
    #[arg(long)]
    syncer_binary: Option<std::path::PathBuf>,
    /// Instead of the pod phases: sync this many mapped namespaces (a ConfigMap in each) and
    /// print the syncer's RSS and host watches with none and with them.
    #[arg(long, default_value_t = 0)]
    mapped_namespaces: usize,
    /// Instead of the pod phases: sync this many objects of a custom resource (a CRD made on
    /// the host for the run) from the virtual cluster, beside creating as many directly on
    /// the host, and print the time to all host copies and the syncer's RSS.
    #[arg(long, default_value_t = 0)]
    custom_resources: usize,
    /// Give the instance a pod patch of each type (see [`pod_patches`]), applied to every pod.
    #[arg(long)]
    patches: bool,
    /// Leave the cluster running afterwards.
    #[arg(long)]
    keep: bool,
}

/// With `--patches`: a pod patch of each type, each of which changes every benchmark pod (they
/// carry the annotations and label these read).
fn pod_patches() -> serde_json::Value {
    json!([
        {"path": "spec.containers[*].name", "expression": "'p-' + value",
         "reverseExpression": "value.slice(2)"},
        {"path": "metadata.labels[\"app\"]",
         "expression": "valueExists ? value + '-patched' : 'new'"},
        {"path": "metadata.labels[\"tier\"]",
         "expression": "context.virtualObject.metadata?.labels?.['app'] ? 'bench' : null"},
        {"path": "metadata.annotations[\"encoded\"]", "expression": "btoa(value)"},
        {"path": "metadata.annotations[\"config-ref\"]",
         "reference": {"apiVersion": "v1", "kind": "ConfigMap"}},
    ])
}

/// Name of the VirtualCluster.
const INSTANCE: &str = "vc";
/// Virtual namespace of the paced phase.
const PACED_NAMESPACE: &str = "bench";
/// Virtual namespace of the unpaced phase.
const UNPACED_NAMESPACE: &str = "bench-unpaced";
/// How long the host and virtual pod write counters must stay still before a window ends.
const STILL: Duration = Duration::from_secs(5);
/// How long the restarted syncer runs after its caches are ready before the resync window ends.
const RESYNC_WINDOW: Duration = Duration::from_secs(10);

/// Pod writes that are not a subresource's: the scheduler binds through `pods/binding` and
/// kwok reports through `pods/status`, so on the host only the syncer makes these in a window
/// that has no creates or deletes of the benchmark's own.
fn pod_writes(kind: &RequestKind) -> bool {
    kind.resource == "pods" && kind.subresource.is_empty()
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.pods > 0, "--pods must be at least 1");
    ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    ensure!(args.rate >= 0.0, "--rate must not be negative");
    eprintln!("bench: building the operator and the syncer (release)");
    let operator_binary = tokio::task::spawn_blocking(|| operator::build(true)).await??;
    let syncer_binary = match args.syncer_binary.clone() {
        Some(binary) => binary,
        None => tokio::task::spawn_blocking(|| syncer::build(true)).await??,
    };
    let bin_dir = tokio::task::spawn_blocking(binaries::ensure).await??;
    // At most twice --pods at once (the paced and the unpaced phase's copies, or the paced
    // phase's and the direct ones), plus the instance's own pods; kwok nodes take 110 each.
    let node_count = args
        .nodes
        .unwrap_or((2 * args.pods).div_ceil(100) as u32 + 2);
    let dir = clusters_root().join(unique_name("bench-syncer"));
    eprintln!(
        "bench: starting a cluster with {node_count} simulated nodes in {}",
        dir.display()
    );
    let lifetime = if args.keep {
        Lifetime::Detached
    } else {
        Lifetime::TiedToThisProcess
    };
    let cluster: TestCluster = cluster::up(
        &dir,
        &UpOptions {
            bin_dir,
            nodes: Some(node_count),
            lifetime,
        },
    )
    .await?
    .into();
    let bench = Bench {
        args: &args,
        cluster: &cluster,
        lifetime,
        node_count,
    };
    let result = bench.run(&operator_binary, &syncer_binary).await;
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

struct Bench<'a> {
    args: &'a Args,
    cluster: &'a TestCluster,
    lifetime: Lifetime,
    node_count: u32,
}

impl Bench<'_> {
    async fn run(&self, operator_binary: &Path, syncer_binary: &Path) -> Result<()> {
        let n = self.args.pods;
        let cluster = self.cluster;
        let admin = cluster.client().await;
        crd::install(&admin).await?;
        let namespace = cluster.namespace("bench").await;
        let identity = operator::identity(cluster, &namespace).await?;
        let custom = format!("{CUSTOM_PLURAL}.{CUSTOM_GROUP}");
        let mut operator_args = Vec::new();
        if self.args.custom_resources > 0 {
            crd::apply_crds(&admin, &custom_crd()).await?;
            operator::grant_custom_resources(
                cluster,
                &namespace,
                std::slice::from_ref(&custom),
                &[],
            )
            .await?;
            operator_args.push(format!("--custom-resources-to-host={custom}"));
        }
        let operator_args: Vec<&str> = operator_args.iter().map(String::as_str).collect();
        let _operator = Operator::spawn(
            cluster,
            Start {
                namespaces: &[&namespace],
                kubeconfig: &identity,
                args: &operator_args,
            },
            operator_binary,
            self.lifetime,
        )
        .await?;
        let mut spec = json!({"controlPlane": {"persistence": {"enabled": false}}});
        if self.args.mapped_namespaces > 0 {
            spec["sync"] = json!({"toHost": {"namespaces": {"enabled": true,
                "mappings": {"byName": {"m-*": format!("{namespace}-m-*")}}}}});
        }
        if self.args.patches {
            spec["sync"]["toHost"]["pods"]["patches"] = pod_patches();
        }
        if self.args.custom_resources > 0 {
            spec["sync"]["toHost"]["customResources"] = json!({&custom: {"enabled": true}});
        }
        let id = bench::create_instance(&admin, &namespace, INSTANCE, spec).await?;
        eprintln!("bench: running {namespace}/{INSTANCE} locally");
        let kubeconfig = instance::run_instance(
            cluster.dir(),
            &namespace,
            INSTANCE,
            instance::Options::with_syncer(self.lifetime),
        )
        .await?;
        let virt = kubeconfig::client(&kubeconfig).await?;

        // The instance runs the workspace's debug build of the syncer; the same command line
        // and environment run the release build instead.
        let mut syncer = LocalSyncer::running(cluster.dir(), &namespace, INSTANCE, self.lifetime)?;
        if let Some(workers) = self.args.pod_workers {
            syncer
                .args
                .retain(|a| a.split('=').next() != Some("--pod-workers"));
            syncer.args.push(format!("--pod-workers={workers}"));
        }
        for (name, value) in &self.args.syncer_env {
            syncer.env.retain(|(k, _)| k != name);
            syncer.env.push((name.clone(), value.clone()));
        }
        syncer.restart(Some(syncer_binary))?;
        eprintln!(
            "bench: syncer restarted as a release build (pid {}), log {}",
            syncer.record.pid,
            syncer.record.log.display()
        );
        syncer.wait_caches_ready().await?;
        self.wait_dns(&admin, &virt, &id).await?;
        if self.args.mapped_namespaces > 0 {
            return self.mapped_namespaces(&admin, &virt, &syncer, &id).await;
        }
        if self.args.custom_resources > 0 {
            return self.custom_resources(&admin, &virt, &syncer, &id).await;
        }
        for name in [PACED_NAMESPACE, UNPACED_NAMESPACE] {
            create_namespace(&virt, name).await?;
        }
        let direct_namespace = cluster.namespace("direct").await;

        // Watches on both sides, started before any create.
        let mut watches = Watches::default();
        let copies = Tracker::follow(
            &mut watches,
            watch(
                Api::<PartialObjectMeta<Pod>>::namespaced(admin.clone(), &namespace),
                watcher::Config::default().labels(&marks::copies_selector(&id)),
            ),
            |_| true,
            |p| p.name_any(),
        );
        let running = Tracker::follow(
            &mut watches,
            watch(Api::<Pod>::all(virt.clone()), watcher::Config::default()),
            |p: &Pod| {
                p.status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .is_some_and(|phase| phase == "Running")
            },
            |p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()),
        );
        let direct = Tracker::follow(
            &mut watches,
            watch(
                Api::<PartialObjectMeta<Pod>>::namespaced(admin.clone(), &direct_namespace),
                watcher::Config::default(),
            ),
            |_| true,
            |p| p.name_any(),
        );
        let phase_timeout = Duration::from_secs(600 + n as u64 / 5);

        // The virtual cluster's own pods (CoreDNS) run before the first window opens, so that
        // their copies are not counted in it.
        let own: Vec<String> = Api::<Pod>::all(virt.clone())
            .list(&ListParams::default())
            .await?
            .iter()
            .map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()))
            .collect();
        running
            .wait_all(
                "the virtual cluster's own pods Running",
                &own,
                phase_timeout,
            )
            .await?;
        wait_still(&admin, &virt).await?;

        // 1. Paced creates in the virtual cluster, inside the write-counting window.
        let names = pod_names(n);
        let host_names: Vec<String> = names
            .iter()
            .map(|p| naming::host_name(p, PACED_NAMESPACE, INSTANCE))
            .collect();
        let virtual_keys: Vec<String> = names
            .iter()
            .map(|p| format!("{PACED_NAMESPACE}/{p}"))
            .collect();
        let host_before = RequestCounts::read(&admin).await?;
        let virt_before = RequestCounts::read(&virt).await?;
        let machine_before = CpuByProcess::read(cluster.dir())?;
        let host_times_before = RequestTimes::read(&admin).await?;
        let virt_times_before = RequestTimes::read(&virt).await?;
        let reconciles_before = syncer.reconciles().await?;
        eprintln!(
            "bench: creating {n} pods in the virtual cluster at {}",
            rate_text(self.args.rate)
        );
        let paced = create_pods(
            Api::namespaced(virt.clone(), PACED_NAMESPACE),
            &names,
            self.args.rate,
            self.args.concurrency,
        )
        .await?;
        eprintln!(
            "bench: created in {:.1?} ({:.1} creates/s)",
            paced.duration(),
            paced.rate()
        );
        copies
            .wait_all(
                "the host copies of the paced pods",
                &host_names,
                phase_timeout,
            )
            .await?;
        running
            .wait_all("the paced pods Running", &virtual_keys, phase_timeout)
            .await?;
        eprintln!(
            "bench: all copied and Running {:.1?} after the last create",
            running.last_matched(&virtual_keys)? - paced.last_sent()
        );
        wait_still(&admin, &virt).await?;
        let host_create = RequestCounts::read(&admin).await?.since(&host_before);
        let virt_create = RequestCounts::read(&virt).await?.since(&virt_before);
        let machine_paced = CpuByProcess::read(cluster.dir())?.since(&machine_before);
        let cpu_paced = machine_paced.of(&syncer.record.name);
        let reconciles_paced = syncer.reconciles().await?.since(&reconciles_before);
        let host_times = RequestTimes::read(&admin).await?.since(&host_times_before);
        let virt_times = RequestTimes::read(&virt).await?.since(&virt_times_before);
        let paced_responses = paced.response_times();
        let in_virtual_watch = running.latencies(Seen::Appeared, &virtual_keys, &paced.sent);
        let to_copy = copies.latencies(Seen::Matched, &host_names, &paced.sent);
        let to_running = running.latencies(Seen::Matched, &virtual_keys, &paced.sent);
        let (rss_paced, _) = rss_kib(syncer.record.pid)?;

        // 2. A restart with nothing to change.
        eprintln!("bench: restarting the syncer with nothing to change");
        let host_before = RequestCounts::read(&admin).await?;
        let virt_before = RequestCounts::read(&virt).await?;
        syncer.restart(None)?;
        let resync_started = Instant::now();
        syncer.wait_caches_ready().await?;
        let caches_ready = resync_started.elapsed();
        tokio::time::sleep(RESYNC_WINDOW).await;
        wait_still(&admin, &virt).await?;
        let host_resync = RequestCounts::read(&admin).await?.since(&host_before);
        let virt_resync = RequestCounts::read(&virt).await?.since(&virt_before);
        let resync_window = resync_started.elapsed();
        let cpu_resync = cpu_seconds(syncer.record.pid)?;

        // 3. The same pods straight to the host, as fast as the same client gets them in.
        let machine_before = CpuByProcess::read(cluster.dir())?;
        eprintln!("bench: creating {n} pods directly in host namespace {direct_namespace}");
        let direct_pods = create_pods(
            Api::namespaced(admin.clone(), &direct_namespace),
            &names,
            0.0,
            self.args.concurrency,
        )
        .await?;
        direct
            .wait_all("the direct pods", &names, phase_timeout)
            .await?;
        let direct_span = direct.last_matched(&names)? - direct_pods.first_sent();
        let machine_direct = CpuByProcess::read(cluster.dir())?.since(&machine_before);
        eprintln!("bench: deleting the direct pods");
        // A collection delete of 10,000 pods can outlast the API server's request timeout,
        // which closes the connection; what it deleted stays deleted, so it goes on.
        let mut attempt = 1;
        while let Err(err) = Api::<Pod>::namespaced(admin.clone(), &direct_namespace)
            .delete_collection(
                &DeleteParams {
                    grace_period_seconds: Some(0),
                    ..DeleteParams::default()
                },
                &ListParams::default(),
            )
            .await
        {
            ensure!(attempt < 5, "deleting the direct pods: {err}");
            eprintln!("bench: deleting the direct pods again ({err})");
            attempt += 1;
        }
        bench::wait_for("the direct pods to go", phase_timeout, || {
            direct.present() == 0
        })
        .await?;

        // 4. Unpaced creates in the virtual cluster, for the syncer's throughput.
        let unpaced_host_names: Vec<String> = names
            .iter()
            .map(|p| naming::host_name(p, UNPACED_NAMESPACE, INSTANCE))
            .collect();
        let unpaced_keys: Vec<String> = names
            .iter()
            .map(|p| format!("{UNPACED_NAMESPACE}/{p}"))
            .collect();
        let machine_before = CpuByProcess::read(cluster.dir())?;
        eprintln!("bench: creating {n} pods in the virtual cluster, unpaced");
        let unpaced = create_pods(
            Api::namespaced(virt.clone(), UNPACED_NAMESPACE),
            &names,
            0.0,
            self.args.concurrency,
        )
        .await?;
        copies
            .wait_all(
                "the host copies of the unpaced pods",
                &unpaced_host_names,
                phase_timeout,
            )
            .await?;
        let unpaced_span = copies.last_matched(&unpaced_host_names)? - unpaced.first_sent();
        running
            .wait_all("the unpaced pods Running", &unpaced_keys, phase_timeout)
            .await?;
        let unpaced_running_span = running.last_matched(&unpaced_keys)? - unpaced.first_sent();
        let machine_unpaced = CpuByProcess::read(cluster.dir())?.since(&machine_before);
        let cpu_unpaced = machine_unpaced.of(&syncer.record.name);
        let unpaced_to_copy = copies.latencies(Seen::Matched, &unpaced_host_names, &unpaced.sent);
        let (rss_end, rss_now) = rss_kib(syncer.record.pid)?;
        syncer.check_running()?;
        drop(watches);

        let direct_rate = n as f64 / direct_span.as_secs_f64();
        let syncer_rate = n as f64 / unpaced_span.as_secs_f64();
        let mib = |kib: u64| kib as f64 / 1024.0;
        let copy_p99 = percentile(&to_copy, 0.99);
        let host_create_writes = host_create.writes(pod_writes);
        let host_resync_writes = host_resync.writes(pod_writes);

        println!(
            "syncer benchmark: {n} pods per phase, {} simulated nodes, client concurrency {}, \
             syncer pod workers {}",
            self.node_count,
            self.args.concurrency,
            match self.args.pod_workers {
                Some(workers) => workers.to_string(),
                None => "as rendered".to_owned(),
            }
        );
        for (name, value) in &self.args.syncer_env {
            println!("  syncer environment: {name}={value}");
        }
        if self.args.patches {
            println!(
                "  pod patches: one of each type (expression with reverse, map key, condition, btoa, reference)"
            );
        }
        println!();
        println!(
            "  paced phase: {n} creates in virtual namespace {PACED_NAMESPACE} at {} \
             (achieved {:.1}/s over {:.1} s)",
            rate_text(self.args.rate),
            paced.rate(),
            paced.duration().as_secs_f64()
        );
        println!(
            "    create answered                {}",
            summary(&paced_responses)
        );
        println!(
            "    create to seen in virtual watch {}",
            summary(&in_virtual_watch)
        );
        println!("    create to host copy seen       {}", summary(&to_copy));
        println!(
            "    create to Running in virtual   {}",
            summary(&to_running)
        );
        println!(
            "    host pod writes {host_create_writes} ({:.2} per pod): {}",
            host_create_writes / n as f64,
            host_create.describe_writes(|k| k.resource == "pods")
        );
        println!(
            "    virtual writes of pods and tokens (the benchmark's {n} creates included): {}",
            virt_create
                .describe_writes(|k| k.resource == "pods" || k.resource == "serviceaccounts")
        );
        println!(
            "    every request, host: {}",
            host_create.describe(|_| true)
        );
        println!(
            "    every request, virtual: {}",
            virt_create.describe(|_| true)
        );
        println!(
            "    syncer CPU {cpu_paced:.1} s ({:.2} ms per pod), peak RSS {:.1} MiB",
            cpu_paced * 1000.0 / n as f64,
            mib(rss_paced)
        );
        println!("    CPU by process: {}", machine_paced.describe());
        println!(
            "    syncer reconciles by queue (seconds spent in them): {}",
            reconciles_paced.describe()
        );
        let pod_work =
            |k: &RequestKind| ["pods", "serviceaccounts", "events"].contains(&k.resource.as_str());
        println!(
            "    mean time to serve, host: {}",
            host_times.describe_writes(pod_work)
        );
        println!(
            "    mean time to serve, virtual: {}",
            virt_times.describe_writes(pod_work)
        );
        println!();
        println!(
            "  resync: syncer restarted, caches ready after {:.1} s, window {:.1} s (syncer CPU \
             {cpu_resync:.1} s since its start)",
            caches_ready.as_secs_f64(),
            resync_window.as_secs_f64()
        );
        println!(
            "    host pod writes {host_resync_writes}; host writes of the kinds the syncer \
             copies: {}",
            host_resync.describe_writes(|k| SYNCED_KINDS.contains(&k.resource.as_str()))
        );
        println!(
            "    virtual writes: {}",
            virt_resync.describe_writes(|_| true)
        );
        println!();
        println!(
            "  direct phase: {n} creates in host namespace {direct_namespace}, unpaced: created in \
             {:.1} s, all seen after {:.1} s: {direct_rate:.1} pods/s",
            direct_pods.duration().as_secs_f64(),
            direct_span.as_secs_f64()
        );
        println!(
            "    create answered                {}",
            summary(&direct_pods.response_times())
        );
        println!(
            "    CPU by process, until all seen: {}",
            machine_direct.describe()
        );
        println!(
            "  unpaced phase: {n} creates in virtual namespace {UNPACED_NAMESPACE}: created in \
             {:.1} s, last host copy after {:.1} s: {syncer_rate:.1} pods/s; all Running after \
             {:.1} s",
            unpaced.duration().as_secs_f64(),
            unpaced_span.as_secs_f64(),
            unpaced_running_span.as_secs_f64()
        );
        println!(
            "    create answered                {}",
            summary(&unpaced.response_times())
        );
        println!(
            "    create to host copy seen       {}",
            summary(&unpaced_to_copy)
        );
        println!("    syncer CPU {cpu_unpaced:.1} s");
        println!(
            "    CPU by process, until all Running: {}",
            machine_unpaced.describe()
        );
        println!();
        println!("  {:<44} {:<28} target", "figure", "measured");
        let row = |figure: &str, measured: String, target: &str, met: Option<bool>| {
            let verdict = match met {
                Some(true) => "  met",
                Some(false) => "  NOT MET",
                None => "",
            };
            println!("  {figure:<44} {measured:<28} {target}{verdict}");
        };
        row(
            &format!("create to host copy, p99 ({})", rate_text(self.args.rate)),
            format!(
                "{:.0} ms (p50 {:.0} ms)",
                copy_p99 * 1e3,
                percentile(&to_copy, 0.5) * 1e3
            ),
            "<= 250 ms at 100 creates/s",
            (self.args.rate == 100.0).then_some(copy_p99 <= 0.25),
        );
        row(
            "create to Running in virtual, p99",
            format!(
                "{:.0} ms (p50 {:.0} ms)",
                percentile(&to_running, 0.99) * 1e3,
                percentile(&to_running, 0.5) * 1e3
            ),
            "",
            None,
        );
        row(
            &format!("syncer peak RSS, {n} pods"),
            format!("{:.1} MiB", mib(rss_paced)),
            "<= 128 MiB at 10,000 pods",
            (n >= 10_000).then_some(mib(rss_paced) <= 128.0),
        );
        row(
            &format!("syncer peak RSS, {} pods (end)", 2 * n),
            format!("{:.1} MiB (now {:.1} MiB)", mib(rss_end), mib(rss_now)),
            "<= 128 MiB at 10,000 pods",
            (2 * n >= 10_000).then_some(mib(rss_end) <= 128.0),
        );
        row(
            "host pod writes per created pod",
            format!("{:.2}", host_create_writes / n as f64),
            "1",
            Some(host_create_writes <= n as f64),
        );
        row(
            "host pod writes on a no-change resync",
            format!("{host_resync_writes}"),
            "0",
            Some(host_resync_writes == 0.0),
        );
        row(
            "throughput vs direct creates",
            format!(
                "{:.0}% ({syncer_rate:.1} vs {direct_rate:.1}/s)",
                100.0 * syncer_rate / direct_rate
            ),
            ">= 80% of direct",
            Some(syncer_rate >= 0.8 * direct_rate),
        );
        Ok(())
    }

    /// The namespace phase (`--mapped-namespaces N`): the syncer's RSS and host watches with
    /// only its own namespace, then with N mapped ones synced (a ConfigMap each).
    async fn mapped_namespaces(
        &self,
        admin: &Client,
        virt: &Client,
        syncer: &LocalSyncer,
        id: &InstanceRef,
    ) -> Result<()> {
        let n = self.args.mapped_namespaces;
        tokio::time::sleep(STILL).await;
        let (_, rss_none) = rss_kib(syncer.record.pid)?;
        let watches_none = syncer.host_watches().await?;
        let served_none = bench::open_watches(admin).await?;
        eprintln!("bench: creating {n} mapped virtual namespaces with a ConfigMap each");
        let started = Instant::now();
        for i in 0..n {
            let name = format!("m-{i:04}");
            create_namespace(virt, &name).await?;
            let config_map: ConfigMap = serde_json::from_value(
                json!({"metadata": {"name": "settings"}, "data": {"k": "v"}}),
            )?;
            Api::<ConfigMap>::namespaced(virt.clone(), &name)
                .create(&PostParams::default(), &config_map)
                .await?;
        }
        let copies: Api<PartialObjectMeta<ConfigMap>> = Api::all(admin.clone());
        let selector = marks::copies_selector(id);
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let synced = copies
                .list_metadata(&ListParams::default().labels(&selector))
                .await?
                .items
                .iter()
                .filter(|c| c.name_any() == "settings")
                .count();
            if synced == n {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "{synced} of {n} ConfigMaps reached their host namespaces within 600 s"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let synced_after = started.elapsed();
        tokio::time::sleep(STILL).await;
        let (peak, rss) = rss_kib(syncer.record.pid)?;
        let watches = syncer.host_watches().await?;
        let served = bench::open_watches(admin).await?;
        let mib = |kib: u64| kib as f64 / 1024.0;
        println!("namespace syncing, {n} mapped namespaces (release build)");
        println!(
            "  synced: every namespace's ConfigMap on the host {:.1} s after the first create",
            synced_after.as_secs_f64()
        );
        println!(
            "  syncer RSS: {:.1} MiB with {n} mapped namespaces, {:.1} MiB with none ({:.2}x; \
             peak {:.1} MiB)",
            mib(rss),
            mib(rss_none),
            rss as f64 / rss_none as f64,
            mib(peak)
        );
        println!(
            "  syncer host watches over held namespaces: {watches} ({watches_none} with its \
             own namespace only; {:.1} per mapped namespace)",
            (watches - watches_none) as f64 / n as f64
        );
        println!(
            "  watches the host API server serves, all clients: {served} ({served_none} before, \
             +{})",
            served - served_none
        );
        Ok(())
    }

    async fn custom_resources(
        &self,
        admin: &Client,
        virt: &Client,
        syncer: &LocalSyncer,
        id: &InstanceRef,
    ) -> Result<()> {
        let n = self.args.custom_resources;
        let resource = kube::api::ApiResource {
            group: CUSTOM_GROUP.into(),
            version: "v1".into(),
            api_version: format!("{CUSTOM_GROUP}/v1"),
            kind: CUSTOM_KIND.into(),
            plural: CUSTOM_PLURAL.into(),
        };
        let object = |name: &str| -> kube::api::DynamicObject {
            serde_json::from_value(json!({
                "apiVersion": format!("{CUSTOM_GROUP}/v1"), "kind": CUSTOM_KIND,
                "metadata": {"name": name},
                "spec": {"secretName": name, "commonName": format!("{name}.example.com"),
                         "dnsNames": [format!("{name}.example.com")]},
            }))
            .expect("a valid object")
        };
        let names: Vec<String> = (0..n).map(|i| format!("cert-{i:05}")).collect();
        // The floor: the same creates straight to the host.
        let direct_namespace = self.cluster.namespace("direct").await;
        let direct: Api<kube::api::DynamicObject> =
            Api::namespaced_with(admin.clone(), &direct_namespace, &resource);
        eprintln!("bench: creating {n} objects directly on the host");
        let started = Instant::now();
        futures::stream::iter(names.iter())
            .map(|name| {
                let api = direct.clone();
                let object = object(name);
                async move { api.create(&PostParams::default(), &object).await }
            })
            .buffer_unordered(self.args.concurrency)
            .try_collect::<Vec<_>>()
            .await?;
        let direct_took = started.elapsed();

        create_namespace(virt, PACED_NAMESPACE).await?;
        tokio::time::sleep(STILL).await;
        let (_, rss_before) = rss_kib(syncer.record.pid)?;
        let cpu_before = cpu_seconds(syncer.record.pid)?;
        let virtual_api: Api<kube::api::DynamicObject> =
            Api::namespaced_with(virt.clone(), PACED_NAMESPACE, &resource);
        let copies: Api<PartialObjectMeta<kube::api::DynamicObject>> =
            Api::namespaced_with(admin.clone(), &id.namespace, &resource);
        eprintln!("bench: creating {n} objects in the virtual cluster");
        let started = Instant::now();
        futures::stream::iter(names.iter())
            .map(|name| {
                let api = virtual_api.clone();
                let object = object(name);
                async move { api.create(&PostParams::default(), &object).await }
            })
            .buffer_unordered(self.args.concurrency)
            .try_collect::<Vec<_>>()
            .await?;
        let created = started.elapsed();
        let selector = marks::copies_selector(id);
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let synced = copies
                .list_metadata(&ListParams::default().labels(&selector))
                .await?
                .items
                .len();
            if synced >= n {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "{synced} of {n} objects had host copies within 600 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let synced_after = started.elapsed();
        let cpu = cpu_seconds(syncer.record.pid)? - cpu_before;
        tokio::time::sleep(STILL).await;
        let (peak, rss) = rss_kib(syncer.record.pid)?;
        let mib = |kib: u64| kib as f64 / 1024.0;
        println!("custom resources, {n} objects of a namespaced kind (release build)");
        println!(
            "  floor: {n} creates straight to the host took {:.1} s ({:.0}/s, concurrency {})",
            direct_took.as_secs_f64(),
            n as f64 / direct_took.as_secs_f64(),
            self.args.concurrency
        );
        println!(
            "  synced: created in the virtual cluster in {:.1} s; every host copy {:.1} s after \
             the first create ({:.2}x the floor)",
            created.as_secs_f64(),
            synced_after.as_secs_f64(),
            synced_after.as_secs_f64() / direct_took.as_secs_f64()
        );
        println!(
            "  syncer CPU: {:.2} s ({:.2} ms per object)",
            cpu,
            cpu * 1000.0 / n as f64
        );
        println!(
            "  syncer RSS: {:.1} MiB with {n} objects, {:.1} MiB before ({:.1} KiB per object; \
             peak {:.1} MiB)",
            mib(rss),
            mib(rss_before),
            (rss as f64 - rss_before as f64) / n as f64,
            mib(peak)
        );
        Ok(())
    }

    /// Waits until the virtual kube-dns Service has the address of its host copy: pods that
    /// use the cluster's DNS (the default) are synced only then.
    async fn wait_dns(&self, admin: &Client, virt: &Client, id: &InstanceRef) -> Result<()> {
        let virtual_services: Api<Service> = Api::namespaced(virt.clone(), "kube-system");
        let host_services: Api<Service> = Api::namespaced(admin.clone(), &id.namespace);
        let host_name = naming::host_name("kube-dns", "kube-system", &id.name);
        let cluster_ip = |s: Option<Service>| s.and_then(|s| s.spec).and_then(|s| s.cluster_ip);
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let virtual_ip = cluster_ip(virtual_services.get_opt("kube-dns").await?);
            let host_ip = cluster_ip(host_services.get_opt(&host_name).await?);
            if virtual_ip.is_some() && virtual_ip == host_ip {
                eprintln!(
                    "bench: virtual kube-dns has its host address {}",
                    host_ip.unwrap_or_default()
                );
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the virtual kube-dns Service did not get the address of its host copy \
                 {host_name} within 300 s (virtual {virtual_ip:?}, host {host_ip:?})"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Kinds the syncer writes on the host.
const SYNCED_KINDS: [&str; 7] = [
    "pods",
    "services",
    "endpoints",
    "configmaps",
    "secrets",
    "persistentvolumeclaims",
    "events",
];

fn parse_env(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not NAME=VALUE"))
}

fn rate_text(rate: f64) -> String {
    if rate > 0.0 {
        format!("{rate} creates/s")
    } else {
        "full speed".to_owned()
    }
}

fn pod_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("pod-{i:05}")).collect()
}

/// Creates namespace `name` and waits for its `default` ServiceAccount, whose tokens the
/// syncer mints for the pods.
/// The custom resource of `--custom-resources`: shaped like cert-manager's Certificate.
const CUSTOM_GROUP: &str = "bench.example.dev";
const CUSTOM_PLURAL: &str = "certificates";
const CUSTOM_KIND: &str = "Certificate";

fn custom_crd() -> String {
    serde_json::to_string(&json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{CUSTOM_PLURAL}.{CUSTOM_GROUP}")},
        "spec": {
            "group": CUSTOM_GROUP, "scope": "Namespaced",
            "names": {"plural": CUSTOM_PLURAL, "singular": "certificate", "kind": CUSTOM_KIND,
                      "listKind": "CertificateList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}],
        },
    }))
    .expect("a CRD serializes")
}

async fn create_namespace(client: &Client, name: &str) -> Result<()> {
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .with_context(|| format!("creating virtual namespace {name}"))?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    let deadline = Instant::now() + Duration::from_secs(60);
    while accounts.get_opt("default").await?.is_none() {
        ensure!(
            Instant::now() < deadline,
            "virtual namespace {name} got no default ServiceAccount"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// When each create of a phase was sent and answered.
struct Created {
    sent: Vec<Instant>,
    answered: Vec<Instant>,
    done: Instant,
}

impl Created {
    fn first_sent(&self) -> Instant {
        self.sent.iter().min().copied().expect("at least one pod")
    }

    fn last_sent(&self) -> Instant {
        self.sent.iter().max().copied().expect("at least one pod")
    }

    /// From the first create sent to the last one answered.
    fn duration(&self) -> Duration {
        self.done - self.first_sent()
    }

    fn rate(&self) -> f64 {
        self.sent.len() as f64 / self.duration().as_secs_f64()
    }

    /// Seconds each create took to be answered, ascending.
    fn response_times(&self) -> Vec<f64> {
        let mut times: Vec<f64> = self
            .sent
            .iter()
            .zip(&self.answered)
            .map(|(sent, answered)| answered.duration_since(*sent).as_secs_f64())
            .collect();
        times.sort_by(f64::total_cmp);
        times
    }
}

/// Creates a pod of each name through `api`, `concurrency` at once; with a positive `rate`,
/// create `i` is not sent before `i / rate` seconds. Creates the API server refuses for load
/// (429, 5xx) or that fail in transport are sent again; the time sent is the first attempt's.
async fn create_pods(
    api: Api<Pod>,
    names: &[String],
    rate: f64,
    concurrency: usize,
) -> Result<Created> {
    let start = tokio::time::Instant::now();
    let sent = futures::stream::iter(names.iter().enumerate())
        .map(|(i, name)| {
            let api = api.clone();
            async move {
                if rate > 0.0 {
                    tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate))
                        .await;
                }
                // The annotations are what `--patches` reads; without it they are copied as
                // they are.
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {"app": "bench"},
                                 "annotations": {"encoded": "value", "config-ref": "settings"}},
                    "spec": {"containers": [{"name": "app", "image": "pause"}]},
                }))?;
                let sent = Instant::now();
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    match api.create(&PostParams::default(), &pod).await {
                        Ok(_) => break,
                        // An earlier attempt got through after all.
                        Err(kube::Error::Api(status)) if attempt > 1 && status.code == 409 => {
                            break;
                        }
                        Err(err) if attempt < 10 && retriable(&err) => {
                            tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                        }
                        Err(err) => {
                            return Err(err).with_context(|| format!("creating pod {name}"));
                        }
                    }
                }
                anyhow::Ok((i, sent, Instant::now()))
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    let done = Instant::now();
    let mut created = Created {
        sent: vec![done; names.len()],
        answered: vec![done; names.len()],
        done,
    };
    for (i, sent, answered) in sent {
        created.sent[i] = sent;
        created.answered[i] = answered;
    }
    Ok(created)
}

fn retriable(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// When each object a watch reports first appeared and first matched a condition, and which
/// objects exist now.
#[derive(Clone, Default)]
struct Tracker(Arc<Mutex<Tracked>>);

#[derive(Default)]
struct Tracked {
    appeared: HashMap<String, Instant>,
    matched: HashMap<String, Instant>,
    present: HashSet<String>,
    /// Objects listed since the watch last (re)started.
    listing: HashSet<String>,
}

/// Which first time of an object.
#[derive(Clone, Copy)]
enum Seen {
    Appeared,
    Matched,
}

impl Tracked {
    fn times(&self, seen: Seen) -> &HashMap<String, Instant> {
        match seen {
            Seen::Appeared => &self.appeared,
            Seen::Matched => &self.matched,
        }
    }
}

/// Stops the watches of the trackers when dropped.
#[derive(Default)]
struct Watches(Vec<tokio::task::AbortHandle>);

impl Drop for Watches {
    fn drop(&mut self) {
        self.0.iter().for_each(|w| w.abort());
    }
}

impl Tracker {
    /// Follows `events` in a task of its own (stopped with `watches`), keying objects by `key`
    /// and recording the first time each appeared and matched `matches`.
    fn follow<K, S>(
        watches: &mut Watches,
        events: S,
        matches: impl Fn(&K) -> bool + Send + 'static,
        key: impl Fn(&K) -> String + Send + 'static,
    ) -> Tracker
    where
        K: Send + 'static,
        S: Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
    {
        let tracker = Tracker::default();
        let tracked = Arc::clone(&tracker.0);
        let task = tokio::spawn(events.default_backoff().for_each(move |event| {
            let now = Instant::now();
            let mut t = tracked.lock().expect("tracker lock");
            let seen = |t: &mut Tracked, object: &K| -> String {
                let key = key(object);
                if matches(object) && !t.matched.contains_key(&key) {
                    t.matched.insert(key.clone(), now);
                }
                t.appeared.entry(key.clone()).or_insert(now);
                key
            };
            match event {
                Ok(Event::Apply(object)) => {
                    let key = seen(&mut t, &object);
                    t.present.insert(key);
                }
                Ok(Event::Delete(object)) => {
                    t.present.remove(&key(&object));
                }
                Ok(Event::Init) => t.listing.clear(),
                Ok(Event::InitApply(object)) => {
                    let key = seen(&mut t, &object);
                    t.listing.insert(key);
                }
                Ok(Event::InitDone) => t.present = std::mem::take(&mut t.listing),
                Err(err) => eprintln!("bench: watch error (retrying): {err}"),
            }
            futures::future::ready(())
        }));
        watches.0.push(task.abort_handle());
        tracker
    }

    /// How many of `keys` have matched.
    fn count(&self, keys: &[String]) -> usize {
        let t = self.0.lock().expect("tracker lock");
        keys.iter().filter(|k| t.matched.contains_key(*k)).count()
    }

    fn present(&self) -> usize {
        self.0.lock().expect("tracker lock").present.len()
    }

    /// Waits until every one of `keys` has matched.
    async fn wait_all(&self, what: &str, keys: &[String], timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last_report = Instant::now();
        loop {
            let seen = self.count(keys);
            if seen == keys.len() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {what}: {seen} of {}",
                    keys.len()
                );
            }
            if last_report.elapsed() > Duration::from_secs(30) {
                eprintln!("bench: waiting for {what}: {seen} of {}", keys.len());
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// When the last of `keys` matched.
    fn last_matched(&self, keys: &[String]) -> Result<Instant> {
        let t = self.0.lock().expect("tracker lock");
        keys.iter()
            .map(|k| t.matched.get(k).copied())
            .collect::<Option<Vec<_>>>()
            .and_then(|all| all.into_iter().max())
            .context("not every object matched")
    }

    /// Seconds from `sent[i]` until `keys[i]` was first `seen`, ascending, for those seen.
    fn latencies(&self, seen: Seen, keys: &[String], sent: &[Instant]) -> Vec<f64> {
        let t = self.0.lock().expect("tracker lock");
        let times = t.times(seen);
        let mut latencies: Vec<f64> = keys
            .iter()
            .zip(sent)
            .filter_map(|(k, sent)| times.get(k).map(|at| at.duration_since(*sent)))
            .map(|d| d.as_secs_f64())
            .collect();
        latencies.sort_by(f64::total_cmp);
        latencies
    }
}

/// The `q` quantile (nearest rank) of ascending `sorted`, in its unit; NaN when empty.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(sorted: &[f64]) -> String {
    let ms = |q: f64| percentile(sorted, q) * 1e3;
    format!(
        "p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(1.0)
    )
}

/// Waits until the host's and the virtual cluster's pod write counters have not moved for
/// [`STILL`].
async fn wait_still(admin: &Client, virt: &Client) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    let counters = || async {
        let host = RequestCounts::read(admin).await?.writes(pod_writes);
        let virt = RequestCounts::read(virt)
            .await?
            .writes(|k| k.resource == "pods");
        anyhow::Ok((host, virt))
    };
    let mut last = counters().await?;
    let mut since = Instant::now();
    while since.elapsed() < STILL {
        ensure!(
            Instant::now() < deadline,
            "pod writes did not stop within 300 s"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = counters().await?;
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
    Ok(())
}

/// What the syncer's `/metrics` tells this benchmark.
trait SyncerMetrics {
    async fn reconciles(&self) -> Result<Reconciles>;
    async fn host_watches(&self) -> Result<i64>;
}

impl SyncerMetrics for LocalSyncer {
    /// Its `/metrics`: reconciles and the seconds spent in them, by work queue.
    async fn reconciles(&self) -> Result<Reconciles> {
        let text = self.metrics().await?;
        Ok(Reconciles::parse(&text))
    }

    /// Its host watches over the namespaces its instance holds (its `/metrics`).
    async fn host_watches(&self) -> Result<i64> {
        let text = self.metrics().await?;
        text.lines()
            .find_map(|l| l.strip_prefix("virtualcluster_syncer_host_watches "))
            .and_then(|v| v.trim().parse().ok())
            .context("no virtualcluster_syncer_host_watches in the syncer's /metrics")
    }
}

/// Reconciles and the seconds spent in them, by work queue (from the syncer's `/metrics`).
#[derive(Default)]
struct Reconciles(std::collections::BTreeMap<String, (f64, f64)>);

impl Reconciles {
    fn parse(text: &str) -> Self {
        let mut by_queue = Self::default();
        for line in text.lines() {
            let (series, value) = match line.rsplit_once(' ') {
                Some((series, value)) => (series, value.parse::<f64>().unwrap_or(0.0)),
                None => continue,
            };
            let field = |name: &str| {
                series
                    .strip_prefix(name)?
                    .strip_prefix("{queue=\"")?
                    .strip_suffix("\"}")
                    .map(str::to_owned)
            };
            if let Some(queue) = field("virtualcluster_syncer_reconciles_total") {
                by_queue.0.entry(queue).or_default().0 = value;
            } else if let Some(queue) =
                field("virtualcluster_syncer_reconcile_duration_seconds_sum")
            {
                by_queue.0.entry(queue).or_default().1 = value;
            }
        }
        by_queue
    }

    fn since(&self, before: &Self) -> Self {
        Self(
            self.0
                .iter()
                .map(|(queue, (n, s))| {
                    let (n0, s0) = before.0.get(queue).copied().unwrap_or_default();
                    (queue.clone(), (n - n0, s - s0))
                })
                .collect(),
        )
    }

    /// Busiest queue first; queues with nothing done left out.
    fn describe(&self) -> String {
        let mut busy: Vec<_> = self.0.iter().filter(|(_, (n, _))| *n > 0.0).collect();
        busy.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
        busy.iter()
            .map(|(queue, (n, s))| format!("{queue} {n:.0} ({s:.1} s)"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
