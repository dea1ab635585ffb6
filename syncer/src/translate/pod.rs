//! A virtual pod as it runs on the host: renamed, every reference to another object renamed
//! with it, its service-account token minted by the virtual cluster, DNS and the API server
//! address pointing into the virtual cluster; and the host pod's status as the virtual pod shows
//! it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    DownwardAPIProjection, DownwardAPIVolumeFile, EnvVar, KeyToPath, ObjectFieldSelector, Pod,
    PodDNSConfig, PodDNSConfigOption, PodSpec, PodStatus, SecretProjection, Toleration, Volume,
    VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use virtualcluster_crds::keys;
use virtualcluster_crds::policy::{DEFAULT_TOLERATION_PREFIX, HostPolicy};
use virtualcluster_crds::v1alpha1::PodSync;

use super::Target;

/// Key of the `index`th token in a pod's token Secret (see [`token_secret_name`]).
pub fn token_key(index: usize) -> String {
    format!("token-{index}")
}

/// The host Secret holding the tokens of host pod `host_pod` with `useSecretsForSATokens`.
pub fn token_secret_name(host_pod: &str) -> String {
    virtualcluster_crds::naming::suffixed(host_pod, "-sa-token")
}

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
    /// The host Secret that holds them (as [`token_key`]s) with `useSecretsForSATokens`;
    /// otherwise they are annotations of the host pod.
    pub token_secret: Option<&'a str>,
    /// The host name of the pod's ServiceAccount when service accounts are synced.
    pub service_account: Option<String>,
    /// The host name of the pod's PriorityClass when priority classes are synced.
    pub priority_class: Option<String>,
    /// What the platform lets the pod do on the host.
    pub policy: &'a HostPolicy,
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
    used(pod).0
}

/// The Secrets a pod uses, by virtual name (image pull secrets and volume drivers' credentials
/// included).
pub fn secrets(pod: &Pod) -> Vec<String> {
    used(pod).1
}

/// [`config_maps`] and [`secrets`] at once, each sorted and without duplicates.
pub fn used(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let (mut config_maps, mut secrets) = (Vec::new(), Vec::new());
    for r in references(pod) {
        match r.kind {
            Referenced::ConfigMap => config_maps.push(r.name),
            Referenced::Secret => secrets.push(r.name),
            Referenced::Claim => {}
        }
    }
    for names in [&mut config_maps, &mut secrets] {
        names.sort();
        names.dedup();
    }
    (config_maps, secrets)
}

/// The kinds of object a pod refers to by name, in its own namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Referenced {
    ConfigMap,
    Secret,
    Claim,
}

impl Referenced {
    pub const fn kind(self) -> &'static str {
        match self {
            Referenced::ConfigMap => "ConfigMap",
            Referenced::Secret => "Secret",
            Referenced::Claim => "PersistentVolumeClaim",
        }
    }
}

/// One reference of a pod to another object of its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub kind: Referenced,
    /// The virtual name.
    pub name: String,
    /// Whether the pod starts without the object (Kubernetes' `optional: true`).
    pub optional: bool,
    /// Where the pod names it, e.g. `spec.volumes[2].csi.nodePublishSecretRef`.
    pub field: String,
}

/// Every reference of `pod` to another object of its namespace, in the order of its spec.
pub fn references(pod: &Pod) -> Vec<Reference> {
    let mut found = Vec::new();
    if let Some(spec) = &pod.spec {
        let mut spec = spec.clone();
        visit_references(&mut spec, &mut |kind, name, optional, field| {
            if !name.is_empty() {
                found.push(Reference {
                    kind,
                    name: name.clone(),
                    optional,
                    field: field.to_owned(),
                });
            }
        });
    }
    found
}

