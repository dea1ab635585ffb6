//! Benchmark of the operator: creates N VirtualClusters on a fresh local cluster with simulated
//! nodes and prints how long until every instance's children exist and until all are Ready,
//! the operator's peak RSS, and the API writes per instance on create and on a resync with no
//! change, counted by the API server's own request metrics.
//!
//!   cargo run --release -p virtualcluster-tests --bin bench-operator -- [--instances N]

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use virtualcluster_crds::VirtualCluster;
use virtualcluster_crds::instance::managed_selector;
use virtualcluster_tests::bench::{
    self, CpuByProcess, RequestCounts, RequestKind, RequestTimes, rss_kib, watch_metadata,
};
use virtualcluster_tests::cluster::{self, UpOptions};
use virtualcluster_tests::harness::{TestCluster, clusters_root, unique_name};
use virtualcluster_tests::operator::{self, Operator, Start};
use virtualcluster_tests::process::Lifetime;
use virtualcluster_tests::{binaries, crd};

#[derive(Parser)]
struct Args {
    /// VirtualClusters to create.
    #[arg(long, default_value_t = 100)]
    instances: usize,
    /// Reconciles the operator runs at once.
    #[arg(long, default_value_t = 8)]
    concurrency: u16,
    /// The operator's resync interval; the no-change resync is measured over 1.5 of it.
    #[arg(long, default_value_t = 30)]
    resync_seconds: u64,
    /// VirtualClusters per namespace (platform teams give each team or instance its own);
    /// the operator watches all namespaces.
    #[arg(long, default_value_t = 10)]
    per_namespace: usize,
    /// Leave the cluster running afterwards.
    #[arg(long)]
    keep: bool,
}

