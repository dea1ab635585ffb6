//! Fake persistent volumes: for each synced claim bound on the host, the virtual cluster shows a
//! PersistentVolume standing for the host volume (see `translate::pvc::fake_volume`), bound
//! to the virtual claim, which names it in `volumeName`; it goes with its claim. They are made
//! and deleted in the virtual cluster only: no host right is needed.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, Preconditions};

use crate::context::{Ctx, Key};
use crate::copy::{self, Part};
use crate::translate::pvc::fake_volume;

/// The claim a fake volume is bound to.
pub fn claim_of(volume: &PersistentVolume) -> Option<Key> {
    let claim = volume.spec.as_ref()?.claim_ref.as_ref()?;
    Some(Key::new(
        claim.namespace.as_deref()?,
        claim.name.as_deref()?,
    ))
}

/// Makes the fake volume virtual claim `claim` (at `key`) should have, given its host copy
/// `copy`, and deletes those it should not (its claim gone, or another volume now).
pub async fn reconcile(
    ctx: &Ctx,
    key: &Key,
    claim: Option<&PersistentVolumeClaim>,
    copy: Option<&PersistentVolumeClaim>,
) -> anyhow::Result<()> {
    let wanted = match (claim, copy) {
        (Some(claim), Some(copy)) if Ctx::copy_of_uid(copy) == claim.uid().as_deref() => {
            fake_volume(claim, copy)
        }
        _ => None,
    };
    let api: Api<PersistentVolume> = Api::all(ctx.virt.clone());
    let existing: Vec<Arc<PersistentVolume>> = ctx
        .stores
        .fake_volumes
        .state()
        .into_iter()
        .filter(|v| claim_of(v).as_ref() == Some(key))
        .collect();
    let wanted_name = wanted.as_ref().and_then(|v| v.metadata.name.clone());
    for volume in &existing {
        let stale = Some(volume.name_any()) != wanted_name
            || claim.is_some_and(|c| {
                volume
                    .spec
                    .as_ref()
                    .and_then(|s| s.claim_ref.as_ref())
                    .and_then(|r| r.uid.as_deref())
                    != c.uid().as_deref()
            });
        if stale {
            // Released first, as the binder would when its claim goes: the protection of a
            // bound volume holds its delete.
            let phase = volume.status.as_ref().and_then(|s| s.phase.as_deref());
            if phase == Some("Bound") {
                let status = serde_json::json!({
                    "metadata": {"uid": volume.uid()},
                    "status": {"phase": "Released"},
                });
                let patch = Patch::Merge(&status);
                copy::patch_present(&api, &volume.name_any(), Part::Status, &patch).await?;
            }
        }
        if stale && volume.metadata.deletion_timestamp.is_none() {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: volume.uid(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&volume.name_any(), &params).await {
                Ok(_) => {}
                Err(err) if copy::is_status(&err, 404) || copy::is_status(&err, 409) => {}
                Err(err) => return Err(err.into()),
            }
        }
    }
    let (Some(volume), Some(claim)) = (wanted, claim) else {
        return Ok(());
    };
    let name = volume.name_any();
    let live = existing.iter().find(|v| v.name_any() == name);
    if live.is_none() {
        match api.create(&copy::post_params(), &volume).await {
            Ok(_) => {}
            Err(err) if copy::is_status(&err, 409) => {}
            Err(err) => return Err(err.into()),
        }
    }
    // The virtual cluster runs no volume binder (volumes are bound on the host): the status
    // says what the host's is.
    let phase = live.and_then(|v| v.status.as_ref()?.phase.as_deref());
    if phase != Some("Bound") {
        let status = serde_json::json!({"status": {"phase": "Bound"}});
        copy::patch_present(&api, &name, Part::Status, &Patch::Merge(&status)).await?;
    }
    // The claim names its volume, as the binder would have written it (a claim's
    // `volumeName` may be set once).
    let named = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref());
    if named.is_none() {
        let claims = ctx.virtual_api::<PersistentVolumeClaim>(&key.namespace);
        let patch = serde_json::json!({
            "metadata": {"uid": claim.uid()},
            "spec": {"volumeName": name},
        });
        copy::patch_present(&claims, &key.name, Part::Object, &Patch::Merge(&patch)).await?;
    }
    Ok(())
}
