//! Patches (`spec.sync.*.patches`) on a running instance: the documented pod patches reach
//! the host copy and what comes back shows virtual names; hostile patches are stopped by the
//! engine's limits or held to the instance's rules, and the syncer goes on syncing; a patch
//! that does not compile is refused by the operator.

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use virtualcluster_crds::VirtualCluster;
use virtualcluster_crds::keys;
use virtualcluster_tests::harness::{eventually_within, unique_name};
use virtualcluster_tests::kubectl::Kubectl;
use virtualcluster_tests::nodes::{self, cri_log_line};
use virtualcluster_tests::shared_cluster;

use crate::isolation::{invalid, refused, warned};
use crate::syncer::{FIELD_MANAGER, LONG, Running, create, create_namespace};

fn pod(name: &str, labels: serde_json::Value, annotations: serde_json::Value) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {"containers": [{"name": "nginx", "image": "registry.k8s.io/pause:3.10"}]},
    })
}

#[tokio::test]
async fn the_documented_pod_patches_change_the_host_copy_and_names_come_back() {
    let cluster = shared_cluster().await;
    let patches = json!([
        {"path": "spec.containers[*].name", "expression": "\"my-prefix-\"+value",
         "reverseExpression": "value.slice(\"my-prefix-\".length)"},
        {"path": "metadata.labels[\"my-new-label\"]",
         "expression": "valueExists ? value + \"-changed\" : \"new-label-value\""},
        {"path": "metadata.labels[\"conditional-label\"]",
         "expression": "context.virtualObject.metadata?.labels?.['my-label'] ? 'my-value' : null"},
        {"path": "metadata.annotations[\"encoded-value\"]", "expression": "btoa(value)"},
        {"path": "metadata.annotations[\"decoded-value\"]", "expression": "atob(value)"},
        {"path": "metadata.annotations[\"instance\"]", "expression": "context.vcluster.name"},
        {"path": "metadata.annotations[\"my-secret-ref\"]",
         "reference": {"apiVersion": "v1", "kind": "Secret"}},
    ]);
    let running = Running::start(
        cluster,
        "patches",
        "vc",
        json!({"sync": {
            "toHost": {
                "pods": {"patches": patches},
                "configMaps": {"all": true, "patches": [
                    {"path": "data[\"greeting\"]", "expression": "value.toUpperCase()"},
                ]},
                // Neither may widen the Service beyond the instance or change its type.
                "services": {"patches": [
                    {"path": "spec.selector", "expression": "({app: 'anything'})"},
                    {"path": "spec.type", "expression": "'LoadBalancer'"},
                ]},
            },
            "fromHost": {"storageClasses": {"enabled": true, "patches": [
                {"path": "metadata.labels[\"shown-by\"]", "expression": "context.vcluster.name"},
            ]}},
        }}),
    )
    .await;
    create_namespace(&running.virt, "shop").await;
    create(
        &running.virtual_api::<Secret>("shop"),
        json!({"metadata": {"name": "db-credentials"}, "stringData": {"password": "p"}}),
    )
    .await;
    let annotations = json!({
        "encoded-value": "my-value",
        "decoded-value": "bXktdmFsdWU=",
        "my-secret-ref": "db-credentials",
    });
    let pods = running.virtual_api::<Pod>("shop");
    create(
        &pods,
        pod("web", json!({"my-label": "yes"}), annotations.clone()),
    )
    .await;
    create(
        &pods,
        pod("plain", json!({"my-new-label": "had"}), annotations),
    )
    .await;

    let web: Pod = running.host_copy("shop", "web").await;
    let spec = web.spec.as_ref().unwrap();
    assert_eq!(spec.containers[0].name, "my-prefix-nginx");
    let labels = web.labels();
    assert_eq!(labels["my-new-label"], "new-label-value");
    assert_eq!(labels["conditional-label"], "my-value");
    assert_eq!(labels["my-label"], "yes");
    let notes = web.annotations();
    assert_eq!(notes["encoded-value"], "bXktdmFsdWU=");
    assert_eq!(notes["decoded-value"], "my-value");
    assert_eq!(notes["instance"], "vc");
    let secret_host_name = running.host_name("shop", "db-credentials");
    assert_eq!(notes["my-secret-ref"], secret_host_name);
    // The instance's marks are the syncer's whatever the patches did.
    assert!(marks_of(&web, &running), "{labels:?}");

    let plain: Pod = running.host_copy("shop", "plain").await;
    assert_eq!(plain.labels()["my-new-label"], "had-changed");
    assert!(!plain.labels().contains_key("conditional-label"));

    // The Secret the reference names is synced, as one the pod uses.
    let secret: Secret = running.host_copy("shop", "db-credentials").await;
    assert_eq!(secret.name_any(), secret_host_name);

    // Its status comes back with the container's virtual name (kwok runs the host copy).
    let status = eventually_within("web's container status", LONG, || async {
        let pod = pods.get("web").await.unwrap();
        pod.status?.container_statuses.filter(|s| !s.is_empty())
    })
    .await;
    assert_eq!(status[0].name, "nginx");

    // Other kinds take patches too, within the same rules.
    create(
        &running.virtual_api::<ConfigMap>("shop"),
        json!({"metadata": {"name": "greet"}, "data": {"greeting": "hello"}}),
    )
    .await;
    let greet: ConfigMap = running.host_copy("shop", "greet").await;
    assert_eq!(greet.data.unwrap()["greeting"], "HELLO");
    create(
        &running.virtual_api::<Service>("shop"),
        json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"},
               "ports": [{"port": 80}]}}),
    )
    .await;
    let service: Service = running.host_copy("shop", "web").await;
    let spec = service.spec.unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    let selector = spec.selector.unwrap();
    assert_eq!(selector["app"], "anything");
    assert_eq!(selector[keys::SYNCED_BY_UID], running.id.uid);
    let note = warned(&running.virt, "shop", "web", "PatchRefused").await;
    assert!(note.contains("type"), "{note}");
    let class_name = unique_name("patched-class");
    create(
        &Api::<StorageClass>::all(running.host.clone()),
        json!({"metadata": {"name": class_name}, "provisioner": "example.com/none"}),
    )
    .await;
    let classes = Api::<StorageClass>::all(running.virt.clone());
    let shown = eventually_within(
        "the host StorageClass in the virtual cluster",
        LONG,
        || async { classes.get_opt(&class_name).await.unwrap() },
    )
    .await;
    assert_eq!(shown.labels()["shown-by"], "vc");
    Api::<StorageClass>::all(running.host.clone())
        .delete(&class_name, &Default::default())
        .await
        .unwrap();

    // And the tenant reaches it by that name: kubectl logs goes to the renamed host container.
    let files = cluster.dir().join("kwok").join(unique_name("patches"));
    std::fs::create_dir_all(&files).unwrap();
    let log = files.join("web.log");
    std::fs::write(
        &log,
        cri_log_line(chrono::Utc::now(), "stdout", "patched hello"),
    )
    .unwrap();
    nodes::pod_rule(
        &cluster.client().await,
        "Logs",
        &running.id.namespace,
        &running.host_name("shop", "web"),
        json!({"logs": [{"containers": ["my-prefix-nginx"], "logsFile": log.display().to_string()}]}),
    )
    .await
    .unwrap();
    let kubectl = Kubectl {
        binary: cluster.bin_dir().join("kubectl"),
        kubeconfig: running.kubeconfig.clone(),
        namespace: "shop".into(),
    };
    let logged = eventually_within("kubectl logs web -c nginx", LONG, || async {
        let out = kubectl
            .run(&["logs", "web", "-c", "nginx"], None)
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            eprintln!("kubectl logs: {}", String::from_utf8_lossy(&out.stderr));
        }
        (out.status.success() && stdout.contains("patched hello")).then_some(stdout)
    })
    .await;
    assert_eq!(logged.trim(), "patched hello");
}

