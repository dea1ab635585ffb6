//! The cleanup finalizer: what garbage collection cannot do when a VirtualCluster is deleted.
//! Namespaced children carry owner references and go with the instance; the syncer is stopped
//! first, and its pods must be gone, so that it recreates nothing; then the host copies it made
//! in the instance's namespace, and cluster-scoped objects, which cannot have a namespaced
//! owner, are found by the instance's labels. Every delete is preconditioned on the UID of an
//! object whose labels name this very instance (name, namespace and UID).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Namespace, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use virtualcluster_crds::VirtualCluster;
use virtualcluster_crds::instance::{Component, InstanceRef};
use virtualcluster_crds::{keys, marks};

use crate::controller::{Context, publish, write_status};
use crate::error::Error;
use crate::status;

pub async fn run(vc: &VirtualCluster, ctx: &Context) -> Result<Action, Error> {
    let id = InstanceRef::of(vc);
    write_status(vc, ctx, status::deleting(vc, Time(Timestamp::now()))).await?;

    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &id.namespace);
    if let Some(syncer) = deployments
        .get_opt(&id.syncer())
        .await
        .map_err(Error::kube("reading the syncer Deployment"))?
    {
        delete_owned(&deployments, &id, &syncer).await?;
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &id.namespace);
    let syncer_pods = pods
        .list(&ListParams::default().labels(&syncer_selector(&id)))
        .await
        .map_err(Error::kube("listing the syncer's pods"))?;
    if !syncer_pods.items.is_empty() {
        // A syncer still running would make again what is deleted next. An error keeps the
        // finalizer; the controller comes back after `Error::retry_after`.
        return Err(Error::CleanupPending(format!(
            "{} syncer pods still running",
            syncer_pods.items.len()
        )));
    }

    // The copies the syncer made, wherever they are: the instance's namespace and the host
    // namespaces it created or imported.
    let copies = delete_copies::<Pod>(ctx, &id).await?
        + delete_copies::<Service>(ctx, &id).await?
        + delete_copies::<Endpoints>(ctx, &id).await?
        + delete_copies::<ConfigMap>(ctx, &id).await?
        + delete_copies::<Secret>(ctx, &id).await?
        + delete_copies::<PersistentVolumeClaim>(ctx, &id).await?
        + delete_copies::<ServiceAccount>(ctx, &id).await?
        + delete_copies::<Ingress>(ctx, &id).await?
        + delete_copies::<NetworkPolicy>(ctx, &id).await?
        + delete_copies::<PodDisruptionBudget>(ctx, &id).await?;

    // Host namespaces: those the instance created go (and are waited for), those it imported
    // stay, without its marks.
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let marked = namespaces
        .list(&ListParams::default().labels(&marks::copies_selector(&id)))
        .await
        .map_err(Error::kube("listing the instance's host namespaces"))?;
    let mut terminating = Vec::new();
    for namespace in marked
        .items
        .iter()
        .filter(|n| marks::is_copy_of(&id, n.labels()))
    {
        let name = namespace.name_any();
        let origin = namespace
            .labels()
            .get(keys::NAMESPACE_ORIGIN)
            .map(String::as_str);
        if origin == Some(keys::ORIGIN_CREATED) {
            if namespace.metadata.deletion_timestamp.is_none()
                && delete_precisely(&namespaces, namespace).await?
            {
                publish(
                    ctx,
                    vc,
                    EventType::Normal,
                    "NamespaceDeleted",
                    &format!("created namespace {name} deleted"),
                )
                .await;
            }
            terminating.push(name);
        } else {
            let mut strip = serde_json::Map::new();
            for key in [
                keys::SYNCED_BY,
                keys::SYNCED_BY_NAMESPACE,
                keys::SYNCED_BY_UID,
                keys::NAMESPACE_ORIGIN,
            ] {
                strip.insert(key.into(), serde_json::Value::Null);
            }
            let patch = serde_json::json!({"metadata": {"uid": namespace.uid(), "labels": strip}});
            namespaces
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(Error::kube(format!(
                    "removing the instance's marks from namespace {name}"
                )))?;
            publish(ctx, vc, EventType::Normal, "NamespaceReleased", &format!("imported namespace {name} cleaned: the instance's objects removed, the namespace and its own objects kept")).await;
        }
    }
    if !terminating.is_empty() {
        return Err(Error::CleanupPending(format!(
            "waiting for the namespaces it created to go: {}",
            terminating.join(", ")
        )));
    }

    let mut removed = 0;
    removed += delete_labelled::<ClusterRoleBinding>(ctx, &id).await?;
    removed += delete_labelled::<ClusterRole>(ctx, &id).await?;
    removed += delete_cluster_copies::<PriorityClass>(ctx, &id).await?;
    publish(
        ctx,
        vc,
        EventType::Normal,
        "CleanedUp",
        &format!(
            "stopped the syncer, removed {copies} objects it made on the host and {removed} \
             cluster-scoped objects; the operator's own children go with the VirtualCluster"
        ),
    )
    .await;
    ctx.metrics
        .set_phase(format!("{}/{}", id.namespace, id.name), None);
    ctx.verified.forget(&id.namespace, &id.child_names());
    Ok(Action::await_change())
}

/// Selector of the syncer's pods.
fn syncer_selector(id: &InstanceRef) -> String {
    let mut selector = id.label_selector();
    for (k, v) in id.selector_labels(Component::Syncer) {
        selector.push_str(&format!(",{k}={v}"));
    }
    selector
}

/// Deletes the host copies of kind `K` the instance's syncer made, in any namespace (marked with
/// the instance's name, namespace and UID). Returns how many it deleted.
async fn delete_copies<K>(ctx: &Context, id: &InstanceRef) -> Result<usize, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let mut deleted = 0;
    for object in marked(Api::<K>::all(ctx.client.clone()), id).await? {
        // Listed across namespaces, deleted in its own.
        let api = Api::<K>::namespaced(ctx.client.clone(), &object.namespace().unwrap_or_default());
        if delete_precisely(&api, &object).await? {
            deleted += 1;
        }
    }
    Ok(deleted)
}

async fn delete_cluster_copies<K>(ctx: &Context, id: &InstanceRef) -> Result<usize, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    delete_marked(Api::<K>::all(ctx.client.clone()), id).await
}

async fn delete_marked<K>(api: Api<K>, id: &InstanceRef) -> Result<usize, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut deleted = 0;
    for object in marked(api.clone(), id).await? {
        if delete_precisely(&api, &object).await? {
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// The objects `api` lists that carry the instance's marks (name, namespace and UID) and are
/// not being deleted already.
async fn marked<K>(api: Api<K>, id: &InstanceRef) -> Result<Vec<K>, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let found = api
        .list(&ListParams::default().labels(&marks::copies_selector(id)))
        .await
        .map_err(Error::kube(format!("listing {}s", K::kind(&()))))?;
    Ok(found
        .items
        .into_iter()
        .filter(|o| o.meta().deletion_timestamp.is_none())
        .filter(|o| {
            let ours = marks::is_copy_of(id, o.labels());
            if !ours {
                tracing::warn!(kind = %K::kind(&()), name = %o.name_any(), "not deleting: its marks name another instance");
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
    delete_precisely(api, object).await
}

/// Deletes `object`, and only the very object that was read (UID precondition). Returns whether
/// it deleted it.
async fn delete_precisely<K>(api: &Api<K>, object: &K) -> Result<bool, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
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
        Err(err) => Err(Error::kube(format!("deleting {} {name}", K::kind(&())))(
            err,
        )),
    }
}
