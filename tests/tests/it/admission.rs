//! Admission of VirtualCluster objects by a real API server with the committed CRD: a table of
//! valid and invalid manifests, immutability on update, the seeds' samples, defaults, and a
//! comparison of the CEL rules with the shared Rust rules over generated mappings.

use std::collections::BTreeMap;

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};
use virtualcluster_crds::VirtualCluster;
use virtualcluster_crds::mapping::{self, Instance, Rule, field};
use virtualcluster_crds::v1alpha1::{NamespaceMappings, NamespaceSync, VirtualClusterSpec};
use virtualcluster_tests::harness::eventually;
use virtualcluster_tests::{crd, shared_cluster};

/// A client, and a fresh namespace with the CRD installed.
async fn setup(prefix: &str) -> (Api<DynamicObject>, String) {
    let cluster = shared_cluster().await;
    let client = cluster.client().await;
    crd::install(&client).await.expect("installing the CRD");
    let namespace = cluster.namespace(prefix).await;
    let resource = ApiResource::erase::<VirtualCluster>(&());
    (
        Api::namespaced_with(client, &namespace, &resource),
        namespace,
    )
}

fn manifest(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "virtualcluster.dev/v1alpha1",
        "kind": "VirtualCluster",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

/// Creates a VirtualCluster; the API server's message when it refuses.
async fn create(
    api: &Api<DynamicObject>,
    name: &str,
    spec: Value,
    dry_run: bool,
) -> Result<DynamicObject, String> {
    let params = PostParams {
        dry_run,
        ..Default::default()
    };
    api.create(&params, &manifest(name, spec))
        .await
        .map_err(|err| match err {
            kube::Error::Api(status) => status.message,
            other => panic!("unexpected error creating {name}: {other}"),
        })
}

fn namespaces(enabled: bool, only: bool, pairs: &[(&str, &str)]) -> Value {
    let by_name: BTreeMap<&str, &str> = pairs.iter().copied().collect();
    json!({"sync": {"toHost": {"namespaces": {
        "enabled": enabled, "mappingsOnly": only, "mappings": {"byName": by_name},
    }}}})
}

fn mapped(pairs: &[(&str, &str)]) -> Value {
    namespaces(true, false, pairs)
}

enum Expect {
    Accepted,
    /// Refused, with a message that contains each fragment (the field and the rule).
    Refused(&'static str, &'static str),
}
use Expect::{Accepted, Refused};

fn by_name(rule: Rule) -> Expect {
    Refused(field::BY_NAME, rule.message())
}

#[tokio::test]
async fn admission_table() {
    let (api, _) = setup("admission").await;
    let long63 = "h".repeat(63);
    let long64 = "v".repeat(64);
    let prefix32 = format!("{}*", "h".repeat(32));
    let prefix33 = format!("{}*", "h".repeat(33));
    let vprefix33 = format!("{}*", "v".repeat(33));
    let host60 = format!("{}-${{name}}", "h".repeat(60));
    let too_many: Vec<(String, String)> = (0..33)
        .map(|i| (format!("v{i}"), format!("h{i}")))
        .collect();
    let too_many: Vec<(&str, &str)> = too_many
        .iter()
        .map(|(v, h)| (v.as_str(), h.as_str()))
        .collect();
    let name53 = format!("n{}", "a".repeat(52));

    let cases: Vec<(&str, &str, Value, Expect)> = vec![
        // Accepted
        ("empty spec", "vc", json!({}), Accepted),
        (
            "mapping-demo",
            "mapping-demo",
            mapped(&[
                ("frontend-prod", "customer-project-alpha-prod"),
                ("team-a-*", "h-team-a-*"),
                ("datasets-*", "${name}-data-*"),
            ]),
            Accepted,
        ),
        (
            "strict-vc",
            "strict-vc",
            namespaces(
                true,
                true,
                &[
                    ("synced-*", "host-${name}-synced-*"),
                    ("important-configs", "host-configs-critical"),
                ],
            ),
            Accepted,
        ),
        (
            "test-cleanup",
            "test-cleanup",
            mapped(&[("sync-*", "host-*")]),
            Accepted,
        ),
        (
            "bare virtual star",
            "vc",
            mapped(&[("*", "vc-*")]),
            Accepted,
        ),
        (
            "${name} as the whole host",
            "vc",
            mapped(&[("a", "${name}")]),
            Accepted,
        ),
        (
            "${name} inside a host pattern",
            "vc",
            mapped(&[("a-*", "x-${name}-*")]),
            Accepted,
        ),
        (
            "63-character host",
            "vc",
            mapped(&[("a", &long63)]),
            Accepted,
        ),
        (
            "32-character host prefix",
            "vc",
            mapped(&[("a*", &prefix32)]),
            Accepted,
        ),
        (
            "disabled without mappings",
            "vc",
            namespaces(false, false, &[]),
            Accepted,
        ),
        (
            "disjoint patterns",
            "vc",
            mapped(&[("a-*", "h-a-*"), ("b-*", "h-b-*"), ("c", "h-c")]),
            Accepted,
        ),
        (
            "names near reserved ones",
            "vc",
            mapped(&[("a", "kube"), ("b", "defaults")]),
            Accepted,
        ),
        (
            "pod options",
            "vc",
            json!({"sync": {"toHost": {"pods": {"enforceTolerations": ["example-key=example-value:NoSchedule", "another-key:PreferNoSchedule", "key"], "translateImage": {"virtualcluster/image:tag": "hostcluster/alternative-image:tag"}}}}}),
            Accepted,
        ),
        (
            "all secrets and configmaps",
            "vc",
            json!({"sync": {"toHost": {"secrets": {"all": true}, "configMaps": {"all": true}}}}),
            Accepted,
        ),
        (
            "every opt-in kind",
            "vc",
            json!({"sync": {"toHost": {"serviceAccounts": {"enabled": true}, "ingresses": {"enabled": true}, "networkPolicies": {"enabled": true}, "podDisruptionBudgets": {"enabled": true}, "priorityClasses": {"enabled": true}}, "fromHost": {"nodes": {"enabled": true}, "storageClasses": {"enabled": true}, "ingressClasses": {"enabled": true}}}}),
            Accepted,
        ),
        (
            "control plane settings",
            "vc",
            json!({"controlPlane": {"version": "v1.37.2", "persistence": {"enabled": false}, "service": {"type": "NodePort"}, "serviceCIDR": "10.96.0.0/16"}, "syncer": {"replicas": 3}}),
            Accepted,
        ),
        // Refused: the namespace-sync block
        (
            "enabled without mappings",
            "vc",
            namespaces(true, false, &[]),
            Refused(field::NAMESPACES, Rule::MappingsRequired.message()),
        ),
        (
            "mappingsOnly without enabled",
            "vc",
            namespaces(false, true, &[("a", "b")]),
            Refused(field::NAMESPACES, Rule::MappingsOnlyNeedsEnabled.message()),
        ),
        (
            "star in the middle",
            "vc",
            mapped(&[("a*b", "c*")]),
            by_name(Rule::PatternShape),
        ),
        (
            "two stars",
            "vc",
            mapped(&[("a**", "c**")]),
            by_name(Rule::PatternShape),
        ),
        (
            "star first",
            "vc",
            mapped(&[("*a", "h-*a")]),
            by_name(Rule::PatternShape),
        ),
        (
            "exact to pattern",
            "vc",
            mapped(&[("a", "c*")]),
            by_name(Rule::MixedMapping),
        ),
        (
            "pattern to exact",
            "vc",
            mapped(&[("a*", "c")]),
            by_name(Rule::MixedMapping),
        ),
        (
            "bare host star",
            "vc",
            mapped(&[("a*", "*")]),
            by_name(Rule::EmptyHostPrefix),
        ),
        (
            "${name} on the virtual side",
            "vc",
            mapped(&[("${name}-a", "x")]),
            by_name(Rule::PlaceholderOnVirtualSide),
        ),
        (
            "unknown placeholder",
            "vc",
            mapped(&[("a", "${foo}-x")]),
            by_name(Rule::Placeholder),
        ),
        (
            "${name} twice",
            "vc",
            mapped(&[("a", "${name}-${name}")]),
            by_name(Rule::Placeholder),
        ),
        (
            "uppercase virtual",
            "vc",
            mapped(&[("Team", "x")]),
            by_name(Rule::VirtualName),
        ),
        (
            "64-character virtual",
            "vc",
            mapped(&[(&long64, "x")]),
            by_name(Rule::VirtualName),
        ),
        (
            "33-character virtual prefix",
            "vc",
            mapped(&[(&vprefix33, "x-*")]),
            by_name(Rule::VirtualName),
        ),
        (
            "virtual system namespace",
            "vc",
            mapped(&[("kube-system", "x")]),
            by_name(Rule::SystemVirtualNamespace),
        ),
        (
            "uppercase host",
            "vc",
            mapped(&[("a", "X")]),
            by_name(Rule::HostName),
        ),
        (
            "host ends in a dash",
            "vc",
            mapped(&[("a", "x-")]),
            by_name(Rule::HostName),
        ),
        (
            "${name} makes the host too long",
            "vc1",
            mapped(&[("a", &host60)]),
            by_name(Rule::HostName),
        ),
        (
            "33-character host prefix",
            "vc",
            mapped(&[("a*", &prefix33)]),
            by_name(Rule::HostName),
        ),
        (
            "host kube-system",
            "vc",
            mapped(&[("a", "kube-system")]),
            by_name(Rule::ReservedHostNamespace),
        ),
        (
            "host kube-public",
            "vc",
            mapped(&[("a", "kube-public")]),
            by_name(Rule::ReservedHostNamespace),
        ),
        (
            "host kube-node-lease",
            "vc",
            mapped(&[("a", "kube-node-lease")]),
            by_name(Rule::ReservedHostNamespace),
        ),
        (
            "host default",
            "vc",
            mapped(&[("a", "default")]),
            by_name(Rule::ReservedHostNamespace),
        ),
        (
            "host kube-flannel",
            "vc",
            mapped(&[("a", "kube-flannel")]),
            by_name(Rule::ReservedHostNamespace),
        ),
        (
            "host pattern ku*, which could match kube-system",
            "vc",
            mapped(&[("a*", "ku*")]),
            by_name(Rule::ReservedHostNamespace),
        ),
        (
            "host pattern kube-*",
            "vc",
            mapped(&[("a*", "kube-*")]),
            by_name(Rule::ReservedHostNamespace),
        ),
        (
            "${name} becomes default",
            "default",
            mapped(&[("a", "${name}")]),
            by_name(Rule::ReservedHostNamespace),
        ),
        (
            "same host twice",
            "vc",
            mapped(&[("a", "x"), ("b", "x")]),
            by_name(Rule::DuplicateHostNamespace),
        ),
        (
            "same host through ${name}",
            "vc",
            mapped(&[("a", "vc-x"), ("b", "${name}-x")]),
            by_name(Rule::DuplicateHostNamespace),
        ),
        (
            "exact host a pattern matches",
            "vc",
            mapped(&[("a*", "h-*"), ("b", "h-b")]),
            by_name(Rule::DuplicateHostNamespace),
        ),
        (
            "pattern prefix starts another",
            "vc",
            mapped(&[("a*", "h-*"), ("b*", "h-b-*")]),
            by_name(Rule::DuplicateHostNamespace),
        ),
        (
            "equal host patterns",
            "vc",
            mapped(&[("a*", "h-*"), ("b*", "h-*")]),
            by_name(Rule::DuplicateHostNamespace),
        ),
        (
            "too many mappings",
            "vc",
            mapped(&too_many),
            Refused(field::BY_NAME, "must have at most 24 items"),
        ),
        // Patches
        (
            "documented pod patches",
            "vc",
            json!({"sync": {"toHost": {"pods": {"patches": [
                {"path": "spec.containers[*].name", "expression": "\"my-prefix-\"+value",
                 "reverseExpression": "value.slice(\"my-prefix-\".length)"},
                {"path": "metadata.annotations[\"my-secret-ref\"]",
                 "reference": {"apiVersion": "v1", "kind": "Secret"}},
            ]}}}}),
            Accepted,
        ),
        (
            "patch without an expression or reference",
            "vc",
            json!({"sync": {"toHost": {"configMaps": {"patches": [{"path": "data.x"}]}}}}),
            Refused(
                "spec.sync.toHost.configMaps.patches[0]",
                "a patch needs an expression, a reverseExpression or a reference",
            ),
        ),
        (
            "patch with both an expression and a reference",
            "vc",
            json!({"sync": {"toHost": {"pods": {"patches": [{"path": "spec.x", "expression": "1",
                "reference": {"apiVersion": "v1", "kind": "Secret"}}]}}}}),
            Refused(
                "spec.sync.toHost.pods.patches[0]",
                "a patch has either expressions or a reference, not both",
            ),
        ),
        (
            "reference to a kind that is not renamed",
            "vc",
            json!({"sync": {"toHost": {"pods": {"patches": [{"path": "spec.x",
                "reference": {"apiVersion": "apps/v1", "kind": "Deployment"}}]}}}}),
            Refused(
                "spec.sync.toHost.pods.patches[0].reference",
                "a reference names a v1 object of kind ConfigMap, Secret",
            ),
        ),
        // Custom resources
        (
            "the cert-manager example's custom resources",
            "vc",
            json!({"sync": {
                "toHost": {"customResources": {
                    "certificates.cert-manager.io": {"enabled": true,
                        "selector": {"labels": {"app": "web"}}},
                    "issuers.cert-manager.io": {"enabled": true},
                }},
                "fromHost": {"customResources": {
                    "clusterissuers.cert-manager.io": {"enabled": true, "scope": "Cluster"},
                    "issuers.cert-manager.io": {"enabled": true,
                        "mappings": {"byName": {"team-a/*": "default/*", "team-a/ca": "shop/ca"}}},
                }},
            }}),
            Accepted,
        ),
        (
            "custom resource not named plural.group",
            "vc",
            json!({"sync": {"toHost": {"customResources": {"Certificates": {"enabled": true}}}}}),
            Refused(
                "spec.sync.toHost.customResources",
                "a custom resource is named plural.group",
            ),
        ),
        (
            "cluster-scoped custom resource to the host",
            "vc",
            json!({"sync": {"toHost": {"customResources": {
                "clusterissuers.cert-manager.io": {"enabled": true, "scope": "Cluster"}}}}}),
            Refused(
                "spec.sync.toHost.customResources[clusterissuers.cert-manager.io]",
                "only Namespaced custom resources are synced to the host",
            ),
        ),
        (
            "namespaced custom resource from the host without mappings",
            "vc",
            json!({"sync": {"fromHost": {"customResources": {
                "issuers.cert-manager.io": {"enabled": true}}}}}),
            Refused(
                "spec.sync.fromHost.customResources[issuers.cert-manager.io]",
                "a Namespaced custom resource from the host needs mappings.byName",
            ),
        ),
        (
            "custom resource mapping of a name to every name",
            "vc",
            json!({"sync": {"fromHost": {"customResources": {
                "issuers.cert-manager.io": {"enabled": true,
                    "mappings": {"byName": {"team-a/ca": "default/*"}}}}}}}),
            Refused(
                "spec.sync.fromHost.customResources[issuers.cert-manager.io].mappings.byName",
                "each mapping is host namespace/name to virtual namespace/name",
            ),
        ),
        // Refused: the rest of the spec
        (
            "name starts with a digit",
            "1vc",
            json!({}),
            Refused(field::NAME, Rule::InstanceName.message()),
        ),
        (
            "name of 53 characters",
            &name53,
            json!({}),
            Refused(field::NAME, Rule::InstanceName.message()),
        ),
        (
            "bad toleration",
            "vc",
            json!({"sync": {"toHost": {"pods": {"enforceTolerations": ["bad key"]}}}}),
            Refused(
                "spec.sync.toHost.pods.enforceTolerations",
                "each toleration is written",
            ),
        ),
        (
            "bad toleration effect",
            "vc",
            json!({"sync": {"toHost": {"pods": {"enforceTolerations": ["k=v:Sometimes"]}}}}),
            Refused(
                "spec.sync.toHost.pods.enforceTolerations",
                "each toleration is written",
            ),
        ),
        (
            "zero syncer replicas",
            "vc",
            json!({"syncer": {"replicas": 0}}),
            Refused("spec.syncer.replicas", "greater than or equal to 1"),
        ),
        (
            "unknown service type",
            "vc",
            json!({"controlPlane": {"service": {"type": "Ingress"}}}),
            Refused("spec.controlPlane.service.type", "Unsupported value"),
        ),
        (
            "malformed version",
            "vc",
            json!({"controlPlane": {"version": "1.37"}}),
            Refused("spec.controlPlane.version", "should match"),
        ),
    ];
    assert!(cases.len() >= 40);

    let mut failures = Vec::new();
    for (label, name, spec, expect) in cases {
        // Dry-run: every case can use the name its rule needs, and nothing is stored.
        let result = create(&api, name, spec.clone(), true).await;
        match (&expect, &result) {
            (Accepted, Ok(_)) => {}
            (Refused(field, message), Err(got)) if got.contains(field) && got.contains(message) => {
            }
            (Accepted, Err(got)) => failures.push(format!("{label}: refused: {got}")),
            (Refused(field, message), Ok(_)) => {
                failures.push(format!("{label}: accepted, wanted {field}: {message}"))
            }
            (Refused(field, message), Err(got)) => {
                failures.push(format!("{label}: wanted {field}: {message}\n    got {got}"))
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn namespace_sync_is_immutable() {
    let (api, _) = setup("immutable").await;
    let name = "imm";
    create(
        &api,
        name,
        mapped(&[("team-*", "h-team-*"), ("a", "b")]),
        false,
    )
    .await
    .unwrap();
    let plain = "plain";
    create(&api, plain, json!({}), false).await.unwrap();

    let patch = |spec: Value| json!({"spec": spec});
    let changes = [
        (
            name,
            json!({"sync": {"toHost": {"namespaces": {"enabled": false}}}}),
            "turn off",
        ),
        (
            name,
            json!({"sync": {"toHost": {"namespaces": {"mappingsOnly": true}}}}),
            "set mappingsOnly",
        ),
        (
            name,
            json!({"sync": {"toHost": {"namespaces": {"mappings": {"byName": {"c": "d"}}}}}}),
            "add a mapping",
        ),
        (
            name,
            json!({"sync": {"toHost": {"namespaces": {"mappings": {"byName": {"a": null}}}}}}),
            "remove a mapping",
        ),
        (
            name,
            json!({"sync": {"toHost": {"namespaces": {"mappings": {"byName": {"a": "c"}}}}}}),
            "change a host",
        ),
        (plain, mapped(&[("a", "b")]), "turn on"),
    ];
    for (target, spec, what) in changes {
        let err = api
            .patch(target, &PatchParams::default(), &Patch::Merge(patch(spec)))
            .await
            .expect_err(&format!("{what} should be refused"));
        let kube::Error::Api(status) = err else {
            panic!("{what}: {err}")
        };
        assert!(
            status.message.contains(field::NAMESPACES)
                && status.message.contains(Rule::Immutable.message()),
            "{what}: {}",
            status.message
        );
    }

    // Everything outside the block may change, and re-stating the block is no change.
    let ok = patch(
        json!({"syncer": {"replicas": 2}, "sync": {"toHost": {"namespaces": {"enabled": true}}}}),
    );
    let after = api
        .patch(name, &PatchParams::default(), &Patch::Merge(ok))
        .await
        .unwrap();
    assert_eq!(after.data["spec"]["syncer"]["replicas"], 2);
    assert_eq!(
        after.data["spec"]["sync"]["toHost"]["namespaces"]["mappings"]["byName"]["a"],
        "b"
    );
}

/// A vcluster.yaml `sync` section with keys this version has no field for is refused, by any
/// client, naming the field and the keys; it is not stored with them dropped.
#[tokio::test]
async fn unsupported_sync_keys_are_refused_not_dropped() {
    let (api, _) = setup("sync-keys").await;
    let cases = [
        (
            json!({"sync": {"toHost": {"endpoints": {"enabled": true, "patches": [
                {"path": "metadata.labels[\"team\"]", "expression": "'a'"},
            ]}}}}),
            "spec.sync.toHost.endpoints: patches not supported",
        ),
        (
            json!({"sync": {"toHost": {"pods": {"patches": [
                {"path": "spec.x", "expression": "1"},
                {"path": "metadata.annotations[\"r\"]", "reference": {
                    "apiVersion": "v1", "kind": "Secret", "labels": {}}},
            ]}}}}),
            "spec.sync.toHost.pods.patches[*].reference: labels not supported",
        ),
        (
            json!({"sync": {"toHost": {"volumeSnapshots": {"enabled": true}}}}),
            "spec.sync.toHost: volumeSnapshots not supported",
        ),
        (
            json!({"sync": {"toHost": {"customResources": {
                "certificates.cert-manager.io": {"enabled": true, "namespaced": true},
            }}}}),
            "spec.sync.toHost.customResources[*]: namespaced not supported",
        ),
        (
            json!({"sync": {"fromHost": {"csiDrivers": {"enabled": true}}}}),
            "spec.sync.fromHost: csiDrivers not supported",
        ),
        (
            json!({"sync": {"toHost": {"services": {"enabled": true, "patches": [
                {"path": "spec.x", "expression": "1", "apiVersionPath": "x"},
            ]}}}}),
            "spec.sync.toHost.services.patches[*]: apiVersionPath not supported",
        ),
        (
            json!({"sync": {"generic": {"export": []}}}),
            "spec.sync: generic not supported",
        ),
    ];
    for (i, (spec, want)) in cases.into_iter().enumerate() {
        // The policy takes effect a moment after it is first installed; dry runs leave nothing.
        let message = eventually(&format!("{want:?} refused"), || {
            let (api, spec) = (api.clone(), spec.clone());
            async move {
                create(&api, &format!("unsupported-{i}"), spec, true)
                    .await
                    .err()
            }
        })
        .await;
        assert!(message.contains(want), "{message}");
        assert!(message.contains("(supported here: "), "{message}");
    }

    // Two unsupported keys are both named.
    let message = create(
        &api,
        "two",
        json!({"sync": {"fromHost": {"csiNodes": {}, "runtimeClasses": {}}}}),
        true,
    )
    .await
    .unwrap_err();
    assert!(
        message.contains("csiNodes") && message.contains("runtimeClasses"),
        "{message}"
    );

    // Supported keys, maps with any keys among them, are stored as given.
    let spec = json!({"sync": {
        "toHost": {"pods": {"translateImage": {"patches/x:1": "y:2"}}, "ingresses": {"enabled": true}},
        "fromHost": {"nodes": {"enabled": false}},
    }});
    let stored = create(&api, "supported", spec, false).await.unwrap();
    assert_eq!(
        stored.data["spec"]["sync"]["toHost"]["pods"]["translateImage"]["patches/x:1"],
        "y:2"
    );
    // An update that adds an unsupported key is refused too, and the object stays as it was.
    let err = api
        .patch(
            "supported",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"sync": {"toHost": {"pods": {"rewriteHosts": {"enabled": true}}}}}})),
        )
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("{err}")
    };
    assert!(
        status
            .message
            .contains("spec.sync.toHost.pods: rewriteHosts not supported"),
        "{}",
        status.message
    );
    let now = api.get("supported").await.unwrap();
    assert!(
        now.data["spec"]["sync"]["toHost"]["pods"]
            .get("rewriteHosts")
            .is_none(),
        "{:?}",
        now.data
    );
}

