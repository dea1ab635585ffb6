//! PersistentVolumeClaims: the claim is made on the host, where storage is; its status flows
//! back, and a fake volume in the virtual cluster stands for the host volume it is bound to.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    FlexPersistentVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeClaimStatus, PersistentVolumeSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use virtualcluster_crds::keys;

use super::Target;

pub fn host_claim(claim: &PersistentVolumeClaim, target: &Target) -> PersistentVolumeClaim {
    let namespace = claim.metadata.namespace.as_deref().unwrap_or_default();
    let mut spec = claim.spec.clone().unwrap_or_default();
    // Virtual volumes do not exist on the host; the host binds its own.
    spec.volume_name = None;
    // Sources other than a claim of the same namespace are refused before (`sync::storage`).
    if let Some(source) = spec.data_source.as_mut() {
        source.name = target.host_name(namespace, &source.name);
    }
    if let Some(source) = spec.data_source_ref.as_mut() {
        source.name = target.host_name(namespace, &source.name);
    }
    PersistentVolumeClaim {
        metadata: target.copy_meta(&claim.metadata),
        spec: Some(spec),
        status: None,
    }
}

/// The status the virtual claim should show: `None` when it shows it.
pub fn virtual_status(
    host: &PersistentVolumeClaim,
    current: Option<&PersistentVolumeClaimStatus>,
) -> Option<PersistentVolumeClaimStatus> {
    let host = host.status.clone().unwrap_or_default();
    let current = current.cloned().unwrap_or_default();
    let wanted = PersistentVolumeClaimStatus {
        phase: host.phase,
        capacity: host.capacity,
        access_modes: host.access_modes,
        conditions: host.conditions,
        ..current.clone()
    };
    (wanted != current).then_some(wanted)
}

/// The virtual cluster's stand-in for the host volume that claim `copy` (the host copy of
/// virtual claim `claim`) is bound to: of its size, access modes, mode and class, bound to the
/// virtual claim, named as the host volume; `None` until the copy is bound. Nothing uses its
/// source: pods run on the host, with the host claim.
pub fn fake_volume(
    claim: &PersistentVolumeClaim,
    copy: &PersistentVolumeClaim,
) -> Option<PersistentVolume> {
    let host = copy.status.as_ref()?;
    if host.phase.as_deref() != Some("Bound") {
        return None;
    }
    let name = copy.spec.as_ref()?.volume_name.clone()?;
    let spec = claim.spec.clone().unwrap_or_default();
    Some(PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(BTreeMap::from([(
                keys::FAKE_VOLUME.to_owned(),
                "true".to_owned(),
            )])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: host.capacity.clone(),
            access_modes: host.access_modes.clone().or(spec.access_modes),
            storage_class_name: spec.storage_class_name,
            volume_mode: spec.volume_mode,
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: claim.metadata.namespace.clone(),
                name: claim.metadata.name.clone(),
                uid: claim.metadata.uid.clone(),
                ..Default::default()
            }),
            // The syncer removes it with its claim; nothing in the virtual cluster reclaims it.
            persistent_volume_reclaim_policy: Some("Retain".into()),
            flex_volume: Some(FlexPersistentVolumeSource {
                driver: FAKE_DRIVER.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    })
}

/// The driver the fake volumes name (none runs: their pods use the host claim).
pub const FAKE_DRIVER: &str = "virtualcluster.dev/fake";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::target;

    #[test]
    fn clones_name_their_source_on_the_host_and_status_flows_back() {
        let claim: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "copy", "namespace": "shop"},
            "spec": {"volumeName": "pv-virtual", "accessModes": ["ReadWriteOnce"],
                     "dataSource": {"kind": "PersistentVolumeClaim", "name": "data"},
                     "resources": {"requests": {"storage": "1Gi"}}}
        }))
        .unwrap();
        let host = host_claim(&claim, &target());
        let spec = host.spec.clone().unwrap();
        assert_eq!(spec.volume_name, None);
        assert_eq!(spec.data_source.unwrap().name, "data-x-shop-x-vc");

        let mut bound = host;
        bound.status = Some(PersistentVolumeClaimStatus {
            phase: Some("Bound".into()),
            ..Default::default()
        });
        let wanted = virtual_status(&bound, None).unwrap();
        assert_eq!(wanted.phase.as_deref(), Some("Bound"));
        assert_eq!(virtual_status(&bound, Some(&wanted)), None);
    }

    #[test]
    fn a_bound_copy_has_a_fake_volume_bound_to_the_virtual_claim() {
        let claim: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "data", "namespace": "shop", "uid": "virtual-uid"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast",
                     "resources": {"requests": {"storage": "1Gi"}}}
        }))
        .unwrap();
        let mut copy = host_claim(&claim, &target());
        assert_eq!(fake_volume(&claim, &copy), None, "not bound yet");
        copy.spec.as_mut().unwrap().volume_name = Some("pvc-host-uid".into());
        copy.status = Some(
            serde_json::from_value(serde_json::json!({
                "phase": "Bound", "capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce"]
            }))
            .unwrap(),
        );
        let volume = fake_volume(&claim, &copy).unwrap();
        assert_eq!(volume.metadata.name.as_deref(), Some("pvc-host-uid"));
        assert_eq!(volume.metadata.labels.unwrap()[keys::FAKE_VOLUME], "true");
        let spec = volume.spec.unwrap();
        assert_eq!(spec.capacity.unwrap()["storage"].0, "2Gi");
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
        let bound_to = spec.claim_ref.unwrap();
        assert_eq!(
            (
                bound_to.namespace.as_deref(),
                bound_to.name.as_deref(),
                bound_to.uid.as_deref()
            ),
            (Some("shop"), Some("data"), Some("virtual-uid"))
        );
        assert_eq!(spec.flex_volume.unwrap().driver, FAKE_DRIVER);
    }
}
