//! The cleanup finalizer: what garbage collection cannot do when a VirtualCluster is deleted.
//! Namespaced children carry owner references and go with the instance; the syncer is stopped
//! first, and its pods must be gone, so that it recreates nothing; then the host copies it made
//! in the instance's namespace, and cluster-scoped objects, which cannot have a namespaced
//! owner, are found by the instance's labels. Every delete is preconditioned on the UID of an
//! object whose labels name this very instance (name, namespace and UID).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, Pod, ResourceQuota, Secret, Service,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use std::collections::BTreeMap;

use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, Preconditions,
};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use virtualcluster_crds::VirtualCluster;
use virtualcluster_crds::instance::{Component, InstanceRef};
use virtualcluster_crds::kinds::{self, Kind};
use virtualcluster_crds::{keys, marks, syncer_access};

use crate::controller::{Context, publish, publish_about, write_status};
use crate::error::Error;
use crate::status;

pub async fn run(vc: &VirtualCluster, ctx: &Context) -> Result<Action, Error> {
    let id = InstanceRef::of(vc);
    let report = |remaining: Vec<String>| async move {
        write_status(
            vc,
            ctx,
            status::deleting(vc, Time(Timestamp::now()), remaining),
        )
        .await
    };

    // 1. Stop the syncer, and wait for its pods: a syncer still running would make again what
    //    is deleted next. An error keeps the finalizer; the controller comes back after
    //    `Error::retry_after`.
    let running = stop_syncer(ctx, &id).await?;
    if running > 0 {
        report(vec![format!("the syncer: {running} pods still running")]).await?;
        return Err(Error::CleanupPending(format!(
            "{running} syncer pods still running"
        )));
    }

    // 2. What is left: the copies the syncer made wherever they are (the instance's namespace,
    //    the host namespaces it created or imported), the host namespaces it marked, the host's
    //    objects it imported.
    // Custom resources whose CRD is gone have no objects left to delete.
    let custom = crate::custom::resolve(&ctx.client, &vc.spec.sync).await?;
    let copies = each_kind(copied_kinds(&custom.kinds), |kind| {
        let api = Api::<DynamicObject>::all_with(ctx.client.clone(), &kind);
        let id = &id;
        async move { marked(api, id, &kind.kind).await }
    })
    .await?;
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let marked_namespaces: Vec<Namespace> = namespaces
        .list(&ListParams::default().labels(&marks::copies_selector(&id)))
        .await
        .map_err(Error::kube("listing the instance's host namespaces"))?
        .items
        .into_iter()
        .filter(|n| marks::is_copy_of(&id, n.labels()))
        .collect();
    let imported = each_kind(imported_kinds(), |kind| {
        let api = Api::<DynamicObject>::all_with(ctx.client.clone(), &kind);
        let selector = marks::imported_selector(&id);
        async move {
            Ok(api
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(Error::kube(format!(
                    "listing the host {}s the instance imported",
                    kind.kind
                )))?
                .items)
        }
    })
    .await?;
    report(remaining(&copies, &marked_namespaces, &imported)).await?;

    // 3. Delete the copies, counted by host namespace.
    let mut removed: BTreeMap<String, usize> = BTreeMap::new();
    for (kind, object) in &copies {
        let namespace = object.namespace().unwrap_or_default();
        let api = Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &namespace, kind);
        if delete_precisely(&api, object, &kind.kind).await? {
            *removed.entry(namespace).or_default() += 1;
        }
    }

    // 4. The host's own objects it imported: only its mark goes.
    for (kind, object) in &imported {
        let namespace = object.namespace().unwrap_or_default();
        let api = Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &namespace, kind);
        strip(&api, object, &kind.kind, &[keys::IMPORTED_BY_UID]).await?;
    }

    // 5. The syncer's rights in the host namespaces it held (it is stopped), and the quota,
    //    limits and network policy the operator held them to: before the marks go, while they
    //    still tell which namespaces they are.
    let bindings = format!("{},{}", id.label_selector(), syncer_access::BINDING_LABEL);
    delete_labelled_everywhere::<RoleBinding>(ctx, &id, &bindings).await?;
    let selector = id.label_selector();
    delete_labelled_everywhere::<ResourceQuota>(ctx, &id, &selector).await?;
    delete_labelled_everywhere::<LimitRange>(ctx, &id, &selector).await?;
    delete_labelled_everywhere::<NetworkPolicy>(ctx, &id, &selector).await?;

    // 6. Host namespaces: those it created go (and are waited for), those it imported stay,
    //    without its marks.
    let mut terminating = Vec::new();
    for namespace in &marked_namespaces {
        let name = namespace.name_any();
        let origin = namespace
            .labels()
            .get(keys::NAMESPACE_ORIGIN)
            .map(String::as_str);
        if origin == Some(keys::ORIGIN_CREATED) {
            if namespace.metadata.deletion_timestamp.is_none()
                && delete_precisely(&namespaces, namespace, "Namespace").await?
            {
                publish_about(
                    ctx,
                    vc,
                    Some(namespace.object_ref(&())),
                    EventType::Normal,
                    "NamespaceDeleted",
                    &format!("created namespace {name} deleted"),
                )
                .await;
            }
            terminating.push(name);
        } else {
            strip(&namespaces, namespace, "Namespace", NAMESPACE_MARKS).await?;
            let count = removed.get(&name).copied().unwrap_or(0);
            publish_about(
                ctx,
                vc,
                Some(namespace.object_ref(&())),
                EventType::Normal,
                "NamespaceReleased",
                &format!(
                    "imported namespace {name} cleaned: {count} objects removed; the namespace \
                     and the host's own objects in it kept, without the instance's marks"
                ),
            )
            .await;
        }
    }
    if !terminating.is_empty() {
        report(
            terminating
                .iter()
                .map(|n| format!("created namespace {n}: terminating"))
                .collect(),
        )
        .await?;
        return Err(Error::CleanupPending(format!(
            "waiting for the namespaces it created to go: {}",
            terminating.join(", ")
        )));
    }

    // 7. Cluster-scoped objects, which cannot have a namespaced owner.
    let mut cluster_removed = 0;
    cluster_removed += delete_labelled::<ClusterRoleBinding>(ctx, &id).await?;
    cluster_removed += delete_labelled::<ClusterRole>(ctx, &id).await?;
    cluster_removed += delete_cluster_copies::<PriorityClass>(ctx, &id).await?;
    publish(
        ctx,
        vc,
        EventType::Normal,
        "CleanedUp",
        &format!(
            "stopped the syncer; removed what it made on the host, its marks from what it \
             imported, and {cluster_removed} cluster-scoped objects; the operator's own \
             children go with the VirtualCluster"
        ),
    )
    .await;
    ctx.metrics
        .set_phase(format!("{}/{}", id.namespace, id.name), None);
    ctx.verified.forget(&id.namespace, &id.child_names());
    Ok(Action::await_change())
}

