//! `spec.controlPlane`, `spec.syncer` and `spec.exportKubeConfig`: how the virtual control plane
//! and the syncer run on the host.

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// The virtual control plane: etcd, kube-apiserver and kube-controller-manager in one
/// StatefulSet in the VirtualCluster's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlane {
    /// Kubernetes version of the virtual cluster, e.g. `v1.37.2`. Defaults to the version the
    /// operator was built for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^v1\.[0-9]+\.[0-9]+$"))]
    pub version: Option<String>,
    /// Images of the control plane's containers; each defaults to the official image of the
    /// chosen version.
    #[serde(default)]
    pub images: ControlPlaneImages,
    /// Where etcd keeps its data.
    #[serde(default)]
    pub persistence: Persistence,
    /// The Service in front of the virtual API server.
    #[serde(default)]
    pub service: ControlPlaneService,
    /// The virtual API server's service IP range (CIDR). Set it to the host's range so virtual
    /// Services can carry the ClusterIPs of their host copies.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "serviceCIDR"
    )]
    #[schemars(length(max = 64))]
    pub service_cidr: Option<String>,
    /// Compute resources of the control plane's containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// Images of the control plane's containers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneImages {
    /// etcd image. Defaults to the official etcd image for the chosen Kubernetes version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<String>,
    /// kube-apiserver image. Defaults to `registry.k8s.io/kube-apiserver:<version>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server: Option<String>,
    /// kube-controller-manager image. Defaults to
    /// `registry.k8s.io/kube-controller-manager:<version>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_manager: Option<String>,
}

/// Where etcd keeps its data.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Persistence {
    /// Keep etcd's data in a PersistentVolumeClaim. When false, it lives in an emptyDir and is
    /// lost when the control plane pod goes.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Size of the volume claim.
    #[serde(default = "default_size")]
    #[schemars(length(max = 32))]
    pub size: String,
    /// StorageClass of the volume claim; the host's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for Persistence {
    fn default() -> Self {
        Self {
            enabled: true,
            size: default_size(),
            storage_class_name: None,
        }
    }
}

/// Type of the Service in front of the virtual API server.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

/// The Service in front of the virtual API server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneService {
    /// Service type: ClusterIP (default), NodePort or LoadBalancer.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
}

/// The instance's syncer Deployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Syncer {
    /// Number of syncer pods; they elect a leader, and only the leader syncs.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 5))]
    pub replicas: i32,
    /// Syncer image. Defaults to the image the operator was configured with; another must be
    /// one the platform allows (by default any tag or digest of that image's repository), since
    /// the syncer runs with the instance's host credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Compute resources of the syncer container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for Syncer {
    fn default() -> Self {
        Self {
            replicas: 1,
            image: None,
            resources: None,
        }
    }
}

/// How the kubeconfig Secret reaches the virtual API server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExportKubeConfig {
    /// Server address written into the kubeconfig, instead of the Service's in-cluster address,
    /// e.g. `https://vc.example.com:443`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub server: Option<String>,
}

fn yes() -> bool {
    true
}

fn one() -> i32 {
    1
}

fn default_size() -> String {
    "5Gi".into()
}
