use std::path::Path;

use k8s_openapi::api::core::v1::PodSpec;
use virtualcluster_crds::VirtualCluster;
use virtualcluster_crds::instance::{KUBECONFIG_KEY, SYNCER_CONFIG_KEY};

use super::*;
use crate::instance::plan::HttpProbe;

const ROOT: &str = "/run/vc/instances/team-a/demo/syncer";
const HOST_KUBECONFIG: &str = "/run/vc/instances/team-a/demo/syncer/host-kubeconfig";
const LOCAL_API_SERVER: &str = "127.0.0.1:41000";
const LOCAL_METRICS_PORT: u16 = 41001;
const LOCAL_KUBELET_PORT: u16 = 41002;

/// What the operator renders for the syncer of `demo` in `team-a`: its Deployment, and the
/// ConfigMap and Secrets it may mount (all of the instance's Secrets but the certificates).
fn rendered(edit: impl FnOnce(&mut VirtualCluster)) -> (Deployment, Mounted) {
    let (mut desired, _) = crate::instance::rendered::rendered(edit);
    assert_eq!(desired.deployments.len(), 1);
    let mounted = Mounted {
        secrets: desired.secrets,
        config_maps: desired.config_maps,
    };
    (desired.deployments.remove(0), mounted)
}

fn id() -> InstanceRef {
    InstanceRef {
        name: "demo".into(),
        namespace: "team-a".into(),
        uid: String::new(),
    }
}

fn addresses(deployment: &Deployment) -> Addresses {
    let ports = BTreeMap::from([(8080, LOCAL_METRICS_PORT), (10250, LOCAL_KUBELET_PORT)]);
    let mut services = api_server_addresses(&id(), LOCAL_API_SERVER);
    services.extend(kubelet_addresses(deployment, &ports));
    Addresses { ports, services }
}

fn plan_of(deployment: &Deployment, mounted: &Mounted) -> Result<Plan> {
    plan(
        deployment,
        mounted,
        &addresses(deployment),
        Path::new(ROOT),
        Path::new(HOST_KUBECONFIG),
    )
}

fn secret_data<'a>(mounted: &'a Mounted, name: &str, key: &str) -> &'a [u8] {
    let secret = mounted
        .secrets
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(name))
        .unwrap();
    &secret.data.as_ref().unwrap()[key].0
}

#[test]
fn the_rendered_syncer_becomes_one_local_process_with_host_credentials() {
    let (deployment, mounted) = rendered(|_| {});
    let pod = LocalPod::of_deployment(&deployment, POD_SUFFIX).unwrap();
    assert_eq!(pod.name, "demo-syncer-local");
    assert_eq!(pod.mounted_secrets(), ["demo-syncer-kubeconfig"]);
    assert_eq!(pod.mounted_config_maps(), ["demo-syncer-config"]);
    assert_eq!(pod.declared_ports().unwrap(), [8080, 10250]);

    let plan = plan_of(&deployment, &mounted).unwrap();
    assert_eq!(plan.service_account.as_deref(), Some("demo-syncer"));
    assert_eq!(plan.api_server_port, None);
    let [syncer] = &plan.processes[..] else {
        panic!("{:?}", plan.processes)
    };
    assert_eq!(syncer.container, "syncer");
    assert_eq!(syncer.binary, BINARY);
    // The rendered arguments with their paths replaced, then the host credentials.
    assert_eq!(
        syncer.args,
        [
            format!("--virtual-kubeconfig={ROOT}/volumes/virtual-kubeconfig/{KUBECONFIG_KEY}"),
            format!("--config={ROOT}/volumes/config/{SYNCER_CONFIG_KEY}"),
            format!("--metrics-addr=0.0.0.0:{LOCAL_METRICS_PORT}"),
            // The kubelet API on its local port, advertised where the local virtual API
            // server reaches it.
            format!("--kubelet-listen=0.0.0.0:{LOCAL_KUBELET_PORT}"),
            format!("--kubelet-advertise=127.0.0.1:{LOCAL_KUBELET_PORT}"),
            format!("--kubelet-tls-cert-file={ROOT}/volumes/virtual-kubeconfig/kubelet.crt"),
            format!("--kubelet-tls-key-file={ROOT}/volumes/virtual-kubeconfig/kubelet.key"),
            format!(
                "--kubelet-client-ca-file={ROOT}/volumes/virtual-kubeconfig/kubelet-client-ca.crt"
            ),
            format!("--host-kubeconfig={HOST_KUBECONFIG}"),
        ]
    );
    // Its readiness probe (on the port named `metrics`), at the local port.
    assert_eq!(
        plan.http_readiness,
        [HttpProbe {
            container: "syncer".into(),
            port: LOCAL_METRICS_PORT,
            path: "/readyz".into(),
        }]
    );
    let rendered = &pod.spec.containers[0];
    assert_eq!(rendered.args.as_ref().unwrap().len() + 1, syncer.args.len());
    assert_eq!(
        syncer.env,
        [
            ("POD_NAME".to_owned(), "demo-syncer-local".to_owned()),
            ("POD_NAMESPACE".to_owned(), "team-a".to_owned()),
        ]
    );
    assert_eq!(syncer.working_dir, None);

    let folders: Vec<_> = plan
        .folders
        .iter()
        .map(|f| (f.volume.as_str(), f.path.clone(), f.keep))
        .collect();
    assert_eq!(
        folders,
        [
            ("config", Path::new(ROOT).join("volumes/config"), false),
            (
                "virtual-kubeconfig",
                Path::new(ROOT).join("volumes/virtual-kubeconfig"),
                false
            ),
        ]
    );
}

