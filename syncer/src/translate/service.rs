//! Services and their Endpoints. A host Service selects exactly the host copies of the pods its
//! virtual Service selects; the host allocates its address, and the virtual Service is given
//! the same one so that what virtual DNS answers routes on the host.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Endpoints, Service, ServiceSpec, ServiceStatus};
use virtualcluster_crds::policy::HostPolicy;

use super::Target;

/// The virtual Service that stands for the virtual API server; it gets the address of the
/// instance's API server Service rather than a copy.
pub const API_SERVICE: (&str, &str) = ("default", "kubernetes");

pub fn is_headless(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// Whether the Service selects pods (its Endpoints are then the cluster's own work, on both
/// sides); Endpoints of a Service without selector are written by users and copied.
pub fn has_selector(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|s| !s.is_empty())
}

pub fn cluster_ip(service: &Service) -> Option<&str> {
    service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .filter(|ip| !ip.is_empty() && *ip != "None")
}

pub fn host_service(service: &Service, target: &Target) -> Service {
    let namespace = service.metadata.namespace.as_deref().unwrap_or_default();
    let mut spec = service.spec.clone().unwrap_or_default();
    if let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) {
        spec.selector = Some(target.host_selector(namespace, selector));
    }
    // Addresses and ports are the host's to allocate; the virtual Service takes them over.
    without_allocations(&mut spec);
    // External IPs would capture traffic to addresses the tenant does not own. Without them a
    // ClusterIP Service is not reachable from outside, and may not carry the policy for it.
    spec.external_ips = None;
    if spec.type_.as_deref().unwrap_or("ClusterIP") == "ClusterIP" {
        spec.external_traffic_policy = None;
    }
    Service {
        metadata: target.copy_meta(&service.metadata),
        spec: Some(spec),
        status: None,
    }
}

/// Why the platform does not let `service` reach the host, if it does not: its type is not one
/// [`HostPolicy::allows_service_type`] allows.
pub fn refusal(service: &Service, policy: &HostPolicy) -> Option<String> {
    let type_ = service
        .spec
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("ClusterIP");
    (!policy.allows_service_type(type_)).then(|| {
        format!(
            "spec.type: Services of type {type_} are not allowed on the host by the platform \
             (allowed: ClusterIP{}); the Service is not synced",
            policy
                .service_types
                .iter()
                .map(|t| format!(", {t}"))
                .collect::<String>()
        )
    })
}

/// What of `service` is left out of its host copy and its owner should know.
pub fn left_out(service: &Service) -> Option<String> {
    let ips = service
        .spec
        .as_ref()?
        .external_ips
        .as_ref()
        .filter(|ips| !ips.is_empty())?;
    Some(format!(
        "spec.externalIPs ({}) are never copied to the host: they would capture traffic to \
         addresses of others",
        ips.join(", ")
    ))
}

/// `spec` without what each cluster allocates for itself: addresses (a headless Service keeps
/// its `None`), IP families, node ports.
pub fn without_allocations(spec: &mut ServiceSpec) {
    let headless = spec.cluster_ip.as_deref() == Some("None");
    spec.cluster_ip = headless.then(|| "None".to_owned());
    spec.cluster_ips = headless.then(|| vec!["None".to_owned()]);
    spec.ip_families = None;
    spec.ip_family_policy = None;
    spec.health_check_node_port = None;
    for port in spec.ports.iter_mut().flatten() {
        port.node_port = None;
    }
}

