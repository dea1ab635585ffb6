//! What a syncer may do on the host. It holds nothing cluster-wide but reads of nodes (a fixed
//! ClusterRole, [`nodes_role`], unless its instance syncs kinds that need more) and, with
//! namespace syncing, of namespaces and VirtualClusters. The operator binds it fixed
//! ClusterRoles installed with the CRD: [`own_role`] in its instance's namespace, and
//! [`held_role`] in each host namespace the instance holds, for as long as it holds it. It
//! binds only names it holds `bind` on, so the API server does not compare every rule of every
//! binding with its own. Quota and limits are the operator's to make (never the syncer's).
//!
//! A syncer creates, imports and deletes host namespaces itself, under the admission policy
//! [`namespace_policy`]: it may create a namespace only marked as created by its own instance,
//! delete only one its instance created, and change only its instance's namespaces, or an
//! unmarked one by adding no more than its instance's import marks. The policy knows a syncer
//! by its ServiceAccount, `system:serviceaccount:<instance namespace>:<instance>-syncer`.

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;

use crate::{keys, policy_docs};

/// The prefix of the names below as `crds/syncer-access.yaml` (and so kustomize) has them; the
/// chart uses its release's name, so that releases never own the same object.
pub const DEFAULT_PREFIX: &str = "virtualcluster-operator";
/// Label on the operator's RoleBinding of a held namespace.
pub const BINDING_LABEL: &str = "virtualcluster.dev/syncer-access";
/// Suffix of every syncer's ServiceAccount name (see [`crate::instance::InstanceRef::syncer`]).
pub const SERVICE_ACCOUNT_SUFFIX: &str = "-syncer";

/// The ClusterRole bound in each host namespace an instance holds, for names with `prefix`.
pub fn held_role(prefix: &str) -> String {
    format!("{prefix}-syncer")
}

/// The ClusterRole bound in an instance's own namespace, for the syncer role `held_role`.
pub fn own_role(held_role: &str) -> String {
    format!("{held_role}-own")
}

/// The ClusterRole of a syncer that needs nothing cluster-wide but to read nodes (its virtual
/// nodes mirror them): bound by the operator for each such instance, for the syncer role
/// `held_role`.
pub fn nodes_role(held_role: &str) -> String {
    format!("{held_role}-nodes")
}

/// What [`nodes_role`] grants.
pub fn nodes_rules() -> Vec<PolicyRule> {
    vec![rule(&[""], &["nodes"], READ)]
}

/// The admission policy (and its binding) over syncers' namespace writes, for `prefix`.
pub fn namespace_policy_name(prefix: &str) -> String {
    format!("{prefix}-syncer-namespaces")
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let strings = |s: &[&str]| s.iter().map(|v| (*v).to_owned()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(strings(groups)),
        resources: Some(strings(resources)),
        verbs: strings(verbs),
        ..Default::default()
    }
}

pub const READ: &[&str] = &["get", "list", "watch"];
pub const WRITE: &[&str] = &[
    "get", "list", "watch", "create", "update", "patch", "delete",
];

/// The pod subresources of streams: exec, attach, port-forward.
pub const STREAMING: &[&str] = &["pods/exec", "pods/attach", "pods/portforward"];
/// Where a pod's logs are read.
pub const POD_LOG: &str = "pods/log";
/// Where ephemeral containers (`kubectl debug`) are added to a pod.
pub const EPHEMERAL_CONTAINERS: &str = "pods/ephemeralcontainers";

/// Whether `resource` is one of the pod subresources only the syncer uses on host copies (the
/// kubelet API's logs and streams, ephemeral containers): the operator grants them through
/// the fixed roles it binds, never holding them itself.
pub fn is_syncer_only(resource: &str) -> bool {
    resource == POD_LOG || resource == EPHEMERAL_CONTAINERS || STREAMING.contains(&resource)
}