/// The labels the instance puts on a host namespace it created or imported.
const NAMESPACE_MARKS: &[&str] = &[
    keys::SYNCED_BY,
    keys::SYNCED_BY_NAMESPACE,
    keys::SYNCED_BY_UID,
    keys::NAMESPACE_ORIGIN,
];

/// The namespaced kinds a syncer copies to the host (every built-in one whether or not the instance turns it on now, and its custom resources),
/// and the quota and limits older syncers made in the namespaces they created.
fn copied_kinds(custom: &[Kind]) -> Vec<ApiResource> {
    kinds::namespaced_to_host()
        .iter()
        .chain(custom.iter().filter(|k| k.has_namespaced_copies()))
        .map(Kind::api_resource)
        .chain([
            ApiResource::erase::<ResourceQuota>(&()),
            ApiResource::erase::<LimitRange>(&()),
        ])
        .collect()
}

/// The kinds whose host-made objects a syncer imports (and marks).
fn imported_kinds() -> Vec<ApiResource> {
    vec![
        ApiResource::erase::<Pod>(&()),
        ApiResource::erase::<ConfigMap>(&()),
        ApiResource::erase::<Secret>(&()),
        ApiResource::erase::<Service>(&()),
    ]
}

/// What `list` finds for each of `kinds`, each object with its kind.
async fn each_kind<F, Fut>(
    kinds: Vec<ApiResource>,
    list: F,
) -> Result<Vec<(ApiResource, DynamicObject)>, Error>
where
    F: Fn(ApiResource) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<DynamicObject>, Error>>,
{
    let mut found = Vec::new();
    for kind in kinds {
        let objects = list(kind.clone()).await?;
        found.extend(objects.into_iter().map(|o| (kind.clone(), o)));
    }
    Ok(found)
}

/// Deletes the syncer's Deployment and returns how many of its pods are still there.
async fn stop_syncer(ctx: &Context, id: &InstanceRef) -> Result<usize, Error> {
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &id.namespace);
    if let Some(syncer) = deployments
        .get_opt(&id.syncer())
        .await
        .map_err(Error::kube("reading the syncer Deployment"))?
    {
        delete_owned(&deployments, id, &syncer).await?;
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &id.namespace);
    Ok(pods
        .list(&ListParams::default().labels(&syncer_selector(id)))
        .await
        .map_err(Error::kube("listing the syncer's pods"))?
        .items
        .len())
}

