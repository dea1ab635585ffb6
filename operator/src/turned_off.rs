//! Kinds whose sync was turned off: their host copies go, and an Event says how many.
//!
//! The syncer's ConfigMap records ([`keys::SYNCED_KINDS`]) every kind whose copies the
//! instance may still have on the host: those it syncs, and those turned off whose copies are
//! not removed yet. A kind that drops out of the spec stays in the record until its copies are
//! gone, so an operator killed half-way removes them on its next reconcile. They are removed
//! once the syncer's Deployment runs only the new configuration: a syncer still syncing the
//! kind would make them again. Only objects carrying this instance's marks are deleted, each
//! the very object listed (UID precondition), as in the cleanup.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DeploymentStatus;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::events::EventType;
use virtualcluster_crds::VirtualCluster;
use virtualcluster_crds::instance::InstanceRef;
use virtualcluster_crds::keys;
use virtualcluster_crds::kinds::{self, Direction, Kind};
use virtualcluster_crds::policy::HostPolicy;
use virtualcluster_crds::v1alpha1::Sync;

use crate::caches::Lite;
use crate::cleanup::{delete_precisely, marked};
use crate::controller::{Context, publish};
use crate::error::Error;

/// Reason of the Event that says how many copies of a kind turned off were removed.
pub const COPIES_REMOVED: &str = "CopiesRemoved";
/// Reason of the Warning Event when the operator may not list or delete them.
pub const COPIES_KEPT: &str = "CopiesKept";

/// The kinds whose host copies an instance syncing `sync` makes (`custom`: its custom
/// resources as resolved).
pub fn copied(sync: &Sync, custom: &[Kind]) -> Vec<Kind> {
    kinds::enabled(sync)
        .into_iter()
        .chain(custom.iter().cloned())
        .filter(|k| k.direction == Direction::ToHost)
        .collect()
}

/// What the ConfigMap's annotation records, or `None` where it has none (made before the
/// record was kept: nothing is known to be turned off).
pub fn recorded(annotations: &BTreeMap<String, String>) -> Option<Vec<Kind>> {
    serde_json::from_str(annotations.get(keys::SYNCED_KINDS)?).ok()
}

/// The annotation's value for `kinds`.
pub fn record(kinds: &[Kind]) -> String {
    let mut kinds = kinds.to_vec();
    kinds.sort_by_key(Kind::resource);
    kinds.dedup_by_key(|k| k.resource());
    serde_json::to_string(&kinds).expect("kinds always serialize")
}

/// The kinds of `recorded` that `now` no longer has, of those the operator may act on (see
/// [`trusted`]).
pub fn turned_off(recorded: Option<Vec<Kind>>, now: &[Kind], policy: &HostPolicy) -> Vec<Kind> {
    recorded
        .into_iter()
        .flatten()
        .filter(|k| !now.iter().any(|n| n.resource() == k.resource()))
        .filter_map(|k| trusted(k, policy))
        .collect()
}

/// Recorded kind `kind` as the operator acts on it: a built-in kind synced to the host as its
/// own table has it, or a custom resource the platform allows to the host. The record sits on
/// a ConfigMap that whoever may write ConfigMaps in the namespace can edit: a kind it names
/// beyond those is ignored, so no edit makes the operator delete objects of another kind.
fn trusted(kind: Kind, policy: &HostPolicy) -> Option<Kind> {
    let resource = kind.resource();
    if let Some(built_in) = kinds::built_in()
        .into_iter()
        .map(|b| b.kind)
        .find(|b| b.resource() == resource)
    {
        return (built_in.direction == Direction::ToHost).then_some(built_in);
    }
    if policy.allows_custom_resource(&resource, Direction::ToHost) {
        return Some(Kind {
            direction: Direction::ToHost,
            ..kind
        });
    }
    tracing::warn!(%resource, "the record of synced kinds names a kind this operator does not sync: ignored");
    None
}

/// Whether every pod of the syncer's Deployment runs its current spec (`want` replicas): no
/// syncer of an older configuration is left.
pub fn syncer_rolled_out(deployment: Option<&Lite<DeploymentStatus>>, want: i32) -> bool {
    let Some(deployment) = deployment else {
        return false;
    };
    let status = deployment.status.clone().unwrap_or_default();
    status.observed_generation >= deployment.metadata.generation
        && status.updated_replicas.unwrap_or(0) >= want
        && status.replicas.unwrap_or(0) <= want
}

