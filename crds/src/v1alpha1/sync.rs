//! `spec.sync`: what the syncer copies between the virtual cluster and the host. Shaped like the
//! `sync` section of a vcluster.yaml, with the same defaults, so a user can paste theirs.

use std::collections::BTreeMap;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::cel;
use super::custom::{FromHostCustomResource, MAX_CUSTOM_RESOURCES, ToHostCustomResource};

/// What the syncer copies between the virtual cluster and the host.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Sync {
    /// Kinds created in the virtual cluster and synced to the host.
    #[serde(default)]
    pub to_host: ToHost,
    /// Kinds read from the host and shown in the virtual cluster.
    #[serde(default)]
    pub from_host: FromHost,
}

/// A kind that is synced unless turned off.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnabledSync {
    /// Whether this kind is synced. On by default.
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for EnabledSync {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// A kind that is synced only when turned on.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OptInSync {
    /// Whether this kind is synced. Off by default.
    #[serde(default)]
    pub enabled: bool,
}

/// Real host nodes in the virtual cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodesSync {
    /// Whether the host's nodes are shown with their labels, taints, capacity and conditions
    /// (besides those the instance's pods run on, which are always shown). Off by default.
    #[serde(default)]
    pub enabled: bool,
    /// Only the host nodes with these labels are shown (the nodes the instance's pods run on
    /// are shown whatever their labels).
    #[serde(default)]
    pub selector: super::custom::LabelsSelector,
}

/// A kind that is synced unless turned off, changed on the way by `patches`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PatchedSync {
    /// Whether this kind is synced. On by default.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Changes made to each object as it is synced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_PATCHES))]
    pub patches: Vec<Patch>,
}

impl Default for PatchedSync {
    fn default() -> Self {
        Self {
            enabled: true,
            patches: Vec::new(),
        }
    }
}

/// A kind that is synced only when turned on, changed on the way by `patches`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OptInPatchedSync {
    /// Whether this kind is synced. Off by default.
    #[serde(default)]
    pub enabled: bool,
    /// Changes made to each object as it is synced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_PATCHES))]
    pub patches: Vec<Patch>,
}

/// How many patches one kind may have.
pub const MAX_PATCHES: usize = 32;

/// A change made to each object of a kind as it is synced (vcluster.yaml `patches`): the field
/// at `path` is set to what `expression` gives on the way to the host (and `reverseExpression`
/// on the way back), or, with `reference`, its value is taken for the name of another object
/// and rewritten to that object's host name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = cel::patch_has_an_action(),
    validation = cel::patch_is_expression_or_reference()
)]
pub struct Patch {
    /// The fields changed: dotted names, `[N]` for an array element, `["key"]` for a map key
    /// (`metadata.labels["example.com/team"]`), `[*]` for every element of an array or entry of
    /// a map (`spec.containers[*].name`). Where the parent of the field does not exist, the
    /// object is synced without this patch and the syncer logs why.
    #[schemars(length(min = 1, max = 1024))]
    pub path: String,
    /// A JavaScript expression whose value the field takes on the host: it sees `value` (the
    /// field's, `null` when unset), `valueExists`, and `context` (`vcluster.name`,
    /// `vcluster.namespace`, `vcluster.config`, `virtualObject`, `hostObject`, `path`), and may
    /// call `btoa` and `atob`. `null` leaves a map key unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub expression: Option<String>,
    /// The same for what comes back from the host copy to the virtual object (its status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub reverse_expression: Option<String>,
    /// The field names another object: its value becomes that object's host name, and that
    /// object is synced as one a pod uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<PatchReference>,
}

/// The kind of object a patched field names.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = cel::reference_kind())]
pub struct PatchReference {
    /// `v1`.
    #[schemars(length(max = 64))]
    pub api_version: String,
    /// ConfigMap, Secret, Service, PersistentVolumeClaim or ServiceAccount.
    #[schemars(length(max = 64))]
    pub kind: String,
    /// Where the object names the referenced object's namespace, if it can be another than its
    /// own; that field is rewritten to the namespace's host namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub namespace_path: Option<String>,
}

