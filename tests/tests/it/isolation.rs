//! Tenant isolation end to end: a hostile tenant (cluster-admin of its virtual cluster) and a
//! VirtualCluster's author try what would reach further on the host than the platform allows,
//! against the real virtual and host API servers, the syncer as rendered with its deployed
//! identity, and the operator under its ServiceAccount. Each refusal is checked, and beside it
//! the ordinary case that still syncs.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, LimitRange, Namespace, Node, Pod, ResourceQuota, Secret, Service,
};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use virtualcluster_crds::v1alpha1::PodSecurityStandard;
use virtualcluster_crds::{VirtualCluster, isolation, keys, marks, naming, pod_security, policy};
use virtualcluster_tests::harness::{eventually, eventually_within, unique_name, wait_gone};
use virtualcluster_tests::pod_samples::sample_pods;
use virtualcluster_tests::shared_cluster;

use crate::syncer::{LONG, Running, create, create_namespace, object};

/// The note of the Warning Event of `reason` the syncer published about virtual object
/// `namespace/name`, once there is one.
pub(crate) async fn warned(virt: &Client, namespace: &str, name: &str, reason: &str) -> String {
    let events: Api<Event> = Api::namespaced(virt.clone(), namespace);
    eventually_within(
        &format!("a {reason} Event about {namespace}/{name}"),
        LONG,
        || async {
            events
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                })
                .map(|e| e.note.unwrap_or_default())
        },
    )
    .await
}

/// Creates pod `name` in virtual namespace `namespace` with `spec`, returning the API server's
/// refusal if it refuses.
async fn try_pod(
    virt: &Client,
    namespace: &str,
    name: &str,
    spec: serde_json::Value,
) -> Result<Pod, String> {
    let pod: Pod = object(json!({"metadata": {"name": name}, "spec": spec}));
    Api::<Pod>::namespaced(virt.clone(), namespace)
        .create(&PostParams::default(), &pod)
        .await
        .map_err(|err| err.to_string())
}

fn container(extra: serde_json::Value) -> serde_json::Value {
    let mut c = json!({"name": "c", "image": "registry.k8s.io/pause:3.10"});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

/// Waits until the syncer has said why virtual pod `namespace/name` has no host pod, and
/// checks it has none and shows the reason in its status.
pub(crate) async fn refused(
    running: &Running,
    namespace: &str,
    name: &str,
    reason: &str,
) -> String {
    let note = warned(&running.virt, namespace, name, reason).await;
    let host_name = running.host_name(namespace, name);
    assert!(
        running
            .host_api::<Pod>()
            .get_opt(&host_name)
            .await
            .unwrap()
            .is_none(),
        "pod {namespace}/{name} was refused ({note}) but runs on the host"
    );
    let pods = running.virtual_api::<Pod>(namespace);
    eventually(&format!("{namespace}/{name} to show {reason}"), || async {
        let pod = pods.get(name).await.unwrap();
        pod.status?
            .conditions?
            .into_iter()
            .any(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some(reason)
            })
            .then_some(())
    })
    .await;
    note
}

