//! A virtual pod as it runs on the host: renamed, every reference to another object renamed
//! with it, its service-account token minted by the virtual cluster, DNS and the API server
//! address pointing into the virtual cluster; and the host pod's status as the virtual pod shows
//! it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, DownwardAPIProjection, DownwardAPIVolumeFile, EnvVar, LocalObjectReference,
    ObjectFieldSelector, Pod, PodDNSConfig, PodDNSConfigOption, PodSpec, PodStatus, Toleration,
    Volume, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use virtualcluster_crds::keys;
use virtualcluster_crds::v1alpha1::PodSync;

use super::Target;

/// Host pod annotation holding the token of the `index`th service-account token projection.
pub fn token_annotation(index: usize) -> String {
    format!("{}token-{index}", keys::RESERVED_PREFIX)
}

/// Virtual pod annotation (set through the binding) saying the pod ran on the host: a bound
/// pod without a host copy has lost it.
pub const BOUND_BY_SYNCER: &str = "virtualcluster.dev/bound";

/// What translating a pod needs besides the pod.
pub struct PodEnv<'a> {
    pub target: &'a Target,
    pub options: &'a PodSync,
    /// Host ClusterIP of the virtual cluster's DNS Service, when there is one.
    pub dns_ip: Option<&'a str>,
    /// Host ClusterIP of the Service in front of the virtual API server.
    pub api_server_ip: &'a str,
    /// Tokens minted in the virtual cluster, one per [`token_requests`] entry.
    pub tokens: &'a [String],
    /// The host name of the pod's ServiceAccount when service accounts are synced.
    pub service_account: Option<String>,
    /// The host name of the pod's PriorityClass when priority classes are synced.
    pub priority_class: Option<String>,
}

/// A token the host pod needs: audience and lifetime, as a projected volume asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub audience: Option<String>,
}

/// The service-account tokens `pod` mounts, in the order [`PodEnv::tokens`] must hold them.
pub fn token_requests(pod: &Pod) -> Vec<TokenRequest> {
    projected_sources(pod)
        .filter_map(|p| p.service_account_token.as_ref())
        .map(|t| TokenRequest {
            audience: t.audience.clone().filter(|a| !a.is_empty()),
        })
        .collect()
}

fn projected_sources(pod: &Pod) -> impl Iterator<Item = &VolumeProjection> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| p.sources.iter().flatten())
}

/// The ConfigMaps a pod uses, by virtual name.
pub fn config_maps(pod: &Pod) -> Vec<String> {
    references(pod, Referenced::ConfigMap)
}

/// The Secrets a pod uses, by virtual name (image pull secrets included).
pub fn secrets(pod: &Pod) -> Vec<String> {
    references(pod, Referenced::Secret)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Referenced {
    ConfigMap,
    Secret,
}

/// The objects of kind `kind` a pod names in its volumes, projections, env and envFrom (and,
/// for Secrets, image pull secrets), sorted and without duplicates.
fn references(pod: &Pod, kind: Referenced) -> Vec<String> {
    let mut names = Vec::new();
    let Some(spec) = &pod.spec else { return names };
    let secret = kind == Referenced::Secret;
    for v in spec.volumes.iter().flatten() {
        names.extend(match kind {
            Referenced::ConfigMap => v.config_map.as_ref().map(|c| c.name.clone()),
            Referenced::Secret => v.secret.as_ref().and_then(|s| s.secret_name.clone()),
        });
    }
    for p in projected_sources(pod) {
        names.extend(match kind {
            Referenced::ConfigMap => p.config_map.as_ref().map(|c| c.name.clone()),
            Referenced::Secret => p.secret.as_ref().map(|s| s.name.clone()),
        });
    }
    for c in containers(spec) {
        for e in c.env.iter().flatten().filter_map(|e| e.value_from.as_ref()) {
            names.extend(match kind {
                Referenced::ConfigMap => e.config_map_key_ref.as_ref().map(|r| r.name.clone()),
                Referenced::Secret => e.secret_key_ref.as_ref().map(|r| r.name.clone()),
            });
        }
        for e in c.env_from.iter().flatten() {
            names.extend(match kind {
                Referenced::ConfigMap => e.config_map_ref.as_ref().map(|r| r.name.clone()),
                Referenced::Secret => e.secret_ref.as_ref().map(|r| r.name.clone()),
            });
        }
    }
    if secret {
        names.extend(
            spec.image_pull_secrets
                .iter()
                .flatten()
                .map(|s| s.name.clone()),
        );
    }
    names.retain(|n| !n.is_empty());
    names.sort();
    names.dedup();
    names
}

fn containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
}