/// ConfigMaps or Secrets: synced when a synced pod (or, for Secrets, an ingress) uses them, or
/// all of them.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReferencedSync {
    /// Whether this kind is synced. On by default.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Sync every object of this kind, not only those a synced pod or ingress uses.
    #[serde(default)]
    pub all: bool,
    /// Changes made to each object as it is synced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_PATCHES))]
    pub patches: Vec<Patch>,
}

impl Default for ReferencedSync {
    fn default() -> Self {
        Self {
            enabled: true,
            all: false,
            patches: Vec::new(),
        }
    }
}

/// Pods created in the virtual cluster run on the host.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodSync {
    /// Whether pods are synced. On by default; the virtual cluster cannot run workloads without it.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Images to replace when a pod is synced, from the image used in the virtual cluster to the
    /// one the host should run, e.g. `virtualcluster/image:tag: hostcluster/alternative-image:tag`.
    #[serde(default)]
    #[schemars(extend(
        "maxProperties" = 256,
        "additionalProperties" = { "type": "string", "maxLength": 512 }
    ))]
    pub translate_image: BTreeMap<String, String>,
    /// Tolerations added to every synced pod, written like `kubectl taint` arguments:
    /// `key=value:Effect`, `key:Effect`, `key=value` or `key`, where Effect is NoSchedule,
    /// PreferNoSchedule or NoExecute.
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(max = 317)))]
    #[x_kube(validation = cel::tolerations())]
    pub enforce_tolerations: Vec<String>,
    /// Node labels set on every synced pod's node selector on the host, winning over the pod's
    /// own (the platform's win over these).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = 32,
        "additionalProperties" = { "type": "string", "maxLength": 63 }
    ))]
    pub node_selector: BTreeMap<String, String>,
    /// Priority class set on every synced pod on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Runtime class set on every synced pod on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
    /// Keep each host pod's virtual service-account tokens in a host Secret of its own
    /// (`HOSTPOD-sa-token`, removed with the pod) instead of in the host pod's annotations,
    /// which everyone who may read pods in the host namespace can read.
    #[serde(rename = "useSecretsForSATokens", default)]
    pub use_secrets_for_sa_tokens: bool,
    /// Changes made to each pod as it is synced. A patched pod is held to the same rules as
    /// any: it may name no other object than the unpatched one does, and must meet the
    /// instance's Pod Security Standard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_PATCHES))]
    pub patches: Vec<Patch>,
}

impl Default for PodSync {
    fn default() -> Self {
        Self {
            enabled: true,
            translate_image: BTreeMap::new(),
            enforce_tolerations: Vec::new(),
            node_selector: BTreeMap::new(),
            priority_class_name: None,
            runtime_class_name: None,
            use_secrets_for_sa_tokens: false,
            patches: Vec::new(),
        }
    }
}

/// Kinds created in the virtual cluster and synced to the host.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ToHost {
    /// Pods run on the host. On by default.
    #[serde(default)]
    pub pods: PodSync,
    /// Services are copied to the host, where they select the synced pods. On by default.
    #[serde(default)]
    pub services: PatchedSync,
    /// Endpoints and EndpointSlices of services without selectors. On by default.
    #[serde(default)]
    pub endpoints: EnabledSync,
    /// ConfigMaps that synced pods use (or all with `all: true`). On by default.
    #[serde(default)]
    pub config_maps: ReferencedSync,
    /// Secrets that synced pods or ingresses use (or all with `all: true`). On by default.
    #[serde(default)]
    pub secrets: ReferencedSync,
    /// PersistentVolumeClaims, so synced pods get storage on the host. On by default.
    #[serde(default)]
    pub persistent_volume_claims: PatchedSync,
    /// ServiceAccounts, e.g. for cloud IAM bindings to service accounts. Off by default.
    #[serde(default)]
    pub service_accounts: OptInPatchedSync,
    /// Ingresses. Off by default.
    #[serde(default)]
    pub ingresses: OptInPatchedSync,
    /// NetworkPolicies. Off by default.
    #[serde(default)]
    pub network_policies: OptInPatchedSync,
    /// PodDisruptionBudgets. Off by default.
    #[serde(default)]
    pub pod_disruption_budgets: OptInPatchedSync,
    /// PriorityClasses. Off by default.
    #[serde(default)]
    pub priority_classes: OptInPatchedSync,
    /// Custom resources, by `plural.group`; each must be one the platform allows, and its CRD
    /// on the host.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_CUSTOM_RESOURCES))]
    #[x_kube(validation = cel::custom_resource_keys())]
    pub custom_resources: BTreeMap<String, ToHostCustomResource>,
    /// Namespace syncing: each mapped virtual namespace gets a host namespace of its own, and
    /// objects keep their names there. Immutable after creation.
    #[serde(default)]
    pub namespaces: NamespaceSync,
}

