//! The VirtualCluster API (`virtualcluster.dev/v1alpha1`) and the rules that the operator and
//! the syncer must agree on: namespace mapping, DNS name checks and the keys of the labels,
//! annotations and finalizer the project puts on objects. Each rule lives here once.

pub mod claim_policy;
pub mod compare;
pub mod dns;
pub mod instance;
pub mod isolation;
pub mod keys;
pub mod kinds;
pub mod kubelet;
pub mod mapping;
pub mod marks;
pub mod naming;
pub mod patches;
pub mod pod_security;
pub mod policy;
pub mod policy_docs;
#[cfg(feature = "runtime")]
pub mod runtime;
pub mod sync_keys;
pub mod syncer_access;
pub mod v1alpha1;

pub use v1alpha1::VirtualCluster;
