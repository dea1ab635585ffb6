//! A kind's sync turned off: once no syncer of the old configuration runs, the operator removes
//! exactly the instance's host copies of that kind (an Event says how many), and nothing else
//! of the kind in the namespace: not the host's own objects, not an object whose marks name the
//! instance but another UID.

use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use virtualcluster_crds::{VirtualCluster, keys, marks};
use virtualcluster_tests::harness::wait_gone;
use virtualcluster_tests::shared_cluster;

use crate::isolation::warned;
use crate::syncer::{Running, create, create_namespace, stop_syncer};

fn ingress(name: &str, labels: serde_json::Value) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"rules": [{"host": format!("{name}.example.com"), "http": {"paths": [{
            "path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "web", "port": {"number": 80}}},
        }]}}]},
    })
}

#[tokio::test]
async fn a_kind_turned_off_loses_exactly_the_instances_copies() {
    let cluster = shared_cluster().await;
    let running = Running::start(
        cluster,
        "turnedoff",
        "vc",
        json!({"sync": {"toHost": {"ingresses": {"enabled": true}}}}),
    )
    .await;
    create_namespace(&running.virt, "shop").await;
    create(
        &running.virtual_api::<Service>("shop"),
        json!({"metadata": {"name": "web"},
               "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
    )
    .await;
    create(
        &running.virtual_api::<Ingress>("shop"),
        ingress("web", json!({})),
    )
    .await;
    let copy: Ingress = running.host_copy("shop", "web").await;
    let config_map = running.id.syncer_config();
    let recorded = || async {
        let cm = running
            .host_api::<ConfigMap>()
            .get(&config_map)
            .await
            .unwrap();
        cm.metadata.annotations.unwrap_or_default()[keys::SYNCED_KINDS].clone()
    };
    assert!(
        recorded().await.contains("\"ingresses\""),
        "{}",
        recorded().await
    );

    // Decoys in the same namespace: the host's own Ingress, and one whose marks name this
    // instance by name but another UID.
    let host_ingresses = running.host_api::<Ingress>();
    create(&host_ingresses, ingress("hosts-own", json!({}))).await;
    let mut look_alike = marks::copy_labels(&running.id, "shop");
    look_alike.insert(keys::SYNCED_BY_UID.into(), "another-uid".into());
    create(
        &host_ingresses,
        ingress("look-alike", serde_json::to_value(&look_alike).unwrap()),
    )
    .await;

    // The syncer of the old configuration is gone (its Deployment rolls to the new one).
    let _ = stop_syncer(&running);
    let vcs: Api<VirtualCluster> = Api::namespaced(running.host.clone(), &running.id.namespace);
    vcs.patch(
        &running.id.name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"sync": {"toHost": {"ingresses": {"enabled": false}}}}})),
    )
    .await
    .unwrap();
    let copy_name = copy.metadata.name.clone().unwrap();
    wait_gone("the Ingress copy", &host_ingresses, &copy_name).await;
    let note = warned(
        &running.host,
        &running.id.namespace,
        &running.id.name,
        "CopiesRemoved",
    )
    .await;
    assert!(note.contains("removed 1 host copies"), "{note}");
    for decoy in ["hosts-own", "look-alike"] {
        assert!(
            host_ingresses.get_opt(decoy).await.unwrap().is_some(),
            "{decoy} was deleted"
        );
    }
    // Recorded as gone.
    virtualcluster_tests::harness::eventually("the record without Ingresses", || async {
        (!recorded().await.contains("\"ingresses\"")).then_some(())
    })
    .await;
}
