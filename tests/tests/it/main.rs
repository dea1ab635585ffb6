//! The integration tests that need a cluster, in one binary so that they share one.

mod admission;
mod local_cluster;
mod operator;
