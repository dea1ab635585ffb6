//! The pure half of [`super::run_instance`]: a pod (as a StatefulSet or a Deployment would make
//! it), the Secrets and ConfigMaps it mounts, its addresses mapped to local ones and a local
//! folder become the processes to start and the files to write. Only file paths and addresses
//! change; everything else is run as rendered.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, KeyToPath, PodSpec, PodTemplateSpec, Secret,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Address every process of the pod listens on and reports as the pod's.
pub const POD_IP: &str = "127.0.0.1";

/// A pod to run locally: the spec of a workload's pod template, with what the host would give
/// the pod made from it.
#[derive(Debug, Clone)]
pub struct LocalPod<'a> {
    /// The pod's name, which `metadata.name` references resolve to.
    pub name: String,
    pub namespace: String,
    pub spec: &'a PodSpec,
    /// Volumes that outlive the pod (a StatefulSet's claim templates): kept across runs.
    pub claims: Vec<String>,
}

impl<'a> LocalPod<'a> {
    /// The pod `name` in `namespace` made from `template`.
    pub fn new(name: String, namespace: String, template: &'a PodTemplateSpec) -> Result<Self> {
        let spec = template
            .spec
            .as_ref()
            .with_context(|| format!("the pod template of {name} has no spec"))?;
        Ok(LocalPod {
            name,
            namespace,
            spec,
            claims: Vec::new(),
        })
    }

    /// The first (and only) pod of `sts`, `NAME-0`, with the StatefulSet's volume claims.
    pub fn of_stateful_set(sts: &'a StatefulSet) -> Result<Self> {
        let (name, namespace) = name_and_namespace(&sts.metadata, "StatefulSet")?;
        let spec = &sts.spec;
        let mut pod = Self::new(format!("{name}-0"), namespace, &spec.template)?;
        pod.claims = spec
            .volume_claim_templates
            .iter()
            .flatten()
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        Ok(pod)
    }

    /// One pod of `deployment`, named `NAME-suffix` (where a replica's name has the hashes of
    /// its ReplicaSet and itself).
    pub fn of_deployment(deployment: &'a Deployment, suffix: &str) -> Result<Self> {
        let (name, namespace) = name_and_namespace(&deployment.metadata, "Deployment")?;
        Self::new(
            format!("{name}-{suffix}"),
            namespace,
            &deployment.spec.template,
        )
    }

    /// The Secrets the pod mounts, which [`plan`] needs.
    pub fn mounted_secrets(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .spec
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| v.secret.as_ref().and_then(|s| s.secret_name.clone()))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The ConfigMaps the pod mounts, which [`plan`] needs.
    pub fn mounted_config_maps(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .spec
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| v.config_map.as_ref().map(|c| c.name.clone()))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Every containerPort of the pod, each once, sorted.
    pub fn declared_ports(&self) -> Result<Vec<u16>> {
        let mut ports = Vec::new();
        for container in &self.spec.containers {
            for port in container.ports.iter().flatten() {
                let number = u16::try_from(port.container_port)
                    .ok()
                    .filter(|p| *p != 0)
                    .with_context(|| {
                        format!(
                            "container {}: {} is not a port",
                            container.name, port.container_port
                        )
                    })?;
                ports.push(number);
            }
        }
        ports.sort_unstable();
        ports.dedup();
        Ok(ports)
    }

    /// The ServiceAccount whose token the pod mounts (its in-cluster credentials for the host),
    /// if it mounts one. A pod that leaves `automountServiceAccountToken` unset gets one unless
    /// its ServiceAccount says otherwise, which is not seen here: it counts as mounting one.
    pub fn service_account(&self) -> Option<String> {
        (self.spec.automount_service_account_token != Some(false)).then(|| {
            self.spec
                .service_account_name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "default".to_owned())
        })
    }
}

fn name_and_namespace(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    kind: &str,
) -> Result<(String, String)> {
    let name = meta
        .name
        .clone()
        .with_context(|| format!("the {kind} has no name"))?;
    let namespace = meta
        .namespace
        .clone()
        .with_context(|| format!("{kind} {name} has no namespace"))?;
    Ok((name, namespace))
}

/// The objects a pod mounts, as read from the cluster (at least those of
/// [`LocalPod::mounted_secrets`] and [`LocalPod::mounted_config_maps`] that exist).
#[derive(Debug, Clone, Default)]
pub struct Mounted {
    pub secrets: Vec<Secret>,
    pub config_maps: Vec<ConfigMap>,
}

