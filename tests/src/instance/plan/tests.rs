use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use virtualcluster_crds::VirtualCluster;
use virtualcluster_operator::pki::file;

use super::*;

const ROOT: &str = "/run/vc/instances/team-a/demo";

/// What the operator renders for `demo` in `team-a`: the StatefulSet and all its Secrets.
fn rendered(edit: impl FnOnce(&mut VirtualCluster)) -> (StatefulSet, Vec<Secret>) {
    let (mut desired, certs) = crate::instance::rendered::rendered(edit);
    desired.secrets.insert(0, certs);
    (desired.stateful_sets.remove(0), desired.secrets)
}

/// Each declared port to 40000 + its position.
fn local_ports(sts: &StatefulSet) -> BTreeMap<u16, u16> {
    pod(sts)
        .declared_ports()
        .unwrap()
        .into_iter()
        .zip(40000..)
        .collect()
}

fn pod(sts: &StatefulSet) -> LocalPod<'_> {
    LocalPod::of_stateful_set(sts).unwrap()
}

/// [`plan`] of the StatefulSet's pod, with `secrets` mounted and `ports`.
fn plan_of(
    sts: &StatefulSet,
    secrets: &[Secret],
    ports: &BTreeMap<u16, u16>,
    root: &Path,
) -> Result<Plan> {
    let mounted = Mounted {
        secrets: secrets.to_vec(),
        config_maps: control_plane_config_maps(),
    };
    let addresses = Addresses {
        ports: ports.clone(),
        services: BTreeMap::new(),
    };
    plan(&pod(sts), &mounted, &addresses, root)
}

/// The ConfigMaps the control plane mounts (its admission configuration).
fn control_plane_config_maps() -> Vec<k8s_openapi::api::core::v1::ConfigMap> {
    let (desired, _) = crate::instance::rendered::rendered(|_| {});
    desired
        .config_maps
        .into_iter()
        .filter(|c| c.metadata.name.as_deref() == Some("demo-control-plane-config"))
        .collect()
}

fn arg<'a>(process: &'a LocalProcess, flag: &str) -> &'a str {
    let prefix = format!("{flag}=");
    process
        .args
        .iter()
        .find_map(|a| a.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{} has no {flag}: {:?}", process.container, process.args))
}

#[test]
fn the_rendered_control_plane_becomes_three_local_processes() {
    let (sts, secrets) = rendered(|vc| vc.spec.control_plane.persistence.enabled = false);
    assert_eq!(
        pod(&sts).declared_ports().unwrap(),
        [2379, 2380, 2381, 6443, 10257]
    );
    assert_eq!(pod(&sts).name, "demo-0");
    assert_eq!(pod(&sts).mounted_secrets(), ["demo-certs"]);
    assert_eq!(
        pod(&sts).mounted_config_maps(),
        ["demo-control-plane-config"]
    );
    let ports = local_ports(&sts);
    let plan = plan_of(&sts, &secrets, &ports, Path::new(ROOT)).unwrap();

    let binaries: Vec<_> = plan.processes.iter().map(|p| p.binary.as_str()).collect();
    assert_eq!(
        binaries,
        ["etcd", "kube-apiserver", "kube-controller-manager"]
    );
    assert_eq!(plan.api_server_port, Some(ports[&6443]));
    // The control plane takes no credentials from the host.
    assert_eq!(plan.service_account, None);
    let [etcd, api, kcm] = &plan.processes[..] else {
        unreachable!()
    };

    // References come from the env, as the kubelet resolves them.
    assert_eq!(arg(etcd, "--name"), "demo-0");
    assert_eq!(
        arg(etcd, "--initial-cluster"),
        format!("demo-0=https://127.0.0.1:{}", ports[&2380])
    );
    assert_eq!(arg(api, "--advertise-address"), "127.0.0.1");
    assert!(etcd.env.contains(&("POD_NAME".into(), "demo-0".into())));

    // Ports.
    assert_eq!(
        arg(etcd, "--listen-client-urls"),
        format!("https://127.0.0.1:{}", ports[&2379])
    );
    assert_eq!(
        arg(etcd, "--listen-metrics-urls"),
        format!("http://0.0.0.0:{}", ports[&2381])
    );
    assert_eq!(
        arg(api, "--etcd-servers"),
        format!("https://127.0.0.1:{}", ports[&2379])
    );
    assert_eq!(arg(api, "--secure-port"), ports[&6443].to_string());
    assert_eq!(arg(kcm, "--secure-port"), ports[&10257].to_string());
    // Numbers that are not declared ports stay.
    assert_eq!(arg(etcd, "--snapshot-count"), "10000");

    // Paths.
    let pki = format!("{ROOT}/volumes/certs");
    assert_eq!(arg(etcd, "--data-dir"), format!("{ROOT}/volumes/data/data"));
    assert_eq!(arg(api, "--client-ca-file"), format!("{pki}/ca.crt"));
    assert_eq!(
        arg(kcm, "--kubeconfig"),
        format!("{pki}/controller-manager.conf")
    );

    // Nothing else changes.
    let rendered = &pod(&sts).spec.containers;
    for (container, process) in rendered.iter().zip(&plan.processes) {
        let args = container.args.as_ref().unwrap();
        assert_eq!(args.len(), process.args.len());
        for (before, after) in args.iter().zip(&process.args) {
            let mentions_a_path_port_or_reference = ["$(", "/etc/", "/var/"]
                .iter()
                .chain(&["2379", "2380", "2381", "6443", "10257"])
                .any(|s| before.contains(s));
            if !mentions_a_path_port_or_reference {
                assert_eq!(before, after);
            }
        }
    }
    for process in &plan.processes {
        for arg in &process.args {
            assert!(!arg.contains("/etc/virtualcluster"), "{arg}");
            assert!(!arg.contains("/var/lib/etcd"), "{arg}");
        }
    }
}

