//! The committed CRD YAML is exactly what the Rust types generate.

#[test]
fn committed_crd_matches_the_types() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/virtualcluster.yaml");
    let committed = std::fs::read_to_string(path).expect("crds/virtualcluster.yaml is committed");
    let generated = virtualcluster_crds::v1alpha1::crd_yaml();
    assert!(
        committed == generated,
        "crds/virtualcluster.yaml is out of date with the Rust types; regenerate it with\n  \
         cargo run -q -p virtualcluster-crds --bin crdgen > crds/virtualcluster.yaml"
    );
}

#[test]
fn crd_names_and_columns() {
    use kube::CustomResourceExt;
    let crd = virtualcluster_crds::VirtualCluster::crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("virtualclusters.virtualcluster.dev")
    );
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(
        crd.spec.names.short_names.as_deref(),
        Some(&["vc".to_owned()][..])
    );
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(
        version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some()
    );
    let columns: Vec<&str> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(columns, ["Phase", "Ready", "Age"]);
}

/// `kubectl explain` is only useful when every field says what it is for.
#[test]
fn every_field_has_a_description() {
    fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, sub) in props {
                let here = format!("{path}.{name}");
                // metadata's schema is the API server's own.
                if here != ".metadata" && sub.get("description").is_none() {
                    missing.push(here.clone());
                }
                walk(&here, sub, missing);
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(sub) = schema.get(key) {
                walk(path, sub, missing);
            }
        }
    }
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(virtualcluster_crds::VirtualCluster::crd()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut missing = Vec::new();
    walk("", &schema["properties"]["spec"], &mut missing);
    walk(".status", &schema["properties"]["status"], &mut missing);
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:?}"
    );
}
