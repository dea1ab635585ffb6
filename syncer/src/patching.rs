//! The instance's patches (see `virtualcluster_crds::patches`) applied to typed objects: to a
//! translated host object on its way to the host, and to a host object before what comes back
//! of it reaches the virtual cluster. The syncer's own fields come through unchanged whatever a
//! patch did: the copy's name and namespace, and every label and annotation under the
//! project's prefix, so a patch can neither hide a copy from its instance nor dress an object
//! up as another instance's.

use std::collections::BTreeMap;

use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use virtualcluster_crds::keys::RESERVED_PREFIX;
use virtualcluster_crds::patches::{PatchError, Reference, Scope};

use crate::context::Ctx;
use crate::copy;
use crate::held::Held;

/// Reason of the Warning Event on a virtual object a patch did not apply to.
pub const PATCH_FAILED: &str = "PatchFailed";

/// What the patches of a section made of one object's translation.
pub struct Patched<K> {
    /// The object to write; `Err` (why) when the patched object must not reach the host.
    pub object: Result<K, String>,
    /// Patches that did not apply.
    pub errors: Vec<PatchError>,
    /// What the syncer put back of what patches changed.
    pub put_back: Vec<String>,
}

impl<K> Patched<K> {
    /// Tells the owner of `virtual_object` what did not apply and what was put back.
    pub async fn report<V: Resource<DynamicType = ()>>(&self, ctx: &Ctx, virtual_object: &V) {
        self.report_at(ctx, &copy::About::of(virtual_object)).await;
    }

    /// The same, for the virtual object `about`.
    pub async fn report_at(&self, ctx: &Ctx, about: &copy::About) {
        report_at(ctx, about, &self.errors).await;
        if !self.put_back.is_empty() {
            let note = format!("left out of the host copy: {}", self.put_back.join("; "));
            copy::warn_at(ctx, about, PATCH_REFUSED, note).await;
        }
    }
}

/// Reason of the Warning Event on a virtual object whose patches changed what the syncer
/// decides, or made a copy it does not write.
pub const PATCH_REFUSED: &str = "PatchRefused";

/// `desired`, the translation of `virtual_object` (with `live` its current copy, if any),
/// patched by `section`'s patches and held to the kind's rules ([`Held`]).
pub fn apply<K, V>(
    ctx: &Ctx,
    section: &str,
    virtual_object: &V,
    live: Option<&K>,
    desired: K,
) -> Patched<K>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Held,
    V: Resource + Serialize,
{
    if !ctx.patches.has(section) {
        return Patched {
            object: Ok(desired),
            errors: Vec::new(),
            put_back: Vec::new(),
        };
    }
    let (mut patched, errors) = patch(
        ctx,
        section,
        None,
        Some(virtual_object),
        live,
        desired.clone(),
    );
    let (object, put_back) = match K::hold(ctx, &desired, &mut patched) {
        Ok(put_back) => (Ok(patched), put_back),
        Err(why) => (Err(why), Vec::new()),
    };
    Patched {
        object,
        errors,
        put_back,
    }
}

/// The metadata of `desired` (the translation of `virtual_object`, with `live` its copy)
/// patched by `section`'s metadata patches alone: what is written to an object whose spec
/// cannot change. The project's labels and annotations come back as for any patch.
pub fn apply_to_metadata<K, V>(
    ctx: &Ctx,
    section: &str,
    virtual_object: &V,
    live: &K,
    desired: &K,
) -> (kube::api::ObjectMeta, Vec<PatchError>)
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Default,
    V: Resource + Serialize,
{
    let mut only = K::default();
    *only.meta_mut() = desired.meta().clone();
    let (patched, errors) = patch(
        ctx,
        section,
        Some("metadata"),
        Some(virtual_object),
        Some(live),
        only,
    );
    (patched.meta().clone(), errors)
}

/// `desired`, host object `host` as the virtual cluster is to show it (with `current` the
/// virtual object there, if any), patched by the patches of fromHost `section`.
pub fn apply_from_host<K>(
    ctx: &Ctx,
    section: &str,
    host: &K,
    current: Option<&K>,
    desired: K,
) -> (K, Vec<PatchError>)
where
    K: Resource + Serialize + DeserializeOwned,
{
    if !ctx.patches.has(section) {
        return (desired, Vec::new());
    }
    patch(ctx, section, None, current, Some(host), desired)
}

/// `context.virtualObject` and `context.hostObject` as JSON, each only if an expression names
/// it, without `metadata.managedFields` (the API server's bookkeeping, often most of an
/// object's JSON, which no patch has a use for).
fn context_objects<V: Serialize, H: Serialize>(
    ctx: &Ctx,
    virtual_object: Option<&V>,
    host_object: Option<&H>,
) -> (Option<Value>, Option<Value>) {
    let virtual_value = virtual_object
        .filter(|_| ctx.patches.reads_virtual_object())
        .and_then(context_value);
    let host_value = host_object
        .filter(|_| ctx.patches.reads_host_object())
        .and_then(context_value);
    (virtual_value, host_value)
}

