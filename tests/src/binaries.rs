//! Builds the control plane binaries from the pinned Go modules in `tests/binaries/`, once per
//! set of pins, into a shared cache folder.

use std::fs;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// Bump whenever the way the binaries are built changes (flags, outputs), so caches from an
/// older recipe are not reused.
pub const RECIPE_VERSION: &str = "1";

/// Every file a bin folder must hold before it is used.
pub const BINARIES: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
];

/// kwok's default node and pod stages (kwokctl embeds them; the bare kwok binary needs them
/// as `--config`), copied from the pinned kwok source next to the binaries at build time.
pub const KWOK_STAGES_FILE: &str = "kwok-stages.yaml";

/// The CustomResourceDefinitions of kwok's per-pod logs, attach, exec and port-forward rules,
/// copied from the pinned kwok source like its stages. A bin folder built before they were
/// copied gets them on first use (see [`ensure_kwok_crds`]).
pub const KWOK_CRDS_FILE: &str = "kwok-crds.yaml";
const KWOK_CRD_FILES: &[&str] = &[
    "kustomize/crd/bases/kwok.x-k8s.io_logs.yaml",
    "kustomize/crd/bases/kwok.x-k8s.io_attaches.yaml",
    "kustomize/crd/bases/kwok.x-k8s.io_execs.yaml",
    "kustomize/crd/bases/kwok.x-k8s.io_portforwards.yaml",
];

const COMPLETE_MARKER: &str = ".complete";
const MODULES: &[&str] = &["kubernetes", "etcd", "kwok"];
const KWOK_STAGE_FILES: &[&str] = &[
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
];

/// `tests/binaries`, holding one Go module per upstream project.
pub fn modules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("binaries")
}

/// The version of `module` that `tests/binaries/<folder>/go.mod` requires.
pub fn required_version(folder: &str, module: &str) -> Result<String> {
    let path = modules_dir().join(folder).join("go.mod");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse_required_version(&text, module)
        .with_context(|| format!("{} does not require {module}", path.display()))
}

fn parse_required_version(go_mod: &str, module: &str) -> Option<String> {
    let mut in_require_block = false;
    for line in go_mod.lines() {
        let line = line.split("//").next().unwrap_or_default().trim();
        let spec = if in_require_block {
            if line == ")" {
                in_require_block = false;
                continue;
            }
            line
        } else if let Some(rest) = line.strip_prefix("require") {
            let rest = rest.trim();
            if rest == "(" {
                in_require_block = true;
                continue;
            }
            rest
        } else {
            continue;
        };
        let mut words = spec.split_whitespace();
        if words.next() == Some(module) {
            return words.next().map(str::to_owned);
        }
    }
    None
}

/// The Kubernetes release the binaries are built from, e.g. `v1.37.2`.
pub fn kubernetes_version() -> Result<String> {
    required_version("kubernetes", "k8s.io/kubernetes")
}

/// `$VIRTUALCLUSTER_CACHE_DIR`, else `$XDG_CACHE_HOME/virtualcluster-operator`, else
/// `$HOME/.cache/virtualcluster-operator`.
pub fn cache_dir() -> Result<PathBuf> {
    let env = |name| std::env::var_os(name).filter(|value| !value.is_empty());
    if let Some(dir) = env("VIRTUALCLUSTER_CACHE_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = env("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(dir).join("virtualcluster-operator"));
    }
    let home =
        env("HOME").context("none of VIRTUALCLUSTER_CACHE_DIR, XDG_CACHE_HOME, HOME is set")?;
    Ok(PathBuf::from(home).join(".cache/virtualcluster-operator"))
}

/// The folder the current pins build into: `<cache>/bin/k8s-<version>-<hash of the pins>`.
pub fn pinned_bin_dir() -> Result<PathBuf> {
    let mut hasher = Sha256::new();
    hasher.update(RECIPE_VERSION.as_bytes());
    for module in MODULES {
        for file in ["go.mod", "go.sum"] {
            let path = modules_dir().join(module).join(file);
            let data = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            // Lengths and names keep the concatenation unambiguous.
            hasher.update(format!("{module}/{file}:{}\n", data.len()).as_bytes());
            hasher.update(&data);
        }
    }
    let hash = hex::encode(hasher.finalize());
    Ok(cache_dir()?
        .join("bin")
        .join(format!("k8s-{}-{}", kubernetes_version()?, &hash[..12])))
}

