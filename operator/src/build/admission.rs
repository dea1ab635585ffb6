//! Admission in the virtual API server: the PodSecurity plugin holds every virtual namespace to
//! the instance's Pod Security Standard, so a tenant's `kubectl apply` of a pod that breaks it
//! gets the API server's own error. The configuration is a file, so it lives in a ConfigMap the
//! control plane mounts.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::json;
use virtualcluster_crds::instance::Component;
use virtualcluster_crds::v1alpha1::PodSecurityStandard;

use super::Instance;

/// Key of the admission configuration in the control plane's ConfigMap.
pub const ADMISSION_CONFIG_KEY: &str = "admission.yaml";

/// The `AdmissionConfiguration` for `level`: enforced, audited and warned about in every
/// namespace with no label of its own, with no exemption (the project's own CoreDNS passes
/// `restricted`). A tenant who labels a virtual namespace less strictly gets past this plugin,
/// not past the syncer's check of the same level.
pub fn admission_configuration(level: PodSecurityStandard) -> String {
    let level = level.as_str();
    let config = json!({
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "AdmissionConfiguration",
        "plugins": [{
            "name": "PodSecurity",
            "configuration": {
                "apiVersion": "pod-security.admission.config.k8s.io/v1",
                "kind": "PodSecurityConfiguration",
                "defaults": {
                    "enforce": level, "enforce-version": "latest",
                    "audit": level, "audit-version": "latest",
                    "warn": level, "warn-version": "latest",
                },
                "exemptions": {"usernames": [], "runtimeClasses": [], "namespaces": []},
            },
        }],
    });
    serde_yaml::to_string(&config).expect("the admission configuration always serializes")
}

/// The control plane's ConfigMap: its admission configuration.
pub fn config_map(instance: &Instance<'_>) -> ConfigMap {
    ConfigMap {
        metadata: instance.meta(
            instance.id().control_plane_config(),
            Component::ControlPlane,
        ),
        data: Some(BTreeMap::from([(
            ADMISSION_CONFIG_KEY.into(),
            admission_configuration(instance.valid.policy.pod_security),
        )])),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_namespace_defaults_to_the_level_in_every_mode() {
        let yaml = admission_configuration(PodSecurityStandard::Restricted);
        let value: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
        let defaults = &value["plugins"][0]["configuration"]["defaults"];
        for mode in ["enforce", "audit", "warn"] {
            assert_eq!(defaults[mode], "restricted", "{mode}");
            assert_eq!(defaults[format!("{mode}-version")], "latest", "{mode}");
        }
        assert_eq!(value["plugins"][0]["name"], "PodSecurity");
        let exemptions = &value["plugins"][0]["configuration"]["exemptions"];
        assert_eq!(exemptions["namespaces"], json!([]));
    }
}
