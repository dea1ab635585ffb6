//! The syncer against two real API servers: the host (the shared local cluster, with simulated
//! nodes) and the virtual cluster the operator rendered, both run by `instance::run_instance`
//! exactly as `tests/local-cluster run-instance` runs them (the syncer with the arguments of its
//! Deployment and the RBAC the operator granted its ServiceAccount).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Event, Namespace, Node, Pod, Secret, Service,
};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;
use virtualcluster_crds::VirtualCluster;
use virtualcluster_crds::instance::InstanceRef;
use virtualcluster_crds::{keys, marks, naming};
use virtualcluster_tests::bench::RequestCounts;
use virtualcluster_tests::cluster::{State, free_loopback_ports};
use virtualcluster_tests::harness::{eventually, eventually_within, wait_gone};
use virtualcluster_tests::instance::{self, Options, syncer};
use virtualcluster_tests::loopback;
use virtualcluster_tests::operator::{self, Operator, Start};
use virtualcluster_tests::process::{self, Lifetime, ProcessRecord};
use virtualcluster_tests::{TestCluster, crd, kubeconfig, shared_cluster};

pub(crate) const FIELD_MANAGER: &str = "virtualcluster-tests";
pub(crate) const LONG: Duration = Duration::from_secs(120);

pub(crate) fn object<K: DeserializeOwned>(value: serde_json::Value) -> K {
    serde_json::from_value(value).expect("a valid object")
}

pub(crate) async fn create<K>(api: &Api<K>, value: serde_json::Value) -> K
where
    K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = object(value);
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|err| panic!("creating {}: {err}", obj.name_any()))
}

/// Creates virtual namespace `name` and waits for its `default` ServiceAccount, which admission
/// looks up for every pod.
pub(crate) async fn create_namespace(virt: &Client, name: &str) {
    create(
        &Api::<Namespace>::all(virt.clone()),
        json!({"metadata": {"name": name}}),
    )
    .await;
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(virt.clone(), name);
    eventually(&format!("the default ServiceAccount of {name}"), || async {
        accounts.get_opt("default").await.unwrap()
    })
    .await;
}

/// A VirtualCluster whose control plane and syncer run locally, as rendered by the operator.
pub(crate) struct Running {
    pub(crate) host: Client,
    pub(crate) virt: Client,
    /// The virtual cluster's admin kubeconfig, for kubectl.
    pub(crate) kubeconfig: PathBuf,
    pub(crate) id: InstanceRef,
    dir: PathBuf,
    pub(crate) operator: Operator,
    /// The operator's kubeconfig (its ServiceAccount's token), to start it again.
    operator_identity: PathBuf,
    operator_args: Vec<String>,
}

/// A second instance in the namespace of a [`Running`] one; stopped when dropped.
pub(crate) struct Neighbour {
    pub(crate) virt: Client,
    pub(crate) id: InstanceRef,
    dir: PathBuf,
}

impl Drop for Neighbour {
    fn drop(&mut self) {
        if let Err(err) = instance::stop_instance(&self.dir, &self.id.namespace, &self.id.name) {
            eprintln!("stopping {}/{}: {err:#}", self.id.namespace, self.id.name);
        }
    }
}

/// Applies VirtualCluster `namespace/name` with `spec`, waits for the operator to render it
/// and runs its control plane and syncer locally; returns its identity and a client of the
/// virtual cluster.
async fn provision(
    cluster: &TestCluster,
    host: &Client,
    namespace: &str,
    name: &str,
    spec: serde_json::Value,
) -> (InstanceRef, Client, PathBuf) {
    let vcs: Api<VirtualCluster> = Api::namespaced(host.clone(), namespace);
    let vc = json!({
        "apiVersion": "virtualcluster.dev/v1alpha1",
        "kind": "VirtualCluster",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    });
    let vc = vcs
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&vc),
        )
        .await
        .unwrap();
    let id = InstanceRef::of(&vc);
    eventually(
        "the operator to render control plane and syncer",
        || async {
            let sets: Api<StatefulSet> = Api::namespaced(host.clone(), namespace);
            let deployments: Api<Deployment> = Api::namespaced(host.clone(), namespace);
            let secrets: Api<Secret> = Api::namespaced(host.clone(), namespace);
            let rendered = sets.get_opt(&id.control_plane()).await.unwrap().is_some()
                && deployments.get_opt(&id.syncer()).await.unwrap().is_some()
                && secrets
                    .get_opt(&id.kubeconfig_secret())
                    .await
                    .unwrap()
                    .is_some();
            rendered.then_some(())
        },
    )
    .await;
    let kubeconfig = instance::run_instance(
        cluster.dir(),
        namespace,
        name,
        Options::with_syncer(Lifetime::TiedToThisProcess),
    )
    .await
    .unwrap_or_else(|err| panic!("running {namespace}/{name}: {err:#}"));
    let virt = kubeconfig::client(&kubeconfig).await.unwrap();
    (id, virt, kubeconfig)
}

impl Drop for Running {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("syncer log:\n{}", self.syncer_log());
        }
        if let Err(err) = instance::stop_instance(&self.dir, &self.id.namespace, &self.id.name) {
            eprintln!("stopping {}/{}: {err:#}", self.id.namespace, self.id.name);
        }
    }
}

impl Running {
    pub(crate) async fn start(
        cluster: &TestCluster,
        prefix: &str,
        name: &str,
        spec: serde_json::Value,
    ) -> Running {
        Self::start_with(cluster, prefix, name, spec, &[]).await
    }

    /// [`Running::start`] with the operator given further flags (the platform's settings).
    pub(crate) async fn start_with(
        cluster: &TestCluster,
        prefix: &str,
        name: &str,
        spec: serde_json::Value,
        operator_args: &[&str],
    ) -> Running {
        Self::start_granted(cluster, prefix, name, |_| spec, operator_args, &[], &[]).await
    }