/// The folder holding all binaries: `$VIRTUALCLUSTER_BIN_DIR` as is, else the cache folder for
/// the current pins, built first if needed.
pub fn ensure() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("VIRTUALCLUSTER_BIN_DIR").filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        ensure_kwok_crds(&dir)?;
        verify(&dir).context("VIRTUALCLUSTER_BIN_DIR is set but incomplete")?;
        return Ok(dir);
    }
    let dir = pinned_bin_dir()?;
    if !dir.join(COMPLETE_MARKER).exists() {
        let parent = dir.parent().expect("bin dir has a parent");
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        // Serialise builders (parallel test binaries, a concurrent `local-cluster build`): the
        // second one waits, then finds the folder complete instead of building it again.
        let _lock = FileLock::acquire(&dir.with_extension("lock"))?;
        if !dir.join(COMPLETE_MARKER).exists() {
            build_into(&dir)?;
        }
    }
    ensure_kwok_crds(&dir)?;
    ensure_helm(&dir)?;
    Ok(dir)
}

/// Helm (for the chart's tests), built from `tests/binaries/helm` into the same folder as the
/// control plane. Its pins are not part of the folder's name, so changing them rebuilds only
/// helm: a marker `.helm-<hash of its pins>` says which pins `dir/helm` was built from.
pub const HELM: &str = "helm";
const HELM_MODULE: &str = "helm";
const HELM_GO_MODULE: &str = "helm.sh/helm/v4";

/// `dir/helm`, built first when it is missing or from other pins. A helm already in the folder
/// that `VIRTUALCLUSTER_BIN_DIR` names is used as it is, like the other binaries there.
pub fn ensure_helm(dir: &Path) -> Result<PathBuf> {
    let helm = dir.join(HELM);
    let given = std::env::var_os("VIRTUALCLUSTER_BIN_DIR")
        .filter(|v| !v.is_empty())
        .is_some_and(|given| Path::new(&given) == dir);
    let marker = dir.join(format!(".helm-{}", helm_pins_hash()?));
    let done = || helm.is_file() && (given || marker.exists());
    if done() {
        return Ok(helm);
    }
    let _lock = FileLock::acquire(&dir.join(".helm.lock"))?;
    if done() {
        return Ok(helm);
    }
    let go = which_go()?;
    let version = required_version(HELM_MODULE, HELM_GO_MODULE)?;
    let tmp = dir.join(format!(".helm-build-{}", std::process::id()));
    let built = go_build(
        &go,
        HELM_MODULE,
        &[
            "-s".into(),
            "-w".into(),
            format!("-X {HELM_GO_MODULE}/internal/version.version={version}"),
            format!("-X {HELM_GO_MODULE}/internal/version.gitTreeState=clean"),
        ],
        &["helm.sh/helm/v4/cmd/helm"],
        &tmp.to_string_lossy(),
    )
    .and_then(|()| {
        fs::rename(&tmp, &helm).with_context(|| format!("moving helm into {}", dir.display()))
    });
    if let Err(err) = built {
        let _ = fs::remove_file(&tmp);
        return Err(err);
    }
    // Markers of earlier pins go, so that only the current one says the binary is current.
    for entry in fs::read_dir(dir)?.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".helm-") && !name.starts_with(".helm-build-") {
            let _ = fs::remove_file(entry.path());
        }
    }
    fs::write(&marker, format!("{HELM_GO_MODULE} {version}\n"))?;
    Ok(helm)
}

fn helm_pins_hash() -> Result<String> {
    let mut hasher = Sha256::new();
    hasher.update(RECIPE_VERSION.as_bytes());
    for file in ["go.mod", "go.sum"] {
        let path = modules_dir().join(HELM_MODULE).join(file);
        let data = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        hasher.update(format!("{file}:{}\n", data.len()).as_bytes());
        hasher.update(&data);
    }
    Ok(hex::encode(&hasher.finalize()[..6]))
}

/// `dir/kwok-crds.yaml`, copied from kwok's source first when missing.
pub fn ensure_kwok_crds(dir: &Path) -> Result<()> {
    let done = || dir.join(KWOK_CRDS_FILE).is_file();
    if done() {
        return Ok(());
    }
    let _lock = FileLock::acquire(&dir.join(".kwok-crds.lock"))?;
    if done() {
        return Ok(());
    }
    copy_kwok_sources(&which_go()?, dir, KWOK_CRD_FILES, KWOK_CRDS_FILE)
}

