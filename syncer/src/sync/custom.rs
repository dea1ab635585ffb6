//! Custom resources (`spec.sync.toHost.customResources`, `fromHost.customResources`), on the
//! generic path: objects are `DynamicObject`s of a kind the operator resolved from the host's
//! CRD ([`Kind`]). The CRD itself is copied into the virtual cluster and kept in step with the
//! host's. To the host, objects are renamed into the instance's host namespace like every
//! namespaced kind, patched, and their status comes back; from the host, objects are shown as
//! they are there (marked [`FROM_HOST`]), and the virtual cluster's own objects of the same name
//! are left alone.
//!
//! The syncer holds rights on a custom resource in its instance's own namespace only (a Role the
//! operator makes from the platform's allow-list): with namespace syncing, objects of virtual
//! namespaces mapped to other host namespaces are not copied, and their owners are told.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, ObjectMeta, Patch, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::Value;
use virtualcluster_crds::compare::holds;
use virtualcluster_crds::kinds::{Direction, Kind};
use virtualcluster_crds::marks;

use crate::context::{Ctx, Key};
use crate::copy::{self, About};
use crate::patching;
use crate::queue::{Next, WorkQueue};
use crate::sync::extra::FROM_HOST;
use crate::watches::{HostCache, reflect_dynamic};

/// Annotation on a virtual object shown from the host: the host object's `namespace/name`.
pub const HOST_OBJECT: &str = "virtualcluster.dev/host-object";

/// Reason of the Event on a virtual object not copied because its namespace maps to a host
/// namespace where the syncer has no rights on its kind.
pub const NOT_SYNCED: &str = "CustomResourceNotSynced";

/// One custom resource kind: its entry, its caches on both sides and its queue (keyed by the
/// virtual object to the host, by the host object from it).
pub struct Custom {
    pub kind: Kind,
    pub resource: ApiResource,
    pub virtual_: Store<DynamicObject>,
    pub host: HostCache<DynamicObject>,
    pub queue: Arc<WorkQueue<Key>>,
    /// To the host: the labels an object must carry to be copied.
    pub selector: BTreeMap<String, String>,
    /// From the host (namespaced): host `namespace/name` or `namespace/*` to virtual.
    pub mappings: BTreeMap<String, String>,
}

/// The streams that feed a [`Custom`]'s queue.
pub struct Streams {
    pub virtual_: BoxStream<'static, DynamicObject>,
    pub host: BoxStream<'static, DynamicObject>,
}

/// The caches of `kind`, for instance `ctx_config`: on the host, this instance's copies in its
/// own namespace (to the host), or the host's objects (from it: the whole cluster for a
/// cluster-scoped kind, the instance's namespace for a namespaced one).
pub fn caches(
    host: &Client,
    virt: &Client,
    kind: &Kind,
    config: &virtualcluster_crds::instance::SyncerConfig,
    metrics: &crate::metrics::Metrics,
) -> (Custom, Streams) {
    let resource = kind.api_resource();
    let own = config.instance.namespace.clone();
    let key = kind.resource();
    let (virtual_api, host_config) = match kind.direction {
        Direction::ToHost => (
            Api::all_with(virt.clone(), &resource),
            watcher::Config::default().labels(&marks::copies_selector(&config.instance)),
        ),
        Direction::FromHost => (
            Api::all_with(virt.clone(), &resource),
            watcher::Config::default(),
        ),
    };
    let (virtual_, virtual_stream) =
        reflect_dynamic(virtual_api, &resource, watcher::Config::default());
    let (host_cache, host_stream) =
        HostCache::dynamic(host, &resource, kind.namespaced, host_config);
    if kind.namespaced {
        host_cache.follow(std::slice::from_ref(&own));
    }
    let (selector, mappings) = match kind.direction {
        Direction::ToHost => (
            config
                .sync
                .to_host
                .custom_resources
                .get(&key)
                .and_then(|c| c.selector.as_ref())
                .map(|s| s.labels.clone())
                .unwrap_or_default(),
            BTreeMap::new(),
        ),
        Direction::FromHost => (
            BTreeMap::new(),
            config
                .sync
                .from_host
                .custom_resources
                .get(&key)
                .and_then(|c| c.mappings.as_ref())
                .map(|m| m.by_name.clone())
                .unwrap_or_default(),
        ),
    };
    // One queue per configured kind, named for its metrics; the set is fixed at start.
    let name: &'static str = Box::leak(format!("{key}/{:?}", kind.direction).into_boxed_str());
    (
        Custom {
            kind: kind.clone(),
            resource,
            virtual_,
            host: host_cache,
            queue: WorkQueue::new(name, metrics),
            selector,
            mappings,
        },
        Streams {
            virtual_: virtual_stream,
            host: host_stream,
        },
    )
}

