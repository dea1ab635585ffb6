use super::*;
use crate::translate::target;
use k8s_openapi::api::core::v1::{
    Affinity, ConfigMapEnvSource, ConfigMapProjection, ConfigMapVolumeSource, EnvFromSource,
    EnvVarSource, KeyToPath, PersistentVolumeClaimVolumeSource, PodAffinityTerm, PodAntiAffinity,
    SecretKeySelector, SecretVolumeSource,
};
use virtualcluster_crds::policy::HostPolicy;

/// A pod as the virtual API server stores it: with the projected token volume its
/// ServiceAccount admission adds.
fn virtual_pod() -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web-0", "namespace": "shop", "uid": "pod-uid",
                     "labels": {"app": "web"}},
        "spec": {
            "serviceAccountName": "builder",
            "containers": [{
                "name": "main", "image": "nginx:1.27",
                "env": [
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}},
                    {"name": "MY_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "KUBERNETES_SERVICE_HOST", "value": "spoofed"}
                ],
                "envFrom": [{"configMapRef": {"name": "settings"}}]
            }],
            "imagePullSecrets": [{"name": "registry"}],
            "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "conf", "configMap": {"name": "nginx-conf"}},
                {"name": "certs", "secret": {"secretName": "tls"}},
                {"name": "kube-api-access-abcde", "projected": {"sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
                ]}}
            ]
        }
    }))
    .unwrap()
}

fn options() -> PodSync {
    PodSync {
        translate_image: BTreeMap::from([("nginx:1.27".into(), "mirror.local/nginx:1.27".into())]),
        enforce_tolerations: vec!["dedicated=tenants:NoSchedule".into(), "gpu".into()],
        priority_class_name: Some("tenant-low".into()),
        runtime_class_name: Some("gvisor".into()),
        ..Default::default()
    }
}

fn translate(pod: &Pod, options: &PodSync, dns: Option<&str>) -> Pod {
    translate_with(pod, options, dns, &HostPolicy::default())
}

fn translate_with(pod: &Pod, options: &PodSync, dns: Option<&str>, policy: &HostPolicy) -> Pod {
    let target = target();
    host_pod(
        pod,
        &PodEnv {
            target: &target,
            options,
            dns_ip: dns,
            api_server_ip: "10.96.0.42",
            tokens: &["virtual-token".into()],
            token_secret: None,
            service_account: None,
            priority_class: None,
            policy,
        },
    )
}

fn pod_with(spec: serde_json::Value) -> Pod {
    let mut pod = virtual_pod();
    let mut value = serde_json::to_value(pod.spec.take().unwrap()).unwrap();
    for (k, v) in spec.as_object().unwrap() {
        value[k] = v.clone();
    }
    pod.spec = Some(serde_json::from_value(value).unwrap());
    pod
}

#[test]
fn a_tenant_names_no_host_node_and_opens_no_taint_the_platform_did_not_offer() {
    let pod = pod_with(serde_json::json!({
        "nodeName": "host-node-1",
        "nodeSelector": {"disk": "ssd", "pool": "tenant-choice"},
        "tolerations": [
            {"operator": "Exists"},
            {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "gpu", "operator": "Equal", "value": "a100", "effect": "NoSchedule"},
            {"key": "gpu", "operator": "Exists"},
            {"key": "spot", "operator": "Exists", "effect": "NoSchedule"}
        ]
    }));
    let policy = HostPolicy {
        allowed_tolerations: vec!["gpu:NoSchedule".into(), "spot".into()],
        node_selector: BTreeMap::from([("pool".into(), "tenants".into())]),
        ..Default::default()
    };
    let options = PodSync {
        node_selector: BTreeMap::from([
            ("zone".into(), "a".into()),
            ("pool".into(), "spec".into()),
        ]),
        ..Default::default()
    };
    let spec = translate_with(&pod, &options, None, &policy).spec.unwrap();
    assert_eq!(spec.node_name, None);
    let kept: Vec<_> = spec
        .tolerations
        .unwrap()
        .into_iter()
        .map(|t| t.key.unwrap_or_default())
        .collect();
    // The API server's own, the listed ones (an effect the platform names must be named);
    // never the key-less one, a control-plane taint or a NoSchedule node condition.
    assert_eq!(kept, ["node.kubernetes.io/not-ready", "gpu", "spot"]);
    let selector = spec.node_selector.unwrap();
    assert_eq!(selector["pool"], "tenants", "the platform's selector wins");
    assert_eq!(selector["zone"], "a");
    assert_eq!(selector["disk"], "ssd");
}

