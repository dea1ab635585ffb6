//! What the files of objects shipped with the CRD share: each admission policy fails closed
//! and is bound to deny, and each file is generated from its Rust source with a header saying
//! so.

use serde_json::{Value, json};

/// A ValidatingAdmissionPolicy named `name` with `spec` (its failure policy set to `Fail`),
/// and the binding that makes it deny.
pub fn policy_and_binding(name: &str, mut spec: Value) -> [Value; 2] {
    spec["failurePolicy"] = json!("Fail");
    let policy = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": spec,
    });
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"]},
    });
    [policy, binding]
}

/// `docs` as a YAML file generated from `source`, whose header says `what` it holds.
pub fn generated_yaml(source: &str, what: &str, docs: impl IntoIterator<Item = Value>) -> String {
    let mut out = format!(
        "# Generated from {source} by `cargo run -q -p virtualcluster-tests --bin update-generated`; do not edit.\n\
         # {what} (see {source}).\n"
    );
    for doc in docs {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&doc).expect("a generated object always serializes"));
    }
    out
}
