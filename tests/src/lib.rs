//! A local Kubernetes control plane built from pinned upstream sources, for the integration
//! tests (see [`harness`]) and for `tests/local-cluster`.

pub mod bench;
pub mod binaries;
pub mod cluster;
pub mod crd;
pub mod generated;
pub mod harness;
pub mod health;
pub mod helm;
pub mod instance;
pub mod kubeconfig;
pub mod kubectl;
pub mod loopback;
pub mod nodes;
pub mod operator;
pub mod pki;
pub mod pod_samples;
pub mod process;

pub use harness::{TestCluster, shared_cluster, unique_name};