/// The host copy of virtual pod `pod`.
pub fn host_pod(pod: &Pod, env: &PodEnv<'_>) -> Pod {
    let target = env.target;
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let rename = |n: &str| target.host_name(&namespace, n);
    let mut metadata = target.copy_meta(&pod.metadata);
    let annotations = metadata.annotations.get_or_insert_default();
    for (index, token) in env.tokens.iter().enumerate() {
        annotations.insert(token_annotation(index), token.clone());
    }
    let mut spec = pod.spec.clone().unwrap_or_default();

    // Identity: the host pod runs without host credentials; its token is the virtual one.
    spec.service_account_name = env.service_account.clone();
    spec.service_account = None;
    spec.automount_service_account_token = Some(false);
    // The host's Service environment variables describe the host, not the virtual cluster.
    spec.enable_service_links = Some(false);
    if spec.hostname.is_none() && virtualcluster_crds::dns::is_label(&name) {
        // The pod sees its virtual name, not the host one.
        spec.hostname = Some(name.clone());
    }
    // A subdomain names a virtual headless Service, which has another name on the host.
    spec.subdomain = None;
    spec.readiness_gates = None;
    spec.ephemeral_containers = None;

    let mut token_index = 0;
    for volume in spec.volumes.iter_mut().flatten() {
        rename_volume(volume, &rename, &mut token_index);
    }
    for container in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        rename_container(container, &rename, env);
    }
    for secret in spec.image_pull_secrets.iter_mut().flatten() {
        *secret = LocalObjectReference {
            name: rename(&secret.name),
        };
    }
    if let Some(claim) = spec.resource_claims.as_mut() {
        // Resource claims are not synced; a pod naming one could not start on the host.
        claim.clear();
    }

    // Pod (anti-)affinity and spreading select pods by label: narrow them to this virtual
    // namespace's pods, as they are in the virtual cluster.
    let narrow = |s: &mut Option<LabelSelector>| {
        if let Some(s) = s {
            let labels = s.match_labels.take().unwrap_or_default();
            s.match_labels = Some(target.host_selector(&namespace, &labels));
        }
    };
    if let Some(affinity) = spec.affinity.as_mut() {
        let terms = affinity
            .pod_affinity
            .iter_mut()
            .flat_map(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .iter_mut()
                    .flatten()
                    .chain(
                        a.preferred_during_scheduling_ignored_during_execution
                            .iter_mut()
                            .flatten()
                            .map(|w| &mut w.pod_affinity_term),
                    )
            })
            .chain(affinity.pod_anti_affinity.iter_mut().flat_map(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .iter_mut()
                    .flatten()
                    .chain(
                        a.preferred_during_scheduling_ignored_during_execution
                            .iter_mut()
                            .flatten()
                            .map(|w| &mut w.pod_affinity_term),
                    )
            }));
        for term in terms {
            narrow(&mut term.label_selector);
            term.namespaces = None;
            term.namespace_selector = None;
        }
    }
    for constraint in spec.topology_spread_constraints.iter_mut().flatten() {
        narrow(&mut constraint.label_selector);
    }

    // DNS: names resolve through the virtual cluster's DNS, in the pod's virtual namespace.
    if let Some(dns_ip) = env.dns_ip {
        let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
        let host_network = spec.host_network == Some(true);
        if (policy == "ClusterFirst" && !host_network) || policy == "ClusterFirstWithHostNet" {
            spec.dns_policy = Some("None".into());
            let mut config = spec.dns_config.take().unwrap_or_default();
            let mut nameservers = vec![dns_ip.to_owned()];
            nameservers.extend(config.nameservers.take().into_iter().flatten());
            let mut searches = vec![
                format!("{namespace}.svc.cluster.local"),
                "svc.cluster.local".into(),
                "cluster.local".into(),
            ];
            searches.extend(config.searches.take().into_iter().flatten());
            let mut options = config.options.take().unwrap_or_default();
            if !options.iter().any(|o| o.name.as_deref() == Some("ndots")) {
                options.push(PodDNSConfigOption {
                    name: Some("ndots".into()),
                    value: Some("5".into()),
                });
            }
            spec.dns_config = Some(PodDNSConfig {
                nameservers: Some(nameservers),
                searches: Some(searches),
                options: Some(options),
            });
        }
    }

    // Scheduling options the instance enforces.
    let tolerations = spec.tolerations.get_or_insert_default();
    for toleration in env
        .options
        .enforce_tolerations
        .iter()
        .map(|t| toleration(t))
    {
        if !tolerations.contains(&toleration) {
            tolerations.push(toleration);
        }
    }
    if tolerations.is_empty() {
        spec.tolerations = None;
    }
    spec.priority = None;
    spec.priority_class_name = env
        .options
        .priority_class_name
        .clone()
        .or_else(|| env.priority_class.clone());
    if let Some(runtime_class) = &env.options.runtime_class_name {
        spec.runtime_class_name = Some(runtime_class.clone());
    }

    Pod {
        metadata,
        spec: Some(spec),
        status: None,
    }
}

