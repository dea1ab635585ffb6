//! `virtualcluster-operator`: reconciles VirtualCluster objects across the host cluster.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgAction, Parser};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use virtualcluster_crds::policy::{self, HostPolicy};
use virtualcluster_crds::runtime::http;
use virtualcluster_crds::runtime::leader::{self, Elector, Ended, Timing};
use virtualcluster_crds::runtime::telemetry::{self, LogFormat};
use virtualcluster_crds::v1alpha1::PodSecurityStandard;
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
    /// Images a VirtualCluster may name in spec.syncer.image (comma-separated; exact, or a
    /// prefix ending in `*`); by default any tag or digest of --syncer-image's repository.
    #[arg(long, env = "VC_ALLOWED_SYNCER_IMAGES", value_delimiter = ',')]
    allowed_syncer_images: Vec<String>,
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
    /// The least strict Pod Security Standard a VirtualCluster may ask for (and the level of
    /// those that ask for none): privileged, baseline or restricted.
    #[arg(long, env = "VC_POD_SECURITY_FLOOR", default_value = "baseline", value_parser = parse_level)]
    pod_security_floor: PodSecurityStandard,
    /// Taints tenants' pods may tolerate, like `kubectl taint` arguments (comma-separated);
    /// tolerations of anything else are dropped.
    #[arg(long, env = "VC_ALLOWED_TOLERATIONS", value_delimiter = ',')]
    allowed_tolerations: Vec<String>,
    /// Node labels (`key=value`, comma-separated) every synced pod is held to.
    #[arg(long, env = "VC_NODE_SELECTOR", value_delimiter = ',')]
    node_selector: Vec<String>,
    /// The highest value a synced PriorityClass keeps.
    #[arg(long, env = "VC_MAX_PRIORITY", default_value_t = 0)]
    max_priority: i32,
    /// Service types beyond ClusterIP that virtual Services may have on the host
    /// (comma-separated of NodePort, LoadBalancer, ExternalName; empty for none).
    #[arg(
        long,
        env = "VC_ALLOWED_SERVICE_TYPES",
        value_delimiter = ',',
        default_value = "NodePort,LoadBalancer,ExternalName"
    )]
    allowed_service_types: Vec<String>,
    /// Copy Ingress annotations ending in `-snippet` (raw proxy configuration).
    #[arg(long, env = "VC_ALLOW_INGRESS_SNIPPETS", default_value_t = false, action = ArgAction::Set)]
    allow_ingress_snippets: bool,
    /// How many host namespaces one instance may create.
    #[arg(long, env = "VC_MAX_HOST_NAMESPACES", default_value_t = policy::DEFAULT_MAX_HOST_NAMESPACES)]
    max_host_namespaces: u32,
    /// Ranges of the host's pods, Services and nodes (comma-separated CIDRs): Endpoints of
    /// selectorless virtual Services may point there only at the instance's own pods. Every
    /// private range by default.
    #[arg(long, env = "VC_HOST_CIDRS", value_delimiter = ',')]
    host_cidrs: Vec<String>,
    /// Host namespaces no VirtualCluster may claim with namespace syncing (comma-separated),
    /// besides `default`, every `kube-*` one and the operator's own (`POD_NAMESPACE`, or the
    /// ServiceAccount's namespace in a pod).
    #[arg(long, env = "VC_RESERVED_NAMESPACES", value_delimiter = ',')]
    reserved_namespaces: Vec<String>,
    /// The ClusterRole bound to syncers in the host namespaces their instances imported; its
    /// `-created` twin in those they created (both in `crds/syncer-access.yaml`, or the chart's).
    #[arg(
        long,
        env = "VC_SYNCER_ROLE",
        default_value = "virtualcluster-operator-syncer"
    )]
    syncer_role: String,
    /// Custom resources (comma-separated `plural.group`) VirtualClusters may sync to the host.
    /// The operator must hold write on each (the chart's `platform.customResources.toHost`
    /// grants it), since it grants that to syncers in their instance's namespace.
    #[arg(long, env = "VC_CUSTOM_RESOURCES_TO_HOST", value_delimiter = ',')]
    custom_resources_to_host: Vec<String>,
    /// Custom resources VirtualClusters may show from the host (comma-separated
    /// `plural.group`; read, granted the same way).
    #[arg(long, env = "VC_CUSTOM_RESOURCES_FROM_HOST", value_delimiter = ',')]
    custom_resources_from_host: Vec<String>,
}