#[tokio::test]
async fn a_hostile_tenant_reaches_nothing_on_the_host_and_ordinary_workloads_still_sync() {
    let cluster = shared_cluster().await;
    let running = Running::start(cluster, "isolation", "vc", json!({})).await;
    let virt = &running.virt;
    create_namespace(virt, "shop").await;

    // The ordinary case: a pod with a ConfigMap volume runs on the host, its reference renamed.
    create(
        &running.virtual_api::<ConfigMap>("shop"),
        json!({"metadata": {"name": "settings"}, "data": {"k": "v"}}),
    )
    .await;
    try_pod(virt, "shop", "plain", json!({
        "containers": [container(json!({"volumeMounts": [{"name": "conf", "mountPath": "/conf"}]}))],
        "volumes": [{"name": "conf", "configMap": {"name": "settings"}}]
    }))
    .await
    .unwrap();
    let plain: Pod = running.host_copy("shop", "plain").await;
    let volumes = plain.spec.unwrap().volumes.unwrap();
    let conf = volumes.iter().find(|v| v.name == "conf").unwrap();
    assert_eq!(
        conf.config_map.as_ref().unwrap().name,
        running.host_name("shop", "settings")
    );

    // The virtual API server refuses what breaks the level (baseline) with its own errors.
    let err = try_pod(
        virt,
        "shop",
        "privileged",
        json!({
            "containers": [container(json!({"securityContext": {"privileged": true}}))]
        }),
    )
    .await
    .unwrap_err();
    assert!(err.contains("privileged"), "{err}");
    let err = try_pod(
        virt,
        "shop",
        "root-fs",
        json!({
            "containers": [container(json!({}))],
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}]
        }),
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("violates PodSecurity \"baseline:latest\""),
        "{err}"
    );
    assert!(err.contains("hostPath"), "{err}");

    // A tenant may label its namespace less strictly; the virtual API server then admits such
    // pods, and the syncer refuses them.
    create(
        &Api::<Namespace>::all(virt.clone()),
        json!({"metadata": {"name": "loose", "labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}),
    )
    .await;
    eventually("the default ServiceAccount of loose", || async {
        Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(virt.clone(), "loose")
            .get_opt("default")
            .await
            .unwrap()
    })
    .await;
    let hostile = [
        (
            "root-fs",
            json!({"containers": [container(json!({}))], "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}),
            "hostPath",
        ),
        (
            "host-network",
            json!({"hostNetwork": true, "containers": [container(json!({}))]}),
            "hostNetwork",
        ),
        (
            "host-pid",
            json!({"hostPID": true, "hostIPC": true, "containers": [container(json!({}))]}),
            "hostPID",
        ),
        (
            "sys-admin",
            json!({"containers": [container(json!({"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}))]}),
            "SYS_ADMIN",
        ),
        (
            "host-port",
            json!({"containers": [container(json!({"ports": [{"containerPort": 80, "hostPort": 80}]}))]}),
            "hostPort",
        ),
    ];
    for (name, spec, _) in &hostile {
        try_pod(virt, "loose", name, spec.clone()).await.unwrap();
    }
    for (name, _, field) in &hostile {
        let note = refused(&running, "loose", name, "PodSecurityViolation").await;
        assert!(note.contains("baseline"), "{name}: {note}");
        assert!(note.contains(field), "{name}: {note} does not name {field}");
    }

    // Placement: no host node named, no taint opened, no critical priority.
    try_pod(
        virt,
        "shop",
        "placed",
        json!({
            "nodeName": "not-a-node",
            "priorityClassName": "system-node-critical",
            "tolerations": [{"operator": "Exists"}],
            "containers": [container(json!({}))]
        }),
    )
    .await
    .unwrap();
    let placed: Pod = running.host_copy("shop", "placed").await;
    let spec = placed.spec.unwrap();
    assert_ne!(spec.node_name.as_deref(), Some("not-a-node"));
    assert_eq!(spec.priority_class_name, None);
    for t in spec.tolerations.iter().flatten() {
        let key = t.key.as_deref().unwrap_or_default();
        assert!(key.starts_with("node.kubernetes.io/"), "{t:?}");
        assert_eq!(t.effect.as_deref(), Some("NoExecute"), "{t:?}");
    }

    // References: a Secret whose host name someone else's object holds is never mounted.
    let foreign_name = running.host_name("shop", "creds");
    let foreign = create(
        &running.host_api::<Secret>(),
        json!({"metadata": {"name": foreign_name}, "stringData": {"token": "not-yours"}}),
    )
    .await;
    create(
        &running.virtual_api::<Secret>("shop"),
        json!({"metadata": {"name": "creds"}, "stringData": {"token": "mine"}}),
    )
    .await;
    try_pod(virt, "shop", "thief", json!({
        "containers": [container(json!({}))],
        "volumes": [{"name": "v", "csi": {"driver": "secrets.example.com", "nodePublishSecretRef": {"name": "creds"}}}]
    }))
    .await
    .unwrap();
    let note = refused(&running, "shop", "thief", "ReferenceNotAllowed").await;
    assert!(note.contains("csi.nodePublishSecretRef"), "{note}");
    assert!(note.contains(&foreign_name), "{note}");
    warned(virt, "shop", "creds", "HostNameConflict").await;
    let after = running
        .host_api::<Secret>()
        .get(&foreign_name)
        .await
        .unwrap();
    assert_eq!(after.uid(), foreign.uid());
    assert_eq!(
        after.resource_version(),
        foreign.resource_version(),
        "the foreign Secret was changed"
    );

    // Network: external IPs are never copied; Endpoints never point at the host's own.
    create(
        &running.virtual_api::<Service>("shop"),
        json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"},
               "externalIPs": ["203.0.113.10"], "ports": [{"port": 80}]}}),
    )
    .await;
    let web: Service = running.host_copy("shop", "web").await;
    assert_eq!(web.spec.unwrap().external_ips, None);
    warned(virt, "shop", "web", "ExternalIPsNotSynced").await;
    let node = Api::<Node>::all(running.host.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find_map(|n| {
            n.status?
                .addresses?
                .into_iter()
                .find(|a| a.type_ == "InternalIP")
        })
        .map(|a| a.address);
    let node_ip = node.expect("a host node with an address");
    let other_pod_ip = plain_other_ip(&running).await;
    create(
        &running.virtual_api::<Service>("shop"),
        json!({"metadata": {"name": "db"}, "spec": {"ports": [{"port": 5432}]}}),
    )
    .await;
    // Endpoints are written once the virtual Service carries its host address (it is made
    // anew for that, and Endpoints of a deleted Service go with it).
    let db_copy: Service = running.host_copy("shop", "db").await;
    let db_ip = db_copy.spec.unwrap().cluster_ip;
    eventually(
        "the virtual db Service to carry its host address",
        || async {
            let service = running
                .virtual_api::<Service>("shop")
                .get_opt("db")
                .await
                .unwrap()?;
            (service.spec?.cluster_ip == db_ip).then_some(())
        },
    )
    .await;
    create(
        &running.virtual_api::<Endpoints>("shop"),
        json!({"metadata": {"name": "db"}, "subsets": [{
            "addresses": [{"ip": "203.0.113.9"}, {"ip": node_ip}, {"ip": other_pod_ip}],
            "ports": [{"port": 5432}]
        }]}),
    )
    .await;
    let db: Endpoints = running.host_copy("shop", "db").await;
    let kept: Vec<String> = db
        .subsets
        .iter()
        .flatten()
        .flat_map(|s| s.addresses.iter().flatten())
        .map(|a| a.ip.clone())
        .collect();
    assert_eq!(kept, ["203.0.113.9"]);
    let note = warned(virt, "shop", "db", "EndpointsNotAllowed").await;
    assert!(
        note.contains(&node_ip) && note.contains(&other_pod_ip),
        "{note}"
    );
}

/// The address of a pod of the host that is not the instance's (made for the test in a
/// namespace of its own), once it runs.
async fn plain_other_ip(running: &Running) -> String {
    let namespace = unique_name("isolation-neighbour");
    create(
        &Api::<Namespace>::all(running.host.clone()),
        json!({"metadata": {"name": namespace, "labels": {"virtualcluster.dev/test": "true"}}}),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(running.host.clone(), &namespace);
    eventually("the neighbour's default ServiceAccount", || async {
        Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(
            running.host.clone(),
            &namespace,
        )
        .get_opt("default")
        .await
        .unwrap()
    })
    .await;
    create(
        &pods,
        json!({"metadata": {"name": "neighbour"}, "spec": {"containers": [container(json!({}))]}}),
    )
    .await;
    eventually_within("the neighbour pod's address", LONG, || async {
        pods.get("neighbour").await.unwrap().status?.pod_ip
    })
    .await
}

/// The message of VirtualCluster `name`'s `ConfigValid=False` condition of `reason`, once it
/// has one.
pub(crate) async fn invalid(vcs: &Api<VirtualCluster>, name: &str, reason: &str) -> String {
    eventually(
        &format!("VirtualCluster {name} to be refused with {reason}"),
        || async {
            let vc = vcs.get(name).await.unwrap();
            vc.status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "ConfigValid" && c.status == "False" && c.reason == reason)
                .map(|c| c.message)
        },
    )
    .await
}

#[tokio::test]
async fn the_platform_bounds_what_authors_and_tenants_may_ask_for() {
    let cluster = shared_cluster().await;
    let spec = json!({
        "sync": {"toHost": {"ingresses": {"enabled": true}}},
        "policies": {
            "podSecurityStandard": "restricted",
            "resourceQuota": {"enabled": true, "quota": {"count/pods": "7"}},
            "limitRange": {"enabled": true},
            "networkPolicy": {"enabled": true}
        }
    });
    let running = Running::start_with(
        cluster,
        "platform",
        "vc",
        spec,
        &[
            "--allowed-service-types=NodePort",
            "--pod-security-floor=baseline",
        ],
    )
    .await;
    let host = &running.host;
    let id = &running.id;

    // The instance's namespace holds its quota, limits and network policy.
    let name = isolation::name(id);
    // Made once the control plane runs.
    let quotas = running.host_api::<ResourceQuota>();
    let quota = eventually("the instance's quota", || async {
        quotas.get_opt(&name).await.unwrap()
    })
    .await;
    assert_eq!(quota.spec.unwrap().hard.unwrap()["count/pods"].0, "7");
    // The operator's (the syncer may not change quota), owned by the VirtualCluster.
    assert!(id.owns(quota.metadata.labels.as_ref().unwrap()));
    assert!(
        quota
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == id.uid)
    );
    let limits = running.host_api::<LimitRange>().get(&name).await.unwrap();
    assert_eq!(
        limits.spec.unwrap().limits[0]
            .default_request
            .as_ref()
            .unwrap()["cpu"]
            .0,
        "100m"
    );
    let policy = running
        .host_api::<NetworkPolicy>()
        .get(&name)
        .await
        .unwrap();
    let selected = policy
        .spec
        .unwrap()
        .pod_selector
        .unwrap()
        .match_labels
        .unwrap();
    assert_eq!(selected[keys::SYNCED_BY_UID], id.uid);

    // An author may not go below the platform's floor.
    let vcs: Api<VirtualCluster> = Api::namespaced(host.clone(), &id.namespace);
    create(
        &vcs,
        json!({"apiVersion": "virtualcluster.dev/v1alpha1", "kind": "VirtualCluster",
               "metadata": {"name": "loose"}, "spec": {"policies": {"podSecurityStandard": "privileged"}}}),
    )
    .await;
    let message = invalid(&vcs, "loose", "BelowPlatformFloor").await;
    assert!(message.contains("floor, baseline"), "{message}");
    vcs.delete("loose", &DeleteParams::default()).await.unwrap();
    // Nor run a syncer image of their own choosing with the instance's host credentials.
    create(
        &vcs,
        json!({"apiVersion": "virtualcluster.dev/v1alpha1", "kind": "VirtualCluster",
               "metadata": {"name": "own-syncer"}, "spec": {"syncer": {"image": "example.com/my-syncer:v1"}}}),
    )
    .await;
    let message = invalid(&vcs, "own-syncer", "SyncerImageNotAllowed").await;
    assert!(message.contains("example.com/my-syncer:v1"), "{message}");
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(host.clone(), &id.namespace);
    assert!(
        deployments
            .get_opt("own-syncer-syncer")
            .await
            .unwrap()
            .is_none(),
        "nothing rolled"
    );
    vcs.delete("own-syncer", &DeleteParams::default())
        .await
        .unwrap();

    // At the restricted level the virtual API server refuses a plain root pod.
    let virt = &running.virt;
    create_namespace(virt, "shop").await;
    let err = try_pod(
        virt,
        "shop",
        "root",
        json!({"containers": [container(json!({}))]}),
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("violates PodSecurity \"restricted:latest\""),
        "{err}"
    );

    // Service types follow the platform: NodePort yes, LoadBalancer no.
    create(
        &running.virtual_api::<Service>("shop"),
        json!({"metadata": {"name": "open"}, "spec": {"type": "NodePort", "selector": {"app": "a"}, "ports": [{"port": 80}]}}),
    )
    .await;
    let _: Service = running.host_copy("shop", "open").await;
    create(
        &running.virtual_api::<Service>("shop"),
        json!({"metadata": {"name": "exposed"}, "spec": {"type": "LoadBalancer", "selector": {"app": "a"}, "ports": [{"port": 80}]}}),
    )
    .await;
    let note = warned(virt, "shop", "exposed", "ServiceTypeNotAllowed").await;
    assert!(note.contains("LoadBalancer"), "{note}");
    assert!(
        running
            .host_api::<Service>()
            .get_opt(&running.host_name("shop", "exposed"))
            .await
            .unwrap()
            .is_none()
    );

    // Ingresses: host names others serve and snippets stay off the host.
    let other = unique_name("isolation-ingress");
    create(
        &Api::<Namespace>::all(host.clone()),
        json!({"metadata": {"name": other, "labels": {"virtualcluster.dev/test": "true"}}}),
    )
    .await;
    create(
        &Api::<Ingress>::namespaced(host.clone(), &other),
        json!({"metadata": {"name": "bank"}, "spec": {"rules": [{"host": format!("{other}.example.com")}]}}),
    )
    .await;
    let taken = format!("{other}.example.com");
    let backend = json!({"service": {"name": "open", "port": {"number": 80}}});
    create(
        &running.virtual_api::<Ingress>("shop"),
        json!({"metadata": {"name": "web", "annotations": {
                   "nginx.ingress.kubernetes.io/server-snippet": "location / { return 200; }"}},
               "spec": {"rules": [
                   {"host": "free.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}},
                   {"host": taken, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}}
               ]}}),
    )
    .await;
    let copy: Ingress = running.host_copy("shop", "web").await;
    let hosts: Vec<_> = copy
        .spec
        .clone()
        .unwrap()
        .rules
        .unwrap()
        .into_iter()
        .filter_map(|r| r.host)
        .collect();
    assert_eq!(hosts, ["free.example.com"]);
    assert!(!copy.annotations().keys().any(|k| k.ends_with("-snippet")));
    let note = warned(virt, "shop", "web", "HostNameConflict").await;
    assert!(note.contains(&taken) && note.contains("snippet"), "{note}");
    let _ = Api::<Namespace>::all(host.clone())
        .delete(&other, &DeleteParams::default())
        .await;

    // The cleanup removes the quota, limits and network policy with the instance.
    crate::syncer::stop_syncer(&running);
    vcs.delete(&id.name, &DeleteParams::default())
        .await
        .unwrap();
    wait_gone("the VirtualCluster", &vcs, &id.name).await;
    let quota = running
        .host_api::<ResourceQuota>()
        .get_opt(&name)
        .await
        .unwrap();
    let limits = running
        .host_api::<LimitRange>()
        .get_opt(&name)
        .await
        .unwrap();
    let policy = running
        .host_api::<NetworkPolicy>()
        .get_opt(&name)
        .await
        .unwrap();
    for (what, gone) in [
        ("ResourceQuota", quota.is_none()),
        ("LimitRange", limits.is_none()),
        ("NetworkPolicy", policy.is_none()),
    ] {
        assert!(gone, "the instance's {what} outlived it");
    }
}

#[tokio::test]
async fn host_namespaces_an_instance_creates_are_held_to_its_level_and_counted() {
    let cluster = shared_cluster().await;
    let prefix = unique_name("iso");
    let spec = json!({
        "sync": {"toHost": {"namespaces": {"enabled": true, "mappings": {"byName": {"team-*": format!("{prefix}-*")}}}}},
        "policies": {"resourceQuota": {"enabled": true}, "networkPolicy": {"enabled": true}}
    });
    let running =
        Running::start_with(cluster, "created", "vc", spec, &["--max-host-namespaces=1"]).await;
    let hosts: Api<Namespace> = Api::all(running.host.clone());
    create_namespace(&running.virt, "team-a").await;
    let first = format!("{prefix}-a");
    let created = eventually(&format!("host namespace {first}"), || async {
        hosts.get_opt(&first).await.unwrap()
    })
    .await;
    let labels = created.labels();
    for (key, value) in policy::pod_security_labels(PodSecurityStandard::Baseline) {
        assert_eq!(labels.get(&key), Some(&value), "{key}");
    }
    // A hand edit that loosens it is put back.
    hosts
        .patch(
            &first,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}})),
        )
        .await
        .unwrap();
    eventually(&format!("{first} to be held to baseline again"), || async {
        let ns = hosts.get(&first).await.unwrap();
        (ns.labels()
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str)
            == Some("baseline"))
        .then_some(())
    })
    .await;
    let name = isolation::name(&running.id);
    eventually("the quota of the created namespace", || async {
        Api::<ResourceQuota>::namespaced(running.host.clone(), &first)
            .get_opt(&name)
            .await
            .unwrap()
    })
    .await;
    Api::<NetworkPolicy>::namespaced(running.host.clone(), &first)
        .get(&name)
        .await
        .unwrap();
    // The host's admission backs the syncer there: a privileged pod is refused outright.
    let err = Api::<Pod>::namespaced(running.host.clone(), &first)
        .create(
            &PostParams { dry_run: true, ..Default::default() },
            &object(json!({"metadata": {"name": "p"}, "spec": {"hostNetwork": true, "containers": [container(json!({}))]}})),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("violates PodSecurity"), "{err}");

    // One namespace is all the platform allows this instance.
    create_namespace(&running.virt, "team-b").await;
    let note = warned(&running.virt, "default", "team-b", "HostNamespaceLimit").await;
    assert!(note.contains(&format!("{prefix}-b")), "{note}");
    assert!(
        hosts
            .get_opt(&format!("{prefix}-b"))
            .await
            .unwrap()
            .is_none()
    );

    crate::syncer::stop_syncer(&running);
    let vcs: Api<VirtualCluster> = Api::namespaced(running.host.clone(), &running.id.namespace);
    vcs.delete(&running.id.name, &DeleteParams::default())
        .await
        .unwrap();
    wait_gone("the VirtualCluster", &vcs, &running.id.name).await;
    eventually_within(&format!("{first} to go"), LONG, || async {
        hosts
            .get_opt(&first)
            .await
            .unwrap()
            .is_none_or(|ns| ns.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await;
}

/// `b-x-vc` with virtual namespace `n` and `vc` with virtual namespace `n-x-b` give their
/// copies the same host names in one host namespace: neither ever mounts, changes or deletes
/// the other's.
#[tokio::test]
async fn two_instances_whose_names_collide_never_touch_each_others_objects() {
    let cluster = shared_cluster().await;
    let first = Running::start(cluster, "collide", "b-x-vc", json!({})).await;
    let second = first.another(cluster, "vc", json!({})).await;
    assert_eq!(
        naming::host_name("s", "n", "b-x-vc"),
        naming::host_name("s", "n-x-b", "vc"),
        "the names collide"
    );
    let host_name = naming::host_name("s", "n", "b-x-vc");
    let pod_name = naming::host_name("p", "n", "b-x-vc");
    let spec = json!({
        "containers": [container(json!({"envFrom": [{"secretRef": {"name": "s"}}]}))]
    });

    create_namespace(&first.virt, "n").await;
    create(
        &Api::<Secret>::namespaced(first.virt.clone(), "n"),
        json!({"metadata": {"name": "s"}, "stringData": {"who": "first"}}),
    )
    .await;
    try_pod(&first.virt, "n", "p", spec.clone()).await.unwrap();
    let secret: Secret = first.host_copy("n", "s").await;
    let pod: Pod = first.host_copy("n", "p").await;

    create_namespace(&second.virt, "n-x-b").await;
    create(
        &Api::<Secret>::namespaced(second.virt.clone(), "n-x-b"),
        json!({"metadata": {"name": "s"}, "stringData": {"who": "second"}}),
    )
    .await;
    try_pod(&second.virt, "n-x-b", "p", spec).await.unwrap();
    warned(&second.virt, "n-x-b", "s", "HostNameConflict").await;
    // Its pod names objects whose host names the first's copies hold (its Secret, and the
    // CA bundle every pod mounts): it does not run.
    let note = warned(&second.virt, "n-x-b", "p", "ReferenceNotAllowed").await;
    assert!(
        note.contains("-x-n-x-b-x-vc, which an object that is not"),
        "{note}"
    );

    // The second deletes its objects: the first's copies stay as they were.
    Api::<Pod>::namespaced(second.virt.clone(), "n-x-b")
        .delete("p", &DeleteParams::default())
        .await
        .unwrap();
    Api::<Secret>::namespaced(second.virt.clone(), "n-x-b")
        .delete("s", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let secret_after = first.host_api::<Secret>().get(&host_name).await.unwrap();
    assert_eq!(secret_after.uid(), secret.uid());
    assert_eq!(
        secret_after.data, secret.data,
        "the second instance changed the first's Secret"
    );
    assert!(marks::is_copy_of(&first.id, secret_after.labels()));
    let pod_after = first.host_api::<Pod>().get(&pod_name).await.unwrap();
    assert_eq!(
        pod_after.uid(),
        pod.uid(),
        "the first's host pod was replaced"
    );
    assert!(marks::is_copy_of(&first.id, pod_after.labels()));
}

/// The syncer's own check gives the verdict of the real PodSecurity admission for every sample
/// pod, at both levels.
#[tokio::test]
async fn the_pod_security_check_agrees_with_the_api_server() {
    let cluster = shared_cluster().await;
    let host = cluster.client().await;
    let mut namespaces = Vec::new();
    for level in [
        PodSecurityStandard::Baseline,
        PodSecurityStandard::Restricted,
    ] {
        let namespace = cluster.namespace(&format!("pss-{level}")).await;
        let mut labels = serde_json::Map::new();
        labels.insert(
            "pod-security.kubernetes.io/enforce".into(),
            level.as_str().into(),
        );
        labels.insert(
            "pod-security.kubernetes.io/enforce-version".into(),
            "latest".into(),
        );
        Api::<Namespace>::all(host.clone())
            .patch(
                &namespace,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"metadata": {"labels": labels}})),
            )
            .await
            .unwrap();
        namespaces.push((level, namespace));
    }
    let samples = sample_pods();
    assert!(samples.len() >= 300, "{} samples", samples.len());
    let mut cases = Vec::new();
    for (level, namespace) in &namespaces {
        for (name, pod) in &samples {
            cases.push((*level, namespace.clone(), name.clone(), pod.clone()));
        }
    }
    let verdicts: Vec<_> = futures::stream::iter(cases)
        .map(|(level, namespace, name, mut pod)| {
            let api: Api<Pod> = Api::namespaced(host.clone(), &namespace);
            async move {
                pod.metadata.name = Some(name.clone());
                pod.metadata.namespace = None;
                let params = PostParams {
                    dry_run: true,
                    ..Default::default()
                };
                let server = match api.create(&params, &pod).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s))
                        if s.code == 403 && s.message.contains("violates PodSecurity") =>
                    {
                        Err(s.message)
                    }
                    Err(err) => panic!("sample {name} was refused for another reason: {err}"),
                };
                let ours = pod_security::check(level, &pod);
                (level, name, server, ours)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut disagreements = Vec::new();
    let mut refused = 0;
    for (level, name, server, ours) in &verdicts {
        if server.is_err() {
            refused += 1;
        }
        if server.is_ok() != ours.is_empty() {
            disagreements.push(format!("{level} {name}: server {server:?}, check {ours:?}"));
        }
    }
    println!(
        "pod security cross-check: {} verdicts, {refused} refused by the API server, {} disagreements",
        verdicts.len(),
        disagreements.len()
    );
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    assert!(
        refused > 0 && refused < verdicts.len(),
        "samples must both pass and fail"
    );
}

/// A namespace-level user may claim host namespaces through mappings only where a platform
/// admin granted `claim` on `hostnamespaces.virtualcluster.dev` with that name (or prefix).
#[tokio::test]
async fn host_namespaces_are_claimed_with_the_authors_own_rights() {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let cluster = shared_cluster().await;
    let admin = cluster.client().await;
    virtualcluster_tests::crd::install(&admin).await.unwrap();
    let namespace = cluster.namespace("claims").await;
    let user = format!("author-{namespace}");
    // The author may create VirtualClusters in their namespace, nothing more.
    create(
        &Api::<Role>::namespaced(admin.clone(), &namespace),
        json!({"metadata": {"name": "authors"}, "rules": [{"apiGroups": ["virtualcluster.dev"],
               "resources": ["virtualclusters"], "verbs": ["create", "get", "list", "delete"]}]}),
    )
    .await;
    create(
        &Api::<RoleBinding>::namespaced(admin.clone(), &namespace),
        json!({"metadata": {"name": "authors"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "authors"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}),
    )
    .await;
    let mut config = virtualcluster_tests::kubeconfig::config(cluster.kubeconfig_path())
        .await
        .unwrap();
    config.auth_info.impersonate = Some(user.clone());
    let author = Client::try_from(config).unwrap();
    let vcs: Api<VirtualCluster> = Api::namespaced(author.clone(), &namespace);
    let loot = format!("{namespace}-loot");
    let vc = |name: &str, host_side: &str| -> VirtualCluster {
        object(
            json!({"apiVersion": "virtualcluster.dev/v1alpha1", "kind": "VirtualCluster",
                      "metadata": {"name": name},
                      "spec": {"sync": {"toHost": {"namespaces": {"enabled": true,
                               "mappings": {"byName": {"x-*": host_side}}}}}}}),
        )
    };
    let params = PostParams {
        dry_run: true,
        ..Default::default()
    };

    let exact = |name: &str, host: &str| -> VirtualCluster {
        object(
            json!({"apiVersion": "virtualcluster.dev/v1alpha1", "kind": "VirtualCluster",
                      "metadata": {"name": name},
                      "spec": {"sync": {"toHost": {"namespaces": {"enabled": true,
                               "mappings": {"byName": {"loot": host}}}}}}}),
        )
    };
    // Not granted: refused, naming the namespace (or prefix) and the permission.
    let err = vcs
        .create(&params, &exact("exact", &loot))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("claiming host namespace {loot}")),
        "{err}"
    );
    assert!(
        err.contains("claim on hostnamespaces.virtualcluster.dev"),
        "{err}"
    );
    let pattern = format!("{namespace}-t-*");
    let prefix = format!("{namespace}-t-");
    let err = vcs
        .create(&params, &vc("pattern", &pattern))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("claiming host namespace {prefix}")),
        "{err}"
    );
    // Without namespace syncing nothing is claimed.
    let plain: VirtualCluster = object(json!({"apiVersion": "virtualcluster.dev/v1alpha1",
        "kind": "VirtualCluster", "metadata": {"name": "plain"}, "spec": {}}));
    vcs.create(&params, &plain).await.unwrap();

    // Granted by a platform admin: the exact name and the prefix.
    create(
        &Api::<Role>::namespaced(admin.clone(), &namespace),
        json!({"metadata": {"name": "claims"}, "rules": [{"apiGroups": ["virtualcluster.dev"],
               "resources": ["hostnamespaces"], "verbs": ["claim"], "resourceNames": [loot, prefix]}]}),
    )
    .await;
    create(
        &Api::<RoleBinding>::namespaced(admin.clone(), &namespace),
        json!({"metadata": {"name": "claims"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "claims"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}),
    )
    .await;
    eventually("the grant to take effect", || async {
        vcs.create(&params, &exact("exact", &loot)).await.ok()
    })
    .await;
    vcs.create(&params, &vc("pattern", &pattern)).await.unwrap();
    // The grant is for those names only.
    let other = format!("{namespace}-other");
    let err = vcs
        .create(&params, &exact("other", &other))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("claiming host namespace {other}")),
        "{err}"
    );
    // A cluster admin holds it through `*`.
    Api::<VirtualCluster>::namespaced(admin.clone(), &namespace)
        .create(&params, &exact("admin", &other))
        .await
        .unwrap();
}

