//! The operator against the real API server, run as its own binary with the identity it has
//! when deployed (a ServiceAccount bound to `config/rbac/role.yaml`). Each test has its own
//! namespace and its own operator watching only that namespace, so tests run in parallel.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::{Discovery, verbs};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use virtualcluster_crds::VirtualCluster;
use virtualcluster_crds::instance::{InstanceRef, KUBECONFIG_KEY};
use virtualcluster_crds::keys::CLEANUP_FINALIZER;
use virtualcluster_crds::keys::NAMESPACE_SYNC;
use virtualcluster_operator::settings::Settings;
use virtualcluster_operator::{apply, build, pki, validate};
use virtualcluster_tests::harness::{eventually, is_status};
use virtualcluster_tests::operator::{self, Operator, Start};
use virtualcluster_tests::{TestCluster, crd, shared_cluster};

/// Waits for provisioning and readiness are longer than [`eventually`]'s: pods go through the
/// scheduler and the simulated nodes.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// A namespace with its own operator.
struct Setup {
    cluster: &'static TestCluster,
    kubeconfig: PathBuf,
    operator: Operator,
    ns: Instances,
}

impl std::ops::Deref for Setup {
    type Target = Instances;
    fn deref(&self) -> &Instances {
        &self.ns
    }
}

/// VirtualClusters in one namespace, and the log of the operator that reconciles them.
struct Instances {
    client: Client,
    namespace: String,
    log: PathBuf,
}

impl Setup {
    /// A namespace, the operator's identity in it, and an operator watching it.
    async fn new(prefix: &str) -> Setup {
        Self::with_args(prefix, &[]).await
    }

    async fn with_args(prefix: &str, args: &[&str]) -> Setup {
        let cluster = shared_cluster().await;
        let client = cluster.client().await;
        crd::install(&client).await.unwrap();
        let namespace = cluster.namespace(prefix).await;
        let kubeconfig = operator::identity(cluster, &namespace).await.unwrap();
        let operator = Operator::start(
            cluster,
            Start {
                namespaces: &[&namespace],
                kubeconfig: &kubeconfig,
                args,
            },
        )
        .await
        .unwrap();
        Setup {
            cluster,
            kubeconfig,
            ns: Instances {
                client,
                namespace,
                log: operator.log_path(),
            },
            operator,
        }
    }

    /// Replaces the operator with a new process (same identity and namespace).
    async fn restart(&mut self) {
        let operator = Operator::start(
            self.cluster,
            Start {
                namespaces: &[&self.ns.namespace],
                kubeconfig: &self.kubeconfig,
                args: &[],
            },
        )
        .await
        .unwrap();
        self.ns.log = operator.log_path();
        self.operator = operator;
    }
}

impl Instances {
    fn log_tail(&self) -> String {
        virtualcluster_tests::process::log_tail(&self.log, 60)
    }

