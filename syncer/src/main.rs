//! `virtualcluster-syncer`: copies workloads between one virtual cluster and the host.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use k8s_openapi::api::coordination::v1::Lease;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use virtualcluster_crds::instance::SyncerConfig;
use virtualcluster_crds::naming;
use virtualcluster_crds::runtime::http;
use virtualcluster_crds::runtime::leader::{self, Elector, Ended, Timing};
use virtualcluster_crds::runtime::telemetry::{self, LogFormat};
use virtualcluster_syncer::metrics::Metrics;
use virtualcluster_syncer::translate::Target;
use virtualcluster_syncer::{dns, kubelet, run};

/// Copies workloads between one virtual cluster and the host.
#[derive(Parser, Debug)]
#[command(name = "virtualcluster-syncer", version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Kubeconfig of the host cluster; in-cluster credentials when unset.
    #[arg(long, env = "VC_HOST_KUBECONFIG")]
    host_kubeconfig: Option<PathBuf>,
    /// Kubeconfig of the virtual cluster's API server.
    #[arg(long, env = "VC_VIRTUAL_KUBECONFIG")]
    virtual_kubeconfig: Option<PathBuf>,
    /// File holding the resolved sync configuration the operator renders.
    #[arg(long, env = "VC_SYNC_CONFIG")]
    config: Option<PathBuf>,
    /// Identity in leader election and on Events (the pod's name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Elect a leader among the replicas through a Lease in the instance's namespace.
    #[arg(long, env = "VC_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Address of the metrics and health endpoints.
    #[arg(long, env = "VC_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// CoreDNS image installed into the virtual cluster.
    #[arg(long, env = "VC_DNS_IMAGE", default_value = dns::DEFAULT_IMAGE)]
    dns_image: String,
    /// Pods reconciled at once (new pods, waiting for their host copy, first).
    #[arg(long, env = "VC_POD_WORKERS", default_value_t = 16)]
    pod_workers: usize,
    /// Objects of each other kind reconciled at once.
    #[arg(long, env = "VC_WORKERS", default_value_t = 4)]
    workers: usize,
    #[arg(long, env = "VC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Address of the virtual nodes' kubelet API (with the four flags below; without them the
    /// virtual nodes have no kubelet: no logs, exec or port-forward).
    #[arg(long)]
    kubelet_listen: Option<SocketAddr>,
    /// `IP:PORT` the virtual nodes advertise for their kubelet: where the virtual API server
    /// reaches this server (the syncer Service's ClusterIP).
    #[arg(long)]
    kubelet_advertise: Option<SocketAddr>,
    /// Serving certificate of the kubelet API (PEM).
    #[arg(long)]
    kubelet_tls_cert_file: Option<PathBuf>,
    #[arg(long)]
    kubelet_tls_key_file: Option<PathBuf>,
    /// CA of the virtual API server's kubelet client certificate (PEM).
    #[arg(long)]
    kubelet_client_ca_file: Option<PathBuf>,
}

impl Args {
    /// The kubelet API's settings and advertised address, when it is asked for.
    fn kubelet(&self) -> anyhow::Result<Option<(kubelet::Settings, SocketAddr)>> {
        use virtualcluster_crds::kubelet::flag;
        let given = [
            self.kubelet_listen.is_some(),
            self.kubelet_advertise.is_some(),
            self.kubelet_tls_cert_file.is_some(),
            self.kubelet_tls_key_file.is_some(),
            self.kubelet_client_ca_file.is_some(),
        ];
        if given.iter().all(|g| !g) {
            return Ok(None);
        }
        let need = |name: &str| anyhow::anyhow!("the kubelet API needs {name} too");
        let settings = kubelet::Settings {
            listen: self.kubelet_listen.ok_or_else(|| need(flag::LISTEN))?,
            cert_file: self
                .kubelet_tls_cert_file
                .clone()
                .ok_or_else(|| need(flag::TLS_CERT_FILE))?,
            key_file: self
                .kubelet_tls_key_file
                .clone()
                .ok_or_else(|| need(flag::TLS_KEY_FILE))?,
            client_ca_file: self
                .kubelet_client_ca_file
                .clone()
                .ok_or_else(|| need(flag::CLIENT_CA_FILE))?,
        };
        let advertise = self
            .kubelet_advertise
            .ok_or_else(|| need(flag::ADVERTISE))?;
        Ok(Some((settings, advertise)))
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Prints the name a virtual object gets in the instance's host namespace, to find e.g. a
    /// pod on the host.
    HostName {
        /// Name of the VirtualCluster.
        #[arg(long)]
        instance: String,
        /// Virtual namespace of the object.
        namespace: String,
        /// Name of the object in the virtual cluster.
        name: String,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::HostName {
        instance,
        namespace,
        name,
    }) = &args.command
    {
        println!("{}", naming::host_name(name, namespace, instance));
        return ExitCode::SUCCESS;
    }
    telemetry::init(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(sync(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn config_from(path: &Path) -> anyhow::Result<Config> {
    let kubeconfig =
        Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading {}", path.display()))
}

async fn client_from(path: &Path) -> anyhow::Result<Client> {
    Ok(Client::try_from(config_from(path).await?)?)
}

async fn sync(args: Args) -> anyhow::Result<()> {
    let kubelet = args.kubelet()?;
    let metrics = Arc::new(Metrics::default());
    let health = http::start(args.metrics_addr, {
        let metrics = metrics.clone();
        move || metrics.encode()
    })
    .await?;

    let config_path = args.config.context("--config is required")?;
    let config: SyncerConfig = serde_json::from_slice(
        &std::fs::read(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?,
    )
    .with_context(|| format!("parsing {}", config_path.display()))?;
    let virt = client_from(
        &args
            .virtual_kubeconfig
            .context("--virtual-kubeconfig is required")?,
    )
    .await?;
    let host_config = match &args.host_kubeconfig {
        Some(path) => config_from(path).await?,
        None => Config::infer()
            .await
            .context("in-cluster host credentials")?,
    };
    let host = Client::try_from(host_config.clone())?;
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("syncer-{}", std::process::id()));
    tracing::info!(
        instance = %config.instance.name,
        namespace = %config.instance.namespace,
        %identity,
        "starting"
    );

    // Every replica answers the kubelet API: it needs the host API only, no cache.
    let kubelet = match kubelet {
        Some((settings, advertise)) => {
            kubelet::start(
                &settings,
                kubelet::stream_client(&host_config)?,
                virt.clone(),
                Target::of(&config)?,
                metrics.clone(),
            )
            .await?;
            Some(advertise)
        }
        None => None,
    };
    let elector = args.leader_elect.then(|| {
        let api: Api<Lease> = Api::namespaced(host.clone(), &config.instance.namespace);
        Elector::new(api, &config.instance.syncer(), &identity, Timing::default())
    });
    let options = run::Options {
        identity,
        dns_image: args.dns_image,
        concurrency: run::Concurrency {
            pods: args.pod_workers,
            other: args.workers,
        },
        metrics,
        health: health.clone(),
        kubelet,
    };
    // A standby replica is ready: it is ready to take over. The leader is not until its
    // caches are filled (see `run::Options::health`).
    health.set_ready(true);
    let work = || run::run(host, virt, config, options);
    match leader::lead(elector, work).await? {
        Ended::Finished(result) => result,
        Ended::Stopped => Ok(()),
        Ended::Lost(err) => Err(anyhow::anyhow!("leadership lost: {err}")),
    }
}