#[test]
fn every_volume_driver_credential_is_renamed_like_the_rest() {
    let pod = pod_with(serde_json::json!({
        "volumes": [
            {"name": "a", "csi": {"driver": "x", "nodePublishSecretRef": {"name": "csi-creds"}}},
            {"name": "b", "cephfs": {"monitors": ["m"], "secretRef": {"name": "ceph"}}},
            {"name": "c", "rbd": {"monitors": ["m"], "image": "i", "secretRef": {"name": "rbd-creds"}}},
            {"name": "d", "iscsi": {"targetPortal": "t", "iqn": "q", "lun": 0, "secretRef": {"name": "iscsi-creds"}}},
            {"name": "e", "flexVolume": {"driver": "x", "secretRef": {"name": "flex"}}},
            {"name": "f", "scaleIO": {"gateway": "g", "system": "s", "secretRef": {"name": "scaleio"}}},
            {"name": "g", "storageos": {"secretRef": {"name": "sos-creds"}}},
            {"name": "h", "azureFile": {"secretName": "azure", "shareName": "s"}},
            {"name": "i", "ephemeral": {"volumeClaimTemplate": {"spec": {
                "volumeName": "someone-elses-pv",
                "dataSource": {"kind": "PersistentVolumeClaim", "name": "data"},
                "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}}
        ]
    }));
    assert_eq!(
        secrets(&pod),
        [
            "azure",
            "ceph",
            "csi-creds",
            "db",
            "flex",
            "iscsi-creds",
            "rbd-creds",
            "registry",
            "scaleio",
            "sos-creds"
        ]
    );
    let refs = references(&pod);
    let clone = refs.iter().find(|r| r.kind == Referenced::Claim).unwrap();
    assert_eq!(clone.name, "data");
    assert_eq!(
        clone.field,
        "spec.volumes[8].ephemeral.volumeClaimTemplate.spec.dataSource.name"
    );
    let volumes = translate(&pod, &PodSync::default(), None)
        .spec
        .unwrap()
        .volumes
        .unwrap();
    let json = serde_json::to_string(&volumes).unwrap();
    for raw in [
        "\"csi-creds\"",
        "\"ceph\"",
        "\"rbd-creds\"",
        "\"iscsi-creds\"",
        "\"flex\"",
        "\"scaleio\"",
        "\"sos-creds\"",
        "\"azure\"",
        "\"data\"",
        "someone-elses-pv",
    ] {
        assert!(
            !json.contains(raw),
            "{raw} reaches the host as written: {json}"
        );
    }
    assert!(json.contains("csi-creds-x-shop-x-vc"));
    assert!(json.contains("data-x-shop-x-vc"));
    assert_eq!(unrenamable(&pod), Vec::<String>::new());
}

#[test]
fn a_clone_of_anything_but_a_claim_of_the_namespace_is_refused() {
    let pod = pod_with(serde_json::json!({
        "volumes": [
            {"name": "i", "ephemeral": {"volumeClaimTemplate": {"spec": {
                "dataSource": {"kind": "VolumeSnapshot", "apiGroup": "snapshot.storage.k8s.io", "name": "snap"},
                "dataSourceRef": {"kind": "PersistentVolumeClaim", "name": "data", "namespace": "elsewhere"},
                "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}}
        ]
    }));
    let refused = unrenamable(&pod);
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused[0].contains("dataSource names a VolumeSnapshot"),
        "{}",
        refused[0]
    );
    assert!(refused[1].contains("dataSourceRef"), "{}", refused[1]);
}

#[test]
fn optional_objects_that_exist_nowhere_are_left_out() {
    let mut pod = pod_with(serde_json::json!({
        "containers": [{"name": "main", "image": "nginx",
            "env": [
                {"name": "A", "valueFrom": {"secretKeyRef": {"name": "maybe", "key": "k", "optional": true}}},
                {"name": "B", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}
            ],
            "envFrom": [{"secretRef": {"name": "maybe", "optional": true}}]}],
        "volumes": [
            {"name": "v", "secret": {"secretName": "maybe", "optional": true}},
            {"name": "p", "projected": {"sources": [{"secret": {"name": "maybe", "optional": true}}]}}
        ]
    }));
    let optional: Vec<_> = references(&pod)
        .into_iter()
        .filter(|r| r.name == "maybe")
        .map(|r| r.optional)
        .collect();
    assert_eq!(optional, [true, true, true, true]);
    without_optional(&mut pod, Referenced::Secret, "maybe");
    assert_eq!(secrets(&pod), ["db", "registry"]);
    let spec = pod.spec.unwrap();
    assert!(spec.volumes.as_ref().unwrap()[0].empty_dir.is_some());
    assert_eq!(spec.containers[0].env.as_ref().unwrap().len(), 1);
    assert!(spec.containers[0].env_from.as_ref().unwrap().is_empty());
}

#[test]
fn every_reference_moves_with_the_pod() {
    let host = translate(&virtual_pod(), &PodSync::default(), None);
    assert_eq!(host.metadata.name.as_deref(), Some("web-0-x-shop-x-vc"));
    let spec = host.spec.unwrap();
    let volumes = spec.volumes.unwrap();
    assert_eq!(
        volumes[0].persistent_volume_claim,
        Some(PersistentVolumeClaimVolumeSource {
            claim_name: "data-x-shop-x-vc".into(),
            read_only: None
        })
    );
    assert_eq!(
        volumes[1].config_map,
        Some(ConfigMapVolumeSource {
            name: "nginx-conf-x-shop-x-vc".into(),
            ..Default::default()
        })
    );
    assert_eq!(
        volumes[2].secret,
        Some(SecretVolumeSource {
            secret_name: Some("tls-x-shop-x-vc".into()),
            ..Default::default()
        })
    );
    let sources = volumes[3]
        .projected
        .as_ref()
        .unwrap()
        .sources
        .as_ref()
        .unwrap();
    assert_eq!(
        sources[1].config_map,
        Some(ConfigMapProjection {
            name: "kube-root-ca.crt-x-shop-x-vc".into(),
            items: Some(vec![KeyToPath {
                key: "ca.crt".into(),
                path: "ca.crt".into(),
                ..Default::default()
            }]),
            optional: None,
        })
    );
    let main = &spec.containers[0];
    let env = main.env.as_ref().unwrap();
    assert_eq!(
        env[0].value_from,
        Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: "db-x-shop-x-vc".into(),
                key: "pw".into(),
                optional: None
            }),
            ..Default::default()
        })
    );
    assert_eq!(
        main.env_from.as_ref().unwrap()[0],
        EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: "settings-x-shop-x-vc".into(),
                optional: None
            }),
            ..Default::default()
        }
    );
    assert_eq!(
        spec.image_pull_secrets.unwrap()[0].name,
        "registry-x-shop-x-vc"
    );
    // The host pod runs with no host credentials.
    assert_eq!(spec.service_account_name, None);
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(spec.hostname.as_deref(), Some("web-0"));
}

