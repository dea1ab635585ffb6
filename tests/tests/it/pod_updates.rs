//! What a running pod changes in the virtual cluster reaches its host copy: its spec (`kubectl
//! set image`, a lowered deadline, an added toleration), through `translateImage` and the
//! containers patches renamed, as far as a running pod can change; and the conditions of its
//! readiness gates, which controllers in the virtual cluster set.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use virtualcluster_tests::harness::eventually_within;
use virtualcluster_tests::shared_cluster;

use crate::syncer::{LONG, Running, create, create_namespace};

#[tokio::test]
async fn a_running_pods_changeable_spec_follows_the_virtual_pod() {
    let cluster = shared_cluster().await;
    let running = Running::start(
        cluster,
        "podupdate",
        "vc",
        json!({"sync": {"toHost": {"pods": {
            "translateImage": {"nginx:2": "mirror.example/nginx:2"},
            "patches": [{"path": "spec.containers[*].name", "expression": "'p-' + value",
                         "reverseExpression": "value.slice(2)"}],
        }}}}),
    )
    .await;
    create_namespace(&running.virt, "shop").await;
    let pods = running.virtual_api::<Pod>("shop");
    create(
        &pods,
        json!({
            "metadata": {"name": "web"},
            "spec": {
                "activeDeadlineSeconds": 3600,
                "initContainers": [{"name": "setup", "image": "busybox:1"}],
                "containers": [{"name": "app", "image": "nginx:1"},
                               {"name": "side", "image": "envoy:1"}],
            },
        }),
    )
    .await;
    let before: Pod = running.host_copy("shop", "web").await;
    let images = |pod: &Pod| -> Vec<(String, String)> {
        let spec = pod.spec.as_ref().unwrap();
        spec.init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
            .collect()
    };
    assert_eq!(
        images(&before),
        [
            // The patch renames containers, not init containers.
            ("setup".to_owned(), "busybox:1".to_owned()),
            ("p-app".to_owned(), "nginx:1".to_owned()),
            ("p-side".to_owned(), "envoy:1".to_owned()),
        ]
    );

    // What `kubectl set image pod/web app=nginx:2` sends, with a lower deadline and a
    // toleration the platform offers every pod.
    let toleration = json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                            "effect": "NoExecute", "tolerationSeconds": 30});
    let mut tolerations = serde_json::to_value(
        pods.get("web")
            .await
            .unwrap()
            .spec
            .unwrap()
            .tolerations
            .unwrap_or_default(),
    )
    .unwrap();
    tolerations.as_array_mut().unwrap().push(toleration.clone());
    pods.patch(
        "web",
        &PatchParams::default(),
        &Patch::Strategic(json!({"spec": {
            "containers": [{"name": "app", "image": "nginx:2"}],
            "activeDeadlineSeconds": 1800,
            "tolerations": tolerations,
        }})),
    )
    .await
    .unwrap();
    let host = running.host_api::<Pod>();
    let host_name = running.host_name("shop", "web");
    let after = eventually_within("the host copy's new image", LONG, || async {
        let pod = host.get(&host_name).await.unwrap();
        let spec = pod.spec.as_ref().unwrap();
        (spec.containers[0].image.as_deref() == Some("mirror.example/nginx:2")).then_some(pod)
    })
    .await;
    assert_eq!(
        images(&after),
        [
            ("setup".to_owned(), "busybox:1".to_owned()),
            ("p-app".to_owned(), "mirror.example/nginx:2".to_owned()),
            ("p-side".to_owned(), "envoy:1".to_owned()),
        ],
        "only the changed container's image is written"
    );
    let spec = after.spec.as_ref().unwrap();
    assert_eq!(spec.active_deadline_seconds, Some(1800));
    let host_tolerations = serde_json::to_value(spec.tolerations.clone().unwrap()).unwrap();
    assert!(
        host_tolerations
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == &toleration),
        "{host_tolerations}"
    );
    // The host's own tolerations (its admission's defaults) are kept.
    let before_tolerations = before.spec.as_ref().unwrap().tolerations.clone().unwrap();
    for t in before_tolerations {
        assert!(spec.tolerations.as_ref().unwrap().contains(&t), "{t:?}");
    }
    assert_eq!(
        after.metadata.uid, before.metadata.uid,
        "updated, not replaced"
    );

    // A toleration the platform does not offer never reaches the host: the pod runs as the
    // platform allows.
    let mut more = tolerations.clone();
    more.as_array_mut()
        .unwrap()
        .push(json!({"key": "dedicated", "operator": "Exists"}));
    pods.patch(
        "web",
        &PatchParams::default(),
        &Patch::Strategic(json!({"spec": {"tolerations": more}})),
    )
    .await
    .unwrap();
    // A change the host takes, after it, shows the syncer went past the refused toleration.
    pods.patch(
        "web",
        &PatchParams::default(),
        &Patch::Strategic(json!({"spec": {"containers": [{"name": "side", "image": "envoy:2"}]}})),
    )
    .await
    .unwrap();
    let last = eventually_within("the sidecar's new image", LONG, || async {
        let pod = host.get(&host_name).await.unwrap();
        (pod.spec.as_ref().unwrap().containers[1].image.as_deref() == Some("envoy:2"))
            .then_some(pod)
    })
    .await;
    let keys: Vec<_> = last
        .spec
        .unwrap()
        .tolerations
        .unwrap()
        .into_iter()
        .filter_map(|t| t.key)
        .collect();
    assert!(!keys.iter().any(|k| k == "dedicated"), "{keys:?}");
}

