//! `virtualcluster-operator`: reconciles VirtualCluster objects across the host cluster.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgAction, Parser};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use virtualcluster_crds::runtime::http;
use virtualcluster_crds::runtime::leader::{self, Elector, Ended, Timing};
use virtualcluster_crds::runtime::telemetry::{self, LogFormat};
use virtualcluster_operator::controller::{self, Options};
use virtualcluster_operator::metrics::Metrics;
use virtualcluster_operator::settings::{self, Settings};

/// Reconciles VirtualCluster objects: provisions each instance's control plane and syncer.
#[derive(Parser, Debug)]
#[command(name = "virtualcluster-operator", version)]
struct Args {
    /// Namespaces to watch for VirtualClusters (comma-separated); all when empty.
    #[arg(long, env = "VC_WATCH_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Log format.
    #[arg(long, env = "VC_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Address of the metrics and health endpoints.
    #[arg(long, env = "VC_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Elect a leader among replicas through a Lease; only the leader reconciles.
    #[arg(long, env = "VC_LEADER_ELECT", default_value_t = true, action = ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the leader-election Lease; the operator's own namespace by default.
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, env = "VC_LEASE_NAME", default_value = "virtualcluster-operator")]
    lease_name: String,
    /// This replica's name in the Lease and in Events; the host name and pid by default.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Kubernetes version of control planes whose spec names none.
    #[arg(long, env = "VC_KUBERNETES_VERSION", default_value = settings::DEFAULT_KUBERNETES_VERSION)]
    kubernetes_version: String,
    /// Registry of the kube-apiserver and kube-controller-manager images.
    #[arg(long, env = "VC_IMAGE_REGISTRY", default_value = settings::DEFAULT_REGISTRY)]
    image_registry: String,
    /// Default etcd image.
    #[arg(long, env = "VC_ETCD_IMAGE", default_value = settings::DEFAULT_ETCD_IMAGE)]
    etcd_image: String,
    /// Default syncer image.
    #[arg(long, env = "VC_SYNCER_IMAGE", default_value = settings::DEFAULT_SYNCER_IMAGE)]
    syncer_image: String,
    /// Service IP range of virtual clusters whose spec names none.
    #[arg(long, env = "VC_SERVICE_CIDR", default_value = settings::DEFAULT_SERVICE_CIDR)]
    service_cidr: String,
    /// VirtualClusters reconciled at the same time.
    #[arg(long, env = "VC_CONCURRENCY", default_value_t = 8)]
    concurrency: u16,
    /// Milliseconds a burst of changes to one instance is collected before it is reconciled.
    #[arg(long, env = "VC_DEBOUNCE_MS", default_value_t = 500)]
    debounce_ms: u64,
    /// Seconds between safety-net resyncs of an instance with nothing to do.
    #[arg(long, env = "VC_RESYNC_SECONDS", default_value_t = 300)]
    resync_seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.log_format);
    let metrics = Arc::new(Metrics::default());
    let health = http::start(args.metrics_addr, {
        let metrics = metrics.clone();
        move || metrics.encode()
    })
    .await?;

    let client = Client::try_default()
        .await
        .context("no kubeconfig and not in a cluster")?;
    let version = client
        .apiserver_version()
        .await
        .context("reaching the API server")?;
    tracing::info!(server = %version.git_version, "connected");
    health.set_ready(true);

    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "operator".into());
        format!("{host}-{}", std::process::id())
    });
    let elector = args.leader_elect.then(|| {
        let namespace = args
            .lease_namespace
            .clone()
            .or_else(|| {
                std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                    .ok()
            })
            .unwrap_or_else(|| client.default_namespace().to_owned());
        let api: Api<Lease> = Api::namespaced(client.clone(), namespace.trim());
        Elector::new(api, &args.lease_name, &identity, Timing::default())
    });

    let options = Options {
        settings: Settings {
            kubernetes_version: args.kubernetes_version,
            registry: args.image_registry,
            etcd_image: args.etcd_image,
            syncer_image: args.syncer_image,
            service_cidr: args.service_cidr,
        },
        resync: Duration::from_secs(args.resync_seconds),
        concurrency: args.concurrency,
        debounce: Duration::from_millis(args.debounce_ms),
        instance_name: identity,
    };
    let namespaces: Vec<String> = args
        .namespaces
        .into_iter()
        .filter(|ns| !ns.is_empty())
        .collect();
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.into_iter().map(Some).collect()
    };
    let controllers =
        || {
            futures::future::join_all(scopes.into_iter().map(|scope| {
                controller::run(client.clone(), scope, options.clone(), metrics.clone())
            }))
        };
    match leader::lead(elector, controllers).await? {
        Ended::Finished(_) => anyhow::bail!("the controllers stopped"),
        // Another replica leads now; exit so nothing reconciles twice (the pod restarts as a
        // standby).
        Ended::Lost(err) => anyhow::bail!("lost leadership: {err}"),
        Ended::Stopped => {
            tracing::info!("shutting down");
            Ok(())
        }
    }
}