    fn vcs(&self) -> Api<VirtualCluster> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Creates VirtualCluster `name` with `spec`; control planes run without a volume claim so
    /// that their pods schedule on the simulated nodes.
    async fn create(&self, name: &str, mut spec: serde_json::Value) -> VirtualCluster {
        if spec.pointer("/controlPlane/persistence").is_none() {
            spec["controlPlane"]["persistence"] = json!({"enabled": false});
        }
        let vc: VirtualCluster = serde_json::from_value(json!({
            "apiVersion": "virtualcluster.dev/v1alpha1",
            "kind": "VirtualCluster",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .unwrap();
        self.vcs()
            .create(&PostParams::default(), &vc)
            .await
            .unwrap()
    }

    /// Polls VirtualCluster `name` until `check` holds; fails with its status and the
    /// operator's log.
    async fn wait_vc(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&VirtualCluster) -> bool,
    ) -> VirtualCluster {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let vc = self.vcs().get_opt(name).await.unwrap();
            if let Some(vc) = &vc
                && check(vc)
            {
                return vc.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what} of {}/{name}; status: {}\n{}",
                    self.namespace,
                    serde_json::to_string_pretty(&vc.and_then(|v| v.status)).unwrap(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn wait_ready(&self, name: &str) -> VirtualCluster {
        self.wait_vc(name, "Ready", |vc| {
            condition(vc, "Ready").is_some_and(|c| c.status == "True")
        })
        .await
    }

    /// Waits until VirtualCluster `name` is gone (its finalizer ran).
    async fn wait_deleted(&self, name: &str) {
        let deadline = Instant::now() + READY_TIMEOUT;
        while self.vcs().get_opt(name).await.unwrap().is_some() {
            assert!(
                Instant::now() < deadline,
                "VirtualCluster {name} was not deleted\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn events(&self, name: &str) -> Vec<Event> {
        self.api::<Event>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect()
    }
}

fn condition(vc: &VirtualCluster, type_: &str) -> Option<Condition> {
    vc.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

fn id(vc: &VirtualCluster) -> InstanceRef {
    InstanceRef::of(vc)
}

/// Asserts that the live object has every field of `desired` (as the operator applies it).
async fn assert_live_matches<K>(api: &Api<K>, desired: K)
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let desired = apply::with_hash(desired);
    let name = desired.name_any();
    let live = api
        .get(&name)
        .await
        .unwrap_or_else(|e| panic!("{} {name}: {e}", K::kind(&())));
    let (live, desired) = (
        serde_json::to_value(&live).unwrap(),
        serde_json::to_value(&desired).unwrap(),
    );
    assert!(
        virtualcluster_crds::compare::contains(&live, &desired),
        "{} {name} differs from what the operator builds:\nlive: {live:#}\ndesired: {desired:#}",
        K::kind(&())
    );
}

/// What the operator's builders make for `vc`, given the certificates it stored and the
/// ClusterIP of the syncer's Service.
fn desired_for(
    vc: &VirtualCluster,
    certs: &Secret,
    syncer_ip: Option<&str>,
) -> (Vec<Service>, build::Desired) {
    let settings = Settings::default();
    let valid = validate::validate(vc, None, &Settings::default()).unwrap();
    let instance = build::Instance {
        vc,
        valid: &valid,
        settings: &settings,
    };
    let mut certs: BTreeMap<String, Vec<u8>> = certs
        .data
        .clone()
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    // The operator builds from the bundle as it keeps it.
    pki::digested(&mut certs);
    (
        build::services(&instance),
        build::desired(&instance, &certs, syncer_ip).unwrap(),
    )
}

/// resourceVersion of every child, to tell whether anything was written.
async fn child_versions(setup: &Instances, id: &InstanceRef) -> BTreeMap<String, String> {
    let selector = ListParams::default().labels(&id.label_selector());
    let mut versions = BTreeMap::new();
    macro_rules! collect {
        ($kind:ty, $api:expr) => {
            for o in $api.list(&selector).await.unwrap().items {
                let o: $kind = o;
                versions.insert(
                    format!("{}/{}", <$kind>::kind(&()), o.name_any()),
                    o.resource_version().unwrap(),
                );
            }
        };
    }
    collect!(Service, setup.api::<Service>());
    collect!(Secret, setup.api::<Secret>());
    collect!(ConfigMap, setup.api::<ConfigMap>());
    collect!(ServiceAccount, setup.api::<ServiceAccount>());
    collect!(Role, setup.api::<Role>());
    collect!(RoleBinding, setup.api::<RoleBinding>());
    collect!(StatefulSet, setup.api::<StatefulSet>());
    collect!(Deployment, setup.api::<Deployment>());
    collect!(ClusterRole, Api::<ClusterRole>::all(setup.client.clone()));
    collect!(
        ClusterRoleBinding,
        Api::<ClusterRoleBinding>::all(setup.client.clone())
    );
    versions
}

#[tokio::test]
async fn creates_every_child_as_specified_and_becomes_ready() {
    let setup = Setup::new("op-create").await;
    setup.create("demo", json!({})).await;
    let vc = setup.wait_ready("demo").await;
    let id = id(&vc);

    assert!(vc.finalizers().iter().any(|f| f == CLEANUP_FINALIZER));
    let status = vc.status.clone().unwrap();
    assert_eq!(status.observed_generation, vc.metadata.generation);
    assert_eq!(status.kube_config_secret.as_deref(), Some("vc-demo"));
    for type_ in ["ConfigValid", "ControlPlaneReady", "SyncerReady", "Ready"] {
        assert_eq!(condition(&vc, type_).unwrap().status, "True", "{type_}");
    }
    assert_eq!(condition(&vc, "Reconciling").unwrap().status, "False");
    assert_eq!(condition(&vc, "Stalled").unwrap().status, "False");

    let certs = setup.api::<Secret>().get(&id.certs_secret()).await.unwrap();
    let syncer = setup.api::<Service>().get(&id.syncer()).await.unwrap();
    let syncer_ip = syncer.spec.and_then(|s| s.cluster_ip);
    let (services, desired) = desired_for(&vc, &certs, syncer_ip.as_deref());
    for o in services {
        assert_live_matches(&setup.api(), o).await;
    }
    for o in desired.secrets {
        assert_live_matches(&setup.api(), o).await;
    }
    for o in desired.config_maps {
        assert_live_matches(&setup.api(), o).await;
    }
    for o in desired.service_accounts {
        assert_live_matches(&setup.api(), o).await;
    }
    for o in desired.role_bindings {
        assert_live_matches(&setup.api(), o).await;
    }
    for o in desired.stateful_sets {
        assert_live_matches(&setup.api(), o).await;
    }
    for o in desired.deployments {
        assert_live_matches(&setup.api(), o).await;
    }
    // Without namespace syncing the only cluster-wide access is reading nodes, through the
    // fixed ClusterRole installed with the CRD: the instance has none of its own.
    assert!(
        desired.cluster_roles.is_empty(),
        "{:?}",
        desired.cluster_roles
    );
    for o in desired.cluster_role_bindings {
        assert_eq!(o.role_ref.name, "virtualcluster-operator-syncer-nodes");
        let fixed = Api::<ClusterRole>::all(setup.client.clone())
            .get(&o.role_ref.name)
            .await
            .unwrap();
        let rules = fixed.rules.unwrap_or_default();
        assert_eq!(rules.len(), 1, "{rules:?}");
        assert_eq!(
            rules[0].resources.as_deref(),
            Some(&["nodes".to_owned()][..])
        );
        assert_live_matches(&Api::all(setup.client.clone()), o).await;
    }

    // Every namespaced child is owned by the VirtualCluster, as its controller.
    let versions = child_versions(&setup, &id).await;
    // 3 Services (the API server's, its headless one, the syncer's kubelet endpoint),
    // 3 Secrets, 2 ConfigMaps (the control plane's and the syncer's),
    // ServiceAccount, RoleBinding (to the fixed ClusterRole of a syncer's own namespace),
    // StatefulSet, Deployment, and the syncer's ClusterRoleBinding (not owned, labelled).
    assert_eq!(versions.len(), 13, "{versions:?}");
    let sts = setup.api::<StatefulSet>().get("demo").await.unwrap();
    // Built once and right: a changed spec (say, a certificate hash that moved) would roll
    // the control plane of a new instance for nothing.
    assert_eq!(
        sts.metadata.generation,
        Some(1),
        "the StatefulSet changed after creation"
    );
    let syncer = setup.api::<Deployment>().get("demo-syncer").await.unwrap();
    assert_eq!(
        syncer.metadata.generation,
        Some(1),
        "the Deployment changed after creation"
    );
    let owner = &sts.owner_references()[0];
    assert_eq!(
        (owner.uid.as_str(), owner.controller),
        (id.uid.as_str(), Some(true))
    );

    // The admin kubeconfig Secret has the keys users know, and they agree with each other.
    let kubeconfig = setup.api::<Secret>().get("vc-demo").await.unwrap();
    let data = kubeconfig.data.unwrap();
    for key in [
        KUBECONFIG_KEY,
        "certificate-authority",
        "client-certificate",
        "client-key",
    ] {
        assert!(data.contains_key(key), "vc-demo lacks {key}");
    }
    let parsed =
        kube::config::Kubeconfig::from_yaml(std::str::from_utf8(&data[KUBECONFIG_KEY].0).unwrap())
            .unwrap();
    assert_eq!(
        parsed.clusters[0]
            .cluster
            .as_ref()
            .unwrap()
            .server
            .as_deref(),
        Some(format!("https://demo.{}.svc:443", setup.namespace).as_str())
    );

    let events = setup.events("demo").await;
    assert!(
        events.iter().any(|e| e.reason.as_deref() == Some("Ready")),
        "no Ready Event: {events:?}"
    );

    // Provisioned without a failed step on the way (children applied out of order, say, are
    // refused and retried, which ends in the same objects but costs writes and time).
    let metrics = setup.operator.metrics().await.unwrap();
    let errors: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("virtualcluster_operator_reconcile_errors_total{"))
        .collect();
    assert!(errors.is_empty(), "reconciles failed: {errors:?}");
    let metrics = setup.operator.metrics().await.unwrap();
    assert!(
        metrics.contains("virtualcluster_operator_instances{phase=\"Ready\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("virtualcluster_operator_reconcile_duration_seconds_count"));
}

#[tokio::test]
async fn puts_back_deleted_and_edited_children_and_rolls_out_spec_changes() {
    let setup = Setup::with_args("op-restore", &["--resync-seconds=3"]).await;
    setup.create("restore", json!({})).await;
    let vc = setup.wait_ready("restore").await;
    let id = id(&vc);

    // Nothing changes: a few resyncs later, no child was written.
    let before = child_versions(&setup, &id).await;
    let vc_version = vc.resource_version();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        child_versions(&setup, &id).await,
        before,
        "a resync wrote a child"
    );
    assert_eq!(
        setup.vcs().get("restore").await.unwrap().resource_version(),
        vc_version,
        "a resync wrote the status"
    );

    // A Secret's data, which the operator caches only as metadata, is put back too.
    let secrets = setup.api::<Secret>();
    let original = secrets.get("vc-restore").await.unwrap().data;
    secrets
        .patch(
            "vc-restore",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"config": "ZWRpdGVk"}})),
        )
        .await
        .unwrap();
    eventually("the kubeconfig Secret to be put back", || async {
        (secrets.get("vc-restore").await.unwrap().data == original).then_some(())
    })
    .await;
    // A deleted Service comes back; an edited Deployment is put back.
    let services = setup.api::<Service>();
    services
        .delete("restore", &DeleteParams::default())
        .await
        .unwrap();
    let deployments = setup.api::<Deployment>();
    deployments
        .patch(
            "restore-syncer",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    eventually("the Service to be recreated", || async {
        services.get_opt("restore").await.unwrap()
    })
    .await;
    // Its new ClusterIP is not in the serving certificate: new leaves, same CA, an Event.
    eventually("a CertificatesIssued Event", || async {
        setup
            .events("restore")
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("CertificatesIssued"))
    })
    .await;
    eventually("the Deployment's replicas to be put back", || async {
        let d = deployments.get("restore-syncer").await.unwrap();
        (d.spec.replicas == Some(1)).then_some(())
    })
    .await;

    // A spec change rolls out: two syncer replicas, a new control plane version.
    setup
        .vcs()
        .patch(
            "restore",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {
                "syncer": {"replicas": 2},
                "controlPlane": {"version": "v1.36.4"},
            }})),
        )
        .await
        .unwrap();
    let vc = setup
        .wait_vc("restore", "the new generation to be Ready", |vc| {
            vc.status.as_ref().and_then(|s| s.observed_generation) == vc.metadata.generation
                && condition(vc, "Ready").is_some_and(|c| c.status == "True")
        })
        .await;
    assert_eq!(vc.metadata.generation, Some(2));
    let d = deployments.get("restore-syncer").await.unwrap();
    assert_eq!(d.spec.replicas, Some(2));
    let sts = setup.api::<StatefulSet>().get("restore").await.unwrap();
    let images: Vec<_> = sts
        .spec
        .template
        .spec
        .unwrap()
        .containers
        .into_iter()
        .map(|c| c.image.unwrap())
        .collect();
    assert!(
        images.contains(&"registry.k8s.io/kube-apiserver:v1.36.4".to_owned()),
        "{images:?}"
    );
}

