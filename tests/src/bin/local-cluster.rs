//! `tests/local-cluster`: builds the control plane binaries and starts or stops local
//! clusters. Results go to stdout (its last line is the one to use); progress to stderr.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use virtualcluster_tests::cluster::{self, UpOptions};
use virtualcluster_tests::process::Lifetime;
use virtualcluster_tests::{binaries, instance, operator};

#[derive(Parser)]
#[command(
    name = "local-cluster",
    about = "Local Kubernetes control planes for development and tests"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the binaries (or find them in the cache) and print their folder.
    Build,
    /// Start a control plane in DIR and print the path of its cluster-admin kubeconfig.
    Up(UpArgs),
    /// Stop what `up DIR` and `run-instance DIR ...` started.
    Down(DownArgs),
    /// Run the control plane StatefulSet of VirtualCluster NAMESPACE/NAME of the cluster in DIR,
    /// then its syncer Deployment, as local processes, and print the path of a kubeconfig for
    /// the virtual cluster once both run.
    RunInstance(RunInstanceArgs),
    /// Run the operator for the cluster in DIR, watching every namespace, as the ServiceAccount
    /// `config/rbac/` gives it, until `down DIR`; print the path of its log.
    RunOperator(RunOperatorArgs),
}

#[derive(Args)]
struct RunOperatorArgs {
    /// Folder of a cluster started with `up`.
    dir: PathBuf,
}

#[derive(Args)]
struct UpArgs {
    /// Folder for the cluster's certificates, data, logs and kubeconfig.
    dir: PathBuf,
    /// Also run kube-scheduler and kwok, with this many simulated nodes.
    #[arg(long, value_name = "N")]
    with_nodes: Option<u32>,
}

#[derive(Args)]
struct DownArgs {
    dir: PathBuf,
}

#[derive(Args)]
struct RunInstanceArgs {
    /// Folder of a cluster started with `up`.
    dir: PathBuf,
    namespace: String,
    name: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build => build().await,
        Command::Up(args) => up(args).await,
        Command::Down(args) => down(args),
        Command::RunInstance(args) => run_instance(args).await,
        Command::RunOperator(args) => run_operator(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("local-cluster: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn build() -> Result<()> {
    let dir = tokio::task::spawn_blocking(binaries::ensure).await??;
    println!("{}", dir.display());
    Ok(())
}

async fn up(args: UpArgs) -> Result<()> {
    let bin_dir = tokio::task::spawn_blocking(binaries::ensure).await??;
    let options = UpOptions {
        bin_dir,
        nodes: args.with_nodes,
        lifetime: Lifetime::Detached,
    };
    let cluster = cluster::up(&caller_path(&args.dir), &options).await?;
    println!("{}", cluster.kubeconfig.display());
    Ok(())
}

fn down(args: DownArgs) -> Result<()> {
    let dir = caller_path(&args.dir);
    let stopped = cluster::down(&dir)?;
    eprintln!(
        "local-cluster: stopped {stopped} processes of {}",
        dir.display()
    );
    Ok(())
}

async fn run_instance(args: RunInstanceArgs) -> Result<()> {
    let kubeconfig = instance::run_instance(
        &caller_path(&args.dir),
        &args.namespace,
        &args.name,
        instance::Options::with_syncer(Lifetime::Detached),
    )
    .await?;
    println!("{}", kubeconfig.display());
    Ok(())
}

async fn run_operator(args: RunOperatorArgs) -> Result<()> {
    let log = operator::run(&caller_path(&args.dir)).await?;
    println!("{}", log.display());
    Ok(())
}

/// `path` as the user meant it: the wrapper script changes into the repository root and passes
/// the directory it was called from in `LOCAL_CLUSTER_CALLER_DIR`.
fn caller_path(path: &Path) -> PathBuf {
    match std::env::var_os("LOCAL_CLUSTER_CALLER_DIR") {
        Some(caller) if path.is_relative() => Path::new(&caller).join(path),
        _ => path.to_owned(),
    }
}
