//! PersistentVolumeClaims: made on the host, where the storage is; their status flows back,
//! and a fake volume stands for the host volume in the virtual cluster.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;

use crate::context::{Ctx, Key};
use crate::copy;
use crate::queue::Next;
use crate::sync::fake_volumes;
use crate::translate::pod::is_claim;
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
    if copy.is_none()
        && let Some(claim) = &claim
    {
        // A clone is made on the host only from this instance's own copy of a claim.
        match source(&ctx, claim) {
            Source::None | Source::Copied => {}
            Source::Uncopied => return Ok(Next::After(WAIT_FOR_SOURCE)),
            Source::Refused(note) => {
                copy::warn(&ctx, claim.as_ref(), "DataSourceNotAllowed", note).await;
                return Ok(Next::Done);
            }
        }
    }
    let next = copy::sync(
        &ctx,
        "toHost.persistentVolumeClaims",
        &ctx.host_api(&key.namespace),
        claim.as_deref(),
        copy.as_deref(),
        |c| host_claim(c, &ctx.target),
    )
    .await?;
    if let (Some(claim), Some(copy)) = (&claim, &copy)
        && Ctx::copy_of_uid(copy.as_ref()) == claim.uid().as_deref()
        && let Some(status) = virtual_status(copy, claim.status.as_ref())
    {
        let api = ctx.virtual_api::<PersistentVolumeClaim>(&key.namespace);
        copy::write_virtual_status(&api, &key.name, &status).await?;
    }
    fake_volumes::reconcile(&ctx, &key, claim.as_deref(), copy.as_deref()).await?;
    Ok(next)
}

/// How soon a claim cloned from one whose copy is still to be made is looked at again.
const WAIT_FOR_SOURCE: Duration = Duration::from_secs(1);

enum Source {
    None,
    /// The source is this instance's copy of a virtual claim.
    Copied,
    /// The source claim exists in the virtual cluster (or not yet); its copy does not.
    Uncopied,
    /// The source is of a kind, or in a place, the host would resolve outside the instance.
    Refused(String),
}

fn source(ctx: &Ctx, claim: &PersistentVolumeClaim) -> Source {
    let Some(spec) = &claim.spec else {
        return Source::None;
    };
    let namespace = claim.namespace().unwrap_or_default();
    let sources = [
        (
            "spec.dataSource",
            spec.data_source
                .as_ref()
                .map(|s| (&s.kind, s.api_group.as_deref(), None, &s.name)),
        ),
        (
            "spec.dataSourceRef",
            spec.data_source_ref.as_ref().map(|s| {
                (
                    &s.kind,
                    s.api_group.as_deref(),
                    s.namespace.as_deref(),
                    &s.name,
                )
            }),
        ),
    ];
    let mut result = Source::None;
    for (field, found) in sources {
        let Some((kind, group, source_namespace, name)) = found else {
            continue;
        };
        if !is_claim(kind, group, source_namespace) {
            return Source::Refused(format!(
                "{field}: a claim is cloned on the host only from another claim of its own \
                 namespace, not from {kind} {name}; the claim is not synced"
            ));
        }
        if ctx
            .host_copy(&ctx.stores.host_claims, &Key::new(&namespace, name))
            .is_none()
        {
            result = Source::Uncopied;
        } else if matches!(result, Source::None) {
            result = Source::Copied;
        }
    }
    result
}