/// What a syncer does in a host namespace it syncs into: the kinds it copies there (and reads
/// back from a namespace it imported), their status, and the host's Events about them.
pub fn held_rules() -> Vec<PolicyRule> {
    // The copies, one rule per API group, in the table's order.
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for kind in crate::kinds::namespaced_to_host() {
        match groups.iter_mut().find(|(g, _)| *g == kind.group) {
            Some((_, plurals)) => plurals.push(kind.plural.to_string()),
            None => groups.push((kind.group.to_string(), vec![kind.plural.to_string()])),
        }
    }
    let copies = groups.iter().map(|(group, plurals)| {
        let plurals: Vec<&str> = plurals.iter().map(String::as_str).collect();
        rule(&[group], &plurals, WRITE)
    });
    copies
        .chain([
            rule(&[""], &["services/status"], READ),
            // The virtual pods' readiness gate conditions are written to their copies' status.
            rule(&[""], &["pods/status"], &["get", "list", "watch", "patch"]),
            // The kubelet API of the virtual nodes answers on the host copies of pods (see the
            // syncer's `kubelet` module); streams are opened with `create` (and `get`, which
            // older API servers authorize upgraded GETs with).
            rule(&[""], &[POD_LOG], &["get"]),
            rule(&[""], STREAMING, &["get", "create"]),
            // `kubectl debug`: ephemeral containers of virtual pods are added to their copies.
            rule(&[""], &[EPHEMERAL_CONTAINERS], &["patch"]),
            rule(&[""], &["events"], READ),
            rule(&["events.k8s.io"], &["events"], READ),
            // The EndpointSlices of Services whose Endpoints it copies.
            rule(&["discovery.k8s.io"], &["endpointslices"], WRITE),
        ])
        .collect()
}

/// What the operator must hold to grant syncers the custom resources the platform allows
/// (`plural.group` each): write on those synced to the host, read on those shown from it.
/// The chart's `platform.customResources` renders the same rules.
pub fn operator_custom_resource_rules(to_host: &[String], from_host: &[String]) -> Vec<PolicyRule> {
    let each = |names: &[String], verbs: &[&str]| -> Vec<PolicyRule> {
        names
            .iter()
            .filter_map(|n| n.split_once('.'))
            .map(|(plural, group)| rule(&[group], &[plural], verbs))
            .collect()
    };
    let mut rules = each(to_host, WRITE);
    rules.extend(each(from_host, READ));
    rules
}

/// [`held_rules`], and in the instance's own namespace the Lease its replicas elect a leader
/// with.
pub fn own_rules() -> Vec<PolicyRule> {
    let mut rules = held_rules();
    rules.push(rule(&["coordination.k8s.io"], &["leases"], WRITE));
    rules
}

/// The three ClusterRoles, for names with `prefix`.
pub fn cluster_roles(prefix: &str) -> [ClusterRole; 3] {
    let role = |name: &str, rules| ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(
                [(
                    "app.kubernetes.io/part-of".to_owned(),
                    "virtualcluster-operator".to_owned(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        rules: Some(rules),
        ..Default::default()
    };
    let held = held_role(prefix);
    [
        role(&held, held_rules()),
        role(&own_role(&held), own_rules()),
        role(&nodes_role(&held), nodes_rules()),
    ]
}

/// The admission policy over syncers' namespace writes, and its binding, named `name`.
pub fn namespace_policy(name: &str) -> [serde_json::Value; 2] {
    let label = |o: &str, key: &str| {
        format!(
            "(has({o}.metadata.labels) && '{key}' in {o}.metadata.labels \
             ? {o}.metadata.labels['{key}'] : '')"
        )
    };
    // Whether object `o` carries the marks of the syncer's own instance.
    let own = |o: &str| {
        format!(
            "{o} != null && {} == variables.instance && {} == variables.instanceNamespace",
            label(o, keys::SYNCED_BY),
            label(o, keys::SYNCED_BY_NAMESPACE)
        )
    };
    let origin = |o: &str| label(o, keys::NAMESPACE_ORIGIN);
    let marks = [
        keys::SYNCED_BY,
        keys::SYNCED_BY_NAMESPACE,
        keys::SYNCED_BY_UID,
        keys::NAMESPACE_ORIGIN,
    ]
    .map(|k| format!("'{k}'"))
    .join(", ");
    let user = "request.userInfo.username";
    policy_docs::policy_and_binding(
        name,
        json!({
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["namespaces"],
                "operations": ["CREATE", "UPDATE", "DELETE"],
            }]},
            "matchConditions": [{
                "name": "by-a-syncer",
                "expression": format!(
                    "{user}.startsWith('system:serviceaccount:') \
                     && {user}.endsWith('{SERVICE_ACCOUNT_SUFFIX}') \
                     && size({user}.split(':')) == 4"
                ),
            }],
            "variables": [
                {"name": "account", "expression": format!("{user}.split(':')")},
                {"name": "instanceNamespace", "expression": "variables.account[2]"},
                {"name": "instance", "expression": format!(
                    "variables.account[3].substring(0, size(variables.account[3]) - {})",
                    SERVICE_ACCOUNT_SUFFIX.len()
                )},
                {"name": "oldOwn", "expression": own("oldObject")},
                {"name": "newOwn", "expression": own("object")},
                {"name": "oldLabels", "expression":
                    "oldObject != null && has(oldObject.metadata.labels) \
                     ? oldObject.metadata.labels : {}"},
                {"name": "newLabels", "expression":
                    "object != null && has(object.metadata.labels) ? object.metadata.labels : {}"},
            ],
            "validations": [
                {
                    "expression": "!request.name.startsWith('kube-') && request.name != 'default'",
                    "reason": "Forbidden",
                    "message": "a syncer never touches a system namespace",
                },
                {
                    "expression": format!(
                        "request.operation != 'CREATE' \
                         || (variables.newOwn && {} == '{}')",
                        origin("object"), keys::ORIGIN_CREATED
                    ),
                    "reason": "Forbidden",
                    "message": "a syncer creates only host namespaces marked as created by its own instance",
                },
                {
                    "expression": format!(
                        "request.operation != 'DELETE' \
                         || (variables.oldOwn && {} == '{}')",
                        origin("oldObject"), keys::ORIGIN_CREATED
                    ),
                    "reason": "Forbidden",
                    "message": "a syncer deletes only host namespaces its own instance created",
                },
                {
                    "expression": format!(
                        "request.operation != 'UPDATE' \
                         || (variables.oldOwn && variables.newOwn && {new} == {old}) \
                         || (!('{uid}' in variables.oldLabels) && variables.newOwn \
                             && {new} == '{imported}' \
                             && variables.oldLabels.all(k, k in variables.newLabels \
                                 && variables.newLabels[k] == variables.oldLabels[k]) \
                             && variables.newLabels.all(k, k in variables.oldLabels \
                                 || k in [{marks}]) \
                             && (has(oldObject.metadata.annotations) \
                                 ? oldObject.metadata.annotations : {{}}) \
                                == (has(object.metadata.annotations) \
                                 ? object.metadata.annotations : {{}}))",
                        new = origin("object"),
                        old = origin("oldObject"),
                        uid = keys::SYNCED_BY_UID,
                        imported = keys::ORIGIN_IMPORTED,
                    ),
                    "reason": "Forbidden",
                    "message": "a syncer changes only its own instance's host namespaces, and \
                                imports an unmarked one by adding its instance's marks alone",
                },
            ],
        }),
    )
}