#[tokio::test]
async fn readiness_gate_conditions_set_in_the_virtual_cluster_reach_the_host_pod() {
    let cluster = shared_cluster().await;
    let running = Running::start(cluster, "gates", "vc", json!({})).await;
    create_namespace(&running.virt, "shop").await;
    let pods = running.virtual_api::<Pod>("shop");
    let gate = "example.com/load-balancer-ready";
    create(
        &pods,
        json!({
            "metadata": {"name": "web"},
            "spec": {
                "readinessGates": [{"conditionType": gate}, {"conditionType": "Ready"}],
                "containers": [{"name": "app", "image": "nginx:1"}],
            },
        }),
    )
    .await;
    let copy: Pod = running.host_copy("shop", "web").await;
    let gates: Vec<String> = copy
        .spec
        .unwrap()
        .readiness_gates
        .unwrap_or_default()
        .into_iter()
        .map(|g| g.condition_type)
        .collect();
    // A gate on what the host decides is not the virtual cluster's to set.
    assert_eq!(gates, [gate]);

    // Running first (kwok runs the copy), so the status that comes back is the host's.
    eventually_within("web running in the virtual cluster", LONG, || async {
        let pod = pods.get("web").await.unwrap();
        (pod.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
    // What a load balancer controller in the virtual cluster does.
    pods.patch_status(
        "web",
        &PatchParams::default(),
        &Patch::Strategic(json!({"status": {"conditions": [
            {"type": gate, "status": "True", "reason": "TargetHealthy"}]}})),
    )
    .await
    .unwrap();
    let host = running.host_api::<Pod>();
    let host_name = running.host_name("shop", "web");
    let condition_of = |pod: &Pod| {
        pod.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == gate))
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    eventually_within("the gate condition on the host pod", LONG, || async {
        let pod = host.get(&host_name).await.unwrap();
        (condition_of(&pod) == Some(("True".into(), Some("TargetHealthy".into())))).then_some(())
    })
    .await;
    // The host's status coming back leaves the virtual pod's own condition as it set it.
    let before = pods.get("web").await.unwrap();
    assert_eq!(
        condition_of(&before),
        Some(("True".into(), Some("TargetHealthy".into())))
    );
    pods.patch_status(
        "web",
        &PatchParams::default(),
        &Patch::Strategic(json!({"status": {"conditions": [
            {"type": gate, "status": "False", "reason": "TargetUnhealthy"}]}})),
    )
    .await
    .unwrap();
    eventually_within(
        "the gate condition turned false on the host",
        LONG,
        || async {
            let pod = host.get(&host_name).await.unwrap();
            (condition_of(&pod) == Some(("False".into(), Some("TargetUnhealthy".into()))))
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        condition_of(&pods.get("web").await.unwrap()),
        Some(("False".into(), Some("TargetUnhealthy".into())))
    );
}