fn context_value<T: Serialize>(object: &T) -> Option<Value> {
    let mut value = serde_json::to_value(object).ok()?;
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    Some(value)
}

/// `desired` patched by `section`'s patches (with `only_under`, those of that top-level field)
/// with `virtual_object` and `host_object` in their context, the syncer's own fields put back.
fn patch<K, V, H>(
    ctx: &Ctx,
    section: &str,
    only_under: Option<&str>,
    virtual_object: Option<&V>,
    host_object: Option<&H>,
    desired: K,
) -> (K, Vec<PatchError>)
where
    K: Resource + Serialize + DeserializeOwned,
    V: Resource + Serialize,
    H: Serialize,
{
    let Ok(mut object) = serde_json::to_value(&desired) else {
        return (desired, Vec::new());
    };
    let namespace = virtual_object
        .and_then(|v| v.meta().namespace.as_deref())
        .unwrap_or_default();
    let (virtual_value, host_value) = context_objects(ctx, virtual_object, host_object);
    let scope = Scope {
        namespace,
        virtual_object: virtual_value.as_ref(),
        host_object: host_value.as_ref(),
    };
    let rename = |r: &Reference| {
        ctx.synced(&r.namespace).then(|| {
            (
                ctx.target.host_namespace(&r.namespace),
                ctx.target.host_name(&r.namespace, &r.name),
            )
        })
    };
    let mut errors = ctx
        .patches
        .apply(section, only_under, &mut object, &scope, &rename);
    match serde_json::from_value::<K>(object) {
        Ok(mut patched) => {
            keep_own_fields(&desired, &mut patched);
            (patched, errors)
        }
        Err(err) => {
            errors.push(PatchError {
                section: section.into(),
                index: None,
                message: format!("the patched object is not valid: {err}; it is synced unpatched"),
            });
            (desired, errors)
        }
    }
}

/// Host object `host` with `section`'s reverse expressions applied, as what flows back from it
/// to `virtual_object` must read; unchanged without any.
pub fn reverse<K, V>(ctx: &Ctx, section: &str, virtual_object: &V, host: &K) -> Option<K>
where
    K: Serialize + DeserializeOwned,
    V: Resource + Serialize,
{
    if !ctx.patches.has_reverse(section) {
        return None;
    }
    let mut object = serde_json::to_value(host).ok()?;
    let (virtual_value, original) = context_objects(ctx, Some(virtual_object), Some(host));
    let scope = Scope {
        namespace: virtual_object
            .meta()
            .namespace
            .as_deref()
            .unwrap_or_default(),
        virtual_object: virtual_value.as_ref(),
        host_object: original.as_ref(),
    };
    // What comes back is often a part of the object (a pod's status without its spec), so a
    // path missing from it is no news.
    for err in ctx.patches.reverse(section, &mut object, &scope) {
        tracing::debug!(%err, "reverse patch not applied");
    }
    serde_json::from_value(object).ok()
}

/// Puts back in `patched` the name, namespace and the project's labels and annotations of
/// `desired`, and takes out any such key a patch added.
fn keep_own_fields<K: Resource>(desired: &K, patched: &mut K) {
    let own = |map: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        map.iter()
            .filter(|(k, _)| k.starts_with(RESERVED_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let wanted = desired.meta();
    let meta = patched.meta_mut();
    meta.name = wanted.name.clone();
    meta.namespace = wanted.namespace.clone();
    meta.generate_name = wanted.generate_name.clone();
    meta.owner_references = wanted.owner_references.clone();
    meta.finalizers = wanted.finalizers.clone();
    for (field, wanted) in [
        (&mut meta.labels, wanted.labels.as_ref()),
        (&mut meta.annotations, wanted.annotations.as_ref()),
    ] {
        let wanted_own = wanted.map(own).unwrap_or_default();
        let map = field.get_or_insert_with(BTreeMap::new);
        map.retain(|k, _| !k.starts_with(RESERVED_PREFIX));
        map.extend(wanted_own);
    }
}

/// Tells the owner of `virtual_object` which patches did not apply to its copy.
pub async fn report<V: Resource<DynamicType = ()>>(
    ctx: &Ctx,
    virtual_object: &V,
    errors: &[PatchError],
) {
    report_at(ctx, &copy::About::of(virtual_object), errors).await;
}

/// The same, for the virtual object `about`.
pub async fn report_at(ctx: &Ctx, about: &copy::About, errors: &[PatchError]) {
    if errors.is_empty() {
        return;
    }
    let note = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    tracing::warn!(object = %about.name, "patches not applied: {note}");
    copy::warn_at(ctx, about, PATCH_FAILED, format!("not applied: {note}")).await;
}

/// `{name, namespace, config}` of the instance, as expressions see it in `context.vcluster`.
pub fn vcluster_context(config: &virtualcluster_crds::instance::SyncerConfig) -> Value {
    serde_json::json!({
        "name": config.instance.name,
        "namespace": config.instance.namespace,
        "config": { "sync": config.sync },
    })
}
