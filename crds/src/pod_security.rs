//! The Pod Security Standards `baseline` and `restricted`, in the latest policy version the
//! PodSecurity admission plugin enforces: [`check`] tells, without an API server, whether a pod
//! would be admitted into a namespace enforcing a level, and names every rule it breaks the way
//! the API server's denial names them, so a pod can be refused (or fixed) before it is sent.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EphemeralContainer, Lifecycle, Pod, PodSecurityContext, PodSpec,
    Probe, SELinuxOptions, SecurityContext,
};

use crate::v1alpha1::PodSecurityStandard;

/// One broken rule, so the caller can say which field to change and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule, spelled as the PodSecurity plugin's denial spells it (e.g. `privileged`,
    /// `hostPath volumes`, `runAsNonRoot != true`), so the two can be compared; like the
    /// denial, the AppArmor rule says `forbidden AppArmor profiles` once it names several
    /// values.
    pub check: &'static str,
    /// The offending field path(s), comma-separated, e.g.
    /// `spec.containers[0].securityContext.privileged` or `spec.volumes[1].hostPath`.
    pub field: String,
    /// What is wrong, naming the containers, volumes or values concerned.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}: {})", self.check, self.field, self.detail)
    }
}

/// Every rule `pod` breaks at `level`, in the order the API server lists them (baseline rules,
/// then restricted ones); empty when the pod would be admitted. `Privileged` always passes.
/// The pod is read as the plugin sees it once the API server has filled it in: on the host
/// network an unset host port is the container port, a volume naming no source is an emptyDir,
/// and a container's deprecated AppArmor annotation stands for its unset profile field.
pub fn check(level: PodSecurityStandard, pod: &Pod) -> Vec<Violation> {
    let empty = PodSpec::default();
    let view = PodView::new(pod, &empty);
    rules(level).filter_map(|rule| (rule.run)(&view)).collect()
}

/// One rule of a level. Restricted rules may replace a baseline rule they tighten.
struct Rule {
    /// The rule's identifier; rules run in identifier order within their level.
    id: &'static str,
    level: PodSecurityStandard,
    /// The baseline rule this one replaces at the restricted level.
    replaces: Option<&'static str>,
    run: fn(&PodView<'_>) -> Option<Violation>,
}

const RULES: &[Rule] = &[
    baseline("appArmorProfile", app_armor_profile),
    baseline("capabilities_baseline", capabilities_baseline),
    baseline("hostNamespaces", host_namespaces),
    baseline("hostPathVolumes", host_path_volumes),
    baseline("hostPorts", host_ports),
    baseline("hostProbesAndHostLifecycle", host_probes_and_lifecycle),
    baseline("privileged", privileged),
    baseline("procMount", proc_mount_baseline),
    baseline("seLinuxOptions", se_linux_options),
    baseline("seccompProfile_baseline", seccomp_profile_baseline),
    baseline("sysctls", sysctls),
    baseline("windowsHostProcess", windows_host_process),
    restricted("allowPrivilegeEscalation", None, allow_privilege_escalation),
    restricted(
        "capabilities_restricted",
        Some("capabilities_baseline"),
        capabilities_restricted,
    ),
    restricted(
        "procMount_restricted",
        Some("procMount"),
        proc_mount_restricted,
    ),
    restricted(
        "restrictedVolumes",
        Some("hostPathVolumes"),
        restricted_volumes,
    ),
    restricted("runAsNonRoot", None, run_as_non_root),
    restricted("runAsUser", None, run_as_user),
    restricted(
        "seccompProfile_restricted",
        Some("seccompProfile_baseline"),
        seccomp_profile_restricted,
    ),
];

const fn baseline(id: &'static str, run: fn(&PodView<'_>) -> Option<Violation>) -> Rule {
    Rule {
        id,
        level: PodSecurityStandard::Baseline,
        replaces: None,
        run,
    }
}

const fn restricted(
    id: &'static str,
    replaces: Option<&'static str>,
    run: fn(&PodView<'_>) -> Option<Violation>,
) -> Rule {
    Rule {
        id,
        level: PodSecurityStandard::Restricted,
        replaces,
        run,
    }
}

/// The rules of `level`: restricted is baseline, less the rules it replaces, plus its own.
fn rules(level: PodSecurityStandard) -> impl Iterator<Item = &'static Rule> {
    RULES.iter().filter(move |rule| match level {
        PodSecurityStandard::Privileged => false,
        PodSecurityStandard::Baseline => rule.level == PodSecurityStandard::Baseline,
        PodSecurityStandard::Restricted => {
            rule.level == PodSecurityStandard::Restricted
                || !RULES.iter().any(|r| {
                    r.level == PodSecurityStandard::Restricted && r.replaces == Some(rule.id)
                })
        }
    })
}

/// The parts of a pod the rules read.
struct PodView<'a> {
    annotations: Option<&'a BTreeMap<String, String>>,
    spec: &'a PodSpec,
    psc: Option<&'a PodSecurityContext>,
    containers: Vec<Ctr<'a>>,
}

impl<'a> PodView<'a> {
    /// The view of `pod`, reading `empty` as its spec when it has none.
    fn new(pod: &'a Pod, empty: &'a PodSpec) -> Self {
        let spec = pod.spec.as_ref().unwrap_or(empty);
        PodView {
            annotations: pod.metadata.annotations.as_ref(),
            spec,
            psc: spec.security_context.as_ref(),
            containers: containers(spec),
        }
    }

    /// Windows pods are exempt from the Linux-only restricted rules (API validation forbids
    /// the fields there).
    fn is_windows(&self) -> bool {
        self.spec.os.as_ref().is_some_and(|os| os.name == "windows")
    }

    /// A pod in a user namespace (`hostUsers: false`), for which root in the container is not
    /// root on the node.
    fn in_user_namespace(&self) -> bool {
        self.spec.host_users == Some(false)
    }
}

/// A container of any kind, with the path of its entry in the pod.
struct Ctr<'a> {
    path: String,
    name: &'a str,
    sc: Option<&'a SecurityContext>,
    ports: &'a [ContainerPort],
    probes: [(&'static str, Option<&'a Probe>); 3],
    lifecycle: Option<&'a Lifecycle>,
    ephemeral: bool,
}

impl<'a> Ctr<'a> {
    fn regular(path: String, c: &'a Container) -> Self {
        Self {
            path,
            name: &c.name,
            sc: c.security_context.as_ref(),
            ports: c.ports.as_deref().unwrap_or_default(),
            probes: [
                ("livenessProbe", c.liveness_probe.as_ref()),
                ("readinessProbe", c.readiness_probe.as_ref()),
                ("startupProbe", c.startup_probe.as_ref()),
            ],
            lifecycle: c.lifecycle.as_ref(),
            ephemeral: false,
        }
    }

    fn ephemeral(path: String, c: &'a EphemeralContainer) -> Self {
        Self {
            path,
            name: &c.name,
            sc: c.security_context.as_ref(),
            ports: c.ports.as_deref().unwrap_or_default(),
            probes: [
                ("livenessProbe", c.liveness_probe.as_ref()),
                ("readinessProbe", c.readiness_probe.as_ref()),
                ("startupProbe", c.startup_probe.as_ref()),
            ],
            lifecycle: c.lifecycle.as_ref(),
            ephemeral: true,
        }
    }

    fn field(&self, rest: &str) -> String {
        format!("{}.{rest}", self.path)
    }
}

/// Init containers, then containers, then ephemeral containers: the order of every report.
fn containers(spec: &PodSpec) -> Vec<Ctr<'_>> {
    let init = spec.init_containers.iter().flatten().enumerate();
    let regular = spec.containers.iter().enumerate();
    let ephemeral = spec.ephemeral_containers.iter().flatten().enumerate();
    init.map(|(i, c)| Ctr::regular(format!("spec.initContainers[{i}]"), c))
        .chain(regular.map(|(i, c)| Ctr::regular(format!("spec.containers[{i}]"), c)))
        .chain(ephemeral.map(|(i, c)| Ctr::ephemeral(format!("spec.ephemeralContainers[{i}]"), c)))
        .collect()
}

