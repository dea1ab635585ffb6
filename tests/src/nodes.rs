//! Simulated nodes: kwok, run outside the cluster, keeps Nodes carrying [`KWOK_ANNOTATION`]
//! Ready (renewing their leases) and brings the pods scheduled onto them to Running. It also
//! serves their kubelet API on loopback: every pod's logs and attach read
//! [`DEFAULT_LOG`], exec runs the command on this machine in `DIR/kwok/exec`, and port-forward
//! echoes what it is sent. kwok's `Logs`, `Attach`, `Exec` and `PortForward` objects (CRDs the
//! cluster has) give one pod other answers.

use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, ListParams, PostParams};

use crate::binaries::KWOK_STAGES_FILE;

/// Nodes with this annotation (value `fake`) are the ones kwok manages.
pub const KWOK_ANNOTATION: &str = "kwok.x-k8s.io/node";
/// Label on every simulated node.
pub const NODE_LABEL: (&str, &str) = ("type", "kwok");
/// Node `i` is called `kwok-node-<i>`.
pub const NODE_NAME_PREFIX: &str = "kwok-node-";

/// Command line and environment for kwok.
pub struct KwokArgs {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// The kinds of kwok's per-pod rules, served from their CRDs (`kwok-crds.yaml`).
pub const KWOK_RULE_KINDS: &str = "Logs,Attach,Exec,PortForward";

/// What every simulated container logs (in the CRI log format kwok reads), under `DIR/kwok`.
pub const DEFAULT_LOG: &str = "logs/container.log";
const DEFAULT_LOG_LINE: &str = "simulated container started";

/// The working directory of commands run by exec, under `DIR/kwok`.
pub const EXEC_DIR: &str = "exec";

/// A line of a container log in the CRI format kwok reads: `TIME STREAM F TEXT`.
pub fn cri_log_line(time: chrono::DateTime<chrono::Utc>, stream: &str, text: &str) -> String {
    format!(
        "{} {stream} F {text}\n",
        time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
    )
}

/// Writes `DIR/kwok/kwok.yaml` (kwok's default node and pod stages, and the default answers of
/// its kubelet API) and returns kwok's flags; it serves that API on `127.0.0.1:kubelet_port`.
pub fn kwok_args(
    dir: &Path,
    bin_dir: &Path,
    kubeconfig: &Path,
    kubelet_port: u16,
) -> Result<KwokArgs> {
    let workdir = dir.join("kwok");
    fs::create_dir_all(workdir.join(EXEC_DIR))?;
    let log = workdir.join(DEFAULT_LOG);
    fs::create_dir_all(log.parent().expect("a log file has a folder"))?;
    fs::write(
        &log,
        cri_log_line(chrono::Utc::now(), "stdout", DEFAULT_LOG_LINE),
    )?;
    let stages = bin_dir.join(KWOK_STAGES_FILE);
    let mut config =
        fs::read_to_string(&stages).with_context(|| format!("reading {}", stages.display()))?;
    config.push_str(EPHEMERAL_CONTAINERS_STAGE);
    config.push_str(&kubelet_defaults(&workdir));
    let config_path = workdir.join("kwok.yaml");
    fs::write(&config_path, config)?;
    Ok(KwokArgs {
        args: vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--config={}", config_path.display()),
            "--manage-all-nodes=false".into(),
            format!("--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake"),
            // kwok renews the nodes' leases so the node lifecycle controller keeps them Ready;
            // the same value kwokctl uses.
            "--node-lease-duration-seconds=40".into(),
            "--cidr=10.244.0.0/16".into(),
            // The kubelet API: on loopback only (exec runs commands on this machine), the
            // port the nodes advertise.
            format!("--server-address=127.0.0.1:{kubelet_port}"),
            format!("--node-port={kubelet_port}"),
            format!("--enable-crds={KWOK_RULE_KINDS}"),
        ],
        env: vec![
            // kwok also loads `$KWOK_WORKDIR/kwok.yaml`, by default from the user's home.
            ("KWOK_WORKDIR".into(), workdir.display().to_string()),
            ("PATH".into(), exec_path(&workdir)?),
        ],
    })
}

/// The `PATH` kwok runs exec's commands with: `DIR/kwok/bin` first, holding a `tar` that stops
/// at the archive's end. kwok never ends a command's input (it does not close the pipe once
/// the caller's stream ends), and GNU tar reading its usual 10 KiB records would wait for it
/// forever: `kubectl cp` into a pod would never finish. With 512-byte records it stops at the
/// end-of-archive blocks.
fn exec_path(workdir: &Path) -> Result<String> {
    let path = std::env::var("PATH").unwrap_or_default();
    let tar = std::env::split_paths(&path)
        .map(|dir| dir.join("tar"))
        .find(|candidate| candidate.is_file())
        .context("no tar on PATH: kubectl cp on simulated pods needs it")?;
    let bin = workdir.join("bin");
    fs::create_dir_all(&bin)?;
    let wrapper = bin.join("tar");
    fs::write(
        &wrapper,
        // Last, so that old-style options (`tar cf - FILE`) stay first.
        format!(
            "#!/bin/sh\nexec {} \"$@\" --blocking-factor=1\n",
            tar.display()
        ),
    )?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755))?;
    Ok(format!("{}:{path}", bin.display()))
}

