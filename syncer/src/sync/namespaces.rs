//! Namespace syncing: each virtual namespace a mapping matches has a host namespace of its own.
//! The syncer creates it (marked as created by this instance) or, when it already exists and no
//! other instance has it, marks it as imported. Deleting the virtual namespace deletes the host
//! one only if this instance created it.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, Patch};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use virtualcluster_crds::v1alpha1::PodSecurityStandard;
use virtualcluster_crds::{keys, marks, policy};

use crate::context::Ctx;
use crate::copy;
use crate::queue::Next;
use crate::translate::import;

/// The host namespace the instance creates for virtual namespace `virtual_name`: held by the
/// host's PodSecurity admission to the instance's level.
pub fn created_namespace(
    ctx_instance: &virtualcluster_crds::instance::InstanceRef,
    level: PodSecurityStandard,
    host: &str,
    virtual_name: &str,
) -> Namespace {
    let mut labels = marks::instance_labels(ctx_instance);
    labels.insert(keys::NAMESPACE_ORIGIN.into(), keys::ORIGIN_CREATED.into());
    labels.extend(policy::pod_security_labels(level));
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
    let virtual_ns = virtual_namespaces.get(&ObjectRef::new(&name));
    let wanted = virtual_ns
        .clone()
        .filter(|ns| ns.metadata.deletion_timestamp.is_none());
    let host = host_namespaces.get(&ObjectRef::new(&place.namespace));
    let instance = &ctx.target.instance;
    let origin = |ns: &Namespace| {
        marks::is_copy_of(instance, ns.labels())
            .then(|| ns.labels().get(keys::NAMESPACE_ORIGIN).cloned())
            .flatten()
    };
    match (wanted, host) {
        (Some(virtual_ns), None) if marks::is_imported(virtual_ns.annotations()) => {
            // The host namespace it stood for is gone, and with it what was imported.
            copy::delete(
                &Api::<Namespace>::all(ctx.virt.clone()),
                virtual_ns.as_ref(),
                None,
            )
            .await?;
        }
        (Some(virtual_ns), None) => {
            let created = host_namespaces
                .state()
                .iter()
                .filter(|ns| origin(ns).as_deref() == Some(keys::ORIGIN_CREATED))
                .count();
            let limit = ctx.config.policy.max_host_namespaces;
            if created >= limit as usize {
                let note = format!(
                    "the virtual cluster has created {created} host namespaces, the most the \
                     platform allows; host namespace {} is not created and nothing of \
                     namespace {name} is synced",
                    place.namespace
                );
                copy::warn(&ctx, virtual_ns.as_ref(), "HostNamespaceLimit", note).await;
                return Ok(Next::After(copy::CLASH_RECHECK));
            }
            let level = ctx.config.policy.pod_security;
            let namespace = created_namespace(instance, level, &place.namespace, &name);
            match api.create(&copy::post_params(), &namespace).await {
                Ok(_) => {}
                Err(err) if copy::is_status(&err, 409) => {}
                Err(err) => return Err(err.into()),
            }
        }
        (Some(_), Some(host)) if origin(&host).as_deref() == Some(keys::ORIGIN_CREATED) => {
            // Held to the level the instance has now (it may have changed, or a hand edit
            // loosened it).
            let wanted = policy::pod_security_labels(ctx.config.policy.pod_security);
            if wanted.iter().any(|(k, v)| host.labels().get(k) != Some(v)) {
                let patch = serde_json::json!({"metadata": {"uid": host.uid(), "labels": wanted}});
                api.patch(
                    &host.name_any(),
                    &copy::merge_params(),
                    &Patch::Merge(&patch),
                )
                .await?;
            }
        }
        (Some(_), Some(host)) if origin(&host).is_some() => {}
        (Some(virtual_ns), Some(host)) => {
            if let Some(note) = reserved(&ctx, &host, &name) {
                // Looked at again when the VirtualCluster stream changes.
                copy::warn(&ctx, virtual_ns.as_ref(), "HostNamespaceReserved", note).await;
                return Ok(Next::Done);
            }
            if let Some(note) = held_by_another(&host, &name) {
                copy::warn(&ctx, virtual_ns.as_ref(), "HostNamespaceConflict", note).await;
                return Ok(Next::After(copy::CLASH_RECHECK));
            }
            // It was there before: imported, never deleted by this instance.
            import(&ctx, &host).await?;
        }
        (None, Some(host)) if host.metadata.deletion_timestamp.is_some() => {}
        (None, Some(host)) => match origin(&host).as_deref() {
            Some(keys::ORIGIN_CREATED) => {
                copy::delete(&api, host.as_ref(), None).await?;
            }
            // Held by another instance: its name shows in the host namespace's labels, and
            // the operator refuses mappings that could claim another's namespaces.
            None if held_by_another(&host, &name).is_some() => {}
            // Never claimed: the VirtualCluster stream looks again when it changes.
            _ if reserved(&ctx, &host, &name).is_some() => {}
            // A host namespace a host-side mapping claims: it appears in the virtual cluster.
            _ => {
                if origin(&host).is_none() {
                    import(&ctx, &host).await?;
                }
                if virtual_ns.is_none() {
                    let virtual_ns = import::namespace(&place.namespace, &name);
                    match Api::<Namespace>::all(ctx.virt.clone())
                        .create(&copy::post_params(), &virtual_ns)
                        .await
                    {
                        Ok(_) => {}
                        Err(err) if copy::is_status(&err, 409) => {}
                        Err(err) => return Err(err.into()),
                    }
                }
            }
        },
        (None, None) => {}
    }
    Ok(Next::Done)
}

/// Why host namespace `host` may not be claimed for virtual namespace `name`: it holds a
/// VirtualCluster (whatever the mappings say; it may have come to hold one after the instance
/// was made).
fn reserved(ctx: &Ctx, host: &Namespace, name: &str) -> Option<String> {
    let host = host.name_any();
    ctx.namespaces.holds_instance(&host).then(|| {
        format!(
            "host namespace {host} holds a VirtualCluster, and no instance may claim such a \
             namespace; nothing of namespace {name} is synced there"
        )
    })
}

/// Why host namespace `host` cannot be used for virtual namespace `name`: another instance's
/// marks are on it.
fn held_by_another(host: &Namespace, name: &str) -> Option<String> {
    let holder = marks::holder(host.labels())?;
    Some(format!(
        "host namespace {} is held by {holder}; nothing of namespace {name} is synced there",
        host.name_any()
    ))
}

/// Marks host namespace `host` as imported by this instance (never to be deleted by it).
async fn import(ctx: &Ctx, host: &Namespace) -> anyhow::Result<()> {
    let mut labels = marks::instance_labels(&ctx.target.instance);
    labels.insert(keys::NAMESPACE_ORIGIN.into(), keys::ORIGIN_IMPORTED.into());
    let patch = serde_json::json!({"metadata": {"uid": host.uid(), "labels": labels}});
    Api::<Namespace>::all(ctx.host.clone())
        .patch(
            &host.name_any(),
            &copy::merge_params(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}