/// What the addresses a pod uses become locally.
#[derive(Debug, Clone, Default)]
pub struct Addresses {
    /// Each of [`LocalPod::declared_ports`] to a free local port: all pods share the loopback.
    pub ports: BTreeMap<u16, u16>,
    /// Addresses of Services the pod reaches (`host:port`, the host in any DNS form the pod
    /// uses) to the local `host:port` that serves each.
    pub services: BTreeMap<String, String>,
}

/// What to do locally to run the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// One per container, in start order.
    pub processes: Vec<LocalProcess>,
    /// Folders the volumes become.
    pub folders: Vec<LocalFolder>,
    /// The files of Secret and ConfigMap volumes (written with mode 0600).
    pub files: Vec<LocalFile>,
    /// The local port of the container running `kube-apiserver`, if one does.
    pub api_server_port: Option<u16>,
    /// See [`LocalPod::service_account`].
    pub service_account: Option<String>,
    /// The containers' readiness probes that are plain HTTP GETs, at their local ports.
    pub http_readiness: Vec<HttpProbe>,
}

/// A probe `GET http://POD_IP:port/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProbe {
    pub container: String,
    /// The local port (see [`Addresses::ports`]).
    pub port: u16,
    pub path: String,
}

/// A container as a local process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalProcess {
    pub container: String,
    /// File name of the binary: the base name of the container's `command[0]`.
    pub binary: String,
    /// The rest of `command`, then `args`; references expanded, paths and addresses replaced.
    pub args: Vec<String>,
    /// The container's environment, resolved as the kubelet would.
    pub env: Vec<(String, String)>,
    /// The container's working directory, if it names one (inside one of its volumes).
    pub working_dir: Option<PathBuf>,
}

/// A volume's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFolder {
    pub volume: String,
    pub path: PathBuf,
    /// Kept from an earlier run, as a volume claim outlives its pod; otherwise emptied first.
    pub keep: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFile {
    pub path: PathBuf,
    pub contents: Vec<u8>,
}

/// The processes and files that run `pod` in `root`, with the objects it mounts and its
/// addresses mapped to local ones (every one of [`LocalPod::declared_ports`] must be).
pub fn plan(
    pod: &LocalPod<'_>,
    mounted: &Mounted,
    addresses: &Addresses,
    root: &Path,
) -> Result<Plan> {
    let spec = pod.spec;
    ensure!(
        spec.init_containers.as_ref().is_none_or(Vec::is_empty),
        "init containers cannot run locally yet"
    );
    for port in pod.declared_ports()? {
        ensure!(
            addresses.ports.contains_key(&port),
            "no local port for port {port}"
        );
    }

    let (folders, files) = volumes(pod, mounted, root)?;
    let folder_of = |volume: &str| folders.iter().find(|f| f.volume == volume);

    // Files may be read by any container; a path mounted differently by two containers is
    // rewritten as the first one mounts it.
    let mut all_mounts = Vec::new();
    let mut processes = Vec::new();
    for container in &spec.containers {
        let mut mounts = Vec::new();
        for mount in container.volume_mounts.iter().flatten() {
            let what = || format!("container {}, mount {}", container.name, mount.mount_path);
            let folder = folder_of(&mount.name)
                .with_context(|| format!("{}: no volume {}", what(), mount.name))?;
            ensure!(
                mount.sub_path_expr.is_none(),
                "{}: subPathExpr is not supported",
                what()
            );
            let mut local = folder.path.clone();
            if let Some(sub) = mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
                local.push(relative(sub).with_context(what)?);
            }
            let path = mount.mount_path.trim_end_matches('/');
            ensure!(path.starts_with('/'), "{}: not an absolute path", what());
            mounts.push((path.to_owned(), local.display().to_string()));
        }
        all_mounts.extend(mounts.iter().cloned());
        let rewrite = Rewrite::new(mounts, addresses);
        processes.push(process(container, &rewrite, pod)?);
    }
    let rewrite = Rewrite::new(all_mounts, addresses);
    let files = files
        .into_iter()
        .map(|file| LocalFile {
            contents: match String::from_utf8(file.contents) {
                Ok(text) => rewrite.text(&text, false).into_bytes(),
                Err(binary) => binary.into_bytes(),
            },
            ..file
        })
        .collect();

    let api_server_port = match spec
        .containers
        .iter()
        .zip(&processes)
        .find(|(_, p)| p.binary == "kube-apiserver")
    {
        None => None,
        Some((api_server, _)) => {
            let api_ports: Vec<_> = api_server.ports.iter().flatten().collect();
            let api_port = api_ports
                .iter()
                .find(|p| p.name.as_deref() == Some("https"))
                .or(api_ports.first().filter(|_| api_ports.len() == 1))
                .context("the kube-apiserver container declares no single or `https` port")?;
            Some(addresses.ports[&(api_port.container_port as u16)])
        }
    };

    Ok(Plan {
        processes,
        folders,
        files,
        api_server_port,
        service_account: pod.service_account(),
        http_readiness: http_readiness(spec, addresses)?,
    })
}