/// What the cleanup has left, for `status.cleanupRemaining`.
fn remaining(
    copies: &[(ApiResource, DynamicObject)],
    namespaces: &[Namespace],
    imported: &[(ApiResource, DynamicObject)],
) -> Vec<String> {
    let mut by_namespace: BTreeMap<String, usize> = BTreeMap::new();
    for (_, object) in copies {
        *by_namespace
            .entry(object.namespace().unwrap_or_default())
            .or_default() += 1;
    }
    let mut left: Vec<String> = by_namespace
        .iter()
        .map(|(ns, n)| format!("namespace {ns}: {n} objects the syncer made"))
        .collect();
    if !imported.is_empty() {
        left.push(format!(
            "{} imported host objects to release",
            imported.len()
        ));
    }
    for namespace in namespaces {
        let created = namespace
            .labels()
            .get(keys::NAMESPACE_ORIGIN)
            .map(String::as_str)
            == Some(keys::ORIGIN_CREATED);
        left.push(if created {
            format!("created namespace {}: to delete", namespace.name_any())
        } else {
            format!("imported namespace {}: to release", namespace.name_any())
        });
    }
    left
}

/// Removes label `keys` from `object` (the very object read: UID precondition); nothing else of
/// it changes.
async fn strip<K>(api: &Api<K>, object: &K, kind: &str, keys: &[&str]) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let labels: serde_json::Map<String, serde_json::Value> = keys
        .iter()
        .map(|k| ((*k).to_owned(), serde_json::Value::Null))
        .collect();
    let patch = serde_json::json!({"metadata": {"uid": object.uid(), "labels": labels}});
    match api
        .patch(
            &object.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Gone, or replaced by another object of the same name: nothing of ours to strip.
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(err) => Err(Error::kube(format!(
            "removing the instance's marks from {kind} {}",
            object.name_any()
        ))(err)),
    }
}

/// Selector of the syncer's pods.
fn syncer_selector(id: &InstanceRef) -> String {
    let mut selector = id.label_selector();
    for (k, v) in id.selector_labels(Component::Syncer) {
        selector.push_str(&format!(",{k}={v}"));
    }
    selector
}

/// Deletes the cluster-scoped copies of kind `K` the syncer made (marked with the instance).
/// Returns how many it deleted.
async fn delete_cluster_copies<K>(ctx: &Context, id: &InstanceRef) -> Result<usize, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api = Api::<K>::all(ctx.client.clone());
    let kind = K::kind(&());
    let mut deleted = 0;
    for object in marked(api.clone(), id, &kind).await? {
        if delete_precisely(&api, &object, &kind).await? {
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// The objects `api` lists that carry the instance's marks (name, namespace and UID) and are
/// not being deleted already.
pub(crate) async fn marked<K>(api: Api<K>, id: &InstanceRef, kind: &str) -> Result<Vec<K>, Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let found = api
        .list(&ListParams::default().labels(&marks::copies_selector(id)))
        .await
        .map_err(Error::kube(format!("listing {}s", kind)))?;
    Ok(found
        .items
        .into_iter()
        .filter(|o| o.meta().deletion_timestamp.is_none())
        .filter(|o| {
            let ours = marks::is_copy_of(id, o.labels());
            if !ours {
                tracing::warn!(%kind, name = %o.name_any(), "not deleting: its marks name another instance");
            }
            ours
        })
        .collect())
}

/// Deletes the cluster-scoped objects of kind `K` that carry the instance's labels. Returns how
/// many it deleted.
async fn delete_labelled<K>(ctx: &Context, id: &InstanceRef) -> Result<usize, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let api: Api<K> = Api::all(ctx.client.clone());
    let found = api
        .list(&ListParams::default().labels(&id.label_selector()))
        .await
        .map_err(Error::kube(format!("listing {}s", K::kind(&()))))?;
    let mut deleted = 0;
    for object in &found.items {
        if delete_owned(&api, id, object).await? {
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Deletes the namespaced objects of kind `K` that `selector` finds in any namespace and whose
/// labels mark them as the instance's.
async fn delete_labelled_everywhere<K>(
    ctx: &Context,
    id: &InstanceRef,
    selector: &str,
) -> Result<usize, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let found = Api::<K>::all(ctx.client.clone())
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(Error::kube(format!("listing {}s", K::kind(&()))))?;
    let mut deleted = 0;
    for object in &found.items {
        let api = Api::namespaced(ctx.client.clone(), &object.namespace().unwrap_or_default());
        if delete_owned(&api, id, object).await? {
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Deletes `object` if its labels mark it as the instance's, and only the very object that was
/// read (UID precondition). Returns whether it deleted it.
async fn delete_owned<K>(api: &Api<K>, id: &InstanceRef, object: &K) -> Result<bool, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    if !id.owns(object.labels()) {
        tracing::warn!(kind = %K::kind(&()), name = %object.name_any(), "not deleting: its labels name another instance");
        return Ok(false);
    }
    delete_precisely(api, object, &K::kind(&())).await
}

/// Deletes `object`, and only the very object that was read (UID precondition). Returns whether
/// it deleted it.
pub(crate) async fn delete_precisely<K>(api: &Api<K>, object: &K, kind: &str) -> Result<bool, Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let name = object.name_any();
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: object.uid(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(&name, &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(false),
        Err(err) => Err(Error::kube(format!("deleting {kind} {name}"))(err)),
    }
}
