//! Patches (vcluster.yaml `patches`): changes made to each object of a kind as it is synced. The
//! operator compiles them when it validates a VirtualCluster, so one that cannot be parsed or
//! compiled is refused there (`ConfigValid=False`); the syncer compiles the same configuration
//! once at start and applies them to every object.
//!
//! On the way to the host, patches run on the translated host object, in their order, before
//! the syncer holds it to the instance's rules (references, Pod Security): a patch can never
//! make an object the syncer would refuse. The copy's name, namespace and the instance's marks
//! are the syncer's and no path may name them. On the way back, `reverseExpression`s run on the
//! host object before anything of it (its status) reaches the virtual object.

pub mod engine;
pub mod path;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use serde_json::Value;

use self::engine::{Engine, ExpressionId, Objects, Session};
use self::path::{Path, Segment};
use crate::v1alpha1::{Patch, Sync};

/// Kinds a reference patch may name (all `v1`, all renamed the same way on the host).
pub const REFERENCE_KINDS: &[&str] = &[
    "ConfigMap",
    "Secret",
    "Service",
    "PersistentVolumeClaim",
    "ServiceAccount",
];

/// Fields of an object that no patch may change: the copy's identity and the instance's marks.
const PROTECTED: &[&str] = &[
    "apiVersion",
    "kind",
    "name",
    "namespace",
    "generateName",
    "uid",
    "resourceVersion",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// The sections of `spec.sync` that take patches, by their place under `spec.sync`.
pub fn sections(sync: &Sync) -> Vec<(String, &[Patch])> {
    let (to, from) = (&sync.to_host, &sync.from_host);
    let built_in: [(&str, &[Patch]); 12] = [
        ("toHost.pods", &to.pods.patches),
        ("toHost.services", &to.services.patches),
        ("toHost.configMaps", &to.config_maps.patches),
        ("toHost.secrets", &to.secrets.patches),
        (
            "toHost.persistentVolumeClaims",
            &to.persistent_volume_claims.patches,
        ),
        ("toHost.serviceAccounts", &to.service_accounts.patches),
        ("toHost.ingresses", &to.ingresses.patches),
        ("toHost.networkPolicies", &to.network_policies.patches),
        (
            "toHost.podDisruptionBudgets",
            &to.pod_disruption_budgets.patches,
        ),
        ("toHost.priorityClasses", &to.priority_classes.patches),
        ("fromHost.storageClasses", &from.storage_classes.patches),
        ("fromHost.ingressClasses", &from.ingress_classes.patches),
    ];
    let custom_to = to.custom_resources.iter().map(|(resource, c)| {
        (
            format!("toHost.{}", crate::kinds::custom_section(resource)),
            c.patches.as_slice(),
        )
    });
    let custom_from = from.custom_resources.iter().map(|(resource, c)| {
        (
            format!("fromHost.{}", crate::kinds::custom_section(resource)),
            c.patches.as_slice(),
        )
    });
    built_in
        .into_iter()
        .map(|(section, patches)| (section.to_owned(), patches))
        .chain(custom_to)
        .chain(custom_from)
        .collect()
}

/// Whether the objects of `section` are namespaced and go to the host, where a reference patch
/// names an object of the same virtual cluster (every custom resource synced to the host is
/// namespaced).
fn namespaced_to_host(section: &str) -> bool {
    const BUILT_IN: &[&str] = &[
        "toHost.pods",
        "toHost.services",
        "toHost.configMaps",
        "toHost.secrets",
        "toHost.persistentVolumeClaims",
        "toHost.serviceAccounts",
        "toHost.ingresses",
        "toHost.networkPolicies",
        "toHost.podDisruptionBudgets",
    ];
    BUILT_IN.contains(&section) || section.starts_with("toHost.customResources[")
}

/// A patch that cannot be compiled, or did not apply to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchError {
    /// The section under `spec.sync`, e.g. `toHost.pods`.
    pub section: String,
    /// Which patch; `None` when the patches together made an object that is not valid.
    pub index: Option<usize>,
    pub message: String,
}

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(index) => write!(
                f,
                "spec.sync.{}.patches[{index}]: {}",
                self.section, self.message
            ),
            None => write!(f, "spec.sync.{}.patches: {}", self.section, self.message),
        }
    }
}