/// The readiness probes of `spec`'s containers that are HTTP GETs (HTTPS ones are left to the
/// caller, which knows the certificates), their ports (by number or by name) made local.
fn http_readiness(spec: &PodSpec, addresses: &Addresses) -> Result<Vec<HttpProbe>> {
    let mut probes = Vec::new();
    for container in &spec.containers {
        let Some(get) = container
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .filter(|g| g.scheme.as_deref().is_none_or(|s| s == "HTTP"))
        else {
            continue;
        };
        let what = || format!("container {}: readiness probe", container.name);
        let declared = match &get.port {
            IntOrString::Int(port) => *port,
            IntOrString::String(name) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .map(|p| p.container_port)
                .with_context(|| format!("{}: no port named {name}", what()))?,
        };
        let port = u16::try_from(declared)
            .ok()
            .and_then(|p| addresses.ports.get(&p))
            .with_context(|| format!("{}: port {declared} is not declared", what()))?;
        probes.push(HttpProbe {
            container: container.name.clone(),
            port: *port,
            path: get.path.clone().unwrap_or_else(|| "/".into()),
        });
    }
    Ok(probes)
}

/// The volumes' folders under `root/volumes`, and the files of Secret and ConfigMap volumes.
fn volumes(
    pod: &LocalPod<'_>,
    mounted: &Mounted,
    root: &Path,
) -> Result<(Vec<LocalFolder>, Vec<LocalFile>)> {
    let mut folders = Vec::new();
    let mut files = Vec::new();
    let folder = |volume: &str, keep| -> Result<LocalFolder> {
        Ok(LocalFolder {
            volume: volume.to_owned(),
            path: root.join("volumes").join(relative(volume)?),
            keep,
        })
    };
    for volume in pod.spec.volumes.iter().flatten() {
        let what = || format!("volume {}", volume.name);
        // The data and items of a Secret or ConfigMap volume.
        let source = if let Some(source) = &volume.secret {
            let name = source.secret_name.clone().unwrap_or_default();
            let data = mounted
                .secrets
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(&name))
                .map(secret_data);
            Some((
                format!("Secret {name}"),
                data,
                source.optional == Some(true),
                &source.items,
            ))
        } else if let Some(source) = &volume.config_map {
            let name = &source.name;
            let data = mounted
                .config_maps
                .iter()
                .find(|c| c.metadata.name.as_deref() == Some(name))
                .map(config_map_data);
            Some((
                format!("ConfigMap {name}"),
                data,
                source.optional == Some(true),
                &source.items,
            ))
        } else {
            None
        };
        let local = if let Some((object, data, optional, items)) = source {
            let local = folder(&volume.name, false).with_context(what)?;
            files.extend(
                volume_files(&local.path, &object, data, optional, items).with_context(what)?,
            );
            local
        } else if volume.empty_dir.is_some() {
            folder(&volume.name, false).with_context(what)?
        } else if volume.persistent_volume_claim.is_some() {
            folder(&volume.name, true).with_context(what)?
        } else {
            bail!(
                "{}: only secret, configMap, emptyDir and persistentVolumeClaim volumes can run \
                 locally",
                what()
            );
        };
        folders.push(local);
    }
    for name in &pod.claims {
        if !folders.iter().any(|f| f.volume == *name) {
            folders.push(folder(name, true).with_context(|| format!("claim {name}"))?);
        }
    }
    Ok((folders, files))
}