/// Kinds read from the host and shown in the virtual cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FromHost {
    /// Events the host records about synced objects. On by default.
    #[serde(default)]
    pub events: EnabledSync,
    /// Real host nodes. Off by default: the virtual cluster then shows a virtual node for each
    /// host node its pods run on, mirroring its name and readiness.
    #[serde(default)]
    pub nodes: NodesSync,
    /// The host's StorageClasses. Off by default.
    #[serde(default)]
    pub storage_classes: OptInPatchedSync,
    /// The host's IngressClasses. Off by default.
    #[serde(default)]
    pub ingress_classes: OptInPatchedSync,
    /// Custom resources of the host, by `plural.group`; each must be one the platform allows.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_CUSTOM_RESOURCES))]
    #[x_kube(validation = cel::custom_resource_keys())]
    pub custom_resources: BTreeMap<String, FromHostCustomResource>,
}

/// Namespace syncing. Cannot be changed after the VirtualCluster is created: it cannot be turned
/// on or off, and `mappingsOnly` and the mappings cannot change.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = cel::immutable(),
    validation = cel::mappings_required(),
    validation = cel::mappings_only_needs_enabled()
)]
pub struct NamespaceSync {
    /// Create a host namespace for each virtual namespace that matches a mapping, and import
    /// host namespaces that a mapping's host side matches. Needs at least one mapping.
    #[serde(default)]
    pub enabled: bool,
    /// Refuse namespaces (and workloads in them) that match no mapping, instead of syncing them
    /// into the VirtualCluster's own namespace with renamed objects. Needs `enabled: true`.
    #[serde(default)]
    pub mappings_only: bool,
    /// How virtual namespaces map to host namespaces.
    #[serde(default)]
    pub mappings: NamespaceMappings,
}

/// How virtual namespaces map to host namespaces.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceMappings {
    /// Virtual namespace (key) to host namespace (value). Exact-to-exact
    /// (`frontend-prod: customer-project-alpha-prod`) or pattern-to-pattern with one trailing
    /// `*` on each side whose matched text carries over (`team-a-*: h-team-a-*`). The virtual side
    /// may be a bare `*`. `${name}` on the host side stands for the VirtualCluster's name
    /// (`datasets-*: ${name}-data-*`). Exact mappings win over patterns, then the longest prefix.
    /// No two mappings may lead to the same host namespace, and none may target kube-system,
    /// kube-public, kube-node-lease, default or the VirtualCluster's own namespace.
    #[serde(default)]
    #[schemars(extend(
        "maxProperties" = cel::MAX_MAPPINGS,
        "additionalProperties" = { "type": "string", "maxLength": cel::MAX_HOST_VALUE_LEN }
    ))]
    #[x_kube(
        validation = cel::pattern_shape(),
        validation = cel::exact_or_pattern(),
        validation = cel::host_prefix_not_empty(),
        validation = cel::placeholder_host_side_only(),
        validation = cel::placeholder_once(),
        validation = cel::virtual_names(),
        validation = cel::no_system_virtual_namespace()
    )]
    pub by_name: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}