impl std::error::Error for PatchError {}

/// What a reference patch names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub kind: String,
    /// The referenced object's virtual namespace.
    pub namespace: String,
    pub name: String,
}

#[derive(Debug)]
struct Compiled {
    index: usize,
    path: Path,
    expression: Option<ExpressionId>,
    reverse: Option<ExpressionId>,
    reference: Option<CompiledReference>,
}

#[derive(Debug)]
struct CompiledReference {
    kind: String,
    namespace_path: Option<Path>,
}

/// What expressions see of one object besides `value`: the virtual object and the host object
/// (`null` when there is none). `context.vcluster` is the configuration's (see
/// [`Patches::compile_for`]).
pub struct Scope<'a> {
    /// The virtual object's namespace (empty for a cluster-scoped kind): where a reference
    /// without `namespacePath` points.
    pub namespace: &'a str,
    pub virtual_object: Option<&'a Value>,
    pub host_object: Option<&'a Value>,
}

impl Scope<'_> {
    fn objects(&self) -> Objects<'_> {
        Objects {
            virtual_object: self.virtual_object,
            host_object: self.host_object,
        }
    }
}

/// The compiled patches of one configuration.
#[derive(Debug, Default)]
pub struct Patches {
    engine: Option<Mutex<Engine>>,
    by_section: BTreeMap<String, Vec<Compiled>>,
    /// Whether any expression names `virtualObject` / `hostObject`: converting whole objects
    /// for expressions that never read them is most of what patches cost.
    reads_virtual_object: bool,
    reads_host_object: bool,
}

/// How the syncer renames what a reference patch names: `(host namespace, host name)`, or
/// `None` where the namespace is not synced.
pub type Rename<'a> = &'a dyn Fn(&Reference) -> Option<(String, String)>;

impl Patches {
    /// Compiles every patch of `sync`; the first that does not compile is the error.
    /// Expressions see `null` for `context.vcluster` (enough to check them).
    pub fn compile(sync: &Sync) -> Result<Self, PatchError> {
        Self::compile_for(sync, Value::Null)
    }

    /// [`Patches::compile`], with `vcluster` (`{name, namespace, config}` of the instance) for
    /// `context.vcluster`.
    pub fn compile_for(sync: &Sync, vcluster: Value) -> Result<Self, PatchError> {
        let mut sources = Vec::new();
        let mut by_section = BTreeMap::new();
        for (section, patches) in sections(sync) {
            let mut compiled = Vec::new();
            for (index, patch) in patches.iter().enumerate() {
                let err = |message: String| PatchError {
                    section: section.clone(),
                    index: Some(index),
                    message,
                };
                let path = parse(&patch.path).map_err(&err)?;
                let mut expression = |source: &Option<String>| {
                    source.as_ref().map(|s| {
                        sources.push((section.clone(), index, s.clone()));
                        ExpressionId(sources.len() - 1)
                    })
                };
                let reference = match &patch.reference {
                    Some(_) if !namespaced_to_host(&section) => {
                        return Err(err(
                            "a reference patch applies to the namespaced kinds synced to the \
                             host only"
                                .into(),
                        ));
                    }
                    Some(r) => Some(CompiledReference {
                        kind: r.kind.clone(),
                        namespace_path: r
                            .namespace_path
                            .as_deref()
                            .map(parse)
                            .transpose()
                            .map_err(|e| err(format!("namespacePath: {e}")))?,
                    }),
                    None => None,
                };
                compiled.push(Compiled {
                    index,
                    path,
                    expression: expression(&patch.expression),
                    reverse: expression(&patch.reverse_expression),
                    reference,
                });
            }
            if !compiled.is_empty() {
                by_section.insert(section, compiled);
            }
        }
        let engine = match sources.is_empty() {
            true => None,
            false => {
                let texts = sources.iter().map(|(_, _, s)| s.clone()).collect();
                let engine = Engine::with_vcluster(texts, vcluster).map_err(|(at, e)| {
                    let (section, index, _) = &sources[at];
                    PatchError {
                        section: section.clone(),
                        index: Some(*index),
                        message: e.to_string(),
                    }
                })?;
                Some(Mutex::new(engine))
            }
        };
        let names = |field: &str| sources.iter().any(|(_, _, s)| s.contains(field));
        Ok(Self {
            reads_virtual_object: names("virtualObject"),
            reads_host_object: names("hostObject"),
            engine,
            by_section,
        })
    }