impl Custom {
    /// The queue key of a changed object: the virtual object's (to the host), or the host
    /// object's (from it; a virtual object names it in [`HOST_OBJECT`]).
    pub fn key_of_virtual(&self, object: &DynamicObject) -> Option<Key> {
        match self.kind.direction {
            Direction::ToHost => Key::of(object),
            Direction::FromHost => {
                let host = object.annotations().get(HOST_OBJECT)?;
                Some(match host.split_once('/') {
                    Some((ns, name)) => Key::new(ns, name),
                    None => Key::new("", host),
                })
            }
        }
    }

    pub fn key_of_host(&self, object: &DynamicObject) -> Option<Key> {
        match self.kind.direction {
            Direction::ToHost => Key::of_copy(object),
            Direction::FromHost => Some(Key::new(
                object.namespace().as_deref().unwrap_or_default(),
                &object.name_any(),
            )),
        }
    }

    fn reference(&self, namespace: &str, name: &str) -> ObjectRef<DynamicObject> {
        let r = ObjectRef::new_with(name, self.resource.clone());
        match namespace.is_empty() {
            true => r,
            false => r.within(namespace),
        }
    }

    /// Where host object `namespace/name` of a namespaced kind is shown: its mapping, exact or
    /// by namespace (`ns/*` to `vns/*`, same name).
    fn virtual_key(&self, key: &Key) -> Option<Key> {
        if !self.kind.namespaced {
            return Some(Key::new("", &key.name));
        }
        let exact = format!("{}/{}", key.namespace, key.name);
        if let Some(to) = self.mappings.get(&exact) {
            let (ns, name) = to.split_once('/')?;
            return Some(Key::new(ns, name));
        }
        let all = format!("{}/*", key.namespace);
        let to = self.mappings.get(&all)?;
        let (ns, _) = to.split_once('/')?;
        Some(Key::new(ns, &key.name))
    }
}

/// Copies the CRD of `kind` from the host into the virtual cluster, and waits until the
/// virtual API server serves it.
pub async fn install_definition(host: &Client, virt: &Client, kind: &Kind) -> anyhow::Result<()> {
    let name = kind.resource();
    let host_crds: Api<CustomResourceDefinition> = Api::all(host.clone());
    let crd = host_crds
        .get(&name)
        .await
        .map_err(|e| anyhow::anyhow!("reading the host's CRD {name}: {e}"))?;
    apply_definition(virt, &crd).await?;
    let virtual_crds: Api<CustomResourceDefinition> = Api::all(virt.clone());
    let established = kube::runtime::wait::await_condition(
        virtual_crds,
        &name,
        kube::runtime::wait::conditions::is_crd_established(),
    );
    tokio::time::timeout(Duration::from_secs(60), established)
        .await
        .map_err(|_| anyhow::anyhow!("CRD {name} not established in the virtual cluster"))??;
    Ok(())
}

/// The host's CRD as the virtual cluster gets it: the same names, versions, schemas and
/// printer columns, without a conversion webhook (it would point at a host Service the virtual
/// API server cannot reach), marked as copied from the host.
pub fn virtual_definition(host: &CustomResourceDefinition) -> CustomResourceDefinition {
    let mut spec = host.spec.clone();
    spec.conversion = None;
    CustomResourceDefinition {
        metadata: ObjectMeta {
            name: host.metadata.name.clone(),
            labels: Some(BTreeMap::from([(FROM_HOST.to_owned(), "true".to_owned())])),
            ..Default::default()
        },
        spec,
        status: None,
    }
}

