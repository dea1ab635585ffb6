//! What the operator creates for one VirtualCluster: the names of those objects, the labels that
//! mark them as the instance's, and the configuration it hands to the instance's syncer. The
//! operator writes them, the syncer and the tests read them; all take them from here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::keys;
use crate::v1alpha1::Sync;

/// The identity of one VirtualCluster. The UID tells a recreated instance of the same name from
/// the old one, so nothing of an old instance is ever taken for the new one's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRef {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

/// Port of the Service in front of the virtual API server.
pub const API_SERVER_SERVICE_PORT: i32 = 443;

/// Which part of an instance an object belongs to (`app.kubernetes.io/component`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    ControlPlane,
    Syncer,
}

impl Component {
    pub const fn as_str(self) -> &'static str {
        match self {
            Component::ControlPlane => "control-plane",
            Component::Syncer => "syncer",
        }
    }
}

impl InstanceRef {
    /// The identity of `vc`, as read from the API server (which sets namespace and UID).
    pub fn of(vc: &crate::VirtualCluster) -> Self {
        let meta = &vc.metadata;
        InstanceRef {
            name: meta.name.clone().unwrap_or_default(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
        }
    }

    /// StatefulSet of the control plane (and the app label of its pods).
    pub fn control_plane(&self) -> String {
        self.name.clone()
    }

    /// Service in front of the virtual API server, port [`API_SERVER_SERVICE_PORT`].
    pub fn api_server_service(&self) -> String {
        self.name.clone()
    }

    /// Headless Service that gives the control plane pods stable DNS names.
    pub fn headless_service(&self) -> String {
        format!("{}-headless", self.name)
    }

    /// ConfigMap of the control plane's configuration files (its admission configuration).
    pub fn control_plane_config(&self) -> String {
        format!("{}-control-plane-config", self.name)
    }

    /// Secret holding the instance's CA, certificates and keys.
    pub fn certs_secret(&self) -> String {
        format!("{}-certs", self.name)
    }

    /// Secret holding the admin kubeconfig, the name users of the documented product know.
    pub fn kubeconfig_secret(&self) -> String {
        format!("vc-{}", self.name)
    }

    /// Deployment, ServiceAccount, Role and RoleBinding of the syncer.
    pub fn syncer(&self) -> String {
        format!("{}-syncer", self.name)
    }

    /// ConfigMap holding the [`SyncerConfig`].
    pub fn syncer_config(&self) -> String {
        format!("{}-syncer-config", self.name)
    }

    /// Secret holding the syncer's kubeconfig for the virtual API server.
    pub fn syncer_kubeconfig_secret(&self) -> String {
        format!("{}-syncer-kubeconfig", self.name)
    }

    /// ClusterRole and ClusterRoleBinding of the syncer, when it needs cluster-wide access.
    /// Namespaces and instance names hold no dots, so the name cannot be shared by two
    /// instances.
    pub fn syncer_cluster_role(&self) -> String {
        format!("virtualcluster-syncer.{}.{}", self.namespace, self.name)
    }

    /// The names of everything the operator makes for this instance (several kinds share one).
    pub fn child_names(&self) -> Vec<String> {
        vec![
            self.control_plane(),
            self.headless_service(),
            self.control_plane_config(),
            self.certs_secret(),
            self.kubeconfig_secret(),
            self.syncer(),
            self.syncer_config(),
            self.syncer_kubeconfig_secret(),
            self.syncer_cluster_role(),
        ]
    }

    /// The in-cluster DNS name of the API server Service.
    pub fn api_server_host(&self) -> String {
        format!("{}.{}.svc", self.api_server_service(), self.namespace)
    }

    /// Labels on everything the operator creates for this instance. Namespace and UID are there
    /// because cluster-scoped objects have no namespace and names can be reused.
    pub fn labels(&self, component: Component) -> BTreeMap<String, String> {
        let mut labels = self.selector_labels(component);
        labels.insert(keys::INSTANCE_NAMESPACE.into(), self.namespace.clone());
        labels.insert(keys::INSTANCE_UID.into(), self.uid.clone());
        labels.insert(
            "app.kubernetes.io/managed-by".into(),
            keys::MANAGED_BY_OPERATOR.into(),
        );
        labels.insert("app.kubernetes.io/name".into(), "virtualcluster".into());
        labels
    }

    /// The labels that select the pods of one component of this instance in its namespace.
    pub fn selector_labels(&self, component: Component) -> BTreeMap<String, String> {
        BTreeMap::from([
            (keys::INSTANCE_NAME.into(), self.name.clone()),
            (
                "app.kubernetes.io/component".into(),
                component.as_str().into(),
            ),
        ])
    }

    /// A label selector (`k=v,...`) matching everything the operator made for this instance,
    /// cluster-scoped objects included.
    pub fn label_selector(&self) -> String {
        format!(
            "{}={},{}={},{}={}",
            keys::INSTANCE_NAME,
            self.name,
            keys::INSTANCE_NAMESPACE,
            self.namespace,
            keys::INSTANCE_UID,
            self.uid
        )
    }

    /// Whether `labels` mark an object as this instance's (name, namespace and UID all match).
    pub fn owns(&self, labels: &BTreeMap<String, String>) -> bool {
        labels.get(keys::INSTANCE_NAME) == Some(&self.name)
            && labels.get(keys::INSTANCE_NAMESPACE) == Some(&self.namespace)
            && labels.get(keys::INSTANCE_UID) == Some(&self.uid)
    }
}

/// Selector of everything the operator manages, for its watches.
pub fn managed_selector() -> String {
    format!("app.kubernetes.io/managed-by={}", keys::MANAGED_BY_OPERATOR)
}

/// Key of the [`SyncerConfig`] (JSON) in the syncer's ConfigMap.
pub const SYNCER_CONFIG_KEY: &str = "config.json";
/// Key of the kubeconfig in the kubeconfig Secrets.
pub const KUBECONFIG_KEY: &str = "config";
/// Name of the syncer container's port for `/metrics`, `/healthz` and `/readyz` (the chart's
/// PodMonitor scrapes it by this name).
pub const SYNCER_METRICS_PORT_NAME: &str = "metrics";

/// What the syncer is told about its instance: the operator resolves the VirtualCluster into
/// this, writes it into the syncer's ConfigMap, and the syncer reads it at start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncerConfig {
    pub instance: InstanceRef,
    /// `spec.sync` with every default filled in.
    pub sync: Sync,
    /// Service in front of the virtual API server, in the instance's namespace.
    pub api_server_service: String,
    /// The virtual cluster's service IP range.
    #[serde(rename = "serviceCIDR")]
    pub service_cidr: String,
    /// What the platform and `spec.policies` let the instance's workloads do on the host.
    #[serde(default)]
    pub policy: crate::policy::HostPolicy,
    /// `spec.policies`, for the quota, limits and network policy of the host namespaces the
    /// instance creates.
    #[serde(default)]
    pub policies: crate::v1alpha1::Policies,
    /// The custom resources it syncs, resolved by the operator against the host's CRDs (those
    /// whose CRD is missing are not here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_resources: Vec<crate::kinds::Kind>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(namespace: &str, name: &str) -> InstanceRef {
        InstanceRef {
            name: name.into(),
            namespace: namespace.into(),
            uid: "u1".into(),
        }
    }

    #[test]
    fn cluster_role_names_do_not_collide_across_namespaces() {
        // With a dash as separator both would be virtualcluster-syncer-a-b-c.
        assert_ne!(
            instance("a-b", "c").syncer_cluster_role(),
            instance("a", "b-c").syncer_cluster_role()
        );
    }

    #[test]
    fn labels_mark_the_instance_and_nothing_else() {
        let a = instance("ns", "vc");
        let labels = a.labels(Component::Syncer);
        assert!(a.owns(&labels));
        let other_uid = InstanceRef {
            uid: "u2".into(),
            ..a.clone()
        };
        assert!(!other_uid.owns(&labels));
        assert!(!instance("ns2", "vc").owns(&labels));
        let selector = a.label_selector();
        for pair in selector.split(',') {
            let (k, v) = pair.split_once('=').unwrap();
            assert_eq!(labels.get(k).map(String::as_str), Some(v), "{k}");
        }
    }

    #[test]
    fn longest_instance_names_give_valid_service_names() {
        let a = instance("ns", &"a".repeat(crate::mapping::MAX_INSTANCE_NAME_LEN));
        for service in [a.api_server_service(), a.headless_service()] {
            assert!(crate::dns::is_label(&service), "{service}");
        }
    }
}
