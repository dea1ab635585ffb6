//! Fake persistent volumes: a synced claim bound on the host shows in the virtual cluster
//! bound to a PersistentVolume of the host volume's name, size and class, which the claim's
//! `volumeName` names; the volume goes with the claim.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, DeleteParams};
use serde_json::json;
use virtualcluster_crds::keys;
use virtualcluster_tests::harness::{eventually_within, unique_name, wait_gone};
use virtualcluster_tests::shared_cluster;

use crate::syncer::{LONG, Running, create, create_namespace};

#[tokio::test]
async fn a_claim_bound_on_the_host_shows_a_bound_volume_in_the_virtual_cluster() {
    let cluster = shared_cluster().await;
    let running = Running::start(cluster, "fakepv", "vc", json!({})).await;
    create_namespace(&running.virt, "shop").await;
    let class = unique_name("manual");
    let claims = running.virtual_api::<PersistentVolumeClaim>("shop");
    create(
        &claims,
        json!({"metadata": {"name": "data"},
               "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                        "resources": {"requests": {"storage": "1Gi"}}}}),
    )
    .await;
    let copy: PersistentVolumeClaim = running.host_copy("shop", "data").await;

    // What a provisioner would make on the host, bound to the copy.
    let volume_name = unique_name("pv");
    let host_volumes: Api<PersistentVolume> = Api::all(running.host.clone());
    create(
        &host_volumes,
        json!({"metadata": {"name": volume_name},
               "spec": {"capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce"],
                        "storageClassName": class, "hostPath": {"path": "/tmp/fake-volumes"},
                        "claimRef": {"namespace": running.id.namespace,
                                     "name": copy.metadata.name}}}),
    )
    .await;

    let virtual_volumes: Api<PersistentVolume> = Api::all(running.virt.clone());
    let volume = eventually_within("the fake volume", LONG, || async {
        virtual_volumes.get_opt(&volume_name).await.unwrap()
    })
    .await;
    assert_eq!(
        volume.metadata.labels.clone().unwrap()[keys::FAKE_VOLUME],
        "true"
    );
    let spec = volume.spec.clone().unwrap();
    assert_eq!(spec.capacity.unwrap()["storage"].0, "2Gi");
    assert_eq!(spec.storage_class_name.as_deref(), Some(class.as_str()));
    let claim_ref = spec.claim_ref.unwrap();
    let claim = claims.get("data").await.unwrap();
    assert_eq!(
        (
            claim_ref.namespace.as_deref(),
            claim_ref.name.as_deref(),
            claim_ref.uid.as_ref()
        ),
        (Some("shop"), Some("data"), claim.metadata.uid.as_ref())
    );
    // The claim names it and shows the host's binding; the volume shows it bound.
    eventually_within("the virtual claim bound to its volume", LONG, || async {
        let claim = claims.get("data").await.unwrap();
        let named = claim.spec?.volume_name? == volume_name;
        let bound = claim.status?.phase.as_deref() == Some("Bound");
        (named && bound).then_some(())
    })
    .await;
    eventually_within("the fake volume Bound", LONG, || async {
        let volume = virtual_volumes.get(&volume_name).await.unwrap();
        (volume.status?.phase.as_deref() == Some("Bound")).then_some(())
    })
    .await;

    // Gone with its claim.
    claims
        .delete("data", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone("the fake volume", &virtual_volumes, &volume_name).await;
    host_volumes
        .delete(&volume_name, &DeleteParams::default())
        .await
        .unwrap();
}
