//! DNS inside the virtual cluster: CoreDNS, installed into the virtual `kube-system` like any
//! workload, so its pod runs on the host through the syncer and answers for virtual Services.
//! Host pods are pointed at its Service's host address (see `translate::pod`).

use std::collections::BTreeMap;
use std::fmt::Debug;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, HTTPGetAction,
    PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecurityContext, Service, ServiceAccount,
    ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::copy;

pub const NAMESPACE: &str = "kube-system";
/// The DNS Service, named as in every Kubernetes cluster.
pub const SERVICE: &str = "kube-dns";
const NAME: &str = "coredns";
const CLUSTER_ROLE: &str = "system:coredns";
pub const DEFAULT_IMAGE: &str = "registry.k8s.io/coredns/coredns:v1.12.1";
/// The image's non-root user.
const RUN_AS: i64 = 65532;

const COREFILE: &str = r#".:53 {
    errors
    health {
        lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf
    cache 30
    loop
    reload
    loadbalance
}
"#;

fn meta(name: &str, namespaced: bool) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespaced.then(|| NAMESPACE.into()),
        labels: Some(labels()),
        ..Default::default()
    }
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([("k8s-app".into(), SERVICE.into())])
}

fn port(name: &str, port: i32, protocol: &str) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some(protocol.into()),
        ..Default::default()
    }
}

fn http_probe(path: &str, port: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub struct Objects {
    pub service_account: ServiceAccount,
    pub cluster_role: ClusterRole,
    pub cluster_role_binding: ClusterRoleBinding,
    pub config_map: ConfigMap,
    pub deployment: Deployment,
    pub service: Service,
}

pub fn objects(image: &str) -> Objects {
    let rule = |groups: &[&str], resources: &[&str]| PolicyRule {
        api_groups: Some(groups.iter().map(|g| (*g).into()).collect()),
        resources: Some(resources.iter().map(|r| (*r).into()).collect()),
        verbs: vec!["list".into(), "watch".into()],
        ..Default::default()
    };
    let container = Container {
        name: NAME.into(),
        image: Some(image.into()),
        args: Some(vec!["-conf".into(), "/etc/coredns/Corefile".into()]),
        ports: Some(vec![
            port("dns", 53, "UDP"),
            port("dns-tcp", 53, "TCP"),
            port("metrics", 9153, "TCP"),
        ]),
        liveness_probe: Some(http_probe("/health", 8080)),
        readiness_probe: Some(http_probe("/ready", 8181)),
        volume_mounts: Some(vec![VolumeMount {
            name: "config".into(),
            mount_path: "/etc/coredns".into(),
            read_only: Some(true),
            ..Default::default()
        }]),
        // The restricted Pod Security Standard, so it runs at every level an instance has;
        // binding port 53 is the one capability it keeps.
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_BIND_SERVICE".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    Objects {
        service_account: ServiceAccount {
            metadata: meta(NAME, true),
            ..Default::default()
        },
        cluster_role: ClusterRole {
            metadata: meta(CLUSTER_ROLE, false),
            rules: Some(vec![
                rule(&[""], &["endpoints", "services", "pods", "namespaces"]),
                rule(&["discovery.k8s.io"], &["endpointslices"]),
            ]),
            ..Default::default()
        },
        cluster_role_binding: ClusterRoleBinding {
            metadata: meta(CLUSTER_ROLE, false),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "ClusterRole".into(),
                name: CLUSTER_ROLE.into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: NAME.into(),
                namespace: Some(NAMESPACE.into()),
                ..Default::default()
            }]),
        },
        config_map: ConfigMap {
            metadata: meta(NAME, true),
            data: Some(BTreeMap::from([("Corefile".into(), COREFILE.into())])),
            ..Default::default()
        },
        deployment: Deployment {
            metadata: meta(NAME, true),
            spec: DeploymentSpec {
                replicas: Some(1),
                selector: LabelSelector {
                    match_labels: Some(labels()),
                    ..Default::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels()),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        service_account_name: Some(NAME.into()),
                        // Upstream names resolve through the node's resolver.
                        dns_policy: Some("Default".into()),
                        containers: vec![container],
                        volumes: Some(vec![Volume {
                            name: "config".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: NAME.into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }),
                },
                ..Default::default()
            },
            status: None,
        },
        service: Service {
            metadata: meta(SERVICE, true),
            spec: Some(ServiceSpec {
                selector: Some(labels()),
                ports: Some(vec![
                    service_port("dns", 53, "UDP"),
                    service_port("dns-tcp", 53, "TCP"),
                    service_port("metrics", 9153, "TCP"),
                ]),
                ..Default::default()
            }),
            status: None,
        },
    }
}

fn service_port(name: &str, port: i32, protocol: &str) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        protocol: Some(protocol.into()),
        target_port: Some(IntOrString::Int(port)),
        ..Default::default()
    }
}

/// Applies CoreDNS to the virtual cluster (idempotent): each object is read first and applied
/// only when it lacks something desired, so a restarted syncer writes nothing.
pub async fn install(virt: &Client, image: &str) -> anyhow::Result<()> {
    let o = objects(image);
    ensure(
        &Api::namespaced(virt.clone(), NAMESPACE),
        &o.service_account,
    )
    .await?;
    ensure(&Api::all(virt.clone()), &o.cluster_role).await?;
    ensure(&Api::all(virt.clone()), &o.cluster_role_binding).await?;
    ensure(&Api::namespaced(virt.clone(), NAMESPACE), &o.config_map).await?;
    ensure(&Api::namespaced(virt.clone(), NAMESPACE), &o.deployment).await?;
    ensure(&Api::namespaced(virt.clone(), NAMESPACE), &o.service).await?;
    Ok(())
}

async fn ensure<K>(api: &Api<K>, desired: &K) -> anyhow::Result<()>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    match api.get_opt(&desired.name_any()).await? {
        Some(live) => copy::update(api, desired.clone(), &live).await,
        None => copy::apply(api, desired).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use virtualcluster_crds::pod_security;
    use virtualcluster_crds::v1alpha1::PodSecurityStandard;

    #[test]
    fn coredns_runs_at_every_pod_security_level() {
        let template = objects(DEFAULT_IMAGE).deployment.spec.template;
        let pod = Pod {
            metadata: template.metadata.unwrap_or_default(),
            spec: template.spec,
            status: None,
        };
        let violations = pod_security::check(PodSecurityStandard::Restricted, &pod);
        assert!(violations.is_empty(), "{violations:?}");
    }
}
