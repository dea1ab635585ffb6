//! The cleanup finalizer: what garbage collection cannot do when a VirtualCluster is deleted.
//! Namespaced children carry owner references and go with the instance; the syncer is stopped
//! first so that it recreates nothing, and cluster-scoped objects, which cannot have a
//! namespaced owner, are found by the instance's labels. Every delete is preconditioned on the
//! UID of an object whose labels name this very instance (name, namespace and UID).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use virtualcluster_crds::VirtualCluster;
use virtualcluster_crds::instance::InstanceRef;

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

    let mut removed = 0;
    removed += delete_labelled::<ClusterRoleBinding>(ctx, &id).await?;
    removed += delete_labelled::<ClusterRole>(ctx, &id).await?;
    publish(
        ctx,
        vc,
        EventType::Normal,
        "CleanedUp",
        &format!(
            "stopped the syncer and removed {removed} cluster-scoped objects; the namespaced ones go with the VirtualCluster"
        ),
    )
    .await;
    ctx.metrics
        .set_phase(format!("{}/{}", id.namespace, id.name), None);
    ctx.verified.forget(&id.namespace, &id.child_names());
    Ok(Action::await_change())
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
    let name = object.name_any();
    if !id.owns(object.labels()) {
        tracing::warn!(kind = %K::kind(&()), %name, "not deleting: its labels name another instance");
        return Ok(false);
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: object.uid(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(&name, &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(err) => Err(Error::kube(format!("deleting {} {name}", K::kind(&())))(
            err,
        )),
    }
}
