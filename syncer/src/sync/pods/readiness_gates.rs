//! The virtual pod's readiness gate conditions written to its host copy (see
//! `translate::pod::gates`).

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};

use crate::cached::HostPod;
use crate::context::{Ctx, Key};
use crate::copy;
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
    match host
        .patch_status(
            &copy.name_any(),
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(err) if copy::is_status(&err, 404) || copy::is_status(&err, 409) => Ok(()),
        Err(err) => Err(err.into()),
    }
}