/// The files in `folder` of a volume of `object` (`data`, `None` when it does not exist),
/// honouring `items` as the kubelet does.
fn volume_files(
    folder: &Path,
    object: &str,
    data: Option<BTreeMap<String, Vec<u8>>>,
    optional: bool,
    items: &Option<Vec<KeyToPath>>,
) -> Result<Vec<LocalFile>> {
    let data = match data {
        Some(data) => data,
        None if optional => BTreeMap::new(),
        None => bail!("no {object}"),
    };
    let items: Vec<(String, String)> = match items {
        Some(items) => items
            .iter()
            .map(|i| (i.key.clone(), i.path.clone()))
            .collect(),
        None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
    };
    let mut files = Vec::new();
    for (key, path) in items {
        let contents = match data.get(&key) {
            Some(contents) => contents.clone(),
            None if optional => continue,
            None => bail!("{object} has no key {key}"),
        };
        files.push(LocalFile {
            path: folder.join(relative(&path)?),
            contents,
        });
    }
    Ok(files)
}

fn config_map_data(config_map: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = config_map
        .binary_data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in config_map.data.iter().flatten() {
        data.insert(k.clone(), v.clone().into_bytes());
    }
    data
}

fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in secret.string_data.iter().flatten() {
        data.insert(k.clone(), v.clone().into_bytes());
    }
    data
}

/// `path` if it is relative and stays below the folder it is joined to.
fn relative(path: &str) -> Result<&Path> {
    let p = Path::new(path);
    ensure!(
        !path.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_))),
        "{path:?} is not a relative path below its folder"
    );
    Ok(p)
}

fn process(
    container: &Container,
    rewrite: &Rewrite<'_>,
    pod: &LocalPod<'_>,
) -> Result<LocalProcess> {
    let what = || format!("container {}", container.name);
    ensure!(
        container.env_from.as_ref().is_none_or(Vec::is_empty),
        "{}: envFrom is not supported",
        what()
    );
    let command = container.command.as_deref().unwrap_or_default();
    let binary = command
        .first()
        .and_then(|c| Path::new(c).file_name())
        .with_context(|| format!("{}: no command (the image's entrypoint is unknown)", what()))?
        .to_string_lossy()
        .into_owned();

    let mut env: Vec<(String, String)> = Vec::new();
    for var in container.env.iter().flatten() {
        let value = if let Some(value) = &var.value {
            expand(&rewrite.text(value, true), &env)
        } else if let Some(from) = &var.value_from {
            let field = from.field_ref.as_ref().with_context(|| {
                format!("{}: env {}: only fieldRef is supported", what(), var.name)
            })?;
            match field.field_path.as_str() {
                "metadata.name" => pod.name.clone(),
                "metadata.namespace" => pod.namespace.clone(),
                "spec.serviceAccountName" => {
                    pod.spec.service_account_name.clone().unwrap_or_default()
                }
                "status.podIP" | "status.podIPs" | "status.hostIP" | "status.hostIPs" => {
                    POD_IP.to_owned()
                }
                other => bail!(
                    "{}: env {}: fieldRef {other} is not supported",
                    what(),
                    var.name
                ),
            }
        } else {
            String::new()
        };
        env.retain(|(name, _)| *name != var.name);
        env.push((var.name.clone(), value));
    }

    let args = command[1..]
        .iter()
        .chain(container.args.iter().flatten())
        .map(|arg| expand(&rewrite.text(arg, true), &env))
        .collect();
    let working_dir = match container.working_dir.as_deref().filter(|d| !d.is_empty()) {
        None => None,
        Some(dir) => {
            let local = rewrite.text(dir, false);
            ensure!(local != dir, "{}: workingDir {dir} is in no volume", what());
            Some(PathBuf::from(local))
        }
    };
    Ok(LocalProcess {
        container: container.name.clone(),
        binary,
        args,
        env,
        working_dir,
    })
}

/// Expands `$(NAME)` from `env` as the kubelet does: `$$` is a literal `$`, and a reference to
/// an unknown name stays as it is.
pub fn expand(input: &str, env: &[(String, String)]) -> String {
    let bytes = input.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' || i + 1 == bytes.len() {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes[i + 1] {
            b'$' => {
                out.push(b'$');
                i += 2;
            }
            b'(' => match bytes[i + 2..].iter().position(|b| *b == b')') {
                Some(len) => {
                    let name = &input[i + 2..i + 2 + len];
                    match env.iter().rev().find(|(n, _)| n == name) {
                        Some((_, value)) => out.extend_from_slice(value.as_bytes()),
                        None => out.extend_from_slice(&bytes[i..i + 3 + len]),
                    }
                    i += 3 + len;
                }
                None => {
                    out.extend_from_slice(b"$(");
                    i += 2;
                }
            },
            _ => {
                out.push(b'$');
                i += 1;
            }
        }
    }
    String::from_utf8(out).expect("only whole UTF-8 sequences are copied")
}