#[test]
fn with_secrets_for_tokens_the_token_is_read_from_the_pods_secret_not_an_annotation() {
    let target = target();
    let options = PodSync {
        use_secrets_for_sa_tokens: true,
        ..Default::default()
    };
    let host = host_pod(
        &virtual_pod(),
        &PodEnv {
            target: &target,
            options: &options,
            dns_ip: None,
            api_server_ip: "10.96.0.42",
            tokens: &["virtual-token".into()],
            token_secret: Some("web-x-default-x-vc-sa-token"),
            service_account: None,
            priority_class: None,
            policy: &HostPolicy::default(),
        },
    );
    let annotations = host.metadata.annotations.clone().unwrap_or_default();
    assert!(
        !annotations.values().any(|v| v == "virtual-token"),
        "{annotations:?}"
    );
    let sources = host.spec.unwrap().volumes.unwrap()[3]
        .projected
        .clone()
        .unwrap()
        .sources
        .unwrap();
    assert_eq!(sources[0].service_account_token, None);
    assert_eq!(sources[0].downward_api, None);
    let secret = sources[0].secret.as_ref().unwrap();
    assert_eq!(secret.name, "web-x-default-x-vc-sa-token");
    let item = &secret.items.as_ref().unwrap()[0];
    assert_eq!(
        (item.key.as_str(), item.path.as_str()),
        ("token-0", "token")
    );
}

