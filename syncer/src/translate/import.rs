//! Host objects as the virtual cluster shows them when it imports them: a namespace a host-side
//! mapping claims, and the pods, ConfigMaps, Secrets and Services made on the host in it. They
//! stand for the host's objects; no copy is ever made of them.

use std::collections::BTreeMap;
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, Pod, PodSpec, Secret, Service};
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use virtualcluster_crds::{keys, marks};

use super::ROOT_CA_CONFIG_MAP;

/// Annotation on an imported virtual object: a fingerprint of what it was last given from the
/// host, so that a key the host removed is removed too (a live object holding all the host
/// has cannot tell).
pub const IMPORTED_FINGERPRINT: &str = "virtualcluster.dev/imported-fingerprint";

/// The virtual namespace `virtual_name` standing for host namespace `host`.
pub fn namespace(host: &str, virtual_name: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(virtual_name.to_owned()),
            annotations: Some(BTreeMap::from([(
                keys::IMPORTED_FROM.to_owned(),
                host.to_owned(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Where a virtual object imported from host object `host` says it comes from.
pub fn source(host: &impl kube::Resource) -> String {
    format!(
        "{}/{}",
        host.meta().namespace.as_deref().unwrap_or_default(),
        host.meta().name.as_deref().unwrap_or_default()
    )
}

/// The virtual pod standing for host pod `host`, in virtual namespace `namespace`: its labels,
/// annotations and spec, bound to the virtual node of the host's node. Its status follows the
/// host's (see `sync::imports`).
pub fn pod(host: &Pod, namespace: &str) -> Pod {
    let (labels, annotations) = metadata(host);
    Pod {
        metadata: ObjectMeta {
            name: Some(host.name_any()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        ..host.content()
    }
}

/// Labels and annotations of the virtual object standing for host object `host`.
pub fn metadata(host: &impl Resource) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut annotations = marks::without_reserved(host.meta().annotations.as_ref());
    annotations.insert(keys::IMPORTED_FROM.into(), source(host));
    (
        marks::without_reserved(host.meta().labels.as_ref()),
        annotations,
    )
}

/// A kind whose host-made objects are shown in the virtual cluster besides pods: copied whole
/// but for what the virtual cluster gives itself.
pub trait Importable:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Serialize
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    /// Whether host object `self` is shown at all: not what every namespace of each side has
    /// of its own (the CA bundle, service-account tokens). Judged by what cannot change.
    fn shown(&self) -> bool {
        true
    }

    /// What of `self` the virtual object carries, without metadata.
    fn content(&self) -> Self;
}

impl Importable for Pod {
    /// What the virtual API server would refuse or reject for lack of the host's objects goes:
    /// the host ServiceAccount and its token volumes, the priority and runtime class.
    fn content(&self) -> Self {
        let mut spec = self.spec.clone().unwrap_or_default();
        strip_host_only(&mut spec);
        Pod {
            metadata: ObjectMeta::default(),
            spec: Some(spec),
            status: None,
        }
    }
}

impl Importable for ConfigMap {
    fn shown(&self) -> bool {
        self.metadata.name.as_deref() != Some(ROOT_CA_CONFIG_MAP)
    }

    fn content(&self) -> Self {
        ConfigMap {
            metadata: ObjectMeta::default(),
            data: self.data.clone(),
            binary_data: self.binary_data.clone(),
            immutable: self.immutable,
        }
    }
}

impl Importable for Secret {
    fn shown(&self) -> bool {
        self.type_.as_deref() != Some("kubernetes.io/service-account-token")
    }

    fn content(&self) -> Self {
        Secret {
            metadata: ObjectMeta::default(),
            data: self.data.clone(),
            string_data: None,
            type_: self.type_.clone(),
            immutable: self.immutable,
        }
    }
}

impl Importable for Service {
    /// The spec without what the virtual cluster allocates itself: addresses (the host's is
    /// asked for at create, see `sync::imports`), node ports, IP families.
    fn content(&self) -> Self {
        let mut spec = self.spec.clone().unwrap_or_default();
        super::service::without_allocations(&mut spec);
        Service {
            metadata: ObjectMeta::default(),
            spec: Some(spec),
            status: None,
        }
    }
}

/// The virtual object standing for host object `host`, in virtual namespace `namespace`: its
/// content, labels and annotations, and the fingerprint of all of it.
pub fn object<K: Importable>(host: &K, namespace: &str) -> K {
    let mut object = host.content();
    let (labels, annotations) = metadata(host);
    *object.meta_mut() = ObjectMeta {
        name: host.meta().name.clone(),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels),
        annotations: Some(annotations),
        ..Default::default()
    };
    let print = fingerprint(&object);
    object
        .annotations_mut()
        .insert(IMPORTED_FINGERPRINT.into(), print);
    object
}

/// The first 16 hex digits of the SHA-256 of the object's JSON (maps serialize in key order).
fn fingerprint(object: &impl Serialize) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(serde_json::to_vec(object).unwrap_or_default());
    hex::encode(&digest[..8])
}

fn strip_host_only(spec: &mut PodSpec) {
    spec.service_account_name = None;
    spec.service_account = None;
    spec.automount_service_account_token = Some(false);
    spec.priority = None;
    spec.priority_class_name = None;
    spec.preemption_policy = None;
    spec.runtime_class_name = None;
    spec.overhead = None;
    // The host's service-account token volumes (kube-api-access-*), and their mounts.
    let tokens: Vec<String> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| {
            v.projected.as_ref().is_some_and(|p| {
                p.sources
                    .iter()
                    .flatten()
                    .any(|s| s.service_account_token.is_some())
            })
        })
        .map(|v| v.name.clone())
        .collect();
    if let Some(volumes) = &mut spec.volumes {
        volumes.retain(|v| !tokens.contains(&v.name));
    }
    let unmount = |c: &mut Container| {
        if let Some(mounts) = &mut c.volume_mounts {
            mounts.retain(|m| !tokens.contains(&m.name));
        }
    };
    spec.containers.iter_mut().for_each(unmount);
    spec.init_containers.iter_mut().flatten().for_each(unmount);
}

/// Whether imported virtual pod `live` lacks labels or annotations host pod `host` has (what
/// the syncer applied and the host no longer has, server-side apply removes).
pub fn pod_metadata_differs(host: &Pod, live: &impl Resource) -> bool {
    let (labels, annotations) = metadata(host);
    let lacks = |want: BTreeMap<String, String>, have: &BTreeMap<String, String>| {
        want.iter().any(|(k, v)| have.get(k) != Some(v))
    };
    lacks(labels, live.labels()) || lacks(annotations, live.annotations())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "nginx-from-host", "namespace": "host-namespace-from-host",
                         "uid": "h1",
                         "labels": {"run": "nginx-from-host",
                                    "virtualcluster.dev/imported-by-uid": "u1"},
                         "annotations": {"note": "x"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                              "name": "rs", "uid": "r1"}]},
            "spec": {
                "nodeName": "node-1",
                "serviceAccountName": "builder",
                "priorityClassName": "high", "priority": 1000,
                "runtimeClassName": "gvisor",
                "containers": [{"name": "nginx", "image": "nginx",
                                "volumeMounts": [
                                    {"name": "kube-api-access-abcde", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"},
                                    {"name": "data", "mountPath": "/data"}]}],
                "volumes": [
                    {"name": "kube-api-access-abcde", "projected": {"sources": [
                        {"serviceAccountToken": {"path": "token"}}]}},
                    {"name": "data", "emptyDir": {}}]
            },
            "status": {"phase": "Running"}
        }))
        .unwrap()
    }

    #[test]
    fn a_host_pod_is_shown_bound_to_its_node_without_what_only_the_host_has() {
        let virtual_pod = pod(&host_pod(), "sync-namespace-from-host");
        assert_eq!(
            virtual_pod.metadata.namespace.as_deref(),
            Some("sync-namespace-from-host")
        );
        assert_eq!(
            virtual_pod.metadata.name.as_deref(),
            Some("nginx-from-host")
        );
        assert_eq!(virtual_pod.metadata.owner_references, None);
        assert_eq!(
            virtual_pod.labels(),
            &BTreeMap::from([("run".to_owned(), "nginx-from-host".to_owned())])
        );
        assert_eq!(
            virtual_pod.annotations()[keys::IMPORTED_FROM],
            "host-namespace-from-host/nginx-from-host"
        );
        assert!(marks::is_imported(virtual_pod.annotations()));
        let spec = virtual_pod.spec.unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("node-1"));
        assert_eq!(spec.service_account_name, None);
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!((spec.priority, spec.priority_class_name), (None, None));
        assert_eq!(spec.runtime_class_name, None);
        let volumes: Vec<_> = spec.volumes.unwrap().into_iter().map(|v| v.name).collect();
        assert_eq!(volumes, ["data"]);
        let mounts: Vec<_> = spec.containers[0]
            .volume_mounts
            .clone()
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(mounts, ["data"]);
    }

    #[test]
    fn metadata_follows_the_host_pod() {
        let host = host_pod();
        let mut live = pod(&host, "v");
        assert!(!pod_metadata_differs(&host, &live));
        live.labels_mut().insert("extra".into(), "1".into());
        assert!(!pod_metadata_differs(&host, &live));
        live.labels_mut().remove("run");
        assert!(pod_metadata_differs(&host, &live));
        let mut live = pod(&host, "v");
        live.annotations_mut().remove("note");
        assert!(pod_metadata_differs(&host, &live));
    }

    #[test]
    fn host_config_maps_and_secrets_are_shown_whole_but_for_what_each_side_has() {
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "settings", "namespace": "host-a", "uid": "c1",
                         "labels": {"app": "web", "virtualcluster.dev/imported-by-uid": "u1"}},
            "data": {"mode": "fast"}
        }))
        .unwrap();
        assert!(cm.shown());
        let shown = object(&cm, "sync-a");
        assert_eq!(shown.metadata.namespace.as_deref(), Some("sync-a"));
        assert_eq!(shown.metadata.uid, None);
        assert_eq!(shown.data, cm.data);
        assert_eq!(
            shown.labels(),
            &BTreeMap::from([("app".to_owned(), "web".to_owned())])
        );
        assert_eq!(shown.annotations()[keys::IMPORTED_FROM], "host-a/settings");
        let root: ConfigMap = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "kube-root-ca.crt", "namespace": "host-a"}}),
        )
        .unwrap();
        assert!(!root.shown());
        let token: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "t", "namespace": "host-a"},
            "type": "kubernetes.io/service-account-token"
        }))
        .unwrap();
        assert!(!token.shown());
    }

    #[test]
    fn a_removed_key_changes_the_fingerprint() {
        let mut cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some("settings".into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                ("a".to_owned(), "1".to_owned()),
                ("b".to_owned(), "2".to_owned()),
            ])),
            ..Default::default()
        };
        let before = object(&cm, "v");
        assert_eq!(object(&cm, "v"), before);
        cm.data.as_mut().unwrap().remove("b");
        let after = object(&cm, "v");
        assert_ne!(
            before.annotations()[IMPORTED_FINGERPRINT],
            after.annotations()[IMPORTED_FINGERPRINT]
        );
    }

    #[test]
    fn a_host_service_is_shown_without_what_the_virtual_cluster_allocates() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "host-a"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.7", "clusterIPs": ["10.96.0.7"],
                     "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                     "selector": {"app": "web"},
                     "ports": [{"port": 80, "nodePort": 31000}]}
        }))
        .unwrap();
        let spec = object(&svc, "v").spec.unwrap();
        assert_eq!((spec.cluster_ip, spec.cluster_ips), (None, None));
        assert_eq!(spec.ip_families, None);
        assert_eq!(spec.ports.unwrap()[0].node_port, None);
        assert_eq!(spec.selector, svc.spec.as_ref().unwrap().selector);
        let mut headless = svc.clone();
        headless.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        assert_eq!(
            object(&headless, "v").spec.unwrap().cluster_ip.as_deref(),
            Some("None")
        );
    }

    #[test]
    fn an_imported_namespace_names_its_host_namespace() {
        let ns = namespace("host-namespace-from-host", "sync-namespace-from-host");
        assert_eq!(ns.name_any(), "sync-namespace-from-host");
        assert_eq!(
            ns.annotations()[keys::IMPORTED_FROM],
            "host-namespace-from-host"
        );
    }
}
