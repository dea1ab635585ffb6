//! Pure translations of virtual objects into their host copies (and of host state back), one
//! module per kind. Nothing here talks to an API server, so all of it is unit-tested.

pub mod config;
pub mod extra;
pub mod import;
pub mod pod;
pub mod pvc;
pub mod service;

use std::collections::BTreeMap;

use kube::api::ObjectMeta;
use virtualcluster_crds::dns;
use virtualcluster_crds::instance::InstanceRef;
use virtualcluster_crds::mapping::{NamespaceMapper, SYSTEM_VIRTUAL_NAMESPACES};
use virtualcluster_crds::marks::{self, VirtualRef};
use virtualcluster_crds::naming;

/// The ConfigMap every namespace has with the cluster's CA bundle.
pub(crate) const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";

/// Where the copies of one instance go on the host, and how they are named there.
#[derive(Debug, Clone)]
pub struct Target {
    pub instance: InstanceRef,
    /// Namespace syncing's mappings (none without it).
    pub mapper: NamespaceMapper,
    /// Virtual namespaces no mapping matches are not synced (system namespaces still are).
    pub mappings_only: bool,
}

/// Where the copies of a virtual namespace's objects go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub namespace: String,
    /// In a mapped namespace objects keep their names; in the instance's own they are renamed.
    pub keep_names: bool,
}

impl Target {
    /// Where the copies of the instance `config` describes go.
    pub fn of(config: &virtualcluster_crds::instance::SyncerConfig) -> anyhow::Result<Self> {
        let instance = config.instance.clone();
        let namespaces = &config.sync.to_host.namespaces;
        let mapper = virtualcluster_crds::mapping::validate(
            namespaces,
            virtualcluster_crds::mapping::Instance {
                name: &instance.name,
                namespace: &instance.namespace,
            },
        )
        .map_err(|v| anyhow::anyhow!("namespace mappings: {v}"))?;
        Ok(Target {
            instance,
            mapper,
            mappings_only: namespaces.mappings_only,
        })
    }

    /// Where copies of objects in virtual namespace `namespace` go: the host namespace a
    /// mapping gives (names kept), else the instance's own (names translated); `None` when they
    /// are not synced at all (`mappingsOnly`, or a mapped name too long for a namespace).
    pub fn place(&self, namespace: &str) -> Option<Placement> {
        match self.mapper.host_for(namespace) {
            Some(host) if dns::is_label(&host) => Some(Placement {
                namespace: host,
                keep_names: true,
            }),
            Some(_) => None,
            None if self.mappings_only && !SYSTEM_VIRTUAL_NAMESPACES.contains(&namespace) => None,
            None => Some(Placement {
                namespace: self.instance.namespace.clone(),
                keep_names: false,
            }),
        }
    }

    /// The virtual namespace host namespace `host` is imported as: the one a host-side mapping
    /// gives, if that virtual namespace maps back to `host` (an exact mapping of the same
    /// virtual name wins over a pattern).
    pub fn imported_as(&self, host: &str) -> Option<String> {
        self.mapper.virtual_for(host).filter(|virtual_ns| {
            self.place(virtual_ns)
                .is_some_and(|p| p.keep_names && p.namespace == host)
        })
    }

    /// The host namespace of copies from virtual namespace `namespace` (the instance's own when
    /// they are not synced; nothing is written there for them).
    pub fn host_namespace(&self, namespace: &str) -> String {
        self.place(namespace)
            .map(|p| p.namespace)
            .unwrap_or_else(|| self.instance.namespace.clone())
    }

    /// The host name of virtual object `name` in virtual namespace `namespace`. In a mapped
    /// namespace names are kept, except the virtual CA bundle's: the host publishes its own
    /// `kube-root-ca.crt` in every namespace.
    pub fn host_name(&self, namespace: &str, name: &str) -> String {
        match self.place(namespace) {
            Some(p) if p.keep_names && name == ROOT_CA_CONFIG_MAP => {
                format!("virtualcluster-{ROOT_CA_CONFIG_MAP}")
            }
            Some(p) if p.keep_names => name.to_owned(),
            _ => naming::host_name(name, namespace, &self.instance.name),
        }
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
            namespace: Some(self.host_namespace(&namespace)),
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
        mapper: NamespaceMapper::default(),
        mappings_only: false,
    }
}

