//! Real nodes (`fromHost.nodes`): the host nodes `selector.labels` chooses are shown with
//! their labels, taints and conditions; the others only where the instance's pods run.

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use virtualcluster_tests::harness::{eventually_within, unique_name};
use virtualcluster_tests::shared_cluster;

use crate::syncer::{LONG, Running};

#[tokio::test]
async fn the_selected_host_nodes_are_shown_with_their_taints() {
    let cluster = shared_cluster().await;
    let host = cluster.client().await;
    let nodes: Api<Node> = Api::all(host.clone());
    // A label and a harmless taint of this test's own on one host node.
    let node = "kwok-node-1";
    let key = format!("example.com/{}", unique_name("pool"));
    nodes
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {&key: "selected"}}})),
        )
        .await
        .unwrap();
    let mut taints = nodes
        .get(node)
        .await
        .unwrap()
        .spec
        .unwrap()
        .taints
        .unwrap_or_default();
    taints.push(serde_json::from_value(json!({"key": key, "effect": "PreferNoSchedule"})).unwrap());
    nodes
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": taints}})),
        )
        .await
        .unwrap();

    let running = Running::start(
        cluster,
        "realnodes",
        "vc",
        json!({"sync": {"fromHost": {"nodes": {"enabled": true,
                                                "selector": {"labels": {&key: "selected"}}}}}}),
    )
    .await;
    let virtual_nodes: Api<Node> = Api::all(running.virt.clone());
    let shown = eventually_within("the selected node", LONG, || async {
        let shown = virtual_nodes.get_opt(node).await.unwrap()?;
        let tainted = shown
            .spec
            .as_ref()?
            .taints
            .as_ref()?
            .iter()
            .any(|t| t.key == key);
        tainted.then_some(shown)
    })
    .await;
    assert_eq!(shown.labels()[&key], "selected");
    let conditions = shown.status.unwrap().conditions.unwrap();
    assert!(
        conditions.iter().any(|c| c.type_ == "Ready"),
        "{conditions:?}"
    );
    // Every other node shown has a pod of the instance on it.
    let pods: Api<Pod> = Api::all(running.virt.clone());
    let used: Vec<String> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.spec?.node_name)
        .collect();
    for other in virtual_nodes.list(&ListParams::default()).await.unwrap() {
        let name = other.name_any();
        assert!(
            name == node || used.contains(&name),
            "{name} is shown, but neither selected nor running a pod of the instance"
        );
    }

    // What the test put on the host node goes.
    let mut taints = nodes
        .get(node)
        .await
        .unwrap()
        .spec
        .unwrap()
        .taints
        .unwrap_or_default();
    taints.retain(|t| t.key != key);
    nodes
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {&key: null}}, "spec": {"taints": taints}}),
            ),
        )
        .await
        .unwrap();
}
