//! Namespace syncing: each virtual namespace a mapping matches has a host namespace of its own.
//! The syncer creates it (marked as created by this instance) or, when it already exists and no
//! other instance has it, marks it as imported. Deleting the virtual namespace deletes the host
//! one only if this instance created it.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use virtualcluster_crds::keys::{self, SYNCER_FIELD_MANAGER};
use virtualcluster_crds::marks;

use crate::context::Ctx;
use crate::copy;
use crate::queue::Next;

/// The host namespace the instance creates for virtual namespace `virtual_name`.
pub fn created_namespace(
    ctx_instance: &virtualcluster_crds::instance::InstanceRef,
    host: &str,
    virtual_name: &str,
) -> Namespace {
    let mut labels = marks::instance_labels(ctx_instance);
    labels.insert(keys::NAMESPACE_ORIGIN.into(), keys::ORIGIN_CREATED.into());
    Namespace {
        metadata: ObjectMeta {
            name: Some(host.to_owned()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                keys::VIRTUAL_NAME.to_owned(),
                virtual_name.to_owned(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    }
}

pub async fn reconcile(ctx: Arc<Ctx>, name: String) -> anyhow::Result<Next> {
    let (Some(virtual_namespaces), Some(host_namespaces)) =
        (&ctx.namespaces.virtual_, &ctx.namespaces.host)
    else {
        return Ok(Next::Done);
    };
    let Some(place) = ctx.target.place(&name).filter(|p| p.keep_names) else {
        return Ok(Next::Done);
    };
    let api: Api<Namespace> = Api::all(ctx.host.clone());
    let wanted = virtual_namespaces
        .get(&ObjectRef::new(&name))
        .filter(|ns| ns.metadata.deletion_timestamp.is_none());
    let host = host_namespaces.get(&ObjectRef::new(&place.namespace));
    let instance = &ctx.target.instance;
    match (wanted, host) {
        (Some(_), None) => {
            let namespace = created_namespace(instance, &place.namespace, &name);
            match api.create(&copy::post_params(), &namespace).await {
                Ok(_) => {}
                Err(err) if copy::is_status(&err, 409) => {}
                Err(err) => return Err(err.into()),
            }
        }
        (Some(virtual_ns), Some(host)) => {
            let labels = host.labels();
            if marks::is_copy_of(instance, labels) {
                return Ok(Next::Done);
            }
            if let Some(other) = labels.get(keys::SYNCED_BY_UID) {
                let note = format!(
                    "host namespace {} belongs to another virtual cluster ({}/{}, UID {other}); \
                     nothing of namespace {name} is synced there",
                    place.namespace,
                    labels
                        .get(keys::SYNCED_BY_NAMESPACE)
                        .cloned()
                        .unwrap_or_default(),
                    labels.get(keys::SYNCED_BY).cloned().unwrap_or_default(),
                );
                publish(&ctx, virtual_ns.as_ref(), "HostNamespaceConflict", note).await;
                return Ok(Next::After(copy::CLASH_RECHECK));
            }
            // It was there before: imported, never deleted by this instance.
            let mut marks = marks::instance_labels(instance);
            marks.insert(keys::NAMESPACE_ORIGIN.into(), keys::ORIGIN_IMPORTED.into());
            let patch = serde_json::json!({"metadata": {"uid": host.uid(), "labels": marks}});
            let params = PatchParams {
                field_manager: Some(SYNCER_FIELD_MANAGER.into()),
                ..Default::default()
            };
            api.patch(&place.namespace, &params, &Patch::Merge(&patch))
                .await?;
        }
        (None, Some(host))
            if marks::is_copy_of(instance, host.labels())
                && host
                    .labels()
                    .get(keys::NAMESPACE_ORIGIN)
                    .map(String::as_str)
                    == Some(keys::ORIGIN_CREATED)
                && host.metadata.deletion_timestamp.is_none() =>
        {
            copy::delete(&api, host.as_ref(), None).await?;
        }
        (None, _) => {}
    }
    Ok(Next::Done)
}

async fn publish<K: Resource<DynamicType = ()>>(ctx: &Ctx, object: &K, reason: &str, note: String) {
    tracing::warn!("{note}");
    let event = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note),
        action: "Sync".into(),
        secondary: None,
    };
    if let Err(err) = ctx.recorder.publish(&event, &object.object_ref(&())).await {
        tracing::warn!(%err, "publishing an Event");
    }
}
