//! Server-side apply of the operator's children, skipped when the object already is what would
//! be applied, so a reconcile with nothing to change writes nothing.
//!
//! An object needs applying when its `applied-hash` annotation differs from the hash of the
//! desired object (the spec asks for something else, or a field was dropped) or when the live
//! object no longer contains the desired fields (someone edited or removed them). The caches
//! keep only metadata, so the second is judged from the object's version: unchanged since the
//! operator last applied or compared it ([`Verified`]), or else read and compared.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Mutex;

use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};
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
    let desired = serde_json::to_value(desired).expect("Kubernetes objects always serialize");
    let live = serde_json::to_value(live).expect("Kubernetes objects always serialize");
    !contains(&live, &desired)
}

/// What each child looked like when the operator last applied it or read and compared it:
/// its UID and its generation (workloads, whose status moves on its own) or resourceVersion
/// (every other kind). While these hold, the object still is what the operator wants, which
/// lets the caches keep only metadata. Kept in memory: after a restart each child is read once.
#[derive(Default)]
pub struct Verified(Mutex<HashMap<ChildKey, ChildVersion>>);

/// Kind, namespace (empty for cluster-scoped kinds) and name of a child.
type ChildKey = (String, String, String);
/// UID, and generation or resourceVersion, of a child.
type ChildVersion = (String, String);

impl Verified {
    fn key(kind: &str, meta: &ObjectMeta) -> ChildKey {
        (
            kind.to_owned(),
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }

    fn version(meta: &ObjectMeta) -> ChildVersion {
        let version = match meta.generation {
            Some(generation) => format!("generation {generation}"),
            None => meta.resource_version.clone().unwrap_or_default(),
        };
        (meta.uid.clone().unwrap_or_default(), version)
    }

    fn holds(&self, kind: &str, meta: &ObjectMeta) -> bool {
        let known = self.0.lock().expect("verified lock");
        known.get(&Self::key(kind, meta)) == Some(&Self::version(meta))
    }

    fn record(&self, kind: &str, meta: &ObjectMeta) {
        self.0
            .lock()
            .expect("verified lock")
            .insert(Self::key(kind, meta), Self::version(meta));
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

/// Applies `desired` unless it is known to be in place: the cached metadata `live` carries the
/// desired hash and [`Verified`] holds its version (else the object is read once and
/// compared). Returns the full object when it read or wrote one.
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
        why = "changed";
        let same_hash = live.annotations.as_ref().and_then(|a| a.get(APPLIED_HASH))
            == desired.annotations().get(APPLIED_HASH);
        if same_hash {
            if verified.holds(&kind, live) {
                return Ok(None);
            }
            if let Some(full) = api.get_opt(&name).await?
                && !needs_apply(&desired, Some(&full))
            {
                verified.record(&kind, full.meta());
                return Ok(Some(full));
            }
            why = "content differs";
        }
    }
    tracing::debug!(%kind, %name, why, "applying");
    let applied = api.patch(&name, &params(), &Patch::Apply(&desired)).await?;
    verified.record(&kind, applied.meta());
    Ok(Some(applied))
}

/// Whether `live` has every field `desired` sets, with the same value. Lists must have the same
/// length and match item by item; the API server's defaults and additions are ignored; empty
/// maps and lists in `desired` match absent ones (the API server drops them).
pub fn contains(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (_, Value::Null) => true,
        (Value::Object(live), Value::Object(desired)) => {
            desired.iter().all(|(k, d)| match live.get(k) {
                Some(l) => contains(l, d),
                None => is_empty(d),
            })
        }
        (Value::Array(live), Value::Array(desired)) => {
            live.len() == desired.len() && live.iter().zip(desired).all(|(l, d)| contains(l, d))
        }
        (Value::String(l), Value::String(d)) => l == d || same_quantity(l, d),
        (Value::Null, d) => is_empty(d),
        (l, d) => l == d,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.values().all(is_empty),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// The API server writes resource quantities in canonical form (`1000m` comes back as `1`), so
/// two strings that are the same quantity are the same value.
fn same_quantity(a: &str, b: &str) -> bool {
    matches!((quantity(a), quantity(b)), (Some(x), Some(y)) if x == y)
}

/// The value of a Kubernetes quantity, in thousandths, if `s` is one.
fn quantity(s: &str) -> Option<i128> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.trim_start_matches(['+', '-']).is_empty() && frac.is_empty() {
        return None;
    }
    let negative = int.starts_with('-');
    let int: i128 = int.trim_start_matches(['+', '-']).parse().unwrap_or(0);
    // Thousandths of the number; finer digits would not survive canonicalisation anyway.
    let mut milli = int.checked_mul(1000)?;
    for (i, d) in frac.chars().take(3).enumerate() {
        milli += i128::from(d.to_digit(10)?) * 10i128.pow(2 - i as u32);
    }
    let (factor, divisor): (i128, i128) = match suffix {
        "" => (1, 1),
        "m" => (1, 1000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        _ => return None,
    };
    let value = milli.checked_mul(factor)? / divisor;
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    #[test]
    fn live_objects_with_server_additions_contain_the_desired_ones() {
        let desired = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"ports": [{"port": 443}], "selector": {}}});
        let live = json!({"metadata": {"name": "a", "uid": "u", "labels": {"x": "1", "y": "2"}}, "spec": {"ports": [{"port": 443, "protocol": "TCP", "nodePort": 30000}], "clusterIP": "10.0.0.1"}});
        assert!(contains(&live, &desired));
    }

    #[test]
    fn an_edited_changed_or_removed_field_is_noticed() {
        let desired =
            json!({"spec": {"replicas": 1, "ports": [{"port": 443}], "labels": {"x": "1"}}});
        for live in [
            json!({"spec": {"replicas": 2, "ports": [{"port": 443}], "labels": {"x": "1"}}}),
            json!({"spec": {"replicas": 1, "ports": [{"port": 443}, {"port": 80}], "labels": {"x": "1"}}}),
            json!({"spec": {"replicas": 1, "ports": [{"port": 443}], "labels": {}}}),
            json!({"spec": {"replicas": 1, "ports": [{"port": 8443}], "labels": {"x": "1"}}}),
        ] {
            assert!(!contains(&live, &desired), "{live}");
        }
    }

    #[test]
    fn quantities_compare_by_value() {
        for (a, b) in [
            ("1000m", "1"),
            ("0.5", "500m"),
            ("1024Ki", "1Mi"),
            ("1k", "1000"),
        ] {
            assert!(same_quantity(a, b), "{a} {b}");
        }
        for (a, b) in [("1", "2"), ("1Gi", "1G"), ("https", "http"), ("", "")] {
            assert!(!same_quantity(a, b), "{a} {b}");
        }
        assert!(quantity("https").is_none());
        assert!(quantity("v1.37.2").is_none());
    }

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
}
