//! The marks a syncer puts on the host copies it makes, and how they are read back. The syncer
//! changes or deletes a host object only when these marks say it is its instance's copy; the
//! operator's cleanup reads the same marks.

use std::collections::BTreeMap;

use crate::instance::InstanceRef;
use crate::keys;

/// The virtual object a host copy was made from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VirtualRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// Labels of every host copy `instance` makes of an object in virtual namespace `namespace`.
pub fn copy_labels(instance: &InstanceRef, namespace: &str) -> BTreeMap<String, String> {
    let mut labels = instance_labels(instance);
    labels.insert(keys::OBJECT_NAMESPACE_LABEL.into(), namespace.into());
    labels
}

/// Labels naming `instance` on a host copy (the part of [`copy_labels`] that cluster-scoped
/// copies, which have no virtual namespace, carry too).
pub fn instance_labels(instance: &InstanceRef) -> BTreeMap<String, String> {
    BTreeMap::from([
        (keys::SYNCED_BY.into(), instance.name.clone()),
        (keys::SYNCED_BY_NAMESPACE.into(), instance.namespace.clone()),
        (keys::SYNCED_BY_UID.into(), instance.uid.clone()),
    ])
}

/// Annotations naming the virtual object on its host copy.
pub fn copy_annotations(of: &VirtualRef) -> BTreeMap<String, String> {
    BTreeMap::from([
        (keys::VIRTUAL_NAMESPACE.into(), of.namespace.clone()),
        (keys::VIRTUAL_NAME.into(), of.name.clone()),
        (keys::VIRTUAL_UID.into(), of.uid.clone()),
    ])
}

/// Label selector of every host copy `instance` made.
pub fn copies_selector(instance: &InstanceRef) -> String {
    format!("{}={}", keys::SYNCED_BY_UID, instance.uid)
}

/// Label selector of every host object `instance` imported (marked, never deleted).
pub fn imported_selector(instance: &InstanceRef) -> String {
    format!("{}={}", keys::IMPORTED_BY_UID, instance.uid)
}

/// Label selector of host objects no instance made: the candidates for import.
pub fn not_copies_selector() -> String {
    format!("!{}", keys::SYNCED_BY_UID)
}

/// Whether virtual object metadata `annotations` say it stands for a host object.
pub fn is_imported(annotations: &BTreeMap<String, String>) -> bool {
    annotations.contains_key(keys::IMPORTED_FROM)
}

/// Whether `labels` mark a host object as a copy `instance` made: name, namespace and UID.
pub fn is_copy_of(instance: &InstanceRef, labels: &BTreeMap<String, String>) -> bool {
    labels.get(keys::SYNCED_BY) == Some(&instance.name)
        && labels.get(keys::SYNCED_BY_NAMESPACE) == Some(&instance.namespace)
        && labels.get(keys::SYNCED_BY_UID) == Some(&instance.uid)
}

/// The instance whose marks `labels` carry, as messages name it: `VirtualCluster ns/name (UID
/// uid)`; `None` without marks.
pub fn holder(labels: &BTreeMap<String, String>) -> Option<String> {
    let label = |key: &str| labels.get(key).map(String::as_str).unwrap_or_default();
    let uid = labels.get(keys::SYNCED_BY_UID)?;
    Some(format!(
        "VirtualCluster {}/{} (UID {uid})",
        label(keys::SYNCED_BY_NAMESPACE),
        label(keys::SYNCED_BY)
    ))
}

/// The virtual object a host copy names in its annotations.
pub fn virtual_ref(annotations: &BTreeMap<String, String>) -> Option<VirtualRef> {
    Some(VirtualRef {
        namespace: annotations.get(keys::VIRTUAL_NAMESPACE)?.clone(),
        name: annotations.get(keys::VIRTUAL_NAME)?.clone(),
        uid: annotations.get(keys::VIRTUAL_UID)?.clone(),
    })
}

/// `map` without the project's keys, which only the project may set.
pub fn without_reserved(map: Option<&BTreeMap<String, String>>) -> BTreeMap<String, String> {
    map.into_iter()
        .flatten()
        .filter(|(k, _)| !k.starts_with(keys::RESERVED_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(uid: &str) -> InstanceRef {
        InstanceRef {
            name: "vc".into(),
            namespace: "team".into(),
            uid: uid.into(),
        }
    }

    #[test]
    fn copies_are_recognised_by_name_namespace_and_uid() {
        let labels = copy_labels(&instance("u1"), "default");
        assert!(is_copy_of(&instance("u1"), &labels));
        assert!(!is_copy_of(&instance("u2"), &labels));
        let (k, v) = copies_selector(&instance("u1"))
            .split_once('=')
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .unwrap();
        assert_eq!(labels.get(&k), Some(&v));
        // No synced workload carries the label the operator's own selectors use.
        assert!(!labels.contains_key(keys::INSTANCE_NAME));
    }

    #[test]
    fn the_holder_is_named_by_its_marks() {
        assert_eq!(
            holder(&instance_labels(&instance("u1"))).as_deref(),
            Some("VirtualCluster team/vc (UID u1)")
        );
        assert_eq!(holder(&BTreeMap::new()), None);
    }

    #[test]
    fn tenants_cannot_forge_marks() {
        let forged = BTreeMap::from([
            (keys::SYNCED_BY_UID.to_owned(), "u1".to_owned()),
            (keys::INSTANCE_NAME.to_owned(), "vc".to_owned()),
            ("app".to_owned(), "web".to_owned()),
        ]);
        assert_eq!(
            without_reserved(Some(&forged)),
            BTreeMap::from([("app".to_owned(), "web".to_owned())])
        );
    }

    #[test]
    fn the_virtual_object_is_read_back() {
        let of = VirtualRef {
            namespace: "ns".into(),
            name: "web".into(),
            uid: "v1".into(),
        };
        assert_eq!(virtual_ref(&copy_annotations(&of)), Some(of));
        assert_eq!(virtual_ref(&BTreeMap::new()), None);
    }
}