#[tokio::test]
async fn server_defaults_match_the_rust_defaults() {
    let (api, _) = setup("defaults").await;
    let created = create(&api, "defaults", json!({}), false).await.unwrap();
    assert_eq!(
        created.data["spec"],
        serde_json::to_value(VirtualClusterSpec::default()).unwrap()
    );
    // The documented defaults, spelled out.
    let to_host = &created.data["spec"]["sync"]["toHost"];
    for on in [
        "pods",
        "services",
        "endpoints",
        "configMaps",
        "secrets",
        "persistentVolumeClaims",
    ] {
        assert_eq!(to_host[on]["enabled"], true, "{on}");
    }
    for off in [
        "serviceAccounts",
        "ingresses",
        "networkPolicies",
        "podDisruptionBudgets",
        "priorityClasses",
        "namespaces",
    ] {
        assert_eq!(to_host[off]["enabled"], false, "{off}");
    }
    let from_host = &created.data["spec"]["sync"]["fromHost"];
    assert_eq!(from_host["events"]["enabled"], true);
    for off in ["nodes", "storageClasses", "ingressClasses"] {
        assert_eq!(from_host[off]["enabled"], false, "{off}");
    }
    assert_eq!(to_host["secrets"]["all"], false);
}

#[tokio::test]
async fn seed_samples_are_accepted() {
    let cluster = shared_cluster().await;
    let client = cluster.client().await;
    crd::install(&client).await.unwrap();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/samples");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut applied = 0;
    let mut mappers = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let obj: DynamicObject = serde::Deserialize::deserialize(doc).unwrap();
            let types = obj.types.clone().unwrap();
            let (group, version) = types
                .api_version
                .split_once('/')
                .unwrap_or(("", &types.api_version));
            let gvk = kube::api::GroupVersionKind::gvk(group, version, &types.kind);
            let resource = ApiResource::from_gvk(&gvk);
            let name = obj.metadata.name.clone().unwrap();
            let api: Api<DynamicObject> = match &obj.metadata.namespace {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
                None => Api::all_with(client.clone(), &resource),
            };
            api.patch(
                &name,
                &PatchParams::apply("virtualcluster-tests").force(),
                &Patch::Apply(&obj),
            )
            .await
            .unwrap_or_else(|err| panic!("{}: {name}: {err}", path.display()));
            if types.kind == "VirtualCluster" {
                // The shared rules agree, including the one CEL cannot check (own namespace).
                let vc: VirtualCluster =
                    serde_json::from_value(serde_json::to_value(&obj).unwrap()).unwrap();
                let instance = Instance {
                    name: &name,
                    namespace: obj.metadata.namespace.as_deref().unwrap(),
                };
                let mapper = mapping::validate(&vc.spec.sync.to_host.namespaces, instance)
                    .unwrap_or_else(|v| panic!("{}: {v}", path.display()));
                mappers.push((path.clone(), mapper));
                applied += 1;
            }
        }
    }
    assert!(
        applied >= 5,
        "only {applied} sample VirtualClusters in {dir}"
    );
    // Applied together (as the demo does), no two claim the same host namespace: the operator
    // would fail the second one.
    for (i, (a_path, a)) in mappers.iter().enumerate() {
        for (b_path, b) in &mappers[i + 1..] {
            if let Some((a_side, b_side)) = a.overlapping_host(b) {
                panic!(
                    "{} and {} both claim host namespaces: {a_side:?} and {b_side:?}",
                    a_path.display(),
                    b_path.display()
                );
            }
        }
    }
}

