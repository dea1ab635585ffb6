//! Benchmark of the operator: creates N VirtualClusters on a fresh local cluster with simulated
//! nodes and prints how long until every instance's children exist and until all are Ready,
//! the operator's peak RSS, and the API writes per instance on create and on a resync with no
//! change, counted by the API server's own request metrics. With `--direct` it measures the
//! floor instead: the same children applied by the benchmark itself, no operator running.
//!
//!   cargo run --release -p virtualcluster-tests --bin bench-operator -- [--instances N] [--direct]

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use virtualcluster_crds::VirtualCluster;
use virtualcluster_crds::instance::{InstanceRef, managed_selector};
use virtualcluster_crds::keys::OPERATOR_FIELD_MANAGER;
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
    /// The floor instead: the benchmark itself applies, as cluster-admin with no operator
    /// running, copies of the children the operator made for one instance (same kinds, same
    /// content, same field manager, `--concurrency` instances at a time) and prints how long
    /// until they exist, what the cluster spent, and what it wrote.
    #[arg(long)]
    direct: bool,
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
    let result = if args.direct {
        direct(&args, &cluster, &binary).await
    } else {
        run(&args, &cluster, &binary).await
    };
    if !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// The CRD, and the namespaces the instances go to (`--per-namespace` each).
async fn prepare(args: &Args, cluster: &TestCluster) -> Result<(Client, Vec<String>)> {
    let admin = cluster.client().await;
    crd::install(&admin).await?;
    let mut namespaces = Vec::new();
    for _ in 0..args.instances.div_ceil(args.per_namespace.max(1)) {
        namespaces.push(cluster.namespace("bench").await);
    }
    Ok((admin, namespaces))
}

