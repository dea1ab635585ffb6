//! kubectl logs, exec, attach, port-forward and cp in a virtual cluster, through the whole
//! chain: kubectl → the virtual API server → the syncer's kubelet API (the address the virtual
//! nodes advertise) → the host API server → kwok's kubelet API for the host copy. Each answer
//! is compared with the same command run on the host copy directly. kwok's per-pod rules give
//! the host copy its own log files, exec folder and port-forward target.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use virtualcluster_crds::kubelet;
use virtualcluster_operator::pki::file;
use virtualcluster_tests::cluster::free_loopback_ports;
use virtualcluster_tests::harness::{eventually, unique_name};
use virtualcluster_tests::kubectl::Kubectl;
use virtualcluster_tests::loopback::{self, ClientCert};
use virtualcluster_tests::nodes::{self, cri_log_line};
use virtualcluster_tests::process;
use virtualcluster_tests::{TestCluster, shared_cluster};

use crate::syncer::{Running, create, create_namespace, running_with_ip};

/// The same virtual pod seen from both sides: the tenant's kubectl on the virtual pod, the
/// host admin's on its host copy.
struct Sides {
    virt: Kubectl,
    host: Kubectl,
    pod: &'static str,
    host_pod: String,
}

impl Sides {
    /// Runs `args` (with `{pod}` standing for the pod's name) on both sides.
    async fn both(&self, args: &[&str], stdin: Option<&[u8]>) -> (Output, Output) {
        let on =
            |pod: &str| -> Vec<String> { args.iter().map(|a| a.replace("{pod}", pod)).collect() };
        let virt_args = on(self.pod);
        let host_args = on(&self.host_pod);
        let virt = self
            .virt
            .run(
                &virt_args.iter().map(String::as_str).collect::<Vec<_>>(),
                stdin,
            )
            .await
            .unwrap();
        let host = self
            .host
            .run(
                &host_args.iter().map(String::as_str).collect::<Vec<_>>(),
                stdin,
            )
            .await
            .unwrap();
        (virt, host)
    }

    /// Runs `args` on both sides and checks both succeed with the same output, which it
    /// returns.
    async fn same(&self, args: &[&str], stdin: Option<&[u8]>) -> String {
        let (virt, host) = self.both(args, stdin).await;
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        assert!(
            host.status.success(),
            "on the host: kubectl {args:?}: {}",
            text(&host.stderr)
        );
        assert!(
            virt.status.success(),
            "in the virtual cluster: kubectl {args:?}: {}",
            text(&virt.stderr)
        );
        assert_eq!(text(&virt.stdout), text(&host.stdout), "kubectl {args:?}");
        text(&virt.stdout)
    }

    /// The host side's text in the tenant's names.
    fn as_tenant_sees(&self, host_text: &str) -> String {
        host_text
            .replace(&self.host_pod, self.pod)
            .replace(&self.host.namespace, &self.virt.namespace)
    }
}

fn append_log(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap();
    f.write_all(cri_log_line(chrono::Utc::now(), "stdout", text).as_bytes())
        .unwrap();
}

/// Reads lines of `child`'s stdout until one contains `want`, at most 30 s.
async fn read_until<R: tokio::io::AsyncBufRead + Unpin>(lines: &mut R, want: &str) -> String {
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let mut line = String::new();
            if lines.read_line(&mut line).await.unwrap() == 0 {
                return false;
            }
            seen.push_str(&line);
            if line.contains(want) {
                return true;
            }
        }
    })
    .await;
    assert_eq!(found, Ok(true), "{want:?} never came; got {seen:?}");
    seen
}