async fn apply_definition(virt: &Client, host: &CustomResourceDefinition) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(virt.clone());
    let desired = virtual_definition(host);
    let name = desired.name_any();
    if let Some(live) = api.get_opt(&name).await?
        && holds(&live, &desired)
    {
        return Ok(());
    }
    api.patch(&name, &copy::apply_params(), &Patch::Apply(&desired))
        .await?;
    Ok(())
}

/// Keeps the virtual CRD of `kind` in step with the host's: a stream that applies each change.
pub fn follow_definition(host: &Client, virt: &Client, kind: &Kind) -> BoxStream<'static, ()> {
    let api: Api<CustomResourceDefinition> = Api::all(host.clone());
    let config = watcher::Config::default().fields(&format!("metadata.name={}", kind.resource()));
    let virt = virt.clone();
    watcher(api, config)
        .default_backoff()
        .applied_objects()
        .filter_map(move |crd| {
            let virt = virt.clone();
            async move {
                match crd {
                    Ok(crd) => {
                        if let Err(err) = apply_definition(&virt, &crd).await {
                            tracing::warn!(%err, crd = %crd.name_any(), "updating the virtual CRD");
                        }
                    }
                    Err(err) => tracing::warn!(%err, "watching a host CRD"),
                }
                Some(())
            }
        })
        .boxed()
}

/// Syncs one object of custom kind `index` of `ctx.custom`.
pub async fn reconcile(ctx: Arc<Ctx>, index: usize, key: Key) -> anyhow::Result<Next> {
    let custom = &ctx.custom[index];
    match custom.kind.direction {
        Direction::ToHost => to_host(&ctx, custom, &key).await,
        Direction::FromHost => from_host(&ctx, custom, &key).await,
    }
}

/// A virtual object's host copy: its content without status, renamed and marked.
fn host_copy(ctx: &Ctx, object: &DynamicObject) -> DynamicObject {
    let mut data = object.data.clone();
    if let Some(map) = data.as_object_mut() {
        map.remove("status");
    }
    DynamicObject {
        types: object.types.clone(),
        metadata: ctx.target.copy_meta(&object.metadata),
        data,
    }
}

async fn to_host(ctx: &Ctx, custom: &Custom, key: &Key) -> anyhow::Result<Next> {
    if !ctx.synced(&key.namespace) {
        return Ok(Next::Done);
    }
    let section = custom.kind.patch_section();
    let host_namespace = ctx.target.host_namespace(&key.namespace);
    let object = custom
        .virtual_
        .get(&custom.reference(&key.namespace, &key.name))
        .filter(|o| {
            let labels = o.labels();
            custom
                .selector
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
        });
    if host_namespace != ctx.target.instance.namespace {
        if let Some(object) = &object {
            let note = format!(
                "not copied to the host: custom resources are synced into the virtual cluster's \
                 own host namespace ({}), and namespace {} maps to {host_namespace}",
                ctx.target.instance.namespace, key.namespace
            );
            copy::warn_at(
                ctx,
                &About::with(object.as_ref(), &custom.resource),
                NOT_SYNCED,
                note,
            )
            .await;
        }
        return Ok(Next::Done);
    }
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.host.clone(), &host_namespace, &custom.resource);
    let host_name = ctx.target.host_name(&key.namespace, &key.name);
    let copy = custom
        .host
        .get(&custom.reference(&host_namespace, &host_name))
        .filter(|c| Key::of_copy(c.as_ref()).as_ref() == Some(key));
    match (object.as_deref(), copy.as_deref()) {
        (None, None) => Ok(Next::Done),
        (None, Some(copy)) => {
            copy::delete(&api, copy, None).await?;
            Ok(Next::Done)
        }
        (Some(object), Some(copy)) if Ctx::copy_of_uid(copy) != object.uid().as_deref() => {
            copy::delete(&api, copy, None).await?;
            Ok(Next::Done)
        }
        (Some(object), copy) => {
            let about = About::with(object, &custom.resource);
            let patched = patching::apply(ctx, &section, object, copy, host_copy(ctx, object));
            patched.report_at(ctx, &about).await;
            let desired = match patched.object {
                Ok(desired) => desired,
                Err(why) => {
                    copy::warn_at(ctx, &about, patching::PATCH_REFUSED, why).await;
                    return Ok(Next::Done);
                }
            };
            match copy {
                None => create(ctx, &api, &desired, &about).await,
                Some(copy) => {
                    if !holds(copy, &desired) {
                        let mut desired = desired;
                        desired.metadata.uid = copy.uid();
                        apply(&api, &desired).await?;
                    }
                    status_back(ctx, custom, &section, object, copy).await?;
                    Ok(Next::Done)
                }
            }
        }
    }
}

