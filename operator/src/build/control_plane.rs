//! The virtual control plane: one StatefulSet pod running etcd, kube-apiserver and
//! kube-controller-manager from the official images, the Services in front of it, and the names
//! its certificates must cover.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use virtualcluster_crds::instance::{API_SERVER_SERVICE_PORT, Component};
use virtualcluster_crds::kubelet;
use virtualcluster_crds::v1alpha1::{PodSecurityStandard, ServiceType};

use super::admission::ADMISSION_CONFIG_KEY;
use super::{CONFIG_HASH, Instance};
use crate::pki::{self, API_SERVER_PORT, file};

/// Where the control plane's certificates and keys are mounted.
pub const PKI_DIR: &str = "/etc/virtualcluster/pki";
/// Where the control plane's configuration files are mounted.
pub const CONFIG_DIR: &str = "/etc/virtualcluster/config";
/// Where etcd's volume is mounted; etcd keeps its data in a folder below it.
pub const DATA_DIR: &str = "/var/lib/etcd";

pub const ETCD_CONTAINER: &str = "etcd";
pub const API_SERVER_CONTAINER: &str = "kube-apiserver";
pub const CONTROLLER_MANAGER_CONTAINER: &str = "kube-controller-manager";

const ETCD_CLIENT_PORT: u16 = 2379;
const ETCD_PEER_PORT: u16 = 2380;
const ETCD_METRICS_PORT: u16 = 2381;
const CONTROLLER_MANAGER_PORT: u16 = 10257;

const CERTS_VOLUME: &str = "certs";
const CONFIG_VOLUME: &str = "config";
const DATA_VOLUME: &str = "data";
/// The non-root user and group every container runs as.
const RUN_AS: i64 = 65532;
/// Service-account token issuer of every virtual cluster, the one clients expect.
const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Controllers a virtual cluster has no use for: its nodes are mirrors the syncer keeps, and
/// volumes are bound and attached on the host. Names as `kube-controller-manager --help` lists
/// them: it refuses to start on an unknown one (the cloud controllers, such as
/// `cloud-node-lifecycle-controller`, live in the cloud-controller-manager, not here).
const DISABLED_CONTROLLERS: [&str; 6] = [
    "node-ipam-controller",
    "node-lifecycle-controller",
    "persistentvolume-binder-controller",
    "persistentvolume-attach-detach-controller",
    "persistentvolume-expander-controller",
    "ttl-controller",
];

