//! The ways platform teams install and run the operator, against the real API server: the Helm
//! chart (lint, schema, template, a server-side dry-run, a real install, upgrade and
//! uninstall with the operator running as the identity the chart gives it), the kustomize
//! layout (the same objects as the chart, one source of RBAC, a server-side dry-run), images
//! and versions that agree, and the status conventions GitOps tools read (`kubectl wait`, the
//! Argo CD health check in Lua, an operator that never writes `spec`).
//!
//! Every install uses a release name and namespace of its own; the cluster-scoped objects the
//! chart makes carry the release's name, so tests running at once never meet.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use virtualcluster_crds::VirtualCluster;
use virtualcluster_crds::instance::{self, InstanceRef};
use virtualcluster_operator::settings::DEFAULT_SYNCER_IMAGE;
use virtualcluster_tests::harness::{eventually, eventually_within, wait_gone};
use virtualcluster_tests::health::{self, argocd_health};
use virtualcluster_tests::helm::{self, CHART, Helm, chart_dir, documents, key, one, repo_root};
use virtualcluster_tests::operator::{Operator, Start};
use virtualcluster_tests::{TestCluster, binaries, crd, kubeconfig, shared_cluster, unique_name};

/// The workspace's version: the chart's, the images' tags and the operator's.
const VERSION: &str = env!("CARGO_PKG_VERSION");
const OPERATOR_IMAGE: &str = "ghcr.io/virtualcluster-dev/virtualcluster-operator";
const SYNCER_IMAGE: &str = "ghcr.io/virtualcluster-dev/virtualcluster-syncer";
/// The namespace `config/default` installs into.
const SYSTEM_NAMESPACE: &str = "virtualcluster-system";
/// Provisioning includes scheduling on the simulated nodes.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The control plane binaries' folder, with helm built into it; no cluster needed.
fn bin_dir() -> PathBuf {
    binaries::ensure().expect("the control plane binaries and helm")
}

fn local_helm() -> Helm {
    Helm::new(&bin_dir()).expect("helm")
}

/// `charts/virtualcluster-operator/ci/*.yaml`: values files that set every option.
fn ci_values() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart_dir().join("ci"))
        .expect("the chart's ci/ folder")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no values files in the chart's ci/ folder"
    );
    files
}

fn yaml_file(path: &str) -> Value {
    let path = repo_root().join(path);
    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The chart's objects as `config/default` would have them: without the labels only Helm
/// sets.
fn without_helm_labels(mut object: Value) -> Value {
    if let Some(labels) = object
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove("helm.sh/chart");
        labels.remove("app.kubernetes.io/managed-by");
    }
    object
}

/// Objects by [`key`], numbers compared by value (kustomize writes `5.0` as `5`).
fn by_key(objects: Vec<Value>) -> BTreeMap<String, Value> {
    objects
        .into_iter()
        .map(|mut o| {
            whole_numbers_as_integers(&mut o);
            (key(&o), o)
        })
        .collect()
}

