//! The kinds the syncer syncs, declared once: what they are on the API (group, version, kind,
//! plural, scope), which way they go, whether they are on without being asked, and what the
//! syncer needs on the host for them. The operator's RBAC rules and cleanup lists and the
//! syncer's queues follow from this table; a custom resource joins it at run time as a
//! [`Kind`] made from its CRD ([`Kind::custom`]).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::v1alpha1::{CustomResourceScope, Sync};

/// Which way objects of a kind go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// Made in the virtual cluster, copied to the host.
    ToHost,
    /// Made on the host, shown in the virtual cluster.
    FromHost,
}

/// A synced kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Kind {
    /// The API group, empty for the core group.
    pub group: Cow<'static, str>,
    pub version: Cow<'static, str>,
    pub kind: Cow<'static, str>,
    pub plural: Cow<'static, str>,
    pub namespaced: bool,
    pub direction: Direction,
    /// The key under `spec.sync.toHost` / `fromHost` that turns it on and holds its patches
    /// (`ingresses`, `customResources["certificates.cert-manager.io"]`).
    pub section: Cow<'static, str>,
}

const READ: &[&str] = crate::syncer_access::READ;
const WRITE: &[&str] = crate::syncer_access::WRITE;

/// A built-in kind: its entry, whether `sync` turns it on.
pub struct BuiltIn {
    pub kind: Kind,
    pub enabled: fn(&Sync) -> bool,
}

const fn kind(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    direction: Direction,
    section: &'static str,
) -> Kind {
    Kind {
        group: Cow::Borrowed(group),
        version: Cow::Borrowed(version),
        kind: Cow::Borrowed(kind),
        plural: Cow::Borrowed(plural),
        namespaced,
        direction,
        section: Cow::Borrowed(section),
    }
}

use Direction::{FromHost, ToHost};

/// Every built-in synced kind, in the order the syncer starts them.
pub fn built_in() -> Vec<BuiltIn> {
    let entry = |kind, enabled| BuiltIn { kind, enabled };
    vec![
        entry(kind("", "v1", "Pod", "pods", true, ToHost, "pods"), |s| {
            s.to_host.pods.enabled
        }),
        entry(
            kind("", "v1", "Service", "services", true, ToHost, "services"),
            |s| s.to_host.services.enabled,
        ),
        entry(
            kind(
                "",
                "v1",
                "Endpoints",
                "endpoints",
                true,
                ToHost,
                "endpoints",
            ),
            |s| s.to_host.endpoints.enabled,
        ),
        entry(
            kind(
                "",
                "v1",
                "ConfigMap",
                "configmaps",
                true,
                ToHost,
                "configMaps",
            ),
            |s| s.to_host.config_maps.enabled,
        ),
        entry(
            kind("", "v1", "Secret", "secrets", true, ToHost, "secrets"),
            |s| s.to_host.secrets.enabled,
        ),
        entry(
            kind(
                "",
                "v1",
                "PersistentVolumeClaim",
                "persistentvolumeclaims",
                true,
                ToHost,
                "persistentVolumeClaims",
            ),
            |s| s.to_host.persistent_volume_claims.enabled,
        ),
        entry(
            kind(
                "",
                "v1",
                "ServiceAccount",
                "serviceaccounts",
                true,
                ToHost,
                "serviceAccounts",
            ),
            |s| s.to_host.service_accounts.enabled,
        ),
        entry(
            kind(
                "networking.k8s.io",
                "v1",
                "Ingress",
                "ingresses",
                true,
                ToHost,
                "ingresses",
            ),
            |s| s.to_host.ingresses.enabled,
        ),
        entry(
            kind(
                "networking.k8s.io",
                "v1",
                "NetworkPolicy",
                "networkpolicies",
                true,
                ToHost,
                "networkPolicies",
            ),
            |s| s.to_host.network_policies.enabled,
        ),
        entry(
            kind(
                "policy",
                "v1",
                "PodDisruptionBudget",
                "poddisruptionbudgets",
                true,
                ToHost,
                "podDisruptionBudgets",
            ),
            |s| s.to_host.pod_disruption_budgets.enabled,
        ),
        entry(
            kind(
                "scheduling.k8s.io",
                "v1",
                "PriorityClass",
                "priorityclasses",
                false,
                ToHost,
                "priorityClasses",
            ),
            |s| s.to_host.priority_classes.enabled,
        ),
        entry(
            kind(
                "storage.k8s.io",
                "v1",
                "StorageClass",
                "storageclasses",
                false,
                FromHost,
                "storageClasses",
            ),
            |s| s.from_host.storage_classes.enabled,
        ),
        entry(
            kind(
                "networking.k8s.io",
                "v1",
                "IngressClass",
                "ingressclasses",
                false,
                FromHost,
                "ingressClasses",
            ),
            |s| s.from_host.ingress_classes.enabled,
        ),
    ]
}

