//! The VirtualCluster operator: reconciles each VirtualCluster into a virtual control plane and
//! a syncer on the host, and reports their state.

pub mod build;
pub mod kubeconfig;
pub mod pki;
pub mod settings;
pub mod validate;
