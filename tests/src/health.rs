//! The Argo CD health check that ships with the chart
//! (`charts/virtualcluster-operator/docs/argocd-health.lua`), run the way Argo CD runs it: the
//! object as the global table `obj`, the script's returned table read for `status` and
//! `message`. Argo CD's interpreter implements Lua 5.1, and so does this one (a real Lua 5.1,
//! built from source by the `mlua` crate).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use mlua::{Lua, Table};
use serde_json::Value;

/// The statuses an Argo CD health check may return.
pub const STATUSES: &[&str] = &[
    "Healthy",
    "Progressing",
    "Degraded",
    "Suspended",
    "Missing",
    "Unknown",
];

/// What a health check said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub status: String,
    pub message: String,
}

/// `charts/virtualcluster-operator/docs/argocd-health.lua`.
pub fn script_path() -> PathBuf {
    crate::helm::chart_dir().join("docs/argocd-health.lua")
}

/// Where the status objects recorded from the integration tests are kept, each named after
/// the health the check must find (`<status>-<what>.json`).
pub fn fixtures_dir() -> PathBuf {
    crate::helm::chart_dir().join("docs/argocd-health-fixtures")
}

/// Runs the chart's health check on `object`.
pub fn argocd_health(object: &Value) -> Result<Health> {
    let path = script_path();
    let script =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    run(&script, object)
}

/// Runs health check `script` on `object`.
pub fn run(script: &str, object: &Value) -> Result<Health> {
    let lua = Lua::new();
    let obj = to_lua(&lua, object)?;
    lua.globals().set("obj", obj)?;
    let result: Table = lua
        .load(script)
        .set_name("argocd-health.lua")
        .eval()
        .context("the health check failed")?;
    let status: Option<String> = result.get("status")?;
    let message: Option<String> = result.get("message")?;
    let status = status.context("the health check returned no status")?;
    if !STATUSES.contains(&status.as_str()) {
        bail!("the health check returned status {status:?}, which Argo CD does not know");
    }
    Ok(Health {
        status,
        message: message.unwrap_or_default(),
    })
}

/// A JSON value as Argo CD hands it to Lua: objects and arrays become tables (arrays from
/// index 1), null becomes nil.
fn to_lua(lua: &Lua, value: &Value) -> mlua::Result<mlua::Value> {
    Ok(match value {
        Value::Null => mlua::Value::Nil,
        Value::Bool(b) => mlua::Value::Boolean(*b),
        Value::Number(n) => mlua::Value::Number(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => mlua::Value::String(lua.create_string(s)?),
        Value::Array(items) => {
            let table = lua.create_table()?;
            for (i, item) in items.iter().enumerate() {
                table.raw_set(i + 1, to_lua(lua, item)?)?;
            }
            mlua::Value::Table(table)
        }
        Value::Object(fields) => {
            let table = lua.create_table()?;
            for (key, item) in fields {
                table.raw_set(key.as_str(), to_lua(lua, item)?)?;
            }
            mlua::Value::Table(table)
        }
    })
}

/// The recorded objects: `(file name, expected status, object)`.
pub fn fixtures() -> Result<Vec<(String, String, Value)>> {
    let dir = fixtures_dir();
    let mut fixtures = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let expected = name.split('-').next().unwrap_or_default().to_owned();
        let object: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
            .with_context(|| format!("parsing {}", path.display()))?;
        fixtures.push((name, expected, object));
    }
    fixtures.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(fixtures)
}

/// Writes `object` as fixture `<status>-<what>.json`, without the fields that only describe
/// where it was recorded (managed fields, UID, resource version).
pub fn record_fixture(status: &str, what: &str, object: &Value) -> Result<PathBuf> {
    let mut object = object.clone();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in ["managedFields", "uid", "resourceVersion"] {
            meta.remove(field);
        }
    }
    let path = fixtures_dir().join(format!("{status}-{what}.json"));
    std::fs::create_dir_all(fixtures_dir())?;
    std::fs::write(&path, serde_json::to_string_pretty(&object)? + "\n")?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vc(generation: i64, status: Value) -> Value {
        json!({
            "apiVersion": "virtualcluster.dev/v1alpha1",
            "kind": "VirtualCluster",
            "metadata": {"name": "demo", "namespace": "ns", "generation": generation},
            "spec": {},
            "status": status,
        })
    }

    fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z"})
    }

    #[test]
    fn a_new_object_is_progressing() {
        let mut object = vc(1, Value::Null);
        object.as_object_mut().unwrap().remove("status");
        let health = argocd_health(&object).unwrap();
        assert_eq!(health.status, "Progressing");
        assert!(health.message.contains("operator"), "{health:?}");
    }

    #[test]
    fn a_status_of_an_older_generation_is_progressing() {
        let ready = condition("Ready", "True", "Ready", "ready");
        let health = argocd_health(&vc(
            2,
            json!({"observedGeneration": 1, "phase": "Ready",
            "conditions": [ready]}),
        ))
        .unwrap();
        assert_eq!(health.status, "Progressing");
        assert!(health.message.contains("generation 2"), "{health:?}");
    }

    #[test]
    fn stalled_wins_over_everything_else() {
        let status = json!({"observedGeneration": 1, "phase": "Failed", "conditions": [
            condition("Ready", "False", "ConfigInvalid", "bad mapping"),
            condition("Stalled", "True", "OwnNamespace", "a mapping targets the own namespace"),
        ]});
        let health = argocd_health(&vc(1, status)).unwrap();
        assert_eq!(
            health,
            Health {
                status: "Degraded".into(),
                message: "a mapping targets the own namespace".into()
            }
        );
    }

    #[test]
    fn a_script_returning_an_unknown_status_is_an_error() {
        let err = run("return {status = \"Fine\"}", &json!({})).unwrap_err();
        assert!(err.to_string().contains("Fine"), "{err}");
        assert!(run("error(\"boom\")", &json!({})).is_err());
    }

    #[test]
    fn arrays_are_lua_sequences_and_nulls_are_nil() {
        let health = run(
            "return {status = \"Healthy\", message = tostring(#obj.items) .. obj.items[1] .. tostring(obj.gone)}",
            &json!({"items": ["a", "b"], "gone": null}),
        )
        .unwrap();
        assert_eq!(health.message, "2anil");
    }

    /// Status objects the operator wrote in the integration tests (see `chart.rs`), each with
    /// the health its file name says.
    #[test]
    fn recorded_statuses_have_the_expected_health() {
        let fixtures = fixtures().unwrap();
        let found: std::collections::BTreeSet<_> =
            fixtures.iter().map(|(_, e, _)| e.as_str()).collect();
        for needed in ["Healthy", "Progressing", "Degraded"] {
            assert!(
                found.contains(needed),
                "no {needed} fixture in {fixtures:?}"
            );
        }
        for (name, expected, object) in &fixtures {
            let health = argocd_health(object).unwrap();
            assert_eq!(&health.status, expected, "{name}: {health:?}");
            assert!(!health.message.is_empty(), "{name}: no message");
        }
    }
}