fn violation(check: &'static str, fields: Vec<String>, detail: String) -> Option<Violation> {
    Some(Violation {
        check,
        field: fields.join(", "),
        detail,
    })
}

/// Rule `check` broken by every container `breaks` picks, each named at its `field`, with
/// what they must do (`must`) in the detail.
fn by_container(
    p: &PodView<'_>,
    check: &'static str,
    field: &str,
    breaks: impl Fn(&Ctr<'_>) -> bool,
    must: &str,
) -> Option<Violation> {
    let bad: Vec<&Ctr<'_>> = p.containers.iter().filter(|c| breaks(c)).collect();
    if bad.is_empty() {
        return None;
    }
    let names: Vec<&str> = bad.iter().map(|c| c.name).collect();
    violation(
        check,
        bad.iter().map(|c| c.field(field)).collect(),
        format!("{} {must}", containers_phrase(&names)),
    )
}

fn pluralize<'s>(singular: &'s str, plural: &'s str, count: usize) -> &'s str {
    if count == 1 { singular } else { plural }
}

/// `"a", "b"`.
fn join_quote<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    items
        .into_iter()
        .map(|s| format!("\"{}\"", s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `container "a"` or `containers "a", "b"`.
fn containers_phrase(names: &[&str]) -> String {
    format!(
        "{} {}",
        pluralize("container", "containers", names.len()),
        join_quote(names)
    )
}

/// `pod`, `containers "a", "b"`, ... joined with " and ".
fn setters(pod: bool, containers: &[&str], more: Option<String>) -> String {
    let mut out = Vec::new();
    if pod {
        out.push("pod".to_owned());
    }
    if !containers.is_empty() {
        out.push(containers_phrase(containers));
    }
    out.extend(more);
    out.join(" and ")
}

const HOST_PROCESS: &str = "hostProcess";
const HOST_NAMESPACES: &str = "host namespaces";
const PRIVILEGED: &str = "privileged";
const CAPABILITIES_BASELINE: &str = "non-default capabilities";
const HOST_PATH_VOLUMES: &str = "hostPath volumes";
const HOST_PORTS: &str = "hostPort";
const HOST_PROBES: &str = "probe or lifecycle host";
const APP_ARMOR: &str = "forbidden AppArmor profile";
const APP_ARMOR_PLURAL: &str = "forbidden AppArmor profiles";
const SE_LINUX: &str = "seLinuxOptions";
const PROC_MOUNT: &str = "procMount";
const SECCOMP: &str = "seccompProfile";
const SYSCTLS: &str = "forbidden sysctls";
const RESTRICTED_VOLUMES: &str = "restricted volume types";
const PRIVILEGE_ESCALATION: &str = "allowPrivilegeEscalation != false";
const CAPABILITIES_RESTRICTED: &str = "unrestricted capabilities";
const RUN_AS_NON_ROOT: &str = "runAsNonRoot != true";
const RUN_AS_USER: &str = "runAsUser=0";

/// Capabilities a container runtime grants by default, which baseline lets a container add.
const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Sysctls namespaced to the pod and isolated from other pods on the node.
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.ipv4.tcp_slow_start_after_idle",
    "net.ipv4.tcp_notsent_lowat",
];

/// SELinux types that confine a container as the runtime's default policy does.
const SE_LINUX_TYPES: &[&str] = &[
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

const APP_ARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// Windows HostProcess containers run as processes on the node.
fn windows_host_process(p: &PodView<'_>) -> Option<Violation> {
    let pod_bad = p
        .psc
        .and_then(|sc| sc.windows_options.as_ref())
        .and_then(|w| w.host_process)
        == Some(true);
    let bad: Vec<&Ctr<'_>> = p
        .containers
        .iter()
        .filter(|c| {
            c.sc.and_then(|sc| sc.windows_options.as_ref())
                .and_then(|w| w.host_process)
                == Some(true)
        })
        .collect();
    if !pod_bad && bad.is_empty() {
        return None;
    }
    let mut fields = Vec::new();
    if pod_bad {
        fields.push("spec.securityContext.windowsOptions.hostProcess".to_owned());
    }
    fields.extend(
        bad.iter()
            .map(|c| c.field("securityContext.windowsOptions.hostProcess")),
    );
    let names: Vec<&str> = bad.iter().map(|c| c.name).collect();
    violation(
        HOST_PROCESS,
        fields,
        format!(
            "{} must not set securityContext.windowsOptions.hostProcess=true",
            setters(pod_bad, &names, None)
        ),
    )
}

/// Sharing the node's network, PID or IPC namespace.
fn host_namespaces(p: &PodView<'_>) -> Option<Violation> {
    let shared: Vec<&str> = [
        ("hostNetwork", p.spec.host_network),
        ("hostPID", p.spec.host_pid),
        ("hostIPC", p.spec.host_ipc),
    ]
    .into_iter()
    .filter(|(_, on)| *on == Some(true))
    .map(|(name, _)| name)
    .collect();
    if shared.is_empty() {
        return None;
    }
    violation(
        HOST_NAMESPACES,
        shared.iter().map(|n| format!("spec.{n}")).collect(),
        shared
            .iter()
            .map(|n| format!("{n}=true"))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// Privileged containers disable most isolation.
fn privileged(p: &PodView<'_>) -> Option<Violation> {
    by_container(
        p,
        PRIVILEGED,
        "securityContext.privileged",
        |c| c.sc.and_then(|sc| sc.privileged) == Some(true),
        "must not set securityContext.privileged=true",
    )
}

/// Baseline lets a container add only capabilities the runtime grants by default anyway.
fn capabilities_baseline(p: &PodView<'_>) -> Option<Violation> {
    let mut fields = Vec::new();
    let mut names = Vec::new();
    let mut added = BTreeSet::new();
    for c in &p.containers {
        let add =
            c.sc.and_then(|sc| sc.capabilities.as_ref())
                .and_then(|caps| caps.add.as_ref());
        let extra: Vec<&String> = add
            .into_iter()
            .flatten()
            .filter(|cap| !BASELINE_CAPABILITIES.contains(&cap.as_str()))
            .collect();
        if !extra.is_empty() {
            fields.push(c.field("securityContext.capabilities.add"));
            names.push(c.name);
            added.extend(extra);
        }
    }
    if names.is_empty() {
        return None;
    }
    violation(
        CAPABILITIES_BASELINE,
        fields,
        format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&names),
            join_quote(added)
        ),
    )
}

/// HostPath volumes reach the node's filesystem.
fn host_path_volumes(p: &PodView<'_>) -> Option<Violation> {
    let bad: Vec<(usize, &str)> = p
        .spec
        .volumes
        .iter()
        .flatten()
        .enumerate()
        .filter(|(_, v)| v.host_path.is_some())
        .map(|(i, v)| (i, v.name.as_str()))
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation(
        HOST_PATH_VOLUMES,
        bad.iter()
            .map(|(i, _)| format!("spec.volumes[{i}].hostPath"))
            .collect(),
        format!(
            "{} {}",
            pluralize("volume", "volumes", bad.len()),
            join_quote(bad.iter().map(|(_, n)| n))
        ),
    )
}

/// Host ports bind the node's network interfaces. On the host network the API server defaults
/// every unset host port of a (non-ephemeral) container to its container port.
fn host_ports(p: &PodView<'_>) -> Option<Violation> {
    let host_network = p.spec.host_network == Some(true);
    let mut fields = Vec::new();
    let mut names = Vec::new();
    let mut ports = BTreeSet::new();
    for c in &p.containers {
        let mut uses = false;
        for (j, port) in c.ports.iter().enumerate() {
            let host_port = match port.host_port.unwrap_or(0) {
                0 if host_network && !c.ephemeral => port.container_port,
                host_port => host_port,
            };
            if host_port != 0 {
                uses = true;
                fields.push(c.field(&format!("ports[{j}].hostPort")));
                ports.insert(host_port.to_string());
            }
        }
        if uses {
            names.push(c.name);
        }
    }
    if names.is_empty() {
        return None;
    }
    violation(
        HOST_PORTS,
        fields,
        format!(
            "{} {} {} {}",
            containers_phrase(&names),
            pluralize("uses", "use", names.len()),
            pluralize("hostPort", "hostPorts", ports.len()),
            ports.into_iter().collect::<Vec<_>>().join(", ")
        ),
    )
}

/// Probes and lifecycle handlers aimed at another host make the kubelet a proxy.
fn host_probes_and_lifecycle(p: &PodView<'_>) -> Option<Violation> {
    let mut fields = Vec::new();
    let mut names = BTreeSet::new();
    let mut hosts = BTreeSet::new();
    let mut note = |c: &Ctr<'_>, path: String, host: Option<&String>| {
        if let Some(host) = host.filter(|h| !h.is_empty()) {
            fields.push(c.field(&path));
            names.insert(c.name.to_owned());
            hosts.insert(host.clone());
        }
    };
    for c in &p.containers {
        for (probe_name, probe) in c.probes {
            let Some(probe) = probe else { continue };
            let http = probe.http_get.as_ref().and_then(|h| h.host.as_ref());
            note(c, format!("{probe_name}.httpGet.host"), http);
            let tcp = probe.tcp_socket.as_ref().and_then(|t| t.host.as_ref());
            note(c, format!("{probe_name}.tcpSocket.host"), tcp);
        }
        let handlers = c
            .lifecycle
            .map(|l| [("postStart", &l.post_start), ("preStop", &l.pre_stop)]);
        for (hook, handler) in handlers.into_iter().flatten() {
            let Some(handler) = handler else { continue };
            let http = handler.http_get.as_ref().and_then(|h| h.host.as_ref());
            note(c, format!("lifecycle.{hook}.httpGet.host"), http);
            let tcp = handler.tcp_socket.as_ref().and_then(|t| t.host.as_ref());
            note(c, format!("lifecycle.{hook}.tcpSocket.host"), tcp);
        }
    }
    if names.is_empty() {
        return None;
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    violation(
        HOST_PROBES,
        fields,
        format!(
            "{} {} {} {}",
            containers_phrase(&names),
            pluralize("uses", "use", names.len()),
            pluralize(
                "probe or lifecycle host",
                "probe or lifecycle hosts",
                hosts.len()
            ),
            join_quote(&hosts)
        ),
    )
}

/// AppArmor may be left at the runtime's default or set to a node-local profile, never off.
fn app_armor_profile(p: &PodView<'_>) -> Option<Violation> {
    let allowed_type = |t: &str| matches!(t, "RuntimeDefault" | "Localhost");
    let mut fields = Vec::new();
    let mut bad_values = BTreeSet::new();
    let pod_type = p.psc.and_then(|sc| sc.app_armor_profile.as_ref());
    let pod_bad = pod_type.is_some_and(|profile| !allowed_type(&profile.type_));
    if let Some(profile) = pod_type.filter(|_| pod_bad) {
        fields.push("spec.securityContext.appArmorProfile.type".to_owned());
        bad_values.insert(profile.type_.clone());
    }
    let mut names = Vec::new();
    for c in &p.containers {
        let own = c.sc.and_then(|sc| sc.app_armor_profile.as_ref());
        let type_ = match own {
            Some(profile) => Some(profile.type_.clone()),
            None => app_armor_from_annotation(p, c),
        };
        if let Some(type_) = type_.filter(|t| !allowed_type(t)) {
            if own.is_some() {
                fields.push(c.field("securityContext.appArmorProfile.type"));
            }
            names.push(c.name);
            bad_values.insert(type_);
        }
    }
    let allowed_annotation =
        |v: &str| v.is_empty() || v == "runtime/default" || v.starts_with("localhost/");
    let bad_annotations: Vec<(&String, &String)> = p
        .annotations
        .into_iter()
        .flatten()
        .filter(|(k, v)| k.starts_with(APP_ARMOR_ANNOTATION_PREFIX) && !allowed_annotation(v))
        .collect();
    fields.extend(
        bad_annotations
            .iter()
            .map(|(k, _)| format!("metadata.annotations[{k}]")),
    );
    if !pod_bad && names.is_empty() && bad_annotations.is_empty() {
        return None;
    }
    let mut values: Vec<String> = bad_values.into_iter().collect();
    values.extend(bad_annotations.iter().map(|(k, v)| format!("{k}={v:?}")));
    let annotations = (!bad_annotations.is_empty())
        .then(|| pluralize("annotation", "annotations", bad_annotations.len()).to_owned());
    violation(
        if values.len() == 1 {
            APP_ARMOR
        } else {
            APP_ARMOR_PLURAL
        },
        fields,
        format!(
            "{} must not set AppArmor profile type to {}",
            setters(pod_bad, &names, annotations),
            join_quote(&values)
        ),
    )
}

/// The AppArmor type the API server copies from a container's deprecated annotation into its
/// unset field before admission, on a pod that is not Windows, unless it would only repeat the
/// pod's own profile.
fn app_armor_from_annotation(p: &PodView<'_>, c: &Ctr<'_>) -> Option<String> {
    if p.is_windows() {
        return None;
    }
    let key = format!("{APP_ARMOR_ANNOTATION_PREFIX}{}", c.name);
    let (type_, localhost) = match p.annotations?.get(&key)?.as_str() {
        "unconfined" => ("Unconfined", None),
        "runtime/default" => ("RuntimeDefault", None),
        value => {
            let name = value.strip_prefix("localhost/")?;
            if name.is_empty() || name.trim() != name || name.len() > 4095 {
                return None;
            }
            ("Localhost", Some(name))
        }
    };
    let pod = p.psc.and_then(|sc| sc.app_armor_profile.as_ref());
    let repeats_pod = pod.is_some_and(|profile| {
        profile.type_ == type_ && profile.localhost_profile.as_deref() == localhost
    });
    (!repeats_pod).then(|| type_.to_owned())
}

/// SELinux may only pick one of the container types, never a user or a role.
fn se_linux_options(p: &PodView<'_>) -> Option<Violation> {
    let mut fields = Vec::new();
    let mut bad_types = BTreeSet::new();
    let (mut set_user, mut set_role) = (false, false);
    let mut judge = |opts: &SELinuxOptions, path: &str| {
        let mut valid = true;
        let type_ = opts.type_.as_deref().unwrap_or_default();
        if !SE_LINUX_TYPES.contains(&type_) {
            valid = false;
            bad_types.insert(type_.to_owned());
            fields.push(format!("{path}.type"));
        }
        if opts.user.as_deref().is_some_and(|u| !u.is_empty()) {
            valid = false;
            set_user = true;
            fields.push(format!("{path}.user"));
        }
        if opts.role.as_deref().is_some_and(|r| !r.is_empty()) {
            valid = false;
            set_role = true;
            fields.push(format!("{path}.role"));
        }
        valid
    };
    let pod_bad = p
        .psc
        .and_then(|sc| sc.se_linux_options.as_ref())
        .is_some_and(|opts| !judge(opts, "spec.securityContext.seLinuxOptions"));
    let mut names = Vec::new();
    for c in &p.containers {
        if let Some(opts) = c.sc.and_then(|sc| sc.se_linux_options.as_ref())
            && !judge(opts, &c.field("securityContext.seLinuxOptions"))
        {
            names.push(c.name);
        }
    }
    if !pod_bad && names.is_empty() {
        return None;
    }
    let mut data = Vec::new();
    if !bad_types.is_empty() {
        data.push(format!(
            "{} {}",
            pluralize("type", "types", bad_types.len()),
            join_quote(&bad_types)
        ));
    }
    if set_user {
        data.push("user may not be set".to_owned());
    }
    if set_role {
        data.push("role may not be set".to_owned());
    }
    violation(
        SE_LINUX,
        fields,
        format!(
            "{} set forbidden securityContext.seLinuxOptions: {}",
            setters(pod_bad, &names, None),
            data.join("; ")
        ),
    )
}

/// Containers keep the default masks over /proc.
fn proc_mount_unmasked(p: &PodView<'_>) -> Option<Violation> {
    let mut fields = Vec::new();
    let mut names = Vec::new();
    let mut kinds = BTreeSet::new();
    for c in &p.containers {
        if let Some(kind) = c.sc.and_then(|sc| sc.proc_mount.as_ref())
            && kind != "Default"
        {
            fields.push(c.field("securityContext.procMount"));
            names.push(c.name);
            kinds.insert(kind.as_str());
        }
    }
    if names.is_empty() {
        return None;
    }
    violation(
        PROC_MOUNT,
        fields,
        format!(
            "{} must not set securityContext.procMount to {}",
            containers_phrase(&names),
            join_quote(kinds)
        ),
    )
}

/// Baseline lets a pod in a user namespace unmask /proc: it sees only its own namespace.
fn proc_mount_baseline(p: &PodView<'_>) -> Option<Violation> {
    if p.in_user_namespace() {
        return None;
    }
    proc_mount_unmasked(p)
}

/// Restricted keeps /proc masked even in a user namespace.
fn proc_mount_restricted(p: &PodView<'_>) -> Option<Violation> {
    proc_mount_unmasked(p)
}

fn allowed_seccomp(type_: &str) -> bool {
    matches!(type_, "RuntimeDefault" | "Localhost")
}

/// Baseline forbids turning seccomp off; leaving it unset is allowed.
fn seccomp_profile_baseline(p: &PodView<'_>) -> Option<Violation> {
    let mut fields = Vec::new();
    let mut bad_values = BTreeSet::new();
    let pod_profile = p.psc.and_then(|sc| sc.seccomp_profile.as_ref());
    let pod_bad = pod_profile.is_some_and(|sp| !allowed_seccomp(&sp.type_));
    if let Some(sp) = pod_profile.filter(|_| pod_bad) {
        fields.push("spec.securityContext.seccompProfile.type".to_owned());
        bad_values.insert(sp.type_.as_str());
    }
    let mut names = Vec::new();
    for c in &p.containers {
        if let Some(sp) = c.sc.and_then(|sc| sc.seccomp_profile.as_ref())
            && !allowed_seccomp(&sp.type_)
        {
            fields.push(c.field("securityContext.seccompProfile.type"));
            names.push(c.name);
            bad_values.insert(sp.type_.as_str());
        }
    }
    if !pod_bad && names.is_empty() {
        return None;
    }
    violation(
        SECCOMP,
        fields,
        format!(
            "{} must not set securityContext.seccompProfile.type to {}",
            setters(pod_bad, &names, None),
            join_quote(bad_values)
        ),
    )
}

/// Restricted requires a seccomp profile on the pod or on every container, and never off.
fn seccomp_profile_restricted(p: &PodView<'_>) -> Option<Violation> {
    if p.is_windows() {
        return None;
    }
    if let Some(explicit) = seccomp_profile_baseline(p) {
        return Some(explicit);
    }
    let pod_set = p.psc.and_then(|sc| sc.seccomp_profile.as_ref()).is_some();
    if pod_set {
        return None;
    }
    let unset: Vec<&Ctr<'_>> = p
        .containers
        .iter()
        .filter(|c| c.sc.and_then(|sc| sc.seccomp_profile.as_ref()).is_none())
        .collect();
    if unset.is_empty() {
        return None;
    }
    let names: Vec<&str> = unset.iter().map(|c| c.name).collect();
    let mut fields = vec!["spec.securityContext.seccompProfile".to_owned()];
    fields.extend(
        unset
            .iter()
            .map(|c| c.field("securityContext.seccompProfile")),
    );
    violation(
        SECCOMP,
        fields,
        format!(
            "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
            containers_phrase(&names)
        ),
    )
}

/// Only sysctls isolated to the pod may be set.
fn sysctls(p: &PodView<'_>) -> Option<Violation> {
    let bad: Vec<(usize, &str)> = p
        .psc
        .and_then(|sc| sc.sysctls.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(_, s)| !SAFE_SYSCTLS.contains(&s.name.as_str()))
        .map(|(i, s)| (i, s.name.as_str()))
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation(
        SYSCTLS,
        bad.iter()
            .map(|(i, _)| format!("spec.securityContext.sysctls[{i}].name"))
            .collect(),
        bad.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(", "),
    )
}

/// Restricted admits only volume types that are ephemeral, projected from the API or claimed
/// through a PersistentVolumeClaim (whose PersistentVolume an administrator vetted).
fn restricted_volumes(p: &PodView<'_>) -> Option<Violation> {
    let mut fields = Vec::new();
    let mut names = Vec::new();
    let mut kinds = BTreeSet::new();
    for (i, v) in p.spec.volumes.iter().flatten().enumerate() {
        let allowed = v.config_map.is_some()
            || v.csi.is_some()
            || v.downward_api.is_some()
            || v.empty_dir.is_some()
            || v.ephemeral.is_some()
            || v.image.is_some()
            || v.persistent_volume_claim.is_some()
            || v.projected.is_some()
            || v.secret.is_some();
        if allowed {
            continue;
        }
        let kind = [
            ("hostPath", v.host_path.is_some()),
            ("gcePersistentDisk", v.gce_persistent_disk.is_some()),
            ("awsElasticBlockStore", v.aws_elastic_block_store.is_some()),
            ("gitRepo", v.git_repo.is_some()),
            ("nfs", v.nfs.is_some()),
            ("iscsi", v.iscsi.is_some()),
            ("glusterfs", v.glusterfs.is_some()),
            ("rbd", v.rbd.is_some()),
            ("flexVolume", v.flex_volume.is_some()),
            ("cinder", v.cinder.is_some()),
            ("cephfs", v.cephfs.is_some()),
            ("flocker", v.flocker.is_some()),
            ("fc", v.fc.is_some()),
            ("azureFile", v.azure_file.is_some()),
            ("vsphereVolume", v.vsphere_volume.is_some()),
            ("quobyte", v.quobyte.is_some()),
            ("azureDisk", v.azure_disk.is_some()),
            ("photonPersistentDisk", v.photon_persistent_disk.is_some()),
            ("portworxVolume", v.portworx_volume.is_some()),
            ("scaleIO", v.scale_io.is_some()),
            ("storageos", v.storageos.is_some()),
        ]
        .into_iter()
        .find(|(_, set)| *set);
        // A volume that names no source at all is defaulted to an emptyDir.
        let Some((kind, _)) = kind else { continue };
        fields.push(format!("spec.volumes[{i}].{kind}"));
        names.push(v.name.as_str());
        kinds.insert(kind);
    }
    if names.is_empty() {
        return None;
    }
    violation(
        RESTRICTED_VOLUMES,
        fields,
        format!(
            "{} {} {} {} {}",
            pluralize("volume", "volumes", names.len()),
            join_quote(&names),
            pluralize("uses", "use", names.len()),
            pluralize(
                "restricted volume type",
                "restricted volume types",
                kinds.len()
            ),
            join_quote(kinds)
        ),
    )
}

/// Every container must opt out of gaining privileges through setuid binaries.
fn allow_privilege_escalation(p: &PodView<'_>) -> Option<Violation> {
    if p.is_windows() {
        return None;
    }
    by_container(
        p,
        PRIVILEGE_ESCALATION,
        "securityContext.allowPrivilegeEscalation",
        |c| c.sc.and_then(|sc| sc.allow_privilege_escalation) != Some(false),
        "must set securityContext.allowPrivilegeEscalation=false",
    )
}

/// Restricted containers drop every capability and may add back only NET_BIND_SERVICE.
fn capabilities_restricted(p: &PodView<'_>) -> Option<Violation> {
    if p.is_windows() {
        return None;
    }
    let mut fields = Vec::new();
    let mut missing_drop = Vec::new();
    let mut adding = Vec::new();
    let mut forbidden = BTreeSet::new();
    for c in &p.containers {
        let Some(caps) = c.sc.and_then(|sc| sc.capabilities.as_ref()) else {
            fields.push(c.field("securityContext.capabilities.drop"));
            missing_drop.push(c.name);
            continue;
        };
        if !caps.drop.iter().flatten().any(|cap| cap == "ALL") {
            fields.push(c.field("securityContext.capabilities.drop"));
            missing_drop.push(c.name);
        }
        let extra: Vec<&String> = caps
            .add
            .iter()
            .flatten()
            .filter(|cap| *cap != "NET_BIND_SERVICE")
            .collect();
        if !extra.is_empty() {
            fields.push(c.field("securityContext.capabilities.add"));
            adding.push(c.name);
            forbidden.extend(extra);
        }
    }
    let mut details = Vec::new();
    if !missing_drop.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            containers_phrase(&missing_drop)
        ));
    }
    if !adding.is_empty() {
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&adding),
            join_quote(forbidden)
        ));
    }
    if details.is_empty() {
        return None;
    }
    violation(CAPABILITIES_RESTRICTED, fields, details.join("; "))
}