/// Whether host pod `pod` carries its instance's copy labels.
fn marks_of(pod: &Pod, running: &Running) -> bool {
    virtualcluster_crds::marks::is_copy_of(&running.id, pod.labels())
}

#[tokio::test]
async fn hostile_patches_are_stopped_or_refused_and_the_syncer_goes_on() {
    let cluster = shared_cluster().await;
    let patches = json!([
        {"path": "metadata.annotations[\"slow\"]", "expression": "(() => { while (true) {} })()"},
        {"path": "metadata.annotations[\"big\"]", "expression": "'x'.repeat(1 << 26)"},
        {"path": "spec.hostNetwork",
         "expression": "context.virtualObject.metadata.labels?.net ? true : value"},
        {"path": "spec.volumes[*].secret.secretName",
         "expression": "context.virtualObject.metadata.labels?.steal ? 'vc-' + context.vcluster.name : value"},
        {"path": "spec.serviceAccountName", "expression": "context.vcluster.name + '-syncer'"},
        {"path": "metadata.labels[\"virtualcluster.dev/instance\"]", "expression": "'other'"},
        {"path": "metadata.labels[\"still\"]", "expression": "'applied'"},
        {"path": "spec.volumes", "expression": "context.virtualObject.metadata.labels?.token \
            ? [...(value ?? []), {name: 't', projected: {sources: [{serviceAccountToken: {path: 't'}}]}}] \
            : value"},
    ]);
    let running = Running::start(
        cluster,
        "patches-hostile",
        "vc",
        json!({"sync": {"toHost": {"pods": {"patches": patches}}}}),
    )
    .await;
    create_namespace(&running.virt, "shop").await;
    let pods = running.virtual_api::<Pod>("shop");
    create(&pods, pod("ok", json!({}), json!({}))).await;

    // Each evaluation is stopped by its limit; the pod syncs without those two patches.
    let ok: Pod = running.host_copy("shop", "ok").await;
    assert!(!ok.annotations().contains_key("slow"));
    assert!(!ok.annotations().contains_key("big"));
    // The patches after them still apply.
    assert_eq!(ok.labels()["still"], "applied");
    let note = warned(&running.virt, "shop", "ok", "PatchFailed").await;
    assert!(
        note.contains("spec.sync.toHost.pods.patches[0]") && note.contains("stopped after 50 ms"),
        "{note}"
    );
    assert!(
        note.contains("spec.sync.toHost.pods.patches[1]") && note.contains("ran out of"),
        "{note}"
    );
    // What the syncer decides stays its own: the account, and the instance's marks.
    assert_ne!(
        ok.spec.as_ref().unwrap().service_account_name.as_deref(),
        Some("vc-syncer")
    );
    assert!(marks_of(&ok, &running), "{:?}", ok.labels());
    let note = warned(&running.virt, "shop", "ok", "PatchRefused").await;
    assert!(note.contains("spec.serviceAccountName"), "{note}");

    // A patch that makes a pod break the Pod Security level, or name what the pod does not
    // use (here the instance's own kubeconfig Secret), is refused like any such pod.
    create(&pods, pod("net", json!({"net": "yes"}), json!({}))).await;
    let note = refused(&running, "shop", "net", "PodSecurityViolation").await;
    assert!(note.contains("host"), "{note}");
    create(
        &running.virtual_api::<Secret>("shop"),
        json!({"metadata": {"name": "mine"}, "stringData": {"a": "b"}}),
    )
    .await;
    let mut steal = pod("steal", json!({"steal": "yes"}), json!({}));
    steal["spec"]["volumes"] = json!([{"name": "s", "secret": {"secretName": "mine"}}]);
    create(&pods, steal).await;
    let note = refused(&running, "shop", "steal", "ReferenceNotAllowed").await;
    assert!(
        note.contains(&format!("Secret vc-{}", running.id.name)),
        "{note}"
    );

    // Nor may a patch give the host pod a host service-account token.
    create(&pods, pod("token", json!({"token": "yes"}), json!({}))).await;
    let note = refused(&running, "shop", "token", "ReferenceNotAllowed").await;
    assert!(note.contains("projected service-account token"), "{note}");

    // And the syncer goes on syncing.
    create(&pods, pod("later", json!({}), json!({}))).await;
    let _: Pod = running.host_copy("shop", "later").await;

    // A patch that does not compile is refused by the operator, naming where it is.
    let vcs: Api<VirtualCluster> = running.host_api();
    let broken = json!({
        "apiVersion": "virtualcluster.dev/v1alpha1",
        "kind": "VirtualCluster",
        "metadata": {"name": "broken"},
        "spec": {"sync": {"toHost": {"secrets": {"patches": [
            {"path": "data[\"a\"]", "expression": "value"},
            {"path": "data[\"b\"]", "expression": "value.("},
        ]}}}},
    });
    vcs.patch(
        "broken",
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&broken),
    )
    .await
    .unwrap();
    let message = invalid(&vcs, "broken", "InvalidPatch").await;
    assert!(
        message.starts_with("spec.sync.toHost.secrets.patches[1]: does not compile"),
        "{message}"
    );
}
