//! The syncer's rights in the host namespaces its instance holds (with namespace syncing): one
//! RoleBinding per namespace, to the fixed ClusterRole [`virtualcluster_crds::syncer_access::held_role`],
//! made while the namespace is held and removed when it is released. A namespace counts as held only if its marks name this instance and the
//! instance may hold it: its mappings claim it, no rule reserves it and it holds no
//! VirtualCluster. Marks are what the syncer writes; this check is what the rights follow.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use virtualcluster_crds::instance::{Component, InstanceRef};
use virtualcluster_crds::syncer_access::BINDING_LABEL;
use virtualcluster_crds::{keys, mapping, marks};

use crate::caches::Meta;
use crate::cleanup::delete_precisely;
use crate::controller::Context;
use crate::error::Error;
use crate::settings::Settings;
use crate::validate::Valid;

/// The host namespaces the instance holds and may hold, each with whether it created it.
pub fn wanted<'a>(
    valid: &Valid,
    settings: &Settings,
    namespaces: impl IntoIterator<Item = &'a Meta<Namespace>>,
    holds_instance: impl Fn(&str) -> bool,
) -> BTreeMap<String, bool> {
    let id = &valid.instance;
    namespaces
        .into_iter()
        .filter_map(|ns| {
            let name = ns.metadata.name.as_deref()?;
            let labels = ns.metadata.labels.as_ref()?;
            let may_hold = marks::is_copy_of(id, labels)
                && name != id.namespace
                && valid.mapper.claims_host(name)
                && !mapping::is_reserved_host(name)
                && !settings.reserved_namespaces.iter().any(|r| r == name)
                && !holds_instance(name);
            let created = labels.get(keys::NAMESPACE_ORIGIN).map(String::as_str)
                == Some(keys::ORIGIN_CREATED);
            may_hold.then(|| (name.to_owned(), created))
        })
        .collect()
}

/// The RoleBinding giving the instance's syncer `held_role` in host namespace `namespace`.
/// Not owned (an owner must be in the same namespace): its labels name the instance, and the
/// cleanup finds it by them.
pub fn binding(id: &InstanceRef, namespace: &str, held_role: &str) -> RoleBinding {
    let mut labels = id.labels(Component::Syncer);
    labels.insert(BINDING_LABEL.into(), HELD.into());
    RoleBinding {
        metadata: ObjectMeta {
            name: Some(id.syncer_cluster_role()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: held_role.to_owned(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: id.syncer(),
            namespace: Some(id.namespace.clone()),
            ..Default::default()
        }]),
    }
}

/// Value of [`BINDING_LABEL`].
const HELD: &str = "held";

/// Brings the instance's held-namespace RoleBindings to the namespaces of `wanted`: makes the
/// missing, removes those of namespaces no longer held. Writes nothing when the cache shows
/// them in place. A binding of that name the instance did not make is left alone, and the
/// syncer gets no rights there.
pub async fn ensure(
    ctx: &Context,
    id: &InstanceRef,
    wanted: &BTreeMap<String, bool>,
) -> Result<(), Error> {
    let live: Vec<Arc<Meta<RoleBinding>>> = ctx
        .caches
        .held_bindings
        .state()
        .into_iter()
        .filter(|b| id.owns(b.labels()))
        .collect();
    for binding in &live {
        let namespace = binding.namespace().unwrap_or_default();
        if !wanted.contains_key(&namespace) || binding.name_any() != id.syncer_cluster_role() {
            let api: Api<Meta<RoleBinding>> = Api::namespaced(ctx.client.clone(), &namespace);
            delete_precisely(&api, binding.as_ref(), "RoleBinding").await?;
        }
    }
    for namespace in wanted.keys() {
        let bound = live.iter().any(|b| {
            b.namespace().as_deref() == Some(namespace.as_str())
                && b.name_any() == id.syncer_cluster_role()
        });
        if bound {
            continue;
        }
        let api: Api<RoleBinding> = Api::namespaced(ctx.client.clone(), namespace);
        match api
            .create(
                &PostParams::default(),
                &binding(id, namespace, &ctx.settings.syncer_role),
            )
            .await
        {
            Ok(_) => {}
            // Ours, not in the cache yet; another's is never taken over.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                tracing::debug!(%namespace, "syncer RoleBinding exists");
            }
            Err(err) => {
                return Err(Error::kube(format!(
                    "binding the syncer's role in host namespace {namespace}"
                ))(err));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures;
    use virtualcluster_crds::mapping::by_name;

    fn namespace(name: &str, labels: BTreeMap<String, String>) -> Meta<Namespace> {
        let mut ns: Meta<Namespace> = kube::core::PartialObjectMeta {
            types: None,
            metadata: ObjectMeta::default(),
            _phantom: Default::default(),
        };
        ns.metadata.name = Some(name.into());
        ns.metadata.labels = Some(labels);
        ns
    }

    #[test]
    fn rights_follow_only_namespaces_the_instance_may_hold() {
        let vc = fixtures::vc(|vc| {
            let ns = &mut vc.spec.sync.to_host.namespaces;
            ns.enabled = true;
            ns.mappings.by_name = by_name([("a-*", "h-a-*"), ("p", "platform")]);
        });
        let valid = fixtures::valid(&vc);
        let settings = Settings {
            reserved_namespaces: vec!["platform".into()],
            ..Settings::default()
        };
        let id = &valid.instance;
        let origin = |o: &str| {
            let mut labels = marks::instance_labels(id);
            labels.insert(keys::NAMESPACE_ORIGIN.into(), o.into());
            labels
        };
        let mut another = origin(keys::ORIGIN_CREATED);
        another.insert(keys::SYNCED_BY_UID.into(), "someone-else".into());
        let namespaces = [
            namespace("h-a-made", origin(keys::ORIGIN_CREATED)),
            namespace("h-a-found", origin(keys::ORIGIN_IMPORTED)),
            // Marked, but no mapping claims it (marks alone grant nothing).
            namespace("elsewhere", origin(keys::ORIGIN_IMPORTED)),
            // Claimed, but reserved by the platform.
            namespace("platform", origin(keys::ORIGIN_IMPORTED)),
            // Claimed, but holds a VirtualCluster.
            namespace("h-a-vc", origin(keys::ORIGIN_IMPORTED)),
            // Another instance's.
            namespace("h-a-theirs", another),
            namespace("h-a-plain", BTreeMap::new()),
        ];
        let wanted = wanted(&valid, &settings, &namespaces, |ns| ns == "h-a-vc");
        assert_eq!(
            wanted,
            BTreeMap::from([
                ("h-a-found".to_owned(), false),
                ("h-a-made".to_owned(), true),
            ])
        );
        let b = binding(id, "h-a-made", "rel-syncer");
        assert_eq!(b.role_ref.name, "rel-syncer");
        assert_eq!(b.subjects.unwrap()[0].name, id.syncer());
        assert!(id.owns(b.metadata.labels.as_ref().unwrap()));
    }
}
