//! Server-side apply of the operator's children, skipped when the object already is what would
//! be applied, so a reconcile with nothing to change writes nothing.
//!
//! An object needs applying when its `applied-hash` annotation differs from the hash of the
//! desired object (the spec asks for something else, or a field was dropped) or when the live
//! object no longer contains the desired fields (someone edited or removed them). The caches
//! keep neither the content nor the annotation (a map per child, a large share of a cached
//! object's memory), so both are judged from the object's version: unchanged since the operator
//! last applied or compared it, with the hash it had then ([`Verified`]), or else read and
//! compared.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Mutex;

use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use virtualcluster_crds::compare::holds;
use virtualcluster_crds::keys::OPERATOR_FIELD_MANAGER;

/// Annotation holding the hash of what the operator last applied to an object.
pub const APPLIED_HASH: &str = "virtualcluster.dev/applied-hash";

/// Forced: the operator is the only writer of its children's fields, and a conflict with a
/// manual edit must end with the operator's value, not an error.
pub fn params() -> PatchParams {
    PatchParams::apply(OPERATOR_FIELD_MANAGER).force()
}

/// `desired` with its [`APPLIED_HASH`] annotation set.
pub fn with_hash<K: Resource + Serialize>(mut desired: K) -> K {
    desired.annotations_mut().remove(APPLIED_HASH);
    let json = serde_json::to_vec(&desired).expect("Kubernetes objects always serialize");
    let hash = hex::encode(&Sha256::digest(&json)[..8]);
    desired
        .annotations_mut()
        .insert(APPLIED_HASH.to_owned(), hash);
    desired
}

/// Whether `desired` (with its hash, see [`with_hash`]) must be applied over `live`.
pub fn needs_apply<K: Resource + Serialize>(desired: &K, live: Option<&K>) -> bool {
    let Some(live) = live else {
        return true;
    };
    if desired.annotations().get(APPLIED_HASH) != live.annotations().get(APPLIED_HASH) {
        return true;
    }
    !holds(live, desired)
}

/// What each child looked like when the operator last applied it or read and compared it:
/// its UID and its generation (workloads, whose status moves on its own) or resourceVersion
/// (every other kind), and its [`APPLIED_HASH`]. While the version holds, the object still is
/// what the operator wants for that hash, which lets the caches keep only slim metadata. Kept
/// in memory: after a restart each child is read once.
#[derive(Default)]
pub struct Verified(Mutex<HashMap<ChildKey, Seen>>);

/// Kind, namespace (empty for cluster-scoped kinds) and name of a child.
type ChildKey = (String, String, String);

/// A child as last applied or compared.
struct Seen {
    /// UID, and generation or resourceVersion.
    version: (String, String),
    /// Its [`APPLIED_HASH`] then.
    hash: Option<String>,
}

/// What [`Verified`] knows of a child at its current version.
#[derive(Debug, PartialEq)]
enum Known {
    /// Not applied or compared at this version (changed since, or never seen).
    Unknown,
    /// As applied or compared, with this hash.
    Hash(Option<String>),
}

impl Verified {
    fn key(kind: &str, meta: &ObjectMeta) -> ChildKey {
        (
            kind.to_owned(),
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }

    fn version(meta: &ObjectMeta) -> (String, String) {
        let version = match meta.generation {
            Some(generation) => format!("generation {generation}"),
            None => meta.resource_version.clone().unwrap_or_default(),
        };
        (meta.uid.clone().unwrap_or_default(), version)
    }

    fn known(&self, kind: &str, meta: &ObjectMeta) -> Known {
        let known = self.0.lock().expect("verified lock");
        match known.get(&Self::key(kind, meta)) {
            Some(seen) if seen.version == Self::version(meta) => Known::Hash(seen.hash.clone()),
            _ => Known::Unknown,
        }
    }

    /// Records `meta` (of a full object, with its annotations) as applied or compared.
    fn record(&self, kind: &str, meta: &ObjectMeta) {
        let hash = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(APPLIED_HASH))
            .cloned();
        let seen = Seen {
            version: Self::version(meta),
            hash,
        };
        self.0
            .lock()
            .expect("verified lock")
            .insert(Self::key(kind, meta), seen);
    }