#[tokio::test]
async fn an_invalid_config_is_reported_and_nothing_is_provisioned() {
    let setup = Setup::new("op-invalid").await;
    // Admission cannot see the VirtualCluster's namespace; the operator can.
    setup
        .create(
            "own",
            json!({"sync": {"toHost": {"namespaces": {
                "enabled": true,
                "mappings": {"byName": {"team-*": "x-*", "home": setup.namespace}},
            }}}}),
        )
        .await;
    let vc = setup
        .wait_vc("own", "ConfigValid=False", |vc| {
            condition(vc, "ConfigValid").is_some_and(|c| c.status == "False")
        })
        .await;
    let valid = condition(&vc, "ConfigValid").unwrap();
    assert_eq!(valid.reason, "OwnNamespace");
    assert!(valid.message.contains("own namespace"), "{}", valid.message);
    assert_eq!(condition(&vc, "Stalled").unwrap().status, "True");
    assert_eq!(
        vc.status.as_ref().unwrap().phase,
        Some(virtualcluster_crds::v1alpha1::Phase::Failed)
    );
    eventually("a Warning Event naming the rule", || async {
        setup.events("own").await.into_iter().find(|e| {
            e.reason.as_deref() == Some("OwnNamespace") && e.type_.as_deref() == Some("Warning")
        })
    })
    .await;
    let versions = child_versions(&setup, &id(&vc)).await;
    assert!(
        versions.is_empty(),
        "provisioned despite an invalid config: {versions:?}"
    );
}

