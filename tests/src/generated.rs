//! Files made from others, so that each fact has one source:
//!
//! - `charts/virtualcluster-operator/crds/virtualcluster.yaml`: a byte copy of the generated
//!   CRD, `crds/virtualcluster.yaml` (Helm reads a chart's CRDs only from inside the chart);
//! - `charts/virtualcluster-operator/files/role.yaml`: a byte copy of `config/rbac/role.yaml`,
//!   whose rules the chart's ClusterRole renders;
//! - `crds/sync-keys-policy.yaml` and
//!   `charts/virtualcluster-operator/templates/sync-keys-policy.yaml` (the same, named after the
//!   release): the admission policy that refuses keys of `spec.sync` this version does not
//!   support, from `virtualcluster_crds::sync_keys`;
//! - `crds/syncer-access.yaml` and `charts/virtualcluster-operator/templates/syncer-access.yaml`
//!   (the same, named after the release): the ClusterRoles bound in held host namespaces and
//!   the policy over syncers' namespace writes, from `virtualcluster_crds::syncer_access`;
//! - `crds/claim-policy.yaml` and `charts/virtualcluster-operator/templates/claim-policy.yaml`
//!   (the same, named after the release): the admission policy that authorizes host namespace
//!   claims, from `virtualcluster_crds::claim_policy`;
//! - the README's field reference, from the CRD's descriptions, defaults and rules.
//!
//! `cargo run -q -p virtualcluster-tests --bin update-generated` writes them; a test fails when
//! one is out of date.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::helm::{chart_dir, repo_root};

/// The command that brings every generated file up to date.
pub const UPDATE_COMMAND: &str = "cargo run -q -p virtualcluster-tests --bin update-generated";

const BEGIN: &str = "<!-- BEGIN field reference: generated from crds/virtualcluster.yaml by \
                     `cargo run -q -p virtualcluster-tests --bin update-generated` -->";
const END: &str = "<!-- END field reference -->";

/// A generated file: where it goes and what it must hold.
#[derive(Debug)]
pub struct Generated {
    pub path: PathBuf,
    pub contents: String,
}

/// Every generated file as it should be now.
pub fn expected() -> Result<Vec<Generated>> {
    let root = repo_root();
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    };
    let crd = read(&root.join("crds/virtualcluster.yaml"))?;
    let role = read(&root.join("config/rbac/role.yaml"))?;
    let readme_path = root.join("README.md");
    let readme = with_field_reference(&read(&readme_path)?, &field_reference(&crd)?)?;
    // What ships with the CRD: `crds/FILE` under its default names, and the chart's template
    // named after the release (`yaml_named` given the release's prefix plus a suffix).
    let fullname = "{{ include \"virtualcluster-operator.fullname\" . }}";
    let shipped = |file: &str, default: String, chart: String| {
        [
            Generated {
                path: root.join("crds").join(file),
                contents: default,
            },
            Generated {
                path: chart_dir().join("templates").join(file),
                contents: chart,
            },
        ]
    };
    use virtualcluster_crds::{claim_policy, sync_keys, syncer_access};
    let shipped = [
        shipped(
            "claim-policy.yaml",
            claim_policy::yaml(),
            claim_policy::yaml_named(&format!("{fullname}-claim-host-namespaces")),
        ),
        shipped(
            "sync-keys-policy.yaml",
            sync_keys::yaml(),
            sync_keys::yaml_named(&format!("{fullname}-supported-sync-keys")),
        ),
        shipped(
            "syncer-access.yaml",
            syncer_access::yaml(),
            syncer_access::yaml_named(fullname),
        ),
    ];
    let mut files = vec![
        Generated {
            path: chart_dir().join("crds/virtualcluster.yaml"),
            contents: crd,
        },
        Generated {
            path: chart_dir().join("files/role.yaml"),
            contents: role,
        },
        Generated {
            path: readme_path,
            contents: readme,
        },
    ];
    files.extend(shipped.into_iter().flatten());
    Ok(files)
}

/// The generated files whose committed contents differ from [`expected`].
pub fn stale() -> Result<Vec<PathBuf>> {
    Ok(expected()?
        .into_iter()
        .filter(|g| std::fs::read_to_string(&g.path).ok().as_deref() != Some(&g.contents))
        .map(|g| g.path)
        .collect())
}

/// `readme` with the text between the field reference's markers replaced by `reference`.
pub fn with_field_reference(readme: &str, reference: &str) -> Result<String> {
    let (Some(begin), Some(end)) = (readme.find(BEGIN), readme.find(END)) else {
        bail!("the README has no field reference markers ({BEGIN} ... {END})");
    };
    if end < begin {
        bail!("the README's field reference markers are in the wrong order");
    }
    Ok(format!(
        "{}{BEGIN}\n{reference}{}",
        &readme[..begin],
        &readme[end..]
    ))
}

