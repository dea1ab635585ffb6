//! What both long-running binaries (operator and syncer) need at run time: leader election,
//! logging and the metrics and health endpoints. Behind the `runtime` feature, so the API types
//! alone stay light.

pub mod http;
pub mod leader;
pub mod telemetry;
