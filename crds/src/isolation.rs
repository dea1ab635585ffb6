//! The objects that hold an instance's workloads within bounds in a host namespace, from
//! `spec.policies`: a ResourceQuota, a LimitRange and a NetworkPolicy. The operator makes them
//! in the instance's namespace, the syncer in every host namespace it creates; both build them
//! here.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, ResourceQuota, ResourceQuotaSpec,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::instance::{Component, InstanceRef};
use crate::keys;
use crate::v1alpha1::Policies;

/// The objects of [`objects`], each `None` when its policy is off.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Isolation {
    pub resource_quota: Option<ResourceQuota>,
    pub limit_range: Option<LimitRange>,
    pub network_policy: Option<NetworkPolicy>,
}

/// Name of each of the instance's isolation objects in a host namespace (kinds differ, and
/// the instance's name keeps two instances of one namespace apart).
pub fn name(instance: &InstanceRef) -> String {
    format!("{}-workloads", instance.name)
}

/// The isolation objects `policies` ask for in host namespace `namespace`, with `meta` (the
/// maker's labels and owner) as each one's metadata.
pub fn objects(
    instance: &InstanceRef,
    policies: &Policies,
    namespace: &str,
    meta: &ObjectMeta,
) -> Isolation {
    let meta = ObjectMeta {
        name: Some(name(instance)),
        namespace: Some(namespace.to_owned()),
        ..meta.clone()
    };
    let quota = &policies.resource_quota;
    let limits = &policies.limit_range;
    let network = &policies.network_policy;
    Isolation {
        resource_quota: quota.enabled.then(|| ResourceQuota {
            metadata: meta.clone(),
            spec: Some(ResourceQuotaSpec {
                hard: Some(quota.quota.clone()),
                scopes: (!quota.scopes.is_empty()).then(|| quota.scopes.clone()),
                scope_selector: quota.scope_selector.clone(),
            }),
            status: None,
        }),
        limit_range: limits.enabled.then(|| {
            let some = |m: &BTreeMap<_, _>| (!m.is_empty()).then(|| m.clone());
            LimitRange {
                metadata: meta.clone(),
                spec: Some(LimitRangeSpec {
                    limits: vec![LimitRangeItem {
                        type_: "Container".into(),
                        default: some(&limits.default),
                        default_request: some(&limits.default_request),
                        max: some(&limits.max),
                        min: some(&limits.min),
                        ..Default::default()
                    }],
                }),
            }
        }),
        network_policy: network
            .enabled
            .then(|| network_policy(instance, policies, meta)),
    }
}

/// The instance's workload pods: its syncer's host copies.
fn workloads(instance: &InstanceRef) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(
            keys::SYNCED_BY_UID.to_owned(),
            instance.uid.clone(),
        )])),
        ..Default::default()
    }
}

fn namespace_named(name: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(
            "kubernetes.io/metadata.name".to_owned(),
            name.to_owned(),
        )])),
        ..Default::default()
    }
}

/// The instance's pods reach each other (wherever they run), its API server, the host's DNS
/// (its own DNS forwards there) and the outside world as `policies` allows; only the
/// instance's own pods reach them. Other NetworkPolicies of the platform add to this.
fn network_policy(instance: &InstanceRef, policies: &Policies, meta: ObjectMeta) -> NetworkPolicy {
    let own = NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector::default()),
        pod_selector: Some(workloads(instance)),
        ..Default::default()
    };
    let api_server = NetworkPolicyPeer {
        namespace_selector: Some(namespace_named(&instance.namespace)),
        pod_selector: Some(LabelSelector {
            match_labels: Some(instance.selector_labels(Component::ControlPlane)),
            ..Default::default()
        }),
        ..Default::default()
    };
    let host_dns = NetworkPolicyPeer {
        namespace_selector: Some(namespace_named("kube-system")),
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "k8s-app".to_owned(),
                "kube-dns".to_owned(),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let dns_ports = ["UDP", "TCP"]
        .map(|protocol| NetworkPolicyPort {
            port: Some(IntOrString::Int(53)),
            protocol: Some(protocol.into()),
            ..Default::default()
        })
        .to_vec();
    let block = &policies.network_policy.outgoing_connections.ip_block;
    let outside = NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: block.cidr.clone(),
            except: (!block.except.is_empty()).then(|| block.except.clone()),
        }),
        ..Default::default()
    };
    NetworkPolicy {
        metadata: meta,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(workloads(instance)),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![own.clone()]),
                ports: None,
            }]),
            egress: Some(vec![
                NetworkPolicyEgressRule {
                    to: Some(vec![own, api_server, outside]),
                    ports: None,
                },
                NetworkPolicyEgressRule {
                    to: Some(vec![host_dns]),
                    ports: Some(dns_ports),
                },
            ]),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance() -> InstanceRef {
        InstanceRef {
            name: "vc".into(),
            namespace: "team-a".into(),
            uid: "u1".into(),
        }
    }

    #[test]
    fn nothing_is_made_unless_asked_for() {
        let made = objects(
            &instance(),
            &Policies::default(),
            "team-a",
            &ObjectMeta::default(),
        );
        assert_eq!(made, Isolation::default());
    }

    #[test]
    fn each_policy_makes_its_object_in_the_namespace() {
        let mut policies = Policies::default();
        policies.resource_quota.enabled = true;
        policies.limit_range.enabled = true;
        policies.network_policy.enabled = true;
        let made = objects(&instance(), &policies, "host-a", &ObjectMeta::default());
        let quota = made.resource_quota.unwrap();
        assert_eq!(quota.metadata.name.as_deref(), Some("vc-workloads"));
        assert_eq!(quota.metadata.namespace.as_deref(), Some("host-a"));
        assert_eq!(quota.spec.unwrap().hard.unwrap()["count/pods"].0, "20");
        let limits = made.limit_range.unwrap().spec.unwrap().limits;
        assert_eq!(limits[0].default.as_ref().unwrap()["cpu"].0, "1");
        let policy = made.network_policy.unwrap().spec.unwrap();
        let selected = policy.pod_selector.unwrap().match_labels.unwrap();
        assert_eq!(selected[keys::SYNCED_BY_UID], "u1");
        let from = &policy.ingress.unwrap()[0].from.clone().unwrap()[0];
        assert_eq!(
            from.pod_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()[keys::SYNCED_BY_UID],
            "u1",
            "only the instance's own pods reach its pods"
        );
        let egress = policy.egress.unwrap();
        let outside = egress[0].to.as_ref().unwrap()[2].ip_block.as_ref().unwrap();
        assert_eq!(outside.cidr, "0.0.0.0/0");
        assert!(
            outside
                .except
                .as_ref()
                .unwrap()
                .contains(&"10.0.0.0/8".to_owned())
        );
    }
}