    /// Whether an expression names `context.virtualObject` (else it is `null`).
    pub fn reads_virtual_object(&self) -> bool {
        self.reads_virtual_object
    }

    /// Whether an expression names `context.hostObject` (else it is `null`).
    pub fn reads_host_object(&self) -> bool {
        self.reads_host_object
    }

    /// Whether `section` has patches.
    pub fn has(&self, section: &str) -> bool {
        self.by_section.contains_key(section)
    }

    /// Whether `section` has reverse expressions.
    pub fn has_reverse(&self, section: &str) -> bool {
        self.by_section
            .get(section)
            .is_some_and(|p| p.iter().any(|c| c.reverse.is_some()))
    }

    /// Whether a patch of `section` (with `reverse`, a reverse expression) changes a field
    /// under top-level field `root` (`metadata`, `status`): the rest need not run where only
    /// that part of an object is written or read back.
    pub fn touches(&self, section: &str, root: &str, reverse: bool) -> bool {
        self.by_section.get(section).is_some_and(|patches| {
            patches.iter().any(|p| {
                let acts = if reverse {
                    p.reverse.is_some()
                } else {
                    p.expression.is_some() || p.reference.is_some()
                };
                acts && matches!(p.path.0.first(), Some(Segment::Key(k)) if k == root)
            })
        })
    }

    /// Whether `section` has reference patches.
    pub fn has_references(&self, section: &str) -> bool {
        self.by_section
            .get(section)
            .is_some_and(|p| p.iter().any(|c| c.reference.is_some()))
    }

    /// The top-level fields (`metadata`, `spec`) the reference patches of `section` read:
    /// the rest of an object need not be converted to find what they name.
    pub fn reference_roots(&self, section: &str) -> Vec<&str> {
        let mut roots: Vec<&str> = Vec::new();
        for patch in self.by_section.get(section).into_iter().flatten() {
            let Some(reference) = &patch.reference else {
                continue;
            };
            for path in std::iter::once(&patch.path).chain(reference.namespace_path.as_ref()) {
                if let Some(Segment::Key(root)) = path.0.first()
                    && !roots.contains(&root.as_str())
                {
                    roots.push(root);
                }
            }
        }
        roots
    }

    /// What the reference patches of `section` name in virtual object `object` (of virtual
    /// namespace `namespace`): the objects to sync with it.
    pub fn references(&self, section: &str, namespace: &str, object: &Value) -> Vec<Reference> {
        let mut out = Vec::new();
        for patch in self.by_section.get(section).into_iter().flatten() {
            let Some(reference) = &patch.reference else {
                continue;
            };
            for name in names_at(&patch.path, object) {
                let namespace = namespace_of(reference, object, namespace);
                out.push(Reference {
                    kind: reference.kind.clone(),
                    namespace,
                    name,
                });
            }
        }
        out
    }

    /// Applies the patches of `section` to host object `object`, on its way to the host (with
    /// `only_under`, those of that top-level field only). A patch that does not apply is left
    /// out and reported; the others still apply.
    pub fn apply(
        &self,
        section: &str,
        only_under: Option<&str>,
        object: &mut Value,
        scope: &Scope<'_>,
        rename: Rename<'_>,
    ) -> Vec<PatchError> {
        let Some(patches) = self.by_section.get(section) else {
            return Vec::new();
        };
        let patches: Vec<&Compiled> = patches
            .iter()
            .filter(|p| {
                only_under.is_none_or(
                    |root| matches!(p.path.0.first(), Some(Segment::Key(k)) if k == root),
                )
            })
            .collect();
        let namespace = scope.namespace;
        self.in_session(patches.iter().copied(), scope, |mut session| {
            let mut errors = Vec::new();
            for patch in &patches {
                let result = match (&patch.reference, patch.expression, session.as_deref_mut()) {
                    (Some(reference), _, _) => {
                        rewrite_reference(object, patch, reference, namespace, rename)
                    }
                    (None, Some(id), Some(session)) => evaluate(session, id, &patch.path, object),
                    _ => Ok(()),
                };
                if let Err(message) = result {
                    errors.push(error(section, patch, message));
                }
            }
            errors
        })
    }

