//! Pods that exercise every Pod Security Standards rule, passing and failing, at pod and
//! container level and in combination, so [`virtualcluster_crds::pod_security::check`] can be
//! held to the API server's own verdict: each sample is a pod the API server accepts
//! structurally, submitted with server-side dry-run into namespaces that enforce `baseline` and
//! `restricted`, where only the PodSecurity admission plugin can refuse it.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

/// The image of every container: the samples differ only in fields the rules read.
const IMAGE: &str = "registry.k8s.io/pause:3.10";

/// How many random combinations of edits join the hand-picked samples.
const RANDOM_SAMPLES: usize = 80;

/// The samples, each named `s-NNNN` (a DNS label, unique) and carrying that name, always in the
/// same order with the same content.
pub fn sample_pods() -> Vec<(String, Pod)> {
    let mut manifests = Vec::new();
    let pod_edits = pod_edits();
    let container_edits = container_edits();

    for base in [
        minimal(),
        hardened(),
        minimal_with_init(),
        hardened_with_init(),
    ] {
        manifests.push(base);
    }
    manifests.push(windows(false));
    manifests.push(windows(true));

    // One edit on a pod that passes baseline, and on one that passes restricted.
    for base in [minimal(), hardened()] {
        for (_, edit) in &pod_edits {
            manifests.push(edited(&base, |v| edit(v)));
        }
        for (_, _, edit) in &container_edits {
            manifests.push(edited(&base, |v| edit(v, MAIN)));
        }
    }
    // The same edits on an init container, beside a compliant main container.
    for base in [minimal_with_init(), hardened_with_init()] {
        for (_, regular_only, edit) in &container_edits {
            if !regular_only {
                manifests.push(edited(&base, |v| edit(v, INIT)));
            }
        }
    }
    // Windows pods, exempt from the Linux-only restricted rules.
    let windows_base = windows(true);
    for (_, edit) in &pod_edits {
        manifests.push(edited(&windows_base, |v| edit(v)));
    }
    for (_, _, edit) in &container_edits {
        manifests.push(edited(&windows_base, |v| edit(v, MAIN)));
    }

    let mut seen = BTreeSet::new();
    let mut pods: Vec<Pod> = Vec::new();
    let mut keep = |manifest: Value, pods: &mut Vec<Pod>| -> bool {
        let pod: Pod = serde_json::from_value(manifest).expect("sample is a Pod");
        if api_accepts(&pod).is_err() {
            return false;
        }
        let key = serde_json::to_string(&pod).expect("pods serialize");
        if !seen.insert(key) {
            return false;
        }
        pods.push(pod);
        true
    };
    for manifest in manifests {
        keep(manifest, &mut pods);
    }

    // Random combinations of two to four edits, from a fixed seed.
    let bases = [
        minimal(),
        hardened(),
        minimal_with_init(),
        hardened_with_init(),
    ];
    let mut rng = Lcg(0x5eed_0f90_57ec);
    let mut added = 0;
    for _ in 0..20_000 {
        if added == RANDOM_SAMPLES {
            break;
        }
        let base = &bases[rng.below(bases.len())];
        let has_init = base["spec"].get("initContainers").is_some();
        let mut manifest = base.clone();
        for _ in 0..2 + rng.below(3) {
            let pick = rng.below(pod_edits.len() + container_edits.len());
            if let Some((_, edit)) = pod_edits.get(pick) {
                edit(&mut manifest);
            } else {
                let (_, regular_only, edit) = &container_edits[pick - pod_edits.len()];
                let target = if has_init && !regular_only && rng.below(2) == 0 {
                    INIT
                } else {
                    MAIN
                };
                edit(&mut manifest, target);
            }
        }
        if keep(manifest, &mut pods) {
            added += 1;
        }
    }

    pods.into_iter()
        .enumerate()
        .map(|(i, mut pod)| {
            let name = format!("s-{:04}", i + 1);
            pod.metadata.name = Some(name.clone());
            (name, pod)
        })
        .collect()
}

/// A linear congruential generator: enough to spread the combinations, the same every run.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

/// Where the main container and the init container sit in a manifest.
const MAIN: &str = "spec.containers.0";
const INIT: &str = "spec.initContainers.0";

/// An edit of the whole pod.
type PodEdit = Box<dyn Fn(&mut Value)>;
/// An edit of the container at the given path.
type ContainerEdit = Box<dyn Fn(&mut Value, &str)>;

fn edited(base: &Value, edit: impl FnOnce(&mut Value)) -> Value {
    let mut v = base.clone();
    edit(&mut v);
    v
}

fn container(name: &str) -> Value {
    json!({"name": name, "image": IMAGE})
}

/// One container, nothing set: passes baseline, fails restricted.
fn minimal() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {},
        "spec": {"containers": [container("c")]}})
}

/// The hardened security context restricted asks of every container.
fn hardened_container(name: &str) -> Value {
    let mut c = container(name);
    c["securityContext"] = json!({"allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]}});
    c
}

/// A pod that passes restricted.
fn hardened() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": {
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [hardened_container("c")]}})
}

fn minimal_with_init() -> Value {
    edited(&minimal(), |v| {
        v["spec"]["initContainers"] = json!([container("init")]);
    })
}

fn hardened_with_init() -> Value {
    edited(&hardened(), |v| {
        v["spec"]["initContainers"] = json!([hardened_container("init")]);
    })
}