/// What the operator writes (everything else in the cluster that changes while it runs is
/// written by the controller manager, the scheduler or kwok): resource and subresource.
const OPERATOR_RESOURCES: [(&str, &str); 12] = [
    ("virtualclusters", ""),
    ("virtualclusters", "status"),
    ("services", ""),
    ("secrets", ""),
    ("configmaps", ""),
    ("serviceaccounts", ""),
    ("roles", ""),
    ("rolebindings", ""),
    ("clusterroles", ""),
    ("clusterrolebindings", ""),
    ("statefulsets", ""),
    ("deployments", ""),
];

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let n = args.instances;
    eprintln!("bench: building the operator (release)");
    let binary = tokio::task::spawn_blocking(|| operator::build(true)).await??;
    let bin_dir = tokio::task::spawn_blocking(binaries::ensure).await??;
    // Each instance runs two pods (control plane and syncer); kwok nodes take 110 each.
    let node_count = (2 * n).div_ceil(100) as u32 + 1;
    let dir = clusters_root().join(unique_name("bench"));
    eprintln!(
        "bench: starting a cluster with {node_count} simulated nodes in {}",
        dir.display()
    );
    let cluster: TestCluster = cluster::up(
        &dir,
        &UpOptions {
            bin_dir,
            nodes: Some(node_count),
            lifetime: if args.keep {
                Lifetime::Detached
            } else {
                Lifetime::TiedToThisProcess
            },
        },
    )
    .await?
    .into();
    let result = run(&args, &cluster, &binary).await;
    if !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn run(args: &Args, cluster: &TestCluster, binary: &std::path::Path) -> Result<()> {
    let n = args.instances;
    let admin = cluster.client().await;
    crd::install(&admin).await?;
    let mut namespaces = Vec::new();
    for _ in 0..n.div_ceil(args.per_namespace.max(1)) {
        namespaces.push(cluster.namespace("bench").await);
    }
    let kubeconfig = operator::identity(cluster, &namespaces[0]).await?;
    let concurrency = format!("--concurrency={}", args.concurrency);
    let resync = format!("--resync-seconds={}", args.resync_seconds);
    let operator = Operator::start_binary(
        cluster,
        Start {
            namespaces: &[&namespaces[0]],
            kubeconfig: &kubeconfig,
            args: &["--namespaces=", &concurrency, &resync, "--log-format=json"],
        },
        binary,
    )
    .await?;

    let all_before = RequestCounts::read(&admin).await?;
    let before = all_before.writes(is_operators);
    let times_before = RequestTimes::read(&admin).await?;
    let cpu_before = CpuByProcess::read(cluster.dir())?.with("operator", operator.pid())?;
    let started = Instant::now();
    let vcs: Api<VirtualCluster> = Api::all(admin.clone());
    futures::stream::iter(0..n)
        .map(|i| {
            let vcs: Api<VirtualCluster> =
                Api::namespaced(admin.clone(), &namespaces[i % namespaces.len()]);
            async move {
                let vc: VirtualCluster = serde_json::from_value(serde_json::json!({
                    "apiVersion": "virtualcluster.dev/v1alpha1",
                    "kind": "VirtualCluster",
                    "metadata": {"name": format!("vc-{i:05}")},
                    // Without a volume claim the control plane pods schedule on kwok nodes.
                    "spec": {"controlPlane": {"persistence": {"enabled": false}}},
                }))?;
                vcs.create(&PostParams::default(), &vc).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<()>()
        .await?;
    let created = started.elapsed();
    eprintln!("bench: created {n} VirtualClusters in {created:.1?}");

    // Counted from watch caches, so that waiting puts no load on the API server.
    let managed = watcher::Config::default().labels(&managed_selector());
    let sts = watch_metadata(
        Api::<PartialObjectMeta<StatefulSet>>::all(admin.clone()),
        &managed,
    );
    let deployments = watch_metadata(
        Api::<PartialObjectMeta<Deployment>>::all(admin.clone()),
        &managed,
    );
    let secrets = watch_metadata(
        Api::<PartialObjectMeta<Secret>>::all(admin.clone()),
        &managed,
    );
    let (vc_store, vc_writer) = reflector::store();
    tokio::spawn(
        watcher(vcs.clone(), watcher::Config::default())
            .default_backoff()
            .reflect(vc_writer)
            .for_each(|_| futures::future::ready(())),
    );
    wait_for(&format!("the children of {n} instances"), || {
        sts.state().len() >= n && deployments.state().len() >= n && secrets.state().len() >= 3 * n
    })
    .await?;
    let children_at = started.elapsed();
    eprintln!("bench: children of all instances exist after {children_at:.1?}");
    let cpu_children = CpuByProcess::read(cluster.dir())?
        .with("operator", operator.pid())?
        .since(&cpu_before);
    let all_children = RequestCounts::read(&admin).await?.since(&all_before);
    let times_children = RequestTimes::read(&admin).await?.since(&times_before);
    wait_for(&format!("{n} Ready VirtualClusters"), || {
        let ready = vc_store
            .state()
            .iter()
            .filter(|vc| {
                vc.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .count();
        ready >= n
    })
    .await?;
    let ready_at = started.elapsed();
    eprintln!("bench: all Ready after {ready_at:.1?}");
    let after_create = RequestCounts::read(&admin).await?.writes(is_operators);
    let reconciles_before = reconciles(&operator).await?;

    let window = Duration::from_secs(args.resync_seconds * 3 / 2);
    eprintln!("bench: measuring a resync with no change over {window:?}");
    tokio::time::sleep(window).await;
    let after_resync = RequestCounts::read(&admin).await?.writes(is_operators);
    let resync_reconciles = reconciles(&operator).await? - reconciles_before;
    let (rss, rss_now) = rss_kib(operator.pid())?;
    // The benchmark's own creates are not the operator's.
    let create_writes = after_create - before - n as f64;
    let resync_writes = after_resync - after_create;

    println!(
        "operator benchmark: {n} VirtualClusters in {} namespaces, operator concurrency {}",
        namespaces.len(),
        args.concurrency
    );
    println!(
        "  created by the benchmark in           {:>8.1} s",
        created.as_secs_f64()
    );
    println!(
        "  every instance's children exist after {:>8.1} s",
        children_at.as_secs_f64()
    );
    println!(
        "  every instance Ready after            {:>8.1} s",
        ready_at.as_secs_f64()
    );
    println!(
        "  operator peak RSS                     {:>8.1} MiB  (now {:.1} MiB)",
        rss as f64 / 1024.0,
        rss_now as f64 / 1024.0
    );
    println!(
        "  API writes per instance on create     {:>8.2}",
        create_writes / n as f64
    );
    println!(
        "  API writes per instance on resync     {:>8.2}  ({resync_reconciles} reconciles in {:.0} s, no change)",
        resync_writes / n as f64,
        window.as_secs_f64()
    );
    println!(
        "  CPU until the children exist          {}",
        cpu_children.describe()
    );
    println!(
        "  every API write until then            {:.0}: {}",
        all_children.writes(|_| true),
        all_children.describe_writes(|_| true)
    );
    println!(
        "  mean time to serve them               {}",
        times_children.describe_writes(|_| true)
    );
    ensure!(
        resync_reconciles >= n as f64,
        "only {resync_reconciles} reconciles during the resync window: not every instance resynced"
    );
    Ok(())
}

/// Checks `check` (on watch caches) every 100 ms until it is true; gives up after 15 minutes.
async fn wait_for(what: &str, check: impl Fn() -> bool) -> Result<()> {
    bench::wait_for(what, Duration::from_secs(900), check).await
}

/// Whether a request kind is one of those the operator writes.
fn is_operators(kind: &RequestKind) -> bool {
    OPERATOR_RESOURCES.contains(&(kind.resource.as_str(), kind.subresource.as_str()))
}

async fn reconciles(operator: &Operator) -> Result<f64> {
    let metrics = operator.metrics().await?;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("virtualcluster_operator_reconciles_total "))
        .context("no reconciles counter")?
        .trim()
        .parse()
        .context("parsing the reconciles counter")
}
