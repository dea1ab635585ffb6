//! Import: what is made on the host in a namespace this instance's mappings claim (and that it
//! has marked as created or imported) appears in the virtual cluster like its own: pods, bound
//! to the host's node and showing the host's status, and ConfigMaps, Secrets and Services. They
//! stay the host's: the syncer never deletes or changes one, it only marks it
//! ([`keys::IMPORTED_BY_UID`], removed by the cleanup). Deleting or editing the virtual object
//! brings the host's back; deleting the host object removes the virtual one.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::api::Patch;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use virtualcluster_crds::compare;
use virtualcluster_crds::keys;
use virtualcluster_crds::marks;

use crate::context::{Ctx, Imported, ImportedKind, Key};
use crate::copy;
use crate::queue::Next;
use crate::translate::import::{self, Importable};
use crate::translate::service::{cluster_ip, virtual_status, with_cluster_ip};
use crate::translate::{Target, pod as translate};
use crate::watches::HostCache;

/// The import of host object `host` of kind `kind`, if its namespace is one the mappings claim.
pub fn imported(target: &Target, kind: ImportedKind, host: &impl Resource) -> Option<Imported> {
    let namespace = target.imported_as(host.meta().namespace.as_deref()?)?;
    Some(Imported {
        kind,
        key: Key::new(&namespace, host.meta().name.as_deref()?),
    })
}

/// Looks at the host's own objects in host namespace `namespace` for import (when the
/// namespace becomes held, they may have been seen before).
pub fn enqueue_namespace(ctx: &Ctx, namespace: &str) {
    fn enqueue<K: Resource<DynamicType = ()> + Clone>(
        ctx: &Ctx,
        store: Option<&HostCache<K>>,
        kind: ImportedKind,
        namespace: &str,
    ) {
        for object in store.into_iter().flat_map(|s| s.state_in(namespace)) {
            ctx.queues
                .imports
                .extend(imported(&ctx.target, kind, object.as_ref()));
        }
    }
    let n = &ctx.namespaces;
    enqueue(ctx, n.host_pods.as_ref(), ImportedKind::Pod, namespace);
    enqueue(
        ctx,
        n.host_config_maps.as_ref(),
        ImportedKind::ConfigMap,
        namespace,
    );
    enqueue(
        ctx,
        n.host_secrets.as_ref(),
        ImportedKind::Secret,
        namespace,
    );
    enqueue(
        ctx,
        n.host_services.as_ref(),
        ImportedKind::Service,
        namespace,
    );
}

pub async fn reconcile(ctx: Arc<Ctx>, imported: Imported) -> anyhow::Result<Next> {
    let Imported { kind, key } = imported;
    match kind {
        ImportedKind::Pod => reconcile_pod(ctx, key).await,
        ImportedKind::ConfigMap => reconcile_object::<ConfigMap>(ctx, key).await,
        ImportedKind::Secret => reconcile_object::<Secret>(ctx, key).await,
        ImportedKind::Service => reconcile_object::<Service>(ctx, key).await,
    }
}

/// The host object virtual `key` stands for in `store`, if its namespace is held by this
/// instance (the namespace sync marks it first); `Err` while that namespace's watch has not
/// listed it yet, when its absence means nothing.
fn held_host<K>(ctx: &Ctx, store: &HostCache<K>, key: &Key) -> Result<Option<Arc<K>>, NotListed>
where
    K: Resource<DynamicType = ()> + Clone,
{
    let Some(place) = ctx.target.place(&key.namespace).filter(|p| p.keep_names) else {
        return Ok(None);
    };
    let held = ctx
        .namespaces
        .host
        .as_ref()
        .and_then(|n| n.get(&ObjectRef::new(&place.namespace)))
        .is_some_and(|ns| {
            marks::is_copy_of(&ctx.target.instance, ns.labels())
                && ns.metadata.deletion_timestamp.is_none()
        })
        // One that came to hold a VirtualCluster after it was imported shows nothing more.
        && !ctx.namespaces.holds_instance(&place.namespace);
    if !held {
        return Ok(None);
    }
    if !store.is_ready(&place.namespace) {
        return Err(NotListed);
    }
    Ok(store.get(&ObjectRef::new(&key.name).within(&place.namespace)))
}

/// A held namespace whose watch is starting (its rights may be bound a moment after it is
/// marked): looked at again after [`LISTING_RECHECK`].
struct NotListed;
const LISTING_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

