//! What the platform lets one instance's workloads do on the host: the operator resolves its
//! own flags and the VirtualCluster's `spec.policies` into a [`HostPolicy`], and the syncer
//! holds every host copy to it. Every default is the strict one; the platform loosens them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::v1alpha1::{PRIVATE_RANGES, PodSecurityStandard};

/// Service types beyond ClusterIP a platform may allow.
pub const SERVICE_TYPES: [&str; 3] = ["NodePort", "LoadBalancer", "ExternalName"];

/// Keys of the tolerations the API server adds to every pod (NoExecute, with a grace period):
/// they open no taint the platform did not mean to, so they are always copied.
pub const DEFAULT_TOLERATION_PREFIX: &str = "node.kubernetes.io/";

/// Namespace labels of the PodSecurity admission plugin, one per mode.
pub const POD_SECURITY_LABELS: [&str; 3] = [
    "pod-security.kubernetes.io/enforce",
    "pod-security.kubernetes.io/warn",
    "pod-security.kubernetes.io/audit",
];

/// The host policy of one instance, as the syncer enforces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HostPolicy {
    /// Every host pod passes this Pod Security Standard.
    pub pod_security: PodSecurityStandard,
    /// Taints tenant tolerations may open, written like `kubectl taint` arguments (`key`,
    /// `key=value`, `key:Effect`, `key=value:Effect`). Tolerations of anything else are dropped.
    pub allowed_tolerations: Vec<String>,
    /// Node labels every host pod is held to; they win over the pod's own node selector.
    pub node_selector: BTreeMap<String, String>,
    /// The highest value a synced PriorityClass keeps.
    pub max_priority: i32,
    /// Service types beyond ClusterIP a virtual Service may have on the host (of
    /// [`SERVICE_TYPES`]).
    pub service_types: Vec<String>,
    /// Whether Ingress annotations ending in `-snippet` (raw proxy configuration) are copied.
    pub ingress_snippets: bool,
    /// How many host namespaces the instance may create.
    pub max_host_namespaces: u32,
    /// Ranges where the host's pods, Services and nodes live: Endpoints of selectorless
    /// Services may point there only at the instance's own pods.
    #[serde(rename = "hostCIDRs")]
    pub host_cidrs: Vec<String>,
    /// Custom resources (`plural.group`) instances may sync to the host: the operator grants
    /// their syncers write on them in the instance's namespace, so it must hold that itself.
    pub custom_resources_to_host: Vec<String>,
    /// Custom resources instances may show from the host: all objects of a cluster-scoped kind,
    /// those of the instance's own namespace for a namespaced one.
    pub custom_resources_from_host: Vec<String>,
}

/// The most host namespaces one instance creates unless the platform says otherwise.
pub const DEFAULT_MAX_HOST_NAMESPACES: u32 = 100;

impl Default for HostPolicy {
    fn default() -> Self {
        Self {
            pod_security: PodSecurityStandard::Baseline,
            allowed_tolerations: Vec::new(),
            node_selector: BTreeMap::new(),
            max_priority: 0,
            service_types: SERVICE_TYPES.map(String::from).to_vec(),
            ingress_snippets: false,
            max_host_namespaces: DEFAULT_MAX_HOST_NAMESPACES,
            host_cidrs: default_host_cidrs(),
            custom_resources_to_host: Vec::new(),
            custom_resources_from_host: Vec::new(),
        }
    }
}

/// Where a host's pods and Services live unless the platform names its ranges: every private,
/// shared and unique-local range.
pub fn default_host_cidrs() -> Vec<String> {
    PRIVATE_RANGES
        .iter()
        .copied()
        .chain(["fc00::/7", "fe80::/10", "::1/128"])
        .map(String::from)
        .collect()
}