/// A `kubectl taint`-style toleration (`key=value:Effect`, `key:Effect`, `key=value`, `key`),
/// the form the CRD admits.
pub fn toleration(text: &str) -> Toleration {
    let (rest, effect) = match text.rsplit_once(':') {
        Some((rest, effect)) => (rest, Some(effect.to_owned())),
        None => (text, None),
    };
    let (key, value) = match rest.split_once('=') {
        Some((k, v)) => (k, Some(v.to_owned())),
        None => (rest, None),
    };
    Toleration {
        key: Some(key.to_owned()).filter(|k| !k.is_empty()),
        operator: Some(if value.is_some() { "Equal" } else { "Exists" }.into()),
        value,
        effect,
        toleration_seconds: None,
    }
}

/// The downward-API field that tells the virtual value of `field` on the host.
fn virtual_field(field: &str) -> Option<String> {
    let key = match field {
        "metadata.name" => keys::VIRTUAL_NAME,
        "metadata.namespace" => keys::VIRTUAL_NAMESPACE,
        "metadata.uid" => keys::VIRTUAL_UID,
        _ => return None,
    };
    Some(format!("metadata.annotations['{key}']"))
}

fn rename_field(selector: &mut ObjectFieldSelector) {
    if let Some(field) = virtual_field(&selector.field_path) {
        selector.field_path = field;
    }
}

fn rename_fields<'a>(items: impl Iterator<Item = &'a mut DownwardAPIVolumeFile>) {
    for field in items.filter_map(|item| item.field_ref.as_mut()) {
        rename_field(field);
    }
}