async fn run(args: &Args, cluster: &TestCluster, binary: &std::path::Path) -> Result<()> {
    let n = args.instances;
    let (admin, namespaces) = prepare(args, cluster).await?;
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
                vcs.create(&PostParams::default(), &instance(&format!("vc-{i:05}")))
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<()>()
        .await?;
    let created = started.elapsed();
    eprintln!("bench: created {n} VirtualClusters in {created:.1?}");

    let children = Children::watch(&admin);
    let vc_store = watch_ready(&vcs);
    children.wait(n).await?;
    let children_at = started.elapsed();
    eprintln!("bench: children of all instances exist after {children_at:.1?}");
    let cpu_children = CpuByProcess::read(cluster.dir())?
        .with("operator", operator.pid())?
        .since(&cpu_before);
    let all_children = RequestCounts::read(&admin).await?.since(&all_before);
    let times_children = RequestTimes::read(&admin).await?.since(&times_before);
    wait_for(&format!("{n} Ready VirtualClusters"), || {
        ready(&vc_store) >= n
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
    print_cost(&cpu_children, &all_children, &times_children);
    ensure!(
        resync_reconciles >= n as f64,
        "only {resync_reconciles} reconciles during the resync window: not every instance resynced"
    );
    Ok(())
}

/// Counts, from watch caches so that waiting puts no load on the API server, the children whose
/// existence makes an instance provisioned: its StatefulSet, its syncer Deployment and its three
/// Secrets.
struct Children {
    statefulsets: reflector::Store<PartialObjectMeta<StatefulSet>>,
    deployments: reflector::Store<PartialObjectMeta<Deployment>>,
    secrets: reflector::Store<PartialObjectMeta<Secret>>,
}

impl Children {
    fn watch(admin: &Client) -> Children {
        let managed = watcher::Config::default().labels(&managed_selector());
        Children {
            statefulsets: watch_metadata(Api::all(admin.clone()), &managed),
            deployments: watch_metadata(Api::all(admin.clone()), &managed),
            secrets: watch_metadata(Api::all(admin.clone()), &managed),
        }
    }

    /// Returns once the children of `n` instances exist.
    async fn wait(&self, n: usize) -> Result<()> {
        wait_for(&format!("the children of {n} instances"), || {
            self.statefulsets.state().len() >= n
                && self.deployments.state().len() >= n
                && self.secrets.state().len() >= 3 * n
        })
        .await
    }
}

/// The name of the instance whose children [`direct`] copies: it appears in no field name, so
/// replacing it (and its namespace and UID) in their JSON renames exactly the instance's names,
/// labels and references.
const TEMPLATE: &str = "vctmpl";

/// `--direct`: the floor of provisioning on this machine, with no operator at work.
async fn direct(args: &Args, cluster: &TestCluster, binary: &std::path::Path) -> Result<()> {
    let n = args.instances;
    let (admin, namespaces) = prepare(args, cluster).await?;
    let template = template(cluster, &admin, &namespaces[0], binary).await?;
    eprintln!(
        "bench: copying the {} children of one instance for {n} instances, {} at a time",
        template.objects.len(),
        args.concurrency
    );
    let children = Children::watch(&admin);
    let all_before = RequestCounts::read(&admin).await?;
    let times_before = RequestTimes::read(&admin).await?;
    let cpu_before = CpuByProcess::read(cluster.dir())?;
    let started = Instant::now();
    let params = PatchParams::apply(OPERATOR_FIELD_MANAGER).force();
    futures::stream::iter(0..n)
        .map(|i| {
            let (admin, template, params) = (&admin, &template, &params);
            let template_namespace = &namespaces[0];
            let namespace = &namespaces[i % namespaces.len()];
            async move {
                // Each copy is owned by a VirtualCluster of its own, as the operator's children
                // are (the garbage collector removes children whose owner is gone).
                let name = format!("vc-{i:05}");
                let vcs: Api<VirtualCluster> = Api::namespaced(admin.clone(), namespace);
                let vc = vcs.create(&PostParams::default(), &instance(&name)).await?;
                let uid = vc.uid().context("a created VirtualCluster has a UID")?;
                for (resource, object) in &template.objects {
                    let text = serde_json::to_string(object)?
                        .replace(TEMPLATE, &name)
                        .replace(template_namespace.as_str(), namespace)
                        .replace(&template.uid, &uid);
                    let object: DynamicObject = serde_json::from_str(&text)?;
                    let api: Api<DynamicObject> = match object.metadata.namespace {
                        Some(_) => Api::namespaced_with(admin.clone(), namespace, resource),
                        None => Api::all_with(admin.clone(), resource),
                    };
                    api.patch(&object.name_any(), params, &Patch::Apply(&object))
                        .await
                        .with_context(|| format!("applying {} {}", resource.kind, name))?;
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(usize::from(args.concurrency))
        .try_collect::<()>()
        .await?;
    // The template's children are counted too.
    children.wait(n + 1).await?;
    let children_at = started.elapsed();
    let cpu = CpuByProcess::read(cluster.dir())?.since(&cpu_before);
    let writes = RequestCounts::read(&admin).await?.since(&all_before);
    let times = RequestTimes::read(&admin).await?.since(&times_before);
    println!(
        "provisioning floor: the children of {n} instances applied by the benchmark as \
         cluster-admin, {} at a time, no operator running",
        args.concurrency
    );
    println!(
        "  every instance's children exist after {:>8.1} s",
        children_at.as_secs_f64()
    );
    print_cost(&cpu, &writes, &times);
    Ok(())
}

/// What the cluster spent until the children existed: CPU by process, every write the API
/// server served, and the mean time it took to serve each kind.
fn print_cost(cpu: &CpuByProcess, writes: &RequestCounts, times: &RequestTimes) {
    println!("  CPU until the children exist          {}", cpu.describe());
    println!(
        "  every API write until then            {:.0}: {}",
        writes.writes(|_| true),
        writes.describe_writes(|_| true)
    );
    println!(
        "  mean time to serve them               {}",
        times.describe_writes(|_| true)
    );
}

/// The children the operator made for one instance, and the UID of their VirtualCluster.
struct Template {
    uid: String,
    objects: Vec<(ApiResource, serde_json::Value)>,
}

/// The children the operator made for one instance ([`TEMPLATE`] in `namespace`), read back
/// and stripped of what the API server sets, each with its resource. The operator is stopped
/// before this returns.
async fn template(
    cluster: &TestCluster,
    admin: &Client,
    namespace: &str,
    binary: &std::path::Path,
) -> Result<Template> {
    let kubeconfig = operator::identity(cluster, namespace).await?;
    let mut operator = Operator::start_binary(
        cluster,
        Start {
            namespaces: &[namespace],
            kubeconfig: &kubeconfig,
            args: &["--namespaces="],
        },
        binary,
    )
    .await?;
    let vcs: Api<VirtualCluster> = Api::namespaced(admin.clone(), namespace);
    let vc = vcs
        .create(&PostParams::default(), &instance(TEMPLATE))
        .await?;
    let uid = vc.uid().context("a created VirtualCluster has a UID")?;
    let selector = InstanceRef::of(&vc).label_selector();
    let vc_store = watch_ready(&vcs);
    wait_for(&format!("{TEMPLATE} to be Ready"), || ready(&vc_store) == 1).await?;
    operator.stop()?;
    let mut template = Vec::new();
    for resource in [
        ApiResource::erase::<Secret>(&()),
        ApiResource::erase::<ConfigMap>(&()),
        ApiResource::erase::<ServiceAccount>(&()),
        ApiResource::erase::<Role>(&()),
        ApiResource::erase::<RoleBinding>(&()),
        ApiResource::erase::<ClusterRole>(&()),
        ApiResource::erase::<ClusterRoleBinding>(&()),
        ApiResource::erase::<Service>(&()),
        ApiResource::erase::<StatefulSet>(&()),
        ApiResource::erase::<Deployment>(&()),
    ] {
        let api: Api<DynamicObject> = Api::all_with(admin.clone(), &resource);
        for object in api.list(&ListParams::default().labels(&selector)).await? {
            let mut object = serde_json::to_value(object)?;
            // Items of a list carry no type of their own.
            object["apiVersion"] = resource.api_version.clone().into();
            object["kind"] = resource.kind.clone().into();
            for field in [
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "generation",
                "managedFields",
            ] {
                object["metadata"].as_object_mut().map(|m| m.remove(field));
            }
            object.as_object_mut().map(|o| o.remove("status"));
            // Each copy gets an address of its own; the headless Service stays headless.
            if let Some(spec) = object.get_mut("spec").and_then(|s| s.as_object_mut())
                && resource.kind == "Service"
                && spec.get("clusterIP").and_then(|ip| ip.as_str()) != Some("None")
            {
                spec.remove("clusterIP");
                spec.remove("clusterIPs");
            }
            template.push((resource.clone(), object));
        }
    }
    // 3 Services, 3 Secrets, 2 ConfigMaps, ServiceAccount, RoleBinding, ClusterRoleBinding,
    // StatefulSet, Deployment.
    ensure!(
        template.len() >= 13,
        "only {} children of {TEMPLATE}",
        template.len()
    );
    Ok(Template {
        uid,
        objects: template,
    })
}

/// The VirtualCluster every benchmark instance is: without a volume claim, so that the
/// control plane pods schedule on kwok nodes.
fn instance(name: &str) -> VirtualCluster {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "virtualcluster.dev/v1alpha1",
        "kind": "VirtualCluster",
        "metadata": {"name": name},
        "spec": {"controlPlane": {"persistence": {"enabled": false}}},
    }))
    .expect("a valid VirtualCluster")
}

/// A cache of `vcs`, kept by a watch, for [`ready`].
fn watch_ready(vcs: &Api<VirtualCluster>) -> reflector::Store<VirtualCluster> {
    let (store, writer) = reflector::store();
    tokio::spawn(
        watcher(vcs.clone(), watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .for_each(|_| futures::future::ready(())),
    );
    store
}

/// How many VirtualClusters in `store` are Ready.
fn ready(store: &reflector::Store<VirtualCluster>) -> usize {
    store
        .state()
        .iter()
        .filter(|vc| {
            vc.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .count()
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