impl HostPolicy {
    /// Whether the platform lets instances sync custom resource `resource` in `direction`.
    pub fn allows_custom_resource(
        &self,
        resource: &str,
        direction: crate::kinds::Direction,
    ) -> bool {
        let allowed = match direction {
            crate::kinds::Direction::ToHost => &self.custom_resources_to_host,
            crate::kinds::Direction::FromHost => &self.custom_resources_from_host,
        };
        allowed.iter().any(|r| r == resource)
    }

    /// Whether Services of type `type_` may be copied.
    pub fn allows_service_type(&self, type_: &str) -> bool {
        type_ == "ClusterIP" || self.service_types.iter().any(|t| t == type_)
    }
}

/// Whether `ip` lies in one of `ranges` (CIDRs; ones that do not parse are skipped, the
/// operator refuses them at start).
pub fn in_ranges(ip: IpAddr, ranges: &[String]) -> bool {
    ranges
        .iter()
        .filter_map(|r| parse_cidr(r))
        .any(|(net, len)| contains(net, len, ip))
}

/// Addresses no Endpoints of a tenant may point at, whatever the platform's ranges: loopback,
/// link-local (cloud metadata), unspecified and multicast.
pub fn is_special(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_special(IpAddr::V4(v4)))
        }
    }
}

/// A CIDR as network address and prefix length.
pub fn parse_cidr(cidr: &str) -> Option<(IpAddr, u32)> {
    let (addr, len) = cidr.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let len: u32 = len.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}

fn contains(net: IpAddr, len: u32, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(n) & mask == u128::from(i) & mask
        }
        (IpAddr::V4(_), IpAddr::V6(i)) => i
            .to_ipv4_mapped()
            .is_some_and(|v4| contains(net, len, IpAddr::V4(v4))),
        (IpAddr::V6(_), IpAddr::V4(_)) => false,
    }
}

/// The namespace labels that hold a host namespace to `level` in every mode.
pub fn pod_security_labels(level: PodSecurityStandard) -> BTreeMap<String, String> {
    POD_SECURITY_LABELS
        .iter()
        .flat_map(|key| {
            [
                ((*key).to_owned(), level.as_str().to_owned()),
                (format!("{key}-version"), "latest".to_owned()),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_policy_is_the_strict_default() {
        let parsed: HostPolicy = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed, HostPolicy::default());
        assert_eq!(parsed.pod_security, PodSecurityStandard::Baseline);
        assert!(!parsed.ingress_snippets);
        assert!(parsed.host_cidrs.iter().any(|c| c == "10.0.0.0/8"));
        assert!(parsed.allows_service_type("ClusterIP"));
    }

    #[test]
    fn addresses_are_found_in_their_ranges() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let ranges = default_host_cidrs();
        assert!(in_ranges(ip("10.244.1.7"), &ranges));
        assert!(in_ranges(ip("192.168.0.1"), &ranges));
        assert!(in_ranges(ip("fd00::12"), &ranges));
        assert!(in_ranges(ip("::ffff:10.0.0.1"), &ranges));
        assert!(!in_ranges(ip("203.0.113.9"), &ranges));
        assert!(!in_ranges(ip("2001:db8::1"), &ranges));
        assert!(in_ranges(ip("203.0.113.9"), &["0.0.0.0/0".into()]));
        assert!(!in_ranges(ip("203.0.113.9"), &["not a range".into()]));
        for special in [
            "127.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "224.0.0.1",
        ] {
            assert!(is_special(ip(special)), "{special}");
        }
        assert!(!is_special(ip("203.0.113.9")));
        assert_eq!(parse_cidr("10.0.0.0/33"), None);
    }

    #[test]
    fn namespace_labels_name_the_level_in_every_mode() {
        let labels = pod_security_labels(PodSecurityStandard::Restricted);
        assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
        assert_eq!(labels["pod-security.kubernetes.io/audit"], "restricted");
        assert_eq!(labels["pod-security.kubernetes.io/warn-version"], "latest");
        assert_eq!(labels.len(), 6);
    }
}
