//! The install artefacts as users run them: the Helm chart (`charts/virtualcluster-operator`)
//! through the pinned helm, the kustomize layout (`config/`) through kubectl, and the rendered
//! manifests as documents.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::binaries;

/// Name of the chart, and the release name with which it renders what `config/default` holds.
pub const CHART: &str = "virtualcluster-operator";

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is in the workspace")
        .to_owned()
}

/// `charts/virtualcluster-operator`.
pub fn chart_dir() -> PathBuf {
    repo_root().join("charts").join(CHART)
}

/// The pinned helm, with its own configuration, cache and data folders (nothing of the user's
/// helm setup is read or written), optionally talking to a cluster.
#[derive(Debug, Clone)]
pub struct Helm {
    bin: PathBuf,
    home: PathBuf,
    kubeconfig: Option<PathBuf>,
}

impl Helm {
    /// Helm from `bin_dir` (built there first if needed), not bound to a cluster.
    pub fn new(bin_dir: &Path) -> Result<Helm> {
        let bin = binaries::ensure_helm(bin_dir)?;
        let home = repo_root().join("target").join("helm-home");
        std::fs::create_dir_all(&home)?;
        Ok(Helm {
            bin,
            home,
            kubeconfig: None,
        })
    }

    /// The same helm, talking to the cluster of `kubeconfig`.
    pub fn with_kubeconfig(&self, kubeconfig: &Path) -> Helm {
        Helm {
            kubeconfig: Some(kubeconfig.to_owned()),
            ..self.clone()
        }
    }

    /// A helm command with `args`, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env("HELM_CONFIG_HOME", self.home.join("config"))
            .env("HELM_CACHE_HOME", self.home.join("cache"))
            .env("HELM_DATA_HOME", self.home.join("data"))
            .env_remove("HELM_NAMESPACE")
            .env_remove("HELM_KUBECONTEXT")
            .stdin(Stdio::null());
        match &self.kubeconfig {
            Some(kubeconfig) => cmd.env("KUBECONFIG", kubeconfig),
            // Rendering must not depend on whatever cluster the caller's environment names.
            None => cmd.env("KUBECONFIG", self.home.join("no-cluster")),
        };
        cmd.args(args);
        cmd
    }

    /// Runs helm with `args` and returns what it did, successful or not.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running helm")
    }

    /// Runs helm with `args`; its stdout if it succeeded.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        succeeded(&format!("helm {}", args.join(" ")), self.run(args))
    }

    /// `helm template RELEASE <chart> --namespace NAMESPACE ARGS...`.
    pub fn template(&self, release: &str, namespace: &str, args: &[&str]) -> Result<String> {
        let chart = chart_dir();
        let mut all = vec![
            "template",
            release,
            chart.to_str().expect("UTF-8 path"),
            "--namespace",
            namespace,
        ];
        all.extend_from_slice(args);
        self.ok(&all)
    }
}

/// `kubectl kustomize DIR` (kubectl from `bin_dir`).
pub fn kustomize(bin_dir: &Path, dir: &Path) -> Result<String> {
    let output = Command::new(bin_dir.join("kubectl"))
        .arg("kustomize")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .context("running kubectl kustomize")?;
    succeeded(&format!("kubectl kustomize {}", dir.display()), output)
}

/// stdout of a command that must have succeeded.
pub fn succeeded(what: &str, output: Output) -> Result<String> {
    if !output.status.success() {
        bail!(
            "`{what}` failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// The objects of a multi-document YAML stream, empty documents left out.
pub fn documents(yaml: &str) -> Result<Vec<Value>> {
    let mut objects = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value: Value = serde::Deserialize::deserialize(doc)?;
        if !value.is_null() {
            ensure!(value.is_object(), "a document is not an object: {value}");
            objects.push(value);
        }
    }
    Ok(objects)
}

/// `kind/namespace/name` of an object (namespace empty for cluster-scoped ones).
pub fn key(object: &Value) -> String {
    let text = |pointer| {
        object
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    format!(
        "{}/{}/{}",
        text("/kind"),
        text("/metadata/namespace"),
        text("/metadata/name")
    )
}

/// The one object of `kind` in `objects`.
pub fn one<'a>(objects: &'a [Value], kind: &str) -> Result<&'a Value> {
    let mut found = objects.iter().filter(|o| o["kind"] == kind);
    let first = found.next().with_context(|| format!("no {kind}"))?;
    ensure!(found.next().is_none(), "more than one {kind}");
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_and_names_them() {
        let objects = documents(
            "---\n# a comment only\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: a\n  namespace: ns\n---\nkind: ClusterRole\nmetadata:\n  name: b\n",
        )
        .unwrap();
        let keys: Vec<_> = objects.iter().map(key).collect();
        assert_eq!(keys, ["ServiceAccount/ns/a", "ClusterRole//b"]);
        assert_eq!(
            one(&objects, "ClusterRole").unwrap()["metadata"]["name"],
            "b"
        );
        assert!(one(&objects, "Deployment").is_err());
        assert!(documents("- a list\n").is_err());
    }
}