    /// Forgets the objects named `names` in `namespace` (and cluster-scoped ones of those
    /// names), of a deleted instance.
    pub fn forget(&self, namespace: &str, names: &[String]) {
        self.0
            .lock()
            .expect("verified lock")
            .retain(|(_, ns, name), _| {
                !((ns == namespace || ns.is_empty()) && names.contains(name))
            });
    }
}

/// Applies `desired` unless it is known to be in place: [`Verified`] holds the cached version
/// `live` with the desired hash (else the object is read once and compared, or, when the
/// version is known with another hash, applied at once). Returns the full object when it read
/// or wrote one.
pub async fn apply_verified<K>(
    api: &Api<K>,
    desired: K,
    live: Option<&ObjectMeta>,
    verified: &Verified,
) -> Result<Option<K>, kube::Error>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
{
    let desired = with_hash(desired);
    let kind = K::kind(&());
    let name = desired.name_any();
    let mut why = "missing";
    if let Some(live) = live {
        match verified.known(&kind, live) {
            Known::Hash(hash) if hash.as_ref() == desired.annotations().get(APPLIED_HASH) => {
                return Ok(None);
            }
            Known::Hash(_) => why = "changed",
            Known::Unknown => {
                if let Some(full) = api.get_opt(&name).await?
                    && !needs_apply(&desired, Some(&full))
                {
                    verified.record(&kind, full.meta());
                    return Ok(Some(full));
                }
                why = "changed or edited";
            }
        }
    }
    tracing::debug!(%kind, %name, why, "applying");
    let applied = api.patch(&name, &params(), &Patch::Apply(&desired)).await?;
    verified.record(&kind, applied.meta());
    Ok(Some(applied))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    #[test]
    fn the_hash_follows_the_desired_object_and_nothing_else() {
        let cm = |v: &str| ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some("c".into()),
                ..Default::default()
            },
            data: Some([("k".to_owned(), v.to_owned())].into()),
            ..Default::default()
        };
        let a = with_hash(cm("1"));
        assert_eq!(with_hash(a.clone()).annotations(), a.annotations());
        assert_ne!(with_hash(cm("2")).annotations(), a.annotations());

        assert!(needs_apply(&a, None));
        let mut live = a.clone();
        live.metadata.uid = Some("u".into());
        assert!(!needs_apply(&a, Some(&live)));
        live.data = Some([("k".to_owned(), "edited".to_owned())].into());
        assert!(needs_apply(&a, Some(&live)));
        // A field the operator no longer sets changes the hash, so it is applied (and dropped).
        let mut fewer = cm("1");
        fewer.data = None;
        let fewer = with_hash(fewer);
        assert!(needs_apply(&fewer, Some(&a)));
    }

    #[test]
    fn a_child_is_known_at_the_version_and_with_the_hash_it_was_recorded() {
        let verified = Verified::default();
        let mut meta = with_hash(ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some("c".into()),
                namespace: Some("n".into()),
                uid: Some("u".into()),
                resource_version: Some("1".into()),
                ..Default::default()
            },
            ..Default::default()
        })
        .metadata;
        assert_eq!(verified.known("ConfigMap", &meta), Known::Unknown);
        verified.record("ConfigMap", &meta);
        let hash = meta.annotations.as_ref().unwrap()[APPLIED_HASH].clone();
        // The cache's slim copy has no annotations: the hash comes from the record.
        let mut slim = meta.clone();
        slim.annotations = None;
        assert_eq!(verified.known("ConfigMap", &slim), Known::Hash(Some(hash)));
        // Written since (a new version), or recreated (a new UID): unknown again.
        slim.resource_version = Some("2".into());
        assert_eq!(verified.known("ConfigMap", &slim), Known::Unknown);
        meta.uid = Some("v".into());
        assert_eq!(verified.known("ConfigMap", &meta), Known::Unknown);
        verified.forget("n", &["c".to_owned()]);
        meta.uid = Some("u".into());
        assert_eq!(verified.known("ConfigMap", &meta), Known::Unknown);
    }
}