/// Deletes the host copies of each of `off` that carry the instance's marks, wherever they
/// are; one Event per kind that had any. A kind the operator may not list or delete (the
/// platform took back the right) is left with a Warning, not retried forever.
pub async fn remove(
    ctx: &Context,
    vc: &VirtualCluster,
    id: &InstanceRef,
    off: &[Kind],
) -> Result<(), Error> {
    for kind in off {
        let resource = kind.api_resource();
        let all = Api::<DynamicObject>::all_with(ctx.client.clone(), &resource);
        let copies = match marked(all, id, &kind.kind).await {
            Ok(copies) => copies,
            Err(err) if err.category() == "forbidden" => {
                let note = format!(
                    "the sync of {} was turned off, but the operator may not list them to \
                     remove the instance's host copies: {err}",
                    kind.resource()
                );
                publish(ctx, vc, EventType::Warning, COPIES_KEPT, &note).await;
                continue;
            }
            Err(err) => return Err(err),
        };
        let mut removed = 0;
        for copy in &copies {
            let api = match copy.namespace() {
                Some(ns) => {
                    Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &ns, &resource)
                }
                None => Api::<DynamicObject>::all_with(ctx.client.clone(), &resource),
            };
            if delete_precisely(&api, copy, &kind.kind).await? {
                removed += 1;
            }
        }
        if removed > 0 {
            let note = format!(
                "the sync of {} was turned off: removed {removed} host copies",
                kind.resource()
            );
            publish(ctx, vc, EventType::Normal, COPIES_REMOVED, &note).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync(value: serde_json::Value) -> Sync {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_kind_stays_recorded_until_its_copies_go() {
        let before = copied(
            &sync(serde_json::json!({"toHost": {"ingresses": {"enabled": true}}})),
            &[],
        );
        assert!(
            before
                .iter()
                .any(|k| k.resource() == "ingresses.networking.k8s.io")
        );
        let now = copied(&sync(serde_json::json!({})), &[]);
        let record_then = record(&before);
        let off = turned_off(
            recorded(&BTreeMap::from([(
                keys::SYNCED_KINDS.to_owned(),
                record_then,
            )])),
            &now,
            &HostPolicy::default(),
        );
        assert_eq!(
            off.iter().map(Kind::resource).collect::<Vec<_>>(),
            ["ingresses.networking.k8s.io"]
        );
        // Without a record nothing is known to be turned off.
        assert!(turned_off(recorded(&BTreeMap::new()), &now, &HostPolicy::default()).is_empty());
        // Kinds shown from the host have no copies to remove.
        let shown = copied(
            &sync(serde_json::json!({"fromHost": {"storageClasses": {"enabled": true}}})),
            &[],
        );
        assert!(!shown.iter().any(|k| k.direction == Direction::FromHost));
    }

    #[test]
    fn a_forged_record_names_no_kind_the_operator_does_not_sync() {
        let forged = serde_json::json!([
            {"group": "rbac.authorization.k8s.io", "version": "v1", "kind": "RoleBinding",
             "plural": "rolebindings", "namespaced": true, "direction": "ToHost",
             "section": "x"},
            {"group": "networking.k8s.io", "version": "v1", "kind": "IngressClass",
             "plural": "ingressclasses", "namespaced": false, "direction": "ToHost",
             "section": "x"},
            {"group": "example.com", "version": "v1", "kind": "Widget",
             "plural": "widgets", "namespaced": true, "direction": "ToHost", "section": "x"},
        ]);
        let record = BTreeMap::from([(keys::SYNCED_KINDS.to_owned(), forged.to_string())]);
        let mut policy = HostPolicy::default();
        // Neither RoleBindings (not in the table) nor IngressClasses (shown from the host)
        // are copies; Widgets only once the platform allows them.
        assert!(turned_off(recorded(&record), &[], &policy).is_empty());
        policy.custom_resources_to_host = vec!["widgets.example.com".into()];
        let off = turned_off(recorded(&record), &[], &policy);
        assert_eq!(
            off.iter().map(Kind::resource).collect::<Vec<_>>(),
            ["widgets.example.com"]
        );
    }

    #[test]
    fn the_record_is_the_same_whatever_the_order() {
        let kinds = copied(
            &sync(serde_json::json!({"toHost": {"ingresses": {"enabled": true}}})),
            &[],
        );
        let mut reversed = kinds.clone();
        reversed.reverse();
        assert_eq!(record(&kinds), record(&reversed));
    }
}
