//! The quota, limits and network policy `spec.policies` ask for, which hold the instance's
//! workloads on the host: made by the operator in the instance's own namespace (once its
//! control plane's pods are made) and in every host namespace it created (before the syncer's
//! rights there are bound), and removed when no longer asked for. The syncer has no
//! right to change quota or limits anywhere.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{LimitRange, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::Store;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use virtualcluster_crds::instance::Component;

use crate::apply;
use crate::build::Instance;
use crate::caches::{self, Meta};
use crate::cleanup::delete_precisely;
use crate::controller::Context;
use crate::error::Error;

/// Brings the isolation objects of the host namespaces in `created`, and of the instance's
/// namespace once its control plane's pods are made (`control_plane_up`: a LimitRange's
/// defaults must not reach them as they are made), to what `spec.policies` asks for.
pub async fn ensure(
    ctx: &Context,
    instance: &Instance<'_>,
    created: &[String],
    control_plane_up: bool,
) -> Result<(), Error> {
    let id = instance.id();
    let own = control_plane_up.then_some(id.namespace.as_str());
    let namespaces: Vec<&str> = own
        .into_iter()
        .chain(created.iter().map(String::as_str))
        .collect();
    let mut quotas = Vec::new();
    let mut limits = Vec::new();
    let mut policies = Vec::new();
    for namespace in &namespaces {
        let meta = ObjectMeta {
            labels: Some(id.labels(Component::Syncer)),
            // Owned where it can be (the instance's namespace); a created namespace goes with
            // the instance, and these with it.
            owner_references: (*namespace == id.namespace)
                .then(|| instance.vc.controller_owner_ref(&()).into_iter().collect()),
            ..Default::default()
        };
        let wanted = virtualcluster_crds::isolation::objects(
            id,
            &instance.vc.spec.policies,
            namespace,
            &meta,
        );
        quotas.extend(wanted.resource_quota);
        limits.extend(wanted.limit_range);
        policies.extend(wanted.network_policy);
    }
    let caches = &ctx.caches;
    // Not yet looked at: the instance's namespace before its control plane's pods are made.
    let skipped = (!control_plane_up).then_some(id.namespace.as_str());
    bring::<ResourceQuota>(ctx, id, quotas, &caches.resource_quotas, skipped).await?;
    bring::<LimitRange>(ctx, id, limits, &caches.limit_ranges, skipped).await?;
    bring::<NetworkPolicy>(ctx, id, policies, &caches.network_policies, skipped).await?;
    Ok(())
}

/// Applies each of `wanted` unless its cached copy shows it in place, and deletes the
/// instance's objects of this kind that are not wanted (by its labels, the very object read),
/// but for those in namespace `skipped`.
async fn bring<K>(
    ctx: &Context,
    id: &virtualcluster_crds::instance::InstanceRef,
    wanted: Vec<K>,
    store: &Store<Meta<K>>,
    skipped: Option<&str>,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let kind = K::kind(&()).to_string();
    let unwanted: Vec<Arc<Meta<K>>> = store
        .state()
        .into_iter()
        .filter(|live| id.owns(live.labels()))
        .filter(|live| live.metadata.namespace.as_deref() != skipped)
        .filter(|live| {
            !wanted.iter().any(|w| {
                w.meta().namespace == live.metadata.namespace && w.meta().name == live.metadata.name
            })
        })
        .collect();
    for object in wanted {
        let namespace = object.namespace().unwrap_or_default();
        let name = object.name_any();
        let live = caches::get(store, Some(&namespace), &name);
        apply::apply_verified(
            &Api::<K>::namespaced(ctx.client.clone(), &namespace),
            object,
            live.as_ref().map(|l| &l.metadata),
            &ctx.verified,
        )
        .await
        .map_err(Error::kube(format!("applying {kind} {namespace}/{name}")))?;
    }
    for object in unwanted {
        let api: Api<Meta<K>> =
            Api::namespaced(ctx.client.clone(), &object.namespace().unwrap_or_default());
        delete_precisely(&api, object.as_ref(), &kind).await?;
    }
    Ok(())
}