/// Calls `f` with every name `spec` gives another object of its namespace: its kind, the name
/// (to read or rename), whether it is optional, and the field. The one list of where a pod
/// names objects, so listing and renaming cannot disagree.
fn visit_references(spec: &mut PodSpec, f: &mut dyn FnMut(Referenced, &mut String, bool, &str)) {
    use Referenced::{Claim, ConfigMap, Secret};
    for (i, v) in spec.volumes.iter_mut().flatten().enumerate() {
        let at = |field: &str| format!("spec.volumes[{i}].{field}");
        if let Some(s) = v.secret.as_mut()
            && let Some(name) = s.secret_name.as_mut()
        {
            f(
                Secret,
                name,
                s.optional == Some(true),
                &at("secret.secretName"),
            );
        }
        if let Some(c) = v.config_map.as_mut() {
            f(
                ConfigMap,
                &mut c.name,
                c.optional == Some(true),
                &at("configMap.name"),
            );
        }
        if let Some(c) = v.persistent_volume_claim.as_mut() {
            f(
                Claim,
                &mut c.claim_name,
                false,
                &at("persistentVolumeClaim.claimName"),
            );
        }
        if let Some(projected) = v.projected.as_mut() {
            for (j, source) in projected.sources.iter_mut().flatten().enumerate() {
                if let Some(s) = source.secret.as_mut() {
                    let field = at(&format!("projected.sources[{j}].secret.name"));
                    f(Secret, &mut s.name, s.optional == Some(true), &field);
                }
                if let Some(c) = source.config_map.as_mut() {
                    let field = at(&format!("projected.sources[{j}].configMap.name"));
                    f(ConfigMap, &mut c.name, c.optional == Some(true), &field);
                }
            }
        }
        // Volume drivers' credentials.
        if let Some(r) = v
            .csi
            .as_mut()
            .and_then(|c| c.node_publish_secret_ref.as_mut())
        {
            f(
                Secret,
                &mut r.name,
                false,
                &at("csi.nodePublishSecretRef.name"),
            );
        }
        if let Some(r) = v.cephfs.as_mut().and_then(|c| c.secret_ref.as_mut()) {
            f(Secret, &mut r.name, false, &at("cephfs.secretRef.name"));
        }
        if let Some(r) = v.rbd.as_mut().and_then(|c| c.secret_ref.as_mut()) {
            f(Secret, &mut r.name, false, &at("rbd.secretRef.name"));
        }
        if let Some(r) = v.iscsi.as_mut().and_then(|c| c.secret_ref.as_mut()) {
            f(Secret, &mut r.name, false, &at("iscsi.secretRef.name"));
        }
        if let Some(r) = v.flex_volume.as_mut().and_then(|c| c.secret_ref.as_mut()) {
            f(Secret, &mut r.name, false, &at("flexVolume.secretRef.name"));
        }
        if let Some(c) = v.scale_io.as_mut() {
            f(
                Secret,
                &mut c.secret_ref.name,
                false,
                &at("scaleIO.secretRef.name"),
            );
        }
        if let Some(r) = v.storageos.as_mut().and_then(|c| c.secret_ref.as_mut()) {
            f(Secret, &mut r.name, false, &at("storageos.secretRef.name"));
        }
        if let Some(c) = v.azure_file.as_mut() {
            f(
                Secret,
                &mut c.secret_name,
                false,
                &at("azureFile.secretName"),
            );
        }
        // A generic ephemeral volume cloned from a claim.
        if let Some(spec) = v
            .ephemeral
            .as_mut()
            .and_then(|e| e.volume_claim_template.as_mut())
            .map(|t| &mut t.spec)
        {
            if let Some(source) = spec.data_source.as_mut()
                && source.kind == "PersistentVolumeClaim"
                && source.api_group.as_deref().unwrap_or_default().is_empty()
            {
                let field = at("ephemeral.volumeClaimTemplate.spec.dataSource.name");
                f(Claim, &mut source.name, false, &field);
            }
            if let Some(source) = spec.data_source_ref.as_mut()
                && source.kind == "PersistentVolumeClaim"
                && source.api_group.as_deref().unwrap_or_default().is_empty()
                && source.namespace.is_none()
            {
                let field = at("ephemeral.volumeClaimTemplate.spec.dataSourceRef.name");
                f(Claim, &mut source.name, false, &field);
            }
        }
    }
    for (list, i, c) in env_of_containers(spec) {
        let at = |field: String| format!("spec.{list}[{i}].{field}");
        for (j, e) in c.env.iter_mut().flatten().enumerate() {
            let Some(from) = e.value_from.as_mut() else {
                continue;
            };
            if let Some(r) = from.secret_key_ref.as_mut() {
                let field = at(format!("env[{j}].valueFrom.secretKeyRef.name"));
                f(Secret, &mut r.name, r.optional == Some(true), &field);
            }
            if let Some(r) = from.config_map_key_ref.as_mut() {
                let field = at(format!("env[{j}].valueFrom.configMapKeyRef.name"));
                f(ConfigMap, &mut r.name, r.optional == Some(true), &field);
            }
        }
        for (j, e) in c.env_from.iter_mut().flatten().enumerate() {
            if let Some(r) = e.secret_ref.as_mut() {
                let field = at(format!("envFrom[{j}].secretRef.name"));
                f(Secret, &mut r.name, r.optional == Some(true), &field);
            }
            if let Some(r) = e.config_map_ref.as_mut() {
                let field = at(format!("envFrom[{j}].configMapRef.name"));
                f(ConfigMap, &mut r.name, r.optional == Some(true), &field);
            }
        }
    }
    // The kubelet pulls without a missing pull secret, as with an optional one.
    for (i, s) in spec.image_pull_secrets.iter_mut().flatten().enumerate() {
        f(
            Secret,
            &mut s.name,
            true,
            &format!("spec.imagePullSecrets[{i}].name"),
        );
    }
}