#[tokio::test]
async fn a_changed_namespace_sync_block_stops_all_changes() {
    let setup = Setup::new("op-changed").await;
    setup
        .create(
            "frozen",
            json!({"sync": {"toHost": {"namespaces": {
                "enabled": true,
                "mappings": {"byName": {"team-*": "frozen-team-*"}},
            }}}}),
        )
        .await;
    let vc = setup.wait_ready("frozen").await;
    let id = id(&vc);
    // Admission keeps the block immutable; stand in for a change that got past it by changing
    // the record of what runs.
    let config_maps = setup.api::<ConfigMap>();
    let config = config_maps.get(&id.syncer_config()).await.unwrap();
    let record = config.annotations()[NAMESPACE_SYNC].replace("frozen-team-*", "other-*");
    config_maps
        .patch(
            &id.syncer_config(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {NAMESPACE_SYNC: record}}})),
        )
        .await
        .unwrap();
    // Make the operator look again.
    setup
        .vcs()
        .patch(
            "frozen",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"syncer": {"replicas": 2}}})),
        )
        .await
        .unwrap();
    let vc = setup
        .wait_vc("frozen", "ConfigValid=False", |vc| {
            condition(vc, "ConfigValid").is_some_and(|c| c.status == "False")
        })
        .await;
    assert_eq!(
        condition(&vc, "ConfigValid").unwrap().reason,
        "NamespaceSyncChanged"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d = setup.api::<Deployment>().get(&id.syncer()).await.unwrap();
    assert_eq!(
        d.spec.replicas,
        Some(1),
        "what runs changed despite the invalid config"
    );
    let config = config_maps.get(&id.syncer_config()).await.unwrap();
    assert_eq!(
        config.annotations()[NAMESPACE_SYNC],
        record,
        "the record was put back"
    );
}