/// The ClusterRoles, the policy and its binding as YAML documents, exactly as committed in
/// `crds/syncer-access.yaml`.
pub fn yaml() -> String {
    yaml_named(DEFAULT_PREFIX)
}

/// [`yaml`] with names of `prefix` (the chart passes a template).
pub fn yaml_named(prefix: &str) -> String {
    let roles = cluster_roles(prefix).map(|role| {
        let mut value = serde_json::to_value(&role).expect("always serializes");
        value["apiVersion"] = json!("rbac.authorization.k8s.io/v1");
        value["kind"] = json!("ClusterRole");
        value
    });
    policy_docs::generated_yaml(
        "crds/src/syncer_access.rs",
        "What syncers may do in the host namespaces their instances hold",
        roles
            .into_iter()
            .chain(namespace_policy(&namespace_policy_name(prefix))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn its_own_namespace_grants_what_a_held_one_does_and_its_lease() {
        let held = held_rules();
        let own = own_rules();
        assert!(held.iter().all(|r| own.contains(r)));
        assert_eq!(own.len(), held.len() + 1);
        // Nothing cluster-scoped, nothing about namespaces, RBAC or quota.
        for r in &own {
            for res in r.resources.iter().flatten() {
                assert!(
                    ![
                        "namespaces",
                        "roles",
                        "rolebindings",
                        "nodes",
                        "resourcequotas",
                        "limitranges"
                    ]
                    .contains(&res.as_str()),
                    "{res}"
                );
            }
        }
    }

    #[test]
    fn yaml_holds_both_roles_and_the_policy() {
        let docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&yaml())
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        let kinds: Vec<_> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "ClusterRole",
                "ClusterRole",
                "ClusterRole",
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding"
            ]
        );
        assert_eq!(
            docs[0]["metadata"]["name"],
            "virtualcluster-operator-syncer"
        );
        assert_eq!(
            docs[1]["metadata"]["name"],
            "virtualcluster-operator-syncer-own"
        );
        assert_eq!(
            docs[2]["metadata"]["name"],
            "virtualcluster-operator-syncer-nodes"
        );
        assert_eq!(
            docs[4]["spec"]["policyName"],
            "virtualcluster-operator-syncer-namespaces"
        );
    }
}