/// The image and environment of one container of any kind (containers, init and ephemeral
/// containers have the same fields for them, in different types).
struct ContainerEnv<'a> {
    image: &'a mut Option<String>,
    env: &'a mut Option<Vec<EnvVar>>,
    env_from: &'a mut Option<Vec<k8s_openapi::api::core::v1::EnvFromSource>>,
}

/// Every container of `spec`, init and ephemeral ones too: its list, index and environment.
fn env_of_containers(
    spec: &mut PodSpec,
) -> impl Iterator<Item = (&'static str, usize, ContainerEnv<'_>)> {
    let containers = spec.containers.iter_mut().enumerate().map(|(i, c)| {
        let env = ContainerEnv {
            image: &mut c.image,
            env: &mut c.env,
            env_from: &mut c.env_from,
        };
        ("containers", i, env)
    });
    let init = spec
        .init_containers
        .iter_mut()
        .flatten()
        .enumerate()
        .map(|(i, c)| {
            let env = ContainerEnv {
                image: &mut c.image,
                env: &mut c.env,
                env_from: &mut c.env_from,
            };
            ("initContainers", i, env)
        });
    let ephemeral = spec
        .ephemeral_containers
        .iter_mut()
        .flatten()
        .enumerate()
        .map(|(i, c)| {
            let env = ContainerEnv {
                image: &mut c.image,
                env: &mut c.env,
                env_from: &mut c.env_from,
            };
            ("ephemeralContainers", i, env)
        });
    containers.chain(init).chain(ephemeral)
}

/// What a host pod may not carry at all, whatever it is renamed to: sources the host would
/// resolve outside the instance (a claim cloned from another kind, or from another namespace).
pub fn unrenamable(pod: &Pod) -> Vec<String> {
    let mut found = Vec::new();
    for (i, v) in pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .enumerate()
    {
        let Some(spec) = v
            .ephemeral
            .as_ref()
            .and_then(|e| e.volume_claim_template.as_ref())
            .map(|t| &t.spec)
        else {
            continue;
        };
        let at = format!("spec.volumes[{i}].ephemeral.volumeClaimTemplate.spec");
        if let Some(source) = &spec.data_source
            && !is_claim(&source.kind, source.api_group.as_deref(), None)
        {
            found.push(format!(
                "{at}.dataSource names a {} (only claims of the virtual cluster may be cloned)",
                source.kind
            ));
        }
        if let Some(source) = &spec.data_source_ref
            && !is_claim(
                &source.kind,
                source.api_group.as_deref(),
                source.namespace.as_deref(),
            )
        {
            found.push(format!("{at}.dataSourceRef names a {} (only claims of the pod's own namespace may be cloned)", source.kind));
        }
    }
    found
}

/// Whether a data source names a claim of the object's own namespace.
pub fn is_claim(kind: &str, group: Option<&str>, namespace: Option<&str>) -> bool {
    kind == "PersistentVolumeClaim" && group.unwrap_or_default().is_empty() && namespace.is_none()
}

