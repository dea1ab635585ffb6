//! `mappingsOnly`: the virtual API server itself refuses namespaces no mapping matches, and
//! workloads in namespaces no mapping matches (the system namespaces excepted, which sync the
//! default way), through a ValidatingAdmissionPolicy the syncer installs into the virtual
//! cluster. Nothing is refused later, in the syncer, where a user would not see it.

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use kube::{Api, Client};
use virtualcluster_crds::mapping::{NamespaceMapper, SYSTEM_VIRTUAL_NAMESPACES, Side};

use crate::copy;

pub const POLICY: &str = "virtualcluster-mappings-only";

/// What is refused outside mapped namespaces: namespaces themselves, and workloads (what makes
/// pods). Not the objects the virtual cluster makes for itself in every namespace (the
/// `default` ServiceAccount, the `kube-root-ca.crt` ConfigMap, the `kubernetes` Service).
const RESOURCES: &[(&str, &[&str])] = &[
    ("", &["namespaces", "pods"]),
    (
        "apps",
        &["deployments", "statefulsets", "daemonsets", "replicasets"],
    ),
    ("batch", &["jobs", "cronjobs"]),
];

fn cel_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("'{i}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// The CEL test of whether namespace `ns` (a CEL expression) is allowed.
fn allowed(mapper: &NamespaceMapper, ns: &str) -> String {
    let mut exact: Vec<String> = SYSTEM_VIRTUAL_NAMESPACES
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let mut prefixes = Vec::new();
    for m in mapper.mappings() {
        match &m.virtual_side {
            Side::Exact(name) => exact.push(name.clone()),
            Side::Pattern(prefix) => prefixes.push(prefix.clone()),
        }
    }
    format!(
        "({ns} in {}) || {}.exists(p, {ns}.startsWith(p))",
        cel_list(&exact),
        cel_list(&prefixes)
    )
}

/// The allowed names and patterns, for the message.
fn allowed_text(mapper: &NamespaceMapper) -> String {
    mapper
        .mappings()
        .iter()
        .map(|m| m.virtual_side.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn policy(
    mapper: &NamespaceMapper,
) -> (ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding) {
    let rules: Vec<serde_json::Value> = RESOURCES
        .iter()
        .map(|(group, resources)| {
            serde_json::json!({
                "apiGroups": [group], "apiVersions": ["*"], "operations": ["CREATE"],
                "resources": resources,
            })
        })
        .collect();
    let allowed_names = allowed_text(mapper);
    let policy = serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": POLICY},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": rules},
            "validations": [
                {
                    "expression": format!(
                        "request.kind.kind != 'Namespace' || {}",
                        allowed(mapper, "object.metadata.name")
                    ),
                    "messageExpression": format!(
                        "'namespace ' + object.metadata.name + ' matches no namespace mapping of this virtual cluster (mappingsOnly); allowed names and patterns: {allowed_names}'"
                    ),
                    "reason": "Forbidden",
                },
                {
                    "expression": format!(
                        "request.kind.kind == 'Namespace' || {}",
                        allowed(mapper, "request.namespace")
                    ),
                    "messageExpression": format!(
                        "'namespace ' + request.namespace + ' matches no namespace mapping of this virtual cluster (mappingsOnly), so nothing can run in it; allowed names and patterns: {allowed_names}'"
                    ),
                    "reason": "Forbidden",
                }
            ]
        }
    });
    let binding = serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": POLICY},
        "spec": {"policyName": POLICY, "validationActions": ["Deny"]}
    });
    (
        serde_json::from_value(policy).expect("a valid policy"),
        serde_json::from_value(binding).expect("a valid binding"),
    )
}

/// Installs the policy into the virtual cluster (idempotent).
pub async fn install(virt: &Client, mapper: &NamespaceMapper) -> anyhow::Result<()> {
    let (policy, binding) = policy(mapper);
    copy::apply(&Api::all(virt.clone()), &policy).await?;
    copy::apply(&Api::all(virt.clone()), &binding).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_mapped_and_system_namespaces_only() {
        let mapper = crate::translate::mapped_target(true).mapper;
        let (policy, binding) = policy(&mapper);
        let spec = policy.spec.unwrap();
        let validations = spec.validations.unwrap();
        let namespaces = &validations[0].expression;
        assert!(namespaces.contains("'frontend-prod'"), "{namespaces}");
        assert!(namespaces.contains("'kube-system'"), "{namespaces}");
        assert!(
            namespaces.contains("['team-a-', 'datasets-']")
                || namespaces.contains("['datasets-', 'team-a-']"),
            "{namespaces}"
        );
        let message = validations[0].message_expression.clone().unwrap();
        assert!(message.contains("frontend-prod, "), "{message}");
        assert_eq!(binding.spec.policy_name, POLICY);
    }
}
