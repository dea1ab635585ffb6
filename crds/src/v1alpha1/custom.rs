//! `spec.sync.toHost.customResources` and `spec.sync.fromHost.customResources`: kinds the host's
//! CustomResourceDefinitions define, keyed like vcluster.yaml by `plural.group`
//! (`certificates.cert-manager.io`). The platform lists the kinds instances may sync (see
//! [`crate::policy::HostPolicy::custom_resources`]).

use std::collections::BTreeMap;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::cel;
use super::sync::{MAX_PATCHES, Patch};

/// How many custom resource kinds one direction may name.
pub const MAX_CUSTOM_RESOURCES: usize = 32;

/// Whether a custom resource's objects live in namespaces or in the cluster.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum CustomResourceScope {
    #[default]
    Namespaced,
    Cluster,
}

/// A custom resource kind created in the virtual cluster and synced to the host. Its CRD is
/// copied from the host into the virtual cluster; objects are renamed into the host namespace
/// of their virtual namespace, and their status comes back.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = cel::to_host_custom_resource_scope())]
pub struct ToHostCustomResource {
    /// Whether this kind is synced.
    #[serde(default)]
    pub enabled: bool,
    /// `Namespaced`, the only scope synced to the host (a tenant's cluster-scoped object would
    /// be every namespace's on the host).
    #[serde(default)]
    pub scope: CustomResourceScope,
    /// Changes made to each object as it is synced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_PATCHES))]
    pub patches: Vec<Patch>,
    /// Only objects that carry these labels are synced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelsSelector>,
}

/// Objects chosen by their labels.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LabelsSelector {
    /// Labels an object must carry, each with this value.
    #[serde(default)]
    #[schemars(extend(
        "maxProperties" = 32,
        "additionalProperties" = { "type": "string", "maxLength": 63 }
    ))]
    pub labels: BTreeMap<String, String>,
}

/// A custom resource kind of the host shown in the virtual cluster, kept to the host's content.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = cel::from_host_custom_resource_mappings())]
pub struct FromHostCustomResource {
    /// Whether this kind is shown.
    #[serde(default)]
    pub enabled: bool,
    /// `Cluster`: every host object is shown. `Namespaced`: those `mappings` name.
    #[serde(default)]
    pub scope: CustomResourceScope,
    /// Changes made to each object as it is shown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_PATCHES))]
    pub patches: Vec<Patch>,
    /// Which host objects of a namespaced kind are shown, and where.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mappings: Option<CustomResourceMappings>,
}

/// Host objects to virtual ones.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CustomResourceMappings {
    /// From host `namespace/name` to virtual `namespace/name`, or host `namespace/*` to virtual
    /// `namespace/*` (every object of that host namespace, same names).
    #[serde(default)]
    #[schemars(extend(
        "maxProperties" = 32,
        "additionalProperties" = { "type": "string", "maxLength": 317 }
    ))]
    #[x_kube(validation = cel::custom_resource_mappings())]
    pub by_name: BTreeMap<String, String>,
}