#[test]
fn secret_volumes_become_files_honouring_items_with_ports_rewritten() {
    let (sts, secrets) = rendered(|_| {});
    let ports = local_ports(&sts);
    let plan = plan_of(&sts, &secrets, &ports, Path::new(ROOT)).unwrap();
    let certs = &secrets[0].data.as_ref().unwrap();
    let pki = Path::new(ROOT).join("volumes/certs");
    let names: Vec<_> = plan
        .files
        .iter()
        .filter_map(|f| f.path.strip_prefix(&pki).ok()?.to_str())
        .collect();
    // The items the pod asks for, not the admin's or the syncer's keys.
    assert_eq!(names.len(), 15, "{names:?}");
    assert!(names.contains(&file::CA_KEY));
    assert!(!names.contains(&file::ADMIN_KEY));
    assert!(!names.contains(&file::SYNCER_KEY));
    assert!(!names.contains(&file::KUBELET_SERVING_KEY));
    for file in plan.files.iter().filter(|f| f.path.starts_with(&pki)) {
        let key = file.path.file_name().unwrap().to_str().unwrap();
        if key == file::CONTROLLER_MANAGER_KUBECONFIG {
            let text = String::from_utf8(file.contents.clone()).unwrap();
            assert!(!text.contains("127.0.0.1:6443"), "{text}");
            assert!(text.contains(&format!("https://127.0.0.1:{}", ports[&6443])));
        } else {
            assert_eq!(file.contents, certs[key].0, "{key}");
        }
    }

    // The admission configuration is written as rendered.
    let admission = Path::new(ROOT).join("volumes/config/admission.yaml");
    let written = plan.files.iter().find(|f| f.path == admission).unwrap();
    assert!(String::from_utf8_lossy(&written.contents).contains("PodSecurityConfiguration"));

    // The data volume is a claim here: kept across runs.
    let data = plan.folders.iter().find(|f| f.volume == "data").unwrap();
    assert!(data.keep);
    assert_eq!(data.path, Path::new(ROOT).join("volumes/data"));
    assert!(
        !plan
            .folders
            .iter()
            .find(|f| f.volume == "certs")
            .unwrap()
            .keep
    );
}

#[test]
fn what_cannot_run_locally_is_refused_clearly() {
    let (sts, secrets) = rendered(|_| {});
    let ports = local_ports(&sts);
    let root = Path::new(ROOT);

    let mut missing_port = ports.clone();
    missing_port.remove(&10257);
    let err = plan_of(&sts, &secrets, &missing_port, root).unwrap_err();
    assert!(format!("{err:#}").contains("10257"), "{err:#}");

    let err = plan_of(&sts, &secrets[1..], &ports, root).unwrap_err();
    assert!(
        format!("{err:#}").contains("no Secret demo-certs"),
        "{err:#}"
    );

    let mut no_command = sts.clone();
    pod_containers(&mut no_command)[1].command = None;
    let err = plan_of(&no_command, &secrets, &ports, root).unwrap_err();
    assert!(
        format!("{err:#}").contains("kube-apiserver: no command"),
        "{err:#}"
    );

    let mut host_path = sts.clone();
    let spec = host_path.spec.template.spec.as_mut().unwrap();
    let volume = &mut spec.volumes.as_mut().unwrap()[0];
    volume.secret = None;
    volume.host_path = Some(Default::default());
    let err = plan_of(&host_path, &secrets, &ports, root).unwrap_err();
    assert!(format!("{err:#}").contains("volume certs: only"), "{err:#}");

    let mut escaping = sts.clone();
    let spec = escaping.spec.template.spec.as_mut().unwrap();
    let items = spec.volumes.as_mut().unwrap()[0]
        .secret
        .as_mut()
        .unwrap()
        .items
        .as_mut()
        .unwrap();
    items[0].path = "../../outside".into();
    assert!(plan_of(&escaping, &secrets, &ports, root).is_err());
}