    /// Applies the `reverseExpression`s of `section` to host object `object`, on its way back
    /// to the virtual object.
    pub fn reverse(&self, section: &str, object: &mut Value, scope: &Scope<'_>) -> Vec<PatchError> {
        let Some(patches) = self.by_section.get(section) else {
            return Vec::new();
        };
        self.in_session(patches.iter(), scope, |mut session| {
            let mut errors = Vec::new();
            for patch in patches {
                if let (Some(id), Some(session)) = (patch.reverse, session.as_deref_mut())
                    && let Err(message) = evaluate(session, id, &patch.path, object)
                {
                    errors.push(error(section, patch, message));
                }
            }
            errors
        })
    }

    /// Runs `f` in one engine session for all of `patches` (the context converted once), or
    /// without one when none of them has an expression.
    fn in_session<'p, R>(
        &self,
        mut patches: impl Iterator<Item = &'p Compiled>,
        scope: &Scope<'_>,
        f: impl FnOnce(Option<&mut Session<'_, '_>>) -> R,
    ) -> R {
        let expressions = patches.any(|p| p.expression.is_some() || p.reverse.is_some());
        match &self.engine {
            Some(engine) if expressions => {
                let mut engine = engine.lock().unwrap_or_else(|e| e.into_inner());
                engine.session(scope.objects(), |session| f(Some(session)))
            }
            _ => f(None),
        }
    }
}

fn error(section: &str, patch: &Compiled, message: String) -> PatchError {
    PatchError {
        section: section.into(),
        index: Some(patch.index),
        message,
    }
}

