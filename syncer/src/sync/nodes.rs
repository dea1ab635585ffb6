//! Virtual nodes: one for each host node the instance's pods run on, with its name and
//! readiness, so virtual pods can be bound and `kubectl get nodes` tells where they run. A
//! virtual node nobody's pod runs on any more is removed.

use std::collections::BTreeMap;
use std::sync::Arc;

use std::net::SocketAddr;

use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
};
use kube::api::{ObjectMeta, Patch};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use virtualcluster_crds::v1alpha1::NodesSync;

use crate::context::Ctx;
use crate::copy;
use crate::queue::Next;

/// Label (value `true`) on the virtual nodes the syncer makes; it deletes no other node.
pub const FAKE_NODE: &str = "virtualcluster.dev/fake-node";

/// Host node labels a virtual node shows: where it is and what it runs, nothing the host uses
/// to manage it.
const MIRRORED_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
];

/// The virtual node mirroring host node `name` (`None` when the host has no such node: its
/// readiness is then unknown). Real nodes (`fromHost.nodes`) show all their labels. Its
/// kubelet is the syncer's, at `kubelet` (none without: the node only has its name).
pub fn virtual_node(
    name: &str,
    host: Option<&Node>,
    real: bool,
    kubelet: Option<SocketAddr>,
) -> Node {
    let mut labels: BTreeMap<String, String> = host
        .map(|h| h.labels().clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| real || MIRRORED_LABELS.contains(&k.as_str()))
        .collect();
    labels.insert(FAKE_NODE.into(), "true".into());
    let host_status = host.and_then(|h| h.status.clone()).unwrap_or_default();
    // Real nodes show every condition and their taints, so the virtual cluster's own
    // scheduling (a DaemonSet's tolerations, `kubectl describe node`) sees what the host's
    // does; mirrors show readiness only.
    let others: Vec<NodeCondition> = host_status
        .conditions
        .iter()
        .flatten()
        .filter(|c| real && c.type_ != "Ready")
        .cloned()
        .map(|c| NodeCondition {
            last_heartbeat_time: None,
            ..c
        })
        .collect();
    let spec = host
        .filter(|_| real)
        .and_then(|h| h.spec.as_ref())
        .map(|s| NodeSpec {
            taints: s.taints.clone().filter(|t| !t.is_empty()),
            unschedulable: s.unschedulable.filter(|u| *u),
            ..Default::default()
        })
        .filter(|s| s.taints.is_some() || s.unschedulable.is_some());
    let ready = host_status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .cloned()
        .map(|c| NodeCondition {
            last_heartbeat_time: None,
            ..c
        })
        .unwrap_or_else(|| NodeCondition {
            type_: "Ready".into(),
            status: "Unknown".into(),
            reason: Some("HostNodeNotFound".into()),
            message: Some(format!("the host has no node {name}")),
            ..Default::default()
        });
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels),
            ..Default::default()
        },
        spec,
        status: Some(NodeStatus {
            conditions: Some(std::iter::once(ready).chain(others).collect()),
            capacity: host_status.capacity,
            allocatable: host_status.allocatable,
            node_info: host_status.node_info,
            addresses: Some(
                kubelet
                    .map(|k| NodeAddress {
                        type_: "InternalIP".into(),
                        address: k.ip().to_string(),
                    })
                    .into_iter()
                    .chain([NodeAddress {
                        type_: "Hostname".into(),
                        address: name.to_owned(),
                    }])
                    .collect(),
            ),
            daemon_endpoints: kubelet.map(|k| NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint {
                    port: k.port().into(),
                }),
            }),
            ..Default::default()
        }),
    }
}

/// Whether the virtual cluster should show node `name`: a pod runs on it, or it is a host
/// node `fromHost.nodes` shows.
fn in_use(ctx: &Ctx, name: &str) -> bool {
    if ctx
        .stores
        .host_nodes
        .get(&ObjectRef::new(name))
        .is_some_and(|n| shown(&ctx.config.sync.from_host.nodes, &n))
    {
        return true;
    }
    ctx.stores
        .virtual_pods
        .state()
        .iter()
        .any(|p| p.node_name.as_deref() == Some(name))
}

pub fn real_nodes(ctx: &Ctx) -> bool {
    ctx.config.sync.from_host.nodes.enabled
}

/// Whether `fromHost.nodes` shows host node `node` (with no pod of the instance on it).
pub fn shown(nodes: &NodesSync, node: &Node) -> bool {
    nodes.enabled
        && nodes
            .selector
            .labels
            .iter()
            .all(|(k, v)| node.labels().get(k) == Some(v))
}

/// Makes the virtual node `name` exist (before a pod is bound to it).
pub async fn ensure(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    if ctx
        .stores
        .virtual_nodes
        .get(&ObjectRef::new(name))
        .is_some()
    {
        return Ok(());
    }
    write(ctx, name).await
}