#[test]
fn the_virtual_token_namespace_and_api_server_are_what_the_pod_sees() {
    let host = translate(&virtual_pod(), &PodSync::default(), None);
    let annotations = host.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations[&token_annotation(0)], "virtual-token");
    let spec = host.spec.unwrap();
    let sources = spec.volumes.as_ref().unwrap()[3]
        .projected
        .as_ref()
        .unwrap()
        .sources
        .clone()
        .unwrap();
    assert_eq!(sources[0].service_account_token, None);
    let token = &sources[0]
        .downward_api
        .as_ref()
        .unwrap()
        .items
        .as_ref()
        .unwrap()[0];
    assert_eq!(token.path, "token");
    assert_eq!(
        token.field_ref.as_ref().unwrap().field_path,
        "metadata.annotations['virtualcluster.dev/token-0']"
    );
    let namespace = &sources[2]
        .downward_api
        .as_ref()
        .unwrap()
        .items
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        namespace.field_ref.as_ref().unwrap().field_path,
        "metadata.annotations['virtualcluster.dev/object-namespace']"
    );
    // The annotation the downward API reads holds the virtual namespace.
    assert_eq!(annotations[keys::VIRTUAL_NAMESPACE], "shop");

    let env = spec.containers[0].env.as_ref().unwrap();
    let value = |name: &str| {
        env.iter()
            .filter(|v| v.name == name)
            .map(|v| v.value.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        value("KUBERNETES_SERVICE_HOST"),
        [Some("10.96.0.42".to_owned())]
    );
    assert_eq!(value("KUBERNETES_SERVICE_PORT"), [Some("443".to_owned())]);
    assert_eq!(
        env[1]
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "metadata.annotations['virtualcluster.dev/object-namespace']"
    );
    assert_eq!(spec.enable_service_links, Some(false));
    assert_eq!(
        token_requests(&virtual_pod()),
        [TokenRequest { audience: None }]
    );
}

#[test]
fn dns_resolves_through_the_virtual_cluster() {
    let host = translate(&virtual_pod(), &PodSync::default(), Some("10.96.0.77"));
    let spec = host.spec.unwrap();
    assert_eq!(spec.dns_policy.as_deref(), Some("None"));
    let dns = spec.dns_config.unwrap();
    assert_eq!(dns.nameservers.unwrap(), ["10.96.0.77"]);
    assert_eq!(
        dns.searches.unwrap(),
        [
            "shop.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local"
        ]
    );

    // A pod on the node's own resolver keeps it.
    let mut pod = virtual_pod();
    pod.spec.as_mut().unwrap().dns_policy = Some("Default".into());
    let spec = translate(&pod, &PodSync::default(), Some("10.96.0.77"))
        .spec
        .unwrap();
    assert_eq!(spec.dns_policy.as_deref(), Some("Default"));
    assert_eq!(spec.dns_config, None);
}

#[test]
fn pod_options_apply_as_documented() {
    let spec = translate(&virtual_pod(), &options(), None).spec.unwrap();
    assert_eq!(
        spec.containers[0].image.as_deref(),
        Some("mirror.local/nginx:1.27")
    );
    assert_eq!(
        spec.tolerations.unwrap(),
        [
            Toleration {
                key: Some("dedicated".into()),
                operator: Some("Equal".into()),
                value: Some("tenants".into()),
                effect: Some("NoSchedule".into()),
                toleration_seconds: None,
            },
            Toleration {
                key: Some("gpu".into()),
                operator: Some("Exists".into()),
                value: None,
                effect: None,
                toleration_seconds: None,
            }
        ]
    );
    assert_eq!(spec.priority_class_name.as_deref(), Some("tenant-low"));
    assert_eq!(spec.node_selector, None);
    assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
}

#[test]
fn tolerations_parse_every_documented_form() {
    let t = toleration("another-key:PreferNoSchedule");
    assert_eq!(t.key.as_deref(), Some("another-key"));
    assert_eq!(t.operator.as_deref(), Some("Exists"));
    assert_eq!(t.effect.as_deref(), Some("PreferNoSchedule"));
    let t = toleration("k=v");
    assert_eq!((t.value.as_deref(), t.effect), (Some("v"), None));
}

#[test]
fn anti_affinity_stays_within_the_virtual_namespace() {
    let mut pod = virtual_pod();
    pod.spec.as_mut().unwrap().affinity = Some(Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                label_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                    ..Default::default()
                }),
                topology_key: "kubernetes.io/hostname".into(),
                namespaces: Some(vec!["other".into()]),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    });
    let spec = translate(&pod, &PodSync::default(), None).spec.unwrap();
    let term = &spec
        .affinity
        .unwrap()
        .pod_anti_affinity
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .unwrap()[0];
    let labels = term
        .label_selector
        .as_ref()
        .unwrap()
        .match_labels
        .as_ref()
        .unwrap();
    assert_eq!(labels[keys::OBJECT_NAMESPACE_LABEL], "shop");
    assert_eq!(labels["app"], "web");
    assert_eq!(term.namespaces, None);
}