fn whole_numbers_as_integers(value: &mut Value) {
    match value {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && n.is_f64()) {
                *value = json!(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(whole_numbers_as_integers),
        _ => {}
    }
}

fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

fn args(deployment: &Value) -> Vec<String> {
    container(deployment)["args"]
        .as_array()
        .expect("the operator has args")
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn chart_lints_strictly_with_defaults_and_with_every_option() {
    let helm = local_helm();
    let chart = chart_dir();
    let chart = chart.to_str().unwrap();
    let out = helm.ok(&["lint", "--strict", chart]).unwrap();
    assert!(
        out.contains("1 chart(s) linted, 0 chart(s) failed"),
        "{out}"
    );
    for values in ci_values() {
        let out = helm
            .ok(&["lint", "--strict", chart, "-f", values.to_str().unwrap()])
            .unwrap();
        assert!(
            out.contains("0 chart(s) failed"),
            "{}: {out}",
            values.display()
        );
    }
}

#[test]
fn the_values_schema_and_the_templates_refuse_what_cannot_work() {
    let helm = local_helm();
    for (set, complaint) in [
        ("replicaCount=-1", "replicaCount"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("image.digest=latest", "digest"),
        ("logFormat=xml", "logFormat"),
        ("watchNamespaces[0]=Not_A_Namespace", "watchNamespaces"),
        ("metrics.port=0", "port"),
        ("defaults.kubernetesVersion=1.37", "kubernetesVersion"),
        ("podDisruptionBudget.maxUnavailable=half", "maxUnavailable"),
        ("replicas=2", "replicas"),
        (
            "serviceMonitor.enabled=true,metrics.service.enabled=false",
            "serviceMonitor.enabled needs metrics.service.enabled",
        ),
        (
            "leaderElection.enabled=false",
            "replicaCount above 1 needs leaderElection.enabled",
        ),
        (
            "serviceAccount.create=false",
            "serviceAccount.name is required",
        ),
    ] {
        let err = helm
            .template("schema", "default", &["--set", set])
            .expect_err(set)
            .to_string();
        assert!(err.contains(complaint), "--set {set}: {err}");
    }
    // What the schema allows renders.
    for set in [
        "serviceAccount.create=false,serviceAccount.name=existing",
        "leaderElection.enabled=false,replicaCount=1",
    ] {
        helm.template("schema", "default", &["--set", set])
            .unwrap_or_else(|e| panic!("--set {set}: {e}"));
    }
}

#[test]
fn chart_and_kustomize_render_the_same_objects_from_one_source_of_rbac() {
    let bins = bin_dir();
    let helm = Helm::new(&bins).unwrap();
    let rendered = helm
        .template(CHART, SYSTEM_NAMESPACE, &["--include-crds"])
        .unwrap();
    let kustomized = helm::kustomize(&bins, &repo_root().join("config/default")).unwrap();

    // The CRD is the generated file, byte for byte, in both.
    let crd_text = crd::committed_yaml();
    assert!(
        rendered.contains(&crd_text),
        "helm template does not carry crds/virtualcluster.yaml verbatim"
    );
    let crd: Value = documents(&crd_text).unwrap().remove(0);

    let chart = by_key(
        documents(&rendered)
            .unwrap()
            .into_iter()
            .map(without_helm_labels)
            .collect(),
    );
    // kustomize does not know the admission policy kinds are cluster-scoped and gives them its
    // namespace, which the API server drops.
    let mut kustomize = by_key(
        documents(&kustomized)
            .unwrap()
            .into_iter()
            .map(|mut o| {
                if o["kind"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("ValidatingAdmissionPolicy"))
                {
                    o["metadata"].as_object_mut().unwrap().remove("namespace");
                }
                o
            })
            .collect(),
    );
    // Helm installs into a namespace it is given; config/default brings its own.
    let namespace = kustomize
        .remove(&format!("Namespace//{SYSTEM_NAMESPACE}"))
        .expect("config/default creates its namespace");
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    assert_eq!(
        chart.keys().collect::<Vec<_>>(),
        kustomize.keys().collect::<Vec<_>>(),
        "the chart and config/default make different objects"
    );
    for (key, from_chart) in &chart {
        let from_kustomize = &kustomize[key];
        assert!(
            from_chart == from_kustomize,
            "{key} differs:\nchart:     {}\nkustomize: {}",
            serde_json::to_string_pretty(from_chart).unwrap(),
            serde_json::to_string_pretty(from_kustomize).unwrap()
        );
    }
    let crd_key = key(&crd);
    assert_eq!(chart[&crd_key], by_key(vec![crd])[&crd_key]);

    // The ClusterRole's rules are config/rbac/role.yaml's, with the comment saying why each is
    // there kept in what Helm renders.
    let role_text = std::fs::read_to_string(repo_root().join("config/rbac/role.yaml")).unwrap();
    let role: ClusterRole = serde_yaml::from_str(&role_text).unwrap();
    let rules = |object: &Value| -> Vec<PolicyRule> {
        serde_json::from_value(object["rules"].clone()).unwrap()
    };
    let rendered_role = &chart[&format!("ClusterRole//{CHART}")];
    assert_eq!(rules(rendered_role), role.rules.clone().unwrap());
    assert_eq!(
        rules(&kustomize[&format!("ClusterRole//{CHART}")]),
        role.rules.unwrap()
    );
    let rules_text = role_text.split_once("\nrules:\n").unwrap().1;
    let comments: Vec<&str> = rules_text
        .lines()
        .filter(|l| l.trim_start().starts_with('#'))
        .collect();
    assert!(comments.len() >= 10, "role.yaml lost its comments");
    for comment in comments {
        assert!(
            rendered.contains(comment),
            "helm template drops {comment:?}"
        );
    }
}

#[test]
fn images_and_versions_agree_across_chart_kustomize_and_operator() {
    let bins = bin_dir();
    let helm = Helm::new(&bins).unwrap();
    let chart_yaml = yaml_file("charts/virtualcluster-operator/Chart.yaml");
    assert_eq!(chart_yaml["version"], VERSION);
    assert_eq!(chart_yaml["appVersion"], VERSION);

    let operator_image = format!("{OPERATOR_IMAGE}:v{VERSION}");
    let syncer_image = format!("{SYNCER_IMAGE}:v{VERSION}");
    assert_eq!(DEFAULT_SYNCER_IMAGE, syncer_image);

    let rendered = documents(&helm.template(CHART, SYSTEM_NAMESPACE, &[]).unwrap()).unwrap();
    let kustomized =
        documents(&helm::kustomize(&bins, &repo_root().join("config/default")).unwrap()).unwrap();
    for (what, objects) in [("chart", &rendered), ("config/default", &kustomized)] {
        let deployment = one(objects, "Deployment").unwrap();
        assert_eq!(container(deployment)["image"], operator_image, "{what}");
        assert!(
            args(deployment).contains(&format!("--syncer-image={syncer_image}")),
            "{what}: {:?}",
            args(deployment)
        );
        for object in objects.iter().filter(|o| o["kind"] != "Namespace") {
            // Installed with the CRD, as generated: no release's labels.
            let kind = object["kind"].as_str().unwrap_or_default();
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            let syncer_role = kind == "ClusterRole"
                && ["-syncer", "-syncer-own", "-syncer-nodes"]
                    .iter()
                    .any(|suffix| name.ends_with(suffix));
            if kind == "CustomResourceDefinition"
                || kind.starts_with("ValidatingAdmissionPolicy")
                || syncer_role
            {
                continue;
            }
            assert_eq!(
                object["metadata"]["labels"]["app.kubernetes.io/version"],
                VERSION,
                "{what}: {}",
                key(object)
            );
        }
    }
    // An image pinned by tag or digest is used as given.
    let pinned = documents(
        &helm
            .template(
                "pinned",
                "default",
                &["--set", "image.tag=v9.9.9,syncer.image.tag=v9.9.8"],
            )
            .unwrap(),
    )
    .unwrap();
    let deployment = one(&pinned, "Deployment").unwrap();
    assert_eq!(
        container(deployment)["image"],
        format!("{OPERATOR_IMAGE}:v9.9.9")
    );
    assert!(args(deployment).contains(&format!("--syncer-image={SYNCER_IMAGE}:v9.9.8")));
}

/// The images' recipes: built in stages from the workspace with the lock file, run as the
/// unprivileged user the chart's security context names, on a base without a shell. (Building
/// them needs a container engine, which the tests do not require.)
#[test]
fn dockerfiles_build_in_stages_and_run_as_non_root() {
    let values = yaml_file("charts/virtualcluster-operator/values.yaml");
    let uid = values["podSecurityContext"]["runAsUser"].as_i64().unwrap();
    for (file, package) in [
        ("operator/Dockerfile", "virtualcluster-operator"),
        ("syncer/Dockerfile", "virtualcluster-syncer"),
    ] {
        let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
        // Instructions, continuation lines joined.
        let joined = text.replace("\\\n", " ");
        let instructions: Vec<&str> = joined
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let stages: Vec<usize> = instructions
            .iter()
            .enumerate()
            .filter(|(_, l)| l.starts_with("FROM "))
            .map(|(i, _)| i)
            .collect();
        assert!(stages.len() >= 2, "{file}: not multi-stage");
        let (build, last) = instructions.split_at(*stages.last().unwrap());
        assert!(
            build.iter().any(|l| l.starts_with("RUN ")
                && l.contains("cargo build --release --locked")
                && l.contains(&format!("-p {package}"))),
            "{file}: no locked release build of {package}"
        );
        assert!(
            last[0].starts_with("FROM gcr.io/distroless/"),
            "{file}: the final stage is not distroless: {}",
            last[0]
        );
        assert!(
            !last.iter().any(|l| l.starts_with("RUN ")),
            "{file}: the final stage runs commands"
        );
        let user = last
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("USER "))
            .unwrap_or_else(|| panic!("{file}: the final stage names no USER"));
        assert_eq!(
            user.trim(),
            format!("{uid}:{uid}"),
            "{file}: a numeric non-root user, the chart's"
        );
        assert!(
            last.iter().any(|l| l.starts_with("COPY --from=")
                && l.ends_with(&format!("/usr/local/bin/{package}"))),
            "{file}: the binary is not copied from the build stage"
        );
        assert!(
            last.iter()
                .any(|l| *l == format!("ENTRYPOINT [\"/usr/local/bin/{package}\"]")),
            "{file}: the entry point is not {package}"
        );
    }
    let ignore = std::fs::read_to_string(repo_root().join(".dockerignore")).unwrap();
    for excluded in ["target/", ".git/"] {
        assert!(
            ignore.lines().any(|l| l.trim() == excluded),
            ".dockerignore lacks {excluded}"
        );
    }
}

/// Writes `yaml` into the cluster's folder and runs `kubectl apply --dry-run=server` on it.
fn dry_run(cluster: &TestCluster, name: &str, yaml: &str) {
    let path = cluster.dir().join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    let out = cluster.kubectl(&["apply", "--dry-run=server", "-f", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name}: server-side dry-run failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let applied = stdout
        .lines()
        .filter(|l| l.contains("(server dry run)"))
        .count();
    assert_eq!(
        applied,
        documents(yaml).unwrap().len(),
        "{name}: not every object went through the dry-run:\n{stdout}"
    );
}

/// `to` relative to `from` (both absolute): kustomize takes no absolute paths.
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut path = PathBuf::new();
    for _ in common..from.len() {
        path.push("..");
    }
    for part in &to[common..] {
        path.push(part);
    }
    path
}

#[tokio::test]
async fn rendered_manifests_pass_a_server_side_dry_run() {
    let cluster = shared_cluster().await;
    crd::install(&cluster.client().await).await.unwrap();
    let namespace = cluster.namespace("chart-dry-run").await;
    let helm = Helm::new(cluster.bin_dir()).unwrap();
    let release = unique_name("dry");

    // The chart with its defaults, and with every option (but the ServiceMonitor and the
    // PodMonitor, whose CRDs belong to the Prometheus Operator, which this cluster does not
    // have).
    let defaults = helm
        .template(&release, &namespace, &["--include-crds"])
        .unwrap();
    dry_run(cluster, &format!("{namespace}-chart-defaults"), &defaults);
    for values in ci_values() {
        let rendered = helm
            .template(
                &release,
                &namespace,
                &["--include-crds", "-f", values.to_str().unwrap()],
            )
            .unwrap();
        let objects = documents(&rendered).unwrap();
        let monitor = one(&objects, "ServiceMonitor").unwrap();
        let service = one(&objects, "Service").unwrap();
        for (label, value) in monitor["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap()
        {
            assert_eq!(&service["metadata"]["labels"][label], value, "{label}");
        }
        assert_eq!(
            monitor["spec"]["endpoints"][0]["port"],
            service["spec"]["ports"][0]["name"]
        );
        // The PodMonitor selects the pods the operator makes for any instance's syncer, by
        // the port the operator names.
        let pods = one(&objects, "PodMonitor").unwrap();
        let syncer_labels = InstanceRef {
            name: "any".into(),
            namespace: "team-a".into(),
            uid: "any-uid".into(),
        }
        .labels(instance::Component::Syncer);
        let selector = pods["spec"]["selector"]["matchLabels"].as_object().unwrap();
        assert!(!selector.is_empty());
        for (label, value) in selector {
            assert_eq!(
                syncer_labels.get(label).map(String::as_str),
                value.as_str(),
                "{label}"
            );
        }
        assert_eq!(
            pods["spec"]["podMetricsEndpoints"][0]["port"],
            instance::SYNCER_METRICS_PORT_NAME
        );
        assert_eq!(
            pods["spec"]["namespaceSelector"]["matchNames"],
            json!(["team-a", "team-b"])
        );
        let without_monitor: Vec<String> = objects
            .iter()
            .filter(|o| o["kind"] != "ServiceMonitor" && o["kind"] != "PodMonitor")
            .map(|o| serde_yaml::to_string(o).unwrap())
            .collect();
        dry_run(
            cluster,
            &format!(
                "{namespace}-chart-{}",
                values.file_stem().unwrap().display()
            ),
            &without_monitor.join("---\n"),
        );
    }

    // config/default, moved into this test's namespace by an overlay, as users make one.
    let overlay = cluster.dir().join(format!("overlay-{namespace}"));
    std::fs::create_dir_all(&overlay).unwrap();
    std::fs::write(
        overlay.join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: {namespace}\nresources:\n  - {}\n",
            relative(&overlay, &repo_root().join("config/default")).display()
        ),
    )
    .unwrap();
    let kustomized = helm::kustomize(cluster.bin_dir(), &overlay).unwrap();
    let objects = documents(&kustomized).unwrap();
    let binding = one(&objects, "ClusterRoleBinding").unwrap();
    assert_eq!(binding["subjects"][0]["namespace"], namespace.as_str());
    dry_run(cluster, &format!("{namespace}-kustomize"), &kustomized);
}

/// A kubeconfig with a token of ServiceAccount `namespace/name`.
async fn token_kubeconfig(cluster: &TestCluster, namespace: &str, name: &str) -> PathBuf {
    let accounts: Api<ServiceAccount> = Api::namespaced(cluster.client().await, namespace);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .and_then(|s| s.token)
        .expect("a token");
    let path = cluster
        .dir()
        .join("operators")
        .join(namespace)
        .join("chart-kubeconfig");
    kubeconfig::write_token(
        &path,
        &cluster.server().await.unwrap(),
        &cluster.ca_cert(),
        &token,
        name,
    )
    .unwrap();
    path
}

/// `kubectl ARGS`, off the test's thread; whether it succeeded, and what it said.
async fn kubectl(cluster: &'static TestCluster, args: Vec<String>) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = cluster.kubectl(&args);
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    })
    .await
    .unwrap()
}