async fn reconcile_pod(ctx: Arc<Ctx>, key: Key) -> anyhow::Result<Next> {
    let Some(host_pods) = &ctx.namespaces.host_pods else {
        return Ok(Next::Done);
    };
    let virtual_pod = ctx.stores.virtual_pods.get(&key.object_ref());
    let Ok(host) = held_host(&ctx, host_pods, &key) else {
        return Ok(Next::After(LISTING_RECHECK));
    };
    let virt: Api<Pod> = ctx.virtual_api(&key.namespace);
    match (host, virtual_pod) {
        (Some(host), None) if host.metadata.deletion_timestamp.is_none() => {
            mark(&ctx, host.as_ref()).await?;
            if let Some(node) = host.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
                // The node first: the virtual cluster deletes pods bound to nodes it lacks.
                crate::sync::nodes::ensure(&ctx, node).await?;
            }
            let desired = import::pod(&host, &key.namespace);
            match virt.create(&copy::post_params(), &desired).await {
                // The status follows when the new pod comes back through the watch.
                Ok(_) => Ok(Next::Done),
                // Made meanwhile (by the virtual cluster's user too): the watch tells.
                Err(err) if copy::is_status(&err, 409) => Ok(Next::Done),
                Err(err) => Err(err.into()),
            }
        }
        (Some(host), Some(pod)) if marks::is_imported(pod.annotations()) => {
            mark(&ctx, host.as_ref()).await?;
            if import::pod_metadata_differs(&host, pod.as_ref()) {
                let (labels, annotations) = import::metadata(host.as_ref());
                let patch = serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": key.name,
                        "uid": pod.uid(),
                        "labels": labels,
                        "annotations": annotations,
                    }
                });
                copy::patch_apply(&virt, &key.name, &patch).await?;
            }
            let bound = pod.node_name.as_deref();
            if let (None, Some(node)) =
                (bound, host.spec.as_ref().and_then(|s| s.node_name.clone()))
            {
                // Imported before the host scheduled it. The status follows once the bound
                // pod comes back through the watch.
                crate::sync::pods::bind(&ctx, &virt, &key.name, node).await?;
                return Ok(Next::Done);
            }
            if let Some(status) = translate::virtual_status(
                host.status.clone(),
                pod.status().as_ref(),
                &Default::default(),
            ) {
                copy::write_virtual_status(&virt, &key.name, &status).await?;
            }
            Ok(Next::Done)
        }
        // The host pod is gone (or its namespace no longer held): so goes what stood for it.
        (None, Some(pod))
            if marks::is_imported(pod.annotations())
                && pod.metadata.deletion_timestamp.is_none() =>
        {
            copy::delete(&virt, pod.as_ref(), Some(0)).await?;
            Ok(Next::Done)
        }
        // A virtual pod of the user's own with the host pod's name: the pod sync reports the
        // clash when it tries to make its copy.
        _ => Ok(Next::Done),
    }
}

/// The caches of a kind imported besides pods, and what it shows beyond its content.
pub trait Shown: Importable {
    /// The cache of the host's own objects of this kind in claimed namespaces.
    fn host_store(ctx: &Ctx) -> Option<&HostCache<Self>>;

    fn virtual_store(ctx: &Ctx) -> &Store<Self>;

    /// The object to create first, if the virtual cluster may refuse it for what it takes
    /// from the host (then `desired` is created instead).
    fn with_host_allocation(_desired: &Self, _host: &Self) -> Option<Self> {
        None
    }

    /// Whether virtual object `live` holds all of `desired` (defaults and allocations of the
    /// virtual cluster aside).
    fn holds(live: &Self, desired: &Self) -> bool {
        compare::holds(live, desired)
    }

    /// Status of `host` that virtual object `live` lacks.
    fn missing_status(_host: &Self, _live: &Self) -> Option<serde_json::Value> {
        None
    }
}

impl Shown for ConfigMap {
    /// The data exactly: a key added in the virtual cluster goes too.
    fn holds(live: &Self, desired: &Self) -> bool {
        live.data == desired.data
            && live.binary_data == desired.binary_data
            && compare::holds(live, desired)
    }

    fn host_store(ctx: &Ctx) -> Option<&HostCache<Self>> {
        ctx.namespaces.host_config_maps.as_ref()
    }

    fn virtual_store(ctx: &Ctx) -> &Store<Self> {
        &ctx.stores.virtual_config_maps
    }
}

impl Shown for Secret {
    /// The data exactly: a key added in the virtual cluster goes too.
    fn holds(live: &Self, desired: &Self) -> bool {
        live.data == desired.data && compare::holds(live, desired)
    }

    fn host_store(ctx: &Ctx) -> Option<&HostCache<Self>> {
        ctx.namespaces.host_secrets.as_ref()
    }