/// Every object of every kind in the cluster that carries the instance's UID label.
async fn objects_of(client: &Client, uid: &str) -> Vec<String> {
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let params = ListParams::default().labels(&format!("virtualcluster.dev/instance-uid={uid}"));
    let mut found = Vec::new();
    for group in discovery.groups() {
        for (resource, caps) in group.recommended_resources() {
            if !caps.supports_operation(verbs::LIST) {
                continue;
            }
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            match api.list(&params).await {
                Ok(list) => found.extend(list.items.iter().map(|o| {
                    format!(
                        "{} {}/{}",
                        resource.kind,
                        o.namespace().unwrap_or_default(),
                        o.name_any()
                    )
                })),
                Err(err) if is_status(&err, 405) || is_status(&err, 404) => {}
                Err(err) => panic!("listing {}: {err}", resource.plural),
            }
        }
    }
    found
}

#[tokio::test]
async fn same_names_in_two_namespaces_do_not_collide_and_delete_leaves_nothing() {
    let cluster = shared_cluster().await;
    let client = cluster.client().await;
    crd::install(&client).await.unwrap();
    let first = cluster.namespace("op-twin-a").await;
    let second = cluster.namespace("op-twin-b").await;
    let kubeconfig = operator::identity(cluster, &first).await.unwrap();
    let operator = Operator::start(
        cluster,
        Start {
            namespaces: &[&first, &second],
            kubeconfig: &kubeconfig,
            args: &[],
        },
    )
    .await
    .unwrap();
    let setup = |namespace: &str| Instances {
        client: client.clone(),
        namespace: namespace.to_owned(),
        log: operator.log_path(),
    };
    let (a, b) = (setup(&first), setup(&second));
    // Namespace syncing gives each a ClusterRole, the cluster-scoped kind names could clash in.
    let spec = json!({"sync": {"toHost": {"namespaces": {
        "enabled": true,
        "mappings": {"byName": {"team-*": "${name}-team-*"}},
    }}}});
    tokio::join!(a.create("twin", spec), b.create("twin", json!({})));
    let (vc_a, vc_b) = tokio::join!(a.wait_ready("twin"), b.wait_ready("twin"));
    let (id_a, id_b) = (id(&vc_a), id(&vc_b));
    let roles: Api<ClusterRole> = Api::all(client.clone());
    assert!(
        roles
            .get_opt(&id_a.syncer_cluster_role())
            .await
            .unwrap()
            .is_some()
    );
    let b_before = child_versions(&b, &id_b).await;
    assert!(!objects_of(&client, &id_a.uid).await.is_empty());

    a.vcs()
        .delete("twin", &DeleteParams::default())
        .await
        .unwrap();
    a.wait_deleted("twin").await;
    // Garbage collection removes the namespaced children after the finalizer ran.
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let left = objects_of(&client, &id_a.uid).await;
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: {left:?}\n{}",
            operator.log_tail()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        child_versions(&b, &id_b).await,
        b_before,
        "deleting one touched the other"
    );
    assert!(
        condition(&b.vcs().get("twin").await.unwrap(), "Ready").is_some_and(|c| c.status == "True")
    );
    let events = a.events("twin").await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("CleanedUp")),
        "{events:?}"
    );
}