#[test]
fn config_map_volumes_become_files_like_secret_volumes() {
    let template: PodTemplateSpec = serde_json::from_value(serde_json::json!({
        "spec": {
            "containers": [{
                "name": "app",
                "command": ["/usr/bin/app"],
                "args": ["--config=/etc/app/settings.json", "--extra=/etc/extra/a"],
                "volumeMounts": [
                    {"name": "settings", "mountPath": "/etc/app"},
                    {"name": "extra", "mountPath": "/etc/extra"},
                    {"name": "missing", "mountPath": "/etc/missing"},
                ],
            }],
            "volumes": [
                {"name": "settings", "configMap": {
                    "name": "app-settings",
                    "items": [{"key": "json", "path": "settings.json"}],
                }},
                {"name": "extra", "configMap": {"name": "app-extra"}},
                {"name": "missing", "configMap": {"name": "app-missing", "optional": true}},
            ],
        },
    }))
    .unwrap();
    let config_map = |name: &str, data: serde_json::Value| -> ConfigMap {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "data": data}))
            .unwrap()
    };
    let mut extra = config_map("app-extra", serde_json::json!({"a": "text"}));
    extra.binary_data = Some(BTreeMap::from([(
        "b".to_owned(),
        k8s_openapi::ByteString(vec![0xff, 0]),
    )]));
    let mounted = Mounted {
        secrets: Vec::new(),
        config_maps: vec![
            config_map(
                "app-settings",
                serde_json::json!({"json": "{\"server\": \"https://api.ns.svc:443\"}", "other": "x"}),
            ),
            extra,
        ],
    };
    let pod = LocalPod::new("app-1".into(), "ns".into(), &template).unwrap();
    assert_eq!(
        pod.mounted_config_maps(),
        ["app-extra", "app-missing", "app-settings"]
    );
    assert!(pod.mounted_secrets().is_empty());
    // Without `automountServiceAccountToken: false`, the pod takes its ServiceAccount's token.
    assert_eq!(pod.service_account().as_deref(), Some("default"));
    let addresses = Addresses {
        ports: BTreeMap::new(),
        services: BTreeMap::from([("api.ns.svc:443".into(), "127.0.0.1:41000".into())]),
    };
    let local = plan(&pod, &mounted, &addresses, Path::new(ROOT)).unwrap();
    let files: Vec<_> = local
        .files
        .iter()
        .map(|f| {
            (
                f.path.strip_prefix(ROOT).unwrap().to_str().unwrap(),
                f.contents.as_slice(),
            )
        })
        .collect();
    assert_eq!(
        files,
        [
            (
                "volumes/settings/settings.json",
                &br#"{"server": "https://127.0.0.1:41000"}"#[..]
            ),
            ("volumes/extra/a", b"text"),
            ("volumes/extra/b", &[0xff, 0]),
        ]
    );
    assert_eq!(local.folders.len(), 3);
    assert_eq!(
        local.processes[0].args,
        [
            format!("--config={ROOT}/volumes/settings/settings.json"),
            format!("--extra={ROOT}/volumes/extra/a"),
        ]
    );

    let required = Mounted {
        secrets: Vec::new(),
        config_maps: mounted.config_maps[1..].to_vec(),
    };
    let err = plan(&pod, &required, &addresses, Path::new(ROOT)).unwrap_err();
    assert!(
        format!("{err:#}").contains("volume settings: no ConfigMap app-settings"),
        "{err:#}"
    );
    let mut no_key = mounted.clone();
    no_key.config_maps[0].data.as_mut().unwrap().remove("json");
    let err = plan(&pod, &no_key, &addresses, Path::new(ROOT)).unwrap_err();
    assert!(
        format!("{err:#}").contains("ConfigMap app-settings has no key json"),
        "{err:#}"
    );
}

fn pod_containers(sts: &mut StatefulSet) -> &mut Vec<k8s_openapi::api::core::v1::Container> {
    &mut sts.spec.template.spec.as_mut().unwrap().containers
}