    fn virtual_store(ctx: &Ctx) -> &Store<Self> {
        &ctx.stores.virtual_secrets
    }
}

impl Shown for Service {
    fn host_store(ctx: &Ctx) -> Option<&HostCache<Self>> {
        ctx.namespaces.host_services.as_ref()
    }

    fn virtual_store(ctx: &Ctx) -> &Store<Self> {
        &ctx.stores.virtual_services
    }

    /// The host's address, so that what virtual DNS answers routes on the host.
    fn with_host_allocation(desired: &Self, host: &Self) -> Option<Self> {
        cluster_ip(host).map(|ip| with_cluster_ip(desired, ip))
    }

    fn missing_status(host: &Self, live: &Self) -> Option<serde_json::Value> {
        virtual_status(host, live.status.as_ref()).and_then(|s| serde_json::to_value(s).ok())
    }
}

/// A ConfigMap, Secret or Service made on the host: the virtual object exists and holds the
/// host's content exactly when the host object does (in a held namespace).
async fn reconcile_object<K: Shown>(ctx: Arc<Ctx>, key: Key) -> anyhow::Result<Next> {
    let Some(store) = K::host_store(&ctx) else {
        return Ok(Next::Done);
    };
    let Ok(host) = held_host(&ctx, store, &key) else {
        return Ok(Next::After(LISTING_RECHECK));
    };
    let live = K::virtual_store(&ctx).get(&key.object_ref());
    let api: Api<K> = ctx.virtual_api(&key.namespace);
    match (host, live) {
        (Some(host), None) if host.meta().deletion_timestamp.is_none() => {
            mark(&ctx, host.as_ref()).await?;
            let desired = import::object(host.as_ref(), &key.namespace);
            let preferred = K::with_host_allocation(&desired, &host);
            copy::create_virtual(&api, preferred.as_ref().unwrap_or(&desired), &desired).await?;
            // What was created comes back through the watch.
            Ok(Next::Done)
        }
        (Some(host), Some(live)) if marks::is_imported(live.annotations()) => {
            mark(&ctx, host.as_ref()).await?;
            replace(&api, import::object(host.as_ref(), &key.namespace), &live).await?;
            if let Some(status) = K::missing_status(&host, &live) {
                copy::write_virtual_status(&api, &key.name, &status).await?;
            }
            Ok(Next::Done)
        }
        // The host object is gone (or its namespace no longer held): so goes what stood for it.
        (None, Some(live))
            if marks::is_imported(live.annotations())
                && live.meta().deletion_timestamp.is_none() =>
        {
            copy::delete(&api, live.as_ref(), None).await?;
            Ok(Next::Done)
        }
        // A virtual object of the user's own with the host object's name: its sync reports the
        // clash when it tries to make its copy.
        _ => Ok(Next::Done),
    }
}

/// Gives imported virtual object `live` exactly the content and labels of `desired` (what the
/// host has), unless it holds them already. A full update, not an apply: what the host removed
/// was set by a create, which an apply would not remove. The virtual cluster's allocations
/// (a Service's address and ports) stay, as an update without them keeps them.
async fn replace<K: Shown>(api: &Api<K>, mut desired: K, live: &K) -> anyhow::Result<()> {
    if K::holds(live, &desired) {
        return Ok(());
    }
    let meta = desired.meta_mut();
    meta.uid = live.uid();
    meta.resource_version = live.resource_version();
    meta.finalizers = live.meta().finalizers.clone();
    meta.owner_references = live.meta().owner_references.clone();
    match api
        .replace(&live.name_any(), &copy::post_params(), &desired)
        .await
    {
        Ok(_) => Ok(()),
        // Changed or gone meanwhile: the watch brings it back here.
        Err(err) if copy::is_status(&err, 409) || copy::is_status(&err, 404) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Marks host object `host` as imported by this instance (once), so the cleanup finds it to
/// unmark.
async fn mark<K>(ctx: &Ctx, host: &K) -> anyhow::Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let uid = &ctx.target.instance.uid;
    if host.labels().get(keys::IMPORTED_BY_UID) == Some(uid) {
        return Ok(());
    }
    let api: Api<K> = Api::namespaced(ctx.host.clone(), &host.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "metadata": {"uid": host.uid(), "labels": {keys::IMPORTED_BY_UID: uid}}
    });
    match api
        .patch(
            &host.name_any(),
            &copy::merge_params(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(err) if copy::is_status(&err, 404) || copy::is_status(&err, 409) => Ok(()),
        Err(err) => Err(err.into()),
    }
}