/// A running instance with virtual pod `shop/web` (containers `web` and `side`) on a simulated
/// node, and kwok's rules for its host copy: `web` logs `logs/web.log` (previous run:
/// `logs/web-previous.log`) and is attached to it, exec runs in `exec/`, port 8080 forwards to
/// a local echo server. Returns the instance, both kubectls and the folder of those files.
async fn pod_with_kubelet(cluster: &TestCluster, prefix: &str) -> (Running, Sides, PathBuf) {
    let running = Running::start(cluster, prefix, "vc", json!({})).await;
    let host_namespace = running.id.namespace.clone();
    let host_pod = running.host_name("shop", "web");
    let files = cluster.dir().join("kwok").join(unique_name(prefix));
    std::fs::create_dir_all(files.join("logs")).unwrap();
    std::fs::create_dir_all(files.join("exec")).unwrap();
    let log = files.join("logs/web.log");
    let previous = files.join("logs/web-previous.log");
    for line in ["line 1", "line 2", "line 3"] {
        append_log(&log, line);
    }
    append_log(&previous, "the run before");
    let echo = loopback::echo_server().await.unwrap();
    let path = |p: &Path| p.display().to_string();
    for (kind, spec) in [
        (
            "Logs",
            json!({"logs": [{"containers": ["web"], "logsFile": path(&log),
                             "previousLogsFile": path(&previous)}]}),
        ),
        (
            "Attach",
            json!({"attaches": [{"containers": ["web"], "logsFile": path(&log)}]}),
        ),
        (
            "Exec",
            json!({"execs": [{"local": {"workDir": path(&files.join("exec"))}}]}),
        ),
        (
            "PortForward",
            json!({"forwards": [{"ports": [8080],
                                 "target": {"address": "127.0.0.1", "port": echo}}]}),
        ),
    ] {
        nodes::pod_rule(
            &cluster.client().await,
            kind,
            &host_namespace,
            &host_pod,
            spec,
        )
        .await
        .unwrap();
    }

    create_namespace(&running.virt, "shop").await;
    create::<Pod>(
        &running.virtual_api("shop"),
        json!({"metadata": {"name": "web"},
        "spec": {"containers": [
            {"name": "web", "image": "nginx", "ports": [{"containerPort": 8080}]},
            {"name": "side", "image": "busybox"},
        ]}}),
    )
    .await;
    let pods = running.virtual_api::<Pod>("shop");
    eventually("the virtual pod to run", || async {
        running_with_ip(&pods.get("web").await.unwrap())
    })
    .await;
    let kubectl = cluster.bin_dir().join("kubectl");
    let sides = Sides {
        virt: Kubectl {
            binary: kubectl.clone(),
            kubeconfig: running.kubeconfig.clone(),
            namespace: "shop".into(),
        },
        host: Kubectl {
            binary: kubectl,
            kubeconfig: cluster.kubeconfig_path().to_owned(),
            namespace: host_namespace,
        },
        pod: "web",
        host_pod,
    };
    // kwok sees its rules through a watch: the host copy answers from them once it has.
    eventually("kwok to serve the pod's own log", || async {
        let out = sides
            .host
            .run(&["logs", &sides.host_pod, "-c", "web"], None)
            .await
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .contains("line 3")
            .then_some(())
    })
    .await;
    (running, sides, files)
}

