//! Import of host namespaces and the selective cleanup, end to end: the host (shared local
//! cluster with its controller manager and simulated nodes), the virtual control plane and the
//! syncer as the operator renders them, and the operator under its own ServiceAccount.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Namespace, Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use virtualcluster_crds::instance::{Component, InstanceRef};
use virtualcluster_crds::{VirtualCluster, keys, marks, naming};
use virtualcluster_tests::harness::{eventually, eventually_within, unique_name, wait_gone};
use virtualcluster_tests::shared_cluster;

use crate::syncer::{LONG, Running, create, create_namespace, running_with_ip, stop_syncer};

/// A finalizer only this test removes: it holds an object, so the cleanup must wait there.
const HOLD: &str = "tests.virtualcluster.dev/hold";

/// Makes sure host namespace `name` does not exist (left by an earlier run on the same cluster).
async fn absent(hosts: &Api<Namespace>, name: &str) {
    if hosts.get_opt(name).await.unwrap().is_some() {
        let _ = hosts.delete(name, &DeleteParams::default()).await;
        wait_gone(name, hosts, name).await;
    }
}

/// Creates host namespace `namespace` and in it a pod `name`, as a user of the host would, and
/// waits until it runs on a simulated node.
async fn host_pod(host: &Client, namespace: &str, name: &str) -> Pod {
    let hosts: Api<Namespace> = Api::all(host.clone());
    if hosts.get_opt(namespace).await.unwrap().is_none() {
        create(&hosts, json!({"metadata": {"name": namespace}})).await;
    }
    let pods: Api<Pod> = Api::namespaced(host.clone(), namespace);
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(host.clone(), namespace);
    eventually(
        &format!("the default ServiceAccount of {namespace}"),
        || async { accounts.get_opt("default").await.unwrap() },
    )
    .await;
    create(
        &pods,
        json!({"metadata": {"name": name, "labels": {"run": name}},
               "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}),
    )
    .await;
    eventually_within(
        &format!("host pod {namespace}/{name} Running"),
        LONG,
        || async {
            let pod = pods.get(name).await.unwrap();
            running_with_ip(&pod).map(|_| pod)
        },
    )
    .await
}

/// Waits until the virtual cluster shows host namespace `host` as `virtual_ns`, and its host
/// pod `pod` as a virtual pod with the host pod's address and phase.
async fn wait_imported(running: &Running, host: &str, virtual_ns: &str, pod: &Pod) {
    let namespaces: Api<Namespace> = Api::all(running.virt.clone());
    let ns = eventually(&format!("{host} imported as {virtual_ns}"), || async {
        namespaces.get_opt(virtual_ns).await.unwrap()
    })
    .await;
    assert_eq!(ns.annotations()[keys::IMPORTED_FROM], host);
    let hosts: Api<Namespace> = Api::all(running.host.clone());
    let marked = hosts.get(host).await.unwrap();
    assert!(marks::is_copy_of(&running.id, marked.labels()));
    assert_eq!(
        marked.labels()[keys::NAMESPACE_ORIGIN],
        keys::ORIGIN_IMPORTED
    );
    let name = pod.name_any();
    let host_ip = running_with_ip(pod).unwrap();
    let virtual_pods = running.virtual_api::<Pod>(virtual_ns);
    let shown = eventually_within(
        &format!("host pod {host}/{name} imported"),
        LONG,
        || async {
            let shown = virtual_pods.get_opt(&name).await.unwrap()?;
            (running_with_ip(&shown).as_deref() == Some(host_ip.as_str())).then_some(shown)
        },
    )
    .await;
    assert_eq!(shown.labels().get("run"), Some(&name));
    assert_eq!(
        shown.spec.as_ref().unwrap().node_name,
        pod.spec.as_ref().unwrap().node_name
    );
    let pods: Api<Pod> = Api::namespaced(running.host.clone(), host);
    eventually(&format!("host pod {host}/{name} marked"), || async {
        let live = pods.get(&name).await.unwrap();
        (live.labels().get(keys::IMPORTED_BY_UID) == Some(&running.id.uid)).then_some(())
    })
    .await;
}

/// Creates virtual namespace `virtual_ns` and pod `name` in it, and waits until the pod runs on
/// the host in host namespace `host`, which the instance created.
async fn virtual_pod(running: &Running, virtual_ns: &str, host: &str, name: &str) -> Pod {
    create_namespace(&running.virt, virtual_ns).await;
    create(
        &running.virtual_api::<Pod>(virtual_ns),
        json!({"metadata": {"name": name},
               "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}),
    )
    .await;
    let hosts: Api<Namespace> = Api::all(running.host.clone());
    let created = eventually(&format!("host namespace {host}"), || async {
        hosts.get_opt(host).await.unwrap()
    })
    .await;
    assert_eq!(
        created.labels()[keys::NAMESPACE_ORIGIN],
        keys::ORIGIN_CREATED
    );
    let pods: Api<Pod> = Api::namespaced(running.host.clone(), host);
    eventually_within(&format!("host pod {host}/{name} Running"), LONG, || async {
        let pod = pods.get_opt(name).await.unwrap()?;
        running_with_ip(&pod).map(|_| pod)
    })
    .await
}

fn reserved(map: &std::collections::BTreeMap<String, String>) -> Vec<&String> {
    map.keys()
        .filter(|k| k.starts_with(keys::RESERVED_PREFIX))
        .collect()
}

/// Host namespace `namespace` is there without any of the instance's marks, and so are its
/// host pods `pods`, the very same objects.
async fn assert_released(host: &Client, namespace: &str, pods: &[&Pod]) {
    let ns = Api::<Namespace>::all(host.clone())
        .get(namespace)
        .await
        .unwrap_or_else(|err| panic!("imported namespace {namespace} kept: {err}"));
    assert!(
        reserved(ns.labels()).is_empty() && reserved(ns.annotations()).is_empty(),
        "namespace {namespace} keeps marks: {:?}",
        ns.metadata
    );
    assert!(ns.metadata.deletion_timestamp.is_none());
    let api: Api<Pod> = Api::namespaced(host.clone(), namespace);
    for pod in pods {
        let live = api
            .get(&pod.name_any())
            .await
            .unwrap_or_else(|err| panic!("host pod {namespace}/{} kept: {err}", pod.name_any()));
        assert_eq!(live.uid(), pod.uid(), "host pod replaced");
        assert!(live.metadata.deletion_timestamp.is_none());
        assert!(
            reserved(live.labels()).is_empty() && reserved(live.annotations()).is_empty(),
            "pod {namespace}/{} keeps marks: {:?}",
            pod.name_any(),
            live.metadata
        );
    }
}

/// Events the operator published about VirtualCluster `id`.
async fn events(host: &Client, id: &InstanceRef) -> Vec<Event> {
    Api::<Event>::namespaced(host.clone(), &id.namespace)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(&id.name))
        .collect()
}

/// An Event of `reason` whose note contains `note` is among `events`.
fn assert_event(events: &[Event], reason: &str, note: &str) {
    let found = events.iter().any(|e| {
        e.reason.as_deref() == Some(reason) && e.note.as_deref().is_some_and(|n| n.contains(note))
    });
    assert!(found, "no {reason} Event saying {note:?}: {events:#?}");
}

async fn vc_status(running: &Running) -> Option<VirtualCluster> {
    Api::<VirtualCluster>::namespaced(running.host.clone(), &running.id.namespace)
        .get_opt(&running.id.name)
        .await
        .unwrap()
}

/// Waits until the status of the VirtualCluster being deleted says `what` is left.
async fn reports(running: &Running, what: &str) {
    eventually_within(
        &format!("status.cleanupRemaining: {what}"),
        LONG,
        || async {
            let vc = vc_status(running).await?;
            vc.status?
                .cleanup_remaining
                .iter()
                .any(|r| r.contains(what))
                .then_some(())
        },
    )
    .await
}

async fn delete_vc(running: &Running) {
    Api::<VirtualCluster>::namespaced(running.host.clone(), &running.id.namespace)
        .delete(&running.id.name, &DeleteParams::default())
        .await
        .unwrap();
}

async fn set_finalizers<K>(api: &Api<K>, name: &str, finalizers: &[&str])
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": finalizers}})),
    )
    .await
    .unwrap();
}

/// The documented delete example (`sync-*` to `host-*`, instance `test-cleanup`), with decoys
/// the cleanup must leave alone: a look-alike namespace no mapping matches, a host namespace
/// marked by another instance, a look-alike object in the instance's namespace, and a host
/// namespace made on the host after the instance started (imported, not created).
#[tokio::test]
async fn the_delete_example_imports_host_namespaces_and_leaves_them_as_they_were() {
    let cluster = shared_cluster().await;
    let host = cluster.client().await;
    let hosts: Api<Namespace> = Api::all(host.clone());
    for ns in [
        "host-namespace-from-host",
        "host-namespace-from-vcluster",
        "host-made-later",
        "host-of-another-instance",
        "hostile-namespace",
    ] {
        absent(&hosts, ns).await;
    }
    let from_host = host_pod(&host, "host-namespace-from-host", "nginx-from-host").await;
    let hostile = host_pod(&host, "hostile-namespace", "nginx-from-host").await;
    let other_uid = unique_name("uid");
    create(
        &hosts,
        json!({"metadata": {"name": "host-of-another-instance", "labels": {
            keys::SYNCED_BY: "other-vc",
            keys::SYNCED_BY_NAMESPACE: "elsewhere",
            keys::SYNCED_BY_UID: other_uid,
            keys::NAMESPACE_ORIGIN: keys::ORIGIN_CREATED,
        }}}),
    )
    .await;

    let spec = json!({"sync": {"toHost": {"namespaces": {
        "enabled": true,
        "mappings": {"byName": {"sync-*": "host-*"}}
    }}}});
    let running = Running::start(cluster, "ns-delete", "test-cleanup", spec).await;
    let id = running.id.clone();
    let lookalike = naming::host_name(
        "nginx-from-vcluster",
        "sync-namespace-from-vcluster",
        &id.name,
    );
    create(
        &running.host_api::<ConfigMap>(),
        json!({"metadata": {"name": lookalike}, "data": {"owner": "the host"}}),
    )
    .await;

    // The host namespace and its pod appear in the virtual cluster.
    wait_imported(
        &running,
        "host-namespace-from-host",
        "sync-namespace-from-host",
        &from_host,
    )
    .await;
    // A namespace made in the virtual cluster gets a host namespace, and its pod runs there.
    virtual_pod(
        &running,
        "sync-namespace-from-vcluster",
        "host-namespace-from-vcluster",
        "nginx-from-vcluster",
    )
    .await;
    // An object made in the virtual cluster inside the imported namespace is copied there.
    create(
        &running.virtual_api::<ConfigMap>("sync-namespace-from-host"),
        json!({"metadata": {"name": "from-vcluster"}, "data": {"k": "v"}}),
    )
    .await;
    let host_config_maps: Api<ConfigMap> =
        Api::namespaced(host.clone(), "host-namespace-from-host");
    eventually("the copy in the imported namespace", || async {
        let copy = host_config_maps.get_opt("from-vcluster").await.unwrap()?;
        marks::is_copy_of(&id, copy.labels()).then_some(())
    })
    .await;
    // A matching host namespace made on the host after the instance started is imported too.
    let later = host_pod(&host, "host-made-later", "late-pod").await;
    wait_imported(&running, "host-made-later", "sync-made-later", &later).await;

    // Both pods, as the virtual cluster lists them.
    let all: Api<Pod> = Api::all(running.virt.clone());
    let listed: BTreeSet<(String, String)> = all
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| p.name_any().starts_with("nginx"))
        .map(|p| (p.namespace().unwrap(), p.name_any()))
        .collect();
    assert_eq!(
        listed,
        BTreeSet::from([
            ("sync-namespace-from-host".into(), "nginx-from-host".into()),
            (
                "sync-namespace-from-vcluster".into(),
                "nginx-from-vcluster".into()
            ),
        ])
    );
    // Never imported: another instance's namespace, and one no mapping matches.
    let virtual_namespaces: Api<Namespace> = Api::all(running.virt.clone());
    for ns in [
        "sync-of-another-instance",
        "hostile-namespace",
        "sync-ile-namespace",
    ] {
        assert!(
            virtual_namespaces.get_opt(ns).await.unwrap().is_none(),
            "{ns}"
        );
    }
    let other = hosts.get("host-of-another-instance").await.unwrap();
    assert_eq!(other.labels()[keys::SYNCED_BY_UID], other_uid);
    // The clash shows in the instance's status and as an Event.
    let clash = format!(
        "host namespace host-of-another-instance is held by VirtualCluster elsewhere/other-vc (UID {other_uid})"
    );
    eventually("the NamespacesAvailable condition", || async {
        let vc = vc_status(&running).await?;
        vc.status?
            .conditions
            .iter()
            .any(|c| {
                c.type_ == "NamespacesAvailable"
                    && c.status == "False"
                    && c.reason == "HostNamespaceConflict"
                    && c.message.contains(&clash)
            })
            .then_some(())
    })
    .await;
    assert_event(&events(&host, &id).await, "HostNamespaceConflict", &clash);

    // Delete the instance (its syncer stopped, as its Deployment's pods would be) and watch the
    // cleanup report what is left.
    let _ = stop_syncer(&running);
    delete_vc(&running).await;
    let mut reported = BTreeSet::new();
    let deadline = std::time::Instant::now() + LONG;
    while let Some(vc) = vc_status(&running).await {
        assert!(
            std::time::Instant::now() < deadline,
            "the VirtualCluster is still there: {:?}",
            vc.status
        );
        reported.extend(vc.status.unwrap_or_default().cleanup_remaining);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        reported
            .iter()
            .any(|r| r.contains("created namespace host-namespace-from-vcluster")),
        "status.cleanupRemaining named the created namespace while it went: {reported:?}"
    );

    // Created: gone. Imported: there, with the host's pods, without the instance's marks; the
    // objects made from the virtual cluster in it gone.
    assert!(
        hosts
            .get_opt("host-namespace-from-vcluster")
            .await
            .unwrap()
            .is_none()
    );
    assert_released(&host, "host-namespace-from-host", &[&from_host]).await;
    assert_released(&host, "host-made-later", &[&later]).await;
    assert!(
        host_config_maps
            .get_opt("from-vcluster")
            .await
            .unwrap()
            .is_none_or(|c| c.metadata.deletion_timestamp.is_some())
    );
    // The decoys, untouched.
    assert_eq!(
        hosts
            .get("host-of-another-instance")
            .await
            .unwrap()
            .labels(),
        other.labels()
    );
    assert_released(&host, "hostile-namespace", &[&hostile]).await;
    let kept = running
        .host_api::<ConfigMap>()
        .get(&lookalike)
        .await
        .unwrap();
    assert_eq!(kept.data.unwrap()["owner"], "the host");

    let events = events(&host, &id).await;
    assert_event(
        &events,
        "NamespaceDeleted",
        "created namespace host-namespace-from-vcluster deleted",
    );
    for imported in ["host-namespace-from-host", "host-made-later"] {
        assert_event(
            &events,
            "NamespaceReleased",
            &format!("imported namespace {imported} cleaned"),
        );
    }
    let released = events
        .iter()
        .find(|e| {
            e.note
                .as_deref()
                .is_some_and(|n| n.starts_with("imported namespace host-namespace-from-host"))
        })
        .unwrap();
    let removed: usize = released
        .note
        .as_deref()
        .unwrap()
        .split("cleaned: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(removed >= 1, "{released:?}");

    for ns in [
        "host-namespace-from-host",
        "host-made-later",
        "host-of-another-instance",
        "hostile-namespace",
    ] {
        let _ = hosts.delete(ns, &DeleteParams::default()).await;
    }
}

/// The operator killed (SIGKILL) while the cleanup waits for the syncer's pods, while a created
/// namespace terminates, and just after it starts again: the end state is the one an
/// uninterrupted cleanup reaches.
#[tokio::test]
async fn the_cleanup_killed_at_several_points_reaches_the_same_end_state() {
    let cluster = shared_cluster().await;
    let host = cluster.client().await;
    let hosts: Api<Namespace> = Api::all(host.clone());
    let (imported, created) = ("kill-cleanup-app-existing", "kill-cleanup-app-made");
    for ns in [imported, created] {
        absent(&hosts, ns).await;
    }
    let own = host_pod(&host, imported, "own-pod").await;
    let spec = json!({"sync": {"toHost": {"namespaces": {
        "enabled": true,
        "mappings": {"byName": {"app-*": "${name}-app-*"}}
    }}}});
    let mut running = Running::start(cluster, "ns-kill", "kill-cleanup", spec).await;
    let id = running.id.clone();
    wait_imported(&running, imported, "app-existing", &own).await;
    virtual_pod(&running, "app-made", created, "made-pod").await;

    // Two holds: a pod of the syncer's Deployment, and the copy in the created namespace.
    let instance_pods: Api<Pod> = Api::namespaced(host.clone(), &id.namespace);
    let mut selector = id.label_selector();
    for (k, v) in id.selector_labels(Component::Syncer) {
        selector.push_str(&format!(",{k}={v}"));
    }
    let syncer_pod = eventually("a pod of the syncer's Deployment", || async {
        instance_pods
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
            .into_iter()
            .next()
    })
    .await
    .name_any();
    set_finalizers(&instance_pods, &syncer_pod, &[HOLD]).await;
    let created_pods: Api<Pod> = Api::namespaced(host.clone(), created);
    set_finalizers(&created_pods, "made-pod", &[HOLD]).await;

    let _ = stop_syncer(&running);
    delete_vc(&running).await;

    // 1. Waiting for the syncer's pods: nothing else done yet.
    reports(&running, "the syncer").await;
    running.operator.kill();
    let ns = hosts.get(imported).await.unwrap();
    assert!(
        marks::is_copy_of(&id, ns.labels()),
        "released before the syncer stopped"
    );
    assert!(
        hosts
            .get(created)
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none()
    );
    set_finalizers(&instance_pods, &syncer_pod, &[]).await;

    // 2. Killed as soon as it is up again, whatever it was doing.
    running.restart_operator(cluster).await;
    running.operator.kill();

    // 3. Waiting for the created namespace, which the held copy keeps terminating.
    running.restart_operator(cluster).await;
    reports(
        &running,
        &format!("created namespace {created}: terminating"),
    )
    .await;
    running.operator.kill();
    assert_released(&host, imported, &[&own]).await;
    set_finalizers(&created_pods, "made-pod", &[]).await;

    // 4. To the end.
    running.restart_operator(cluster).await;
    eventually_within("the VirtualCluster, after its cleanup", LONG, || async {
        vc_status(&running).await.is_none().then_some(())
    })
    .await;
    assert!(hosts.get_opt(created).await.unwrap().is_none());
    assert_released(&host, imported, &[&own]).await;
    let events = events(&host, &id).await;
    assert_event(
        &events,
        "NamespaceDeleted",
        &format!("created namespace {created} deleted"),
    );
    assert_event(
        &events,
        "NamespaceReleased",
        &format!("imported namespace {imported} cleaned"),
    );
    assert_event(&events, "CleanedUp", "stopped the syncer");
    let _ = hosts.delete(imported, &DeleteParams::default()).await;
}

/// Host objects of kinds the syncer copies, made on the host in an imported namespace: shown in
/// the virtual cluster and kept to the host's content, never copied back; what each side makes
/// for itself (the CA bundle, service-account tokens) not shown; after delete, the host's
/// objects are there as they were, without the instance's marks.
#[tokio::test]
async fn config_maps_secrets_and_services_made_on_the_host_are_imported_and_released() {
    let cluster = shared_cluster().await;
    let host = cluster.client().await;
    let prefix = unique_name("himp");
    let host_ns = format!("{prefix}-data");
    let hosts: Api<Namespace> = Api::all(host.clone());
    create(&hosts, json!({"metadata": {"name": host_ns}})).await;
    let config_maps: Api<ConfigMap> = Api::namespaced(host.clone(), &host_ns);
    let secrets: Api<Secret> = Api::namespaced(host.clone(), &host_ns);
    let services: Api<Service> = Api::namespaced(host.clone(), &host_ns);
    let settings = create(
        &config_maps,
        json!({"metadata": {"name": "settings", "labels": {"app": "web"}},
               "data": {"a": "1", "b": "2"}}),
    )
    .await;
    let creds = create(
        &secrets,
        json!({"metadata": {"name": "creds"}, "type": "Opaque",
               "stringData": {"password": "host-secret"}}),
    )
    .await;
    // A token Secret the host's token controller fills: the host's identity, never shown.
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(host.clone(), &host_ns)
        .create(
            &Default::default(),
            &serde_json::from_value(json!({"metadata": {"name": "builder"}})).unwrap(),
        )
        .await
        .unwrap();
    create(
        &secrets,
        json!({"metadata": {"name": "builder-token",
                            "annotations": {"kubernetes.io/service-account.name": "builder"}},
               "type": "kubernetes.io/service-account-token"}),
    )
    .await;
    let web = create(
        &services,
        json!({"metadata": {"name": "web"},
               "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
    )
    .await;
    create(
        &services,
        json!({"metadata": {"name": "gone-later"},
               "spec": {"selector": {"app": "other"}, "ports": [{"port": 81}]}}),
    )
    .await;
    eventually("the host's CA bundle in the namespace", || async {
        config_maps.get_opt("kube-root-ca.crt").await.unwrap()
    })
    .await;

    let spec = json!({"sync": {"toHost": {"namespaces": {
        "enabled": true,
        "mappings": {"byName": {"imp-*": format!("{prefix}-*")}}
    }}}});
    let running = Running::start(cluster, "ns-import-kinds", "import-kinds", spec).await;
    let id = running.id.clone();
    let source = |name: &str| format!("{host_ns}/{name}");

    // Shown, marked as standing for the host's objects, with their content.
    let virtual_config_maps = running.virtual_api::<ConfigMap>("imp-data");
    let shown = eventually("ConfigMap settings imported", || async {
        virtual_config_maps.get_opt("settings").await.unwrap()
    })
    .await;
    assert_eq!(shown.annotations()[keys::IMPORTED_FROM], source("settings"));
    assert_eq!(shown.labels().get("app").map(String::as_str), Some("web"));
    assert_eq!(shown.data, settings.data);
    let virtual_secrets = running.virtual_api::<Secret>("imp-data");
    let shown = eventually("Secret creds imported", || async {
        virtual_secrets.get_opt("creds").await.unwrap()
    })
    .await;
    assert_eq!(shown.annotations()[keys::IMPORTED_FROM], source("creds"));
    assert_eq!(
        shown.data.unwrap()["password"].0,
        creds.data.as_ref().unwrap()["password"].0
    );
    let virtual_services = running.virtual_api::<Service>("imp-data");
    let shown = eventually("Service web imported", || async {
        virtual_services.get_opt("web").await.unwrap()
    })
    .await;
    assert_eq!(shown.annotations()[keys::IMPORTED_FROM], source("web"));
    // What the host says about the imported Service shows in the virtual cluster, about the
    // virtual Service.
    create(
        &Api::<CoreEvent>::namespaced(host.clone(), &host_ns),
        json!({"metadata": {"name": "web.imported-event"},
               "involvedObject": {"apiVersion": "v1", "kind": "Service", "name": "web",
                                  "namespace": host_ns, "uid": web.uid()},
               "reason": "HostSaysSo", "message": "about the host's Service web",
               "type": "Normal", "source": {"component": "test"}}),
    )
    .await;
    let virtual_events = running.virtual_api::<CoreEvent>("imp-data");
    let shown_uid = shown.uid();
    let mirrored = eventually("the host's Event about Service web, shown", || async {
        virtual_events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("HostSaysSo"))
    })
    .await;
    assert_eq!(mirrored.involved_object.name.as_deref(), Some("web"));
    assert_eq!(mirrored.involved_object.uid, shown_uid);
    assert_eq!(
        mirrored.message.as_deref(),
        Some("about the host's Service web")
    );
    let (host_spec, shown_spec) = (web.spec.clone().unwrap(), shown.spec.unwrap());
    assert_eq!(shown_spec.selector, host_spec.selector);
    assert_eq!(shown_spec.ports.unwrap()[0].port, 80);
    assert_eq!(
        shown_spec.cluster_ip, host_spec.cluster_ip,
        "the virtual Service has the host's address"
    );
    // The host's objects carry the instance's mark, and nothing was copied back.
    for (kind, labels) in [
        (
            "ConfigMap",
            config_maps.get("settings").await.unwrap().metadata.labels,
        ),
        (
            "Secret",
            secrets.get("creds").await.unwrap().metadata.labels,
        ),
        (
            "Service",
            services.get("web").await.unwrap().metadata.labels,
        ),
    ] {
        assert_eq!(
            labels.unwrap_or_default().get(keys::IMPORTED_BY_UID),
            Some(&id.uid),
            "{kind} marked"
        );
    }
    let copies = ListParams::default().labels(&marks::copies_selector(&id));
    // (The virtual cluster's own CA bundle is copied under a name of its own, once the virtual
    // controller manager has made it: not one of the host's objects.)
    let copied: Vec<_> = config_maps
        .list(&copies)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| c.name_any())
        .filter(|name| name != "virtualcluster-kube-root-ca.crt")
        .collect();
    assert!(copied.is_empty(), "ConfigMaps copied back: {copied:?}");
    assert!(secrets.list(&copies).await.unwrap().items.is_empty());
    assert!(services.list(&copies).await.unwrap().items.is_empty());
    // Not shown: the host's token Secret; the virtual cluster's CA bundle is its own.
    assert!(
        virtual_secrets
            .get_opt("builder-token")
            .await
            .unwrap()
            .is_none()
    );
    let own_ca = eventually("the virtual cluster's CA bundle", || async {
        virtual_config_maps
            .get_opt("kube-root-ca.crt")
            .await
            .unwrap()
    })
    .await;
    assert!(!marks::is_imported(own_ca.annotations()));

    // The host changes its ConfigMap (a key removed, one changed): the virtual one follows.
    config_maps
        .patch(
            "settings",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": "3", "b": null}})),
        )
        .await
        .unwrap();
    let want = std::collections::BTreeMap::from([("a".to_owned(), "3".to_owned())]);
    eventually("the virtual ConfigMap follows the host's", || async {
        let cm = virtual_config_maps.get("settings").await.unwrap();
        (cm.data.as_ref() == Some(&want)).then_some(())
    })
    .await;
    // Edited or deleted in the virtual cluster: the host's content comes back.
    virtual_secrets
        .patch(
            "creds",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"password": "changed"}})),
        )
        .await
        .unwrap();
    eventually("the virtual Secret put back", || async {
        let s = virtual_secrets.get("creds").await.unwrap();
        (s.data?["password"].0 == b"host-secret").then_some(())
    })
    .await;
    let before = virtual_config_maps.get("settings").await.unwrap();
    virtual_config_maps
        .delete("settings", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the virtual ConfigMap back", || async {
        let cm = virtual_config_maps.get_opt("settings").await.unwrap()?;
        (cm.uid() != before.uid() && cm.data.as_ref() == Some(&want)).then_some(())
    })
    .await;
    // Deleted on the host: gone from the virtual cluster.
    eventually("Service gone-later imported", || async {
        virtual_services.get_opt("gone-later").await.unwrap()
    })
    .await;
    services
        .delete("gone-later", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the virtual Service gone with the host's", || async {
        virtual_services
            .get_opt("gone-later")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;

    // Delete: the host's objects stay, the same ones, without the instance's marks.
    let _ = stop_syncer(&running);
    delete_vc(&running).await;
    eventually_within("the VirtualCluster gone", LONG, || async {
        vc_status(&running).await.is_none().then_some(())
    })
    .await;
    let settings_now = config_maps.get("settings").await.unwrap();
    let creds_now = secrets.get("creds").await.unwrap();
    let web_now = services.get("web").await.unwrap();
    for (kind, (uid, was), meta) in [
        (
            "ConfigMap",
            (settings_now.uid(), settings.uid()),
            &settings_now.metadata,
        ),
        (
            "Secret",
            (creds_now.uid(), creds.uid()),
            &creds_now.metadata,
        ),
        ("Service", (web_now.uid(), web.uid()), &web_now.metadata),
    ] {
        assert_eq!(uid, was, "{kind} replaced");
        assert!(meta.deletion_timestamp.is_none(), "{kind} deleted");
        let none = Default::default();
        assert!(
            reserved(meta.labels.as_ref().unwrap_or(&none)).is_empty()
                && reserved(meta.annotations.as_ref().unwrap_or(&none)).is_empty(),
            "{kind} keeps marks: {meta:?}"
        );
    }
    assert_eq!(settings_now.data, Some(want));
    let ns = hosts.get(&host_ns).await.unwrap();
    assert!(reserved(ns.labels()).is_empty(), "{:?}", ns.metadata);
    let _ = hosts.delete(&host_ns, &DeleteParams::default()).await;
}
