//! The instance's syncer: its configuration, its identity on the host (ServiceAccount and RBAC
//! limited to what it syncs) and its Deployment.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, PodSpec, PodTemplateSpec,
    SecretVolumeSource, ServiceAccount, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use virtualcluster_crds::instance::{
    Component, KUBECONFIG_KEY, SYNCER_CONFIG_KEY, SYNCER_METRICS_PORT_NAME, SyncerConfig,
};
use virtualcluster_crds::kinds::{self, Kind};
use virtualcluster_crds::{keys, kubelet, syncer_access};

use super::control_plane::{field_env, hardened, pod_security, probe};
use super::{CONFIG_HASH, Instance};

pub const SYNCER_CONTAINER: &str = "syncer";
/// Where the syncer finds its [`SyncerConfig`] and its virtual-cluster kubeconfig.
const CONFIG_DIR: &str = "/etc/virtualcluster/config";
const VIRTUAL_KUBECONFIG_DIR: &str = "/etc/virtualcluster/virtual";
/// Where the syncer serves `/metrics`, `/healthz` and `/readyz`.
pub const SYNCER_METRICS_PORT: u16 = 8080;

/// The resolved configuration the syncer runs with.
pub fn syncer_config(instance: &Instance<'_>) -> SyncerConfig {
    SyncerConfig {
        instance: instance.id().clone(),
        sync: instance.vc.spec.sync.clone(),
        api_server_service: instance.id().api_server_service(),
        service_cidr: instance.valid.service_cidr.clone(),
        policy: instance.valid.policy.clone(),
        policies: instance.vc.spec.policies.clone(),
        custom_resources: instance.valid.custom_resources.kinds.clone(),
    }
}

/// The ConfigMap holding [`syncer_config`]; its [`keys::NAMESPACE_SYNC`] annotation records
/// the namespace-sync block the instance runs with, which may not change, and
/// [`keys::SYNCED_KINDS`] the kinds it may have host copies of.
pub fn config_map(instance: &Instance<'_>) -> ConfigMap {
    let config = serde_json::to_string_pretty(&syncer_config(instance))
        .expect("the syncer configuration always serializes");
    let mut metadata = instance.meta(instance.id().syncer_config(), Component::Syncer);
    // The kinds it may have copies of: those it syncs, and those turned off whose copies
    // are not removed yet.
    let mut kinds = crate::turned_off::copied(
        &instance.vc.spec.sync,
        &instance.valid.custom_resources.kinds,
    );
    kinds.extend(instance.valid.turned_off.iter().cloned());
    metadata.annotations = Some(BTreeMap::from([
        (
            keys::NAMESPACE_SYNC.into(),
            serde_json::to_string(&instance.vc.spec.sync.to_host.namespaces)
                .expect("the namespace-sync block always serializes"),
        ),
        (keys::SYNCED_KINDS.into(), crate::turned_off::record(&kinds)),
    ]));
    ConfigMap {
        metadata,
        data: Some(BTreeMap::from([(SYNCER_CONFIG_KEY.into(), config)])),
        ..Default::default()
    }
}

/// The namespace-sync block recorded on the syncer's ConfigMap (see [`config_map`]).
pub fn recorded_namespace_sync(
    annotations: &BTreeMap<String, String>,
) -> Option<virtualcluster_crds::v1alpha1::NamespaceSync> {
    serde_json::from_str(annotations.get(keys::NAMESPACE_SYNC)?).ok()
}

/// The syncer's ServiceAccount and what it may do on the host.
pub struct SyncerRbac {
    pub service_account: ServiceAccount,
    /// In the instance's namespace, to the fixed [`syncer_access::own_role`].
    pub role_binding: RoleBinding,
    /// Cluster-wide: labelled, not owned (cluster-scoped objects cannot have a namespaced
    /// owner), removed by the finalizer. No ClusterRole of its own when reading nodes is all
    /// it needs: the binding is then to the fixed [`syncer_access::nodes_role`].
    pub cluster_role: Option<ClusterRole>,
    pub cluster_role_binding: ClusterRoleBinding,
    /// In the instance's namespace, for its namespaced custom resources, with its binding.
    pub custom_resources: Option<(Role, RoleBinding)>,
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let strings = |s: &[&str]| Some(s.iter().map(|v| (*v).to_owned()).collect());
    PolicyRule {
        api_groups: strings(groups),
        resources: strings(resources),
        verbs: strings(verbs).unwrap_or_default(),
        ..Default::default()
    }
}