/// Creates copy `desired`; a foreign host object of that name is left alone and the virtual
/// object's owner told.
async fn create(
    ctx: &Ctx,
    api: &Api<DynamicObject>,
    desired: &DynamicObject,
    about: &About,
) -> anyhow::Result<Next> {
    match api.create(&PostParams::default(), desired).await {
        Ok(_) => Ok(Next::Done),
        Err(err) if copy::is_status(&err, 409) => {
            let name = desired.name_any();
            match api.get_opt(&name).await? {
                Some(live) if marks::is_copy_of(&ctx.target.instance, live.labels()) => {
                    Ok(Next::Done)
                }
                Some(_) => {
                    let note = format!(
                        "host object {}/{name} exists and was not made by this virtual cluster; \
                         it is left alone and this object is not synced",
                        desired.namespace().unwrap_or_default()
                    );
                    copy::warn_at(ctx, about, copy::HOST_NAME_CONFLICT, note).await;
                    Ok(Next::After(copy::CLASH_RECHECK))
                }
                None => Ok(Next::After(Duration::from_millis(200))),
            }
        }
        Err(err) => Err(err.into()),
    }
}

/// Server-side apply of `desired` (which carries the UID it must meet, if any).
async fn apply(api: &Api<DynamicObject>, desired: &DynamicObject) -> anyhow::Result<()> {
    let value = serde_json::to_value(desired)?;
    copy::patch_apply(api, &desired.name_any(), &value).await
}

/// The host copy's status, through the reverse patches, to the virtual object.
async fn status_back(
    ctx: &Ctx,
    custom: &Custom,
    section: &str,
    object: &DynamicObject,
    copy: &DynamicObject,
) -> anyhow::Result<()> {
    let reversed = patching::reverse(ctx, section, object, copy);
    let source = reversed.as_ref().unwrap_or(copy);
    let Some(status) = source.data.get("status") else {
        return Ok(());
    };
    if object.data.get("status") == Some(status) {
        return Ok(());
    }
    let api: Api<DynamicObject> = Api::namespaced_with(
        ctx.virt.clone(),
        object.namespace().as_deref().unwrap_or_default(),
        &custom.resource,
    );
    write_status(&api, &object.name_any(), status).await
}

/// Writes `status` to virtual object `name`: through the status subresource, or the object
/// itself where its CRD has none.
async fn write_status(api: &Api<DynamicObject>, name: &str, status: &Value) -> anyhow::Result<()> {
    let patch = serde_json::json!({ "status": status });
    let params = kube::api::PatchParams::default();
    match api.patch_status(name, &params, &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(err) if copy::is_status(&err, 404) => {
            match api.patch(name, &params, &Patch::Merge(&patch)).await {
                Ok(_) => Ok(()),
                Err(err) if copy::is_status(&err, 404) => Ok(()),
                Err(err) => Err(err.into()),
            }
        }
        Err(err) => Err(err.into()),
    }
}