    /// [`Running::start_with`] with the operator granted the custom resources `to_host` and
    /// `from_host` (`plural.group`), as the chart's `platform.customResources` does; `spec`
    /// is made for the instance's namespace.
    pub(crate) async fn start_granted(
        cluster: &TestCluster,
        prefix: &str,
        name: &str,
        spec: impl FnOnce(&str) -> serde_json::Value,
        operator_args: &[&str],
        to_host: &[String],
        from_host: &[String],
    ) -> Running {
        let host = cluster.client().await;
        crd::install(&host).await.unwrap();
        let namespace = cluster.namespace(prefix).await;
        let identity = operator::identity(cluster, &namespace).await.unwrap();
        if !to_host.is_empty() || !from_host.is_empty() {
            operator::grant_custom_resources(cluster, &namespace, to_host, from_host)
                .await
                .unwrap();
        }
        let operator = Operator::start(
            cluster,
            Start {
                namespaces: &[&namespace],
                kubeconfig: &identity,
                args: operator_args,
            },
        )
        .await
        .unwrap();
        let spec = spec(&namespace);
        let (id, virt, kubeconfig) = provision(cluster, &host, &namespace, name, spec).await;
        Running {
            host,
            virt,
            kubeconfig,
            id,
            dir: cluster.dir().to_owned(),
            operator,
            operator_identity: identity,
            operator_args: operator_args.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    /// Another instance in this one's namespace, reconciled by the same operator.
    pub(crate) async fn another(
        &self,
        cluster: &TestCluster,
        name: &str,
        spec: serde_json::Value,
    ) -> Neighbour {
        let (id, virt, _) = provision(cluster, &self.host, &self.id.namespace, name, spec).await;
        Neighbour {
            virt,
            id,
            dir: self.dir.clone(),
        }
    }

    /// Starts the operator again (after it was killed), with the same identity and namespace.
    pub(crate) async fn restart_operator(&mut self, cluster: &TestCluster) {
        let args: Vec<&str> = self.operator_args.iter().map(String::as_str).collect();
        self.operator = Operator::start(
            cluster,
            Start {
                namespaces: &[&self.id.namespace],
                kubeconfig: &self.operator_identity,
                args: &args,
            },
        )
        .await
        .unwrap();
    }

    /// The test cluster's directory.
    pub(crate) fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    pub(crate) fn host_api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.host.clone(), &self.id.namespace)
    }

    pub(crate) fn virtual_api<K>(&self, namespace: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.virt.clone(), namespace)
    }

    pub(crate) fn host_name(&self, namespace: &str, name: &str) -> String {
        naming::host_name(name, namespace, &self.id.name)
    }

    /// Waits for the host copy of virtual object `namespace/name` in the instance's namespace.
    pub(crate) async fn host_copy<K>(&self, namespace: &str, name: &str) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let host_name = self.host_name(namespace, name);
        let what = format!(
            "the host copy {host_name} of {} {namespace}/{name}",
            K::kind(&())
        );
        eventually(&what, || async {
            self.host_api::<K>().get_opt(&host_name).await.unwrap()
        })
        .await
    }

    /// The syncer's log, for failure messages.
    fn syncer_log(&self) -> String {
        let log = instance::instance_dir(&self.dir, &self.id.namespace, &self.id.name)
            .join("logs")
            .join("syncer.log");
        process::log_tail(&log, 30)
    }

    /// The running syncer's `path` (`/metrics`, `/readyz`): status code and body, at the
    /// address its command line names.
    pub(crate) async fn syncer_http(&self, path: &str) -> (u16, String) {
        let (args, _) = process::command_of(self.syncer_record().pid).unwrap();
        let port = syncer::metrics_port(&args).expect("the syncer's --metrics-addr");
        loopback::http_get(port, path).await.unwrap()
    }

    /// The running syncer's process record.
    pub(crate) fn syncer_record(&self) -> ProcessRecord {
        let suffix = format!("instances/{}/{}/syncer", self.id.namespace, self.id.name);
        State::read(&self.dir)
            .unwrap()
            .expect("cluster state")
            .running()
            .find(|p| p.name == suffix)
            .cloned()
            .expect("a running syncer")
    }
}

/// The syncer stopped, to be started again with the same command line, environment and log.
pub(crate) struct StoppedSyncer {
    args: Vec<String>,
    env: Vec<(String, String)>,
    record: ProcessRecord,
}

pub(crate) fn stop_syncer(running: &Running) -> StoppedSyncer {
    let record = running.syncer_record();
    let (args, env) = process::command_of(record.pid).unwrap();
    assert!(process::stop(&record, Duration::from_secs(10)).unwrap());
    StoppedSyncer { args, env, record }
}

fn start_syncer(running: &Running, stopped: StoppedSyncer) {
    let mut cmd = Command::new(&stopped.args[0]);
    cmd.args(&stopped.args[1..]).env_clear().envs(stopped.env);
    let started = process::spawn(
        &stopped.record.name,
        cmd,
        &stopped.record.log,
        Lifetime::TiedToThisProcess,
    )
    .unwrap();
    let record = started.record.clone();
    // Keep the child's handle alive for the rest of the test; its lifetime is tied to ours.
    std::mem::forget(started);
    State::update(&running.dir, |state| {
        state.processes.retain(|p| p.name != record.name);
        state.processes.push(record);
        Ok(())
    })
    .unwrap();
}

async fn list<K>(api: &Api<K>, selector: &str) -> Vec<K>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
}

pub(crate) fn running_with_ip(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    (status.phase.as_deref() == Some("Running")).then(|| status.pod_ip.clone())?
}

