//! Keys of `spec.sync` this version does not support are refused at admission, not dropped in
//! silence. A vcluster.yaml's `sync` section pasted in may hold keys this version has no field
//! for (`patches`, `customResources`, ...); a structural schema would prune them on the way to
//! storage, and a client that does not ask for strict field validation (most GitOps tools)
//! would never hear of it. So every object under `spec.sync` keeps unknown keys
//! (`x-kubernetes-preserve-unknown-fields`, see [`preserve_unknown_fields`]) and a
//! ValidatingAdmissionPolicy shipped with the CRD refuses any key its schema does not name, on
//! create and on an update that changes `spec.sync`, with a message that names the field, the
//! keys and what is supported.
//!
//! Both follow from the CRD's own schema, so a field added to the types is supported at once.

use serde_json::{Value, json};

use crate::policy_docs;

/// Name of the policy and of its binding as `crds/sync-keys-policy.yaml` (and so kustomize)
/// names them; the chart names them after its release.
pub const POLICY_NAME: &str = "virtualcluster-operator-supported-sync-keys";

/// The field every rule starts from.
const ROOT: [&str; 2] = ["spec", "sync"];
/// The namespace-sync block, which cannot change after creation (a CEL rule compares it whole),
/// is left to prune: an unknown key stored there while the policy was not yet in force could
/// never be taken out again. Every key of its vcluster.yaml counterpart is supported.
const PRUNED: [&str; 4] = ["spec", "sync", "toHost", "namespaces"];

/// An object under `spec.sync` and the keys its schema names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Field names from `spec` down, e.g. `["spec", "sync", "toHost", "pods"]`, with [`ITEMS`]
    /// for the elements of an array (`[..., "patches", "[*]", "reference"]`).
    pub path: Vec<String>,
    pub keys: Vec<String>,
}

/// The step of a [`Node`] path into every element of an array.
pub const ITEMS: &str = "[*]";
/// The step of a [`Node`] path into every value of a map whose values are objects with fixed
/// properties (`customResources`).
pub const VALUES: &str = "{*}";

/// The schema under `schema` that holds properties: itself, an array's items, or a map's
/// values; with the step into them.
fn children(schema: &Value) -> Option<(&serde_json::Map<String, Value>, Option<&'static str>)> {
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        return Some((properties, None));
    }
    for (key, step) in [("items", ITEMS), ("additionalProperties", VALUES)] {
        if let Some(properties) = schema
            .get(key)
            .and_then(|s| s.get("properties"))
            .and_then(Value::as_object)
        {
            return Some((properties, Some(step)));
        }
    }
    None
}

/// Every object of `spec.sync` in `schema` (the CRD version's `openAPIV3Schema`) with fixed
/// properties, parents first. Maps of strings (`byName`) take any key and are not listed; the
/// values of a map of objects are, each judged.
pub fn nodes(schema: &Value) -> Vec<Node> {
    let mut root = schema;
    for field in ROOT {
        root = &root["properties"][field];
    }
    let mut out = Vec::new();
    walk(
        root,
        ROOT.iter().map(|s| (*s).to_owned()).collect(),
        &mut out,
    );
    out
}

fn walk(schema: &Value, mut path: Vec<String>, out: &mut Vec<Node>) {
    let Some((properties, items)) = children(schema) else {
        return;
    };
    if path == PRUNED {
        return;
    }
    if let Some(step) = items {
        path.push(step.into());
    }
    out.push(Node {
        path: path.clone(),
        keys: properties.keys().cloned().collect(),
    });
    for (key, child) in properties {
        let mut path = path.clone();
        path.push(key.clone());
        walk(child, path, out);
    }
}

/// Marks every object of `spec.sync` in `schema` (the CRD version's `openAPIV3Schema`) to keep
/// keys its schema does not name, so that the policy sees them.
pub fn preserve_unknown_fields(schema: &mut Value) {
    let mut root = schema;
    for field in ROOT {
        root = &mut root["properties"][field];
    }
    mark(root, &mut ROOT.iter().map(|s| (*s).to_owned()).collect());
}

fn mark(schema: &mut Value, path: &mut Vec<String>) {
    if *path == PRUNED {
        return;
    }
    let inner = if schema.get("properties").is_some() {
        None
    } else if schema
        .get("items")
        .is_some_and(|i| i.get("properties").is_some())
    {
        Some("items")
    } else if schema
        .get("additionalProperties")
        .is_some_and(|v| v.get("properties").is_some())
    {
        Some("additionalProperties")
    } else {
        return;
    };
    let object = match inner {
        None => schema,
        Some(key) => &mut schema[key],
    };
    let Some(properties) = object.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    for (key, child) in properties.iter_mut() {
        path.push(key.clone());
        mark(child, path);
        path.pop();
    }
    object["x-kubernetes-preserve-unknown-fields"] = json!(true);
}