async fn helm_ok(helm: &Helm, args: &[&str]) -> String {
    let helm = helm.clone();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        helm.ok(&args)
    })
    .await
    .unwrap()
    .unwrap()
}

/// The object as the API server returned it (what Argo CD and Flux read).
fn vc_object(vc: &DynamicObject) -> Value {
    serde_json::to_value(vc).unwrap()
}

fn condition_status<'a>(object: &'a Value, type_: &str) -> Option<&'a str> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?["status"]
        .as_str()
}

/// Checks the Argo CD health of `object`, and records it as a fixture for the health check's
/// unit test when `VIRTUALCLUSTER_RECORD_FIXTURES` is set.
fn expect_health(object: &Value, status: &str, what: &str) -> health::Health {
    let health = argocd_health(object).unwrap();
    assert_eq!(
        health.status,
        status,
        "{what}: {health:?}\n{}",
        serde_json::to_string_pretty(&object["status"]).unwrap()
    );
    if std::env::var_os("VIRTUALCLUSTER_RECORD_FIXTURES").is_some_and(|v| v == "1") {
        health::record_fixture(status, what, object).unwrap();
    }
    health
}

#[tokio::test]
async fn helm_install_runs_the_operator_as_its_identity_and_gitops_sees_its_status() {
    const FIELD_MANAGER: &str = "chart-test";
    let cluster = shared_cluster().await;
    let client = cluster.client().await;
    crd::install(&client).await.unwrap();

    // A release namespace of its own, enforcing the "restricted" Pod Security Standard.
    let namespace = cluster.namespace("chart-release").await;
    Api::<Namespace>::all(client.clone())
        .patch(
            &namespace,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            }}})),
        )
        .await
        .unwrap();
    let release = unique_name("vco");
    let fullname = format!("{release}-{CHART}");
    let helm = Helm::new(cluster.bin_dir())
        .unwrap()
        .with_kubeconfig(cluster.kubeconfig_path());
    let chart = chart_dir();
    let chart = chart.to_str().unwrap();
    // The simulated nodes bring the operator's pods to Ready (they run no process), so
    // `--wait` sees what a real cluster shows; the operator itself runs below as a process
    // with the release's identity.
    let notes = helm_ok(
        &helm,
        &[
            "install",
            &release,
            chart,
            "--namespace",
            &namespace,
            "--wait",
            "--timeout",
            "3m",
        ],
    )
    .await;
    assert!(
        notes.contains("kubectl wait --for=condition=Ready vc/demo"),
        "{notes}"
    );

    let deployment: Deployment = Api::namespaced(client.clone(), &namespace)
        .get(&fullname)
        .await
        .unwrap();
    assert_eq!(deployment.status.unwrap().ready_replicas, Some(2));
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let pods = pods
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={release}")))
        .await
        .unwrap();
    assert_eq!(
        pods.items.len(),
        2,
        "both replicas passed Pod Security admission"
    );
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    roles.get(&fullname).await.unwrap();
    bindings.get(&fullname).await.unwrap();

    // The operator, with the chart's flags and the token of the chart's ServiceAccount, so the
    // chart's ClusterRole and binding are what let it work. It watches one namespace of its
    // own and keeps its Lease there.
    let kubeconfig = token_kubeconfig(cluster, &namespace, &fullname).await;
    let rendered = documents(&helm.template(&release, &namespace, &[]).unwrap()).unwrap();
    let chart_args: Vec<String> = args(one(&rendered, "Deployment").unwrap())
        .into_iter()
        .filter(|a| !a.starts_with("--metrics-addr="))
        .collect();
    let chart_args: Vec<&str> = chart_args.iter().map(String::as_str).collect();
    let vc_namespace = cluster.namespace("chart-vcs").await;
    let vcs: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &vc_namespace,
        &ApiResource::erase::<VirtualCluster>(&()),
    );

    // Three VirtualClusters: one that becomes Ready, one whose volume claim names a
    // StorageClass that does not exist (it keeps provisioning), one whose mapping targets its
    // own namespace (the operator refuses it).
    let specs = [
        (
            "ready",
            json!({"controlPlane": {"persistence": {"enabled": false}}}),
        ),
        (
            "provisioning",
            json!({"controlPlane": {"persistence": {"storageClassName": unique_name("no-such-class")}}}),
        ),
        (
            "invalid",
            json!({"sync": {"toHost": {"namespaces": {"enabled": true,
                "mappings": {"byName": {"apps": vc_namespace}}}}}}),
        ),
    ];
    let create = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    for (name, spec) in &specs {
        let vc: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "virtualcluster.dev/v1alpha1",
            "kind": "VirtualCluster",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .unwrap();
        let created = vcs.create(&create, &vc).await.unwrap();
        // Before any operator saw it.
        expect_health(&vc_object(&created), "Progressing", "new");
    }

    let operator = Operator::start(
        cluster,
        Start {
            namespaces: &[&vc_namespace],
            kubeconfig: &kubeconfig,
            args: &chart_args,
        },
    )
    .await
    .unwrap();
    let log = || operator.log_tail();

    // `kubectl wait` reads the conditions, as scripts and CI jobs do.
    let wait = |name: &str, condition: &str, timeout: Duration| {
        kubectl(
            cluster,
            vec![
                "wait".into(),
                format!("--for=condition={condition}"),
                format!("vc/{name}"),
                "--namespace".into(),
                vc_namespace.clone(),
                format!("--timeout={}s", timeout.as_secs()),
            ],
        )
    };
    let (ok, said) = wait("ready", "Ready", READY_TIMEOUT).await;
    assert!(ok, "kubectl wait for Ready: {said}\n{}", log());
    assert!(said.contains("condition met"), "{said}");
    let (ok, said) = wait("invalid", "Stalled", READY_TIMEOUT).await;
    assert!(ok, "kubectl wait for Stalled: {said}\n{}", log());
    let (ok, said) = wait("provisioning", "Reconciling", READY_TIMEOUT).await;
    assert!(ok, "kubectl wait for Reconciling: {said}\n{}", log());
    let (ok, said) = wait("provisioning", "Ready", Duration::from_secs(3)).await;
    assert!(!ok, "a VirtualCluster without storage is not Ready: {said}");

    // What Flux's health checks read: the status describes the current generation, as does
    // every condition; Argo CD's health check agrees with the conditions.
    for (name, expected) in [
        ("ready", "Healthy"),
        ("provisioning", "Progressing"),
        ("invalid", "Degraded"),
    ] {
        let vc = vcs.get(name).await.unwrap();
        let object = vc_object(&vc);
        let generation = vc.metadata.generation.unwrap();
        assert_eq!(generation, 1, "{name}: the operator changed the spec");
        assert_eq!(object["status"]["observedGeneration"], generation, "{name}");
        for condition in object["status"]["conditions"].as_array().unwrap() {
            assert_eq!(
                condition["observedGeneration"], generation,
                "{name}: {condition}"
            );
        }
        let health = expect_health(&object, expected, name);
        assert!(!health.message.is_empty(), "{name}");
        match expected {
            "Healthy" => {
                assert_eq!(condition_status(&object, "Reconciling"), Some("False"));
                assert!(health.message.contains("ready"), "{health:?}");
            }
            "Progressing" => {
                assert_eq!(condition_status(&object, "Reconciling"), Some("True"));
                assert_eq!(condition_status(&object, "Stalled"), Some("False"));
            }
            _ => {
                assert_eq!(condition_status(&object, "Ready"), Some("False"));
                assert!(health.message.contains("own namespace"), "{health:?}");
            }
        }

        // The operator never writes spec: its field manager owns finalizers and status only,
        // so no GitOps tool finds a difference it did not make.
        let managed = vc.metadata.managed_fields.clone().unwrap_or_default();
        let theirs: Vec<_> = managed
            .iter()
            .filter(|m| m.manager.as_deref() != Some(FIELD_MANAGER))
            .collect();
        assert!(
            theirs
                .iter()
                .any(|m| m.subresource.as_deref() == Some("status")),
            "{name}: no status written by the operator: {managed:?}"
        );
        for entry in theirs {
            let fields = serde_json::to_value(&entry.fields_v1).unwrap();
            assert!(
                fields.get("f:spec").is_none(),
                "{name}: {:?} wrote spec: {fields}",
                entry.manager
            );
        }
    }

    // A spec change: until the operator has seen it the check says so, then it is healthy
    // again.
    let changed = vcs
        .patch(
            "ready",
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"spec": {"syncer": {"resources": {"requests": {"cpu": "20m"}}}}})),
        )
        .await
        .unwrap();
    assert_eq!(changed.metadata.generation, Some(2));
    let health = expect_health(&vc_object(&changed), "Progressing", "new-generation");
    assert!(health.message.contains("generation 2"), "{health:?}");
    eventually_within(
        "generation 2 to be observed and Ready",
        READY_TIMEOUT,
        || async {
            let vc = vc_object(&vcs.get("ready").await.unwrap());
            (vc["status"]["observedGeneration"] == 2
                && condition_status(&vc, "Ready") == Some("True"))
            .then_some(())
        },
    )
    .await;
    expect_health(
        &vc_object(&vcs.get("ready").await.unwrap()),
        "Healthy",
        "ready-again",
    );

    // Deleting goes through the operator's finalizer, so the operator is still running.
    for (name, _) in &specs {
        vcs.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for (name, _) in &specs {
        wait_gone(&format!("VirtualCluster {name} to be deleted"), &vcs, name).await;
    }
    drop(operator);

    // An upgrade changes what it says, and only that.
    helm_ok(
        &helm,
        &[
            "upgrade",
            &release,
            chart,
            "--namespace",
            &namespace,
            "--reuse-values",
            "--set",
            "replicaCount=1",
            "--wait",
            "--timeout",
            "3m",
        ],
    )
    .await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    assert_eq!(
        deployments.get(&fullname).await.unwrap().spec.replicas,
        Some(1)
    );
    let history = helm_ok(&helm, &["history", &release, "--namespace", &namespace]).await;
    assert_eq!(
        history.lines().count(),
        3,
        "a header and two revisions: {history}"
    );

    // Uninstalling removes every object of the release, cluster-scoped ones included; the CRD
    // stays (Helm never deletes CRDs, so VirtualClusters survive a reinstall).
    helm_ok(
        &helm,
        &[
            "uninstall",
            &release,
            "--namespace",
            &namespace,
            "--wait",
            "--timeout",
            "2m",
        ],
    )
    .await;
    wait_gone("the operator's Deployment", &deployments, &fullname).await;
    wait_gone("the ClusterRole", &roles, &fullname).await;
    wait_gone("the ClusterRoleBinding", &bindings, &fullname).await;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    wait_gone("the ServiceAccount", &accounts, &fullname).await;
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    wait_gone(
        "the metrics Service",
        &services,
        &format!("{fullname}-metrics"),
    )
    .await;
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &namespace);
    wait_gone("the PodDisruptionBudget", &budgets, &fullname).await;
    eventually("the CRD to stay", || async {
        Api::<CustomResourceDefinition>::all(client.clone())
            .get_opt("virtualclusters.virtualcluster.dev")
            .await
            .unwrap()
            .map(|crd| crd.name_any())
    })
    .await;
}

