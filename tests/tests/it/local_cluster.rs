//! The local control plane itself: what the other integration tests rely on.

use std::path::Path;
use std::process::Command;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Api;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use serde_json::json;
use virtualcluster_tests::cluster::State;
use virtualcluster_tests::harness::{eventually, is_status, wait_gone};
use virtualcluster_tests::{binaries, harness, kubeconfig, nodes, shared_cluster, unique_name};

#[tokio::test]
async fn reports_the_pinned_kubernetes_version() {
    let cluster = shared_cluster().await;
    let version = cluster.client().await.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, binaries::kubernetes_version().unwrap());
}

#[tokio::test]
async fn rbac_denies_until_a_binding_grants() {
    let cluster = shared_cluster().await;
    let client = cluster.client().await;
    let namespace = cluster.namespace("rbac").await;

    let service_accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("reader".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    service_accounts
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    let token = service_accounts
        .create_token_request(
            "reader",
            &PostParams::default(),
            &TokenRequest {
                spec: Some(TokenRequestSpec {
                    expiration_seconds: Some(600),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .status
        .and_then(|status| status.token)
        .expect("a token in the TokenRequest status");

    let mut config = kubeconfig::config(cluster.kubeconfig_path()).await.unwrap();
    config.auth_info = serde_json::from_value(json!({ "token": token })).unwrap();
    let reader = kube::Client::try_from(config).unwrap();
    let pods: Api<Pod> = Api::namespaced(reader, &namespace);

    let denied = pods
        .list(&ListParams::default())
        .await
        .expect_err("listing pods without a binding");
    assert!(
        is_status(&denied, 403),
        "expected 403 Forbidden, got {denied:?}"
    );

    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "reader-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(client, &namespace)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    // The authorizer learns about the binding through a watch, so allow it a moment.
    eventually("the view binding to take effect", || async {
        match pods.list(&ListParams::default()).await {
            Ok(_) => Some(()),
            Err(err) if is_status(&err, 403) => None,
            Err(err) => panic!("listing pods with the view binding: {err:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn deleted_namespace_goes_away_with_its_contents() {
    let cluster = shared_cluster().await;
    let client = cluster.client().await;
    let namespace = cluster.namespace("ns-delete").await;
    let config_map = ConfigMap {
        metadata: ObjectMeta {
            name: Some("content".into()),
            ..Default::default()
        },
        data: Some([("key".to_owned(), "value".to_owned())].into()),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &config_map)
        .await
        .unwrap();

    let namespaces: Api<Namespace> = Api::all(client);
    namespaces
        .delete(&namespace, &DeleteParams::default())
        .await
        .unwrap();
    // Only the namespace controller (in kube-controller-manager) empties it and removes the
    // `kubernetes` finalizer.
    wait_gone("the namespace to be removed", &namespaces, &namespace).await;
}

#[tokio::test]
async fn dependents_of_a_deleted_owner_are_garbage_collected() {
    let cluster = shared_cluster().await;
    let client = cluster.client().await;
    let namespace = cluster.namespace("gc").await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client, &namespace);

    let owner = config_maps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("owner".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let dependent: ConfigMap = serde_json::from_value(json!({
        "metadata": {
            "name": "dependent",
            "ownerReferences": [{
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": "owner",
                "uid": owner.metadata.uid.unwrap(),
            }],
        },
    }))
    .unwrap();
    config_maps
        .create(&PostParams::default(), &dependent)
        .await
        .unwrap();

    // Background propagation: the API server deletes the owner at once and leaves the
    // dependent to the garbage collector.
    config_maps
        .delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    wait_gone(
        "the dependent to be garbage-collected",
        &config_maps,
        "dependent",
    )
    .await;
}

#[tokio::test]
async fn pods_are_scheduled_to_kwok_nodes_and_run() {
    let cluster = shared_cluster().await;
    let client = cluster.client().await;
    let namespace = cluster.namespace("pod").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "sleeper"},
        "spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();

    let node_name = eventually("the pod to be Running", || async {
        let pod = pods.get("sleeper").await.unwrap();
        let phase = pod.status.and_then(|s| s.phase);
        (phase.as_deref() == Some("Running"))
            .then(|| pod.spec.unwrap().node_name.expect("running pod has a node"))
    })
    .await;
    let node = Api::<Node>::all(client).get(&node_name).await.unwrap();
    let annotations = node.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations.get(nodes::KWOK_ANNOTATION).map(String::as_str),
        Some("fake"),
        "node {node_name}"
    );
    assert!(
        node_name.starts_with(nodes::NODE_NAME_PREFIX),
        "{node_name}"
    );
}

/// Runs `down DIR` when dropped, so that a failing test does not leave a cluster behind.
struct DownOnDrop<'a>(&'a Path);

impl Drop for DownOnDrop<'_> {
    fn drop(&mut self) {
        let _ = local_cluster(&["down", &self.0.display().to_string()]);
    }
}

fn local_cluster(args: &[&str]) -> std::process::Output {
    let output = Command::new(env!("CARGO_BIN_EXE_local-cluster"))
        .args(args)
        .output()
        .expect("running local-cluster");
    eprintln!(
        "local-cluster {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[tokio::test]
async fn cli_up_and_down_manage_exactly_their_own_cluster() {
    let shared = shared_cluster().await;
    let dir = harness::clusters_root().join(unique_name("cli"));
    let dir_arg = dir.display().to_string();
    let _guard = DownOnDrop(&dir);

    // The binaries the shared cluster uses; `up` would otherwise look them up itself.
    let up = tokio::task::spawn_blocking({
        let dir_arg = dir_arg.clone();
        let bin_dir = shared.bin_dir().to_owned();
        move || {
            Command::new(env!("CARGO_BIN_EXE_local-cluster"))
                .args(["up", &dir_arg])
                .env("VIRTUALCLUSTER_BIN_DIR", bin_dir)
                .output()
                .expect("running local-cluster up")
        }
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&up.stderr);
    assert!(
        up.status.success(),
        "local-cluster up failed: {}\n{stderr}",
        up.status
    );
    let stdout = String::from_utf8(up.stdout).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    assert_eq!(
        stdout.lines().last(),
        Some(kubeconfig.to_str().unwrap()),
        "stdout: {stdout}"
    );

    let get_ns = Command::new(shared.bin_dir().join("kubectl"))
        .args([
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "get",
            "namespaces",
            "-o",
            "name",
        ])
        .output()
        .unwrap();
    let namespaces = String::from_utf8_lossy(&get_ns.stdout);
    assert!(
        get_ns.status.success(),
        "kubectl: {}",
        String::from_utf8_lossy(&get_ns.stderr)
    );
    assert!(
        namespaces.lines().any(|l| l == "namespace/default"),
        "{namespaces}"
    );

    let state = State::read(&dir).unwrap().expect("state.json");
    let names: Vec<_> = state.processes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["etcd", "kube-apiserver", "kube-controller-manager"]);
    assert!(state.processes.iter().all(|p| p.is_running()));

    let down = local_cluster(&["down", &dir_arg]);
    assert!(down.status.success());
    for process in &state.processes {
        assert!(
            !process.is_running(),
            "{} (pid {}) survived down",
            process.name,
            process.pid
        );
    }
    // Idempotent, and it stopped nothing of the shared cluster.
    assert!(local_cluster(&["down", &dir_arg]).status.success());
    let version = shared
        .client()
        .await
        .apiserver_version()
        .await
        .expect("shared cluster still answers");
    assert_eq!(version.git_version, binaries::kubernetes_version().unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}
