//! Pure translations of virtual objects into their host copies (and of host state back), one
//! module per kind. Nothing here talks to an API server, so all of it is unit-tested.

pub mod config;
pub mod extra;
pub mod pod;
pub mod pvc;
pub mod service;

use std::collections::BTreeMap;

use kube::api::ObjectMeta;
use virtualcluster_crds::instance::InstanceRef;
use virtualcluster_crds::marks::{self, VirtualRef};
use virtualcluster_crds::naming;

/// Where the copies of one instance go on the host, and how they are named there.
#[derive(Debug, Clone)]
pub struct Target {
    pub instance: InstanceRef,
}

impl Target {
    /// The host namespace of copies: the instance's own (single-namespace mode).
    pub fn host_namespace(&self) -> &str {
        &self.instance.namespace
    }

    /// The host name of virtual object `name` in virtual namespace `namespace`.
    pub fn host_name(&self, namespace: &str, name: &str) -> String {
        naming::host_name(name, namespace, &self.instance.name)
    }

    /// The metadata of the host copy of the object with virtual metadata `meta`: the translated
    /// name, the instance's marks, and the virtual labels and annotations (without reserved
    /// keys).
    pub fn copy_meta(&self, meta: &ObjectMeta) -> ObjectMeta {
        let namespace = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        let of = VirtualRef {
            namespace: namespace.clone(),
            name: name.clone(),
            uid: meta.uid.clone().unwrap_or_default(),
        };
        let mut labels = marks::without_reserved(meta.labels.as_ref());
        labels.extend(marks::copy_labels(&self.instance, &namespace));
        let mut annotations = marks::without_reserved(meta.annotations.as_ref());
        // The client's record of its last apply is about the virtual object.
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
        annotations.extend(marks::copy_annotations(&of));
        ObjectMeta {
            name: Some(self.host_name(&namespace, &name)),
            namespace: Some(self.host_namespace().to_owned()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        }
    }

    /// A virtual label selector as it must read on the host: the same labels, narrowed to the
    /// copies of this instance from virtual namespace `namespace`, so it never selects another
    /// namespace's or instance's pods.
    pub fn host_selector(
        &self,
        namespace: &str,
        selector: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        let mut host = marks::without_reserved(Some(selector));
        host.insert(
            virtualcluster_crds::keys::SYNCED_BY_UID.into(),
            self.instance.uid.clone(),
        );
        host.insert(
            virtualcluster_crds::keys::OBJECT_NAMESPACE_LABEL.into(),
            namespace.into(),
        );
        host
    }
}

#[cfg(test)]
pub(crate) fn target() -> Target {
    Target {
        instance: InstanceRef {
            name: "vc".into(),
            namespace: "team-a".into(),
            uid: "instance-uid".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtualcluster_crds::keys;

    #[test]
    fn copies_are_renamed_marked_and_keep_user_labels() {
        let meta = ObjectMeta {
            name: Some("web".into()),
            namespace: Some("shop".into()),
            uid: Some("v-uid".into()),
            labels: Some(BTreeMap::from([
                ("app".into(), "web".into()),
                (keys::SYNCED_BY_UID.into(), "forged".into()),
            ])),
            ..Default::default()
        };
        let copy = target().copy_meta(&meta);
        assert_eq!(copy.name.as_deref(), Some("web-x-shop-x-vc"));
        assert_eq!(copy.namespace.as_deref(), Some("team-a"));
        let labels = copy.labels.unwrap();
        assert_eq!(labels["app"], "web");
        assert_eq!(labels[keys::SYNCED_BY_UID], "instance-uid");
        assert_eq!(labels[keys::OBJECT_NAMESPACE_LABEL], "shop");
        let annotations = copy.annotations.unwrap();
        assert_eq!(annotations[keys::VIRTUAL_UID], "v-uid");
        assert_eq!(annotations[keys::VIRTUAL_NAME], "web");
    }

    #[test]
    fn selectors_are_narrowed_to_the_virtual_namespace_and_instance() {
        let selector = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
        let host = target().host_selector("shop", &selector);
        assert_eq!(host.len(), 3);
        assert_eq!(host[keys::OBJECT_NAMESPACE_LABEL], "shop");
        assert_eq!(host[keys::SYNCED_BY_UID], "instance-uid");
    }
}