/// Replaces mount paths by local folders, Service addresses by local ones and ports by local
/// ports in text.
struct Rewrite<'a> {
    /// Container path and local folder, longest container path first.
    mounts: Vec<(String, String)>,
    /// Service address and local address, longest first.
    services: Vec<(&'a str, &'a str)>,
    ports: &'a BTreeMap<u16, u16>,
}

impl<'a> Rewrite<'a> {
    fn new(mut mounts: Vec<(String, String)>, addresses: &'a Addresses) -> Self {
        mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        let mut services: Vec<_> = addresses
            .services
            .iter()
            .map(|(service, local)| (service.as_str(), local.as_str()))
            .collect();
        services.sort_by_key(|(service, _)| std::cmp::Reverse(service.len()));
        Self {
            mounts,
            services,
            ports: &addresses.ports,
        }
    }

    /// A mount path counts where it stands as a whole path (`--data-dir=/var/lib/etcd/data`,
    /// not `/opt/var/lib/etcd`); a Service address where it stands as a whole `host:port`
    /// (`https://demo.ns.svc:443/x`, not `other-demo.ns.svc:443` or `demo.ns.svc:4430`); a port
    /// where it is a whole number after `:` or `=` (`127.0.0.1:2379`, `--secure-port=6443`),
    /// or, in an argument (`whole_port`), the whole text. Base64 holds neither `:` nor `=`
    /// before a digit, so certificates stay intact.
    fn text(&self, text: &str, whole_port: bool) -> String {
        if whole_port
            && let Ok(port) = text.parse::<u16>()
            && let Some(local) = self.ports.get(&port)
            && !text.starts_with(['+', '0'])
        {
            return local.to_string();
        }
        let is_path_char = |c: char| c.is_ascii_alphanumeric() || "._-/~".contains(c);
        let is_name_char = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        let mut prev: Option<char> = None;
        'scan: while let Some(c) = rest.chars().next() {
            if prev.is_none_or(|p| !is_path_char(p)) {
                for (path, local) in &self.mounts {
                    if let Some(after) = rest.strip_prefix(path.as_str())
                        && after
                            .chars()
                            .next()
                            .is_none_or(|n| n == '/' || !is_name_char(n))
                    {
                        out.push_str(local);
                        prev = path.chars().last();
                        rest = after;
                        continue 'scan;
                    }
                }
            }
            if prev.is_none_or(|p| !is_name_char(p)) {
                for (service, local) in &self.services {
                    if let Some(after) = rest.strip_prefix(service)
                        && after.chars().next().is_none_or(|n| !n.is_ascii_digit())
                    {
                        out.push_str(local);
                        prev = local.chars().last();
                        rest = after;
                        continue 'scan;
                    }
                }
            }
            if matches!(prev, Some(':' | '=')) && c.is_ascii_digit() {
                let len = rest
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(rest.len());
                let digits = &rest[..len];
                match digits.parse::<u16>().ok().and_then(|p| self.ports.get(&p)) {
                    Some(local) if !digits.starts_with('0') => out.push_str(&local.to_string()),
                    _ => out.push_str(digits),
                }
                prev = digits.chars().last();
                rest = &rest[len..];
                continue;
            }
            out.push(c);
            prev = Some(c);
            rest = &rest[c.len_utf8()..];
        }
        out
    }
}

/// The kubeconfig `config` with the server of every cluster set to `server`; credentials and
/// CA stay.
pub fn local_kubeconfig(config: &[u8], server: &str) -> Result<String> {
    let mut doc: serde_yaml::Value =
        serde_yaml::from_slice(config).context("parsing the kubeconfig")?;
    let clusters = doc
        .get_mut("clusters")
        .and_then(|c| c.as_sequence_mut())
        .filter(|c| !c.is_empty())
        .context("the kubeconfig has no clusters")?;
    for entry in clusters {
        let cluster = entry
            .get_mut("cluster")
            .and_then(|c| c.as_mapping_mut())
            .context("a kubeconfig cluster entry has no `cluster`")?;
        cluster.insert("server".into(), server.into());
    }
    Ok(serde_yaml::to_string(&doc)?)
}

#[cfg(test)]
mod tests;
