//! PersistentVolumeClaims: made on the host, where the storage is; their status flows back.

use std::sync::Arc;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;

use crate::context::{Ctx, Key};
use crate::copy;
use crate::queue::Next;
use crate::translate::pvc::{host_claim, virtual_status};

pub async fn reconcile(ctx: Arc<Ctx>, key: Key) -> anyhow::Result<Next> {
    if !ctx.synced(&key.namespace) {
        return Ok(Next::Done);
    }
    if !ctx.config.sync.to_host.persistent_volume_claims.enabled {
        return Ok(Next::Done);
    }
    let claim = ctx.stores.virtual_claims.get(&key.object_ref());
    let copy = ctx.host_copy(&ctx.stores.host_claims, &key);
    let next = copy::sync(
        &ctx,
        &ctx.host_api(&key.namespace),
        claim.as_deref(),
        copy.as_deref(),
        |c| host_claim(c, &ctx.target),
    )
    .await?;
    if let (Some(claim), Some(copy)) = (claim, copy)
        && Ctx::copy_of_uid(copy.as_ref()) == claim.uid().as_deref()
        && let Some(status) = virtual_status(&copy, claim.status.as_ref())
    {
        let api = ctx.virtual_api::<PersistentVolumeClaim>(&key.namespace);
        copy::write_virtual_status(&api, &key.name, &status).await?;
    }
    Ok(next)
}