/// `pod` without its optional uses of `kind` `name` (one that does not exist): a volume becomes
/// the empty folder the kubelet would mount, an env var or source is left out. The pod then
/// starts as it would without the object, and no host object of that name can ever reach it.
pub fn without_optional(pod: &mut Pod, kind: Referenced, name: &str) {
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    for v in spec.volumes.iter_mut().flatten() {
        let unused = match kind {
            Referenced::Secret => v.secret.as_ref().is_some_and(|s| {
                s.optional == Some(true) && s.secret_name.as_deref() == Some(name)
            }),
            Referenced::ConfigMap => v
                .config_map
                .as_ref()
                .is_some_and(|c| c.optional == Some(true) && c.name == name),
            Referenced::Claim => false,
        };
        if unused {
            *v = Volume {
                name: v.name.clone(),
                empty_dir: Some(Default::default()),
                ..Default::default()
            };
        }
        if let Some(sources) = v.projected.as_mut().and_then(|p| p.sources.as_mut()) {
            sources.retain(|s| match kind {
                Referenced::Secret => !s
                    .secret
                    .as_ref()
                    .is_some_and(|s| s.optional == Some(true) && s.name == name),
                Referenced::ConfigMap => !s
                    .config_map
                    .as_ref()
                    .is_some_and(|c| c.optional == Some(true) && c.name == name),
                Referenced::Claim => true,
            });
        }
    }
    for (_, _, c) in env_of_containers(spec) {
        if let Some(env) = c.env.as_mut() {
            env.retain(|e| {
                let from = e.value_from.as_ref();
                match kind {
                    Referenced::Secret => !from
                        .and_then(|f| f.secret_key_ref.as_ref())
                        .is_some_and(|r| r.optional == Some(true) && r.name == name),
                    Referenced::ConfigMap => !from
                        .and_then(|f| f.config_map_key_ref.as_ref())
                        .is_some_and(|r| r.optional == Some(true) && r.name == name),
                    Referenced::Claim => true,
                }
            });
        }
        if let Some(env_from) = c.env_from.as_mut() {
            env_from.retain(|e| match kind {
                Referenced::Secret => !e
                    .secret_ref
                    .as_ref()
                    .is_some_and(|r| r.optional == Some(true) && r.name == name),
                Referenced::ConfigMap => !e
                    .config_map_ref
                    .as_ref()
                    .is_some_and(|r| r.optional == Some(true) && r.name == name),
                Referenced::Claim => true,
            });
        }
    }
    if kind == Referenced::Secret
        && let Some(pull) = spec.image_pull_secrets.as_mut()
    {
        pull.retain(|s| s.name != name);
    }
}