fn rename_volume(volume: &mut Volume, rename: &impl Fn(&str) -> String, token_index: &mut usize) {
    if let Some(secret) = volume.secret.as_mut() {
        secret.secret_name = secret.secret_name.as_deref().map(rename);
    }
    if let Some(config_map) = volume.config_map.as_mut() {
        config_map.name = rename(&config_map.name);
    }
    if let Some(claim) = volume.persistent_volume_claim.as_mut() {
        claim.claim_name = rename(&claim.claim_name);
    }
    if let Some(downward) = volume.downward_api.as_mut() {
        rename_fields(downward.items.iter_mut().flatten());
    }
    if let Some(projected) = volume.projected.as_mut() {
        for source in projected.sources.iter_mut().flatten() {
            if let Some(secret) = source.secret.as_mut() {
                secret.name = rename(&secret.name);
            }
            if let Some(config_map) = source.config_map.as_mut() {
                config_map.name = rename(&config_map.name);
            }
            if let Some(downward) = source.downward_api.as_mut() {
                rename_fields(downward.items.iter_mut().flatten());
            }
            if let Some(token) = source.service_account_token.take() {
                // The virtual cluster's token, from the annotation the syncer sets; the
                // kubelet would mint a host token here.
                let annotation = token_annotation(*token_index);
                *token_index += 1;
                source.downward_api = Some(DownwardAPIProjection {
                    items: Some(vec![DownwardAPIVolumeFile {
                        path: token.path,
                        field_ref: Some(ObjectFieldSelector {
                            field_path: format!("metadata.annotations['{annotation}']"),
                            api_version: None,
                        }),
                        ..Default::default()
                    }]),
                });
            }
        }
    }
}

fn rename_container(container: &mut Container, rename: &impl Fn(&str) -> String, env: &PodEnv<'_>) {
    if let Some(image) = &container.image
        && let Some(host_image) = env.options.translate_image.get(image)
    {
        container.image = Some(host_image.clone());
    }
    let vars = container.env.get_or_insert_default();
    for var in vars.iter_mut() {
        let Some(from) = var.value_from.as_mut() else {
            continue;
        };
        if let Some(r) = from.secret_key_ref.as_mut() {
            r.name = rename(&r.name);
        }
        if let Some(r) = from.config_map_key_ref.as_mut() {
            r.name = rename(&r.name);
        }
        if let Some(field) = from.field_ref.as_mut() {
            rename_field(field);
        }
    }
    // Clients in the pod find the virtual API server, not the host's.
    vars.retain(|v| !v.name.starts_with("KUBERNETES_SERVICE_"));
    for (name, value) in [
        ("KUBERNETES_SERVICE_HOST", env.api_server_ip.to_owned()),
        (
            "KUBERNETES_SERVICE_PORT",
            virtualcluster_crds::instance::API_SERVER_SERVICE_PORT.to_string(),
        ),
    ] {
        vars.push(EnvVar {
            name: name.into(),
            value: Some(value),
            value_from: None,
        });
    }
    for from in container.env_from.iter_mut().flatten() {
        if let Some(r) = from.config_map_ref.as_mut() {
            r.name = rename(&r.name);
        }
        if let Some(r) = from.secret_ref.as_mut() {
            r.name = rename(&r.name);
        }
    }
}

/// The status the virtual pod should show for host pod `host`: `None` when it already shows it.
pub fn virtual_status(host: Option<PodStatus>, current: Option<&PodStatus>) -> Option<PodStatus> {
    let host = host.unwrap_or_default();
    let current = current.cloned().unwrap_or_default();
    let wanted = PodStatus {
        phase: host.phase,
        conditions: host.conditions,
        host_ip: host.host_ip,
        host_ips: host.host_ips,
        pod_ip: host.pod_ip,
        pod_ips: host.pod_ips,
        start_time: host.start_time,
        container_statuses: host.container_statuses,
        init_container_statuses: host.init_container_statuses,
        message: host.message,
        reason: host.reason,
        // The virtual API server computed these from the virtual pod.
        qos_class: current.qos_class.clone(),
        ..current.clone()
    };
    (wanted != current).then_some(wanted)
}

/// Labels and annotations of `desired` that `live` lacks or holds differently: what must be
/// written to a host pod whose spec cannot change.
pub fn metadata_differs(desired: &Pod, live: &impl kube::Resource) -> bool {
    let differs = |d: &Option<BTreeMap<String, String>>, l: &Option<BTreeMap<String, String>>| {
        d.iter()
            .flatten()
            .any(|(k, v)| l.as_ref().and_then(|l| l.get(k)) != Some(v))
    };
    differs(&desired.metadata.labels, &live.meta().labels)
        || differs(&desired.metadata.annotations, &live.meta().annotations)
}

#[cfg(test)]
mod tests;