/// Containers must run as non-root: the pod says so for all, or each container does, and
/// none says otherwise. A pod in a user namespace is exempt.
fn run_as_non_root(p: &PodView<'_>) -> Option<Violation> {
    if p.in_user_namespace() {
        return None;
    }
    let pod_value = p.psc.and_then(|sc| sc.run_as_non_root);
    let pod_bad = pod_value == Some(false);
    let pod_true = pod_value == Some(true);
    let mut explicit_fields = Vec::new();
    let mut explicit = Vec::new();
    let mut implicit_fields = Vec::new();
    let mut implicit = Vec::new();
    for c in &p.containers {
        match c.sc.and_then(|sc| sc.run_as_non_root) {
            Some(false) => {
                explicit_fields.push(c.field("securityContext.runAsNonRoot"));
                explicit.push(c.name);
            }
            Some(true) => {}
            None if pod_true => {}
            None => {
                implicit_fields.push(c.field("securityContext.runAsNonRoot"));
                implicit.push(c.name);
            }
        }
    }
    if pod_bad || !explicit.is_empty() {
        let mut fields = Vec::new();
        if pod_bad {
            fields.push("spec.securityContext.runAsNonRoot".to_owned());
        }
        fields.extend(explicit_fields);
        return violation(
            RUN_AS_NON_ROOT,
            fields,
            format!(
                "{} must not set securityContext.runAsNonRoot=false",
                setters(pod_bad, &explicit, None)
            ),
        );
    }
    if implicit.is_empty() {
        return None;
    }
    let mut fields = vec!["spec.securityContext.runAsNonRoot".to_owned()];
    fields.extend(implicit_fields);
    violation(
        RUN_AS_NON_ROOT,
        fields,
        format!(
            "pod or {} must set securityContext.runAsNonRoot=true",
            containers_phrase(&implicit)
        ),
    )
}