/// Where a pod finds the namespace it runs in.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

fn parse_level(text: &str) -> Result<PodSecurityStandard, String> {
    PodSecurityStandard::parse(text)
        .ok_or_else(|| format!("{text:?} is not one of privileged, baseline, restricted"))
}

/// A list of `plural.group` names, checked.
fn custom_resources(flag: &str, names: &[String]) -> anyhow::Result<Vec<String>> {
    let names: Vec<String> = names.iter().filter(|n| !n.is_empty()).cloned().collect();
    for name in &names {
        anyhow::ensure!(
            name.split_once('.')
                .is_some_and(|(p, g)| !p.is_empty() && !g.is_empty()),
            "{flag}: {name:?} is not plural.group (certificates.cert-manager.io)"
        );
    }
    Ok(names)
}

impl Args {
    fn platform(&self) -> anyhow::Result<HostPolicy> {
        for type_ in self.allowed_service_types.iter().filter(|t| !t.is_empty()) {
            anyhow::ensure!(
                policy::SERVICE_TYPES.contains(&type_.as_str()),
                "--allowed-service-types: {type_:?} is not one of {:?}",
                policy::SERVICE_TYPES
            );
        }
        let host_cidrs: Vec<String> = self
            .host_cidrs
            .iter()
            .filter(|c| !c.is_empty())
            .cloned()
            .collect();
        for cidr in &host_cidrs {
            anyhow::ensure!(
                policy::parse_cidr(cidr).is_some(),
                "--host-cidrs: {cidr:?} is not a range in CIDR notation"
            );
        }
        let mut node_selector = std::collections::BTreeMap::new();
        for label in self.node_selector.iter().filter(|l| !l.is_empty()) {
            let (key, value) = label
                .split_once('=')
                .with_context(|| format!("--node-selector: {label:?} is not key=value"))?;
            node_selector.insert(key.to_owned(), value.to_owned());
        }
        Ok(HostPolicy {
            pod_security: self.pod_security_floor,
            allowed_tolerations: self
                .allowed_tolerations
                .iter()
                .filter(|t| !t.is_empty())
                .cloned()
                .collect(),
            node_selector,
            max_priority: self.max_priority,
            service_types: self
                .allowed_service_types
                .iter()
                .filter(|t| !t.is_empty())
                .cloned()
                .collect(),
            ingress_snippets: self.allow_ingress_snippets,
            max_host_namespaces: self.max_host_namespaces,
            host_cidrs: if host_cidrs.is_empty() {
                policy::default_host_cidrs()
            } else {
                host_cidrs
            },
            custom_resources_to_host: custom_resources(
                "--custom-resources-to-host",
                &self.custom_resources_to_host,
            )?,
            custom_resources_from_host: custom_resources(
                "--custom-resources-from-host",
                &self.custom_resources_from_host,
            )?,
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.log_format);
    let platform = args.platform()?;
    let allowed_syncer_images: Vec<String> = args
        .allowed_syncer_images
        .iter()
        .filter(|i| !i.is_empty())
        .cloned()
        .collect();
    let allowed_syncer_images = if allowed_syncer_images.is_empty() {
        settings::default_allowed_syncer_images(&args.syncer_image)
    } else {
        allowed_syncer_images
    };
    // The operator's own namespace holds its credentials and Lease: never a tenant's to claim.
    let own_namespace = args.lease_namespace.clone().or_else(|| {
        std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
            .ok()
            .map(|ns| ns.trim().to_owned())
    });
    let reserved_namespaces: Vec<String> = args
        .reserved_namespaces
        .iter()
        .filter(|n| !n.is_empty())
        .cloned()
        .chain(own_namespace)
        .collect();
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
            .or_else(|| std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE).ok())
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
            platform,
            allowed_syncer_images,
            reserved_namespaces,
            syncer_role: args.syncer_role,
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
    // One store of VirtualClusters per watched namespace; every controller reads them all, so
    // the conflict check sees each instance the operator watches.
    let writers: Vec<_> = scopes
        .iter()
        .map(|_| controller::instances_writer())
        .collect();
    let everyone: Vec<_> = writers.iter().map(|w| w.as_reader()).collect();
    let controllers = || {
        futures::future::join_all(scopes.into_iter().zip(writers).map(|(scope, writer)| {
            controller::run(
                client.clone(),
                scope,
                options.clone(),
                metrics.clone(),
                controller::Instances {
                    writer,
                    everyone: everyone.clone(),
                },
            )
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