#[test]
fn references_expand_as_the_kubelet_expands_them() {
    let env = [
        ("A".to_owned(), "x".to_owned()),
        ("B".to_owned(), "y$".to_owned()),
    ];
    for (input, expected) in [
        ("$(A)", "x"),
        ("--a=$(A),$(B)", "--a=x,y$"),
        ("$$(A)", "$(A)"),
        ("$(UNKNOWN)", "$(UNKNOWN)"),
        ("$(A", "$(A"),
        ("a$", "a$"),
        ("$x$(A)", "$xx"),
        ("é$(A)é", "éxé"),
        ("$é", "$é"),
        ("", ""),
    ] {
        assert_eq!(expand(input, &env), expected, "{input}");
    }
}

#[test]
fn only_whole_paths_and_ports_are_rewritten() {
    let addresses = Addresses {
        ports: BTreeMap::from([(6443, 41000), (2379, 41001)]),
        services: BTreeMap::from([
            ("api.ns.svc:443".into(), "127.0.0.1:41000".into()),
            ("api.ns:443".into(), "127.0.0.1:41000".into()),
        ]),
    };
    let rewrite = Rewrite::new(
        vec![
            ("/etc/pki".into(), "/tmp/certs".into()),
            ("/etc/pki/extra".into(), "/tmp/extra".into()),
        ],
        &addresses,
    );
    for (input, whole, expected) in [
        ("--a=/etc/pki/ca.crt", true, "--a=/tmp/certs/ca.crt"),
        ("--a=/etc/pki", true, "--a=/tmp/certs"),
        ("--a=/etc/pki/extra/x", true, "--a=/tmp/extra/x"),
        ("--a=/etc/pkix/ca.crt", true, "--a=/etc/pkix/ca.crt"),
        ("--a=/opt/etc/pki/ca.crt", true, "--a=/opt/etc/pki/ca.crt"),
        (
            "a=/etc/pki/x,b=/etc/pki/y",
            true,
            "a=/tmp/certs/x,b=/tmp/certs/y",
        ),
        ("--port=6443", true, "--port=41000"),
        ("6443", true, "41000"),
        ("6443", false, "6443"),
        ("--port=64430", true, "--port=64430"),
        ("--port=16443", true, "--port=16443"),
        ("https://h:6443/x", true, "https://h:41000/x"),
        ("a:2379,b:2379", true, "a:41001,b:41001"),
        ("MIIB6443abc+/=\nZ6443", false, "MIIB6443abc+/=\nZ6443"),
        (
            "server: https://127.0.0.1:6443\n",
            false,
            "server: https://127.0.0.1:41000\n",
        ),
        // Service addresses, as whole host and port.
        (
            "server: https://api.ns.svc:443\n",
            false,
            "server: https://127.0.0.1:41000\n",
        ),
        (
            "--server=https://api.ns:443/x",
            true,
            "--server=https://127.0.0.1:41000/x",
        ),
        ("\"api.ns.svc:443\"", false, "\"127.0.0.1:41000\""),
        ("api.ns.svc:443", true, "127.0.0.1:41000"),
        ("https://api.ns.svc:4430", false, "https://api.ns.svc:4430"),
        (
            "https://my-api.ns.svc:443",
            false,
            "https://my-api.ns.svc:443",
        ),
        ("https://x.api.ns:443", false, "https://x.api.ns:443"),
        ("https://api.ns.svc", false, "https://api.ns.svc"),
        (
            "api.ns.svc.cluster.local:443",
            false,
            "api.ns.svc.cluster.local:443",
        ),
    ] {
        assert_eq!(rewrite.text(input, whole), expected, "{input}");
    }
}

#[test]
fn the_local_kubeconfig_keeps_credentials_and_changes_the_server() {
    let (_, secrets) = rendered(|_| {});
    let admin = secrets[1].data.as_ref().unwrap()["config"].0.clone();
    let local = local_kubeconfig(&admin, "https://127.0.0.1:41000").unwrap();
    let before: serde_yaml::Value = serde_yaml::from_slice(&admin).unwrap();
    let after: serde_yaml::Value = serde_yaml::from_str(&local).unwrap();
    let server = |k: &serde_yaml::Value| k["clusters"][0]["cluster"]["server"].clone();
    assert_eq!(server(&before), "https://demo.team-a.svc:443");
    assert_eq!(server(&after), "https://127.0.0.1:41000");
    let ca =
        |k: &serde_yaml::Value| k["clusters"][0]["cluster"]["certificate-authority-data"].clone();
    assert_eq!(ca(&before), ca(&after));
    for key in ["users", "contexts", "current-context"] {
        assert_eq!(before[key], after[key], "{key}");
    }
    assert!(local_kubeconfig(b"clusters: []", "https://x").is_err());
}
