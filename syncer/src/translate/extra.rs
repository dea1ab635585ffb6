//! The kinds synced to the host only when turned on: Ingresses, ServiceAccounts,
//! NetworkPolicies, PodDisruptionBudgets and PriorityClasses.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{LocalObjectReference, ServiceAccount};
use k8s_openapi::api::networking::v1::{
    Ingress, IngressBackend, IngressStatus, NetworkPolicy, NetworkPolicyPeer,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::api::ObjectMeta;
use virtualcluster_crds::{keys, marks};

use super::Target;

/// Ingress: backends name the Services' and TLS the Secrets' host copies.
pub fn host_ingress(ingress: &Ingress, target: &Target) -> Ingress {
    let namespace = ingress.metadata.namespace.as_deref().unwrap_or_default();
    let rename = |n: &str| target.host_name(namespace, n);
    let mut spec = ingress.spec.clone().unwrap_or_default();
    let backend = |b: &mut IngressBackend| {
        if let Some(service) = b.service.as_mut() {
            service.name = rename(&service.name);
        }
    };
    if let Some(b) = spec.default_backend.as_mut() {
        backend(b);
    }
    for rule in spec.rules.iter_mut().flatten() {
        for path in rule.http.iter_mut().flat_map(|h| h.paths.iter_mut()) {
            backend(&mut path.backend);
        }
    }
    for tls in spec.tls.iter_mut().flatten() {
        tls.secret_name = tls.secret_name.as_deref().map(rename);
    }
    Ingress {
        metadata: target.copy_meta(&ingress.metadata),
        spec: Some(spec),
        status: None,
    }
}

/// Annotations ending in this carry raw proxy configuration (`nginx.ingress.kubernetes.io/
/// configuration-snippet` and the like), which reaches every host the controller serves.
pub const SNIPPET_SUFFIX: &str = "-snippet";

/// Leaves out of host Ingress `ingress` what the platform does not let a tenant have: snippet
/// annotations unless `snippets`, and rules and TLS entries for host names `taken` says
/// another host Ingress serves. Returns what was left out, to tell the Ingress' owner.
pub fn restrict_ingress(
    ingress: &mut Ingress,
    snippets: bool,
    taken: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    let mut left_out = Vec::new();
    if !snippets && let Some(annotations) = ingress.metadata.annotations.as_mut() {
        annotations.retain(|key, _| {
            let snippet = key.ends_with(SNIPPET_SUFFIX);
            if snippet {
                left_out.push(format!(
                    "annotation {key} (snippets are not allowed by the platform)"
                ));
            }
            !snippet
        });
    }
    if let Some(spec) = ingress.spec.as_mut() {
        if let Some(rules) = spec.rules.as_mut() {
            rules.retain(|rule| {
                let host = rule.host.as_deref().unwrap_or_default();
                let keep = host.is_empty() || !taken(host);
                if !keep {
                    left_out.push(format!(
                        "rule for host {host} (another host Ingress serves it)"
                    ));
                }
                keep
            });
        }
        for tls in spec.tls.iter_mut().flatten() {
            if let Some(hosts) = tls.hosts.as_mut() {
                hosts.retain(|h| !taken(h));
            }
        }
    }
    left_out
}

/// The host names an Ingress serves.
pub fn ingress_hosts(ingress: &Ingress) -> impl Iterator<Item = &str> {
    ingress
        .spec
        .iter()
        .flat_map(|s| s.rules.iter().flatten())
        .filter_map(|r| r.host.as_deref())
        .filter(|h| !h.is_empty())
}

/// The Services an Ingress sends traffic to (its backends), by name.
pub fn ingress_services(ingress: &Ingress) -> Vec<String> {
    let spec = ingress.spec.iter();
    let default = spec.clone().filter_map(|s| s.default_backend.as_ref());
    let rules = spec
        .flat_map(|s| s.rules.iter().flatten())
        .flat_map(|r| r.http.iter().flat_map(|h| h.paths.iter()))
        .map(|p| &p.backend);
    default
        .chain(rules)
        .filter_map(|b| b.service.as_ref().map(|s| s.name.clone()))
        .collect()
}

/// The Secrets an Ingress uses (its TLS certificates), by virtual name.
pub fn ingress_secrets(ingress: &Ingress) -> Vec<String> {
    ingress
        .spec
        .iter()
        .flat_map(|s| s.tls.iter().flatten())
        .filter_map(|t| t.secret_name.clone())
        .collect()
}

pub fn ingress_status(host: &Ingress, current: Option<&IngressStatus>) -> Option<IngressStatus> {
    let wanted = host.status.clone().unwrap_or_default();
    (Some(&wanted) != current && !(current.is_none() && wanted == IngressStatus::default()))
        .then_some(wanted)
}

/// ServiceAccount: for host-side identity (e.g. cloud IAM bound to the account's name); it
/// carries no host credentials into pods.
pub fn host_service_account(account: &ServiceAccount, target: &Target) -> ServiceAccount {
    let namespace = account.metadata.namespace.as_deref().unwrap_or_default();
    ServiceAccount {
        metadata: target.copy_meta(&account.metadata),
        automount_service_account_token: Some(false),
        image_pull_secrets: account.image_pull_secrets.as_ref().map(|s| {
            s.iter()
                .map(|r| LocalObjectReference {
                    name: target.host_name(namespace, &r.name),
                })
                .collect()
        }),
        secrets: None,
    }
}

/// A virtual label selector on the host: narrowed to this instance and to the virtual
/// namespaces `namespaces` (one, or those a namespace selector chose).
fn narrow(selector: &LabelSelector, target: &Target, namespaces: &[String]) -> LabelSelector {
    let mut labels: BTreeMap<String, String> =
        marks::without_reserved(selector.match_labels.as_ref());
    labels.insert(keys::SYNCED_BY_UID.into(), target.instance.uid.clone());
    let mut expressions = selector.match_expressions.clone().unwrap_or_default();
    expressions.retain(|e| !e.key.starts_with(keys::RESERVED_PREFIX));
    match namespaces {
        [one] => {
            labels.insert(keys::OBJECT_NAMESPACE_LABEL.into(), one.clone());
        }
        many => expressions.push(LabelSelectorRequirement {
            key: keys::OBJECT_NAMESPACE_LABEL.into(),
            operator: "In".into(),
            values: Some(many.to_vec()),
        }),
    }
    LabelSelector {
        match_labels: Some(labels),
        match_expressions: (!expressions.is_empty()).then_some(expressions),
    }
}

/// NetworkPolicy: selects the host copies of the pods it selects in the virtual cluster. Peers
/// chosen by namespace selector are resolved by `namespaces_matching` into the virtual
/// namespaces they select, since all copies share one host namespace.
pub fn host_network_policy(
    policy: &NetworkPolicy,
    target: &Target,
    namespaces_matching: &dyn Fn(&LabelSelector) -> Vec<String>,
) -> NetworkPolicy {
    let namespace = policy.metadata.namespace.clone().unwrap_or_default();
    let mut spec = policy.spec.clone().unwrap_or_default();
    spec.pod_selector = Some(narrow(
        spec.pod_selector
            .as_ref()
            .unwrap_or(&LabelSelector::default()),
        target,
        std::slice::from_ref(&namespace),
    ));
    let peer = |p: &mut NetworkPolicyPeer| {
        if p.ip_block.is_some() {
            return;
        }
        let namespaces = match p.namespace_selector.take() {
            Some(selector) => namespaces_matching(&selector),
            None => vec![namespace.clone()],
        };
        let pods = p.pod_selector.take().unwrap_or_default();
        p.pod_selector = Some(if namespaces.is_empty() {
            // Selects no namespace: select no pod.
            LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    keys::SYNCED_BY_UID.into(),
                    "no-namespace-selected".into(),
                )])),
                match_expressions: None,
            }
        } else {
            narrow(&pods, target, &namespaces)
        });
    };
    for rule in spec.ingress.iter_mut().flatten() {
        rule.from.iter_mut().flatten().for_each(peer);
    }
    for rule in spec.egress.iter_mut().flatten() {
        rule.to.iter_mut().flatten().for_each(peer);
    }
    NetworkPolicy {
        metadata: target.copy_meta(&policy.metadata),
        spec: Some(spec),
    }
}