/// A Markdown table of every field of the VirtualCluster CRD in `crd_yaml`: path, type,
/// default and description, with the admission rules that concern the field.
pub fn field_reference(crd_yaml: &str) -> Result<String> {
    let crd: Value = crate::helm::documents(crd_yaml)?
        .into_iter()
        .next()
        .context("no CRD")?;
    let version = &crd["spec"]["versions"][0];
    let schema = &version["schema"]["openAPIV3Schema"];
    let mut rows = Vec::new();
    // Rules at the root: those with a fieldPath belong to that field, the rest to the name.
    let mut root_rules: Vec<(String, String)> = Vec::new();
    for rule in schema["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let message = rule["message"].as_str().unwrap_or_default();
        let field = rule["fieldPath"]
            .as_str()
            .map(|p| p.trim_start_matches('.').to_owned())
            .unwrap_or_else(|| "metadata.name".to_owned());
        let message = message.trim_start_matches("metadata.name: ").to_owned();
        root_rules.push((field, message));
    }
    rows.push(Row {
        path: "metadata.name".into(),
        kind: "string".into(),
        default: String::new(),
        description: "The VirtualCluster's name; its children are named after it.".into(),
        rules: rules_for("metadata.name", &root_rules),
    });
    walk(
        "spec",
        &schema["properties"]["spec"],
        &root_rules,
        &mut rows,
    );
    walk(
        "status",
        &schema["properties"]["status"],
        &root_rules,
        &mut rows,
    );

    let mut out = String::new();
    out.push_str("| field | type | default | description |\n| --- | --- | --- | --- |\n");
    for row in rows {
        let mut description = row.description;
        for rule in row.rules {
            description.push_str(&format!(" Rule: {rule}."));
        }
        writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            row.path,
            cell(&row.kind),
            cell(&row.default),
            cell(&description)
        )?;
    }
    Ok(out)
}

struct Row {
    path: String,
    kind: String,
    default: String,
    description: String,
    rules: Vec<String>,
}

fn rules_for(path: &str, root_rules: &[(String, String)]) -> Vec<String> {
    root_rules
        .iter()
        .filter(|(field, _)| field == path)
        .map(|(_, message)| message.trim_end_matches('.').to_owned())
        .collect()
}

/// Adds a row for the field at `path` (unless it is `spec` or `status` itself) and for each
/// field below it, except inside Kubernetes' own types, which `kubectl explain` describes.
fn walk(path: &str, schema: &Value, root_rules: &[(String, String)], rows: &mut Vec<Row>) {
    let properties = schema["properties"].as_object();
    let upstream = upstream_type(schema);
    if path != "spec" && path != "status" {
        let mut rules = rules_for(path, root_rules);
        for rule in schema["x-kubernetes-validations"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(message) = rule["message"].as_str() {
                rules.push(message.trim_end_matches('.').to_owned());
            }
        }
        rows.push(Row {
            path: path.to_owned(),
            kind: upstream.clone().unwrap_or_else(|| type_name(schema)),
            default: default_of(schema),
            description: describe(schema),
            rules,
        });
    }
    if upstream.is_some() {
        return;
    }
    for (name, sub) in properties.into_iter().flatten() {
        walk(&format!("{path}.{name}"), sub, root_rules, rows);
    }
    // A list of objects: a row for its elements (their rules), then one per field of them.
    if let Some(items) = schema
        .get("items")
        .filter(|i| i.get("properties").is_some())
    {
        walk(&format!("{path}[*]"), items, root_rules, rows);
    }
    // A map of objects: the same, for its values.
    if let Some(values) = schema
        .get("additionalProperties")
        .filter(|v| v.get("properties").is_some())
    {
        walk(&format!("{path}[*]"), values, root_rules, rows);
    }
}

