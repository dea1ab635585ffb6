//! PersistentVolumeClaims: the claim is made on the host, where storage is; its status flows
//! back.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PersistentVolumeClaimStatus};

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
}