/// Checks that every binary (and kwok's stages and CRDs) is in `dir`.
pub fn verify(dir: &Path) -> Result<()> {
    let missing: Vec<_> = BINARIES
        .iter()
        .chain([&KWOK_STAGES_FILE, &KWOK_CRDS_FILE])
        .filter(|name| !dir.join(name).is_file())
        .collect();
    if !missing.is_empty() {
        bail!("{} lacks {missing:?}", dir.display());
    }
    Ok(())
}

fn build_into(dir: &Path) -> Result<()> {
    let go = which_go()?;
    let tmp = dir.with_file_name(format!(
        ".tmp-{}-{}",
        dir.file_name().unwrap().to_string_lossy(),
        std::process::id()
    ));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp)?;
    let result = (|| {
        let started = Instant::now();
        let k8s = kubernetes_version()?;
        let (major, minor) = major_minor(&k8s)?;
        let mut k8s_ldflags = vec!["-s".to_owned(), "-w".to_owned()];
        for pkg in [
            "k8s.io/component-base/version",
            "k8s.io/client-go/pkg/version",
        ] {
            for (var, value) in [
                ("gitVersion", k8s.as_str()),
                ("gitMajor", major),
                ("gitMinor", minor),
                ("gitTreeState", "clean"),
                ("buildDate", "1970-01-01T00:00:00Z"),
            ] {
                k8s_ldflags.push(format!("-X {pkg}.{var}={value}"));
            }
        }
        go_build(
            &go,
            "kubernetes",
            &k8s_ldflags,
            &[
                "k8s.io/kubernetes/cmd/kube-apiserver",
                "k8s.io/kubernetes/cmd/kube-controller-manager",
                "k8s.io/kubernetes/cmd/kube-scheduler",
                "k8s.io/kubernetes/cmd/kubectl",
            ],
            &format!("{}/", tmp.display()),
        )?;
        go_build(
            &go,
            "etcd",
            &["-s".into(), "-w".into()],
            // The server module's root package is etcd's main.
            &["go.etcd.io/etcd/server/v3"],
            &tmp.join("etcd").to_string_lossy(),
        )?;
        let kwok = required_version("kwok", "sigs.k8s.io/kwok")?;
        go_build(
            &go,
            "kwok",
            &[
                "-s".into(),
                "-w".into(),
                format!("-X sigs.k8s.io/kwok/pkg/consts.Version={kwok}"),
            ],
            &["sigs.k8s.io/kwok/cmd/kwok"],
            &tmp.join("kwok").to_string_lossy(),
        )?;
        copy_kwok_sources(&go, &tmp, KWOK_STAGE_FILES, KWOK_STAGES_FILE)?;
        copy_kwok_sources(&go, &tmp, KWOK_CRD_FILES, KWOK_CRDS_FILE)?;
        verify(&tmp)?;
        fs::write(
            tmp.join(COMPLETE_MARKER),
            format!("recipe {RECIPE_VERSION}\n"),
        )?;
        eprintln!(
            "local-cluster: built all binaries in {:.0?} into {}",
            started.elapsed(),
            dir.display()
        );
        Ok(())
    })();
    if let Err(err) = result {
        let _ = fs::remove_dir_all(&tmp);
        return Err(err);
    }
    // An incomplete leftover (from an older, interrupted layout) would block the rename.
    if dir.exists() && !dir.join(COMPLETE_MARKER).exists() {
        fs::remove_dir_all(dir)?;
    }
    if let Err(err) = fs::rename(&tmp, dir) {
        let _ = fs::remove_dir_all(&tmp);
        if !dir.join(COMPLETE_MARKER).exists() {
            return Err(err).with_context(|| format!("moving binaries into {}", dir.display()));
        }
    }
    Ok(())
}

fn major_minor(version: &str) -> Result<(&str, &str)> {
    let mut parts = version.trim_start_matches('v').split('.');
    match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) => Ok((major, minor)),
        _ => bail!("cannot parse Kubernetes version {version:?}"),
    }
}

