//! `spec.policies`: what the instance's workloads may do on the host, shaped like the `policies`
//! section of a vcluster.yaml. The platform's floor (operator flags) bounds what may be asked.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ScopeSelector;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// What the instance's workloads may do on the host.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Policies {
    /// Pod Security Standard every pod of the virtual cluster is held to: by the virtual API
    /// server, by the syncer before it makes the host pod, and by the host namespaces the
    /// instance creates. `privileged`, `baseline` or `restricted`; defaults to the platform's
    /// floor (`baseline` unless the operator was told otherwise). May not be less strict than
    /// that floor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_standard: Option<PodSecurityStandard>,
    /// A ResourceQuota in the instance's namespace and in every host namespace it creates.
    #[serde(default)]
    pub resource_quota: ResourceQuotaPolicy,
    /// A LimitRange in the instance's namespace and in every host namespace it creates.
    #[serde(default)]
    pub limit_range: LimitRangePolicy,
    /// NetworkPolicies under which the instance's pods reach each other, their DNS, their API
    /// server and the outside world, and nothing else reaches them.
    #[serde(default)]
    pub network_policy: NetworkPolicyPolicy,
}

// A Pod Security Standard, from the least strict to the most. (No doc comment: the schema
// would take it in place of the field's.)
#[derive(
    schemars::JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
)]
#[serde(rename_all = "camelCase")]
pub enum PodSecurityStandard {
    /// No restriction: host namespaces, privileged containers, host paths.
    Privileged,
    /// Prevents known privilege escalations: no host namespaces, host paths or ports,
    /// privileged containers or added capabilities beyond the default set.
    #[default]
    Baseline,
    /// Baseline, and pods run as non-root with every capability dropped, a seccomp profile and
    /// only ephemeral or claim-backed volume types.
    Restricted,
}

impl PodSecurityStandard {
    /// The level's name as the PodSecurity admission plugin and namespace labels spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            PodSecurityStandard::Privileged => "privileged",
            PodSecurityStandard::Baseline => "baseline",
            PodSecurityStandard::Restricted => "restricted",
        }
    }

    /// The level named `name` as [`Self::as_str`] spells it.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Privileged, Self::Baseline, Self::Restricted]
            .into_iter()
            .find(|l| l.as_str() == name)
    }
}

impl std::fmt::Display for PodSecurityStandard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A ResourceQuota for the instance's workloads on the host.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResourceQuotaPolicy {
    /// Whether the ResourceQuota is made. Off by default.
    #[serde(default)]
    pub enabled: bool,
    /// The quota's hard limits, e.g. `requests.cpu: 10`, `count/pods: 20`.
    #[serde(default = "default_quota")]
    #[schemars(extend("maxProperties" = 64))]
    pub quota: BTreeMap<String, Quantity>,
    /// Quota scopes (`Terminating`, `BestEffort`, ...), as a ResourceQuota takes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub scopes: Vec<String>,
    /// Quota scope selector, as a ResourceQuota takes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_selector: Option<ScopeSelector>,
}

impl Default for ResourceQuotaPolicy {
    fn default() -> Self {
        Self {
            enabled: false,
            quota: default_quota(),
            scopes: Vec::new(),
            scope_selector: None,
        }
    }
}

/// The quota of an instance that turns it on without naming one (vcluster.yaml's defaults).
fn default_quota() -> BTreeMap<String, Quantity> {
    [
        ("requests.cpu", "10"),
        ("requests.memory", "20Gi"),
        ("requests.storage", "100Gi"),
        ("requests.ephemeral-storage", "60Gi"),
        ("limits.cpu", "20"),
        ("limits.memory", "40Gi"),
        ("limits.ephemeral-storage", "160Gi"),
        ("services.nodeports", "0"),
        ("services.loadbalancers", "1"),
        ("count/endpoints", "40"),
        ("count/pods", "20"),
        ("count/services", "20"),
        ("count/secrets", "100"),
        ("count/configmaps", "100"),
        ("count/persistentvolumeclaims", "20"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), Quantity(v.to_owned())))
    .collect()
}

/// A LimitRange for the instance's containers on the host.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LimitRangePolicy {
    /// Whether the LimitRange is made. Off by default.
    #[serde(default)]
    pub enabled: bool,
    /// Limits of a container that sets none.
    #[serde(default = "default_limits")]
    #[schemars(extend("maxProperties" = 16))]
    pub default: BTreeMap<String, Quantity>,
    /// Requests of a container that sets none.
    #[serde(default = "default_requests")]
    #[schemars(extend("maxProperties" = 16))]
    pub default_request: BTreeMap<String, Quantity>,
    /// The most a container may ask for.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    pub max: BTreeMap<String, Quantity>,
    /// The least a container may ask for.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    pub min: BTreeMap<String, Quantity>,
}

impl Default for LimitRangePolicy {
    fn default() -> Self {
        Self {
            enabled: false,
            default: default_limits(),
            default_request: default_requests(),
            max: BTreeMap::new(),
            min: BTreeMap::new(),
        }
    }
}

fn quantities(items: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
        .collect()
}

fn default_limits() -> BTreeMap<String, Quantity> {
    quantities(&[
        ("ephemeral-storage", "8Gi"),
        ("memory", "512Mi"),
        ("cpu", "1"),
    ])
}

fn default_requests() -> BTreeMap<String, Quantity> {
    quantities(&[
        ("ephemeral-storage", "3Gi"),
        ("memory", "128Mi"),
        ("cpu", "100m"),
    ])
}

/// NetworkPolicies isolating the instance's pods on the host.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicyPolicy {
    /// Whether the NetworkPolicies are made. Off by default.
    #[serde(default)]
    pub enabled: bool,
    /// Where the instance's pods may connect beyond the instance itself.
    #[serde(default)]
    pub outgoing_connections: OutgoingConnections,
}

/// Where the instance's pods may connect beyond the instance itself.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OutgoingConnections {
    /// Addresses outside the cluster the pods may reach; by default everything but private,
    /// shared, loopback and link-local ranges (where the host's own pods and nodes live).
    #[serde(default)]
    pub ip_block: IpBlock,
}

/// A range of addresses with exceptions, as a NetworkPolicy takes it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IpBlock {
    /// The range, in CIDR notation.
    #[serde(default = "everywhere")]
    #[schemars(length(max = 64))]
    pub cidr: String,
    /// Ranges inside `cidr` that are not allowed.
    #[serde(default = "private_ranges")]
    #[schemars(length(max = 32), inner(length(max = 64)))]
    pub except: Vec<String>,
}

impl Default for IpBlock {
    fn default() -> Self {
        Self {
            cidr: everywhere(),
            except: private_ranges(),
        }
    }
}

fn everywhere() -> String {
    "0.0.0.0/0".into()
}

/// Ranges where a host's pods, Services and nodes usually live, and the loopback and
/// link-local ones (cloud metadata).
pub const PRIVATE_RANGES: [&str; 6] = [
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
];

fn private_ranges() -> Vec<String> {
    PRIVATE_RANGES.iter().map(|r| (*r).to_owned()).collect()
}
