//! Writing host copies. A copy is created with a plain create, so a host object of the same
//! name that is not this instance's copy is never taken over; later changes are applied to the
//! copy with the UID it was read with, so they never reach an object that replaced it; deletes
//! carry the same precondition.

use std::fmt::Debug;
use std::time::Duration;

use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use virtualcluster_crds::compare::holds;
use virtualcluster_crds::keys::SYNCER_FIELD_MANAGER;
use virtualcluster_crds::marks;

use crate::context::Ctx;
use crate::held::Held;
use crate::patching;
use crate::queue::Next;

/// How often a name clash with a foreign host object is looked at again.
pub const CLASH_RECHECK: Duration = Duration::from_secs(60);

pub fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(SYNCER_FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// A merge patch's parameters (the syncer's marks on objects it does not own).
pub fn merge_params() -> PatchParams {
    PatchParams {
        field_manager: Some(SYNCER_FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// Server-side apply, forced: the syncer is the only writer of what it applies to its copies,
/// and a hand edit of a copy is to be put back.
pub fn apply_params() -> PatchParams {
    PatchParams::apply(SYNCER_FIELD_MANAGER).force()
}

pub fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == code)
}

/// Creates `desired` on the host. On a clash with a host object that is not this instance's
/// copy, leaves it alone and tells the owner of `virtual_object` with an Event.
pub async fn create<K, V>(
    ctx: &Ctx,
    api: &Api<K>,
    desired: &K,
    virtual_object: &V,
) -> anyhow::Result<Next>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
    V: Resource<DynamicType = ()>,
{
    match api.create(&post_params(), desired).await {
        Ok(_) => Ok(Next::Done),
        Err(err) if is_status(&err, 409) => {
            let name = desired.name_any();
            match api.get_opt(&name).await? {
                Some(live) if marks::is_copy_of(&ctx.target.instance, live.labels()) => {
                    // This instance's copy, not yet in the cache; its watch event follows.
                    Ok(Next::Done)
                }
                Some(_) => {
                    clash(ctx, virtual_object, desired.namespace(), &name).await;
                    Ok(Next::After(CLASH_RECHECK))
                }
                None => Ok(Next::After(Duration::from_millis(200))),
            }
        }
        Err(err) => Err(err.into()),
    }
}

async fn clash<V: Resource<DynamicType = ()>>(
    ctx: &Ctx,
    virtual_object: &V,
    host_namespace: Option<String>,
    host_name: &str,
) {
    let where_ = host_namespace
        .map(|ns| format!("{ns}/"))
        .unwrap_or_default();
    let note = format!(
        "host object {where_}{host_name} exists and was not made by this virtual cluster; it is \
         left alone and this object is not synced"
    );
    warn(ctx, virtual_object, HOST_NAME_CONFLICT, note).await;
}

/// Reason of the Event on a virtual object whose host name another host object holds.
pub const HOST_NAME_CONFLICT: &str = "HostNameConflict";

/// Tells the owner of `virtual_object` with a Warning Event what the syncer refused or left out
/// of its host copy, and why (`reason` CamelCase, `note` naming the field).
pub async fn warn<V: Resource<DynamicType = ()>>(
    ctx: &Ctx,
    virtual_object: &V,
    reason: &str,
    note: String,
) {
    warn_at(ctx, &About::of(virtual_object), reason, note).await;
}

/// The virtual object an Event is about.
pub struct About {
    pub name: String,
    pub reference: k8s_openapi::api::core::v1::ObjectReference,
}

impl About {
    pub fn of<V: Resource>(object: &V) -> Self
    where
        V::DynamicType: Default,
    {
        Self::with(object, &Default::default())
    }

    /// Of an object whose kind is known at run time (`dyntype`).
    pub fn with<V: Resource>(object: &V, dyntype: &V::DynamicType) -> Self {
        Self {
            name: object.name_any(),
            reference: object.object_ref(dyntype),
        }
    }
}

/// [`warn`] about `about`.
pub async fn warn_at(ctx: &Ctx, about: &About, reason: &str, note: String) {
    tracing::warn!(reason, object = %about.name, "{note}");
    let event = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note),
        action: "Sync".into(),
        secondary: None,
    };
    if let Err(err) = ctx.recorder.publish(&event, &about.reference).await {
        tracing::warn!(%err, "publishing an Event");
    }
}

/// Applies `desired` to the copy `live` unless `live` already holds it.
pub async fn update<K>(api: &Api<K>, mut desired: K, live: &K) -> anyhow::Result<()>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    if holds(live, &desired) {
        return Ok(());
    }
    desired.meta_mut().uid = live.uid();
    apply(api, &desired).await
}

/// Server-side apply of `desired` (which carries the UID it must meet) with type information.
pub async fn apply<K>(api: &Api<K>, desired: &K) -> anyhow::Result<()>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    let mut value = serde_json::to_value(desired)?;
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    // Gone or replaced meanwhile (404, 409): the watch will tell.
    patch_apply(api, &desired.name_any(), &value).await
}

