//! The kinds synced only when turned on: to the host, Ingresses (their status flows back),
//! ServiceAccounts, NetworkPolicies, PodDisruptionBudgets and PriorityClasses; from the host,
//! StorageClasses and IngressClasses (copied as they are, so virtual claims and ingresses can
//! name them).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::api::networking::v1::{Ingress, IngressClass, NetworkPolicy};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::ObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use virtualcluster_crds::compare::holds;

use crate::context::{Ctx, Key};
use crate::copy;
use crate::patching;
use crate::queue::Next;
use crate::synced::Synced;
use crate::translate::extra;

/// Label (value `true`) on virtual objects copied from the host; the syncer deletes no other.
pub const FROM_HOST: &str = "virtualcluster.dev/from-host";

/// The plain sync of a namespaced opt-in kind.
async fn namespaced<K>(
    ctx: &Ctx,
    pair: &Synced<K>,
    key: &Key,
    translate: impl Fn(&K) -> K,
) -> anyhow::Result<Next>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug
        + crate::held::Held,
{
    if !ctx.synced(&key.namespace) {
        return Ok(Next::Done);
    }
    let object = pair.virtual_.get(&key.object_ref());
    let copy = ctx.host_copy(&pair.host, key);
    copy::sync(
        ctx,
        &pair.section(),
        &ctx.host_api(&key.namespace),
        object.as_deref(),
        copy.as_deref(),
        translate,
    )
    .await
}

pub async fn reconcile_ingress(ctx: Arc<Ctx>, key: Key) -> anyhow::Result<Next> {
    let Some(pair) = &ctx.opt_in.ingresses else {
        return Ok(Next::Done);
    };
    // Host names are first come, first served across the host; snippets are the platform's.
    let taken = |host: &str| ctx.host_name_taken(host);
    let snippets = ctx.config.policy.ingress_snippets;
    if let Some(ingress) = pair.virtual_.get(&key.object_ref()) {
        let left_out = extra::restrict_ingress(&mut (*ingress).clone(), snippets, &taken);
        if !left_out.is_empty() {
            let reason = if left_out.iter().any(|l| l.starts_with("rule")) {
                copy::HOST_NAME_CONFLICT
            } else {
                "SnippetsNotAllowed"
            };
            let note = format!("not copied to the host: {}", left_out.join("; "));
            copy::warn(&ctx, ingress.as_ref(), reason, note).await;
        }
    }
    let next = namespaced(&ctx, pair, &key, |i| {
        let mut host = extra::host_ingress(i, &ctx.target);
        extra::restrict_ingress(&mut host, snippets, &taken);
        host
    })
    .await?;
    if let (Some(ingress), Some(copy)) = (
        pair.virtual_.get(&key.object_ref()),
        ctx.host_copy(&pair.host, &key),
    ) && Ctx::copy_of_uid(copy.as_ref()) == ingress.uid().as_deref()
        && let Some(status) = extra::ingress_status(&copy, ingress.status.as_ref())
    {
        copy::write_virtual_status(
            &ctx.virtual_api::<Ingress>(&key.namespace),
            &key.name,
            &status,
        )
        .await?;
    }
    Ok(next)
}

pub async fn reconcile_service_account(ctx: Arc<Ctx>, key: Key) -> anyhow::Result<Next> {
    let Some(pair) = &ctx.opt_in.service_accounts else {
        return Ok(Next::Done);
    };
    namespaced(&ctx, pair, &key, |a| {
        extra::host_service_account(a, &ctx.target)
    })
    .await
}

pub async fn reconcile_network_policy(ctx: Arc<Ctx>, key: Key) -> anyhow::Result<Next> {
    let Some(pair) = &ctx.opt_in.network_policies else {
        return Ok(Next::Done);
    };
    let namespaces = ctx.opt_in.namespaces.clone();
    let matching = move |selector: &LabelSelector| -> Vec<String> {
        let mut names: Vec<String> = namespaces
            .iter()
            .flat_map(|s| s.state())
            .filter(|ns| selects(selector, ns.labels()))
            .map(|ns| ns.name_any())
            .collect();
        names.sort();
        names
    };
    namespaced(&ctx, pair, &key, |p: &NetworkPolicy| {
        extra::host_network_policy(p, &ctx.target, &matching)
    })
    .await
}