fn which_go() -> Result<PathBuf> {
    let go = std::env::var_os("GO")
        .map(PathBuf::from)
        .unwrap_or_else(|| "go".into());
    match Command::new(&go).arg("version").output() {
        Ok(out) if out.status.success() => Ok(go),
        Ok(out) => bail!(
            "`{} version` failed: {}",
            go.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(err) => bail!(
            "building the control plane binaries needs Go (`go` on PATH, see tests/binaries/*/go.mod \
             for the version), or set VIRTUALCLUSTER_BIN_DIR to a folder holding {BINARIES:?}: \
             cannot run `{}`: {err}",
            go.display()
        ),
    }
}

fn go_command(go: &Path, module: &str) -> Command {
    let mut cmd = Command::new(go);
    cmd.current_dir(modules_dir().join(module))
        // A go.work further up must not change which versions are built.
        .env("GOWORK", "off")
        .stdin(Stdio::null());
    cmd
}

fn go_build(
    go: &Path,
    module: &str,
    ldflags: &[String],
    packages: &[&str],
    out: &str,
) -> Result<()> {
    eprintln!("local-cluster: building {} with go ...", packages.join(" "));
    let started = Instant::now();
    // go writes progress and errors to stderr; its stdout goes there too so that the caller's
    // stdout stays reserved for results.
    let stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
    let status = go_command(go, module)
        .args([
            "build",
            "-trimpath",
            "-ldflags",
            &ldflags.join(" "),
            "-o",
            out,
        ])
        .args(packages)
        .stdout(Stdio::from(stderr))
        .status()
        .with_context(|| format!("running {}", go.display()))?;
    if !status.success() {
        bail!(
            "`go build` of {module} in {} failed ({status}); its output is above",
            modules_dir().join(module).display()
        );
    }
    eprintln!("local-cluster: built {module} in {:.0?}", started.elapsed());
    Ok(())
}

/// Writes `files` of the pinned kwok source, as one YAML stream, to `out_dir/name`.
fn copy_kwok_sources(go: &Path, out_dir: &Path, files: &[&str], name: &str) -> Result<()> {
    let out = go_command(go, "kwok")
        .args(["list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/kwok"])
        .stderr(Stdio::inherit())
        .output()
        .context("locating kwok's source with `go list -m`")?;
    if !out.status.success() {
        bail!("`go list -m sigs.k8s.io/kwok` failed ({})", out.status);
    }
    let source = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    let mut stream = String::new();
    for file in files {
        let path = source.join(file);
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        stream.push_str("---\n");
        stream.push_str(text.trim_end());
        stream.push('\n');
    }
    // Written whole or not at all: a reader never finds half a file.
    let tmp = out_dir.join(format!(".{name}.{}", std::process::id()));
    fs::write(&tmp, stream)?;
    fs::rename(&tmp, out_dir.join(name))?;
    Ok(())
}

/// An exclusive `flock` held until dropped.
pub(crate) struct FileLock {
    _file: fs::File,
}

impl FileLock {
    pub(crate) fn acquire(path: &Path) -> Result<Self> {
        use std::os::fd::AsRawFd;
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            eprintln!(
                "local-cluster: waiting for another process holding {}",
                path.display()
            );
            let _ = std::io::stderr().flush();
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("locking {}", path.display()));
            }
        }
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_required_versions() {
        let go_mod = "module x\n\nrequire k8s.io/api v0.37.2\n\nrequire (\n\tk8s.io/kubernetes v1.37.2 // indirect\n\tk8s.io/kubernetes-extra v9\n)\nreplace k8s.io/missing => k8s.io/missing v1\n";
        assert_eq!(
            parse_required_version(go_mod, "k8s.io/kubernetes").as_deref(),
            Some("v1.37.2")
        );
        assert_eq!(
            parse_required_version(go_mod, "k8s.io/api").as_deref(),
            Some("v0.37.2")
        );
        assert_eq!(parse_required_version(go_mod, "k8s.io/missing"), None);
    }

    #[test]
    fn helm_is_pinned_apart_from_the_control_plane() {
        let version = required_version(HELM_MODULE, HELM_GO_MODULE).unwrap();
        assert!(version.starts_with("v4."), "{version}");
        // The control plane's folder does not depend on helm's pins.
        assert!(!MODULES.contains(&HELM_MODULE));
        assert_eq!(helm_pins_hash().unwrap().len(), 12);
    }

    #[test]
    fn reads_the_pinned_kubernetes_version() {
        let version = kubernetes_version().unwrap();
        assert!(version.starts_with("v1."), "{version}");
        assert_eq!(major_minor(&version).unwrap().0, "1");
    }
}
