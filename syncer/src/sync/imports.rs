//! Import: the pods made on the host in a namespace this instance's mappings claim (and that it
//! has marked as created or imported) appear in the virtual cluster like its own, bound to the
//! host's node and showing the host's status. They stay the host's: the syncer never deletes or
//! changes one, it only marks it ([`keys::IMPORTED_BY_UID`], removed by the cleanup). Deleting
//! the virtual pod brings it back; deleting the host pod removes the virtual one.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use virtualcluster_crds::keys::{self, SYNCER_FIELD_MANAGER};
use virtualcluster_crds::marks;

use crate::context::{Ctx, Key};
use crate::copy;
use crate::queue::Next;
use crate::translate::{Target, import, pod as translate};

/// The virtual key host pod `pod` is imported under, if its namespace is one the mappings claim.
pub fn virtual_key(target: &Target, pod: &Pod) -> Option<Key> {
    let namespace = target.imported_as(pod.metadata.namespace.as_deref()?)?;
    Some(Key::new(&namespace, pod.metadata.name.as_deref()?))
}

pub async fn reconcile(ctx: Arc<Ctx>, key: Key) -> anyhow::Result<Next> {
    let (Some(host_pods), Some(host_namespaces)) =
        (&ctx.namespaces.host_pods, &ctx.namespaces.host)
    else {
        return Ok(Next::Done);
    };
    let virtual_pod = ctx.stores.virtual_pods.get(&key.object_ref());
    let Some(place) = ctx.target.place(&key.namespace).filter(|p| p.keep_names) else {
        return Ok(Next::Done);
    };
    // Only from a host namespace this instance holds (the namespace sync marks it first).
    let held = host_namespaces
        .get(&ObjectRef::new(&place.namespace))
        .is_some_and(|ns| {
            marks::is_copy_of(&ctx.target.instance, ns.labels())
                && ns.metadata.deletion_timestamp.is_none()
        });
    let host = host_pods
        .get(&ObjectRef::new(&key.name).within(&place.namespace))
        .filter(|_| held);
    let virt: Api<Pod> = ctx.virtual_api(&key.namespace);
    match (host, virtual_pod) {
        (Some(host), None) if host.metadata.deletion_timestamp.is_none() => {
            mark(&ctx, &host).await?;
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
            mark(&ctx, &host).await?;
            if import::pod_metadata_differs(&host, &pod) {
                let (labels, annotations) = import::pod_metadata(&host);
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
            let bound = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
            if let (None, Some(node)) =
                (bound, host.spec.as_ref().and_then(|s| s.node_name.clone()))
            {
                // Imported before the host scheduled it. The status follows once the bound
                // pod comes back through the watch.
                crate::sync::pods::bind(&ctx, &virt, &key.name, node).await?;
                return Ok(Next::Done);
            }
            if let Some(status) = translate::virtual_status(&host, pod.status.as_ref()) {
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

/// Marks host pod `host` as imported by this instance (once), so the cleanup finds it to unmark.
async fn mark(ctx: &Ctx, host: &Pod) -> anyhow::Result<()> {
    let uid = &ctx.target.instance.uid;
    if host.labels().get(keys::IMPORTED_BY_UID) == Some(uid) {
        return Ok(());
    }
    let api: Api<Pod> = Api::namespaced(ctx.host.clone(), &host.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "metadata": {"uid": host.uid(), "labels": {keys::IMPORTED_BY_UID: uid}}
    });
    let params = PatchParams {
        field_manager: Some(SYNCER_FIELD_MANAGER.into()),
        ..Default::default()
    };
    match api
        .patch(&host.name_any(), &params, &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(err) if copy::is_status(&err, 404) || copy::is_status(&err, 409) => Ok(()),
        Err(err) => Err(err.into()),
    }
}