#[test]
fn references_are_listed_for_syncing() {
    let pod = virtual_pod();
    assert_eq!(
        config_maps(&pod),
        ["kube-root-ca.crt", "nginx-conf", "settings"]
    );
    assert_eq!(secrets(&pod), ["db", "registry", "tls"]);
}

#[test]
fn status_flows_back_and_is_written_only_when_it_changed() {
    let host: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web-0-x-shop-x-vc"},
        "status": {"phase": "Running", "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}],
                   "hostIP": "192.168.0.2", "qosClass": "Burstable"}
    }))
    .unwrap();
    let current = PodStatus {
        phase: Some("Pending".into()),
        qos_class: Some("BestEffort".into()),
        ..Default::default()
    };
    let wanted = virtual_status(host.status.clone(), Some(&current), &BTreeMap::new()).unwrap();
    assert_eq!(wanted.phase.as_deref(), Some("Running"));
    assert_eq!(wanted.pod_ip.as_deref(), Some("10.0.0.5"));
    assert_eq!(wanted.qos_class.as_deref(), Some("BestEffort"));
    assert_eq!(
        virtual_status(host.status.clone(), Some(&wanted), &BTreeMap::new()),
        None
    );
}

#[test]
fn a_hand_edited_label_is_noticed() {
    let desired = translate(&virtual_pod(), &PodSync::default(), None);
    let mut live = desired.clone();
    assert!(!metadata_differs(&desired, &live));
    live.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("app".into(), "edited".into());
    assert!(metadata_differs(&desired, &live));
}

#[test]
fn ephemeral_containers_are_renamed_and_checked_like_the_others() {
    let pod = pod_with(serde_json::json!({
        "ephemeralContainers": [{
            "name": "debugger", "image": "nginx:1.27", "targetContainerName": "main",
            "env": [
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "debug-token", "key": "t"}}},
                {"name": "KUBERNETES_SERVICE_HOST", "value": "spoofed"}
            ],
            "envFrom": [{"configMapRef": {"name": "debug-settings", "optional": true}}]
        }]
    }));
    // Listed for syncing and for the reference check, with the field that names them.
    let found: Vec<(String, String)> = references(&pod)
        .into_iter()
        .filter(|r| r.field.starts_with("spec.ephemeralContainers"))
        .map(|r| (r.name, r.field))
        .collect();
    assert_eq!(
        found,
        [
            (
                "debug-token".to_owned(),
                "spec.ephemeralContainers[0].env[0].valueFrom.secretKeyRef.name".to_owned()
            ),
            (
                "debug-settings".to_owned(),
                "spec.ephemeralContainers[0].envFrom[0].configMapRef.name".to_owned()
            ),
        ]
    );
    let host = translate(&pod, &options(), None);
    let debugger = &host.spec.unwrap().ephemeral_containers.unwrap()[0];
    assert_eq!(debugger.target_container_name.as_deref(), Some("main"));
    assert_eq!(debugger.image.as_deref(), Some("mirror.local/nginx:1.27"));
    let env = debugger.env.as_ref().unwrap();
    let secret = env[0].value_from.as_ref().unwrap().secret_key_ref.as_ref();
    assert_eq!(secret.unwrap().name, "debug-token-x-shop-x-vc");
    let hosts: Vec<_> = env
        .iter()
        .filter(|e| e.name == "KUBERNETES_SERVICE_HOST")
        .map(|e| e.value.as_deref())
        .collect();
    assert_eq!(hosts, [Some("10.96.0.42")]);
    let from = debugger.env_from.as_ref().unwrap()[0]
        .config_map_ref
        .as_ref();
    assert_eq!(from.unwrap().name, "debug-settings-x-shop-x-vc");

    // An optional object that exists nowhere is left out of them too.
    let mut pod = pod;
    without_optional(&mut pod, Referenced::ConfigMap, "debug-settings");
    let spec = pod.spec.unwrap();
    assert!(
        spec.ephemeral_containers.unwrap()[0]
            .env_from
            .as_ref()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn ephemeral_container_statuses_flow_back() {
    let host: PodStatus = serde_json::from_value(serde_json::json!({
        "phase": "Running",
        "ephemeralContainerStatuses": [{"name": "debugger", "image": "busybox", "imageID": "",
            "ready": false, "restartCount": 0, "state": {"running": {}}}]
    }))
    .unwrap();
    let wanted = virtual_status(Some(host), None, &BTreeMap::new()).unwrap();
    let statuses = wanted.ephemeral_container_statuses.unwrap();
    assert_eq!(statuses[0].name, "debugger");
}
