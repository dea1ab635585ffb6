//! `virtualcluster-syncer`: copies workloads between one virtual cluster and the host.

use clap::Parser;

/// Copies workloads between one virtual cluster and the host.
#[derive(Parser, Debug)]
#[command(name = "virtualcluster-syncer", version)]
struct Args {
    /// Kubeconfig of the host cluster; in-cluster credentials when unset.
    #[arg(long, env = "VC_HOST_KUBECONFIG")]
    host_kubeconfig: Option<std::path::PathBuf>,
    /// Kubeconfig of the virtual cluster's API server.
    #[arg(long, env = "VC_VIRTUAL_KUBECONFIG")]
    virtual_kubeconfig: Option<std::path::PathBuf>,
    /// File holding the resolved sync configuration the operator renders.
    #[arg(long, env = "VC_SYNC_CONFIG")]
    config: Option<std::path::PathBuf>,
}

fn main() {
    let args = Args::parse();
    eprintln!("virtualcluster-syncer: syncing is not available in this version ({args:?})");
}
