//! The virtual control plane the operator renders: its StatefulSet and Secrets in the host
//! cluster, run as local processes (`instance::run_instance`), serve a working cluster.

use std::fmt::Debug;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use virtualcluster_crds::VirtualCluster;
use virtualcluster_operator::build::{self, Instance};
use virtualcluster_operator::pki;
use virtualcluster_operator::settings::Settings;
use virtualcluster_operator::validate;
use virtualcluster_tests::instance;
use virtualcluster_tests::process::Lifetime;
use virtualcluster_tests::{TestCluster, binaries, crd, kubeconfig, shared_cluster};

const FIELD_MANAGER: &str = "virtualcluster-tests";
const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn the_rendered_control_plane_serves_a_virtual_cluster() {
    let cluster = shared_cluster().await;
    let client = cluster.client().await;
    crd::install(&client).await.unwrap();
    let namespace = cluster.namespace("control-plane").await;
    let name = "demo";
    let vc = create_virtual_cluster(&client, &namespace, name).await;

    apply_rendered_objects(&client, &vc).await;
    the_instance_serves_a_virtual_cluster(cluster, &namespace, name).await;
}

async fn create_virtual_cluster(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> VirtualCluster {
    let api: Api<VirtualCluster> = Api::namespaced(client.clone(), namespace);
    let vc = json!({
        "apiVersion": "virtualcluster.dev/v1alpha1",
        "kind": "VirtualCluster",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {},
    });
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&vc),
    )
    .await
    .unwrap_or_else(|err| panic!("creating VirtualCluster {namespace}/{name}: {err}"))
}

/// Creates what the operator's builders produce for `vc`, as the operator would: Services
/// first (the certificates cover the API server Service's ClusterIP), then the certificates,
/// the kubeconfigs and the StatefulSet.
async fn apply_rendered_objects(client: &kube::Client, vc: &VirtualCluster) {
    let settings = Settings::default();
    let valid = validate::validate(vc, None, &settings.service_cidr).unwrap();
    let instance = Instance {
        vc,
        valid: &valid,
        settings: &settings,
    };
    for service in build::services(&instance) {
        apply(client, &service).await;
    }
    let id = instance.id();
    let services: Api<Service> = Api::namespaced(client.clone(), &id.namespace);
    let service_ip = services
        .get(&id.api_server_service())
        .await
        .unwrap()
        .spec
        .and_then(|s| s.cluster_ip);
    let subjects = build::cert_subjects(&instance, service_ip.as_deref());
    let bundle = pki::issue(
        pki::Plan::IssueAll,
        None,
        None,
        &subjects,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    apply(client, &build::certs_secret(&instance, &bundle)).await;
    let kubeconfigs = build::kubeconfig_secrets(&instance, &bundle.data).unwrap();
    apply(client, &kubeconfigs.admin).await;
    apply(client, &kubeconfigs.syncer).await;
    let certs_hash =
        build::content_hash(bundle.data.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
    apply(client, &build::stateful_set(&instance, &certs_hash)).await;
}

async fn apply<K>(client: &kube::Client, object: &K)
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let namespace = object.namespace().expect("a namespaced object");
    let name = object.name_any();
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    // Forced: the test owns these objects.
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .unwrap_or_else(|err| panic!("applying {} {namespace}/{name}: {err}", K::kind(&())));
}

/// From here on, only what exists in the host cluster counts: the StatefulSet and Secrets of
/// `namespace/name`, whoever made them.
async fn the_instance_serves_a_virtual_cluster(cluster: &TestCluster, namespace: &str, name: &str) {
    let _stop = StopInstance {
        dir: cluster.dir().to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    };
    let started = Instant::now();
    let kubeconfig =
        instance::run_instance(cluster.dir(), namespace, name, Lifetime::TiedToThisProcess)
            .await
            .unwrap_or_else(|err| panic!("running {namespace}/{name}: {err:#}"));
    eprintln!(
        "control plane {namespace}/{name} ready after {:.1?}",
        started.elapsed()
    );
    assert_eq!(
        kubeconfig,
        instance::instance_dir(cluster.dir(), namespace, name).join("kubeconfig")
    );
    let virtual_cluster = kubeconfig::client(&kubeconfig).await.unwrap();

    let version = virtual_cluster.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, binaries::kubernetes_version().unwrap());

    let namespaces: Api<Namespace> = Api::all(virtual_cluster.clone());
    let created: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "made-inside"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &created)
        .await
        .unwrap();
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|n| n.name_any())
        .collect();
    for expected in ["made-inside", "default", "kube-system"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    // Nothing of the virtual cluster reaches the host.
    let host = cluster.client().await;
    assert!(
        Api::<Namespace>::all(host)
            .get_opt("made-inside")
            .await
            .unwrap()
            .is_none()
    );

    // The controller manager runs: it gives the new namespace its ServiceAccount.
    let accounts: Api<ServiceAccount> = Api::namespaced(virtual_cluster, "made-inside");
    let deadline = Instant::now() + TIMEOUT;
    while accounts.get_opt("default").await.unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the virtual controller manager made no default ServiceAccount in {TIMEOUT:?}; \
             see {}",
            instance::instance_dir(cluster.dir(), namespace, name)
                .join("logs")
                .display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stops the instance's processes when the test ends, however it ends (they would die with
/// the test process anyway, but other tests need the CPU).
struct StopInstance {
    dir: PathBuf,
    namespace: String,
    name: String,
}

impl Drop for StopInstance {
    fn drop(&mut self) {
        if let Err(err) = instance::stop_instance(&self.dir, &self.namespace, &self.name) {
            eprintln!("stopping {}/{}: {err:#}", self.namespace, self.name);
        }
    }
}