use syncer_access::{READ, WRITE};

/// What the syncer needs across the cluster, for the given configuration: at least to read the
/// host's nodes, whose name and readiness the virtual nodes mirror (read-only, and nodes are
/// cluster-scoped). With namespace syncing it reads VirtualClusters (a namespace holding one is
/// never claimed) and writes namespaces, which [`syncer_access::namespace_policy`] narrows to
/// its own instance's; in a host namespace it holds, the operator binds it the rest
/// ([`crate::access`]). Never pods, Secrets or any namespaced kind cluster-wide.
pub fn cluster_rules(instance: &Instance<'_>) -> Vec<PolicyRule> {
    let sync = &instance.vc.spec.sync;
    let mut rules = syncer_access::nodes_rules();
    if sync.to_host.namespaces.enabled {
        rules.push(rule(&[""], &["namespaces"], WRITE));
        rules.push(rule(&["virtualcluster.dev"], &["virtualclusters"], READ));
    }
    if sync.to_host.ingresses.enabled {
        // Every host Ingress, to refuse host names another namespace already serves.
        rules.push(rule(&["networking.k8s.io"], &["ingresses"], READ));
    }
    let custom = &instance.valid.custom_resources.kinds;
    if !custom.is_empty() {
        // The CRDs of its custom resources, which it copies into the virtual cluster, and no
        // other.
        let names: Vec<String> = custom.iter().map(Kind::resource).collect();
        rules.push(PolicyRule {
            resource_names: Some(names),
            ..rule(
                &["apiextensions.k8s.io"],
                &["customresourcedefinitions"],
                READ,
            )
        });
    }
    // Cluster-scoped kinds, built-in and custom: written to the host, or read from it.
    for kind in kinds::enabled(sync)
        .iter()
        .chain(custom)
        .filter(|k| !k.namespaced)
    {
        rules.push(rule(&[&kind.group], &[&kind.plural], kind.host_verbs()));
    }
    rules
}

/// What the syncer needs in its instance's namespace for its namespaced custom resources:
/// write on those it copies to the host, read on those it shows from there. `None` when it
/// syncs none.
pub fn custom_resource_role(instance: &Instance<'_>) -> Option<Role> {
    let rules: Vec<PolicyRule> = instance
        .valid
        .custom_resources
        .kinds
        .iter()
        .filter(|k| k.namespaced)
        .map(|k| rule(&[&k.group], &[&k.plural], k.host_verbs()))
        .collect();
    (!rules.is_empty()).then(|| Role {
        metadata: instance.meta(custom_resource_role_name(instance.id()), Component::Syncer),
        rules: Some(rules),
    })
}

/// The name of [`custom_resource_role`] and of its binding.
pub fn custom_resource_role_name(id: &virtualcluster_crds::instance::InstanceRef) -> String {
    format!("{}-custom-resources", id.syncer())
}

pub fn rbac(instance: &Instance<'_>) -> SyncerRbac {
    let id = instance.id();
    let name = id.syncer();
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: name.clone(),
        namespace: Some(id.namespace.clone()),
        ..Default::default()
    };
    let role_ref = |kind: &str, name: String| RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: kind.into(),
        name,
    };
    let cluster_name = id.syncer_cluster_role();
    let rules = cluster_rules(instance);
    let cluster_role = (rules != syncer_access::nodes_rules()).then(|| ClusterRole {
        metadata: instance.cluster_meta(cluster_name.clone(), Component::Syncer),
        rules: Some(rules),
        ..Default::default()
    });
    let bound = match &cluster_role {
        Some(_) => cluster_name.clone(),
        None => syncer_access::nodes_role(&instance.settings.syncer_role),
    };
    let cluster_role_binding = ClusterRoleBinding {
        metadata: instance.cluster_meta(cluster_name, Component::Syncer),
        role_ref: role_ref("ClusterRole", bound),
        subjects: Some(vec![subject.clone()]),
    };
    SyncerRbac {
        service_account: ServiceAccount {
            metadata: instance.meta(name.clone(), Component::Syncer),
            // The syncer's pods mount a projected token through the Deployment.
            automount_service_account_token: Some(false),
            ..Default::default()
        },
        role_binding: RoleBinding {
            metadata: instance.meta(name, Component::Syncer),
            role_ref: role_ref(
                "ClusterRole",
                syncer_access::own_role(&instance.settings.syncer_role),
            ),
            subjects: Some(vec![subject]),
        },
        cluster_role,
        cluster_role_binding,
        custom_resources: custom_resource_role(instance).map(|role| {
            let name = custom_resource_role_name(id);
            let binding = RoleBinding {
                metadata: instance.meta(name.clone(), Component::Syncer),
                role_ref: role_ref("Role", name),
                subjects: Some(vec![subject_again(id)]),
            };
            (role, binding)
        }),
    }
}

