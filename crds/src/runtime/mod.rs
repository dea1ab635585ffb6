//! What both long-running binaries (operator and syncer) need at run time: leader election and
//! logging. Behind the `runtime` feature, so the API types alone stay light.

pub mod leader;
pub mod telemetry;
