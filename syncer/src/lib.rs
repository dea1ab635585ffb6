//! `virtualcluster-syncer`: copies workloads between one virtual cluster and the host.

pub mod queue;
pub mod translate;
