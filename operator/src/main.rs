//! `virtualcluster-operator`: reconciles VirtualCluster objects across the host cluster.

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

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
    metrics_addr: std::net::SocketAddr,
}

fn main() {
    let args = Args::parse();
    eprintln!("virtualcluster-operator: reconciling is not available in this version ({args:?})");
}