/// A Windows pod; `non_root` makes it pass restricted.
fn windows(non_root: bool) -> Value {
    edited(&minimal(), |v| {
        v["spec"]["os"] = json!({"name": "windows"});
        if non_root {
            v["spec"]["securityContext"] = json!({"runAsNonRoot": true});
        }
    })
}

/// Sets the field at a dotted path (numbers index arrays), making objects on the way.
fn set(v: &mut Value, path: &str, value: Value) {
    let mut cur = v;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if cur.is_null() {
            *cur = json!({});
        }
        let next = match part.parse::<usize>() {
            Ok(i) => &mut cur[i],
            Err(_) => cur
                .as_object_mut()
                .expect("path runs through objects")
                .entry(part)
                .or_insert(Value::Null),
        };
        if parts.peek().is_none() {
            *next = value;
            return;
        }
        cur = next;
    }
}

/// Removes the field at a dotted path, if it is there.
fn unset(v: &mut Value, path: &str) {
    let (parent, last) = path.rsplit_once('.').expect("path has a parent");
    let mut cur = v;
    for part in parent.split('.') {
        let next = match part.parse::<usize>() {
            Ok(i) => cur.get_mut(i),
            Err(_) => cur.get_mut(part),
        };
        match next {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(object) = cur.as_object_mut() {
        object.remove(last);
    }
}

fn annotate(v: &mut Value, key: &str, value: &str) {
    set(v, "metadata.annotations", {
        let mut annotations = v["metadata"]["annotations"].clone();
        if annotations.is_null() {
            annotations = json!({});
        }
        annotations[key] = json!(value);
        annotations
    });
}

/// Adds a volume, replacing one of the same name.
fn add_volume(v: &mut Value, volume: Value) {
    if v["spec"]["volumes"].is_null() {
        v["spec"]["volumes"] = json!([]);
    }
    let volumes = v["spec"]["volumes"].as_array_mut().expect("volumes list");
    volumes.retain(|existing| existing["name"] != volume["name"]);
    volumes.push(volume);
}

/// Adds a sysctl unless the pod sets it already.
fn add_sysctl(v: &mut Value, name: &str, value: &str) {
    if v["spec"]["securityContext"]["sysctls"].is_null() {
        set(v, "spec.securityContext.sysctls", json!([]));
    }
    let sysctls = v["spec"]["securityContext"]["sysctls"]
        .as_array_mut()
        .expect("sysctls list");
    if !sysctls.iter().any(|s| s["name"] == name) {
        sysctls.push(json!({"name": name, "value": value}));
    }
}

fn pe(edit: impl Fn(&mut Value) + 'static) -> PodEdit {
    Box::new(edit)
}

fn ce(edit: impl Fn(&mut Value, &str) + 'static) -> ContainerEdit {
    Box::new(edit)
}

/// Sets `key` in the security context of the container at `at`.
fn set_sc(v: &mut Value, at: &str, key: &str, value: Value) {
    set(v, &format!("{at}.securityContext.{key}"), value);
}

/// The name of the container at `at`.
fn name_at(at: &str) -> &'static str {
    if at == INIT { "init" } else { "c" }
}

/// Edits of pod-level fields, each named for what it does.
fn pod_edits() -> Vec<(&'static str, PodEdit)> {
    let mut edits: Vec<(&'static str, PodEdit)> = vec![
        (
            "host-network",
            pe(|v| set(v, "spec.hostNetwork", json!(true))),
        ),
        ("host-pid", pe(|v| set(v, "spec.hostPID", json!(true)))),
        ("host-ipc", pe(|v| set(v, "spec.hostIPC", json!(true)))),
        (
            "host-all",
            pe(|v| {
                set(v, "spec.hostNetwork", json!(true));
                set(v, "spec.hostPID", json!(true));
                set(v, "spec.hostIPC", json!(true));
            }),
        ),
        (
            "host-network-with-port",
            pe(|v| {
                set(v, "spec.hostNetwork", json!(true));
                set(
                    v,
                    "spec.containers.0.ports",
                    json!([{"containerPort": 8080}]),
                );
            }),
        ),
        (
            "host-network-false",
            pe(|v| set(v, "spec.hostNetwork", json!(false))),
        ),
        (
            "host-pid-ipc-false",
            pe(|v| {
                set(v, "spec.hostPID", json!(false));
                set(v, "spec.hostIPC", json!(false));
            }),
        ),
        (
            "host-users-false",
            pe(|v| set(v, "spec.hostUsers", json!(false))),
        ),
        (
            "host-users-true",
            pe(|v| set(v, "spec.hostUsers", json!(true))),
        ),
        (
            "pod-host-process",
            pe(|v| {
                set(v, "spec.hostNetwork", json!(true));
                set(
                    v,
                    "spec.securityContext.windowsOptions.hostProcess",
                    json!(true),
                );
            }),
        ),
        (
            "pod-host-process-false",
            pe(|v| {
                set(
                    v,
                    "spec.securityContext.windowsOptions.hostProcess",
                    json!(false),
                )
            }),
        ),
        (
            "os-linux",
            pe(|v| set(v, "spec.os", json!({"name": "linux"}))),
        ),
        (
            "pod-apparmor-unconfined",
            pe(|v| {
                set(
                    v,
                    "spec.securityContext.appArmorProfile",
                    json!({"type": "Unconfined"}),
                )
            }),
        ),
        (
            "pod-apparmor-runtime-default",
            pe(|v| {
                set(
                    v,
                    "spec.securityContext.appArmorProfile",
                    json!({"type": "RuntimeDefault"}),
                )
            }),
        ),
        (
            "pod-apparmor-localhost",
            pe(|v| {
                set(
                    v,
                    "spec.securityContext.appArmorProfile",
                    json!({"type": "Localhost", "localhostProfile": "k8s-apparmor-example"}),
                )
            }),
        ),
        (
            "pod-selinux-spc",
            pe(|v| {
                set(
                    v,
                    "spec.securityContext.seLinuxOptions",
                    json!({"type": "spc_t"}),
                )
            }),
        ),
        (
            "pod-selinux-container-t",
            pe(|v| {
                set(
                    v,
                    "spec.securityContext.seLinuxOptions",
                    json!({"type": "container_t", "level": "s0:c123,c456"}),
                )
            }),
        ),
        (
            "pod-selinux-engine",
            pe(|v| {
                set(
                    v,
                    "spec.securityContext.seLinuxOptions",
                    json!({"type": "container_engine_t"}),
                )
            }),
        ),
        (
            "pod-selinux-user",
            pe(|v| {
                set(
                    v,
                    "spec.securityContext.seLinuxOptions",
                    json!({"user": "system_u"}),
                )
            }),
        ),
        (
            "pod-selinux-role",
            pe(|v| {
                set(
                    v,
                    "spec.securityContext.seLinuxOptions",
                    json!({"role": "system_r", "type": "container_t"}),
                )
            }),
        ),
        (
            "pod-seccomp-unconfined",
            pe(|v| {
                set(
                    v,
                    "spec.securityContext.seccompProfile",
                    json!({"type": "Unconfined"}),
                )
            }),
        ),
        (
            "pod-seccomp-runtime-default",
            pe(|v| {
                set(
                    v,
                    "spec.securityContext.seccompProfile",
                    json!({"type": "RuntimeDefault"}),
                )
            }),
        ),
        (
            "pod-seccomp-localhost",
            pe(|v| {
                set(
                    v,
                    "spec.securityContext.seccompProfile",
                    json!({"type": "Localhost", "localhostProfile": "profiles/audit.json"}),
                )
            }),
        ),
        (
            "pod-seccomp-unset",
            pe(|v| unset(v, "spec.securityContext.seccompProfile")),
        ),
        (
            "seccomp-annotation-pod-unconfined",
            pe(|v| annotate(v, "seccomp.security.alpha.kubernetes.io/pod", "unconfined")),
        ),
        (
            "seccomp-annotation-container-unconfined",
            pe(|v| {
                annotate(
                    v,
                    "container.seccomp.security.alpha.kubernetes.io/c",
                    "unconfined",
                )
            }),
        ),
        (
            "apparmor-annotation-unconfined",
            pe(|v| {
                annotate(
                    v,
                    "container.apparmor.security.beta.kubernetes.io/c",
                    "unconfined",
                )
            }),
        ),
        (
            "apparmor-annotation-runtime-default",
            pe(|v| {
                annotate(
                    v,
                    "container.apparmor.security.beta.kubernetes.io/c",
                    "runtime/default",
                )
            }),
        ),
        (
            "apparmor-annotation-localhost",
            pe(|v| {
                annotate(
                    v,
                    "container.apparmor.security.beta.kubernetes.io/c",
                    "localhost/k8s-apparmor-example",
                )
            }),
        ),
        (
            "apparmor-annotation-init-unconfined",
            pe(|v| {
                annotate(
                    v,
                    "container.apparmor.security.beta.kubernetes.io/init",
                    "unconfined",
                )
            }),
        ),
        (
            "pod-run-as-non-root-true",
            pe(|v| set(v, "spec.securityContext.runAsNonRoot", json!(true))),
        ),
        (
            "pod-run-as-non-root-false",
            pe(|v| set(v, "spec.securityContext.runAsNonRoot", json!(false))),
        ),
        (
            "pod-run-as-non-root-unset",
            pe(|v| unset(v, "spec.securityContext.runAsNonRoot")),
        ),
        (
            "pod-run-as-user-0",
            pe(|v| set(v, "spec.securityContext.runAsUser", json!(0))),
        ),
        (
            "pod-run-as-user-1000",
            pe(|v| set(v, "spec.securityContext.runAsUser", json!(1000))),
        ),
        (
            "pod-root-in-user-namespace",
            pe(|v| {
                set(v, "spec.hostUsers", json!(false));
                set(v, "spec.securityContext.runAsUser", json!(0));
                set(v, "spec.securityContext.runAsNonRoot", json!(false));
            }),
        ),
        (
            "volume-host-path",
            pe(|v| add_volume(v, json!({"name": "host", "hostPath": {"path": "/var/log"}}))),
        ),
        (
            "volume-host-path-directory",
            pe(|v| {
                add_volume(
                    v,
                    json!({"name": "host-dir", "hostPath": {"path": "/etc", "type": "Directory"}}),
                )
            }),
        ),
        (
            "volume-nfs",
            pe(|v| {
                add_volume(
                    v,
                    json!({"name": "nfs", "nfs": {"server": "nfs.example.com", "path": "/export"}}),
                )
            }),
        ),
        (
            "volume-gce-pd",
            pe(|v| {
                add_volume(
                    v,
                    json!({"name": "gce", "gcePersistentDisk": {"pdName": "disk"}}),
                )
            }),
        ),
        (
            "volume-aws-ebs",
            pe(|v| {
                add_volume(
                    v,
                    json!({"name": "ebs", "awsElasticBlockStore": {"volumeID": "vol-0123456789"}}),
                )
            }),
        ),
        (
            "volume-cinder",
            pe(|v| add_volume(v, json!({"name": "cinder", "cinder": {"volumeID": "c1"}}))),
        ),
        (
            "volume-flex",
            pe(|v| {
                add_volume(
                    v,
                    json!({"name": "flex", "flexVolume": {"driver": "example.com/flex"}}),
                )
            }),
        ),
        (
            "volume-iscsi",
            pe(|v| {
                add_volume(
                    v,
                    json!({"name": "iscsi", "iscsi": {"targetPortal": "10.0.0.1:3260",
                        "iqn": "iqn.2001-04.com.example:storage", "lun": 0}}),
                )
            }),
        ),
        (
            "volume-config-map",
            pe(|v| add_volume(v, json!({"name": "cm", "configMap": {"name": "cm"}}))),
        ),
        (
            "volume-secret",
            pe(|v| add_volume(v, json!({"name": "secret", "secret": {"secretName": "s"}}))),
        ),
        (
            "volume-empty-dir",
            pe(|v| add_volume(v, json!({"name": "scratch", "emptyDir": {}}))),
        ),
        (
            "volume-downward-api",
            pe(|v| {
                add_volume(
                    v,
                    json!({"name": "podinfo", "downwardAPI": {"items": [
                        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}),
                )
            }),
        ),
        (
            "volume-projected",
            pe(|v| {
                add_volume(
                    v,
                    json!({"name": "projected", "projected": {"sources": [
                        {"configMap": {"name": "cm"}}]}}),
                )
            }),
        ),
        (
            "volume-csi",
            pe(|v| {
                add_volume(
                    v,
                    json!({"name": "csi", "csi": {"driver": "csi.example.com"}}),
                )
            }),
        ),
        (
            "volume-ephemeral",
            pe(|v| {
                add_volume(
                    v,
                    json!({"name": "ephemeral", "ephemeral": {"volumeClaimTemplate": {"spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}}}}}}),
                )
            }),
        ),
        (
            "volume-pvc",
            pe(|v| {
                add_volume(
                    v,
                    json!({"name": "claim", "persistentVolumeClaim": {"claimName": "pvc"}}),
                )
            }),
        ),
        (
            "volume-image",
            pe(|v| add_volume(v, json!({"name": "image", "image": {"reference": IMAGE}}))),
        ),
        (
            "sysctl-unsafe-kernel",
            pe(|v| add_sysctl(v, "kernel.msgmax", "65536")),
        ),
        (
            "sysctl-unsafe-net",
            pe(|v| add_sysctl(v, "net.core.somaxconn", "1024")),
        ),
        (
            "sysctl-unsafe-vm",
            pe(|v| add_sysctl(v, "vm.swappiness", "10")),
        ),
        (
            "sysctl-slash-form",
            pe(|v| add_sysctl(v, "net/ipv4/ip_local_port_range", "1024 65535")),
        ),
        (
            "sysctl-safe-and-unsafe",
            pe(|v| {
                add_sysctl(v, "net.ipv4.tcp_syncookies", "1");
                add_sysctl(v, "kernel.sem", "250 32000 100 128");
            }),
        ),
    ];
    for (label, name, value) in SAFE_SYSCTLS {
        edits.push((label, pe(move |v| add_sysctl(v, name, value))));
    }
    edits
}

/// Each safe sysctl, with a value its kernel accepts.
const SAFE_SYSCTLS: [(&str, &str, &str); 14] = [
    ("sysctl-shm-rmid-forced", "kernel.shm_rmid_forced", "1"),
    (
        "sysctl-ip-local-port-range",
        "net.ipv4.ip_local_port_range",
        "1024 65535",
    ),
    ("sysctl-tcp-syncookies", "net.ipv4.tcp_syncookies", "1"),
    (
        "sysctl-ping-group-range",
        "net.ipv4.ping_group_range",
        "0 0",
    ),
    (
        "sysctl-unprivileged-port-start",
        "net.ipv4.ip_unprivileged_port_start",
        "80",
    ),
    (
        "sysctl-local-reserved-ports",
        "net.ipv4.ip_local_reserved_ports",
        "30000-30100",
    ),
    (
        "sysctl-keepalive-time",
        "net.ipv4.tcp_keepalive_time",
        "600",
    ),
    ("sysctl-fin-timeout", "net.ipv4.tcp_fin_timeout", "30"),
    (
        "sysctl-keepalive-intvl",
        "net.ipv4.tcp_keepalive_intvl",
        "60",
    ),
    (
        "sysctl-keepalive-probes",
        "net.ipv4.tcp_keepalive_probes",
        "5",
    ),
    ("sysctl-tcp-rmem", "net.ipv4.tcp_rmem", "4096 87380 6291456"),
    ("sysctl-tcp-wmem", "net.ipv4.tcp_wmem", "4096 16384 4194304"),
    (
        "sysctl-slow-start-after-idle",
        "net.ipv4.tcp_slow_start_after_idle",
        "0",
    ),
    (
        "sysctl-notsent-lowat",
        "net.ipv4.tcp_notsent_lowat",
        "16384",
    ),
];

/// Edits of one container, each named for what it does; `true` marks those only a regular
/// container may carry (probes and lifecycle handlers).
fn container_edits() -> Vec<(&'static str, bool, ContainerEdit)> {
    let caps_add = |caps: &'static [&'static str]| {
        ce(move |v, at| set_sc(v, at, "capabilities.add", json!(caps)))
    };
    let caps_drop = |caps: &'static [&'static str]| {
        ce(move |v, at| set_sc(v, at, "capabilities.drop", json!(caps)))
    };
    let sc = |key: &'static str, value: Value| ce(move |v, at| set_sc(v, at, key, value.clone()));
    let http = |host: Option<&str>| {
        let mut action = json!({"path": "/healthz", "port": 8080});
        if let Some(host) = host {
            action["host"] = json!(host);
        }
        action
    };
    let probe = move |field: &'static str, handler: &'static str, host: Option<&'static str>| {
        let action = if handler == "httpGet" {
            http(host)
        } else {
            let mut tcp = json!({"port": 8080});
            if let Some(host) = host {
                tcp["host"] = json!(host);
            }
            tcp
        };
        ce(move |v, at| {
            set(
                v,
                &format!("{at}.{field}"),
                json!({handler: action.clone()}),
            )
        })
    };
    vec![
        ("privileged", false, sc("privileged", json!(true))),
        (
            "privileged-escalating",
            false,
            ce(|v, at| {
                set_sc(v, at, "privileged", json!(true));
                set_sc(v, at, "allowPrivilegeEscalation", json!(true));
            }),
        ),
        ("unprivileged", false, sc("privileged", json!(false))),
        ("add-net-raw", false, caps_add(&["NET_RAW"])),
        ("add-sys-admin", false, caps_add(&["SYS_ADMIN"])),
        ("add-all", false, caps_add(&["ALL"])),
        ("add-lowercase-chown", false, caps_add(&["chown"])),
        ("add-prefixed-chown", false, caps_add(&["CAP_CHOWN"])),
        ("add-chown", false, caps_add(&["CHOWN"])),
        (
            "add-net-bind-service",
            false,
            caps_add(&["NET_BIND_SERVICE"]),
        ),
        (
            "add-default-set-a",
            false,
            caps_add(&["AUDIT_WRITE", "KILL", "MKNOD", "DAC_OVERRIDE"]),
        ),
        (
            "add-default-set-b",
            false,
            caps_add(&["SETUID", "SETGID", "SETPCAP", "SETFCAP"]),
        ),
        (
            "add-default-set-c",
            false,
            caps_add(&["SYS_CHROOT", "FOWNER", "FSETID", "NET_BIND_SERVICE"]),
        ),
        ("add-sys-ptrace", false, caps_add(&["SYS_PTRACE"])),
        ("add-bpf-perfmon", false, caps_add(&["BPF", "PERFMON"])),
        ("drop-all", false, caps_drop(&["ALL"])),
        ("drop-lowercase-all", false, caps_drop(&["all"])),
        ("drop-net-raw", false, caps_drop(&["NET_RAW"])),
        (
            "drop-all-and-net-raw",
            false,
            caps_drop(&["NET_RAW", "ALL"]),
        ),
        (
            "capabilities-unset",
            false,
            ce(|v, at| unset(v, &format!("{at}.securityContext.capabilities"))),
        ),
        ("capabilities-empty", false, sc("capabilities", json!({}))),
        (
            "host-port",
            false,
            ce(|v, at| {
                set(
                    v,
                    &format!("{at}.ports"),
                    json!([{"containerPort": 8080, "hostPort": 8080}]),
                )
            }),
        ),
        (
            "host-port-second",
            false,
            ce(|v, at| {
                set(
                    v,
                    &format!("{at}.ports"),
                    json!([{"containerPort": 8080}, {"containerPort": 9090, "hostPort": 9090,
                        "protocol": "UDP"}]),
                )
            }),
        ),
        (
            "container-port",
            false,
            ce(|v, at| set(v, &format!("{at}.ports"), json!([{"containerPort": 8080}]))),
        ),
        (
            "host-port-zero",
            false,
            ce(|v, at| {
                set(
                    v,
                    &format!("{at}.ports"),
                    json!([{"containerPort": 8080, "hostPort": 0}]),
                )
            }),
        ),
        (
            "apparmor-unconfined",
            false,
            sc("appArmorProfile", json!({"type": "Unconfined"})),
        ),
        (
            "apparmor-runtime-default",
            false,
            sc("appArmorProfile", json!({"type": "RuntimeDefault"})),
        ),
        (
            "apparmor-localhost",
            false,
            sc(
                "appArmorProfile",
                json!({"type": "Localhost", "localhostProfile": "k8s-apparmor-example"}),
            ),
        ),
        (
            "apparmor-annotation-own-unconfined",
            false,
            ce(|v, at| {
                let key = format!(
                    "container.apparmor.security.beta.kubernetes.io/{}",
                    name_at(at)
                );
                annotate(v, &key, "unconfined");
            }),
        ),
        (
            "apparmor-annotation-own-empty",
            false,
            ce(|v, at| {
                let key = format!(
                    "container.apparmor.security.beta.kubernetes.io/{}",
                    name_at(at)
                );
                annotate(v, &key, "");
            }),
        ),
        (
            "selinux-spc",
            false,
            sc("seLinuxOptions", json!({"type": "spc_t"})),
        ),
        (
            "selinux-unconfined-t",
            false,
            sc("seLinuxOptions", json!({"type": "unconfined_t"})),
        ),
        (
            "selinux-init-t",
            false,
            sc("seLinuxOptions", json!({"type": "container_init_t"})),
        ),
        (
            "selinux-kvm-t",
            false,
            sc("seLinuxOptions", json!({"type": "container_kvm_t"})),
        ),
        (
            "selinux-engine-t",
            false,
            sc("seLinuxOptions", json!({"type": "container_engine_t"})),
        ),
        (
            "selinux-level-only",
            false,
            sc("seLinuxOptions", json!({"level": "s0:c1,c2"})),
        ),
        (
            "selinux-user",
            false,
            sc(
                "seLinuxOptions",
                json!({"user": "system_u", "type": "container_t"}),
            ),
        ),
        (
            "selinux-role",
            false,
            sc("seLinuxOptions", json!({"role": "system_r"})),
        ),
        (
            "proc-mount-default",
            false,
            sc("procMount", json!("Default")),
        ),
        (
            "proc-mount-unmasked-in-user-namespace",
            false,
            ce(|v, at| {
                set(v, "spec.hostUsers", json!(false));
                set_sc(v, at, "procMount", json!("Unmasked"));
            }),
        ),
        (
            "seccomp-unconfined",
            false,
            sc("seccompProfile", json!({"type": "Unconfined"})),
        ),
        (
            "seccomp-runtime-default",
            false,
            sc("seccompProfile", json!({"type": "RuntimeDefault"})),
        ),
        (
            "seccomp-localhost",
            false,
            sc(
                "seccompProfile",
                json!({"type": "Localhost", "localhostProfile": "profiles/audit.json"}),
            ),
        ),
        (
            "escalation-true",
            false,
            sc("allowPrivilegeEscalation", json!(true)),
        ),
        (
            "escalation-false",
            false,
            sc("allowPrivilegeEscalation", json!(false)),
        ),
        (
            "escalation-unset",
            false,
            ce(|v, at| unset(v, &format!("{at}.securityContext.allowPrivilegeEscalation"))),
        ),
        (
            "run-as-non-root-true",
            false,
            sc("runAsNonRoot", json!(true)),
        ),
        (
            "run-as-non-root-false",
            false,
            sc("runAsNonRoot", json!(false)),
        ),
        ("run-as-user-0", false, sc("runAsUser", json!(0))),
        ("run-as-user-1000", false, sc("runAsUser", json!(1000))),
        (
            "container-host-process",
            false,
            ce(|v, at| {
                set(v, "spec.hostNetwork", json!(true));
                set_sc(v, at, "windowsOptions.hostProcess", json!(true));
            }),
        ),
        (
            "container-host-process-false",
            false,
            sc("windowsOptions", json!({"hostProcess": false})),
        ),
        (
            "liveness-http-host",
            true,
            probe("livenessProbe", "httpGet", Some("10.0.0.1")),
        ),
        (
            "readiness-tcp-host",
            true,
            probe("readinessProbe", "tcpSocket", Some("example.com")),
        ),
        (
            "startup-http-host",
            true,
            probe("startupProbe", "httpGet", Some("localhost")),
        ),
        (
            "liveness-http-no-host",
            true,
            probe("livenessProbe", "httpGet", None),
        ),
        (
            "readiness-http-empty-host",
            true,
            probe("readinessProbe", "httpGet", Some("")),
        ),
        (
            "startup-tcp-no-host",
            true,
            probe("startupProbe", "tcpSocket", None),
        ),
        (
            "post-start-http-host",
            true,
            probe("lifecycle.postStart", "httpGet", Some("example.com")),
        ),
        (
            "pre-stop-http-host",
            true,
            probe("lifecycle.preStop", "httpGet", Some("10.0.0.2")),
        ),
        (
            "pre-stop-http-no-host",
            true,
            probe("lifecycle.preStop", "httpGet", None),
        ),
    ]
}

/// Why the API server would reject `pod` before PodSecurity is asked, as far as the fields
/// these samples touch go: each rule mirrors one of its validation (or defaulting) rules.
fn api_accepts(pod: &Pod) -> Result<(), String> {
    let spec = pod.spec.as_ref().ok_or("no spec")?;
    let psc = spec.security_context.clone().unwrap_or_default();
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let os = spec.os.as_ref().map(|os| os.name.as_str());
    let on = |b: Option<bool>| b == Some(true);
    let (host_network, host_pid, host_ipc) =
        (on(spec.host_network), on(spec.host_pid), on(spec.host_ipc));
    let user_namespace = spec.host_users == Some(false);
    let init = spec.init_containers.clone().unwrap_or_default();
    let all: Vec<&Container> = init.iter().chain(&spec.containers).collect();

    if spec.ephemeral_containers.is_some() {
        return Err("ephemeral containers cannot be set on create".into());
    }
    let mut names = BTreeSet::new();
    for c in &all {
        if !names.insert(c.name.as_str()) {
            return Err(format!("duplicate container {}", c.name));
        }
    }
    if user_namespace && (host_network || host_pid || host_ipc) {
        return Err("hostUsers: false excludes host namespaces".into());
    }
    for c in &init {
        if c.liveness_probe.is_some()
            || c.readiness_probe.is_some()
            || c.startup_probe.is_some()
            || c.lifecycle.is_some()
        {
            return Err("probes and lifecycle need a regular container".into());
        }
    }
    for c in &all {
        let sc = c.security_context.clone().unwrap_or_default();
        if sc.privileged == Some(true) && sc.allow_privilege_escalation == Some(false) {
            return Err("privileged needs privilege escalation".into());
        }
        if sc.allow_privilege_escalation == Some(false)
            && sc
                .capabilities
                .iter()
                .flat_map(|caps| caps.add.iter().flatten())
                .any(|cap| cap == "CAP_SYS_ADMIN")
        {
            return Err("CAP_SYS_ADMIN needs privilege escalation".into());
        }
        if sc.proc_mount.as_deref() == Some("Unmasked") && !user_namespace {
            return Err("an unmasked /proc needs hostUsers: false".into());
        }
        let mismatched = c.ports.iter().flatten().any(|port| {
            port.host_port
                .is_some_and(|hp| hp != 0 && hp != port.container_port)
        });
        if host_network && mismatched {
            return Err("hostPort must match containerPort beside hostNetwork".into());
        }
    }
    // Windows HostProcess: all containers or none, and on the host network.
    let pod_host_process = psc.windows_options.as_ref().and_then(|w| w.host_process);
    let mut host_process_count = 0;
    for c in &all {
        let own = c
            .security_context
            .as_ref()
            .and_then(|sc| sc.windows_options.as_ref())
            .and_then(|w| w.host_process);
        if let (Some(pod), Some(own)) = (pod_host_process, own)
            && pod != own
        {
            return Err("pod and container hostProcess differ".into());
        }
        if own.or(pod_host_process) == Some(true) {
            host_process_count += 1;
        }
    }
    if host_process_count > 0 && (host_process_count != all.len() || !host_network) {
        return Err("hostProcess needs every container and hostNetwork".into());
    }
    let windows_options = psc.windows_options.is_some()
        || all.iter().any(|c| {
            c.security_context
                .as_ref()
                .is_some_and(|sc| sc.windows_options.is_some())
        });
    if os == Some("linux") && windows_options {
        return Err("windowsOptions on a linux pod".into());
    }
    if os == Some("windows") {
        let pod_linux_only = psc.app_armor_profile.is_some()
            || psc.se_linux_options.is_some()
            || spec.host_users.is_some()
            || host_pid
            || host_ipc
            || psc.seccomp_profile.is_some()
            || psc.sysctls.is_some()
            || psc.run_as_user.is_some();
        let container_linux_only = all.iter().any(|c| {
            c.security_context.as_ref().is_some_and(|sc| {
                sc.app_armor_profile.is_some()
                    || sc.se_linux_options.is_some()
                    || sc.seccomp_profile.is_some()
                    || sc.capabilities.is_some()
                    || sc.privileged.is_some()
                    || sc.allow_privilege_escalation.is_some()
                    || sc.proc_mount.is_some()
                    || sc.run_as_user.is_some()
            })
        });
        if pod_linux_only || container_linux_only {
            return Err("Linux-only field on a windows pod".into());
        }
    }
    // Sysctls of a namespace the pod shares with the node.
    let mut sysctl_names = BTreeSet::new();
    for s in psc.sysctls.iter().flatten() {
        if !sysctl_names.insert(s.name.as_str()) {
            return Err(format!("duplicate sysctl {}", s.name));
        }
        let name = s.name.replace('/', ".");
        if host_network && name.starts_with("net.") {
            return Err("net sysctl beside hostNetwork".into());
        }
        let ipc = ["kernel.shm", "kernel.msg", "kernel.sem", "fs.mqueue."];
        if host_ipc && ipc.iter().any(|p| name.starts_with(p)) {
            return Err("IPC sysctl beside hostIPC".into());
        }
    }
    // Deprecated annotations must agree with the fields they shadow.
    let seccomp_matches = |annotation: &str, type_: &str| match type_ {
        "Unconfined" => annotation == "unconfined",
        "RuntimeDefault" => annotation == "runtime/default" || annotation == "docker/default",
        _ => false,
    };
    if let (Some(a), Some(sp)) = (
        annotations.get("seccomp.security.alpha.kubernetes.io/pod"),
        psc.seccomp_profile.as_ref(),
    ) && !seccomp_matches(a, &sp.type_)
    {
        return Err("pod seccomp annotation and field differ".into());
    }
    for c in &all {
        let field = c
            .security_context
            .as_ref()
            .and_then(|sc| sc.seccomp_profile.as_ref());
        let key = format!("container.seccomp.security.alpha.kubernetes.io/{}", c.name);
        if let (Some(a), Some(sp)) = (annotations.get(&key), field)
            && !seccomp_matches(a, &sp.type_)
        {
            return Err("container seccomp annotation and field differ".into());
        }
    }
    let apparmor_prefix = "container.apparmor.security.beta.kubernetes.io/";
    for (key, value) in &annotations {
        let Some(name) = key.strip_prefix(apparmor_prefix) else {
            continue;
        };
        let Some(c) = all.iter().find(|c| c.name == name) else {
            return Err(format!("AppArmor annotation for missing container {name}"));
        };
        let effective = c
            .security_context
            .as_ref()
            .and_then(|sc| sc.app_armor_profile.as_ref())
            .or(psc.app_armor_profile.as_ref());
        if let Some(profile) = effective
            && os != Some("windows")
        {
            let agrees = match profile.type_.as_str() {
                "Unconfined" => value == "unconfined",
                "RuntimeDefault" => value == "runtime/default",
                "Localhost" => {
                    Some(value.as_str()).and_then(|v| v.strip_prefix("localhost/"))
                        == profile.localhost_profile.as_deref()
                }
                _ => false,
            };
            if !agrees {
                return Err("AppArmor annotation and field differ".into());
            }
        }
    }
    let mut volume_names = BTreeSet::new();
    for volume in spec.volumes.iter().flatten() {
        if !volume_names.insert(volume.name.as_str()) {
            return Err(format!("duplicate volume {}", volume.name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use virtualcluster_crds::pod_security::check;
    use virtualcluster_crds::v1alpha1::PodSecurityStandard::{self, Baseline, Restricted};

    use super::*;

    /// The rules each level runs, by the names their violations carry.
    fn rules(level: PodSecurityStandard) -> Vec<&'static str> {
        let shared = [
            "forbidden AppArmor profile",
            "host namespaces",
            "hostPort",
            "probe or lifecycle host",
            "privileged",
            "seLinuxOptions",
            "forbidden sysctls",
            "hostProcess",
            "procMount",
            "seccompProfile",
        ];
        let mut rules = shared.to_vec();
        match level {
            Baseline => rules.extend(["non-default capabilities", "hostPath volumes"]),
            _ => rules.extend([
                "restricted volume types",
                "allowPrivilegeEscalation != false",
                "unrestricted capabilities",
                "runAsNonRoot != true",
                "runAsUser=0",
            ]),
        }
        rules
    }

    #[derive(Default)]
    struct Seen {
        passes: usize,
        fails: usize,
        /// Samples this rule alone refuses, so the API server's verdict rests on it.
        alone: usize,
    }

    fn tally(level: PodSecurityStandard) -> BTreeMap<&'static str, Seen> {
        let mut seen: BTreeMap<&'static str, Seen> = BTreeMap::new();
        for rule in rules(level) {
            seen.entry(rule).or_default();
        }
        for (name, pod) in sample_pods() {
            let violations = check(level, &pod);
            // Several forbidden AppArmor values make the rule's name plural.
            let broken: BTreeSet<&str> = violations
                .iter()
                .map(|v| match v.check {
                    "forbidden AppArmor profiles" => "forbidden AppArmor profile",
                    rule => rule,
                })
                .collect();
            for (rule, s) in seen.iter_mut() {
                if broken.contains(rule) {
                    s.fails += 1;
                    if broken.len() == 1 {
                        s.alone += 1;
                    }
                } else {
                    s.passes += 1;
                }
            }
            for rule in &broken {
                assert!(
                    seen.contains_key(rule),
                    "{name}: unexpected rule {rule} at {level}"
                );
            }
        }
        seen
    }

    #[test]
    fn samples_are_uniquely_named_dns_labels_within_bounds() {
        let samples = sample_pods();
        assert!(
            (300..=500).contains(&samples.len()),
            "{} samples",
            samples.len()
        );
        let mut names = BTreeSet::new();
        for (name, pod) in &samples {
            assert!(names.insert(name.clone()), "duplicate {name}");
            assert!(virtualcluster_crds::dns::is_label(name), "{name}");
            assert_eq!(pod.metadata.name.as_deref(), Some(name.as_str()));
        }
    }

    #[test]
    fn edits_are_named_uniquely() {
        let mut names = BTreeSet::new();
        let pod = pod_edits().into_iter().map(|(name, _)| name);
        let container = container_edits().into_iter().map(|(name, _, _)| name);
        for name in pod.chain(container) {
            assert!(names.insert(name), "two edits are named {name}");
        }
    }

    #[test]
    fn samples_are_the_same_every_run() {
        let a = serde_json::to_string(&sample_pods()).unwrap();
        let b = serde_json::to_string(&sample_pods()).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn samples_differ_only_in_fields_the_rules_read() {
        for (name, pod) in sample_pods() {
            api_accepts(&pod).unwrap_or_else(|e| panic!("{name}: {e}"));
            let spec = pod.spec.as_ref().unwrap();
            assert_eq!(spec.containers.len(), 1, "{name}");
            assert_eq!(spec.containers[0].name, "c", "{name}");
            for c in spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
            {
                assert_eq!(c.image.as_deref(), Some(IMAGE), "{name}");
            }
            assert!(spec.ephemeral_containers.is_none(), "{name}");
        }
    }

    #[test]
    fn every_rule_passes_and_fails_at_both_levels() {
        for level in [Baseline, Restricted] {
            for (rule, s) in tally(level) {
                assert!(s.passes > 0, "no sample passes {rule} at {level}");
                // API validation admits an unmasked /proc only in a user namespace, where
                // baseline allows it: no valid pod can fail baseline's procMount rule.
                if level == Baseline && rule == "procMount" {
                    assert_eq!(s.fails, 0);
                    continue;
                }
                assert!(s.fails > 0, "no sample fails {rule} at {level}");
                // HostProcess needs hostNetwork, which host namespaces refuses as well; a
                // privileged container cannot turn privilege escalation off.
                let tied = rule == "hostProcess" || (level == Restricted && rule == "privileged");
                if !tied {
                    assert!(s.alone > 0, "no sample fails {rule} alone at {level}");
                }
            }
        }
    }

    #[test]
    fn both_levels_see_admitted_and_refused_samples() {
        let samples = sample_pods();
        for level in [Baseline, Restricted] {
            let refused = samples
                .iter()
                .filter(|(_, pod)| !check(level, pod).is_empty())
                .count();
            assert!(refused > 30, "{refused} refused at {level}");
            assert!(
                samples.len() - refused > 30,
                "{} admitted at {level}",
                samples.len() - refused
            );
        }
    }
}