/// A host object as the virtual cluster shows it at `at`: its content, its labels and
/// annotations, marked as shown from the host.
fn shown(host: &DynamicObject, at: &Key) -> DynamicObject {
    let host_ref = match host.namespace() {
        Some(ns) => format!("{ns}/{}", host.name_any()),
        None => host.name_any(),
    };
    let mut labels = marks::without_reserved(host.metadata.labels.as_ref());
    labels.insert(FROM_HOST.into(), "true".into());
    let mut annotations = marks::without_reserved(host.metadata.annotations.as_ref());
    annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    annotations.insert(HOST_OBJECT.into(), host_ref);
    DynamicObject {
        types: host.types.clone(),
        metadata: ObjectMeta {
            name: Some(at.name.clone()),
            namespace: (!at.namespace.is_empty()).then(|| at.namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        data: host.data.clone(),
    }
}

async fn from_host(ctx: &Ctx, custom: &Custom, key: &Key) -> anyhow::Result<Next> {
    let Some(at) = custom.virtual_key(key) else {
        return Ok(Next::Done);
    };
    let host = custom
        .host
        .get(&custom.reference(&key.namespace, &key.name));
    let current = custom
        .virtual_
        .get(&custom.reference(&at.namespace, &at.name));
    let api: Api<DynamicObject> = match at.namespace.is_empty() {
        true => Api::all_with(ctx.virt.clone(), &custom.resource),
        false => Api::namespaced_with(ctx.virt.clone(), &at.namespace, &custom.resource),
    };
    match (host, current) {
        // The virtual cluster's own object of that name stays as it is.
        (_, Some(current)) if !current.labels().contains_key(FROM_HOST) => {}
        (Some(host), current) => {
            let section = custom.kind.patch_section();
            let (desired, errors) = patching::apply_from_host(
                ctx,
                &section,
                host.as_ref(),
                current.as_deref(),
                shown(host.as_ref(), &at),
            );
            for err in errors {
                tracing::warn!(%err, object = %at.name, "patch not applied");
            }
            if !current
                .as_ref()
                .is_some_and(|c| holds(c.as_ref(), &desired))
            {
                apply(&api, &desired).await?;
                if let Some(status) = desired.data.get("status") {
                    write_status(&api, &at.name, status).await?;
                }
            }
        }
        (None, Some(current)) => {
            copy::delete(&api, current.as_ref(), None).await?;
        }
        (None, None) => {}
    }
    Ok(Next::Done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtualcluster_crds::v1alpha1::CustomResourceScope;

    fn issuer() -> Kind {
        Kind::custom(
            "issuers.cert-manager.io",
            "v1",
            "Issuer",
            CustomResourceScope::Namespaced,
            Direction::FromHost,
        )
        .unwrap()
    }

    #[test]
    fn shown_objects_say_where_they_come_from() {
        let host: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "cert-manager.io/v1", "kind": "Issuer",
            "metadata": {"name": "ca", "namespace": "team-a", "uid": "u1",
                         "labels": {"app": "x", "virtualcluster.dev/managed-by": "y"}},
            "spec": {"selfSigned": {}}, "status": {"ready": true}
        }))
        .unwrap();
        let at = Key::new("default", "shared-ca");
        let virtual_ = shown(&host, &at);
        assert_eq!(virtual_.metadata.name.as_deref(), Some("shared-ca"));
        assert_eq!(virtual_.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(virtual_.metadata.uid, None);
        let labels = virtual_.metadata.labels.unwrap();
        assert_eq!(labels[FROM_HOST], "true");
        assert!(!labels.contains_key("virtualcluster.dev/managed-by"));
        assert_eq!(
            virtual_.metadata.annotations.unwrap()[HOST_OBJECT],
            "team-a/ca"
        );
        assert_eq!(virtual_.data["spec"], serde_json::json!({"selfSigned": {}}));
        assert_eq!(issuer().kind, "Issuer");
    }

    #[test]
    fn virtual_definitions_drop_the_conversion_webhook() {
        let host: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "certificates.cert-manager.io", "uid": "u", "resourceVersion": "9"},
            "spec": {"group": "cert-manager.io", "scope": "Namespaced",
                     "names": {"plural": "certificates", "kind": "Certificate"},
                     "conversion": {"strategy": "Webhook", "webhook": {"conversionReviewVersions": ["v1"],
                        "clientConfig": {"service": {"name": "cm", "namespace": "cert-manager"}}}},
                     "versions": [{"name": "v1", "served": true, "storage": true}]}
        }))
        .unwrap();
        let v = virtual_definition(&host);
        assert!(v.spec.conversion.is_none());
        assert_eq!(v.metadata.uid, None);
        assert_eq!(v.metadata.resource_version, None);
        assert_eq!(v.spec.versions[0].name, "v1");
    }
}