/// When the policy judges a request: a create, or an update that changes `spec.sync`.
const UNCHANGED_SYNC_SKIPPED: &str = "request.operation == 'CREATE' || !has(oldObject.spec) \
     || !has(oldObject.spec.sync) \
     || (has(object.spec) && has(object.spec.sync) && object.spec.sync != oldObject.spec.sync)";

/// The CEL validation that refuses keys of `node` its schema does not name: the keys of each
/// object at its path, where there is one (every element of an array on the way).
fn validation(node: &Node) -> Value {
    let known = format!(
        "[{}]",
        node.keys
            .iter()
            .map(|k| format!("'{k}'"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let holds = |object: &str| format!("{object}.all(k, k in {known})");
    let unknown = |object: &str| format!("{object}.filter(k, !(k in {known})).join(', ')");
    json!({
        "expression": each("object", &node.path, 0, &holds, &|parts| {
            format!("(!has({}) || {})", parts.0, parts.1)
        }, &|list, var, inner| format!("{list}.all({var}, {inner})")),
        "reason": "Invalid",
        "messageExpression": format!(
            "'{path}: ' + {keys} + ' not supported by this version of virtualcluster-operator \
             (supported here: {supported})'",
            path = node
                .path
                .join(".")
                .replace(".[*]", "[*]")
                .replace(".{*}", "[*]"),
            keys = each("object", &node.path, 0, &unknown, &|parts| {
                format!("(has({}) ? {} : '')", parts.0, parts.1)
            }, &|list, var, inner| {
                format!("{list}.map({var}, {inner}).filter(s, s != '').join(', ')")
            }),
            supported = node.keys.join(", "),
        ),
    })
}

/// CEL over the objects at `path` below `base`: `leaf` of each, a field's step guarded by
/// `field((the field, the rest))`, an array's by `items(the array, its variable, the rest)`.
fn each(
    base: &str,
    path: &[String],
    depth: usize,
    leaf: &dyn Fn(&str) -> String,
    field: &dyn Fn((&str, &str)) -> String,
    items: &dyn Fn(&str, &str, &str) -> String,
) -> String {
    match path.split_first() {
        None => leaf(base),
        Some((step, rest)) if step == ITEMS => {
            let var = format!("e{depth}");
            let inner = each(&var, rest, depth + 1, leaf, field, items);
            items(base, &var, &inner)
        }
        // A map's macros bind its keys: each value is the map at that key.
        Some((step, rest)) if step == VALUES => {
            let var = format!("k{depth}");
            let value = format!("{base}[{var}]");
            let inner = each(&value, rest, depth + 1, leaf, field, items);
            items(base, &var, &inner)
        }
        Some((step, rest)) => {
            let next = format!("{base}.{step}");
            let inner = each(&next, rest, depth, leaf, field, items);
            field((&next, &inner))
        }
    }
}

/// The policy and its binding as YAML documents, exactly as committed in
/// `crds/sync-keys-policy.yaml`.
pub fn yaml() -> String {
    yaml_named(POLICY_NAME)
}

/// [`yaml`] with the policy and its binding named `name` (the chart passes a template).
pub fn yaml_named(name: &str) -> String {
    let crd = crate::v1alpha1::crd_value();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let validations: Vec<Value> = nodes(schema).iter().map(validation).collect();
    let docs = policy_docs::policy_and_binding(
        name,
        json!({
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [crate::keys::GROUP],
                "apiVersions": ["*"],
                "resources": ["virtualclusters"],
                "operations": ["CREATE", "UPDATE"],
            }]},
            // An update that leaves spec.sync as it was is not judged: an object stored while
            // the policy was not installed must still take its finalizer's removal.
            "matchConditions": [{
                "name": "creates-or-changes-spec-sync",
                "expression": UNCHANGED_SYNC_SKIPPED,
            }],
            "validations": validations,
        }),
    );
    policy_docs::generated_yaml(
        "crds/src/sync_keys.rs",
        "Keys of spec.sync this version does not support are refused",
        docs,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        crate::v1alpha1::crd_value()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    #[test]
    fn every_object_of_spec_sync_is_listed_with_its_keys_and_maps_are_not() {
        let nodes = nodes(&schema());
        let find = |path: &str| {
            nodes
                .iter()
                .find(|n| n.path.join(".") == path)
                .unwrap_or_else(|| panic!("no {path} in {nodes:#?}"))
        };
        assert_eq!(find("spec.sync").keys, ["fromHost", "toHost"]);
        assert!(
            find("spec.sync.toHost.pods")
                .keys
                .contains(&"translateImage".into())
        );
        assert!(find("spec.sync.fromHost.nodes").keys == ["enabled", "selector"]);
        assert!(find("spec.sync.fromHost.nodes.selector").keys == ["labels"]);
        // Maps take any key.
        assert!(nodes.iter().all(|n| !n.path.ends_with(&["byName".into()])
            && !n.path.ends_with(&["translateImage".into()])));
    }

    #[test]
    fn the_crd_keeps_unknown_keys_under_spec_sync_only() {
        let schema = schema();
        let sync = &schema["properties"]["spec"]["properties"]["sync"];
        assert_eq!(sync["x-kubernetes-preserve-unknown-fields"], true);
        assert_eq!(
            sync["properties"]["toHost"]["properties"]["pods"]["x-kubernetes-preserve-unknown-fields"],
            true
        );
        assert!(
            schema["properties"]["spec"]
                .get("x-kubernetes-preserve-unknown-fields")
                .is_none()
        );
        // The immutable namespace-sync block prunes, as before.
        let namespaces = &sync["properties"]["toHost"]["properties"]["namespaces"];
        assert!(
            namespaces
                .get("x-kubernetes-preserve-unknown-fields")
                .is_none()
        );
        assert!(
            nodes(&schema)
                .iter()
                .all(|n| !n.path.starts_with(&PRUNED.map(String::from)))
        );
        assert!(
            schema["properties"]["spec"]["properties"]["policies"]
                .get("x-kubernetes-preserve-unknown-fields")
                .is_none()
        );
    }

    #[test]
    fn a_rule_guards_every_parent_and_names_the_unsupported_keys() {
        let rule = validation(&Node {
            path: vec!["spec".into(), "sync".into(), "toHost".into()],
            keys: vec!["pods".into(), "services".into()],
        });
        assert_eq!(
            rule["expression"],
            "(!has(object.spec) || (!has(object.spec.sync) || (!has(object.spec.sync.toHost) \
             || object.spec.sync.toHost.all(k, k in ['pods', 'services']))))"
        );
        let message = rule["messageExpression"].as_str().unwrap();
        assert!(message.starts_with("'spec.sync.toHost: ' + (has(object.spec) ? "));
        assert!(message.contains("(supported here: pods, services)"));
    }

    #[test]
    fn array_elements_are_judged_each() {
        let rule = validation(&Node {
            path: ["spec", "sync", "p", ITEMS, "reference"]
                .map(String::from)
                .to_vec(),
            keys: vec!["kind".into()],
        });
        assert_eq!(
            rule["expression"],
            "(!has(object.spec) || (!has(object.spec.sync) || (!has(object.spec.sync.p) \
             || object.spec.sync.p.all(e0, (!has(e0.reference) \
             || e0.reference.all(k, k in ['kind']))))))"
        );
        let message = rule["messageExpression"].as_str().unwrap();
        assert!(
            message.starts_with("'spec.sync.p[*].reference: '"),
            "{message}"
        );
        assert!(
            message.contains(".map(e0, (has(e0.reference) ? e0.reference.filter("),
            "{message}"
        );
        let nodes = nodes(&schema());
        assert!(
            nodes
                .iter()
                .any(|n| n.path.join(".") == "spec.sync.toHost.pods.patches.[*]"
                    && n.keys == ["expression", "path", "reference", "reverseExpression"])
        );
        // The values of a map of objects are judged too.
        assert!(nodes.iter().any(
            |n| n.path.join(".") == "spec.sync.toHost.customResources.{*}"
                && n.keys == ["enabled", "patches", "scope", "selector"]
        ));
        let rule = validation(&Node {
            path: ["spec", "sync", "c", VALUES].map(String::from).to_vec(),
            keys: vec!["enabled".into()],
        });
        assert_eq!(
            rule["expression"],
            "(!has(object.spec) || (!has(object.spec.sync) || (!has(object.spec.sync.c) \
             || object.spec.sync.c.all(k0, object.spec.sync.c[k0].all(k, k in ['enabled'])))))"
        );
        assert!(
            nodes
                .iter()
                .any(|n| n.path.join(".") == "spec.sync.toHost.pods.patches.[*].reference")
        );
    }
}
