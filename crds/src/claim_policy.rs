//! Who may claim host namespaces through a VirtualCluster's namespace mappings. Only the API
//! server knows who creates a VirtualCluster, so it decides, through a ValidatingAdmissionPolicy
//! shipped with the CRD: each host side of `spec.sync.toHost.namespaces.mappings.byName` needs
//! the verb [`CLAIM_VERB`] on the resource [`CLAIM_RESOURCE`] of group [`crate::keys::GROUP`],
//! with the exact host namespace (or, for a pattern, its prefix before `*`, `${name}` resolved)
//! as the resource name, in the VirtualCluster's namespace or cluster-wide. Cluster admins hold
//! it through `*`. Mappings cannot change after creation, so creation is what is checked.
//!
//! One validation per mapping: an authorization check costs 350,000 of an expression's
//! 1,000,000 and of a policy's 10,000,000, and a message cannot ask the authorizer, so each
//! validation checks and names one host side ([`crate::v1alpha1::cel::MAX_MAPPINGS`] of them).

use serde_json::json;

use crate::keys::GROUP;
use crate::policy_docs;
use crate::v1alpha1::cel::MAX_MAPPINGS;

/// What the API server charges for one authorization check, and a policy's budget per request.
const CHECK_COST: usize = 350_000;
const POLICY_BUDGET: usize = 10_000_000;
// Every check of a full set of mappings fits the budget, with room for the rest of the policy.
const _: () = assert!(CHECK_COST * MAX_MAPPINGS <= POLICY_BUDGET - 1_000_000);

/// The verb a user needs to claim a host namespace.
pub const CLAIM_VERB: &str = "claim";
/// The (virtual) resource whose names are the host namespaces, or prefixes, one may claim.
pub const CLAIM_RESOURCE: &str = "hostnamespaces";
/// Name of the policy and of its binding as `crds/claim-policy.yaml` (and so kustomize) names
/// them; the chart names them after its release, so that releases never own the same object.
pub const POLICY_NAME: &str = "virtualcluster-operator-claim-host-namespaces";

/// The policy and its binding as YAML documents, exactly as committed in
/// `crds/claim-policy.yaml`.
pub fn yaml() -> String {
    yaml_named(POLICY_NAME)
}

/// [`yaml`] with the policy and its binding named `name` (the chart passes a template).
pub fn yaml_named(name: &str) -> String {
    let byname = "object.spec.sync.toHost.namespaces.mappings.byName";
    let mappings = format!(
        "has(object.spec.sync) && has(object.spec.sync.toHost) \
         && has(object.spec.sync.toHost.namespaces) \
         && has(object.spec.sync.toHost.namespaces.enabled) \
         && object.spec.sync.toHost.namespaces.enabled \
         && has(object.spec.sync.toHost.namespaces.mappings) \
         && has({byname}) ? {byname} : {{}}"
    );
    let claims = "variables.mappings.map(k, variables.mappings[k]\
                  .replace('${name}', object.metadata.name).replace('*', ''))";
    let validations: Vec<_> = (0..MAX_MAPPINGS)
        .map(|i| {
            json!({
                "expression": format!(
                    "size(variables.claims) <= {i} || authorizer.group('{GROUP}')\
                     .resource('{CLAIM_RESOURCE}').namespace(request.namespace)\
                     .name(variables.claims[{i}]).check('{CLAIM_VERB}').allowed()"
                ),
                "reason": "Forbidden",
                "messageExpression": format!(
                    "'spec.sync.toHost.namespaces.mappings.byName: claiming host namespace ' \
                     + variables.claims[{i}] + ' needs the permission {CLAIM_VERB} on \
                     {CLAIM_RESOURCE}.{GROUP} with that resource name (for a pattern, the \
                     prefix before *), granted in namespace ' + request.namespace + ' or \
                     cluster-wide'"
                ),
            })
        })
        .collect();
    let docs = policy_docs::policy_and_binding(
        name,
        json!({
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [GROUP],
                "apiVersions": ["*"],
                "resources": ["virtualclusters"],
                "operations": ["CREATE"],
            }]},
            "variables": [
                {"name": "mappings", "expression": mappings},
                {"name": "claims", "expression": claims},
            ],
            "validations": validations,
        }),
    );
    policy_docs::generated_yaml(
        "crds/src/claim_policy.rs",
        "Who may claim host namespaces through namespace mappings",
        docs,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mapping_has_its_own_check_within_the_cost_budget() {
        let docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&yaml())
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        assert_eq!(docs.len(), 2);
        let validations = docs[0]["spec"]["validations"].as_array().unwrap();
        assert_eq!(validations.len(), MAX_MAPPINGS);
        let last = validations[MAX_MAPPINGS - 1]["expression"]
            .as_str()
            .unwrap();
        assert!(last.contains(&format!("variables.claims[{}]", MAX_MAPPINGS - 1)));
        assert_eq!(docs[1]["spec"]["policyName"], POLICY_NAME);
    }
}