#[tokio::test]
async fn killed_mid_provisioning_reaches_the_same_end_state() {
    let mut setup = Setup::new("op-kill").await;
    setup.create("crash", json!({})).await;
    let secrets = setup.api::<Secret>();
    // Kill it as soon as it has stored the certificates, before it finished the rest.
    let certs = eventually("the certificates", || async {
        secrets.get_opt("crash-certs").await.unwrap()
    })
    .await;
    setup.operator.kill();
    setup.restart().await;
    let vc = setup.wait_ready("crash").await;
    let after = secrets.get("crash-certs").await.unwrap();
    assert_eq!(after.uid(), certs.uid(), "the certificates were replaced");
    assert_eq!(after.data, certs.data, "the certificates were reissued");
    let certs_secret = secrets.get(&id(&vc).certs_secret()).await.unwrap();
    let syncer = setup.api::<Service>().get(&id(&vc).syncer()).await.unwrap();
    let syncer_ip = syncer.spec.and_then(|s| s.cluster_ip);
    let (_, desired) = desired_for(&vc, &certs_secret, syncer_ip.as_deref());
    for o in desired.deployments {
        assert_live_matches(&setup.api(), o).await;
    }
    for o in desired.stateful_sets {
        assert_live_matches(&setup.api(), o).await;
    }
}

#[tokio::test]
async fn a_standby_takes_over_when_the_leader_dies() {
    let mut setup = Setup::new("op-leader").await;
    let standby = Operator::start(
        setup.cluster,
        Start {
            namespaces: &[&setup.namespace],
            kubeconfig: &setup.kubeconfig,
            args: &[],
        },
    )
    .await
    .unwrap();
    let leases: Api<Lease> = setup.api();
    let holder = |lease: Lease| lease.spec.and_then(|s| s.holder_identity);
    let leader = eventually("a leader", || async {
        holder(leases.get_opt("virtualcluster-operator").await.unwrap()?)
    })
    .await;
    assert_eq!(leader, setup.operator.identity, "the first operator leads");
    setup.create("one", json!({})).await;
    setup.wait_ready("one").await;
    assert!(
        !standby.log().contains("applying"),
        "the standby wrote:\n{}",
        standby.log()
    );

    let killed = Instant::now();
    setup.operator.kill();
    setup.create("two", json!({})).await;
    setup.ns.log = standby.log_path();
    setup.operator = standby;
    let new_leader = eventually("the standby to take the lease", || async {
        holder(leases.get_opt("virtualcluster-operator").await.unwrap()?)
            .filter(|h| *h == setup.operator.identity)
    })
    .await;
    let failover = killed.elapsed();
    assert_eq!(new_leader, setup.operator.identity);
    assert!(
        failover < Duration::from_secs(30),
        "failover took {failover:?}"
    );
    setup.wait_ready("two").await;
}