/// Never claimable, whoever asks: a namespace the platform reserves is refused at
/// reconciliation, and a host namespace holding a VirtualCluster is not imported by a pattern
/// that matches it, neither when it held one first nor when it comes to hold one later.
#[tokio::test]
async fn namespaces_the_platform_reserves_or_that_hold_an_instance_are_never_claimed() {
    let cluster = shared_cluster().await;
    let host = cluster.client().await;
    virtualcluster_tests::crd::install(&host).await.unwrap();
    let prefix = unique_name("rsv");
    let (free, holding) = (format!("{prefix}-free"), format!("{prefix}-vc"));
    let hosts: Api<Namespace> = Api::all(host.clone());
    for name in [&free, &holding] {
        create(&hosts, json!({"metadata": {"name": name}})).await;
    }
    let other_vc = json!({"apiVersion": "virtualcluster.dev/v1alpha1", "kind": "VirtualCluster",
                          "metadata": {"name": "other"}, "spec": {}});
    // Another instance's namespace (its Secrets hold that instance's credentials).
    create(
        &Api::<VirtualCluster>::namespaced(host.clone(), &holding),
        other_vc.clone(),
    )
    .await;
    create(
        &Api::<ConfigMap>::namespaced(host.clone(), &free),
        json!({"metadata": {"name": "settings"}, "data": {"k": "v"}}),
    )
    .await;

    let reserved = unique_name("ops");
    let spec = json!({"sync": {"toHost": {"namespaces": {"enabled": true,
        "mappings": {"byName": {"m-*": format!("{prefix}-*")}}}}}});
    let running = Running::start_with(
        cluster,
        "reserved",
        "vc",
        spec,
        &[&format!("--reserved-namespaces={reserved}")],
    )
    .await;

    // The plain namespace is imported, with the host's ConfigMap.
    let imported: Api<ConfigMap> = Api::namespaced(running.virt.clone(), "m-free");
    eventually(
        "the host's ConfigMap in virtual namespace m-free",
        || async { imported.get_opt("settings").await.unwrap() },
    )
    .await;
    // The one holding a VirtualCluster is not, even when the tenant asks for it by name.
    assert!(
        Api::<Namespace>::all(running.virt.clone())
            .get_opt("m-vc")
            .await
            .unwrap()
            .is_none(),
        "m-vc was shown in the virtual cluster"
    );
    create_namespace(&running.virt, "m-vc").await;
    let note = warned(&running.virt, "default", "m-vc", "HostNamespaceReserved").await;
    assert!(note.contains(&holding), "{note}");
    let labels = hosts.get(&holding).await.unwrap().labels().clone();
    assert!(
        !labels.contains_key(keys::SYNCED_BY_UID),
        "{holding} was marked: {labels:?}"
    );

    // A namespace that comes to hold a VirtualCluster after it was imported shows nothing more.
    create(
        &Api::<VirtualCluster>::namespaced(host.clone(), &free),
        other_vc,
    )
    .await;
    wait_gone("the imported ConfigMap of m-free", &imported, "settings").await;
    Api::<ConfigMap>::namespaced(host.clone(), &free)
        .get("settings")
        .await
        .expect("the host's ConfigMap stays");

    // A mapping to a namespace the platform reserves is refused before anything is made.
    let vcs: Api<VirtualCluster> = Api::namespaced(host.clone(), &running.id.namespace);
    create(
        &vcs,
        json!({"apiVersion": "virtualcluster.dev/v1alpha1", "kind": "VirtualCluster",
               "metadata": {"name": "ops"},
               "spec": {"sync": {"toHost": {"namespaces": {"enabled": true,
                   "mappings": {"byName": {"o": reserved.clone()}}}}}}}),
    )
    .await;
    let message = invalid(&vcs, "ops", "NamespaceNotClaimable").await;
    assert!(message.contains(&reserved), "{message}");
    for namespace in [&free, &holding] {
        Api::<VirtualCluster>::namespaced(host.clone(), namespace)
            .delete("other", &DeleteParams::default())
            .await
            .unwrap();
    }
}

