//! `status`: what the operator observed and did, in the conventions kubectl, Argo CD and Flux
//! read (`observedGeneration`, a `Ready` condition, a phase).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Observed state of a VirtualCluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the instance is in its life: Pending, Provisioning, Ready, Failed or Deleting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Standard conditions: ConfigValid, ControlPlaneReady, SyncerReady and Ready (and
    /// Reconciling, Stalled; NamespacesAvailable with namespace syncing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Name of the Secret (in the VirtualCluster's namespace) holding the admin kubeconfig.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_config_secret: Option<String>,
    /// While Deleting: what the cleanup has left to do (the syncer to stop, host objects and
    /// namespaces to delete, imported namespaces and objects to release).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cleanup_remaining: Vec<String>,
}

/// Where a VirtualCluster is in its life.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Accepted, nothing provisioned yet.
    Pending,
    /// The control plane or the syncer is being created or is not ready yet.
    Provisioning,
    /// The virtual cluster is usable.
    Ready,
    /// The configuration is invalid or provisioning failed; see the conditions.
    Failed,
    /// The selective cleanup is running.
    Deleting,
}
