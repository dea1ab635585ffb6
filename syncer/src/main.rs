//! `virtualcluster-syncer`: copies workloads between one virtual cluster and the host.

use clap::{Parser, Subcommand};
use virtualcluster_crds::naming;

/// Copies workloads between one virtual cluster and the host.
#[derive(Parser, Debug)]
#[command(name = "virtualcluster-syncer", version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
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

fn main() {
    let args = Args::parse();
    match args.command {
        Some(Command::HostName {
            instance,
            namespace,
            name,
        }) => {
            println!("{}", naming::host_name(&name, &namespace, &instance));
        }
        None => {
            eprintln!("virtualcluster-syncer: syncing is not available in this version");
            std::process::exit(2);
        }
    }
}