/// The host copy of virtual pod `pod`.
pub fn host_pod(pod: &Pod, env: &PodEnv<'_>) -> Pod {
    let target = env.target;
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let rename = |n: &str| target.host_name(&namespace, n);
    let mut metadata = target.copy_meta(&pod.metadata);
    let annotations = metadata.annotations.get_or_insert_default();
    if env.token_secret.is_none() {
        for (index, token) in env.tokens.iter().enumerate() {
            annotations.insert(token_annotation(index), token.clone());
        }
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
    // Gates the virtual cluster's controllers set stay (see `gates`).
    spec.readiness_gates = gates::kept(spec.readiness_gates.take());

    // Every object the pod names by its host name (see `visit_references`).
    visit_references(&mut spec, &mut |_, name, _, _| *name = rename(name));
    let mut token_index = 0;
    for volume in spec.volumes.iter_mut().flatten() {
        translate_volume(volume, &mut token_index, env.token_secret);
    }
    for (_, _, container) in env_of_containers(&mut spec) {
        translate_container(container, env);
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

    // Placement: the host scheduler decides, within what the platform offers. A tenant names
    // no host node and opens no taint the platform did not list.
    spec.node_name = None;
    let tolerations = spec.tolerations.get_or_insert_default();
    tolerations.retain(|t| allowed_toleration(t, env.policy));
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
    // The instance's node selector wins over the pod's, the platform's over both.
    if !env.options.node_selector.is_empty() || !env.policy.node_selector.is_empty() {
        let selector = spec.node_selector.get_or_insert_default();
        selector.extend(env.options.node_selector.clone());
        selector.extend(env.policy.node_selector.clone());
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

/// Whether tenant toleration `t` opens only taints the platform offers: those it lists
/// ([`HostPolicy::allowed_tolerations`], the effect and value as listed when it names them), and
/// the NoExecute `node.kubernetes.io/*` ones the API server adds to every pod. A toleration
/// without a key tolerates every taint.
pub fn allowed_toleration(t: &Toleration, policy: &HostPolicy) -> bool {
    let Some(key) = t.key.as_deref().filter(|k| !k.is_empty()) else {
        return false;
    };
    if key.starts_with(DEFAULT_TOLERATION_PREFIX) && t.effect.as_deref() == Some("NoExecute") {
        return true;
    }
    let equal = t.operator.as_deref().unwrap_or("Equal") == "Equal";
    policy
        .allowed_tolerations
        .iter()
        .map(|a| toleration(a))
        .any(|offered| {
            offered.key.as_deref() == Some(key)
                && (offered.effect.is_none() || offered.effect == t.effect)
                && (offered.value.is_none() || (equal && offered.value == t.value))
        })
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

/// The parts of a volume that read the pod's own fields or mint tokens: the virtual values
/// instead of the host's.
fn translate_volume(volume: &mut Volume, token_index: &mut usize, token_secret: Option<&str>) {
    if let Some(downward) = volume.downward_api.as_mut() {
        rename_fields(downward.items.iter_mut().flatten());
    }
    if let Some(claim) = volume
        .ephemeral
        .as_mut()
        .and_then(|e| e.volume_claim_template.as_mut())
    {
        // Virtual volumes do not exist on the host; the host binds its own.
        claim.spec.volume_name = None;
    }
    if let Some(projected) = volume.projected.as_mut() {
        for source in projected.sources.iter_mut().flatten() {
            if let Some(downward) = source.downward_api.as_mut() {
                rename_fields(downward.items.iter_mut().flatten());
            }
            if let Some(token) = source.service_account_token.take() {
                // The virtual cluster's token, from the Secret or the annotation the syncer
                // sets; the kubelet would mint a host token here.
                let index = *token_index;
                *token_index += 1;
                if let Some(secret) = token_secret {
                    source.secret = Some(SecretProjection {
                        name: secret.to_owned(),
                        items: Some(vec![KeyToPath {
                            key: token_key(index),
                            path: token.path,
                            ..Default::default()
                        }]),
                        optional: Some(false),
                    });
                    continue;
                }
                let annotation = token_annotation(index);
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

fn translate_container(container: ContainerEnv<'_>, env: &PodEnv<'_>) {
    if let Some(image) = container.image.as_ref()
        && let Some(host_image) = env.options.translate_image.get(image)
    {
        *container.image = Some(host_image.clone());
    }
    let vars = container.env.get_or_insert_default();
    for field in vars
        .iter_mut()
        .filter_map(|v| v.value_from.as_mut()?.field_ref.as_mut())
    {
        rename_field(field);
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
}

/// `snake_case` as the API spells it, `camelCase`.
pub fn camel(snake: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in snake.chars() {
        match (c, upper) {
            ('_', _) => upper = true,
            (c, true) => {
                out.extend(c.to_uppercase());
                upper = false;
            }
            (c, false) => out.push(c),
        }
    }
    out
}

/// The containers (and init containers) patches renamed: host name to virtual name, by their
/// place in the spec.
pub fn renamed_containers(unpatched: &Pod, patched: &Pod) -> BTreeMap<String, String> {
    let names = |pod: &Pod| -> Vec<String> {
        pod.spec
            .iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
            })
            .map(|c| c.name.clone())
            .collect()
    };
    let (host, virtual_) = (names(patched), names(unpatched));
    // Renamed in place only: a patch that added or removed containers pairs none.
    if host.len() != virtual_.len() {
        return BTreeMap::new();
    }
    host.into_iter()
        .zip(virtual_)
        .filter(|(host, virtual_)| host != virtual_)
        .collect()
}

/// What [`keys::CONTAINER_NAMES`] on a host pod says: host container name to virtual name.
pub fn container_names(annotations: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    annotations
        .get(keys::CONTAINER_NAMES)
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default()
}

/// The status the virtual pod should show for host pod `host`: `None` when it already shows it.
/// Containers patches renamed show their virtual names (`renamed`: host name to virtual).
pub fn virtual_status(
    host: Option<PodStatus>,
    current: Option<&PodStatus>,
    renamed: &BTreeMap<String, String>,
) -> Option<PodStatus> {
    let mut host = host.unwrap_or_default();
    for status in host
        .container_statuses
        .iter_mut()
        .chain(host.init_container_statuses.iter_mut())
        .flatten()
    {
        if let Some(name) = renamed.get(&status.name) {
            status.name = name.clone();
        }
    }
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
        ephemeral_container_statuses: host.ephemeral_container_statuses,
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

mod changeable;
mod gates;
pub use changeable::{Changeable, images, null_as_empty};
pub use gates::{gates_update, has_gates, with_virtual_gates};

#[cfg(test)]
mod tests;
