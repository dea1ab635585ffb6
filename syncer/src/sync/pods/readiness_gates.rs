//! The virtual pod's readiness gate conditions written to its host copy (see
//! `translate::pod::gates`).

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Patch;

use crate::cached::HostPod;
use crate::context::{Ctx, Key};
use crate::copy::{self, Part};
use crate::translate::pod as translate;

/// Writes to host copy `copy` the gate conditions virtual pod `pod` has and it lacks.
pub async fn run(ctx: &Ctx, key: &Key, pod: &Pod, copy: &HostPod) -> anyhow::Result<()> {
    if !translate::has_gates(pod) {
        return Ok(());
    }
    let Some(mut patch) = translate::gates_update(pod, copy.status().as_ref()) else {
        return Ok(());
    };
    patch["metadata"] = serde_json::json!({ "uid": copy.uid() });
    let host = ctx.host_api::<Pod>(&key.namespace);
    copy::patch_present(
        &host,
        &copy.name_any(),
        Part::Status,
        &Patch::Strategic(&patch),
    )
    .await?;
    Ok(())
}