/// With `useSecretsForSATokens`, a pod's virtual service-account token is in a host Secret of
/// its own, owned by the host pod (so it goes with it), and not in the host pod's annotations,
/// which whoever may read pods in the host namespace can read; the token is the virtual
/// cluster's, for the pod's ServiceAccount there.
#[tokio::test]
async fn service_account_tokens_are_kept_in_a_secret_of_the_pods_own_when_asked() {
    use k8s_openapi::api::authentication::v1::TokenReview;
    let cluster = shared_cluster().await;
    let spec = json!({"sync": {"toHost": {"pods": {"useSecretsForSATokens": true}}}});
    let running = Running::start(cluster, "tokens", "vc", spec).await;
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> = running.virtual_api("default");
    eventually("the virtual default ServiceAccount", || async {
        accounts.get_opt("default").await.unwrap()
    })
    .await;
    let make_pod = || async {
        let spec = json!({"containers": [container(json!({}))]});
        try_pod(&running.virt, "default", "p", spec).await.unwrap()
    };
    make_pod().await;
    let host_pod: Pod = running.host_copy("default", "p").await;
    let annotations = host_pod.annotations();
    assert!(
        !annotations
            .keys()
            .any(|k| k.starts_with("virtualcluster.dev/token")),
        "a token in the host pod's annotations: {annotations:?}"
    );
    let secret_name = format!("{}-sa-token", host_pod.name_any());
    let projected = host_pod
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| p.sources.iter().flatten())
        .find_map(|s| s.secret.as_ref())
        .expect("a projected Secret in the host pod");
    assert_eq!(projected.name, secret_name);

    let secrets: Api<Secret> = running.host_api();
    // The token Secret once host pod `pod` owns it.
    let owned_by = |pod: Pod| {
        let (secrets, name) = (&secrets, &secret_name);
        async move {
            let uid = pod.uid().unwrap();
            let what = format!("the token Secret owned by host pod {uid}");
            eventually_within(&what, LONG, || async {
                secrets
                    .get_opt(name)
                    .await
                    .unwrap()
                    .filter(|s| s.owner_references().iter().any(|o| o.uid == uid))
            })
            .await
        }
    };
    let secret = owned_by(host_pod.clone()).await;
    assert!(marks::is_copy_of(&running.id, secret.labels()));
    let token = String::from_utf8(secret.data.unwrap()["token-0"].0.clone()).unwrap();
    let review: TokenReview = object(json!({"spec": {"token": token}}));
    let reviewed = Api::<TokenReview>::all(running.virt.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(reviewed.authenticated, Some(true), "{reviewed:?}");
    assert_eq!(
        reviewed.user.unwrap().username.as_deref(),
        Some("system:serviceaccount:default:default")
    );

    // A pod of the same name made again at once (as a StatefulSet does) takes the Secret over.
    let pods: Api<Pod> = Api::namespaced(running.virt.clone(), "default");
    let first = pods.get("p").await.unwrap().uid().unwrap();
    pods.delete("p", &DeleteParams::default()).await.unwrap();
    eventually_within("virtual pod p to go", LONG, || async {
        pods.get_opt("p")
            .await
            .unwrap()
            .is_none_or(|p| p.uid().as_deref() != Some(first.as_str()))
            .then_some(())
    })
    .await;
    make_pod().await;
    let second = pods.get("p").await.unwrap().uid().unwrap();
    let hosts: Api<Pod> = running.host_api();
    let replaced = eventually_within("the host copy of the new pod p", LONG, || async {
        hosts
            .get_opt(&host_pod.name_any())
            .await
            .unwrap()
            .filter(|h| h.annotations().get(keys::VIRTUAL_UID) == Some(&second))
    })
    .await;
    owned_by(replaced).await;

    // The Secret goes with the pod.
    pods.delete("p", &DeleteParams::default()).await.unwrap();
    eventually_within("the token Secret to go with its pod", LONG, || async {
        secrets
            .get_opt(&secret_name)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
}