/// The name of a Kubernetes type the field holds, recognised by its shape.
fn upstream_type(schema: &Value) -> Option<String> {
    let keys = |s: &Value| -> Vec<String> {
        s["properties"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    };
    if keys(schema) == ["claims", "limits", "requests"] {
        return Some("[ResourceRequirements](https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#resources)".into());
    }
    let item = keys(&schema["items"]);
    if schema["type"] == "array" && item.iter().any(|k| k == "lastTransitionTime") {
        return Some("[]Condition".into());
    }
    None
}

fn type_name(schema: &Value) -> String {
    match schema["type"].as_str() {
        Some("array") => format!("[]{}", type_name(&schema["items"])),
        Some("object") if schema.get("additionalProperties").is_some() => {
            format!("map[string]{}", type_name(&schema["additionalProperties"]))
        }
        Some("string") if schema.get("enum").is_some() => {
            let values: Vec<&str> = schema["enum"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            format!("string: {}", values.join(", "))
        }
        Some("integer") => match schema["format"].as_str() {
            Some(format) => format.to_owned(),
            None => "integer".to_owned(),
        },
        Some(other) => other.to_owned(),
        None => "any".to_owned(),
    }
}

/// A default worth showing: scalars, and empty lists and maps (objects' own defaults are the
/// defaults of their fields).
fn default_of(schema: &Value) -> String {
    match &schema["default"] {
        Value::Null => String::new(),
        Value::String(s) => format!("`{s}`"),
        Value::Array(a) if a.is_empty() => "`[]`".into(),
        Value::Object(o) if o.is_empty() => "`{}`".into(),
        Value::Array(_) | Value::Object(_) => String::new(),
        other => format!("`{other}`"),
    }
}

fn describe(schema: &Value) -> String {
    let mut text = schema["description"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut limits = Vec::new();
    for (key, what) in [
        ("minimum", "at least"),
        ("maximum", "at most"),
        ("maxLength", "at most N characters"),
        ("maxItems", "at most N items"),
        ("maxProperties", "at most N entries"),
    ] {
        if let Some(n) = schema[key].as_f64() {
            let n = n as i64;
            limits.push(if what.contains('N') {
                what.replace('N', &n.to_string())
            } else {
                format!("{what} {n}")
            });
        }
    }
    if let Some(pattern) = schema["pattern"].as_str() {
        limits.push(format!("matches `{pattern}`"));
    }
    if !limits.is_empty() {
        let sep = if text.is_empty() || text.ends_with('.') {
            " "
        } else {
            ". "
        };
        text = format!("{text}{sep}{}.", capitalise(&limits.join(", ")));
        text = text.trim_start().to_owned();
    }
    text
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Text fit for one table cell: one line, no unescaped `|`.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_files_are_up_to_date() {
        let stale = stale().unwrap();
        assert!(
            stale.is_empty(),
            "out of date: {stale:?}; update them with\n  {UPDATE_COMMAND}"
        );
    }

    #[test]
    fn the_reference_has_every_field_and_rule() {
        let crd = std::fs::read_to_string(repo_root().join("crds/virtualcluster.yaml")).unwrap();
        let reference = field_reference(&crd).unwrap();
        for line in [
            "| `spec.controlPlane.version` | string |  | Kubernetes version of the virtual cluster",
            "| `spec.controlPlane.service.type` | string: ClusterIP, NodePort, LoadBalancer | `ClusterIP` |",
            "| `spec.syncer.replicas` | int32 | `1` |",
            "| `spec.sync.toHost.pods.enforceTolerations` | []string | `[]` |",
            "| `spec.sync.toHost.namespaces.mappings.byName` | map[string]string | `{}` |",
            "| `status.conditions` | []Condition |  |",
        ] {
            assert!(reference.contains(line), "no {line:?} in\n{reference}");
        }
        // Kubernetes' own types are named, not spelled out.
        assert!(reference.contains("| `spec.syncer.resources` | [ResourceRequirements]"));
        assert!(!reference.contains("resources.limits"));
        assert!(!reference.contains("conditions.reason"));
        // Every admission rule's message appears with its field.
        let crd: Value = crate::helm::documents(&crd).unwrap().remove(0);
        let mut messages = Vec::new();
        collect_messages(&crd, &mut messages);
        assert!(messages.len() >= 10, "{messages:?}");
        for message in messages {
            let message = message.trim_start_matches("metadata.name: ");
            assert!(
                reference.contains(&cell(message).trim_end_matches('.').to_owned()),
                "rule {message:?} is not in the reference"
            );
        }
        // One row per line: a table cell never spans lines or splits on `|`.
        for line in reference.lines() {
            assert_eq!(line.matches(" | ").count(), 3, "{line}");
        }
    }

    fn collect_messages(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    if key == "x-kubernetes-validations" {
                        out.extend(
                            v.as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|r| r["message"].as_str().map(str::to_owned)),
                        );
                    } else {
                        collect_messages(v, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| collect_messages(v, out)),
            _ => {}
        }
    }

    #[test]
    fn the_reference_replaces_only_its_region() {
        let readme = format!("# Title\n\nbefore\n\n{BEGIN}\nold\n{END}\n\nafter\n");
        let new = with_field_reference(&readme, "| new |\n").unwrap();
        assert_eq!(
            new,
            format!("# Title\n\nbefore\n\n{BEGIN}\n| new |\n{END}\n\nafter\n")
        );
        assert!(with_field_reference("no markers", "x").is_err());
    }
}