#[cfg(test)]
pub(crate) fn mapped_target(mappings_only: bool) -> Target {
    use virtualcluster_crds::mapping::{self, Instance, by_name};
    use virtualcluster_crds::v1alpha1::NamespaceSync;
    let config = NamespaceSync {
        enabled: true,
        mappings_only,
        mappings: virtualcluster_crds::v1alpha1::NamespaceMappings {
            by_name: by_name([
                ("frontend-prod", "customer-project-alpha-prod"),
                ("team-a-*", "h-team-a-*"),
                ("datasets-*", "${name}-data-*"),
            ]),
        },
    };
    let mapper = mapping::validate(
        &config,
        Instance {
            name: "mapping-demo",
            namespace: "vcluster-mapping-demo",
        },
    )
    .unwrap();
    Target {
        instance: InstanceRef {
            name: "mapping-demo".into(),
            namespace: "vcluster-mapping-demo".into(),
            uid: "instance-uid".into(),
        },
        mapper,
        mappings_only,
    }
}

/// `text` (a message of the host about a host copy) in the virtual cluster's names: the host
/// name of object `host.1` in namespace `host.0` becomes the virtual `virt.1`, the namespace
/// `virt.0`, each where it stands as a whole name (not inside a longer one).
pub fn in_virtual_names(text: &str, host: (&str, &str), virt: (&str, &str)) -> String {
    let text = replace_names(text, host.1, virt.1);
    match host.0 == virt.0 {
        true => text,
        false => replace_names(&text, host.0, virt.0),
    }
}

/// `text` with every occurrence of `name` that stands as a whole name replaced by `with`: not
/// next to a letter, digit or `-`, nor to a `.` that joins it to more of a name (a `.` that
/// ends a sentence does not).
fn replace_names(text: &str, name: &str, with: &str) -> String {
    if name.is_empty() {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(name) {
        out.push_str(&rest[..at]);
        // What stands before is what is written already (a replacement included).
        let joined =
            joins_a_name(out.chars().rev()) || joins_a_name(rest[at + name.len()..].chars());
        out.push_str(if joined { name } else { with });
        rest = &rest[at + name.len()..];
    }
    out.push_str(rest);
    out
}

/// Whether `next`, the characters going away from a name, continue it.
fn joins_a_name(mut next: impl Iterator<Item = char>) -> bool {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '-';
    match next.next() {
        Some('.') => next.next().is_some_and(is_name),
        Some(c) => is_name(c),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_names_become_virtual_where_they_stand_alone() {
        assert_eq!(
            super::in_virtual_names(
                "pods \"web-x-shop-x-vc\" in team-a (team-a-2 is another)",
                ("team-a", "web-x-shop-x-vc"),
                ("shop", "web"),
            ),
            "pods \"web\" in shop (team-a-2 is another)"
        );
        // At the end of a sentence, and twice in a row.
        assert_eq!(
            super::in_virtual_names(
                "no pod web-x-shop-x-vc.",
                ("team-a", "web-x-shop-x-vc"),
                ("shop", "web"),
            ),
            "no pod web."
        );
        assert_eq!(
            super::in_virtual_names("team-a/team-a", ("team-a", "p"), ("shop", "q")),
            "shop/shop"
        );
        // Part of a longer dotted name, it stays.
        assert_eq!(
            super::in_virtual_names("p.team-a.svc", ("team-a", "p"), ("shop", "q")),
            "p.team-a.svc"
        );
    }

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
    fn mapped_namespaces_keep_names_and_others_are_renamed_as_documented() {
        let target = mapped_target(false);
        let place = |ns: &str| target.place(ns).unwrap();
        assert_eq!(place("team-a-ns1").namespace, "h-team-a-ns1");
        assert_eq!(
            place("frontend-prod").namespace,
            "customer-project-alpha-prod"
        );
        assert_eq!(place("datasets-raw").namespace, "mapping-demo-data-raw");
        assert_eq!(
            target.host_name("team-a-ns1", "nginx-from-team-a"),
            "nginx-from-team-a"
        );
        assert_eq!(
            target.host_name("team-a-ns1", "kube-root-ca.crt"),
            "virtualcluster-kube-root-ca.crt"
        );
        let other = place("some-other-namespace");
        assert_eq!(
            (other.namespace.as_str(), other.keep_names),
            ("vcluster-mapping-demo", false)
        );
        assert_eq!(
            target.host_name("some-other-namespace", "nginx-from-other-namespace"),
            naming::host_name(
                "nginx-from-other-namespace",
                "some-other-namespace",
                "mapping-demo"
            )
        );
        let meta = ObjectMeta {
            name: Some("web".into()),
            namespace: Some("team-a-ns1".into()),
            ..Default::default()
        };
        let copy = target.copy_meta(&meta);
        assert_eq!(
            (copy.namespace.as_deref(), copy.name.as_deref()),
            (Some("h-team-a-ns1"), Some("web"))
        );

        let strict = mapped_target(true);
        assert_eq!(strict.place("some-other-namespace"), None);
        assert_eq!(
            strict.place("kube-system").unwrap().namespace,
            "vcluster-mapping-demo"
        );
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
