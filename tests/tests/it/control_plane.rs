//! The virtual control plane the operator renders: the StatefulSet and Secrets the real
//! operator created in the host cluster, run as local processes with only paths and ports
//! changed (`instance::run_instance`), serve a working cluster.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use virtualcluster_crds::VirtualCluster;
use virtualcluster_crds::instance::InstanceRef;
use virtualcluster_tests::harness::eventually;
use virtualcluster_tests::instance;
use virtualcluster_tests::operator::{self, Operator, Start};
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
    let identity = operator::identity(cluster, &namespace).await.unwrap();
    let _operator = Operator::start(
        cluster,
        Start {
            namespaces: &[&namespace],
            kubeconfig: &identity,
            args: &[],
        },
    )
    .await
    .unwrap();
    let name = "demo";
    create_virtual_cluster(&client, &namespace, name).await;
    // What the operator rendered: the StatefulSet and the kubeconfig Secret come last.
    let id = InstanceRef {
        name: name.into(),
        namespace: namespace.clone(),
        uid: String::new(),
    };
    eventually("the operator to render the control plane", || async {
        let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        let rendered = sets.get_opt(&id.control_plane()).await.unwrap().is_some()
            && secrets
                .get_opt(&id.kubeconfig_secret())
                .await
                .unwrap()
                .is_some();
        rendered.then_some(())
    })
    .await;

    the_instance_serves_a_virtual_cluster(cluster, &namespace, name).await;
}

async fn create_virtual_cluster(client: &kube::Client, namespace: &str, name: &str) {
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
    .unwrap_or_else(|err| panic!("creating VirtualCluster {namespace}/{name}: {err}"));
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
    let kubeconfig = instance::run_instance(
        cluster.dir(),
        namespace,
        name,
        instance::Options::control_plane_only(Lifetime::TiedToThisProcess),
    )
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

/// A control plane whose spec names no version runs the release the local binaries are built
/// from, the one every test here runs against.
#[test]
fn the_default_version_is_the_pinned_one() {
    assert_eq!(
        virtualcluster_operator::settings::DEFAULT_KUBERNETES_VERSION,
        binaries::kubernetes_version().unwrap()
    );
}
