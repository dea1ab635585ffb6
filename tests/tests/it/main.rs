//! The integration tests that need a cluster, in one binary so that they share one.

mod admission;
mod chart;
mod control_plane;
mod custom_resources;
mod fake_volumes;
mod isolation;
mod kubelet;
mod local_cluster;
mod namespace_cleanup;
mod operator;
mod patches;
mod pod_updates;
mod real_nodes;
mod syncer;
mod syncer_rights;
mod turned_off;