pub async fn reconcile_disruption_budget(ctx: Arc<Ctx>, key: Key) -> anyhow::Result<Next> {
    let Some(pair) = &ctx.opt_in.disruption_budgets else {
        return Ok(Next::Done);
    };
    namespaced(&ctx, pair, &key, |p| {
        extra::host_disruption_budget(p, &ctx.target)
    })
    .await
}

pub async fn reconcile_priority_class(ctx: Arc<Ctx>, key: Key) -> anyhow::Result<Next> {
    let Some(pair) = &ctx.opt_in.priority_classes else {
        return Ok(Next::Done);
    };
    let name = key.name;
    let class = pair.virtual_object(&Key::new("", &name));
    let copy = pair
        .host
        .get(&ObjectRef::new(&extra::priority_class_name(
            &ctx.target,
            &name,
        )))
        .filter(|c| c.annotations().get(virtualcluster_crds::keys::VIRTUAL_NAME) == Some(&name));
    copy::sync(
        &ctx,
        &pair.section(),
        &Api::all(ctx.host.clone()),
        class
            .as_deref()
            .filter(|_| !extra::is_system_priority_class(&name)),
        copy.as_deref(),
        |c| extra::host_priority_class(c, &ctx.target, ctx.config.policy.max_priority),
    )
    .await
}

/// A host object shown in the virtual cluster as it is, marked as copied from the host.
fn from_host<K>(host: &K) -> K
where
    K: Resource<DynamicType = ()> + Clone,
{
    let mut copy = host.clone();
    let labels = host.labels().clone();
    *copy.meta_mut() = ObjectMeta {
        name: host.meta().name.clone(),
        labels: Some(
            labels
                .into_iter()
                .chain([(FROM_HOST.into(), "true".into())])
                .collect(),
        ),
        annotations: host.meta().annotations.clone(),
        ..Default::default()
    };
    copy
}

async fn reconcile_from_host<K>(ctx: &Ctx, pair: &Synced<K>, name: &str) -> anyhow::Result<Next>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::all(ctx.virt.clone());
    let host = pair.host.get(&ObjectRef::new(name));
    let current = pair.virtual_.get(&ObjectRef::new(name));
    match (host, current) {
        // The virtual cluster's own object of that name stays as it is.
        (_, Some(current)) if !current.labels().contains_key(FROM_HOST) => {}
        (Some(host), current) => {
            let (desired, errors) = patching::apply_from_host(
                ctx,
                &pair.section(),
                host.as_ref(),
                current.as_deref(),
                from_host(host.as_ref()),
            );
            for err in errors {
                tracing::warn!(%err, object = name, "patch not applied");
            }
            let up_to_date = current
                .as_ref()
                .is_some_and(|c| holds(c.as_ref(), &desired));
            if !up_to_date {
                copy::apply(&api, &desired).await?;
            }
        }
        (None, Some(current)) => {
            copy::delete(&api, current.as_ref(), None).await?;
        }
        (None, None) => {}
    }
    Ok(Next::Done)
}

pub async fn reconcile_storage_class(ctx: Arc<Ctx>, key: Key) -> anyhow::Result<Next> {
    match &ctx.opt_in.storage_classes {
        Some(pair) => reconcile_from_host::<StorageClass>(&ctx, pair, &key.name).await,
        None => Ok(Next::Done),
    }
}

pub async fn reconcile_ingress_class(ctx: Arc<Ctx>, key: Key) -> anyhow::Result<Next> {
    match &ctx.opt_in.ingress_classes {
        Some(pair) => reconcile_from_host::<IngressClass>(&ctx, pair, &key.name).await,
        None => Ok(Next::Done),
    }
}

/// Whether `selector` selects an object with `labels`.
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_label = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expression = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    by_label && by_expression
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_match_labels_and_expressions() {
        let selector: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"team": "blue"},
            "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "stage"]},
                                 {"key": "legacy", "operator": "DoesNotExist"}]
        }))
        .unwrap();
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect()
        };
        assert!(selects(
            &selector,
            &labels(&[("team", "blue"), ("env", "prod")])
        ));
        assert!(!selects(
            &selector,
            &labels(&[("team", "blue"), ("env", "dev")])
        ));
        assert!(!selects(
            &selector,
            &labels(&[("team", "blue"), ("env", "prod"), ("legacy", "")])
        ));
        assert!(selects(&LabelSelector::default(), &labels(&[])));
    }
}