/// The Service in front of the API server, the headless Service of the StatefulSet, and the
/// syncer's Service, where the virtual API server reaches the kubelet API of the virtual nodes.
pub fn services(instance: &Instance<'_>) -> Vec<Service> {
    let id = instance.id();
    let selector = Some(id.selector_labels(Component::ControlPlane));
    let type_ = match instance.vc.spec.control_plane.service.type_ {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    };
    let api = Service {
        metadata: instance.meta(id.api_server_service(), Component::ControlPlane),
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            selector: selector.clone(),
            ports: Some(vec![ServicePort {
                name: Some("https".into()),
                port: API_SERVER_SERVICE_PORT,
                target_port: Some(IntOrString::String("https".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let port = |name: &str, port: u16| ServicePort {
        name: Some(name.into()),
        port: port.into(),
        target_port: Some(IntOrString::Int(port.into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    let headless = Service {
        metadata: instance.meta(id.headless_service(), Component::ControlPlane),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector,
            publish_not_ready_addresses: Some(true),
            ports: Some(vec![
                port("https", API_SERVER_PORT),
                port("etcd", ETCD_CLIENT_PORT),
                port("etcd-peer", ETCD_PEER_PORT),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let syncer = Service {
        metadata: instance.meta(id.syncer(), Component::Syncer),
        spec: Some(ServiceSpec {
            selector: Some(id.selector_labels(Component::Syncer)),
            ports: Some(vec![ServicePort {
                name: Some(kubelet::PORT_NAME.into()),
                port: kubelet::PORT.into(),
                target_port: Some(IntOrString::String(kubelet::PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    vec![api, headless, syncer]
}

/// What the certificates must cover, given the ClusterIPs of the API server's and the syncer's
/// Services once they have them.
pub fn cert_subjects(
    instance: &Instance<'_>,
    service_ip: Option<&str>,
    syncer_ip: Option<&str>,
) -> pki::Subjects {
    let id = instance.id();
    let ns = &id.namespace;
    let dns_forms = |service: &str| {
        [
            service.to_owned(),
            format!("{service}.{ns}"),
            format!("{service}.{ns}.svc"),
            format!("{service}.{ns}.svc.cluster.local"),
        ]
    };
    let mut api_server: Vec<String> = dns_forms(&id.api_server_service()).into();
    // Pods of the virtual cluster reach it as `kubernetes`.
    api_server.extend(
        [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "localhost",
            "127.0.0.1",
        ]
        .map(String::from),
    );
    api_server.push(instance.valid.kubernetes_service_ip.to_string());
    api_server.extend(service_ip.filter(|ip| *ip != "None").map(String::from));
    if let Some(host) = instance
        .vc
        .spec
        .export_kube_config
        .as_ref()
        .and_then(|e| e.server.as_deref())
        .and_then(server_host)
    {
        api_server.push(host);
    }
    api_server.dedup();
    let pod = format!("{}-0", id.control_plane());
    let mut etcd: Vec<String> = dns_forms(&id.headless_service()).into();
    etcd.extend(
        dns_forms(&format!("{pod}.{}", id.headless_service()))
            .into_iter()
            .take(3),
    );
    etcd.extend(["localhost", "127.0.0.1"].map(String::from));
    let mut kubelet: Vec<String> = dns_forms(&id.syncer()).into();
    // The syncer's own loopback, where a syncer run outside the cluster is reached.
    kubelet.extend(["localhost", "127.0.0.1"].map(String::from));
    kubelet.extend(syncer_ip.filter(|ip| *ip != "None").map(String::from));
    pki::Subjects {
        ca_name: format!("virtualcluster-ca {ns}/{}", id.name),
        api_server,
        etcd,
        kubelet,
    }
}

/// The host of a URL like `https://vc.example.com:443/`, without brackets for IPv6.
fn server_host(server: &str) -> Option<String> {
    let rest = server.split_once("://").map_or(server, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    (!host.is_empty()).then(|| host.to_owned())
}

/// The control plane StatefulSet. `certs_hash` changes when the certificates do, which rolls
/// the pod so its processes load them.
pub fn stateful_set(instance: &Instance<'_>, certs_hash: &str) -> StatefulSet {
    let id = instance.id();
    let spec = &instance.vc.spec.control_plane;
    let settings = instance.settings;
    let version = spec
        .version
        .clone()
        .unwrap_or_else(|| settings.kubernetes_version.clone());
    let image = |custom: &Option<String>, component: &str| {
        custom
            .clone()
            .unwrap_or_else(|| format!("{}/{component}:{version}", settings.registry))
    };
    let pki = |name: &str| format!("{PKI_DIR}/{name}");
    let service_cidr = &instance.valid.service_cidr;
    let etcd_url = |port: u16| format!("https://127.0.0.1:{port}");

    let etcd = Container {
        name: ETCD_CONTAINER.into(),
        image: Some(
            spec.images
                .etcd
                .clone()
                .unwrap_or_else(|| settings.etcd_image.clone()),
        ),
        command: Some(vec!["etcd".into()]),
        args: Some(vec![
            "--name=$(POD_NAME)".into(),
            format!("--data-dir={DATA_DIR}/data"),
            // Only the API server in the same pod talks to etcd.
            format!("--listen-client-urls={}", etcd_url(ETCD_CLIENT_PORT)),
            format!("--advertise-client-urls={}", etcd_url(ETCD_CLIENT_PORT)),
            format!("--listen-peer-urls={}", etcd_url(ETCD_PEER_PORT)),
            format!("--initial-advertise-peer-urls={}", etcd_url(ETCD_PEER_PORT)),
            format!("--initial-cluster=$(POD_NAME)={}", etcd_url(ETCD_PEER_PORT)),
            "--initial-cluster-state=new".into(),
            format!("--listen-metrics-urls=http://0.0.0.0:{ETCD_METRICS_PORT}"),
            format!("--cert-file={}", pki(file::ETCD_SERVER_CERT)),
            format!("--key-file={}", pki(file::ETCD_SERVER_KEY)),
            format!("--trusted-ca-file={}", pki(file::CA_CERT)),
            "--client-cert-auth=true".into(),
            format!("--peer-cert-file={}", pki(file::ETCD_PEER_CERT)),
            format!("--peer-key-file={}", pki(file::ETCD_PEER_KEY)),
            format!("--peer-trusted-ca-file={}", pki(file::CA_CERT)),
            "--peer-client-cert-auth=true".into(),
            "--snapshot-count=10000".into(),
        ]),
        env: Some(vec![field_env("POD_NAME", "metadata.name")]),
        ports: Some(vec![
            container_port("etcd", ETCD_CLIENT_PORT),
            container_port("etcd-peer", ETCD_PEER_PORT),
            container_port("etcd-metrics", ETCD_METRICS_PORT),
        ]),
        startup_probe: Some(probe(
            "/health?serializable=true",
            ETCD_METRICS_PORT,
            "HTTP",
            30,
        )),
        liveness_probe: Some(probe(
            "/health?exclude=NOSPACE&serializable=true",
            ETCD_METRICS_PORT,
            "HTTP",
            8,
        )),
        volume_mounts: Some(vec![certs_mount(), data_mount()]),
        ..hardened(spec.resources.clone())
    };

    let api_server = Container {
        name: API_SERVER_CONTAINER.into(),
        image: Some(image(&spec.images.api_server, "kube-apiserver")),
        command: Some(vec!["kube-apiserver".into()]),
        args: Some(vec![
            "--advertise-address=$(POD_IP)".into(),
            format!("--secure-port={API_SERVER_PORT}"),
            format!("--etcd-servers={}", etcd_url(ETCD_CLIENT_PORT)),
            format!("--etcd-cafile={}", pki(file::CA_CERT)),
            format!("--etcd-certfile={}", pki(file::API_SERVER_ETCD_CLIENT_CERT)),
            format!("--etcd-keyfile={}", pki(file::API_SERVER_ETCD_CLIENT_KEY)),
            format!("--tls-cert-file={}", pki(file::API_SERVER_CERT)),
            format!("--tls-private-key-file={}", pki(file::API_SERVER_KEY)),
            format!("--client-ca-file={}", pki(file::CA_CERT)),
            format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
            format!(
                "--service-account-key-file={}",
                pki(file::SERVICE_ACCOUNT_PUB)
            ),
            format!(
                "--service-account-signing-key-file={}",
                pki(file::SERVICE_ACCOUNT_KEY)
            ),
            format!("--service-cluster-ip-range={service_cidr}"),
            "--authorization-mode=RBAC".into(),
            format!("--admission-control-config-file={CONFIG_DIR}/{ADMISSION_CONFIG_KEY}"),
            // Privileged containers only where the instance's level allows them at all.
            format!(
                "--allow-privileged={}",
                instance.valid.policy.pod_security == PodSecurityStandard::Privileged
            ),
            // The virtual `kubernetes` Service points at the instance's host Service (the
            // syncer keeps it); the pod's own address is not reachable from virtual pods.
            "--endpoint-reconciler-type=none".into(),
            // The kubelet API of the virtual nodes is the syncer's, at the InternalIP they
            // advertise (its Service's), and answers this client certificate only.
            "--kubelet-preferred-address-types=InternalIP".into(),
            format!(
                "--kubelet-client-certificate={}",
                pki(file::KUBELET_CLIENT_CERT)
            ),
            format!("--kubelet-client-key={}", pki(file::KUBELET_CLIENT_KEY)),
            format!("--kubelet-certificate-authority={}", pki(file::CA_CERT)),
            "--profiling=false".into(),
        ]),
        env: Some(vec![field_env("POD_IP", "status.podIP")]),
        ports: Some(vec![container_port("https", API_SERVER_PORT)]),
        startup_probe: Some(probe("/livez", API_SERVER_PORT, "HTTPS", 30)),
        liveness_probe: Some(probe("/livez", API_SERVER_PORT, "HTTPS", 8)),
        readiness_probe: Some(probe("/readyz", API_SERVER_PORT, "HTTPS", 3)),
        volume_mounts: Some(vec![
            certs_mount(),
            VolumeMount {
                name: CONFIG_VOLUME.into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
        ]),
        ..hardened(spec.resources.clone())
    };

    let kubeconfig = pki(file::CONTROLLER_MANAGER_KUBECONFIG);
    let controller_manager = Container {
        name: CONTROLLER_MANAGER_CONTAINER.into(),
        image: Some(image(
            &spec.images.controller_manager,
            "kube-controller-manager",
        )),
        command: Some(vec!["kube-controller-manager".into()]),
        args: Some(vec![
            format!("--kubeconfig={kubeconfig}"),
            format!("--authentication-kubeconfig={kubeconfig}"),
            format!("--authorization-kubeconfig={kubeconfig}"),
            format!("--secure-port={CONTROLLER_MANAGER_PORT}"),
            // One replica: nothing to elect.
            "--leader-elect=false".into(),
            "--use-service-account-credentials=true".into(),
            format!(
                "--service-account-private-key-file={}",
                pki(file::SERVICE_ACCOUNT_KEY)
            ),
            format!("--root-ca-file={}", pki(file::CA_CERT)),
            format!("--cluster-signing-cert-file={}", pki(file::CA_CERT)),
            format!("--cluster-signing-key-file={}", pki(file::CA_KEY)),
            format!("--service-cluster-ip-range={service_cidr}"),
            format!(
                "--controllers=*,{}",
                DISABLED_CONTROLLERS.map(|c| format!("-{c}")).join(",")
            ),
        ]),
        ports: Some(vec![container_port("kcm-https", CONTROLLER_MANAGER_PORT)]),
        startup_probe: Some(probe("/healthz", CONTROLLER_MANAGER_PORT, "HTTPS", 30)),
        liveness_probe: Some(probe("/healthz", CONTROLLER_MANAGER_PORT, "HTTPS", 8)),
        volume_mounts: Some(vec![certs_mount()]),
        ..hardened(spec.resources.clone())
    };

    // Each file the control plane reads, and nothing else of the Secret (the admin's, the
    // syncer's and the kubelet API's keys stay out of the pod).
    let items = [
        file::CA_CERT,
        file::CA_KEY,
        file::API_SERVER_CERT,
        file::API_SERVER_KEY,
        file::API_SERVER_ETCD_CLIENT_CERT,
        file::API_SERVER_ETCD_CLIENT_KEY,
        file::ETCD_SERVER_CERT,
        file::ETCD_SERVER_KEY,
        file::ETCD_PEER_CERT,
        file::ETCD_PEER_KEY,
        file::SERVICE_ACCOUNT_KEY,
        file::SERVICE_ACCOUNT_PUB,
        file::KUBELET_CLIENT_CERT,
        file::KUBELET_CLIENT_KEY,
        file::CONTROLLER_MANAGER_KUBECONFIG,
    ]
    .map(|k| KeyToPath {
        key: k.into(),
        path: k.into(),
        ..Default::default()
    });
    let mut volumes = vec![Volume {
        name: CERTS_VOLUME.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(id.certs_secret()),
            items: Some(items.into()),
            default_mode: Some(0o440),
            ..Default::default()
        }),
        ..Default::default()
    }];
    volumes.push(Volume {
        name: CONFIG_VOLUME.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: id.control_plane_config(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let persistence = &spec.persistence;
    let claims = if persistence.enabled {
        Some(vec![PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(DATA_VOLUME.into()),
                labels: Some(id.labels(Component::ControlPlane)),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: persistence.storage_class_name.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".into(),
                        Quantity(persistence.size.clone()),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }])
    } else {
        volumes.push(Volume {
            name: DATA_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
        None
    };

    let mut pod_meta = ObjectMeta {
        labels: Some(id.labels(Component::ControlPlane)),
        annotations: Some(BTreeMap::from([(CONFIG_HASH.into(), certs_hash.into())])),
        ..Default::default()
    };
    pod_meta.labels.get_or_insert_default().insert(
        "app.kubernetes.io/version".into(),
        version.replace('+', "_"),
    );
    StatefulSet {
        metadata: instance.meta(id.control_plane(), Component::ControlPlane),
        spec: StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(id.headless_service()),
            selector: LabelSelector {
                match_labels: Some(id.selector_labels(Component::ControlPlane)),
                ..Default::default()
            },
            pod_management_policy: Some("Parallel".into()),
            // The instance's data goes with the instance.
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Delete".into()),
                    when_scaled: Some("Retain".into()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(pod_meta),
                spec: Some(PodSpec {
                    containers: vec![etcd, api_server, controller_manager],
                    volumes: Some(volumes),
                    // The control plane talks to nothing of the host's API.
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    termination_grace_period_seconds: Some(30),
                    security_context: Some(pod_security()),
                    ..Default::default()
                }),
            },
            volume_claim_templates: claims,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// An environment variable taken from a field of the pod (`metadata.name`, `status.podIP`).
pub(super) fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                api_version: Some("v1".into()),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port.into(),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

pub(super) fn probe(path: &str, port: u16, scheme: &str, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port.into()),
            scheme: Some(scheme.into()),
            ..Default::default()
        }),
        period_seconds: Some(10),
        timeout_seconds: Some(5),
        failure_threshold: Some(failure_threshold),
        ..Default::default()
    }
}

fn certs_mount() -> VolumeMount {
    VolumeMount {
        name: CERTS_VOLUME.into(),
        mount_path: PKI_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    }
}

fn data_mount() -> VolumeMount {
    VolumeMount {
        name: DATA_VOLUME.into(),
        mount_path: DATA_DIR.into(),
        ..Default::default()
    }
}

/// The pod security standard's "restricted" profile, with a fixed non-root user so files
/// from Secrets and volumes are readable through the group.
pub(super) fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        fs_group: Some(RUN_AS),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container with the restricted security context and the given resources.
pub(super) fn hardened(
    resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
) -> Container {
    Container {
        image_pull_policy: Some("IfNotPresent".into()),
        resources,
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;
    use crate::settings::Settings;

    #[test]
    fn server_hosts() {
        assert_eq!(
            server_host("https://vc.example.com:443").as_deref(),
            Some("vc.example.com")
        );
        assert_eq!(
            server_host("https://10.0.0.1/").as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(
            server_host("https://[fd00::1]:6443").as_deref(),
            Some("fd00::1")
        );
        assert_eq!(server_host("https://").as_deref(), None);
    }

    #[test]
    fn the_serving_certificate_covers_every_way_in() {
        let vc = fixtures::vc(|vc| {
            vc.spec.export_kube_config = Some(virtualcluster_crds::v1alpha1::ExportKubeConfig {
                server: Some("https://demo.example.com:8443".into()),
            })
        });
        let valid = fixtures::valid(&vc);
        let settings = Settings::default();
        let instance = Instance {
            vc: &vc,
            valid: &valid,
            settings: &settings,
        };
        let subjects = cert_subjects(&instance, Some("10.96.3.4"), Some("10.96.3.5"));
        for name in [
            "demo",
            "demo.team-a",
            "demo.team-a.svc",
            "demo.team-a.svc.cluster.local",
            "kubernetes.default.svc",
            "localhost",
            "127.0.0.1",
            "10.96.3.4",
            "10.96.0.1",
            "demo.example.com",
        ] {
            assert!(subjects.api_server.iter().any(|n| n == name), "{name}");
        }
        assert!(
            subjects
                .etcd
                .iter()
                .any(|n| n == "demo-0.demo-headless.team-a.svc")
        );
        for name in ["demo-syncer.team-a.svc", "10.96.3.5", "127.0.0.1"] {
            assert!(subjects.kubelet.iter().any(|n| n == name), "{name}");
        }
        assert!(!subjects.kubelet.iter().any(|n| n == "10.96.3.4"));
    }

    #[test]
    fn the_control_plane_runs_the_chosen_version_with_its_data_where_asked() {
        let vc = fixtures::vc(|vc| {
            vc.spec.control_plane.version = Some("v1.36.1".into());
            vc.spec.control_plane.images.etcd = Some("mirror/etcd:x".into());
            vc.spec.control_plane.service_cidr = Some("10.100.0.0/16".into());
        });
        let valid = fixtures::valid(&vc);
        let settings = Settings::default();
        let instance = Instance {
            vc: &vc,
            valid: &valid,
            settings: &settings,
        };
        let sts = stateful_set(&instance, "h1");
        let spec = &sts.spec;
        let pod = spec.template.spec.as_ref().unwrap();
        let images: Vec<_> = pod
            .containers
            .iter()
            .map(|c| c.image.clone().unwrap())
            .collect();
        assert_eq!(
            images,
            [
                "mirror/etcd:x",
                "registry.k8s.io/kube-apiserver:v1.36.1",
                "registry.k8s.io/kube-controller-manager:v1.36.1"
            ]
        );
        let api_args = pod.containers[1].args.as_ref().unwrap();
        assert!(api_args.contains(&"--service-cluster-ip-range=10.100.0.0/16".to_owned()));
        // At the default level (baseline) the virtual API server refuses privileged containers
        // and reads its PodSecurity configuration from the mounted ConfigMap.
        assert!(api_args.contains(&"--allow-privileged=false".to_owned()));
        assert!(api_args.contains(&format!(
            "--admission-control-config-file={CONFIG_DIR}/{ADMISSION_CONFIG_KEY}"
        )));
        assert!(pod.volumes.as_ref().unwrap().iter().any(|v| {
            v.config_map
                .as_ref()
                .is_some_and(|c| c.name == "demo-control-plane-config")
        }));
        assert_eq!(spec.volume_claim_templates.as_ref().unwrap().len(), 1);
        assert!(
            pod.volumes
                .as_ref()
                .unwrap()
                .iter()
                .all(|v| v.empty_dir.is_none())
        );
        let security = pod.security_context.as_ref().unwrap();
        assert_eq!(security.run_as_non_root, Some(true));
        for c in &pod.containers {
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
            assert!(c.liveness_probe.is_some(), "{}", c.name);
        }

        let vc = fixtures::vc(|vc| vc.spec.control_plane.persistence.enabled = false);
        let valid = fixtures::valid(&vc);
        let instance = Instance {
            vc: &vc,
            valid: &valid,
            settings: &settings,
        };
        let spec = stateful_set(&instance, "h1").spec;
        assert!(spec.volume_claim_templates.is_none());
        let volumes = spec.template.spec.unwrap().volumes.unwrap();
        assert!(
            volumes
                .iter()
                .any(|v| v.name == DATA_VOLUME && v.empty_dir.is_some())
        );
    }

    #[test]
    fn every_file_a_flag_names_is_mounted() {
        let vc = fixtures::vc(|_| {});
        let valid = fixtures::valid(&vc);
        let settings = Settings::default();
        let instance = Instance {
            vc: &vc,
            valid: &valid,
            settings: &settings,
        };
        let pod = stateful_set(&instance, "h").spec.template.spec.unwrap();
        let mounted: Vec<String> = pod.volumes.unwrap()[0]
            .secret
            .as_ref()
            .unwrap()
            .items
            .as_ref()
            .unwrap()
            .iter()
            .map(|i| format!("{PKI_DIR}/{}", i.path))
            .collect();
        for container in &pod.containers {
            for arg in container.args.as_ref().unwrap() {
                if let Some((_, value)) = arg.split_once('=')
                    && value.starts_with(PKI_DIR)
                {
                    assert!(mounted.contains(&value.to_owned()), "{arg}");
                }
            }
        }
    }
}