#[tokio::test]
async fn a_change_the_statefulset_cannot_take_recreates_it() {
    let setup = Setup::new("op-persist").await;
    setup.create("persist", json!({})).await;
    setup.wait_ready("persist").await;
    let sets = setup.api::<StatefulSet>();
    let old = sets.get("persist").await.unwrap();
    assert!(old.spec.volume_claim_templates.is_none());
    // Volume claim templates cannot be changed in place.
    setup
        .vcs()
        .patch(
            "persist",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"controlPlane": {"persistence": {"enabled": true, "size": "1Gi"}}}})),
        )
        .await
        .unwrap();
    let new = eventually(
        "the StatefulSet to be recreated with a volume claim",
        || async {
            sets.get_opt("persist")
                .await
                .unwrap()
                .filter(|s| s.uid() != old.uid() && s.spec.volume_claim_templates.is_some())
        },
    )
    .await;
    let claim = &new.spec.volume_claim_templates.unwrap()[0];
    let size = &claim
        .spec
        .as_ref()
        .unwrap()
        .resources
        .as_ref()
        .unwrap()
        .requests
        .as_ref()
        .unwrap()["storage"];
    assert_eq!(size.0, "1Gi");
}

#[tokio::test]
async fn a_second_instance_whose_host_mappings_overlap_the_first_is_refused() {
    let setup = Setup::new("op-conflict").await;
    let prefix = format!("h-{}", setup.namespace);
    setup
        .create(
            "first",
            json!({"sync": {"toHost": {"namespaces": {
                "enabled": true,
                "mappings": {"byName": {"team-*": format!("{prefix}-*")}},
            }}}}),
        )
        .await;
    setup
        .wait_vc("first", "provisioned", |vc| {
            condition(vc, "ConfigValid").is_some_and(|c| c.status == "True")
        })
        .await;
    setup
        .create(
            "second",
            json!({"sync": {"toHost": {"namespaces": {
                "enabled": true,
                "mappings": {"byName": {"billing": format!("{prefix}-billing")}},
            }}}}),
        )
        .await;
    let vc = setup
        .wait_vc("second", "ConfigValid=False", |vc| {
            condition(vc, "ConfigValid").is_some_and(|c| c.status == "False")
        })
        .await;
    let refused = condition(&vc, "ConfigValid").unwrap();
    assert_eq!(refused.reason, "MappingConflict");
    assert!(
        refused
            .message
            .contains(&format!("VirtualCluster {}/first", setup.namespace)),
        "{}",
        refused.message
    );
    // Nothing of the refused instance is provisioned; the first one is untouched.
    let id = InstanceRef {
        name: "second".into(),
        namespace: setup.namespace.clone(),
        uid: String::new(),
    };
    assert!(
        setup
            .api::<StatefulSet>()
            .get_opt(&id.control_plane())
            .await
            .unwrap()
            .is_none()
    );
    let first = setup.vcs().get("first").await.unwrap();
    assert_eq!(condition(&first, "ConfigValid").unwrap().status, "True");
}

/// With `--namespaces a,b` each namespace has a controller of its own; the conflict check still
/// sees the instances of both.
#[tokio::test]
async fn instances_in_different_watched_namespaces_are_checked_against_each_other() {
    let cluster = shared_cluster().await;
    let client = cluster.client().await;
    crd::install(&client).await.unwrap();
    let a = cluster.namespace("op-watch-a").await;
    let b = cluster.namespace("op-watch-b").await;
    let kubeconfig = operator::identity(cluster, &a).await.unwrap();
    let operator = Operator::start(
        cluster,
        Start {
            namespaces: &[&a, &b],
            kubeconfig: &kubeconfig,
            args: &[],
        },
    )
    .await
    .unwrap();
    let in_namespace = |namespace: &str| Instances {
        client: client.clone(),
        namespace: namespace.to_owned(),
        log: operator.log_path(),
    };
    let (first, second) = (in_namespace(&a), in_namespace(&b));
    let host = format!("h-{a}");
    let mapping = |virtual_ns: &str| {
        json!({"sync": {"toHost": {"namespaces": {
            "enabled": true, "mappings": {"byName": {virtual_ns: host}},
        }}}})
    };
    first.create("first", mapping("x")).await;
    first
        .wait_vc("first", "provisioned", |vc| {
            condition(vc, "ConfigValid").is_some_and(|c| c.status == "True")
        })
        .await;
    second.create("second", mapping("y")).await;
    let vc = second
        .wait_vc("second", "ConfigValid=False", |vc| {
            condition(vc, "ConfigValid").is_some_and(|c| c.status == "False")
        })
        .await;
    let refused = condition(&vc, "ConfigValid").unwrap();
    assert_eq!(refused.reason, "MappingConflict");
    assert!(
        refused
            .message
            .contains(&format!("VirtualCluster {a}/first")),
        "{}",
        refused.message
    );
}