/// Server-side apply of a partial object (JSON with apiVersion, kind, and the UID it must meet).
pub async fn patch_apply<K>(
    api: &Api<K>,
    name: &str,
    patch: &serde_json::Value,
) -> anyhow::Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api.patch(name, &apply_params(), &Patch::Apply(patch)).await {
        Ok(_) => Ok(()),
        Err(err) if is_status(&err, 404) || is_status(&err, 409) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// What of an object a patch writes.
#[derive(Clone, Copy)]
pub enum Part {
    Object,
    Status,
}

/// Patches object `name` (or its status) with `patch`, which carries the UID it is meant for:
/// an object gone (404) or replaced by another of the name (409) leaves nothing to do.
pub async fn patch_present<K, P>(
    api: &Api<K>,
    name: &str,
    part: Part,
    patch: &Patch<P>,
) -> Result<(), kube::Error>
where
    K: Clone + DeserializeOwned + Debug,
    P: Serialize + Debug,
{
    let params = PatchParams::default();
    let written = match part {
        Part::Object => api.patch(name, &params, patch).await,
        Part::Status => api.patch_status(name, &params, patch).await,
    };
    match written {
        Ok(_) => Ok(()),
        Err(err) if is_status(&err, 404) || is_status(&err, 409) => Ok(()),
        Err(err) => Err(err),
    }
}

/// Creates `preferred` in the virtual cluster, or `plain` if the virtual API server refuses
/// what `preferred` takes from the host (an address it cannot give). One made meanwhile (the
/// cache lagging behind an earlier create) is left as it is.
pub async fn create_virtual<K>(api: &Api<K>, preferred: &K, plain: &K) -> anyhow::Result<()>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    match api.create(&post_params(), preferred).await {
        Ok(_) => return Ok(()),
        Err(err) if is_status(&err, 409) => return Ok(()),
        Err(err) if is_status(&err, 422) => {
            if api.get_opt(&preferred.name_any()).await?.is_some() {
                return Ok(());
            }
            tracing::warn!(%err, name = %preferred.name_any(), "refused with what the host gave, creating it without");
        }
        Err(err) => return Err(err.into()),
    }
    match api.create(&post_params(), plain).await {
        Ok(_) => Ok(()),
        Err(err) if is_status(&err, 409) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Writes `status` (what flows back from the host) to the virtual object `name`; an object gone
/// meanwhile is not an error.
pub async fn write_virtual_status<K, S>(api: &Api<K>, name: &str, status: &S) -> anyhow::Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
    S: Serialize,
{
    let patch = serde_json::json!({ "status": status });
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(err) if is_status(&err, 404) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Deletes `live` if it is still the object with its UID; returns whether it did (false when
/// it was gone or replaced already).
pub async fn delete<K>(
    api: &Api<K>,
    live: &impl Resource,
    grace_seconds: Option<u32>,
) -> anyhow::Result<bool>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: live.uid(),
            resource_version: None,
        }),
        grace_period_seconds: grace_seconds,
        ..Default::default()
    };
    match api.delete(&live.name_any(), &params).await {
        Ok(_) => Ok(true),
        Err(err) if is_status(&err, 404) || is_status(&err, 409) => Ok(false),
        Err(err) => Err(err.into()),
    }
}

/// The level-based sync of one plain kind: the copy exists, and holds the translation (patched
/// by the patches of `section` under `spec.sync`), exactly when the virtual object exists and
/// is `wanted`. A virtual object standing for a host one
/// (imported) has no copy.
pub async fn sync<K>(
    ctx: &Ctx,
    section: &str,
    api: &Api<K>,
    virtual_object: Option<&K>,
    copy: Option<&K>,
    translate: impl Fn(&K) -> K,
) -> anyhow::Result<Next>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug + Held,
{
    let virtual_object = virtual_object.filter(|o| !marks::is_imported(o.annotations()));
    match (virtual_object, copy) {
        (None, None) => Ok(Next::Done),
        (None, Some(copy)) => {
            delete(api, copy, None).await?;
            Ok(Next::Done)
        }
        (Some(object), Some(copy)) if Ctx::copy_of_uid(copy) != object.uid().as_deref() => {
            // A copy of an earlier object of the same name.
            delete(api, copy, None).await?;
            Ok(Next::Done)
        }
        (Some(object), copy) => {
            let patched = patching::apply(ctx, section, object, copy, translate(object));
            patched.report(ctx, object).await;
            let desired = match patched.object {
                Ok(desired) => desired,
                Err(why) => {
                    // A copy made before stays as it was.
                    warn(ctx, object, patching::PATCH_REFUSED, why).await;
                    return Ok(Next::Done);
                }
            };
            match copy {
                None => create(ctx, api, &desired, object).await,
                Some(copy) => {
                    update(api, desired, copy).await?;
                    Ok(Next::Done)
                }
            }
        }
    }
}
