//! `virtualcluster-syncer`: copies workloads between one virtual cluster and the host. The
//! binary (`main.rs`) reads its configuration, elects a leader and calls [`run::run`].

pub mod admission;
pub mod cached;
pub mod context;
pub mod copy;
pub mod dns;
pub mod held;
pub mod kubelet;
pub mod metrics;
pub mod patching;
pub mod queue;
pub mod run;
pub mod sync;
pub mod synced;
pub mod translate;
pub mod watches;