#[test]
fn the_volumes_become_files_with_the_local_api_server_in_the_kubeconfig() {
    let (deployment, mounted) = rendered(|_| {});
    let plan = plan_of(&deployment, &mounted).unwrap();
    let file = |path: &str| {
        plan.files
            .iter()
            .find(|f| f.path == Path::new(ROOT).join(path))
            .unwrap_or_else(|| panic!("no {path} in {:?}", plan.files))
    };
    // The configuration, and the kubeconfig with the kubelet API's certificates and CA.
    assert_eq!(plan.files.len(), 5);

    // The configuration is written as rendered: it names the Service, it has no address.
    let config = file(&format!("volumes/config/{SYNCER_CONFIG_KEY}"));
    assert_eq!(
        config.contents,
        mounted
            .config_maps
            .iter()
            .find_map(|c| c.data.as_ref()?.get(SYNCER_CONFIG_KEY))
            .unwrap()
            .as_bytes()
    );

    // The kubeconfig reaches the local API server instead of the Service; nothing else changes.
    let kubeconfig = file(&format!("volumes/virtual-kubeconfig/{KUBECONFIG_KEY}"));
    let before: serde_yaml::Value = serde_yaml::from_slice(secret_data(
        &mounted,
        "demo-syncer-kubeconfig",
        KUBECONFIG_KEY,
    ))
    .unwrap();
    let after: serde_yaml::Value = serde_yaml::from_slice(&kubeconfig.contents).unwrap();
    let server = |k: &serde_yaml::Value| k["clusters"][0]["cluster"]["server"].clone();
    assert_eq!(server(&before), "https://demo.team-a.svc:443");
    assert_eq!(server(&after), format!("https://{LOCAL_API_SERVER}"));
    let mut expected = before.clone();
    expected["clusters"][0]["cluster"]["server"] = server(&after);
    assert_eq!(after, expected);
}

#[test]
fn the_api_server_service_is_known_by_each_of_its_names() {
    let addresses = api_server_addresses(&id(), LOCAL_API_SERVER);
    let names: Vec<_> = addresses.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "demo.team-a.svc.cluster.local:443",
            "demo.team-a.svc:443",
            "demo.team-a:443",
            "demo:443",
        ]
    );
    assert!(addresses.values().all(|v| v == LOCAL_API_SERVER));
}

#[test]
fn a_syncer_that_cannot_run_locally_as_rendered_is_refused() {
    let (deployment, mounted) = rendered(|_| {});
    let edited = |edit: &dyn Fn(&mut PodSpec)| {
        let mut edited = deployment.clone();
        edit(edited.spec.template.spec.as_mut().unwrap());
        format!("{:#}", plan_of(&edited, &mounted).unwrap_err())
    };

    let err = edited(&|spec| spec.automount_service_account_token = Some(false));
    assert!(err.contains("no ServiceAccount token"), "{err}");

    let err = edited(&|spec| {
        spec.containers[0]
            .args
            .get_or_insert_default()
            .push("--host-kubeconfig=/etc/host".into())
    });
    assert!(err.contains("already has host credentials"), "{err}");

    let err = edited(&|spec| spec.containers[0].command = Some(vec!["/bin/sh".into()]));
    assert!(err.contains("exactly one container"), "{err}");

    let without_config = Mounted {
        config_maps: Vec::new(),
        ..mounted.clone()
    };
    let err = format!("{:#}", plan_of(&deployment, &without_config).unwrap_err());
    assert!(
        err.contains("volume config: no ConfigMap demo-syncer-config"),
        "{err}"
    );
}
