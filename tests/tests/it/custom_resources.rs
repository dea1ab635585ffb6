//! Custom resources (`spec.sync.toHost.customResources`, `fromHost.customResources`) on a
//! running instance, with CRDs shaped like cert-manager's installed on the host: the CRDs are
//! copied into the virtual cluster; a Certificate made there gets a patched host copy and the
//! host's status back; host ClusterIssuers and Issuers are shown; edits on each side are
//! handled; a CRD missing on the host and a kind the platform does not allow are reported; the
//! instance's delete removes its copies.

use k8s_openapi::api::rbac::v1::Role;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use serde_json::json;
use virtualcluster_crds::VirtualCluster;
use virtualcluster_tests::crd::apply_crds;
use virtualcluster_tests::harness::{eventually, eventually_within, unique_name, wait_gone};
use virtualcluster_tests::shared_cluster;

use crate::isolation::invalid;
use crate::syncer::{LONG, Running, create_namespace, stop_syncer};

/// A CRD of `group` named like cert-manager's kinds, with a status subresource and a printer
/// column.
fn crd(group: &str, plural: &str, kind: &str, scope: &str) -> String {
    serde_json::to_string(&json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {
            "group": group,
            "scope": scope,
            "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind,
                      "listKind": format!("{kind}List")},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Ready", "type": "string", "jsonPath": ".status.ready"}],
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                }}},
            }],
        },
    }))
    .unwrap()
}