/// No container may ask for UID 0, at pod or container level. A pod in a user namespace is
/// exempt.
fn run_as_user(p: &PodView<'_>) -> Option<Violation> {
    if p.in_user_namespace() {
        return None;
    }
    let pod_bad = p.psc.and_then(|sc| sc.run_as_user) == Some(0);
    let bad: Vec<&Ctr<'_>> = p
        .containers
        .iter()
        .filter(|c| c.sc.and_then(|sc| sc.run_as_user) == Some(0))
        .collect();
    if !pod_bad && bad.is_empty() {
        return None;
    }
    let mut fields = Vec::new();
    if pod_bad {
        fields.push("spec.securityContext.runAsUser".to_owned());
    }
    fields.extend(bad.iter().map(|c| c.field("securityContext.runAsUser")));
    let names: Vec<&str> = bad.iter().map(|c| c.name).collect();
    violation(
        RUN_AS_USER,
        fields,
        format!(
            "{} must not set runAsUser=0",
            setters(pod_bad, &names, None)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use PodSecurityStandard::{Baseline, Privileged, Restricted};
    use serde_json::{Value, json};

    /// A pod from its manifest, with one container `c` when it names none.
    fn pod(mut manifest: Value) -> Pod {
        let spec = manifest
            .as_object_mut()
            .unwrap()
            .entry("spec")
            .or_insert_with(|| json!({}));
        spec.as_object_mut()
            .unwrap()
            .entry("containers")
            .or_insert_with(|| json!([{"name": "c", "image": "registry.k8s.io/pause:3.10"}]));
        serde_json::from_value(manifest).unwrap()
    }

    /// A pod whose only container `c` has `security_context`.
    fn pod_with_container_sc(security_context: Value) -> Pod {
        pod(json!({"spec": {"containers": [{"name": "c", "securityContext": security_context}]}}))
    }

    /// A pod that passes restricted: every later test breaks one thing of it.
    fn hardened() -> Value {
        json!({"spec": {
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "initContainers": [{"name": "init", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
            "containers": [{"name": "c", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
        }})
    }

    fn run(rule: fn(&PodView<'_>) -> Option<Violation>, pod: &Pod) -> Option<Violation> {
        let empty = PodSpec::default();
        rule(&PodView::new(pod, &empty))
    }

    fn names(violations: &[Violation]) -> Vec<&'static str> {
        violations.iter().map(|v| v.check).collect()
    }

    #[test]
    fn host_process_on_pod_or_container_is_denied() {
        let on_pod = pod(json!({"spec": {"hostNetwork": true,
            "securityContext": {"windowsOptions": {"hostProcess": true}}}}));
        let v = run(windows_host_process, &on_pod).unwrap();
        assert_eq!(v.field, "spec.securityContext.windowsOptions.hostProcess");
        assert_eq!(
            v.detail,
            "pod must not set securityContext.windowsOptions.hostProcess=true"
        );
        let on_container = pod_with_container_sc(json!({"windowsOptions": {"hostProcess": true}}));
        let v = run(windows_host_process, &on_container).unwrap();
        assert_eq!(
            v.field,
            "spec.containers[0].securityContext.windowsOptions.hostProcess"
        );
        assert!(v.detail.starts_with("container \"c\" must not set"));
    }

    #[test]
    fn host_process_false_or_unset_passes() {
        let off = pod_with_container_sc(json!({"windowsOptions": {"hostProcess": false}}));
        assert_eq!(run(windows_host_process, &off), None);
        assert_eq!(run(windows_host_process, &pod(json!({}))), None);
    }

    #[test]
    fn host_namespaces_are_denied_and_listed() {
        let p = pod(json!({"spec": {"hostNetwork": true, "hostIPC": true}}));
        let v = run(host_namespaces, &p).unwrap();
        assert_eq!(v.check, "host namespaces");
        assert_eq!(v.field, "spec.hostNetwork, spec.hostIPC");
        assert_eq!(v.detail, "hostNetwork=true, hostIPC=true");
    }

    #[test]
    fn host_namespaces_set_false_pass() {
        let p = pod(json!({"spec": {"hostNetwork": false, "hostPID": false, "hostIPC": false}}));
        assert_eq!(run(host_namespaces, &p), None);
    }

    #[test]
    fn privileged_container_is_denied() {
        let p = pod(json!({"spec": {
            "initContainers": [{"name": "init", "securityContext": {"privileged": true}}],
            "containers": [{"name": "web", "securityContext": {"privileged": true}}]}}));
        let v = run(privileged, &p).unwrap();
        assert_eq!(
            v.field,
            "spec.initContainers[0].securityContext.privileged, \
             spec.containers[0].securityContext.privileged"
        );
        assert_eq!(
            v.detail,
            "containers \"init\", \"web\" must not set securityContext.privileged=true"
        );
    }

    #[test]
    fn unprivileged_container_passes() {
        let p = pod_with_container_sc(json!({"privileged": false}));
        assert_eq!(run(privileged, &p), None);
    }

    #[test]
    fn baseline_capabilities_deny_additions_beyond_the_default_set() {
        let p = pod_with_container_sc(
            json!({"capabilities": {"add": ["SYS_ADMIN", "CHOWN", "NET_RAW", "chown"]}}),
        );
        let v = run(capabilities_baseline, &p).unwrap();
        assert_eq!(v.check, "non-default capabilities");
        assert_eq!(
            v.field,
            "spec.containers[0].securityContext.capabilities.add"
        );
        assert_eq!(
            v.detail,
            "container \"c\" must not include \"NET_RAW\", \"SYS_ADMIN\", \"chown\" in \
             securityContext.capabilities.add"
        );
    }

    #[test]
    fn baseline_capabilities_allow_the_default_set_and_any_drop() {
        let p = pod_with_container_sc(json!({"capabilities": {
            "add": BASELINE_CAPABILITIES, "drop": ["NET_RAW"]}}));
        assert_eq!(run(capabilities_baseline, &p), None);
    }

    #[test]
    fn host_path_volume_is_denied() {
        let p = pod(json!({"spec": {"volumes": [
            {"name": "tmp", "emptyDir": {}},
            {"name": "root", "hostPath": {"path": "/"}}]}}));
        let v = run(host_path_volumes, &p).unwrap();
        assert_eq!(v.field, "spec.volumes[1].hostPath");
        assert_eq!(v.detail, "volume \"root\"");
    }

    #[test]
    fn volumes_without_host_path_pass_baseline() {
        let p = pod(json!({"spec": {"volumes": [{"name": "nfs",
            "nfs": {"server": "nfs.example.com", "path": "/export"}}]}}));
        assert_eq!(run(host_path_volumes, &p), None);
        assert!(check(Baseline, &p).is_empty());
    }

    #[test]
    fn host_port_is_denied() {
        let p = pod(json!({"spec": {"containers": [{"name": "c", "ports": [
            {"containerPort": 80},
            {"containerPort": 8080, "hostPort": 8080},
            {"containerPort": 10000, "hostPort": 10000}]}]}}));
        let v = run(host_ports, &p).unwrap();
        assert_eq!(v.check, "hostPort");
        assert_eq!(
            v.field,
            "spec.containers[0].ports[1].hostPort, spec.containers[0].ports[2].hostPort"
        );
        assert_eq!(v.detail, "container \"c\" uses hostPorts 10000, 8080");
    }

    #[test]
    fn container_ports_on_the_host_network_count_as_host_ports() {
        let p = pod(
            json!({"spec": {"hostNetwork": true, "containers": [{"name": "c", "ports": [
            {"containerPort": 8080}]}]}}),
        );
        let v = run(host_ports, &p).unwrap();
        assert_eq!(v.field, "spec.containers[0].ports[0].hostPort");
        assert_eq!(v.detail, "container \"c\" uses hostPort 8080");
    }

    #[test]
    fn container_port_without_host_port_passes() {
        let p = pod(json!({"spec": {"containers": [{"name": "c", "ports": [
            {"containerPort": 80}, {"containerPort": 81, "hostPort": 0}]}]}}));
        assert_eq!(run(host_ports, &p), None);
    }

    #[test]
    fn probe_or_lifecycle_host_is_denied() {
        let p = pod(json!({"spec": {"containers": [{"name": "c",
            "livenessProbe": {"httpGet": {"path": "/", "port": 80, "host": "10.0.0.1"}},
            "readinessProbe": {"tcpSocket": {"port": 80, "host": "example.com"}},
            "lifecycle": {"preStop": {"httpGet": {"path": "/", "port": 80, "host": "10.0.0.1"}}}}]}}));
        let v = run(host_probes_and_lifecycle, &p).unwrap();
        assert_eq!(v.check, "probe or lifecycle host");
        assert_eq!(
            v.field,
            "spec.containers[0].livenessProbe.httpGet.host, \
             spec.containers[0].readinessProbe.tcpSocket.host, \
             spec.containers[0].lifecycle.preStop.httpGet.host"
        );
        assert_eq!(
            v.detail,
            "container \"c\" uses probe or lifecycle hosts \"10.0.0.1\", \"example.com\""
        );
    }

    #[test]
    fn probe_without_host_passes() {
        let p = pod(json!({"spec": {"containers": [{"name": "c",
            "livenessProbe": {"httpGet": {"path": "/", "port": 80, "host": ""}},
            "startupProbe": {"tcpSocket": {"port": 80}}}]}}));
        assert_eq!(run(host_probes_and_lifecycle, &p), None);
    }

    #[test]
    fn apparmor_unconfined_field_is_denied() {
        let p = pod(json!({"spec": {
            "securityContext": {"appArmorProfile": {"type": "Unconfined"}},
            "containers": [{"name": "c", "securityContext": {"appArmorProfile": {"type": "Unconfined"}}}]}}));
        let v = run(app_armor_profile, &p).unwrap();
        assert_eq!(v.check, "forbidden AppArmor profile");
        assert_eq!(
            v.field,
            "spec.securityContext.appArmorProfile.type, \
             spec.containers[0].securityContext.appArmorProfile.type"
        );
        assert_eq!(
            v.detail,
            "pod and container \"c\" must not set AppArmor profile type to \"Unconfined\""
        );
    }

    #[test]
    fn apparmor_unconfined_annotation_is_denied_as_annotation_and_container_profile() {
        let p = pod(json!({"metadata": {"annotations": {
            "container.apparmor.security.beta.kubernetes.io/c": "unconfined"}}}));
        let v = run(app_armor_profile, &p).unwrap();
        assert_eq!(v.check, "forbidden AppArmor profiles");
        assert_eq!(
            v.field,
            "metadata.annotations[container.apparmor.security.beta.kubernetes.io/c]"
        );
        assert_eq!(
            v.detail,
            "container \"c\" and annotation must not set AppArmor profile type to \
             \"Unconfined\", \"container.apparmor.security.beta.kubernetes.io/c=\"unconfined\"\""
        );
    }

    #[test]
    fn apparmor_annotation_of_a_windows_pod_is_read_as_annotation_only() {
        let p = pod(json!({
            "metadata": {"annotations": {"container.apparmor.security.beta.kubernetes.io/c": "unconfined"}},
            "spec": {"os": {"name": "windows"}}}));
        let v = run(app_armor_profile, &p).unwrap();
        assert_eq!(v.check, "forbidden AppArmor profile");
        assert!(v.detail.starts_with("annotation must not set"));
    }

    #[test]
    fn apparmor_annotation_repeating_the_pod_profile_is_reported_once() {
        let p = pod(json!({
            "metadata": {"annotations": {"container.apparmor.security.beta.kubernetes.io/c": "unconfined"}},
            "spec": {"securityContext": {"appArmorProfile": {"type": "Unconfined"}}}}));
        let v = run(app_armor_profile, &p).unwrap();
        assert_eq!(v.check, "forbidden AppArmor profiles");
        assert_eq!(
            v.detail,
            "pod and annotation must not set AppArmor profile type to \"Unconfined\", \
             \"container.apparmor.security.beta.kubernetes.io/c=\"unconfined\"\""
        );
    }

    #[test]
    fn apparmor_runtime_default_and_localhost_pass() {
        let p = pod(json!({
            "metadata": {"annotations": {
                "container.apparmor.security.beta.kubernetes.io/c": "localhost/custom",
                "container.apparmor.security.beta.kubernetes.io/d": "runtime/default",
                "container.apparmor.security.beta.kubernetes.io/e": ""}},
            "spec": {
                "securityContext": {"appArmorProfile": {"type": "RuntimeDefault"}},
                "containers": [{"name": "c", "securityContext": {"appArmorProfile":
                    {"type": "Localhost", "localhostProfile": "custom"}}}]}}));
        assert_eq!(run(app_armor_profile, &p), None);
    }

    #[test]
    fn selinux_forbidden_type_user_and_role_are_denied() {
        let p = pod(json!({"spec": {
            "securityContext": {"seLinuxOptions": {"type": "spc_t"}},
            "containers": [{"name": "c", "securityContext": {"seLinuxOptions":
                {"user": "system_u", "role": "system_r", "type": "container_t"}}}]}}));
        let v = run(se_linux_options, &p).unwrap();
        assert_eq!(
            v.field,
            "spec.securityContext.seLinuxOptions.type, \
             spec.containers[0].securityContext.seLinuxOptions.user, \
             spec.containers[0].securityContext.seLinuxOptions.role"
        );
        assert_eq!(
            v.detail,
            "pod and container \"c\" set forbidden securityContext.seLinuxOptions: \
             type \"spc_t\"; user may not be set; role may not be set"
        );
    }

    #[test]
    fn selinux_container_types_and_levels_pass() {
        for type_ in SE_LINUX_TYPES {
            let p = pod_with_container_sc(
                json!({"seLinuxOptions": {"type": type_, "level": "s0:c1,c2", "user": ""}}),
            );
            assert_eq!(run(se_linux_options, &p), None, "{type_}");
        }
    }

    #[test]
    fn unmasked_proc_mount_is_denied_by_baseline_outside_a_user_namespace() {
        let p = pod_with_container_sc(json!({"procMount": "Unmasked"}));
        let v = run(proc_mount_baseline, &p).unwrap();
        assert_eq!(v.field, "spec.containers[0].securityContext.procMount");
        assert_eq!(
            v.detail,
            "container \"c\" must not set securityContext.procMount to \"Unmasked\""
        );
    }

    #[test]
    fn unmasked_proc_mount_passes_baseline_in_a_user_namespace_but_not_restricted() {
        let p = pod(json!({"spec": {"hostUsers": false, "containers": [
            {"name": "c", "securityContext": {"procMount": "Unmasked"}}]}}));
        assert_eq!(run(proc_mount_baseline, &p), None);
        assert!(run(proc_mount_restricted, &p).is_some());
    }

    #[test]
    fn default_proc_mount_passes() {
        let p = pod_with_container_sc(json!({"procMount": "Default"}));
        assert_eq!(run(proc_mount_baseline, &p), None);
        assert_eq!(run(proc_mount_restricted, &p), None);
    }

    #[test]
    fn unconfined_seccomp_is_denied_by_baseline() {
        let p = pod(json!({"spec": {
            "securityContext": {"seccompProfile": {"type": "Unconfined"}},
            "containers": [{"name": "c", "securityContext": {"seccompProfile": {"type": "Unconfined"}}}]}}));
        let v = run(seccomp_profile_baseline, &p).unwrap();
        assert_eq!(
            v.detail,
            "pod and container \"c\" must not set securityContext.seccompProfile.type to \
             \"Unconfined\""
        );
    }

    #[test]
    fn seccomp_unset_or_confined_passes_baseline_and_annotations_are_not_read() {
        let p = pod(json!({
            "metadata": {"annotations": {"seccomp.security.alpha.kubernetes.io/pod": "unconfined",
                "container.seccomp.security.alpha.kubernetes.io/c": "unconfined"}},
            "spec": {"containers": [{"name": "c", "securityContext": {"seccompProfile":
                {"type": "Localhost", "localhostProfile": "profiles/audit.json"}}}]}}));
        assert_eq!(run(seccomp_profile_baseline, &p), None);
        assert_eq!(run(seccomp_profile_baseline, &pod(json!({}))), None);
    }

    #[test]
    fn unsafe_sysctls_are_denied() {
        let p = pod(json!({"spec": {"securityContext": {"sysctls": [
            {"name": "net.ipv4.tcp_syncookies", "value": "1"},
            {"name": "kernel.msgmax", "value": "65536"},
            {"name": "net/ipv4/ip_local_port_range", "value": "1024 65535"}]}}}));
        let v = run(sysctls, &p).unwrap();
        assert_eq!(v.check, "forbidden sysctls");
        assert_eq!(
            v.field,
            "spec.securityContext.sysctls[1].name, spec.securityContext.sysctls[2].name"
        );
        assert_eq!(v.detail, "kernel.msgmax, net/ipv4/ip_local_port_range");
    }

    #[test]
    fn safe_sysctls_of_the_latest_version_pass() {
        let all: Vec<Value> = SAFE_SYSCTLS
            .iter()
            .map(|n| json!({"name": n, "value": "1"}))
            .collect();
        let p = pod(json!({"spec": {"securityContext": {"sysctls": all}}}));
        assert_eq!(run(sysctls, &p), None);
    }

    #[test]
    fn restricted_volume_types_are_denied() {
        let p = pod(json!({"spec": {"volumes": [
            {"name": "a", "nfs": {"server": "nfs.example.com", "path": "/export"}},
            {"name": "b", "hostPath": {"path": "/"}},
            {"name": "c", "secret": {"secretName": "s"}}]}}));
        let v = run(restricted_volumes, &p).unwrap();
        assert_eq!(v.field, "spec.volumes[0].nfs, spec.volumes[1].hostPath");
        assert_eq!(
            v.detail,
            "volumes \"a\", \"b\" use restricted volume types \"hostPath\", \"nfs\""
        );
    }

    #[test]
    fn ephemeral_projected_and_claimed_volume_types_pass_restricted() {
        let p = pod(json!({"spec": {"volumes": [
            {"name": "a", "configMap": {"name": "cm"}},
            {"name": "b", "csi": {"driver": "csi.example.com"}},
            {"name": "c", "downwardAPI": {}},
            {"name": "d", "emptyDir": {}},
            {"name": "e", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
            {"name": "f", "image": {"reference": "registry.k8s.io/pause:3.10"}},
            {"name": "g", "persistentVolumeClaim": {"claimName": "pvc"}},
            {"name": "h", "projected": {"sources": []}},
            {"name": "i", "secret": {"secretName": "s"}}]}}));
        assert_eq!(run(restricted_volumes, &p), None);
    }

    #[test]
    fn volume_without_a_source_is_an_empty_dir() {
        let mut manifest = hardened();
        manifest["spec"]["volumes"] = json!([{"name": "scratch"}]);
        assert!(check(Restricted, &pod(manifest)).is_empty());
    }

    #[test]
    fn privilege_escalation_must_be_disabled_on_every_container() {
        let mut manifest = hardened();
        manifest["spec"]["initContainers"][0]["securityContext"]["allowPrivilegeEscalation"] =
            json!(true);
        manifest["spec"]["containers"][0]["securityContext"]
            .as_object_mut()
            .unwrap()
            .remove("allowPrivilegeEscalation");
        let v = run(allow_privilege_escalation, &pod(manifest)).unwrap();
        assert_eq!(v.check, "allowPrivilegeEscalation != false");
        assert_eq!(
            v.detail,
            "containers \"init\", \"c\" must set securityContext.allowPrivilegeEscalation=false"
        );
        assert_eq!(run(allow_privilege_escalation, &pod(hardened())), None);
    }

    #[test]
    fn restricted_capabilities_require_drop_all_and_allow_only_net_bind_service() {
        let p = pod(json!({"spec": {
            "initContainers": [{"name": "init"}],
            "containers": [
                {"name": "a", "securityContext": {"capabilities": {"drop": ["all"]}}},
                {"name": "b", "securityContext": {"capabilities": {"drop": ["ALL"], "add": ["CHOWN"]}}},
                {"name": "c", "securityContext": {"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}]}}));
        let v = run(capabilities_restricted, &p).unwrap();
        assert_eq!(v.check, "unrestricted capabilities");
        assert_eq!(
            v.field,
            "spec.initContainers[0].securityContext.capabilities.drop, \
             spec.containers[0].securityContext.capabilities.drop, \
             spec.containers[1].securityContext.capabilities.add"
        );
        assert_eq!(
            v.detail,
            "containers \"init\", \"a\" must set securityContext.capabilities.drop=[\"ALL\"]; \
             container \"b\" must not include \"CHOWN\" in securityContext.capabilities.add"
        );
        let fine = pod_with_container_sc(
            json!({"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}),
        );
        assert_eq!(run(capabilities_restricted, &fine), None);
    }

    #[test]
    fn windows_pods_are_exempt_from_linux_only_restricted_rules() {
        let p = pod(json!({"spec": {"os": {"name": "windows"},
            "securityContext": {"runAsNonRoot": true}}}));
        assert_eq!(run(allow_privilege_escalation, &p), None);
        assert_eq!(run(capabilities_restricted, &p), None);
        assert_eq!(run(seccomp_profile_restricted, &p), None);
        assert!(check(Restricted, &p).is_empty());
        let without = pod(json!({"spec": {"os": {"name": "windows"}}}));
        assert_eq!(
            names(&check(Restricted, &without)),
            ["runAsNonRoot != true"]
        );
    }

    #[test]
    fn run_as_non_root_at_pod_level_covers_containers_that_do_not_override_it() {
        assert_eq!(run(run_as_non_root, &pod(hardened())), None);
        let mut manifest = hardened();
        manifest["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] = json!(false);
        let v = run(run_as_non_root, &pod(manifest)).unwrap();
        assert_eq!(v.field, "spec.containers[0].securityContext.runAsNonRoot");
        assert_eq!(
            v.detail,
            "container \"c\" must not set securityContext.runAsNonRoot=false"
        );
    }

    #[test]
    fn run_as_non_root_false_at_pod_level_is_denied_even_if_containers_set_it() {
        let p = pod(json!({"spec": {"securityContext": {"runAsNonRoot": false},
            "containers": [{"name": "c", "securityContext": {"runAsNonRoot": true}}]}}));
        let v = run(run_as_non_root, &p).unwrap();
        assert_eq!(
            v.detail,
            "pod must not set securityContext.runAsNonRoot=false"
        );
    }

    #[test]
    fn run_as_non_root_may_be_set_on_every_container_instead() {
        let each = pod(json!({"spec": {
            "initContainers": [{"name": "init", "securityContext": {"runAsNonRoot": true}}],
            "containers": [{"name": "c", "securityContext": {"runAsNonRoot": true}}]}}));
        assert_eq!(run(run_as_non_root, &each), None);
        let missing = pod(json!({"spec": {
            "initContainers": [{"name": "init"}],
            "containers": [{"name": "c", "securityContext": {"runAsNonRoot": true}}]}}));
        let v = run(run_as_non_root, &missing).unwrap();
        assert_eq!(
            v.field,
            "spec.securityContext.runAsNonRoot, spec.initContainers[0].securityContext.runAsNonRoot"
        );
        assert_eq!(
            v.detail,
            "pod or container \"init\" must set securityContext.runAsNonRoot=true"
        );
    }

    #[test]
    fn run_as_user_zero_is_denied_at_pod_or_container_level() {
        let p = pod(json!({"spec": {"securityContext": {"runAsUser": 0},
            "containers": [{"name": "c", "securityContext": {"runAsUser": 0}}]}}));
        let v = run(run_as_user, &p).unwrap();
        assert_eq!(v.check, "runAsUser=0");
        assert_eq!(
            v.field,
            "spec.securityContext.runAsUser, spec.containers[0].securityContext.runAsUser"
        );
        assert_eq!(v.detail, "pod and container \"c\" must not set runAsUser=0");
        let p = pod(json!({"spec": {"securityContext": {"runAsUser": 1000}}}));
        assert_eq!(run(run_as_user, &p), None);
    }

    #[test]
    fn user_namespace_pods_may_run_as_root() {
        let mut manifest = hardened();
        manifest["spec"]["hostUsers"] = json!(false);
        manifest["spec"]["securityContext"]["runAsNonRoot"] = json!(false);
        manifest["spec"]["securityContext"]["runAsUser"] = json!(0);
        assert!(check(Restricted, &pod(manifest)).is_empty());
    }

    #[test]
    fn restricted_seccomp_is_required_on_the_pod_or_every_container() {
        let each = pod(json!({"spec": {
            "initContainers": [{"name": "init", "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}}],
            "containers": [{"name": "c", "securityContext": {"seccompProfile":
                {"type": "Localhost", "localhostProfile": "p.json"}}}]}}));
        assert_eq!(run(seccomp_profile_restricted, &each), None);
        let v = run(seccomp_profile_restricted, &pod(json!({}))).unwrap();
        assert_eq!(
            v.field,
            "spec.securityContext.seccompProfile, spec.containers[0].securityContext.seccompProfile"
        );
        assert_eq!(
            v.detail,
            "pod or container \"c\" must set securityContext.seccompProfile.type to \
             \"RuntimeDefault\" or \"Localhost\""
        );
    }

    #[test]
    fn restricted_seccomp_denies_a_container_turning_it_off() {
        let mut manifest = hardened();
        manifest["spec"]["containers"][0]["securityContext"]["seccompProfile"] =
            json!({"type": "Unconfined"});
        let v = run(seccomp_profile_restricted, &pod(manifest)).unwrap();
        assert_eq!(
            v.detail,
            "container \"c\" must not set securityContext.seccompProfile.type to \"Unconfined\""
        );
    }

    #[test]
    fn privileged_level_admits_anything() {
        let p = pod(json!({"spec": {"hostNetwork": true, "containers": [
            {"name": "c", "securityContext": {"privileged": true}}]}}));
        assert!(check(Privileged, &p).is_empty());
    }

    #[test]
    fn minimal_pod_passes_baseline_and_fails_restricted() {
        let p = pod(json!({}));
        assert!(check(Baseline, &p).is_empty());
        assert_eq!(
            names(&check(Restricted, &p)),
            [
                "allowPrivilegeEscalation != false",
                "unrestricted capabilities",
                "runAsNonRoot != true",
                "seccompProfile",
            ]
        );
    }

    #[test]
    fn hardened_pod_passes_restricted() {
        assert!(check(Restricted, &pod(hardened())).is_empty());
        assert!(check(Baseline, &pod(hardened())).is_empty());
    }

    #[test]
    fn restricted_includes_baseline_rules_in_the_api_servers_order() {
        let mut manifest = hardened();
        manifest["spec"]["hostPID"] = json!(true);
        manifest["spec"]["securityContext"]["runAsUser"] = json!(0);
        manifest["spec"]["containers"][0]["securityContext"]["privileged"] = json!(true);
        manifest["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] =
            json!(true);
        let p = pod(manifest);
        assert_eq!(
            names(&check(Baseline, &p)),
            ["host namespaces", "privileged"]
        );
        assert_eq!(
            names(&check(Restricted, &p)),
            [
                "host namespaces",
                "privileged",
                "allowPrivilegeEscalation != false",
                "runAsUser=0"
            ]
        );
    }

    #[test]
    fn restricted_replaces_the_baseline_rules_it_tightens() {
        let mut manifest = hardened();
        manifest["spec"]["volumes"] = json!([{"name": "root", "hostPath": {"path": "/"}}]);
        manifest["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] =
            json!(["SYS_ADMIN"]);
        manifest["spec"]["securityContext"]["seccompProfile"] = json!({"type": "Unconfined"});
        let p = pod(manifest);
        assert_eq!(
            names(&check(Baseline, &p)),
            [
                "non-default capabilities",
                "hostPath volumes",
                "seccompProfile"
            ]
        );
        assert_eq!(
            names(&check(Restricted, &p)),
            [
                "unrestricted capabilities",
                "restricted volume types",
                "seccompProfile"
            ]
        );
    }

    #[test]
    fn ephemeral_containers_are_checked_too() {
        let p = pod(json!({"spec": {"ephemeralContainers": [
            {"name": "debug", "securityContext": {"privileged": true}}]}}));
        let v = run(privileged, &p).unwrap();
        assert_eq!(
            v.field,
            "spec.ephemeralContainers[0].securityContext.privileged"
        );
    }

    #[test]
    fn violation_displays_rule_field_and_detail() {
        let p = pod(json!({"spec": {"containers": [
            {"name": "web", "securityContext": {"privileged": true}}]}}));
        assert_eq!(
            check(Baseline, &p)[0].to_string(),
            "privileged (spec.containers[0].securityContext.privileged: container \"web\" must \
             not set securityContext.privileged=true)"
        );
    }

    #[test]
    fn pod_without_spec_is_judged_as_empty() {
        let p = Pod::default();
        assert!(check(Baseline, &p).is_empty());
        assert!(check(Restricted, &p).is_empty());
    }
}