/// Sets every place `path` names in `object` to what expression `id` gives for it. Nothing is
/// written unless every place evaluated: a patch applies whole or not at all.
fn evaluate(
    session: &mut Session<'_, '_>,
    id: ExpressionId,
    path: &Path,
    object: &mut Value,
) -> Result<(), String> {
    let places = path.expand(object).map_err(|e| e.to_string())?;
    if places.is_empty() {
        return Ok(());
    }
    let inputs: Vec<(Option<&Value>, String)> = places
        .iter()
        .map(|p| (path::get(object, p), p.to_string()))
        .collect();
    let values = session
        .evaluate(id, &inputs)
        .into_iter()
        .zip(&places)
        .map(|(r, p)| r.map_err(|e| format!("{path}: at {p}: expression {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    for (place, value) in places.iter().zip(values) {
        path::set(object, place, value).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Parses a patch path and refuses one that names what the syncer owns.
fn parse(text: &str) -> Result<Path, String> {
    let path: Path = text.parse().map_err(|e: path::ParseError| e.to_string())?;
    let named = |i: usize| match path.0.get(i) {
        Some(Segment::Key(k)) => Some(k.as_str()),
        _ => None,
    };
    let protected = match (named(0), named(1)) {
        (Some("metadata"), Some(field)) => PROTECTED.contains(&field),
        (Some("metadata"), None) => true,
        (Some(field), _) => path.0.len() == 1 && PROTECTED.contains(&field),
        (None, _) => true,
    };
    if protected {
        return Err(format!(
            "path {text:?}: the object's name, namespace, kind and metadata bookkeeping are the \
             syncer's and cannot be patched"
        ));
    }
    Ok(path)
}

/// The string values at the places `path` names in `object`.
fn names_at(path: &Path, object: &Value) -> Vec<String> {
    path.expand(object)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| Some(path::get(object, p)?.as_str()?.to_owned()))
        .filter(|name| !name.is_empty())
        .collect()
}

fn namespace_of(reference: &CompiledReference, object: &Value, own: &str) -> String {
    reference
        .namespace_path
        .as_ref()
        .and_then(|p| names_at(p, object).into_iter().next())
        .unwrap_or_else(|| own.to_owned())
}

/// Rewrites the names (and namespace) a reference patch names in `object` to the host's.
fn rewrite_reference(
    object: &mut Value,
    patch: &Compiled,
    reference: &CompiledReference,
    namespace: &str,
    rename: Rename<'_>,
) -> Result<(), String> {
    let places = patch.path.expand(object).map_err(|e| e.to_string())?;
    let virtual_namespace = namespace_of(reference, object, namespace);
    let mut host_namespace = None;
    for place in places {
        let Some(value) = path::get(object, &place) else {
            continue;
        };
        let Some(name) = value.as_str().filter(|n| !n.is_empty()).map(str::to_owned) else {
            if value.is_null() {
                continue;
            }
            return Err(format!("{place}: not a name: {value}"));
        };
        let wanted = Reference {
            kind: reference.kind.clone(),
            namespace: virtual_namespace.clone(),
            name,
        };
        match rename(&wanted) {
            Some((ns, host_name)) => {
                path::set(object, &place, Some(Value::String(host_name)))
                    .map_err(|e| e.to_string())?;
                host_namespace = Some(ns);
            }
            None => {
                path::set(object, &place, None).map_err(|e| e.to_string())?;
                return Err(format!(
                    "{place}: names {} {}/{}, whose namespace is not synced; the field is left out",
                    wanted.kind, wanted.namespace, wanted.name
                ));
            }
        }
    }
    if let (Some(ns_path), Some(host_namespace)) = (&reference.namespace_path, host_namespace) {
        for place in ns_path.expand(object).map_err(|e| e.to_string())? {
            path::set(object, &place, Some(Value::String(host_namespace.clone())))
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::v1alpha1::PatchReference;

    fn patch(path: &str, expression: &str) -> Patch {
        Patch {
            path: path.into(),
            expression: Some(expression.into()),
            ..Default::default()
        }
    }

    fn pods(patches: Vec<Patch>) -> Sync {
        let mut sync = Sync::default();
        sync.to_host.pods.patches = patches;
        sync
    }

    /// What expressions see of an object of virtual namespace `team`.
    fn scope(virtual_object: Option<&Value>) -> Scope<'_> {
        Scope {
            namespace: "team",
            virtual_object,
            host_object: None,
        }
    }

    fn rename(r: &Reference) -> Option<(String, String)> {
        (r.namespace != "unsynced")
            .then(|| ("host-ns".into(), format!("{}-x-{}", r.name, r.namespace)))
    }

    #[test]
    fn the_documented_pod_patches_apply_in_order() {
        let patches = Patches::compile(&pods(vec![
            Patch {
                reverse_expression: Some("value.slice('my-prefix-'.length)".into()),
                ..patch("spec.containers[*].name", "'my-prefix-' + value")
            },
            patch(
                "metadata.labels[\"my-new-label\"]",
                "valueExists ? value + '-changed' : 'new-label-value'",
            ),
            patch(
                "metadata.labels[\"conditional-label\"]",
                "context.virtualObject.metadata?.labels?.['my-label'] ? 'my-value' : null",
            ),
            patch("metadata.annotations[\"encoded\"]", "btoa(value)"),
            Patch {
                path: "metadata.annotations[\"my-secret-ref\"]".into(),
                reference: Some(PatchReference {
                    api_version: "v1".into(),
                    kind: "Secret".into(),
                    namespace_path: None,
                }),
                ..Default::default()
            },
        ]))
        .unwrap();
        let virtual_pod = json!({
            "metadata": {"name": "p", "namespace": "team", "labels": {}, "annotations": {"encoded": "plain", "my-secret-ref": "db"}},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]}
        });
        let mut host = virtual_pod.clone();
        let scope = scope(Some(&virtual_pod));
        let errors = patches.apply("toHost.pods", None, &mut host, &scope, &rename);
        assert_eq!(errors, vec![]);
        assert_eq!(host["spec"]["containers"][0]["name"], "my-prefix-a");
        assert_eq!(host["spec"]["containers"][1]["name"], "my-prefix-b");
        assert_eq!(
            host["metadata"]["labels"]["my-new-label"],
            "new-label-value"
        );
        assert!(
            host["metadata"]["labels"]
                .get("conditional-label")
                .is_none()
        );
        assert_eq!(host["metadata"]["annotations"]["encoded"], "cGxhaW4=");
        assert_eq!(
            host["metadata"]["annotations"]["my-secret-ref"],
            "db-x-team"
        );
        assert_eq!(
            patches.references("toHost.pods", "team", &virtual_pod),
            vec![Reference {
                kind: "Secret".into(),
                namespace: "team".into(),
                name: "db".into()
            }]
        );
        let mut back = host.clone();
        assert_eq!(patches.reverse("toHost.pods", &mut back, &scope), vec![]);
        assert_eq!(back["spec"]["containers"][1]["name"], "b");
    }

    #[test]
    fn a_missing_parent_leaves_the_object_as_it_is_and_says_which_patch() {
        let patches = Patches::compile(&pods(vec![
            patch("spec.template.metadata.labels[\"x\"]", "'y'"),
            patch("metadata.labels[\"ok\"]", "'yes'"),
        ]))
        .unwrap();
        let mut host = json!({"metadata": {"labels": {}}, "spec": {}});
        let scope = scope(None);
        let errors = patches.apply("toHost.pods", None, &mut host, &scope, &rename);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].index, Some(0));
        assert!(
            errors[0]
                .to_string()
                .starts_with("spec.sync.toHost.pods.patches[0]: spec.template"),
            "{}",
            errors[0]
        );
        assert_eq!(
            host,
            json!({"metadata": {"labels": {"ok": "yes"}}, "spec": {}})
        );
    }

    #[test]
    fn patches_can_be_limited_to_one_part_of_the_object() {
        let patches = Patches::compile(&pods(vec![
            patch("spec.x", "'changed'"),
            patch("metadata.labels[\"a\"]", "'b'"),
            Patch {
                reverse_expression: Some("'back'".into()),
                ..patch("status.y", "'z'")
            },
        ]))
        .unwrap();
        assert!(patches.touches("toHost.pods", "metadata", false));
        assert!(patches.touches("toHost.pods", "status", true));
        assert!(!patches.touches("toHost.pods", "spec", true));
        assert!(!patches.touches("toHost.services", "metadata", false));
        let scope = scope(None);
        let mut object = json!({"metadata": {"labels": {}}, "spec": {"x": "v"}, "status": {}});
        let errors = patches.apply(
            "toHost.pods",
            Some("metadata"),
            &mut object,
            &scope,
            &rename,
        );
        assert_eq!(errors, vec![]);
        assert_eq!(
            object,
            json!({"metadata": {"labels": {"a": "b"}}, "spec": {"x": "v"}, "status": {}})
        );
    }

    #[test]
    fn bad_patches_are_refused_with_their_section_and_index() {
        for (patches, wanted) in [
            (
                vec![
                    patch("metadata.labels[\"x\"]", "'a'"),
                    patch("spec..x", "1"),
                ],
                "patches[1]: path",
            ),
            (vec![patch("metadata.name", "'other'")], "cannot be patched"),
            (
                vec![patch("metadata.namespace", "'kube-system'")],
                "cannot be patched",
            ),
            (vec![patch("metadata", "({})")], "cannot be patched"),
            (
                vec![patch("spec.x", "value +")],
                "patches[0]: does not compile",
            ),
        ] {
            let err = Patches::compile(&pods(patches)).unwrap_err();
            assert!(err.to_string().contains(wanted), "{err} / {wanted}");
            assert!(
                err.to_string().starts_with("spec.sync.toHost.pods."),
                "{err}"
            );
        }
    }

    #[test]
    fn a_reference_into_a_namespace_not_synced_is_left_out() {
        let patches = Patches::compile(&pods(vec![Patch {
            path: "spec.ref.name".into(),
            reference: Some(PatchReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                namespace_path: Some("spec.ref.namespace".into()),
            }),
            ..Default::default()
        }]))
        .unwrap();
        let virtual_object = json!({"metadata": {"namespace": "team"}});
        let scope = scope(Some(&virtual_object));
        let mut ok = json!({"spec": {"ref": {"name": "c", "namespace": "other"}}});
        assert_eq!(
            patches.apply("toHost.pods", None, &mut ok, &scope, &rename),
            vec![]
        );
        assert_eq!(
            ok,
            json!({"spec": {"ref": {"name": "c-x-other", "namespace": "host-ns"}}})
        );
        let mut refused = json!({"spec": {"ref": {"name": "c", "namespace": "unsynced"}}});
        assert_eq!(
            patches
                .apply("toHost.pods", None, &mut refused, &scope, &rename)
                .len(),
            1
        );
        assert!(refused["spec"]["ref"].get("name").is_none());
    }
}