#[test]
fn the_platforms_custom_resources_reach_the_operators_flags_and_rules() {
    let helm = local_helm();
    let to_host = ["certificates.cert-manager.io".to_owned()];
    let from_host = [
        "clusterissuers.cert-manager.io".to_owned(),
        "issuers.cert-manager.io".to_owned(),
    ];
    let set = format!(
        "platform.customResources.toHost={{{}}},platform.customResources.fromHost={{{}}}",
        to_host.join(","),
        from_host.join(",")
    );
    let rendered = helm
        .template(CHART, SYSTEM_NAMESPACE, &["--set", &set])
        .unwrap();
    let objects = documents(&rendered).unwrap();
    let role = objects
        .iter()
        .find(|o| o["kind"] == "ClusterRole" && o["metadata"]["name"] == "virtualcluster-operator")
        .expect("the operator's ClusterRole");
    let rules = role["rules"].as_array().unwrap();
    let expected =
        virtualcluster_crds::syncer_access::operator_custom_resource_rules(&to_host, &from_host);
    let expected: Vec<Value> = expected
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect();
    assert_eq!(
        &rules[rules.len() - expected.len()..],
        expected.as_slice(),
        "the chart renders the rules of operator_custom_resource_rules"
    );
    let deployment = objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("the operator's Deployment");
    let args = args(deployment);
    assert!(args.contains(&format!("--custom-resources-to-host={}", to_host.join(","))));
    assert!(args.contains(&format!(
        "--custom-resources-from-host={}",
        from_host.join(",")
    )));
    // A name that is not plural.group is refused by the values schema.
    let refused = helm.run(&[
        "template",
        "r",
        chart_dir().to_str().unwrap(),
        "--set",
        "platform.customResources.toHost={certificates}",
    ]);
    assert!(!refused.status.success(), "a bare plural is refused");
}