/// Creates in virtual namespace `namespace` a Deployment `web` of `replicas` pods that use a
/// ConfigMap and a Secret, a Service `web` in front of them, and a ConfigMap nobody uses.
async fn deploy_web(running: &Running, namespace: &str, replicas: i32) {
    create_namespace(&running.virt, namespace).await;
    create(
        &running.virtual_api::<ConfigMap>(namespace),
        json!({"metadata": {"name": "settings"}, "data": {"greeting": format!("hello from {namespace}")}}),
    )
    .await;
    create(
        &running.virtual_api::<ConfigMap>(namespace),
        json!({"metadata": {"name": "unused"}, "data": {"k": "v"}}),
    )
    .await;
    create(
        &running.virtual_api::<Secret>(namespace),
        json!({"metadata": {"name": "db"}, "stringData": {"password": "s3cret"}}),
    )
    .await;
    create(
        &running.virtual_api::<Deployment>(namespace),
        json!({
            "metadata": {"name": "web"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{
                        "name": "web", "image": "nginx:1.27",
                        "envFrom": [{"configMapRef": {"name": "settings"}}],
                        "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]
                    }]}
                }
            }
        }),
    )
    .await;
    create(
        &running.virtual_api::<Service>(namespace),
        json!({"metadata": {"name": "web"},
               "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
    )
    .await;
}

/// The running virtual pods of `web` in `namespace` and the IPs of their host copies, once
/// there are `count` of them, each Running on both sides with the same IP.
async fn web_pods(running: &Running, namespace: &str, count: usize) -> BTreeMap<String, String> {
    eventually_within(
        &format!("{count} pods of {namespace}/web running on both sides"),
        LONG,
        || async {
            let pods = list(&running.virtual_api::<Pod>(namespace), "app=web").await;
            let pods: Vec<_> = pods
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            if pods.len() != count {
                return None;
            }
            let mut ips = BTreeMap::new();
            for pod in pods {
                let ip = running_with_ip(&pod)?;
                let host = running
                    .host_api::<Pod>()
                    .get_opt(&running.host_name(namespace, &pod.name_any()))
                    .await
                    .unwrap()?;
                if running_with_ip(&host)? != ip {
                    return None;
                }
                ips.insert(pod.name_any(), ip);
            }
            Some(ips)
        },
    )
    .await
}

#[tokio::test]
async fn workloads_created_in_the_virtual_cluster_run_on_the_host() {
    let cluster = shared_cluster().await;
    let running = Running::start(cluster, "syncer", "vc", json!({})).await;
    let id = &running.id;
    let host_selector = marks::copies_selector(id);

    deploy_web(&running, "shop", 2).await;
    deploy_web(&running, "blog", 2).await;
    let shop = web_pods(&running, "shop", 2).await;
    let blog = web_pods(&running, "blog", 2).await;

    // Pods resolve names through the virtual cluster's DNS and reach its API server.
    let dns = running
        .host_api::<Service>()
        .get(&running.host_name("kube-system", "kube-dns"))
        .await
        .unwrap();
    let dns_ip = dns.spec.unwrap().cluster_ip.unwrap();
    eventually(
        "the virtual kube-dns Service to carry its host copy's address",
        || async {
            let service = Api::<Service>::namespaced(running.virt.clone(), "kube-system")
                .get("kube-dns")
                .await
                .unwrap();
            (service.spec?.cluster_ip.as_deref() == Some(dns_ip.as_str())).then_some(())
        },
    )
    .await;
    let api_server_ip = running
        .host_api::<Service>()
        .get(&id.api_server_service())
        .await
        .unwrap()
        .spec
        .unwrap()
        .cluster_ip
        .unwrap();
    eventually(
        "the virtual `kubernetes` Service to carry the API server's address",
        || async {
            let service = Api::<Service>::namespaced(running.virt.clone(), "default")
                .get("kubernetes")
                .await
                .unwrap();
            (service.spec?.cluster_ip.as_deref() == Some(api_server_ip.as_str())).then_some(())
        },
    )
    .await;

    // The syncer says it is ready (run-instance waited for that) and what it has done.
    assert_eq!(running.syncer_http("/readyz").await.0, 200);
    let (code, metrics) = running.syncer_http("/metrics").await;
    assert_eq!(code, 200);
    let count = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
    };
    // At least the four web pods, each copied, bound and given its status.
    assert!(
        count("virtualcluster_syncer_reconciles_total{queue=\"pods\"}") >= 4.0,
        "{metrics}"
    );
    assert!(
        count("virtualcluster_syncer_reconcile_duration_seconds_count{queue=\"services\"}") >= 1.0,
        "{metrics}"
    );
    count("virtualcluster_syncer_queue_depth{queue=\"pods\"}");

    // Host copies carry the instance's marks and the virtual object's name, namespace and UID.
    let virtual_pod = running
        .virtual_api::<Pod>("shop")
        .get(shop.keys().next().unwrap())
        .await
        .unwrap();
    let host_pod = running
        .host_api::<Pod>()
        .get(&running.host_name("shop", &virtual_pod.name_any()))
        .await
        .unwrap();
    assert!(
        marks::is_copy_of(id, host_pod.labels()),
        "{:?}",
        host_pod.labels()
    );
    assert_eq!(
        marks::virtual_ref(host_pod.annotations()).unwrap().uid,
        virtual_pod.uid().unwrap()
    );
    // Bound to a virtual node mirroring the host node it runs on.
    let node_name = virtual_pod
        .spec
        .as_ref()
        .unwrap()
        .node_name
        .clone()
        .unwrap();
    assert_eq!(
        host_pod.spec.as_ref().unwrap().node_name.as_deref(),
        Some(node_name.as_str())
    );
    let node = Api::<Node>::all(running.virt.clone())
        .get(&node_name)
        .await
        .unwrap();
    let ready = node.status.unwrap().conditions.unwrap();
    assert!(
        ready
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        "{ready:?}"
    );

    // Services route to the pods of their own virtual namespace only.
    let host_service = running
        .host_api::<Service>()
        .get(&running.host_name("shop", "web"))
        .await
        .unwrap();
    let selector = host_service
        .spec
        .as_ref()
        .unwrap()
        .selector
        .clone()
        .unwrap();
    assert_eq!(selector["app"], "web");
    assert_eq!(selector[keys::OBJECT_NAMESPACE_LABEL], "shop");
    let shop_ips: BTreeSet<String> = shop.values().cloned().collect();
    let blog_ips: BTreeSet<String> = blog.values().cloned().collect();
    assert!(shop_ips.is_disjoint(&blog_ips));
    let endpoint_ips = |e: Endpoints| -> BTreeSet<String> {
        e.subsets
            .into_iter()
            .flatten()
            .flat_map(|s| s.addresses.into_iter().flatten())
            .map(|a| a.ip)
            .collect()
    };
    eventually(
        "the host Service to route to the shop pods only",
        || async {
            let endpoints = running
                .host_api::<Endpoints>()
                .get_opt(&running.host_name("shop", "web"))
                .await
                .unwrap()?;
            (endpoint_ips(endpoints) == shop_ips).then_some(())
        },
    )
    .await;
    eventually(
        "the virtual Service to carry its host copy's address",
        || async {
            let service = running
                .virtual_api::<Service>("shop")
                .get("web")
                .await
                .unwrap();
            (service.spec?.cluster_ip == host_service.spec.as_ref()?.cluster_ip).then_some(())
        },
    )
    .await;
    eventually("the virtual Endpoints to list the shop pods", || async {
        let endpoints = running
            .virtual_api::<Endpoints>("shop")
            .get_opt("web")
            .await
            .unwrap()?;
        (endpoint_ips(endpoints) == shop_ips).then_some(())
    })
    .await;

    // ConfigMaps and Secrets follow the pods that use them; others stay in the virtual cluster.
    let settings = running
        .host_api::<ConfigMap>()
        .get(&running.host_name("shop", "settings"))
        .await
        .unwrap();
    assert_eq!(settings.data.unwrap()["greeting"], "hello from shop");
    let secret = running
        .host_api::<Secret>()
        .get(&running.host_name("blog", "db"))
        .await
        .unwrap();
    assert_eq!(secret.data.unwrap()["password"].0, b"s3cret");
    assert!(
        running
            .host_api::<ConfigMap>()
            .get_opt(&running.host_name("shop", "unused"))
            .await
            .unwrap()
            .is_none()
    );

    // Host Events about copies show in the virtual cluster, about the virtual objects.
    let pod_name = virtual_pod.name_any();
    eventually(
        "the host's scheduling Event in the virtual cluster",
        || async {
            let events = running
                .virtual_api::<Event>("shop")
                .list(&ListParams::default())
                .await
                .unwrap();
            events
                .items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("Scheduled")
                        && e.involved_object.name.as_deref() == Some(pod_name.as_str())
                        && e.message
                            .as_deref()
                            .is_some_and(|m| m.contains(&format!("shop/{pod_name}")))
                })
                .then_some(())
        },
    )
    .await;

    // A host object that is not the instance's copy is never touched.
    let clash = running.host_name("shop", "clash");
    create(
        &running.host_api::<ConfigMap>(),
        json!({"metadata": {"name": clash}, "data": {"owner": "host"}}),
    )
    .await;
    create(
        &running.virtual_api::<ConfigMap>("shop"),
        json!({"metadata": {"name": "clash"}, "data": {"owner": "virtual"}}),
    )
    .await;
    create(
        &running.virtual_api::<Pod>("shop"),
        json!({"metadata": {"name": "uses-clash"},
               "spec": {"containers": [{"name": "c", "image": "busybox",
                        "envFrom": [{"configMapRef": {"name": "clash"}}]}]}}),
    )
    .await;
    eventually("an Event telling of the name clash", || async {
        let events = running
            .virtual_api::<Event>("shop")
            .list(&ListParams::default())
            .await
            .unwrap();
        events
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("HostNameConflict")
                    && e.involved_object.name.as_deref() == Some("clash")
            })
            .then_some(())
    })
    .await;
    let foreign = running.host_api::<ConfigMap>().get(&clash).await.unwrap();
    assert_eq!(foreign.data.as_ref().unwrap()["owner"], "host");
    assert!(!marks::is_copy_of(id, foreign.labels()));

    // A host copy edited by hand is put back.
    let copy_name = running.host_name("shop", "settings");
    running
        .host_api::<ConfigMap>()
        .patch(
            &copy_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"greeting": "edited on the host"}})),
        )
        .await
        .unwrap();
    eventually("the edited copy to be put back", || async {
        let cm = running
            .host_api::<ConfigMap>()
            .get(&copy_name)
            .await
            .unwrap();
        (cm.data?["greeting"] == "hello from shop").then_some(())
    })
    .await;

    // Deleting in the virtual cluster deletes the copies.
    running
        .virtual_api::<Deployment>("blog")
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    running
        .virtual_api::<Service>("blog")
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually_within("the blog pods' copies to go", LONG, || async {
        let pods = list(
            &running.host_api::<Pod>(),
            &format!("{host_selector},{}=blog", keys::OBJECT_NAMESPACE_LABEL),
        )
        .await;
        pods.is_empty().then_some(())
    })
    .await;
    wait_gone(
        "the blog Service's copy",
        &running.host_api::<Service>(),
        &running.host_name("blog", "web"),
    )
    .await;

    // A host pod deleted by hand deletes its virtual pod, and its Deployment replaces it.
    let (lost, _) = shop.iter().next().unwrap();
    running
        .host_api::<Pod>()
        .delete(&running.host_name("shop", lost), &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(
        "the virtual pod whose host pod was deleted",
        &running.virtual_api::<Pod>("shop"),
        lost,
    )
    .await;
    let replaced = web_pods(&running, "shop", 2).await;
    assert!(!replaced.contains_key(lost), "{replaced:?}");

    // Stopped, changed on both sides, started again: converged.
    running
        .virtual_api::<Service>("shop")
        .patch(
            "old",
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "old"},
                                 "spec": {"selector": {"app": "old"}, "ports": [{"port": 81}]}}),
            ),
        )
        .await
        .unwrap();
    let old_copy = running.host_name("shop", "old");
    running.host_copy::<Service>("shop", "old").await;
    let stopped = stop_syncer(&running);
    running
        .virtual_api::<Service>("shop")
        .delete("old", &DeleteParams::default())
        .await
        .unwrap();
    running
        .virtual_api::<Deployment>("shop")
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    running
        .host_api::<ConfigMap>()
        .delete(&copy_name, &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        running
            .host_api::<Service>()
            .get_opt(&old_copy)
            .await
            .unwrap()
            .is_some(),
        "nothing deletes the copy while the syncer is stopped"
    );
    start_syncer(&running, stopped);
    web_pods(&running, "shop", 3).await;
    wait_gone(
        "the copy of the Service deleted while the syncer was stopped",
        &running.host_api::<Service>(),
        &old_copy,
    )
    .await;
    // The copy deleted on the host while the syncer was stopped is made again.
    running.host_copy::<ConfigMap>("shop", "settings").await;

    // A restart with nothing to change applies nothing to the virtual cluster: each mirrored
    // Event names the host Event and version it shows, and the restarted syncer reads that
    // back; the CoreDNS objects are read and found as desired.
    let mirrored = running
        .virtual_api::<Event>("shop")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        mirrored.items.iter().any(|e| e
            .annotations()
            .contains_key("virtualcluster.dev/mirrors-event")),
        "mirrored Events carry their mark: {:?}",
        mirrored
            .items
            .iter()
            .map(|e| e.annotations())
            .collect::<Vec<_>>()
    );
    // Mirrored Events and the virtual cluster's CoreDNS objects are applied (server-side);
    // the syncer's own Events (such as the clash above, told again by the restarted syncer)
    // are created or patched, so they do not count here.
    let applies = || async {
        RequestCounts::read(&running.virt)
            .await
            .unwrap()
            .writes(|k| k.verb == "APPLY")
    };
    // Still until every Event so far is shown.
    let mut before = applies().await;
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = applies().await;
        if now == before {
            break;
        }
        before = now;
    }
    let stopped = stop_syncer(&running);
    start_syncer(&running, stopped);
    // The restarted syncer is at work (a new Service gets its copy) and has had time to go
    // through the host Events it listed.
    create::<Service>(
        &running.virtual_api("shop"),
        json!({"metadata": {"name": "after-restart"},
               "spec": {"ports": [{"port": 80}], "selector": {"app": "none"}}}),
    )
    .await;
    running.host_copy::<Service>("shop", "after-restart").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        applies().await - before,
        0.0,
        "applies to the virtual cluster (Events, CoreDNS) after a restart with nothing new"
    );

    // Deleting the VirtualCluster removes every copy its syncer made, and nothing else. (The
    // syncer runs here as a local process, which the operator's deleting its Deployment does
    // not stop: it is stopped as its pod would be.)
    let _ = stop_syncer(&running);
    Api::<VirtualCluster>::namespaced(running.host.clone(), &id.namespace)
        .delete(&id.name, &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(
        "the VirtualCluster, after its cleanup",
        &Api::<VirtualCluster>::namespaced(running.host.clone(), &id.namespace),
        &id.name,
    )
    .await;
    let mut left: Vec<String> = Vec::new();
    left.extend(
        list(&running.host_api::<Service>(), &host_selector)
            .await
            .iter()
            .map(|o| format!("Service {}", o.name_any())),
    );
    left.extend(
        list(&running.host_api::<ConfigMap>(), &host_selector)
            .await
            .iter()
            .map(|o| format!("ConfigMap {}", o.name_any())),
    );
    left.extend(
        list(&running.host_api::<Secret>(), &host_selector)
            .await
            .iter()
            .map(|o| format!("Secret {}", o.name_any())),
    );
    assert!(left.is_empty(), "copies left after the cleanup: {left:?}");
    eventually("the pod copies to go", || async {
        list(&running.host_api::<Pod>(), &host_selector)
            .await
            .iter()
            .all(|p| p.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await;
    let foreign = running.host_api::<ConfigMap>().get(&clash).await.unwrap();
    assert_eq!(
        foreign.data.as_ref().unwrap()["owner"],
        "host",
        "a foreign object stays"
    );
}

/// Two replicas of the syncer: the second stands by (ready, but it neither watches nor
/// writes) while the first holds the Lease, and takes over when the first dies.
#[tokio::test]
async fn a_standby_syncer_takes_over_when_the_leader_dies() {
    let cluster = shared_cluster().await;
    let running = Running::start(cluster, "syncer-ha", "vc", json!({})).await;
    let leader = running.syncer_record();

    // The standby: the same command line and environment, as a second pod of the Deployment
    // would have, with a name, a metrics port and a kubelet port of its own (a pod has its
    // own address; local processes share one).
    let (args, env) = process::command_of(leader.pid).unwrap();
    let [port, kubelet_port] = free_loopback_ports(2).unwrap()[..] else {
        unreachable!()
    };
    let metrics_flag = format!("{}=", syncer::METRICS_ADDR_FLAG);
    let kubelet_flag = format!("{}=", virtualcluster_crds::kubelet::flag::LISTEN);
    let args: Vec<String> = args
        .into_iter()
        .map(|arg| {
            if arg.starts_with(&metrics_flag) {
                format!("{metrics_flag}127.0.0.1:{port}")
            } else if arg.starts_with(&kubelet_flag) {
                format!("{kubelet_flag}127.0.0.1:{kubelet_port}")
            } else {
                arg
            }
        })
        .collect();
    let mut cmd = Command::new(&args[0]);
    cmd.args(&args[1..])
        .env_clear()
        .envs(env.into_iter().filter(|(k, _)| k != "POD_NAME"))
        .env("POD_NAME", "vc-syncer-standby");
    let log = leader.log.with_file_name("syncer-standby.log");
    let mut standby = process::spawn(
        &format!("{}-standby", leader.name),
        cmd,
        &log,
        Lifetime::TiedToThisProcess,
    )
    .unwrap();
    // Stopped with the instance, should the test fail.
    State::update(&running.dir, |state| {
        state.processes.push(standby.record.clone());
        Ok(())
    })
    .unwrap();
    let standby_log = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually("the standby to be ready", || async {
        let (code, _) = loopback::http_get(port, "/readyz").await.ok()?;
        (code == 200).then_some(())
    })
    .await;
    // Ready, but not at work: no queue exists before it leads.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, metrics) = loopback::http_get(port, "/metrics").await.unwrap();
    assert!(
        !metrics.contains("virtualcluster_syncer_reconciles_total{"),
        "the standby reconciled:\n{metrics}"
    );
    assert!(!standby_log().contains("caches ready"), "{}", standby_log());

    // The leader dies without handing the Lease back; the standby takes it once it expires.
    assert_eq!(unsafe { libc::kill(leader.pid as i32, libc::SIGKILL) }, 0);
    create_namespace(&running.virt, "after").await;
    create::<Pod>(
        &running.virtual_api("after"),
        json!({"metadata": {"name": "web"},
               "spec": {"containers": [{"name": "web", "image": "nginx"}]}}),
    )
    .await;
    eventually_within(
        "the standby to take over and copy the pod",
        LONG,
        || async {
            running
                .host_api::<Pod>()
                .get_opt(&running.host_name("after", "web"))
                .await
                .unwrap()
        },
    )
    .await;
    assert!(standby_log().contains("caches ready"), "{}", standby_log());
    let (_, metrics) = loopback::http_get(port, "/metrics").await.unwrap();
    assert!(
        metrics.contains("virtualcluster_syncer_reconciles_total{queue=\"pods\"}"),
        "{metrics}"
    );
    let _ = standby.child.kill();
    let _ = standby.child.wait();
}

#[tokio::test]
async fn kinds_turned_on_are_synced_and_narrowed_to_the_instance() {
    let cluster = shared_cluster().await;
    let spec = json!({"sync": {
        "toHost": {
            "ingresses": {"enabled": true},
            "serviceAccounts": {"enabled": true},
            "networkPolicies": {"enabled": true},
            "podDisruptionBudgets": {"enabled": true},
            "priorityClasses": {"enabled": true},
            "pods": {"enforceTolerations": ["dedicated=tenants:NoSchedule"]}
        },
        "fromHost": {"storageClasses": {"enabled": true}}
    }});
    // The platform lets synced PriorityClasses keep values up to 1000 (0 by default).
    let running = Running::start_with(
        cluster,
        "syncer-opt-in",
        "vc",
        spec,
        &["--max-priority=1000"],
    )
    .await;
    let id = &running.id;
    let ns = "shop";
    let namespaces: Api<Namespace> = Api::all(running.virt.clone());
    create(
        &namespaces,
        json!({"metadata": {"name": ns, "labels": {"team": "blue"}}}),
    )
    .await;
    create(
        &running.virtual_api::<k8s_openapi::api::core::v1::ServiceAccount>(ns),
        json!({"metadata": {"name": "builder"}}),
    )
    .await;
    create(
        &Api::<k8s_openapi::api::scheduling::v1::PriorityClass>::all(running.virt.clone()),
        json!({"metadata": {"name": "tenant-high"}, "value": 1000, "globalDefault": true}),
    )
    .await;
    create(
        &running.virtual_api::<Secret>(ns),
        json!({"metadata": {"name": "shop-tls"}, "type": "kubernetes.io/tls",
               "stringData": {"tls.crt": "c", "tls.key": "k"}}),
    )
    .await;
    create(
        &running.virtual_api::<k8s_openapi::api::networking::v1::Ingress>(ns),
        json!({"metadata": {"name": "shop"},
               "spec": {"tls": [{"secretName": "shop-tls"}],
                        "rules": [{"http": {"paths": [{"path": "/", "pathType": "Prefix",
                            "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}),
    )
    .await;
    create(
        &running.virtual_api::<k8s_openapi::api::networking::v1::NetworkPolicy>(ns),
        json!({"metadata": {"name": "db"},
               "spec": {"podSelector": {"matchLabels": {"app": "db"}},
                        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "blue"}}}]}]}}),
    )
    .await;
    create(
        &running.virtual_api::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(ns),
        json!({"metadata": {"name": "web"},
               "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}}),
    )
    .await;
    create(
        &running.virtual_api::<Pod>(ns),
        json!({"metadata": {"name": "build"},
               "spec": {"serviceAccountName": "builder", "priorityClassName": "tenant-high",
                        "containers": [{"name": "c", "image": "busybox"}]}}),
    )
    .await;

    let copy = |name: &str| running.host_name(ns, name);
    let ingress = running
        .host_copy::<k8s_openapi::api::networking::v1::Ingress>(ns, "shop")
        .await;
    let spec = ingress.spec.unwrap();
    assert_eq!(spec.tls.unwrap()[0].secret_name, Some(copy("shop-tls")));
    assert_eq!(
        spec.rules.unwrap()[0].http.as_ref().unwrap().paths[0]
            .backend
            .service
            .as_ref()
            .unwrap()
            .name,
        copy("web")
    );
    running.host_copy::<Secret>(ns, "shop-tls").await;
    let policy = running
        .host_copy::<k8s_openapi::api::networking::v1::NetworkPolicy>(ns, "db")
        .await;
    let policy = policy.spec.unwrap();
    let selected = policy.pod_selector.unwrap().match_labels.unwrap();
    assert_eq!(selected[keys::SYNCED_BY_UID], id.uid);
    assert_eq!(selected[keys::OBJECT_NAMESPACE_LABEL], ns);
    let peer = &policy.ingress.unwrap()[0].from.clone().unwrap()[0];
    assert_eq!(
        peer.namespace_selector, None,
        "all copies share one host namespace"
    );
    assert_eq!(
        peer.pod_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()[keys::OBJECT_NAMESPACE_LABEL],
        ns,
        "the namespace selector resolved to the virtual namespaces it selects"
    );
    let budget = running
        .host_copy::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(ns, "web")
        .await;
    let selector = budget.spec.unwrap().selector.unwrap().match_labels.unwrap();
    assert_eq!(selector[keys::OBJECT_NAMESPACE_LABEL], ns);
    let class_name = naming::host_name("tenant-high", &id.namespace, &id.name);
    let class = eventually("the PriorityClass copy", || async {
        Api::<k8s_openapi::api::scheduling::v1::PriorityClass>::all(running.host.clone())
            .get_opt(&class_name)
            .await
            .unwrap()
    })
    .await;
    assert_eq!(class.value, Some(1000));
    assert_ne!(class.global_default, Some(true), "never the host's default");

    // The pod runs as the copy of its ServiceAccount, with the copy of its PriorityClass and
    // the tolerations the instance enforces.
    let pod = running.host_copy::<Pod>(ns, "build").await;
    let spec = pod.spec.unwrap();
    assert_eq!(spec.service_account_name, Some(copy("builder")));
    assert_eq!(spec.priority_class_name, Some(class_name.clone()));
    assert!(
        spec.tolerations
            .unwrap()
            .iter()
            .any(|t| t.key.as_deref() == Some("dedicated")
                && t.value.as_deref() == Some("tenants")
                && t.effect.as_deref() == Some("NoSchedule")),
    );
    running
        .host_copy::<k8s_openapi::api::core::v1::ServiceAccount>(ns, "builder")
        .await;

    // Host StorageClasses show in the virtual cluster.
    let storage_class = unique_storage_class();
    create(
        &Api::<k8s_openapi::api::storage::v1::StorageClass>::all(running.host.clone()),
        json!({"metadata": {"name": storage_class}, "provisioner": "example.com/none"}),
    )
    .await;
    eventually("the host StorageClass in the virtual cluster", || async {
        Api::<k8s_openapi::api::storage::v1::StorageClass>::all(running.virt.clone())
            .get_opt(&storage_class)
            .await
            .unwrap()
    })
    .await;
    Api::<k8s_openapi::api::storage::v1::StorageClass>::all(running.host.clone())
        .delete(&storage_class, &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(
        "the virtual copy of the deleted StorageClass",
        &Api::<k8s_openapi::api::storage::v1::StorageClass>::all(running.virt.clone()),
        &storage_class,
    )
    .await;

    // Deleting the virtual PriorityClass deletes its copy.
    Api::<k8s_openapi::api::scheduling::v1::PriorityClass>::all(running.virt.clone())
        .delete("tenant-high", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(
        "the PriorityClass copy",
        &Api::<k8s_openapi::api::scheduling::v1::PriorityClass>::all(running.host.clone()),
        &class_name,
    )
    .await;
}

fn unique_storage_class() -> String {
    virtualcluster_tests::harness::unique_name("syncer-class")
}

/// The documented mapping example: mapped namespaces get host namespaces of their own and keep
/// names there, unmapped ones use the instance's namespace with renamed objects; a host
/// namespace that existed is imported, not created; deleting the instance deletes what it
/// created and leaves what it imported, without its marks.
#[tokio::test]
async fn namespace_syncing_places_pods_by_mapping_and_cleans_up_selectively() {
    let cluster = shared_cluster().await;
    let spec = json!({"sync": {"toHost": {"namespaces": {
        "enabled": true,
        "mappings": {"byName": {
            "frontend-prod": "customer-project-alpha-prod",
            "team-a-*": "h-team-a-*",
            "datasets-*": "${name}-data-*"
        }}
    }}}});
    // A host namespace that matches a mapping, made on the host before the virtual one.
    let hosts: Api<Namespace> = Api::all(cluster.client().await);
    create(&hosts, json!({"metadata": {"name": "h-team-a-existing"}})).await;
    create(
        &Api::<ConfigMap>::namespaced(cluster.client().await, "h-team-a-existing"),
        json!({"metadata": {"name": "host-own"}, "data": {"k": "v"}}),
    )
    .await;

    let running = Running::start(cluster, "ns-sync", "mapping-demo", spec).await;
    let id = &running.id;
    for ns in ["team-a-ns1", "frontend-prod", "some-other-namespace"] {
        create_namespace(&running.virt, ns).await;
    }
    // The existing host namespace is imported: it appears in the virtual cluster by itself.
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(running.virt.clone(), "team-a-existing");
    eventually(
        "team-a-existing imported, with its ServiceAccount",
        || async { accounts.get_opt("default").await.unwrap() },
    )
    .await;
    for (ns, host) in [
        ("team-a-ns1", "h-team-a-ns1"),
        ("frontend-prod", "customer-project-alpha-prod"),
    ] {
        let created = eventually(&format!("host namespace {host} for {ns}"), || async {
            hosts.get_opt(host).await.unwrap()
        })
        .await;
        assert!(marks::is_copy_of(id, created.labels()));
        assert_eq!(
            created.labels()[keys::NAMESPACE_ORIGIN],
            keys::ORIGIN_CREATED
        );
    }
    eventually("the existing host namespace to be imported", || async {
        let ns = hosts.get("h-team-a-existing").await.unwrap();
        (ns.labels().get(keys::NAMESPACE_ORIGIN).map(String::as_str) == Some(keys::ORIGIN_IMPORTED))
            .then_some(())
    })
    .await;
    assert!(
        hosts
            .get_opt("some-other-namespace")
            .await
            .unwrap()
            .is_none()
    );

    let pod = |name: &str| {
        json!({"metadata": {"name": name},
               "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}})
    };
    create(
        &running.virtual_api::<Pod>("team-a-ns1"),
        pod("nginx-from-team-a"),
    )
    .await;
    create(
        &running.virtual_api::<Pod>("some-other-namespace"),
        pod("nginx-from-other-namespace"),
    )
    .await;
    create(
        &running.virtual_api::<Pod>("team-a-existing"),
        pod("nginx-in-imported"),
    )
    .await;
    let on_host = |ns: &str, name: &str| {
        let api: Api<Pod> = Api::namespaced(running.host.clone(), ns);
        let name = name.to_owned();
        async move {
            eventually_within(&format!("host pod {name} Running"), LONG, || async {
                let pod = api.get_opt(&name).await.unwrap()?;
                running_with_ip(&pod).map(|_| pod)
            })
            .await
        }
    };
    // Mapped: same name in the mapped namespace. Unmapped: renamed into the instance's.
    on_host("h-team-a-ns1", "nginx-from-team-a").await;
    on_host(
        &id.namespace,
        &naming::host_name(
            "nginx-from-other-namespace",
            "some-other-namespace",
            &id.name,
        ),
    )
    .await;
    on_host("h-team-a-existing", "nginx-in-imported").await;
    eventually_within(
        "the mapped pod Running in the virtual cluster",
        LONG,
        || async {
            let pod = running
                .virtual_api::<Pod>("team-a-ns1")
                .get("nginx-from-team-a")
                .await
                .unwrap();
            running_with_ip(&pod)
        },
    )
    .await;

    // Delete the instance (its syncer stopped as its pod would be).
    let _ = stop_syncer(&running);
    Api::<VirtualCluster>::namespaced(running.host.clone(), &id.namespace)
        .delete(&id.name, &DeleteParams::default())
        .await
        .unwrap();
    eventually_within("the VirtualCluster, after its cleanup", LONG, || async {
        Api::<VirtualCluster>::namespaced(running.host.clone(), &id.namespace)
            .get_opt(&id.name)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    for created in ["h-team-a-ns1", "customer-project-alpha-prod"] {
        assert!(
            hosts.get_opt(created).await.unwrap().is_none(),
            "created namespace {created} is gone when the finalizer is done"
        );
    }
    let imported = hosts.get("h-team-a-existing").await.unwrap();
    assert!(
        !imported
            .labels()
            .keys()
            .any(|k| k.starts_with(keys::RESERVED_PREFIX)),
        "the imported namespace keeps none of the instance's marks: {:?}",
        imported.labels()
    );
    let own: Api<ConfigMap> = Api::namespaced(running.host.clone(), "h-team-a-existing");
    assert_eq!(own.get("host-own").await.unwrap().data.unwrap()["k"], "v");
    eventually("the copy in the imported namespace to go", || async {
        let pods: Api<Pod> = Api::namespaced(running.host.clone(), "h-team-a-existing");
        pods.get_opt("nginx-in-imported")
            .await
            .unwrap()
            .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await;
    hosts
        .delete("h-team-a-existing", &DeleteParams::default())
        .await
        .unwrap();
}

/// The documented `mappingsOnly` example: the virtual API server refuses a namespace no mapping
/// matches, naming it and the allowed names and patterns, and workloads in unmapped namespaces;
/// a mapped namespace gets its `${name}` host namespace.
#[tokio::test]
async fn mappings_only_refuses_unmapped_namespaces_at_the_virtual_api_server() {
    let cluster = shared_cluster().await;
    let spec = json!({"sync": {"toHost": {"namespaces": {
        "enabled": true,
        "mappingsOnly": true,
        "mappings": {"byName": {
            "synced-*": "host-${name}-synced-*",
            "important-configs": "host-configs-critical"
        }}
    }}}});
    let running = Running::start(cluster, "ns-strict", "strict-vc", spec).await;
    let namespaces: Api<Namespace> = Api::all(running.virt.clone());
    let refused = eventually("the namespace to be refused", || async {
        let ns: Namespace = object(json!({"metadata": {"name": "not-mapped"}}));
        match namespaces.create(&PostParams::default(), &ns).await {
            Err(kube::Error::Api(status)) if status.code == 403 || status.code == 422 => {
                Some(status)
            }
            Ok(_) => {
                // The policy was not in force yet; try again with it.
                namespaces
                    .delete("not-mapped", &DeleteParams::default())
                    .await
                    .unwrap();
                wait_gone("not-mapped", &namespaces, "not-mapped").await;
                None
            }
            Err(err) => panic!("creating namespace not-mapped: {err}"),
        }
    })
    .await;
    assert!(
        refused.message.contains("namespace not-mapped"),
        "{}",
        refused.message
    );
    assert!(
        refused.message.contains("synced-*, important-configs")
            || refused.message.contains("important-configs, synced-*"),
        "{}",
        refused.message
    );
    // Workloads in an unmapped namespace that exists (default) are refused too (once the
    // namespace's ServiceAccount exists, which admission looks up first).
    let accounts = running.virtual_api::<k8s_openapi::api::core::v1::ServiceAccount>("default");
    eventually("the default ServiceAccount", || async {
        accounts.get_opt("default").await.unwrap()
    })
    .await;
    let err = running
        .virtual_api::<Pod>("default")
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": "p"},
                           "spec": {"containers": [{"name": "c", "image": "busybox"}]}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.message.contains("namespace default matches no namespace mapping")),
        "{err}"
    );
    // A mapped namespace is created, and gets its host namespace.
    create(&namespaces, json!({"metadata": {"name": "synced-data"}})).await;
    let hosts: Api<Namespace> = Api::all(running.host.clone());
    let host = eventually("host namespace host-strict-vc-synced-data", || async {
        hosts.get_opt("host-strict-vc-synced-data").await.unwrap()
    })
    .await;
    assert!(marks::is_copy_of(&running.id, host.labels()));
    // Cleaned up with the instance.
    let _ = stop_syncer(&running);
    Api::<VirtualCluster>::namespaced(running.host.clone(), &running.id.namespace)
        .delete(&running.id.name, &DeleteParams::default())
        .await
        .unwrap();
    eventually_within("the created host namespace to go", LONG, || async {
        hosts
            .get_opt("host-strict-vc-synced-data")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
}