pub fn host_disruption_budget(pdb: &PodDisruptionBudget, target: &Target) -> PodDisruptionBudget {
    let namespace = pdb.metadata.namespace.clone().unwrap_or_default();
    let mut spec = pdb.spec.clone().unwrap_or_default();
    if let Some(selector) = spec.selector.as_ref() {
        spec.selector = Some(narrow(selector, target, std::slice::from_ref(&namespace)));
    }
    PodDisruptionBudget {
        metadata: target.copy_meta(&pdb.metadata),
        spec: Some(spec),
        status: None,
    }
}

/// The host name of a virtual PriorityClass: cluster-scoped, so named after the instance.
pub fn priority_class_name(target: &Target, name: &str) -> String {
    virtualcluster_crds::naming::host_name(name, &target.instance.namespace, &target.instance.name)
}

/// The classes every cluster has for its own critical pods; a tenant's pod never gets one on the
/// host, and a virtual class of that name is never copied.
pub fn is_system_priority_class(name: &str) -> bool {
    name.starts_with("system-")
}

/// PriorityClass: never the host's default, whatever the virtual one says, and never above the
/// platform's cap (`max_value`), so tenants' pods cannot preempt others beyond it.
pub fn host_priority_class(
    class: &PriorityClass,
    target: &Target,
    max_value: i32,
) -> PriorityClass {
    let name = class.metadata.name.clone().unwrap_or_default();
    let mut annotations = marks::without_reserved(class.metadata.annotations.as_ref());
    annotations.extend(marks::copy_annotations(&marks::VirtualRef {
        namespace: String::new(),
        name: name.clone(),
        uid: class.metadata.uid.clone().unwrap_or_default(),
    }));
    let mut labels = marks::without_reserved(class.metadata.labels.as_ref());
    labels.extend(marks::instance_labels(&target.instance));
    PriorityClass {
        metadata: ObjectMeta {
            name: Some(priority_class_name(target, &name)),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        value: class.value.map(|v| v.min(max_value)),
        global_default: Some(false),
        description: class.description.clone(),
        preemption_policy: class.preemption_policy.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::target;

    #[test]
    fn ingresses_route_to_the_copies() {
        let ingress: Ingress = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "shop", "namespace": "shop"},
            "spec": {"tls": [{"secretName": "shop-tls"}],
                     "rules": [{"http": {"paths": [{"path": "/", "pathType": "Prefix",
                        "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}
        }))
        .unwrap();
        let host = host_ingress(&ingress, &target());
        let spec = host.spec.unwrap();
        assert_eq!(
            spec.tls.unwrap()[0].secret_name.as_deref(),
            Some("shop-tls-x-shop-x-vc")
        );
        let rules = spec.rules.unwrap();
        let backend = &rules[0].http.as_ref().unwrap().paths[0].backend;
        assert_eq!(backend.service.as_ref().unwrap().name, "web-x-shop-x-vc");
        assert_eq!(ingress_secrets(&ingress), ["shop-tls"]);
    }

    #[test]
    fn network_policies_stay_within_the_instance() {
        let policy: NetworkPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "namespace": "shop"},
            "spec": {"podSelector": {"matchLabels": {"app": "db"}},
                     "ingress": [{"from": [
                        {"podSelector": {"matchLabels": {"app": "web"}}},
                        {"namespaceSelector": {"matchLabels": {"team": "blue"}}},
                        {"ipBlock": {"cidr": "10.0.0.0/8"}}]}]}
        }))
        .unwrap();
        let host = host_network_policy(&policy, &target(), &|_| {
            vec!["blog".to_owned(), "wiki".to_owned()]
        });
        let spec = host.spec.unwrap();
        let pods = spec.pod_selector.unwrap().match_labels.unwrap();
        assert_eq!(pods[keys::OBJECT_NAMESPACE_LABEL], "shop");
        assert_eq!(pods[keys::SYNCED_BY_UID], "instance-uid");
        let from = spec.ingress.unwrap()[0].from.clone().unwrap();
        let same = from[0]
            .pod_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap();
        assert_eq!(same[keys::OBJECT_NAMESPACE_LABEL], "shop");
        assert_eq!(from[1].namespace_selector, None);
        let other = from[1].pod_selector.as_ref().unwrap();
        assert_eq!(
            other.match_expressions.as_ref().unwrap()[0]
                .values
                .as_deref(),
            Some(&["blog".to_owned(), "wiki".to_owned()][..])
        );
        assert!(from[2].pod_selector.is_none());
    }

    #[test]
    fn snippets_and_host_names_others_serve_are_left_out_of_ingresses() {
        let mut ingress: Ingress = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "annotations": {
                "nginx.ingress.kubernetes.io/configuration-snippet": "return 200;",
                "nginx.ingress.kubernetes.io/rewrite-target": "/"
            }},
            "spec": {
                "rules": [{"host": "shop.example.com"}, {"host": "bank.example.com"}, {}],
                "tls": [{"hosts": ["shop.example.com", "bank.example.com"], "secretName": "tls"}]
            }
        }))
        .unwrap();
        let taken = |h: &str| h == "bank.example.com";
        let left_out = restrict_ingress(&mut ingress.clone(), true, &taken);
        assert_eq!(left_out.len(), 1, "{left_out:?}");
        let left_out = restrict_ingress(&mut ingress, false, &taken);
        assert_eq!(left_out.len(), 2, "{left_out:?}");
        let annotations = ingress.metadata.annotations.as_ref().unwrap();
        assert!(annotations.contains_key("nginx.ingress.kubernetes.io/rewrite-target"));
        assert_eq!(annotations.len(), 1);
        let hosts: Vec<_> = ingress_hosts(&ingress).collect();
        assert_eq!(hosts, ["shop.example.com"]);
        let spec = ingress.spec.unwrap();
        assert_eq!(spec.rules.unwrap().len(), 2);
        assert_eq!(
            spec.tls.unwrap()[0].hosts.as_deref(),
            Some(&["shop.example.com".to_owned()][..])
        );
    }

    #[test]
    fn a_virtual_priority_class_never_becomes_the_hosts_default() {
        let class = PriorityClass {
            metadata: ObjectMeta {
                name: Some("high".into()),
                ..Default::default()
            },
            value: Some(1000),
            global_default: Some(true),
            ..Default::default()
        };
        let host = host_priority_class(&class, &target(), 100);
        assert_eq!(host.global_default, Some(false));
        assert_eq!(host.value, Some(100), "capped at the platform's maximum");
        assert_eq!(
            host_priority_class(&class, &target(), 5000).value,
            Some(1000)
        );
        assert_eq!(host.metadata.name.as_deref(), Some("high-x-team-a-x-vc"));
        assert!(marks::is_copy_of(
            &target().instance,
            host.metadata.labels.as_ref().unwrap()
        ));
    }
}