async fn write(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    let host = ctx.stores.host_nodes.get(&ObjectRef::new(name));
    let desired = virtual_node(name, host.as_deref(), real_nodes(ctx), ctx.kubelet);
    let api: Api<Node> = Api::all(ctx.virt.clone());
    let mut body = serde_json::to_value(ObjectMeta {
        labels: desired.metadata.labels.clone(),
        name: desired.metadata.name.clone(),
        ..Default::default()
    })?;
    body = serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": body,
                              "spec": desired.spec.clone().unwrap_or_default()});
    api.patch(name, &copy::apply_params(), &Patch::Apply(&body))
        .await?;
    let status = serde_json::json!({"apiVersion": "v1", "kind": "Node", "status": desired.status});
    api.patch_status(name, &copy::apply_params(), &Patch::Apply(&status))
        .await?;
    Ok(())
}

pub async fn reconcile(ctx: Arc<Ctx>, name: String) -> anyhow::Result<Next> {
    let current = ctx.stores.virtual_nodes.get(&ObjectRef::new(&name));
    if !in_use(&ctx, &name) {
        if let Some(node) = current.filter(|n| n.labels().contains_key(FAKE_NODE)) {
            copy::delete(&Api::<Node>::all(ctx.virt.clone()), node.as_ref(), None).await?;
        }
        return Ok(Next::Done);
    }
    let host = ctx.stores.host_nodes.get(&ObjectRef::new(&name));
    let desired = virtual_node(&name, host.as_deref(), real_nodes(&ctx), ctx.kubelet);
    let up_to_date =
        current.is_some_and(|c| virtualcluster_crds::compare::holds(c.as_ref(), &desired));
    if !up_to_date {
        write(&ctx, &name).await?;
    }
    Ok(Next::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_virtual_node_mirrors_name_and_readiness() {
        let host: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "worker-1", "labels": {
                "kubernetes.io/hostname": "worker-1", "node-role.kubernetes.io/infra": ""}},
            "status": {"conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "False", "reason": "KubeletNotReady",
                 "lastHeartbeatTime": "2026-01-01T00:00:00Z"}],
                "capacity": {"cpu": "4"}}
        }))
        .unwrap();
        let node = virtual_node("worker-1", Some(&host), false, None);
        let real = virtual_node("worker-1", Some(&host), true, None);
        assert!(real.labels().contains_key("node-role.kubernetes.io/infra"));
        let labels = node.labels();
        assert_eq!(labels["kubernetes.io/hostname"], "worker-1");
        assert_eq!(labels[FAKE_NODE], "true");
        assert!(!labels.contains_key("node-role.kubernetes.io/infra"));
        let status = node.status.unwrap();
        let conditions = status.conditions.unwrap();
        assert_eq!(conditions.len(), 1);
        assert_eq!(
            (conditions[0].type_.as_str(), conditions[0].status.as_str()),
            ("Ready", "False")
        );
        assert_eq!(conditions[0].last_heartbeat_time, None);

        let gone = virtual_node("worker-2", None, false, None);
        assert_eq!(
            gone.status.unwrap().conditions.unwrap()[0].status,
            "Unknown"
        );
    }

    #[test]
    fn a_real_node_shows_its_taints_and_conditions_and_the_selector_chooses_them() {
        let host: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "gpu-1", "labels": {"pool": "gpu"}},
            "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]},
            "status": {"conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "DiskPressure", "status": "False",
                 "lastHeartbeatTime": "2026-01-01T00:00:00Z"}]}
        }))
        .unwrap();
        let real = virtual_node("gpu-1", Some(&host), true, None);
        let taints = real.spec.clone().unwrap().taints.unwrap();
        assert_eq!(taints[0].key, "nvidia.com/gpu");
        let conditions = real.status.unwrap().conditions.unwrap();
        let types: Vec<&str> = conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Ready", "DiskPressure"]);
        assert_eq!(conditions[1].last_heartbeat_time, None);
        // A mirror shows neither.
        let mirror = virtual_node("gpu-1", Some(&host), false, None);
        assert!(mirror.spec.is_none());
        assert_eq!(mirror.status.unwrap().conditions.unwrap().len(), 1);

        let nodes = |enabled: bool, labels: &[(&str, &str)]| NodesSync {
            enabled,
            selector: virtualcluster_crds::v1alpha1::LabelsSelector {
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            },
        };
        assert!(shown(&nodes(true, &[]), &host));
        assert!(shown(&nodes(true, &[("pool", "gpu")]), &host));
        assert!(!shown(&nodes(true, &[("pool", "cpu")]), &host));
        assert!(!shown(&nodes(false, &[]), &host));
    }

    #[test]
    fn a_virtual_node_advertises_the_syncer_as_its_kubelet() {
        let kubelet = "10.96.3.5:10250".parse().unwrap();
        let status = virtual_node("worker-1", None, false, Some(kubelet))
            .status
            .unwrap();
        let addresses = status.addresses.unwrap();
        assert_eq!(
            (addresses[0].type_.as_str(), addresses[0].address.as_str()),
            ("InternalIP", "10.96.3.5")
        );
        assert_eq!(addresses[1].type_, "Hostname");
        let port = status
            .daemon_endpoints
            .unwrap()
            .kubelet_endpoint
            .unwrap()
            .port;
        assert_eq!(port, 10250);
        // Without a kubelet API the node has its name only.
        let bare = virtual_node("worker-1", None, false, None).status.unwrap();
        assert_eq!(bare.addresses.unwrap().len(), 1);
        assert!(bare.daemon_endpoints.is_none());
    }
}
