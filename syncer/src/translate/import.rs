//! Host objects as the virtual cluster shows them when it imports them: a namespace a host-side
//! mapping claims, and the pods made on the host in it. They stand for the host's objects; no
//! copy is ever made of them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodSpec};
use kube::ResourceExt;
use kube::api::ObjectMeta;
use virtualcluster_crds::{keys, marks};

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
/// annotations and spec, bound to the virtual node of the host's node. What the virtual API
/// server would refuse or reject for lack of the host's objects goes: the host ServiceAccount
/// and its token volumes, the priority and runtime class, owners.
pub fn pod(host: &Pod, namespace: &str) -> Pod {
    let mut spec = host.spec.clone().unwrap_or_default();
    strip_host_only(&mut spec);
    let (labels, annotations) = pod_metadata(host);
    Pod {
        metadata: ObjectMeta {
            name: Some(host.name_any()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Labels and annotations of the virtual pod standing for host pod `host`.
pub fn pod_metadata(host: &Pod) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut annotations = marks::without_reserved(host.metadata.annotations.as_ref());
    annotations.insert(keys::IMPORTED_FROM.into(), source(host));
    (
        marks::without_reserved(host.metadata.labels.as_ref()),
        annotations,
    )
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
pub fn pod_metadata_differs(host: &Pod, live: &Pod) -> bool {
    let (labels, annotations) = pod_metadata(host);
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
    fn an_imported_namespace_names_its_host_namespace() {
        let ns = namespace("host-namespace-from-host", "sync-namespace-from-host");
        assert_eq!(ns.name_any(), "sync-namespace-from-host");
        assert_eq!(
            ns.annotations()[keys::IMPORTED_FROM],
            "host-namespace-from-host"
        );
    }
}