impl Kind {
    /// The entry of custom resource `resource` (`plural.group`), as its CRD on the host
    /// defines it: served `version`, `kind`, `scope`.
    pub fn custom(
        resource: &str,
        version: &str,
        kind: &str,
        scope: CustomResourceScope,
        direction: Direction,
    ) -> Option<Self> {
        let (plural, group) = resource.split_once('.')?;
        Some(Self {
            group: group.to_owned().into(),
            version: version.to_owned().into(),
            kind: kind.to_owned().into(),
            plural: plural.to_owned().into(),
            namespaced: scope == CustomResourceScope::Namespaced,
            direction,
            section: custom_section(resource).into(),
        })
    }

    /// What the API client needs to reach its objects.
    pub fn api_resource(&self) -> kube::core::ApiResource {
        kube::core::ApiResource {
            group: self.group.to_string(),
            version: self.version.to_string(),
            api_version: self.api_version(),
            kind: self.kind.to_string(),
            plural: self.plural.to_string(),
        }
    }

    /// `apiVersion` of its objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group` (`pods` for the core group), as CRDs and RBAC name it.
    pub fn resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Where its patches are under `spec.sync`: `toHost.ingresses`.
    pub fn patch_section(&self) -> String {
        let side = match self.direction {
            ToHost => "toHost",
            FromHost => "fromHost",
        };
        format!("{side}.{}", self.section)
    }

    /// What the syncer does with it on the host: writes its copies, or reads the host's.
    pub fn host_verbs(&self) -> &'static [&'static str] {
        match self.direction {
            ToHost => WRITE,
            FromHost => READ,
        }
    }

    /// Whether the syncer's copies of it sit in host namespaces (where the operator's cleanup
    /// finds them by label).
    pub fn has_namespaced_copies(&self) -> bool {
        self.direction == ToHost && self.namespaced
    }
}

/// The section key of custom resource `resource`: `customResources["plural.group"]`.
pub fn custom_section(resource: &str) -> String {
    format!("customResources[\"{resource}\"]")
}

/// The built-in kinds `sync` turns on.
pub fn enabled(sync: &Sync) -> Vec<Kind> {
    built_in()
        .into_iter()
        .filter(|b| (b.enabled)(sync))
        .map(|b| b.kind)
        .collect()
}

/// The built-in kinds whose copies the syncer may make in host namespaces, whether or not an
/// instance turns them on (the rights of held namespaces are one fixed ClusterRole).
pub fn namespaced_to_host() -> Vec<Kind> {
    built_in()
        .into_iter()
        .map(|b| b.kind)
        .filter(Kind::has_namespaced_copies)
        .collect()
}

/// The custom resources `sync` turns on, by direction: `(plural.group, scope)`.
pub fn custom_resources(sync: &Sync) -> Vec<(String, CustomResourceScope, Direction)> {
    let to = sync
        .to_host
        .custom_resources
        .iter()
        .filter(|(_, c)| c.enabled)
        .map(|(r, c)| (r.clone(), c.scope, ToHost));
    let from = sync
        .from_host
        .custom_resources
        .iter()
        .filter(|(_, c)| c.enabled)
        .map(|(r, c)| (r.clone(), c.scope, FromHost));
    to.chain(from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_section_is_a_key_of_spec_sync() {
        let sync = serde_json::to_value(Sync::default()).unwrap();
        for b in built_in() {
            let side = match b.kind.direction {
                ToHost => "toHost",
                FromHost => "fromHost",
            };
            assert!(
                sync[side].get(b.kind.section.as_ref()).is_some(),
                "{side}.{} is not a key of spec.sync",
                b.kind.section
            );
        }
    }

    #[test]
    fn defaults_turn_on_the_documented_kinds() {
        let on: Vec<String> = enabled(&Sync::default())
            .iter()
            .map(|k| k.kind.to_string())
            .collect();
        assert_eq!(
            on,
            [
                "Pod",
                "Service",
                "Endpoints",
                "ConfigMap",
                "Secret",
                "PersistentVolumeClaim"
            ]
        );
    }

    #[test]
    fn custom_resources_are_named_like_their_crds() {
        let k = Kind::custom(
            "certificates.cert-manager.io",
            "v1",
            "Certificate",
            CustomResourceScope::Namespaced,
            ToHost,
        )
        .unwrap();
        assert_eq!(k.api_version(), "cert-manager.io/v1");
        assert_eq!(k.resource(), "certificates.cert-manager.io");
        assert_eq!(
            k.patch_section(),
            "toHost.customResources[\"certificates.cert-manager.io\"]"
        );
        assert!(k.has_namespaced_copies());
        assert_eq!(k.host_verbs(), WRITE);
        assert!(Kind::custom("nodot", "v1", "X", CustomResourceScope::Cluster, FromHost).is_none());
    }
}