#[tokio::test]
async fn kubectl_logs_exec_attach_port_forward_and_cp_reach_the_host_copy() {
    let cluster = shared_cluster().await;
    let (_running, sides, files) = pod_with_kubelet(cluster, "kubelet-cmds").await;

    // Logs, with every option that changes what comes back.
    let all = sides.same(&["logs", "{pod}", "-c", "web"], None).await;
    assert_eq!(all, "line 1\nline 2\nline 3\n");
    assert_eq!(
        sides
            .same(&["logs", "{pod}", "-c", "web", "--tail=1"], None)
            .await,
        "line 3\n"
    );
    assert_eq!(
        sides
            .same(&["logs", "{pod}", "-c", "web", "--limit-bytes=9"], None)
            .await,
        "line 1\nli"
    );
    let stamped = sides
        .same(&["logs", "{pod}", "-c", "web", "--timestamps"], None)
        .await;
    let stamped: Vec<&str> = stamped.lines().collect();
    assert_eq!(stamped.len(), 3, "{stamped:?}");
    for (line, text) in stamped.iter().zip(all.lines()) {
        let (time, rest) = line.split_once(' ').unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{line}");
        assert_eq!(rest, text);
    }
    assert_eq!(
        sides
            .same(&["logs", "{pod}", "-c", "web", "--since=1h"], None)
            .await,
        all
    );
    assert_eq!(
        sides
            .same(
                &[
                    "logs",
                    "{pod}",
                    "-c",
                    "web",
                    "--since-time=2000-01-01T00:00:00Z"
                ],
                None
            )
            .await,
        all
    );
    assert_eq!(
        sides
            .same(&["logs", "{pod}", "-c", "web", "--previous"], None)
            .await,
        "the run before\n"
    );
    // `side` ran once only: no previous log, the same refusal as on the host, in the
    // tenant's names.
    let (virt, host) = sides
        .both(&["logs", "{pod}", "-c", "side", "--previous"], None)
        .await;
    assert!(!virt.status.success() && !host.status.success());
    let virt_err = String::from_utf8_lossy(&virt.stderr).into_owned();
    assert_eq!(
        virt_err,
        sides.as_tenant_sees(&String::from_utf8_lossy(&host.stderr))
    );
    assert!(!virt_err.contains(&sides.host_pod), "{virt_err}");

    // Followed: lines written after kubectl started come as they are written.
    let mut follow = sides
        .virt
        .command(&["logs", "-f", "web", "-c", "web"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap());
    read_until(&mut lines, "line 3").await;
    append_log(&files.join("logs/web.log"), "line 4");
    read_until(&mut lines, "line 4").await;
    follow.kill().await.unwrap();

    // Exec: output, input, exit codes and a terminal.
    assert_eq!(
        sides
            .same(&["exec", "{pod}", "-c", "web", "--", "echo", "hello"], None)
            .await,
        "hello\n"
    );
    // kubectl speaks WebSocket to the API server by default; SPDY, as older kubectls do, too.
    let spdy = sides
        .virt
        .command(&["exec", "web", "-c", "web", "--", "echo", "over spdy"])
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")
        .output()
        .await
        .unwrap();
    assert!(spdy.status.success(), "{spdy:?}");
    assert_eq!(String::from_utf8_lossy(&spdy.stdout), "over spdy\n");
    // (kwok's exec gives no end of input to the command: it reads one line.)
    assert_eq!(
        sides
            .same(
                &[
                    "exec",
                    "-i",
                    "{pod}",
                    "--",
                    "sh",
                    "-c",
                    "read line; echo \"got $line\""
                ],
                Some(b"from stdin\n"),
            )
            .await,
        "got from stdin\n"
    );
    let (virt, host) = sides
        .both(
            &["exec", "{pod}", "--", "sh", "-c", "echo out; exit 3"],
            None,
        )
        .await;
    assert!(!host.status.success(), "the host's exec exited 0");
    assert_eq!(virt.status.code(), host.status.code());
    assert_eq!(virt.stdout, host.stdout);
    assert_eq!(
        String::from_utf8_lossy(&virt.stderr),
        sides.as_tenant_sees(&String::from_utf8_lossy(&host.stderr))
    );
    // `-it` needs a terminal on kubectl's side: `script` gives it one.
    let tty = |kubectl: &Kubectl, pod: &str| {
        format!(
            "{} --kubeconfig={} --namespace={} exec -it {pod} -c web -- sh -c 'test -t 0 && echo tty'",
            kubectl.binary.display(),
            kubectl.kubeconfig.display(),
            kubectl.namespace
        )
    };
    let mut outputs = Vec::new();
    for line in [
        tty(&sides.virt, sides.pod),
        tty(&sides.host, &sides.host_pod),
    ] {
        // Under load `script` at times ends before it has copied the terminal's last output
        // (seen on the host side as often as on the virtual one), so each side gets three
        // tries to show it.
        let mut seen = Vec::new();
        for _ in 0..3 {
            let mut script = tokio::process::Command::new("script")
                .args(["-qec", &line, "/dev/null"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("running script (util-linux)");
            // Its input stays open while the command runs: at its end, script would end the
            // session.
            let _input = script.stdin.take();
            let out = tokio::time::timeout(Duration::from_secs(60), script.wait_with_output())
                .await
                .expect("kubectl exec -it ended within a minute")
                .unwrap();
            assert!(out.status.success(), "{line}: {out:?}");
            seen.push(String::from_utf8_lossy(&out.stdout).into_owned());
            if !seen.last().unwrap().is_empty() {
                break;
            }
        }
        outputs.push(seen.pop().unwrap_or_default());
    }
    assert_eq!(outputs[0], "tty\r\n");
    assert_eq!(outputs[0], outputs[1]);

    // cp both ways (exec with tar), in the exec folder kwok runs commands in.
    let local = files.join("local");
    std::fs::create_dir_all(&local).unwrap();
    std::fs::write(
        local.join("up.txt"),
        "uploaded through the virtual cluster\n",
    )
    .unwrap();
    sides
        .virt
        .ok(&[
            "cp",
            &local.join("up.txt").display().to_string(),
            "web:up.txt",
            "-c",
            "web",
        ])
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(files.join("exec/up.txt")).unwrap(),
        "uploaded through the virtual cluster\n"
    );
    std::fs::write(files.join("exec/down.txt"), "made in the pod\n").unwrap();
    sides
        .virt
        .ok(&[
            "cp",
            "web:down.txt",
            &local.join("down.txt").display().to_string(),
            "-c",
            "web",
        ])
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(local.join("down.txt")).unwrap(),
        "made in the pod\n"
    );

    // Attach: what the container writes from now on.
    let mut attach = sides
        .virt
        .command(&["attach", "web", "-c", "web"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(attach.stdout.take().unwrap());
    let log = files.join("logs/web.log");
    let writer = tokio::spawn(async move {
        // kwok starts at the file's end once attached: keep writing until a line is seen.
        for i in 0.. {
            append_log(&log, &format!("attached {i}"));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    read_until(&mut lines, "attached").await;
    writer.abort();
    attach.kill().await.unwrap();

    // Port-forward: bytes round-trip to the echo server the pod's port forwards to.
    let [local_port] = free_loopback_ports(1).unwrap()[..] else {
        unreachable!()
    };
    let mut forward = sides
        .virt
        .command(&[
            "port-forward",
            "web",
            &format!("{local_port}:8080"),
            "--address=127.0.0.1",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(forward.stdout.take().unwrap());
    read_until(&mut lines, "Forwarding from").await;
    let sent: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", local_port))
        .await
        .unwrap();
    let (mut read, mut write) = stream.split();
    let mut received = vec![0; sent.len()];
    let (wrote, got) = tokio::time::timeout(
        Duration::from_secs(30),
        futures::future::join(write.write_all(&sent), read.read_exact(&mut received)),
    )
    .await
    .expect("the echo came back within 30 s");
    wrote.unwrap();
    got.unwrap();
    assert!(received == sent, "the forwarded bytes came back changed");
    forward.kill().await.unwrap();
}

#[tokio::test]
async fn the_kubelet_api_answers_the_virtual_api_server_for_the_instance_pods_only() {
    let cluster = shared_cluster().await;
    let (running, sides, _files) = pod_with_kubelet(cluster, "kubelet-refusals").await;

    // Where the syncer serves, under the address the virtual nodes advertise.
    let (args, _) = process::command_of(running.syncer_record().pid).unwrap();
    let flag = |name: &str| {
        let prefix = format!("{name}=");
        args.iter()
            .find_map(|a| a.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("the syncer has no {name}: {args:?}"))
            .to_owned()
    };
    let listen: std::net::SocketAddr = flag(kubelet::flag::LISTEN).parse().unwrap();
    let advertised: std::net::SocketAddr = flag(kubelet::flag::ADVERTISE).parse().unwrap();
    let server = advertised.ip().to_string();
    let certs = running
        .host_api::<Secret>()
        .get(&running.id.certs_secret())
        .await
        .unwrap()
        .data
        .unwrap_or_default();
    let pem = |key: &str| certs[key].0.clone();
    let ca = pem(file::CA_CERT);
    let (kubelet_cert, kubelet_key) = (
        pem(file::KUBELET_CLIENT_CERT),
        pem(file::KUBELET_CLIENT_KEY),
    );
    let (admin_cert, admin_key) = (pem(file::ADMIN_CERT), pem(file::ADMIN_KEY));
    let api_server = || {
        Some(ClientCert {
            cert: &kubelet_cert,
            key: &kubelet_key,
        })
    };
    let port = listen.port();
    let get = async |client: Option<ClientCert<'_>>, path: &str| {
        loopback::https_get(port, &server, &ca, client, path).await
    };

    // The virtual API server's client certificate reads the instance's pod.
    let (code, body) = get(api_server(), "/containerLogs/shop/web/web")
        .await
        .unwrap();
    assert_eq!((code, body.as_str()), (200, "line 1\nline 2\nline 3\n"));

    // No client certificate: no TLS session.
    let refused = get(None, "/containerLogs/shop/web/web").await;
    assert!(
        refused.is_err(),
        "answered without a client certificate: {refused:?}"
    );
    // The instance's CA signed the admin's certificate too; it is not the API server's.
    let (code, body) = get(
        Some(ClientCert {
            cert: &admin_cert,
            key: &admin_key,
        }),
        "/containerLogs/shop/web/web",
    )
    .await
    .unwrap();
    assert_eq!(code, 403, "{body}");
    assert!(!body.contains("line 1"), "{body}");

    // A host pod under the name the instance's copy would have, not made by the syncer: as
    // if it did not exist.
    let impostor = running.host_name("shop", "impostor");
    create::<Pod>(
        &running.host_api(),
        json!({"metadata": {"name": impostor},
               "spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
    )
    .await;
    let (code, body) = get(api_server(), "/containerLogs/shop/impostor/c")
        .await
        .unwrap();
    assert_eq!(code, 404, "{body}");
    assert!(
        !body.contains(&impostor),
        "a host name reached the caller: {body}"
    );
    // The instance's pod under another UID (a pod of that name made again) is not it either.
    let (code, body) = get(
        api_server(),
        "/exec/shop/web/not-its-uid/web?command=true&output=1",
    )
    .await
    .unwrap();
    assert_eq!(code, 404, "{body}");
    // A container only the host copy has (one a host webhook added, say) is not the tenant's
    // to read, though `nodes/proxy` would send any path.
    running
        .host_api::<Pod>()
        .patch_subresource(
            "ephemeralcontainers",
            &sides.host_pod,
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"ephemeralContainers": [{
                "name": "host-sidecar", "image": "busybox",
                "securityContext": {"allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": true,
                    "seccompProfile": {"type": "RuntimeDefault"}},
            }]}})),
        )
        .await
        .unwrap();
    let (code, body) = get(api_server(), "/containerLogs/shop/web/host-sidecar")
        .await
        .unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains(r#"container "host-sidecar" is not valid for pod shop/web"#),
        "{body}"
    );
    // Nothing but logs, exec, attach and port-forward is served, and says so.
    let (code, body) = get(api_server(), "/stats/summary").await.unwrap();
    assert_eq!(code, 501, "{body}");
    assert!(body.contains("/stats/summary"), "{body}");
    let (code, body) = get(api_server(), "/exec/shop/web/web?command=true&output=1")
        .await
        .unwrap();
    assert_eq!(code, 400, "exec without an upgrade: {body}");

    // Counted by call and answer.
    let (_, metrics) = running.syncer_http("/metrics").await;
    for series in [
        r#"virtualcluster_syncer_kubelet_requests_total{call="containerLogs",code="200"}"#,
        r#"virtualcluster_syncer_kubelet_requests_total{call="containerLogs",code="403"}"#,
        r#"virtualcluster_syncer_kubelet_requests_total{call="containerLogs",code="404"}"#,
        r#"virtualcluster_syncer_kubelet_requests_total{call="containerLogs",code="400"}"#,
        r#"virtualcluster_syncer_kubelet_requests_total{call="unsupported",code="501"}"#,
    ] {
        assert!(metrics.contains(series), "no {series} in\n{metrics}");
    }
}

#[tokio::test]
async fn kubectl_debug_adds_an_ephemeral_container_held_to_pod_security() {
    let cluster = shared_cluster().await;
    let (running, sides, _files) = pod_with_kubelet(cluster, "kubelet-debug").await;

    // kubectl's default profile adds SYS_PTRACE, which baseline forbids.
    let debug = async |container: &str, profile: &str| {
        sides
            .virt
            .ok(&[
                "debug",
                "web",
                "-c",
                container,
                "--image=busybox",
                &format!("--profile={profile}"),
                "--",
                "sleep",
                "1d",
            ])
            .await
            .unwrap();
    };
    let host_pods = running.host_api::<Pod>();
    let on_host = async || {
        let pod = host_pods.get(&sides.host_pod).await.unwrap();
        pod.spec
            .and_then(|s| s.ephemeral_containers)
            .unwrap_or_default()
    };
    debug("debugger", "baseline").await;
    // Added to the host copy through its subresource, renamed like the pod's containers.
    let added = eventually("the ephemeral container on the host copy", || async {
        on_host().await.into_iter().find(|c| c.name == "debugger")
    })
    .await;
    assert_eq!(added.image.as_deref(), Some("busybox"));
    let env = added.env.unwrap_or_default();
    assert!(
        env.iter().any(|e| e.name == "KUBERNETES_SERVICE_HOST"),
        "the debug container would find the host's API server: {env:?}"
    );
    // Its status comes back, so kubectl can attach and exec.
    let virtual_pods = running.virtual_api::<Pod>("shop");
    eventually(
        "the ephemeral container to run in the virtual pod",
        || async {
            let status = virtual_pods.get("web").await.unwrap().status?;
            status
                .ephemeral_container_statuses?
                .iter()
                .any(|s| {
                    s.name == "debugger" && s.state.as_ref().is_some_and(|s| s.running.is_some())
                })
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        sides
            .same(
                &["exec", "{pod}", "-c", "debugger", "--", "echo", "debugging"],
                None
            )
            .await,
        "debugging\n"
    );

    // A tenant who lowers its own namespace's level gets past the virtual API server, not the
    // syncer: the instance's level (baseline) holds the host copy, and NET_ADMIN is beyond it.
    sides
        .virt
        .ok(&[
            "label",
            "namespace",
            "shop",
            "pod-security.kubernetes.io/enforce=privileged",
        ])
        .await
        .unwrap();
    debug("netadmin", "netadmin").await;
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(running.virt.clone(), "shop");
    let refusal = async || {
        events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("PodSecurityViolation")
                    && e.involved_object.name.as_deref() == Some("web")
            })
    };
    let note = eventually(
        "a PodSecurityViolation Event on the virtual pod",
        || async { refusal().await.and_then(|e| e.message) },
    )
    .await;
    assert!(
        note.contains("spec.ephemeralContainers[1].securityContext.capabilities.add"),
        "{note}"
    );
    let names = |containers: Vec<k8s_openapi::api::core::v1::EphemeralContainer>| {
        let mut names: Vec<String> = containers.into_iter().map(|c| c.name).collect();
        names.sort();
        names
    };
    assert_eq!(names(on_host().await), ["debugger"]);

    // The refused container stays in the virtual pod (none can be taken out); one added after
    // it is not held back.
    debug("later", "baseline").await;
    eventually("the later ephemeral container on the host copy", || async {
        (names(on_host().await) == ["debugger", "later"]).then_some(())
    })
    .await;
    // The refusal was reported once, though the pod changed since (a repeated Event would
    // have become a series).
    let reported = refusal().await.unwrap();
    assert!(reported.series.is_none(), "{reported:?}");
}