#[tokio::test]
async fn kubectl_apply_names_the_field_and_the_rule() {
    let cluster = shared_cluster().await;
    let (_, namespace) = setup("kubectl").await;
    let path = cluster.dir().join(format!("{namespace}-bad.yaml"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: virtualcluster.dev/v1alpha1\nkind: VirtualCluster\nmetadata:\n  name: bad\n  namespace: {namespace}\nspec:\n  sync:\n    toHost:\n      namespaces:\n        enabled: true\n        mappings:\n          byName:\n            \"team-*\": \"team\"\n"
        ),
    )
    .unwrap();
    let out = cluster.kubectl(&["apply", "-f", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "kubectl apply should fail");
    assert!(
        stderr.contains(field::BY_NAME) && stderr.contains(Rule::MixedMapping.message()),
        "{stderr}"
    );
}

/// The CEL rules and `mapping::validate` agree on generated configurations: the API server
/// accepts exactly those the Rust rules accept (leaving out the own-namespace rule, which CEL
/// cannot see), and when it refuses, its message names every rule the Rust side found broken.
#[tokio::test]
async fn cel_rules_agree_with_the_shared_rules() {
    let (api, namespace) = setup("agree").await;
    let mut runner = TestRunner::deterministic();
    let strategy = mapping::strategies::pairs();
    let (mut accepted, mut refused) = (0, 0);
    let mut disagreements = Vec::new();
    for i in 0..200 {
        let table = strategy.new_tree(&mut runner).unwrap().current();
        let name = format!("agree{i}");
        let config = NamespaceSync {
            enabled: true,
            mappings_only: false,
            mappings: NamespaceMappings {
                by_name: table.clone(),
            },
        };
        let expected: Vec<Rule> = match mapping::validate(
            &config,
            Instance {
                name: &name,
                namespace: &namespace,
            },
        ) {
            Ok(_) => Vec::new(),
            Err(v) => {
                v.0.iter()
                    .map(|v| v.rule)
                    .filter(|r| *r != Rule::OwnNamespace)
                    .collect()
            }
        };
        let spec = json!({"sync": {"toHost": {"namespaces": {"enabled": true, "mappings": {"byName": table}}}}});
        match create(&api, &name, spec, true).await {
            Ok(_) if expected.is_empty() => accepted += 1,
            Ok(_) => disagreements.push(format!(
                "{table:?}: server accepted, Rust found {expected:?}"
            )),
            Err(message) if expected.is_empty() => {
                disagreements.push(format!("{table:?}: Rust accepted, server said {message}"))
            }
            Err(message) => {
                refused += 1;
                for rule in expected {
                    if !message.contains(rule.message()) {
                        disagreements.push(format!(
                            "{table:?}: server did not name {rule:?}: {message}"
                        ));
                    }
                }
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} disagreements:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    // The generator must exercise both sides for the comparison to mean anything.
    assert!(
        accepted >= 20 && refused >= 20,
        "accepted {accepted}, refused {refused}"
    );
}
