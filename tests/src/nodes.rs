//! Simulated nodes: kwok, run outside the cluster, keeps Nodes carrying [`KWOK_ANNOTATION`]
//! Ready (renewing their leases) and brings the pods scheduled onto them to Running.

use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{ListParams, PostParams};

use crate::binaries::KWOK_STAGES_FILE;

/// Nodes with this annotation (value `fake`) are the ones kwok manages.
pub const KWOK_ANNOTATION: &str = "kwok.x-k8s.io/node";
/// Label on every simulated node.
pub const NODE_LABEL: (&str, &str) = ("type", "kwok");
/// Node `i` is called `kwok-node-<i>`.
pub const NODE_NAME_PREFIX: &str = "kwok-node-";

/// Command line and environment for kwok.
pub struct KwokArgs {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// Writes `DIR/kwok/kwok.yaml` (kwok's default node and pod stages) and returns kwok's flags.
pub fn kwok_args(dir: &Path, bin_dir: &Path, kubeconfig: &Path) -> Result<KwokArgs> {
    let workdir = dir.join("kwok");
    fs::create_dir_all(&workdir)?;
    let stages = bin_dir.join(KWOK_STAGES_FILE);
    let config = workdir.join("kwok.yaml");
    fs::copy(&stages, &config).with_context(|| format!("copying {}", stages.display()))?;
    Ok(KwokArgs {
        args: vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--config={}", config.display()),
            "--manage-all-nodes=false".into(),
            format!("--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake"),
            // kwok renews the nodes' leases so the node lifecycle controller keeps them Ready;
            // the same value kwokctl uses.
            "--node-lease-duration-seconds=40".into(),
            "--cidr=10.244.0.0/16".into(),
        ],
        // kwok also loads `$KWOK_WORKDIR/kwok.yaml`, by default from the user's home.
        env: vec![("KWOK_WORKDIR".into(), workdir.display().to_string())],
    })
}

/// First address handed to simulated nodes, counting up; kwok reports a node's InternalIP as
/// the hostIP of its pods.
const FIRST_NODE_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 1);

/// The Node object for simulated node `index`.
pub fn node(index: u32) -> Node {
    let name = format!("{NODE_NAME_PREFIX}{index}");
    let ip = Ipv4Addr::from(u32::from(FIRST_NODE_IP) + index);
    let resources = serde_json::json!({"cpu": "32", "memory": "256Gi", "pods": "110"});
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_ANNOTATION: "fake"},
            "labels": {
                NODE_LABEL.0: NODE_LABEL.1,
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
        },
        "status": {
            "allocatable": resources,
            "capacity": resources,
            "addresses": [
                {"type": "InternalIP", "address": ip.to_string()},
                {"type": "Hostname", "address": name},
            ],
        },
    }))
    .expect("valid Node")
}

/// Creates simulated nodes `0..count`.
pub async fn create(client: &kube::Client, count: u32) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    for index in 0..count {
        let node = node(index);
        nodes
            .create(&PostParams::default(), &node)
            .await
            .with_context(|| {
                format!(
                    "creating node {}",
                    node.metadata.name.as_deref().unwrap_or_default()
                )
            })?;
    }
    Ok(())
}

/// How many simulated nodes report Ready.
pub async fn ready_count(client: &kube::Client) -> Result<u32> {
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes
        .list(&ListParams::default().labels(&format!("{}={}", NODE_LABEL.0, NODE_LABEL.1)))
        .await?;
    Ok(list.items.iter().filter(|node| is_ready(node)).count() as u32)
}

pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