fn subject_again(id: &virtualcluster_crds::instance::InstanceRef) -> Subject {
    Subject {
        kind: "ServiceAccount".into(),
        name: id.syncer(),
        namespace: Some(id.namespace.clone()),
        ..Default::default()
    }
}

/// The syncer Deployment. `config_hash` covers the ConfigMap and the credentials Secret, so a
/// change to either rolls the pods. `syncer_ip` is the ClusterIP of the syncer's Service: the
/// virtual nodes advertise it as their kubelet's address (none yet: no kubelet API).
pub fn deployment(
    instance: &Instance<'_>,
    config_hash: &str,
    syncer_ip: Option<&str>,
) -> Deployment {
    let id = instance.id();
    let spec = &instance.vc.spec.syncer;
    let credential = |key: &str| format!("{VIRTUAL_KUBECONFIG_DIR}/{key}");
    let mut args = vec![
        format!("--virtual-kubeconfig={}", credential(KUBECONFIG_KEY)),
        format!("--config={CONFIG_DIR}/{SYNCER_CONFIG_KEY}"),
        format!("--metrics-addr=0.0.0.0:{SYNCER_METRICS_PORT}"),
    ];
    if let Some(ip) = syncer_ip.filter(|ip| !ip.is_empty() && *ip != "None") {
        let port = kubelet::PORT;
        args.extend([
            format!("{}=0.0.0.0:{port}", kubelet::flag::LISTEN),
            format!("{}={}", kubelet::flag::ADVERTISE, advertised(ip, port)),
            format!(
                "{}={}",
                kubelet::flag::TLS_CERT_FILE,
                credential(kubelet::SERVING_CERT_KEY)
            ),
            format!(
                "{}={}",
                kubelet::flag::TLS_KEY_FILE,
                credential(kubelet::SERVING_KEY_KEY)
            ),
            format!(
                "{}={}",
                kubelet::flag::CLIENT_CA_FILE,
                credential(kubelet::CLIENT_CA_KEY)
            ),
        ]);
    }
    let container = Container {
        name: SYNCER_CONTAINER.into(),
        image: Some(
            spec.image
                .clone()
                .unwrap_or_else(|| instance.settings.syncer_image.clone()),
        ),
        // The image's entrypoint, named so the pod says what it runs.
        command: Some(vec!["virtualcluster-syncer".into()]),
        args: Some(args),
        ports: Some(vec![
            ContainerPort {
                name: Some(SYNCER_METRICS_PORT_NAME.into()),
                container_port: SYNCER_METRICS_PORT.into(),
                protocol: Some("TCP".into()),
                ..Default::default()
            },
            ContainerPort {
                name: Some(kubelet::PORT_NAME.into()),
                container_port: kubelet::PORT.into(),
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        ]),
        // Ready while a standby, and as the leader once its caches are filled.
        readiness_probe: Some(probe("/readyz", SYNCER_METRICS_PORT, "HTTP", 3)),
        liveness_probe: Some(probe("/healthz", SYNCER_METRICS_PORT, "HTTP", 6)),
        env: Some(vec![
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
        ]),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "virtual-kubeconfig".into(),
                mount_path: VIRTUAL_KUBECONFIG_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
        ]),
        ..hardened(spec.resources.clone())
    };
    Deployment {
        metadata: instance.meta(id.syncer(), Component::Syncer),
        spec: DeploymentSpec {
            replicas: Some(spec.replicas),
            selector: LabelSelector {
                match_labels: Some(id.selector_labels(Component::Syncer)),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(id.labels(Component::Syncer)),
                    annotations: Some(BTreeMap::from([(CONFIG_HASH.into(), config_hash.into())])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(id.syncer()),
                    // The host credentials: the ServiceAccount's token, mounted as usual.
                    automount_service_account_token: Some(true),
                    enable_service_links: Some(false),
                    containers: vec![container],
                    volumes: Some(vec![
                        Volume {
                            name: "config".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: id.syncer_config(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        Volume {
                            name: "virtual-kubeconfig".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(id.syncer_kubeconfig_secret()),
                                default_mode: Some(0o440),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    ]),
                    security_context: Some(pod_security()),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

/// `IP:PORT`, with brackets for IPv6.
fn advertised(ip: &str, port: u16) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
        _ => format!("{ip}:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;
    use crate::settings::Settings;
    use virtualcluster_crds::mapping::by_name;

    #[test]
    fn cluster_wide_access_beyond_node_reads_only_with_namespace_syncing_or_cluster_kinds() {
        let settings = Settings::default();
        let plain = fixtures::vc(|_| {});
        let valid = fixtures::valid(&plain);
        let instance = Instance {
            vc: &plain,
            valid: &valid,
            settings: &settings,
        };
        let plain_rbac = rbac(&instance);
        // Without namespace syncing the syncer reads host nodes across the cluster, nothing
        // more: through the fixed ClusterRole, so the instance has none of its own.
        assert!(plain_rbac.cluster_role.is_none());
        assert_eq!(
            plain_rbac.cluster_role_binding.role_ref.name,
            "virtualcluster-operator-syncer-nodes"
        );
        let plain_rules = cluster_rules(&instance);
        assert_eq!(plain_rules, syncer_access::nodes_rules());
        assert_eq!(
            plain_rules[0].resources.as_deref(),
            Some(&["nodes".to_owned()][..])
        );
        assert_eq!(plain_rules[0].verbs, ["get", "list", "watch"]);
        assert_eq!(
            plain_rbac.role_binding.metadata.namespace.as_deref(),
            Some("team-a")
        );
        assert_eq!(
            plain_rbac.role_binding.role_ref.name,
            "virtualcluster-operator-syncer-own"
        );

        let mapped = fixtures::vc(|vc| {
            let ns = &mut vc.spec.sync.to_host.namespaces;
            ns.enabled = true;
            ns.mappings.by_name = by_name([("a-*", "h-a-*")]);
        });
        let valid = fixtures::valid(&mapped);
        let instance = Instance {
            vc: &mapped,
            valid: &valid,
            settings: &settings,
        };
        let mapped_rbac = rbac(&instance);
        let role = mapped_rbac.cluster_role.expect("a ClusterRole of its own");
        assert_eq!(
            role.metadata.name.as_deref(),
            Some("virtualcluster-syncer.team-a.demo")
        );
        assert!(role.metadata.owner_references.is_none());
        assert!(instance.id().owns(role.metadata.labels.as_ref().unwrap()));
        let rules = role.rules.unwrap();
        assert!(
            rules
                .iter()
                .any(|r| r.resources.as_ref().unwrap() == &["namespaces"])
        );
        // Nothing namespaced cluster-wide: what it syncs is bound per held namespace.
        let resources: Vec<&str> = rules
            .iter()
            .flat_map(|r| r.resources.iter().flatten())
            .map(String::as_str)
            .collect();
        assert_eq!(resources, ["nodes", "namespaces", "virtualclusters"]);
        let write: Vec<&PolicyRule> = rules
            .iter()
            .filter(|r| r.verbs.iter().any(|v| v == "create"))
            .collect();
        assert_eq!(write.len(), 1, "only namespaces are written: {write:?}");
        let binding = mapped_rbac.cluster_role_binding;
        assert_eq!(binding.role_ref.name, "virtualcluster-syncer.team-a.demo");
        assert_eq!(binding.subjects.unwrap()[0].name, "demo-syncer");
    }

    #[test]
    fn the_deployment_rolls_when_its_configuration_changes() {
        let settings = Settings::default();
        let vc = fixtures::vc(|vc| vc.spec.syncer.replicas = 2);
        let valid = fixtures::valid(&vc);
        let instance = Instance {
            vc: &vc,
            valid: &valid,
            settings: &settings,
        };
        let a = deployment(&instance, "a", Some("10.96.3.5"));
        let b = deployment(&instance, "b", Some("10.96.3.5"));
        assert_ne!(a.spec.template, b.spec.template);
        let spec = a.spec;
        assert_eq!(spec.replicas, Some(2));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("demo-syncer"));
        assert_eq!(
            pod.containers[0].image.as_deref(),
            Some(crate::settings::DEFAULT_SYNCER_IMAGE)
        );
        let args = pod.containers[0].args.clone().unwrap();
        assert!(args.contains(&"--kubelet-advertise=10.96.3.5:10250".to_owned()));
        assert!(args.contains(&"--kubelet-listen=0.0.0.0:10250".to_owned()));
        // Without the Service's address there is nothing to advertise, so no kubelet API.
        let none = deployment(&instance, "a", None).spec.template.spec.unwrap();
        let args = none.containers[0].args.clone().unwrap();
        assert!(
            !args.iter().any(|a| a.starts_with("--kubelet-")),
            "{args:?}"
        );
        assert_eq!(advertised("fd00::5", 10250), "[fd00::5]:10250");
    }

    #[test]
    fn the_config_map_holds_the_resolved_configuration() {
        let settings = Settings::default();
        let vc = fixtures::vc(|vc| vc.spec.sync.to_host.ingresses.enabled = true);
        let valid = fixtures::valid(&vc);
        let instance = Instance {
            vc: &vc,
            valid: &valid,
            settings: &settings,
        };
        let cm = config_map(&instance);
        let parsed: SyncerConfig =
            serde_json::from_str(&cm.data.unwrap()[SYNCER_CONFIG_KEY]).unwrap();
        assert_eq!(parsed, syncer_config(&instance));
        assert!(parsed.sync.to_host.ingresses.enabled);
        assert_eq!(parsed.instance.uid, "0b7c6a8e-uid");
        assert_eq!(parsed.service_cidr, crate::settings::DEFAULT_SERVICE_CIDR);
        let recorded = recorded_namespace_sync(cm.metadata.annotations.as_ref().unwrap());
        assert_eq!(recorded.as_ref(), Some(&vc.spec.sync.to_host.namespaces));
    }
}

#[cfg(test)]
mod rbac_tests {
    use super::super::fixtures;
    use super::*;
    use crate::settings::Settings;
    use virtualcluster_crds::mapping::by_name;

    /// Whether `granted` allows every (group, resource, verb) of `rule`.
    fn covers(granted: &[PolicyRule], rule: &PolicyRule) -> bool {
        let each = |v: &Option<Vec<String>>| v.clone().unwrap_or_default();
        each(&rule.api_groups).iter().all(|group| {
            each(&rule.resources).iter().all(|resource| {
                rule.verbs.iter().all(|verb| {
                    granted.iter().any(|g| {
                        each(&g.api_groups).contains(group)
                            && each(&g.resources).contains(resource)
                            && g.verbs.contains(verb)
                    })
                })
            })
        })
    }

    /// The operator can create a syncer's own ClusterRole only if it holds every permission in
    /// it: its ClusterRole (`config/rbac/role.yaml`) covers the most a syncer can get (the
    /// fixed roles too, though it binds those with `bind`).
    #[test]
    fn the_operator_holds_everything_it_grants_a_syncer() {
        let role: ClusterRole =
            serde_yaml::from_str(include_str!("../../../config/rbac/role.yaml")).unwrap();
        let granted = role.rules.unwrap();
        let settings = Settings::default();
        let vc = fixtures::vc(|vc| {
            let sync = &mut vc.spec.sync;
            sync.to_host.namespaces.enabled = true;
            sync.to_host.namespaces.mappings.by_name = by_name([("a-*", "h-a-*")]);
            sync.to_host.priority_classes.enabled = true;
            sync.from_host.nodes.enabled = true;
            sync.from_host.storage_classes.enabled = true;
            sync.from_host.ingress_classes.enabled = true;
        });
        let valid = fixtures::valid(&vc);
        let instance = Instance {
            vc: &vc,
            valid: &valid,
            settings: &settings,
        };
        let everything = rbac(&instance);
        for rule in everything
            .cluster_role
            .unwrap()
            .rules
            .unwrap()
            .iter()
            .chain(syncer_access::own_rules().iter())
            // The pod subresources the operator never uses itself: it binds the fixed roles
            // holding them with `bind`, so it need not hold them.
            .filter(|rule| {
                rule.resources
                    .iter()
                    .flatten()
                    .all(|r| !syncer_access::is_syncer_only(r))
            })
        {
            assert!(
                covers(&granted, rule),
                "config/rbac/role.yaml lacks {rule:?}"
            );
        }
    }
}
