//! `virtualcluster.dev/v1alpha1`.

pub mod cel;
mod control_plane;
mod custom;
mod policies;
mod status;
mod sync;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

pub use control_plane::{
    ControlPlane, ControlPlaneImages, ControlPlaneService, ExportKubeConfig, Persistence,
    ServiceType, Syncer,
};
pub use custom::{
    CustomResourceMappings, CustomResourceScope, FromHostCustomResource, LabelsSelector,
    MAX_CUSTOM_RESOURCES, ToHostCustomResource,
};
pub use policies::{
    IpBlock, LimitRangePolicy, NetworkPolicyPolicy, OutgoingConnections, PRIVATE_RANGES,
    PodSecurityStandard, Policies, ResourceQuotaPolicy,
};
pub use status::{Phase, VirtualClusterStatus};
pub use sync::{
    EnabledSync, FromHost, MAX_PATCHES, NamespaceMappings, NamespaceSync, NodesSync,
    OptInPatchedSync, OptInSync, Patch, PatchReference, PatchedSync, PodSync, ReferencedSync, Sync,
    ToHost,
};

/// A virtual Kubernetes cluster: its own control plane on the host, and a syncer that runs its
/// workloads in host namespaces.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "virtualcluster.dev",
    version = "v1alpha1",
    kind = "VirtualCluster",
    namespaced,
    shortname = "vc",
    category = "all",
    status = "VirtualClusterStatus",
    doc = "A virtual Kubernetes cluster: its own control plane on the host, and a syncer that runs its workloads in host namespaces.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Where the instance is in its life"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Whether the virtual cluster is usable"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = cel::instance_name(),
    validation = cel::host_names(),
    validation = cel::no_reserved_host_namespace(),
    validation = cel::distinct_host_namespaces()
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualClusterSpec {
    /// What the syncer copies between the virtual cluster and the host, shaped like the `sync`
    /// section of a vcluster.yaml.
    #[serde(default)]
    pub sync: Sync,
    /// The virtual control plane: Kubernetes version, images, persistence, Service and resources.
    #[serde(default)]
    pub control_plane: ControlPlane,
    /// The instance's syncer: replicas, image and resources.
    #[serde(default)]
    pub syncer: Syncer,
    /// What the instance's workloads may do on the host: pod security, quotas, limits and
    /// network isolation, shaped like the `policies` section of a vcluster.yaml.
    #[serde(default)]
    pub policies: Policies,
    /// How the kubeconfig Secret reaches the virtual API server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_kube_config: Option<ExportKubeConfig>,
}

/// The CRD as YAML, exactly as committed in `crds/virtualcluster.yaml`.
pub fn crd_yaml() -> String {
    let yaml = serde_yaml::to_string(&crd_value()).expect("a CRD always serializes");
    format!(
        "# Generated from the Rust types by `cargo run -p virtualcluster-crds --bin crdgen`; do not edit.\n---\n{yaml}"
    )
}

/// The CRD as served: the types' schema, descriptions unwrapped, unknown keys under
/// `spec.sync` kept for the policy that refuses them ([`crate::sync_keys`]).
pub fn crd_value() -> serde_json::Value {
    use kube::CustomResourceExt;
    let mut crd = serde_json::to_value(VirtualCluster::crd()).expect("a CRD always serializes");
    unwrap_descriptions(&mut crd);
    for version in crd["spec"]["versions"].as_array_mut().into_iter().flatten() {
        crate::sync_keys::preserve_unknown_fields(&mut version["schema"]["openAPIV3Schema"]);
    }
    crd
}

/// Doc comments wrap at 100 columns; `kubectl explain` wraps descriptions itself, so each
/// paragraph becomes one line.
fn unwrap_descriptions(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    serde_json::Value::String(s) if key == "description" => {
                        let paragraphs: Vec<String> = s
                            .split("\n\n")
                            .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
                            .collect();
                        *s = paragraphs.join("\n\n");
                    }
                    _ => unwrap_descriptions(v),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}