/// kwok's stages start a pod's containers, not the ephemeral ones added later (`kubectl
/// debug`): this one does, as a kubelet would.
const EPHEMERAL_CONTAINERS_STAGE: &str = r#"---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-ephemeral-containers
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values:
      - 'Running'
    - key: '(.spec.ephemeralContainers | length) > (.status.ephemeralContainerStatuses | length)'
      operator: 'In'
      values:
      - 'true'
  next:
    statusTemplate: |
      {{ $now := Now }}
      ephemeralContainerStatuses:
      {{ range .spec.ephemeralContainers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        restartCount: 0
        state:
          running:
            startedAt: {{ $now | Quote }}
      {{ end }}
"#;

/// kwok's cluster-wide rules: the answers of every simulated pod's kubelet API.
fn kubelet_defaults(workdir: &Path) -> String {
    let log = workdir.join(DEFAULT_LOG).display().to_string();
    let exec = workdir.join(EXEC_DIR).display().to_string();
    let docs = [
        (
            "ClusterLogs",
            serde_json::json!({"logs": [{"logsFile": log}]}),
        ),
        (
            "ClusterAttach",
            serde_json::json!({"attaches": [{"logsFile": log}]}),
        ),
        (
            "ClusterExec",
            serde_json::json!({"execs": [{"local": {"workDir": exec}}]}),
        ),
        (
            "ClusterPortForward",
            serde_json::json!({"forwards": [{"command": ["cat"]}]}),
        ),
    ];
    docs.iter()
        .map(|(kind, spec)| {
            let doc = serde_json::json!({
                "apiVersion": "kwok.x-k8s.io/v1alpha1",
                "kind": kind,
                "metadata": {"name": "local-cluster"},
                "spec": spec,
            });
            format!(
                "---\n{}",
                serde_yaml::to_string(&doc).expect("YAML of JSON")
            )
        })
        .collect()
}

/// Address of a simulated node's kubelet API: kwok's, on loopback. A name, not an IP, because
/// the nodes' InternalIPs are their pods' host IPs and loopback is no valid endpoint address.
pub const KUBELET_HOST: &str = "localhost";

/// First address handed to simulated nodes, counting up; kwok reports a node's InternalIP as
/// the hostIP of its pods.
const FIRST_NODE_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 1);

/// The Node object for simulated node `index`.
pub fn node(index: u32) -> Node {
    let name = format!("{NODE_NAME_PREFIX}{index}");
    let ip = Ipv4Addr::from(u32::from(FIRST_NODE_IP) + index);
    let resources = serde_json::json!({"cpu": "32", "memory": "256Gi", "pods": "110"});
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_ANNOTATION: "fake"},
            "labels": {
                NODE_LABEL.0: NODE_LABEL.1,
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
        },
        "status": {
            "allocatable": resources,
            "capacity": resources,
            "addresses": [
                {"type": "InternalIP", "address": ip.to_string()},
                {"type": "Hostname", "address": name},
                {"type": "InternalDNS", "address": KUBELET_HOST},
            ],
        },
    }))
    .expect("valid Node")
}

/// Creates simulated nodes `0..count`.
pub async fn create(client: &kube::Client, count: u32) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    for index in 0..count {
        let node = node(index);
        nodes
            .create(&PostParams::default(), &node)
            .await
            .with_context(|| {
                format!(
                    "creating node {}",
                    node.metadata.name.as_deref().unwrap_or_default()
                )
            })?;
    }
    Ok(())
}

/// How many simulated nodes report Ready.
pub async fn ready_count(client: &kube::Client) -> Result<u32> {
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes
        .list(&ListParams::default().labels(&format!("{}={}", NODE_LABEL.0, NODE_LABEL.1)))
        .await?;
    Ok(list.items.iter().filter(|node| is_ready(node)).count() as u32)
}

pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Creates kwok's per-pod rule `kind` (`Logs`, `Exec`, `Attach` or `PortForward`, see
/// [`KWOK_RULE_KINDS`]) for pod `namespace/name`, with `spec`; kwok answers that pod's
/// kubelet API from it once its watch has seen it.
pub async fn pod_rule(
    client: &kube::Client,
    kind: &str,
    namespace: &str,
    name: &str,
    spec: serde_json::Value,
) -> Result<()> {
    let plural = match kind {
        "Logs" => "logs",
        "Attach" => "attaches",
        "Exec" => "execs",
        "PortForward" => "portforwards",
        _ => anyhow::bail!("kwok has no per-pod rule {kind}; it has {KWOK_RULE_KINDS}"),
    };
    let resource = ApiResource {
        group: "kwok.x-k8s.io".into(),
        version: "v1alpha1".into(),
        api_version: "kwok.x-k8s.io/v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let rule: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }))?;
    api.create(&PostParams::default(), &rule)
        .await
        .with_context(|| format!("creating kwok's {kind} {namespace}/{name}"))?;
    Ok(())
}