/// The virtual Service recreated with the host copy's address `ip`, to be created in its
/// place (ClusterIPs cannot change in place).
pub fn with_cluster_ip(service: &Service, ip: &str) -> Service {
    let mut spec = service.spec.clone().unwrap_or_default();
    spec.cluster_ip = Some(ip.to_owned());
    spec.cluster_ips = Some(vec![ip.to_owned()]);
    spec.ip_families = None;
    spec.ip_family_policy = None;
    let meta = &service.metadata;
    Service {
        metadata: kube::api::ObjectMeta {
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            labels: meta.labels.clone(),
            annotations: meta.annotations.clone(),
            owner_references: meta.owner_references.clone(),
            finalizers: meta.finalizers.clone(),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The load-balancer status the virtual Service should show: `None` when it shows it.
pub fn virtual_status(host: &Service, current: Option<&ServiceStatus>) -> Option<ServiceStatus> {
    let wanted = ServiceStatus {
        load_balancer: host.status.as_ref().and_then(|s| s.load_balancer.clone()),
        conditions: host.status.as_ref().and_then(|s| s.conditions.clone()),
    };
    let current = current.cloned().unwrap_or_default();
    let empty = |s: &ServiceStatus| {
        s.load_balancer
            .as_ref()
            .is_none_or(|lb| lb.ingress.as_ref().is_none_or(Vec::is_empty))
            && s.conditions.as_ref().is_none_or(Vec::is_empty)
    };
    (wanted != current && !(empty(&wanted) && empty(&current))).then_some(wanted)
}

/// The host copy of the Endpoints of a virtual Service without selector. Addresses stay (they
/// are what the user wrote) where `allowed` says so; references to virtual pods do not mean
/// anything on the host. Also returns the addresses left out.
pub fn host_endpoints(
    endpoints: &Endpoints,
    target: &Target,
    allowed: &dyn Fn(&str) -> bool,
) -> (Endpoints, Vec<String>) {
    let mut subsets = endpoints.subsets.clone();
    let mut left_out = Vec::new();
    for subset in subsets.iter_mut().flatten() {
        for list in [
            subset.addresses.as_mut(),
            subset.not_ready_addresses.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            list.retain(|a| {
                let keep = allowed(&a.ip);
                if !keep {
                    left_out.push(a.ip.clone());
                }
                keep
            });
        }
        for address in subset
            .addresses
            .iter_mut()
            .flatten()
            .chain(subset.not_ready_addresses.iter_mut().flatten())
        {
            address.target_ref = None;
        }
    }
    left_out.sort();
    left_out.dedup();
    let copy = Endpoints {
        metadata: target.copy_meta(&endpoints.metadata),
        subsets,
    };
    (copy, left_out)
}

/// Whether Endpoints of a tenant may point at `ip` on the host: never at a special address
/// ([`policy::is_special`]) or a host node, and inside the host's own ranges only at the
/// instance's own pods and Services (`own`).
pub fn endpoint_allowed(
    ip: &str,
    policy: &HostPolicy,
    is_node: &dyn Fn(IpAddr) -> bool,
    own: &dyn Fn(IpAddr) -> bool,
) -> bool {
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return false;
    };
    if virtualcluster_crds::policy::is_special(ip) || is_node(ip) {
        return false;
    }
    !virtualcluster_crds::policy::in_ranges(ip, &policy.host_cidrs) || own(ip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::target;
    use virtualcluster_crds::keys;

    fn service(json: serde_json::Value) -> Service {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_host_copy_selects_this_namespaces_pods_and_takes_its_own_address() {
        let virtual_service = service(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "s1"},
            "spec": {"selector": {"app": "web"}, "clusterIP": "10.100.0.9",
                     "clusterIPs": ["10.100.0.9"], "type": "NodePort",
                     "ports": [{"port": 80, "targetPort": 8080, "nodePort": 31000}]}
        }));
        let host = host_service(&virtual_service, &target());
        assert_eq!(host.metadata.name.as_deref(), Some("web-x-shop-x-vc"));
        let spec = host.spec.unwrap();
        let selector = spec.selector.unwrap();
        assert_eq!(selector["app"], "web");
        assert_eq!(selector[keys::OBJECT_NAMESPACE_LABEL], "shop");
        assert_eq!(selector[keys::SYNCED_BY_UID], "instance-uid");
        assert_eq!(spec.cluster_ip, None);
        assert_eq!(spec.ports.unwrap()[0].node_port, None);
        assert_eq!(spec.type_.as_deref(), Some("NodePort"));
    }

    #[test]
    fn external_ips_never_reach_the_host_and_types_follow_the_platform() {
        let virtual_service = service(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"type": "LoadBalancer", "externalIPs": ["203.0.113.10"],
                     "selector": {"app": "web"}}
        }));
        let host = host_service(&virtual_service, &target());
        assert_eq!(host.spec.unwrap().external_ips, None);
        // A ClusterIP Service with external IPs has an external traffic policy (defaulted by
        // the API server); without them the host refuses it.
        let cluster_ip = service(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"externalIPs": ["203.0.113.10"], "externalTrafficPolicy": "Cluster"}
        }));
        let spec = host_service(&cluster_ip, &target()).spec.unwrap();
        assert_eq!(
            (spec.external_ips, spec.external_traffic_policy),
            (None, None)
        );
        assert!(left_out(&virtual_service).unwrap().contains("203.0.113.10"));
        let open = HostPolicy::default();
        assert_eq!(refusal(&virtual_service, &open), None);
        let closed = HostPolicy {
            service_types: vec!["NodePort".into()],
            ..Default::default()
        };
        let why = refusal(&virtual_service, &closed).unwrap();
        assert!(why.contains("type LoadBalancer"), "{why}");
        let plain = service(serde_json::json!({"metadata": {"name": "a"}, "spec": {}}));
        assert_eq!(
            refusal(
                &plain,
                &HostPolicy {
                    service_types: vec![],
                    ..Default::default()
                }
            ),
            None
        );
        assert_eq!(left_out(&plain), None);
    }

    #[test]
    fn endpoints_point_only_outside_the_host_or_at_the_instances_own_pods() {
        let endpoints: Endpoints = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "namespace": "shop"},
            "subsets": [{"addresses": [
                {"ip": "203.0.113.5"}, {"ip": "10.244.0.9"}, {"ip": "10.244.0.10"},
                {"ip": "127.0.0.1"}, {"ip": "198.51.100.1"}
            ], "notReadyAddresses": [{"ip": "169.254.169.254"}]}]
        }))
        .unwrap();
        let policy = HostPolicy::default();
        let node: IpAddr = "198.51.100.1".parse().unwrap();
        let mine: IpAddr = "10.244.0.9".parse().unwrap();
        let allowed = |ip: &str| endpoint_allowed(ip, &policy, &|i| i == node, &|i| i == mine);
        let (copy, left_out) = host_endpoints(&endpoints, &target(), &allowed);
        let subset = &copy.subsets.unwrap()[0];
        let kept: Vec<_> = subset
            .addresses
            .iter()
            .flatten()
            .map(|a| a.ip.as_str())
            .collect();
        assert_eq!(kept, ["203.0.113.5", "10.244.0.9"]);
        assert!(subset.not_ready_addresses.as_ref().unwrap().is_empty());
        assert_eq!(
            left_out,
            [
                "10.244.0.10",
                "127.0.0.1",
                "169.254.169.254",
                "198.51.100.1"
            ]
        );
        assert!(!endpoint_allowed("not-an-ip", &policy, &|_| false, &|_| {
            false
        }));
    }

    #[test]
    fn headless_services_stay_headless() {
        let virtual_service = service(serde_json::json!({
            "metadata": {"name": "db", "namespace": "shop"},
            "spec": {"clusterIP": "None", "selector": {"app": "db"}}
        }));
        assert!(is_headless(&virtual_service));
        let host = host_service(&virtual_service, &target());
        assert_eq!(host.spec.unwrap().cluster_ip.as_deref(), Some("None"));
    }

    #[test]
    fn the_recreated_virtual_service_carries_the_host_address() {
        let virtual_service = service(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "s1", "resourceVersion": "7",
                         "labels": {"app": "web"}},
            "spec": {"selector": {"app": "web"}, "clusterIP": "10.100.0.9",
                     "clusterIPs": ["10.100.0.9"], "ipFamilies": ["IPv4"]}
        }));
        let recreated = with_cluster_ip(&virtual_service, "10.96.3.4");
        assert_eq!(recreated.metadata.uid, None);
        assert_eq!(recreated.metadata.resource_version, None);
        assert_eq!(recreated.metadata.labels, virtual_service.metadata.labels);
        let spec = recreated.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.3.4"));
        assert_eq!(spec.cluster_ips.unwrap(), ["10.96.3.4"]);
        assert_eq!(spec.selector, virtual_service.spec.unwrap().selector);
    }

    #[test]
    fn load_balancer_status_flows_back_once() {
        let host = service(serde_json::json!({
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}
        }));
        let wanted = virtual_status(&host, None).unwrap();
        assert_eq!(virtual_status(&host, Some(&wanted)), None);
        let empty = service(serde_json::json!({"status": {"loadBalancer": {}}}));
        assert_eq!(
            virtual_status(&empty, Some(&ServiceStatus::default())),
            None
        );
    }
}