fn resource(group: &str, plural: &str, kind: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: "v1".into(),
        api_version: format!("{group}/v1"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn dynamic(value: serde_json::Value) -> DynamicObject {
    serde_json::from_value(value).unwrap()
}

#[tokio::test]
async fn custom_resources_sync_both_ways_and_go_with_the_instance() {
    let cluster = shared_cluster().await;
    let host = cluster.client().await;
    let group = format!("{}.example.dev", unique_name("cr"));
    let yaml = [
        crd(&group, "certificates", "Certificate", "Namespaced"),
        crd(&group, "clusterissuers", "ClusterIssuer", "Cluster"),
        crd(&group, "issuers", "Issuer", "Namespaced"),
    ]
    .join("\n---\n");
    apply_crds(&host, &yaml).await.unwrap();
    let certificates = format!("certificates.{group}");
    let cluster_issuers = format!("clusterissuers.{group}");
    let issuers = format!("issuers.{group}");
    // Allowed by the platform, but no CRD on the host.
    let widgets = format!("widgets.{group}");
    let to_host = [certificates.clone(), widgets.clone()];
    let from_host = [cluster_issuers.clone(), issuers.clone()];
    let args_to = format!("--custom-resources-to-host={}", to_host.join(","));
    let args_from = format!("--custom-resources-from-host={}", from_host.join(","));

    // A namespaced kind from the host comes from the instance's own namespace, mapped into a
    // virtual one.
    let spec = |own: &str| {
        json!({"sync": {
            "toHost": {"customResources": {
                &certificates: {"enabled": true, "patches": [
                    {"path": "metadata.labels[\"issued-for\"]", "expression": "context.vcluster.name"},
                    {"path": "spec.commonName", "expression": "value + '.tenant.example'",
                     "reverseExpression": "value"},
                ]},
                &widgets: {"enabled": true},
            }},
            "fromHost": {"customResources": {
                &cluster_issuers: {"enabled": true, "scope": "Cluster"},
                &issuers: {"enabled": true,
                           "mappings": {"byName": {format!("{own}/*"): "shop/*"}}},
            }},
        }})
    };
    let running = Running::start_granted(
        cluster,
        "crs",
        "vc",
        spec,
        &[&args_to, &args_from],
        &to_host,
        &from_host,
    )
    .await;
    let id = running.id.clone();
    let vcs: Api<VirtualCluster> = Api::namespaced(host.clone(), &id.namespace);

    // The CRD missing on the host is named; the rest runs.
    let missing = eventually("CustomResourcesAvailable=False", || async {
        let vc = vcs.get(&id.name).await.unwrap();
        vc.status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "CustomResourcesAvailable" && c.status == "False")
            .map(|c| (c.reason, c.message))
    })
    .await;
    assert_eq!(missing.0, "CustomResourceDefinitionMissing");
    assert!(missing.1.contains(&widgets), "{}", missing.1);
    assert!(!missing.1.contains(&certificates), "{}", missing.1);

    // The syncer's rights on them: a Role in the instance's namespace, with exactly these kinds.
    let role = Api::<Role>::namespaced(host.clone(), &id.namespace)
        .get(&format!("{}-custom-resources", id.syncer()))
        .await
        .unwrap();
    let granted: Vec<(String, String)> = role
        .rules
        .unwrap()
        .into_iter()
        .flat_map(|r| {
            let verbs = r.verbs.join(",");
            r.resources
                .unwrap_or_default()
                .into_iter()
                .map(move |res| (res, verbs.clone()))
        })
        .collect();
    assert_eq!(
        granted,
        [
            (
                "certificates".to_owned(),
                "get,list,watch,create,update,patch,delete".to_owned()
            ),
            ("issuers".to_owned(), "get,list,watch".to_owned()),
        ]
    );

    // The CRDs are in the virtual cluster, printer columns and all.
    let virtual_crds: Api<CustomResourceDefinition> = Api::all(running.virt.clone());
    let copied = eventually("the Certificate CRD in the virtual cluster", || async {
        virtual_crds.get_opt(&certificates).await.unwrap()
    })
    .await;
    let columns = copied.spec.versions[0]
        .additional_printer_columns
        .clone()
        .unwrap();
    assert_eq!(columns[0].name, "Ready");
    assert!(
        virtual_crds
            .get_opt(&cluster_issuers)
            .await
            .unwrap()
            .is_some()
    );
    assert!(virtual_crds.get_opt(&widgets).await.unwrap().is_none());

    // A Certificate made in the virtual cluster: a patched copy on the host.
    let cert = resource(&group, "certificates", "Certificate");
    create_namespace(&running.virt, "shop").await;
    let virtual_certs: Api<DynamicObject> =
        Api::namespaced_with(running.virt.clone(), "shop", &cert);
    virtual_certs
        .create(
            &Default::default(),
            &dynamic(json!({
                "apiVersion": format!("{group}/v1"), "kind": "Certificate",
                "metadata": {"name": "web-tls", "labels": {"app": "web"}},
                "spec": {"secretName": "web-tls", "commonName": "web"},
            })),
        )
        .await
        .unwrap();
    let host_certs: Api<DynamicObject> = Api::namespaced_with(host.clone(), &id.namespace, &cert);
    let host_name = running.host_name("shop", "web-tls");
    let copy = eventually("the Certificate's host copy", || async {
        host_certs.get_opt(&host_name).await.unwrap()
    })
    .await;
    assert_eq!(copy.labels()["issued-for"], "vc");
    assert_eq!(copy.labels()["app"], "web");
    assert_eq!(copy.data["spec"]["commonName"], "web.tenant.example");
    assert_eq!(copy.data["spec"]["secretName"], "web-tls");
    assert!(virtualcluster_crds::marks::is_copy_of(&id, copy.labels()));

    // The host's controller sets its status: it comes back.
    host_certs
        .patch_status(
            &host_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": "True", "notAfter": "2027-01-01"}})),
        )
        .await
        .unwrap();
    eventually("the host status in the virtual Certificate", || async {
        let cert = virtual_certs.get("web-tls").await.unwrap();
        (cert.data["status"]["ready"] == "True").then_some(())
    })
    .await;

    // A virtual edit reaches the copy; a hand edit of the copy is put back.
    virtual_certs
        .patch(
            "web-tls",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"commonName": "shop"}})),
        )
        .await
        .unwrap();
    eventually("the edit on the host copy", || async {
        let copy = host_certs.get(&host_name).await.unwrap();
        (copy.data["spec"]["commonName"] == "shop.tenant.example").then_some(())
    })
    .await;
    host_certs
        .patch(
            &host_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"secretName": "stolen"}})),
        )
        .await
        .unwrap();
    eventually("the hand edit put back", || async {
        let copy = host_certs.get(&host_name).await.unwrap();
        (copy.data["spec"]["secretName"] == "web-tls").then_some(())
    })
    .await;

    // Host ClusterIssuers are shown, kept to the host's content; the virtual cluster's own
    // ClusterIssuer of another name stays.
    let issuer_kind = resource(&group, "clusterissuers", "ClusterIssuer");
    let host_issuers: Api<DynamicObject> = Api::all_with(host.clone(), &issuer_kind);
    let shared = format!("{}-ca", unique_name("shared"));
    host_issuers
        .create(
            &Default::default(),
            &dynamic(json!({
                "apiVersion": format!("{group}/v1"), "kind": "ClusterIssuer",
                "metadata": {"name": shared},
                "spec": {"ca": {"secretName": "root"}},
            })),
        )
        .await
        .unwrap();
    let virtual_issuers: Api<DynamicObject> = Api::all_with(running.virt.clone(), &issuer_kind);
    virtual_issuers
        .create(
            &Default::default(),
            &dynamic(json!({
                "apiVersion": format!("{group}/v1"), "kind": "ClusterIssuer",
                "metadata": {"name": "tenants-own"},
                "spec": {"selfSigned": {}},
            })),
        )
        .await
        .unwrap();
    let shown = eventually("the host ClusterIssuer in the virtual cluster", || async {
        virtual_issuers.get_opt(&shared).await.unwrap()
    })
    .await;
    assert_eq!(shown.labels()["virtualcluster.dev/from-host"], "true");
    assert_eq!(shown.data["spec"]["ca"]["secretName"], "root");
    host_issuers
        .patch(
            &shared,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"ca": {"secretName": "rotated"}}})),
        )
        .await
        .unwrap();
    eventually("the host's edit shown", || async {
        let shown = virtual_issuers.get(&shared).await.unwrap();
        (shown.data["spec"]["ca"]["secretName"] == "rotated").then_some(())
    })
    .await;
    host_issuers
        .delete(&shared, &DeleteParams::default())
        .await
        .unwrap();
    wait_gone("the shown ClusterIssuer", &virtual_issuers, &shared).await;
    assert!(
        virtual_issuers
            .get_opt("tenants-own")
            .await
            .unwrap()
            .is_some(),
        "the virtual cluster's own ClusterIssuer stays"
    );

    // A namespaced kind from the host: the instance's own namespace's Issuers, shown in shop.
    let host_ns_issuers: Api<DynamicObject> = Api::namespaced_with(
        host.clone(),
        &id.namespace,
        &resource(&group, "issuers", "Issuer"),
    );
    host_ns_issuers
        .create(
            &Default::default(),
            &dynamic(json!({
                "apiVersion": format!("{group}/v1"), "kind": "Issuer",
                "metadata": {"name": "team-ca"},
                "spec": {"ca": {"secretName": "team"}},
            })),
        )
        .await
        .unwrap();
    let virtual_ns_issuers: Api<DynamicObject> = Api::namespaced_with(
        running.virt.clone(),
        "shop",
        &resource(&group, "issuers", "Issuer"),
    );
    let shown = eventually_within(
        "the host Issuer in virtual namespace shop",
        LONG,
        || async { virtual_ns_issuers.get_opt("team-ca").await.ok().flatten() },
    )
    .await;
    assert_eq!(shown.data["spec"]["ca"]["secretName"], "team");

    // Reading another host namespace's objects is refused at the operator.
    let foreign = json!({
        "apiVersion": "virtualcluster.dev/v1alpha1", "kind": "VirtualCluster",
        "metadata": {"name": id.name},
        "spec": {"sync": {"fromHost": {"customResources": {&issuers: {
            "enabled": true,
            "mappings": {"byName": {"kube-system/*": "shop/*"}},
        }}}}},
    });
    vcs.patch(
        &id.name,
        &PatchParams::apply("custom-resources-test"),
        &Patch::Apply(&foreign),
    )
    .await
    .unwrap();
    let message = invalid(&vcs, &id.name, "CustomResourceNotAllowed").await;
    assert!(message.contains("kube-system/*"), "{message}");
    // A kind the platform does not list is refused too.
    let unlisted = json!({
        "apiVersion": "virtualcluster.dev/v1alpha1", "kind": "VirtualCluster",
        "metadata": {"name": id.name},
        "spec": {"sync": {"fromHost": {"customResources": {&issuers: {
            "enabled": true,
            "mappings": {"byName": {format!("{}/*", id.namespace): "shop/*"}},
        }, "secrets.example.com": {"enabled": true, "scope": "Cluster"}}}}},
    });
    vcs.patch(
        &id.name,
        &PatchParams::apply("custom-resources-test").force(),
        &Patch::Apply(&unlisted),
    )
    .await
    .unwrap();
    // (The condition has that reason already: wait for the message of this spec.)
    eventually("the unlisted kind refused", || async {
        let message = invalid(&vcs, &id.name, "CustomResourceNotAllowed").await;
        message.contains("secrets.example.com").then_some(())
    })
    .await;

    // The instance's delete removes its copies; the host's own objects stay.
    let _ = stop_syncer(&running);
    vcs.delete(&id.name, &DeleteParams::default())
        .await
        .unwrap();
    eventually_within("the VirtualCluster, after its cleanup", LONG, || async {
        vcs.get_opt(&id.name).await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(
        host_certs.get_opt(&host_name).await.unwrap().is_none(),
        "the Certificate's host copy is gone with the instance"
    );
    assert!(
        host_ns_issuers.get_opt("team-ca").await.unwrap().is_some(),
        "the host's own Issuer stays"
    );
}
