//! What a namespace-syncing syncer may do on the host, asked with its own credentials (the
//! ServiceAccount token it runs with): everything it needs in the host namespaces its instance
//! holds, nothing anywhere else, and nothing more in a namespace once it is released.

use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use virtualcluster_crds::{VirtualCluster, keys};
use virtualcluster_tests::harness::{eventually, unique_name};
use virtualcluster_tests::{instance, kubeconfig, shared_cluster};

use crate::syncer::{Running, create, create_namespace, object};

/// The syncer's own client: the host kubeconfig it runs with.
async fn syncer_client(running: &Running) -> Client {
    let path = instance::instance_dir(running.dir(), &running.id.namespace, &running.id.name)
        .join("syncer")
        .join("host-kubeconfig");
    kubeconfig::client(&path).await.unwrap()
}

/// Whether `result` is the API server's refusal (403), by RBAC or by admission.
fn refused<T: std::fmt::Debug>(what: &str, result: Result<T, kube::Error>) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("{what}: expected a refusal (403), got {other:?}"),
    }
}

/// `kubectl auth can-i VERB RESOURCE -n NAMESPACE` as `client`.
async fn can_i(client: &Client, verb: &str, resource: &str, namespace: Option<&str>) -> bool {
    let review: SelfSubjectAccessReview = object(json!({
        "spec": {"resourceAttributes": {"verb": verb, "resource": resource,
                                        "namespace": namespace.unwrap_or_default()}}
    }));
    Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .is_some_and(|s| s.allowed)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_syncer_holds_rights_only_in_the_namespaces_its_instance_holds() {
    let cluster = shared_cluster().await;
    let host = cluster.client().await;
    virtualcluster_tests::crd::install(&host).await.unwrap();
    let prefix = unique_name("held");
    let (found, made, loose) = (
        format!("{prefix}-m-found"),
        format!("{prefix}-m-made"),
        format!("{prefix}-loose"),
    );
    let hosts: Api<Namespace> = Api::all(host.clone());
    for name in [&found, &loose] {
        create(&hosts, json!({"metadata": {"name": name}})).await;
        create(
            &Api::<Secret>::namespaced(host.clone(), name),
            json!({"metadata": {"name": "keep"}, "stringData": {"k": "v"}}),
        )
        .await;
    }
    let spec = json!({"sync": {"toHost": {"namespaces": {"enabled": true,
        "mappings": {"byName": {"m-*": format!("{prefix}-m-*")}}}}}});
    let running = Running::start(cluster, "rights", "vc", spec).await;

    // The existing namespace is imported, a new virtual one creates its host namespace, and a
    // ConfigMap made in it reaches the host: the syncer does what it needs there.
    create_namespace(&running.virt, "m-made").await;
    create(
        &Api::<ConfigMap>::namespaced(running.virt.clone(), "m-made"),
        json!({"metadata": {"name": "settings"}, "data": {"k": "v"}}),
    )
    .await;
    let copies: Api<ConfigMap> = Api::namespaced(host.clone(), &made);
    eventually("the ConfigMap's copy in the created namespace", || async {
        copies.get_opt("settings").await.unwrap()
    })
    .await;
    let imported: Api<Secret> = Api::namespaced(running.virt.clone(), "m-found");
    eventually("the host's Secret in the imported namespace", || async {
        imported.get_opt("keep").await.unwrap()
    })
    .await;

    let syncer = syncer_client(&running).await;
    for namespace in [&found, &made] {
        assert!(
            can_i(&syncer, "create", "pods", Some(namespace)).await,
            "{namespace}"
        );
        assert!(
            can_i(&syncer, "list", "secrets", Some(namespace)).await,
            "{namespace}"
        );
        Api::<Secret>::namespaced(syncer.clone(), namespace)
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("listing Secrets in held {namespace}: {e}"));
    }
    // Quota and limits are the operator's, wherever they are.
    for namespace in [&found, &made, &running.id.namespace] {
        for resource in ["resourcequotas", "limitranges"] {
            assert!(
                !can_i(&syncer, "delete", resource, Some(namespace)).await,
                "{resource} in {namespace}"
            );
        }
    }

    // Nothing where it holds nothing, and nothing cluster-wide.
    for namespace in ["kube-system", "default", loose.as_str()] {
        assert!(
            !can_i(&syncer, "get", "secrets", Some(namespace)).await,
            "{namespace}"
        );
        assert!(
            !can_i(&syncer, "create", "pods", Some(namespace)).await,
            "{namespace}"
        );
        refused(
            &format!("reading Secrets in {namespace}"),
            Api::<Secret>::namespaced(syncer.clone(), namespace)
                .list(&ListParams::default())
                .await,
        );
        refused(
            &format!("creating a pod in {namespace}"),
            Api::<Pod>::namespaced(syncer.clone(), namespace)
                .create(
                    &PostParams::default(),
                    &object(json!({"metadata": {"name": "intruder"},
                                   "spec": {"containers": [{"name": "c", "image": "x"}]}})),
                )
                .await,
        );
    }
    for resource in ["pods", "secrets", "configmaps", "services"] {
        assert!(!can_i(&syncer, "list", resource, None).await, "{resource}");
    }
    refused(
        "listing Secrets cluster-wide",
        Api::<Secret>::all(syncer.clone())
            .list(&ListParams::default())
            .await,
    );
    // Namespaces: it deletes only one its instance created, and changes no other's labels.
    refused(
        "deleting a namespace it did not create",
        Api::<Namespace>::all(syncer.clone())
            .delete(&loose, &DeleteParams::default())
            .await,
    );
    refused(
        "deleting a namespace it only imported",
        Api::<Namespace>::all(syncer.clone())
            .delete(&found, &DeleteParams::default())
            .await,
    );
    refused(
        "loosening a namespace's pod security",
        Api::<Namespace>::all(syncer.clone())
            .patch(
                &loose,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {
                    "pod-security.kubernetes.io/enforce": "privileged"}}})),
            )
            .await,
    );
    refused(
        "creating a namespace without its instance's marks",
        Api::<Namespace>::all(syncer.clone())
            .create(
                &PostParams::default(),
                &object(json!({"metadata": {"name": format!("{prefix}-m-bare")}})),
            )
            .await,
    );
    assert!(
        hosts
            .get(&loose)
            .await
            .unwrap()
            .labels()
            .get(keys::SYNCED_BY_UID)
            .is_none(),
        "{loose} was marked"
    );

    // Released: the imported namespace comes to hold a VirtualCluster, so the instance may not
    // hold it any more, and the syncer's rights there go.
    create(
        &Api::<VirtualCluster>::namespaced(host.clone(), &found),
        json!({"apiVersion": "virtualcluster.dev/v1alpha1", "kind": "VirtualCluster",
               "metadata": {"name": "resident"}, "spec": {}}),
    )
    .await;
    eventually(
        "the syncer's rights in the released namespace to go",
        || async { (!can_i(&syncer, "list", "secrets", Some(&found)).await).then_some(()) },
    )
    .await;
    refused(
        "reading Secrets in the released namespace",
        Api::<Secret>::namespaced(syncer.clone(), &found)
            .list(&ListParams::default())
            .await,
    );
    // The created namespace is still held.
    assert!(can_i(&syncer, "list", "secrets", Some(&made)).await);
}
