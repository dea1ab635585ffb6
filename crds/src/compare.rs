//! Whether a live object already holds what a controller wants it to hold, so that nothing is
//! written when nothing changed. Shared by the operator and the syncer.

use serde_json::Value;

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

/// [`contains`] for typed objects: whether `live` has every field `desired` sets.
pub fn holds<T: serde::Serialize>(live: &T, desired: &T) -> bool {
    let value = |object: &T| serde_json::to_value(object).expect("API objects always serialize");
    contains(&value(live), &value(desired))
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
    fn typed_objects_compare_as_their_json() {
        use k8s_openapi::api::core::v1::ConfigMap;
        let config_map = |data: &[(&str, &str)], uid: Option<&str>| ConfigMap {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("a".into()),
                uid: uid.map(Into::into),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).into(), (*v).into()))
                    .collect(),
            ),
            ..Default::default()
        };
        let desired = config_map(&[("k", "v")], None);
        assert!(holds(&config_map(&[("k", "v")], Some("u")), &desired));
        assert!(holds(
            &config_map(&[("k", "v"), ("x", "y")], None),
            &desired
        ));
        assert!(!holds(&config_map(&[("k", "w")], None), &desired));
        assert!(!holds(&config_map(&[], Some("u")), &desired));
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
}
