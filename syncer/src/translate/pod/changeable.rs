//! What of a running pod's spec can follow the virtual pod: Kubernetes lets a running pod
//! change its images, lower its deadline and add tolerations, and nothing else of its spec.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec, Toleration};
use serde::Deserialize;

/// What of a running pod's spec Kubernetes lets change: each container's and init
/// container's image (by name), `activeDeadlineSeconds` (set or lowered) and tolerations (added
/// to).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Changeable {
    #[serde(default, deserialize_with = "images")]
    pub containers: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "images")]
    pub init_containers: BTreeMap<String, String>,
    pub active_deadline_seconds: Option<i64>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub tolerations: Vec<Toleration>,
}

/// `[{name, image}]` as name to image (containers without an image are left out).
pub fn images<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    struct NameImage {
        name: String,
        image: Option<String>,
    }
    let list: Option<Vec<NameImage>> = Option::deserialize(d)?;
    Ok(list
        .into_iter()
        .flatten()
        .filter_map(|c| Some((c.name, c.image?)))
        .collect())
}

/// A list that may be `null`.
pub fn null_as_empty<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

impl Changeable {
    /// The changeable fields of `spec`.
    pub fn of(spec: &PodSpec) -> Self {
        let images = |containers: &[Container]| {
            containers
                .iter()
                .filter_map(|c| Some((c.name.clone(), c.image.clone()?)))
                .collect()
        };
        Self {
            containers: images(&spec.containers),
            init_containers: images(spec.init_containers.as_deref().unwrap_or_default()),
            active_deadline_seconds: spec.active_deadline_seconds,
            tolerations: spec.tolerations.clone().unwrap_or_default(),
        }
    }

    /// The strategic merge patch of a pod's `spec` that brings `live` (a running host pod) to
    /// what `self` (its translation) asks, as far as Kubernetes lets a running pod change;
    /// `None` when nothing would. A container the copy does not have is not added, a deadline
    /// is never raised, a toleration never taken away: the API server refuses those.
    pub fn update_of(&self, live: &Self) -> Option<serde_json::Value> {
        let changed = |wanted: &BTreeMap<String, String>, live: &BTreeMap<String, String>| {
            wanted
                .iter()
                .filter(|(name, image)| live.get(*name).is_some_and(|l| l != *image))
                .map(|(name, image)| serde_json::json!({"name": name, "image": image}))
                .collect::<Vec<_>>()
        };
        let mut spec = serde_json::Map::new();
        let containers = changed(&self.containers, &live.containers);
        if !containers.is_empty() {
            spec.insert("containers".into(), containers.into());
        }
        let init_containers = changed(&self.init_containers, &live.init_containers);
        if !init_containers.is_empty() {
            spec.insert("initContainers".into(), init_containers.into());
        }
        if let Some(wanted) = self.active_deadline_seconds
            && live.active_deadline_seconds.is_none_or(|l| wanted < l)
        {
            spec.insert("activeDeadlineSeconds".into(), wanted.into());
        }
        let added: Vec<&Toleration> = self
            .tolerations
            .iter()
            .filter(|t| !live.tolerations.contains(t))
            .collect();
        if !added.is_empty() {
            // The list has no merge key: it is written whole, the host's own kept.
            let all: Vec<&Toleration> = live.tolerations.iter().chain(added).collect();
            spec.insert(
                "tolerations".into(),
                serde_json::to_value(all).unwrap_or_default(),
            );
        }
        (!spec.is_empty()).then(|| serde_json::json!({ "spec": spec }))
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, PodSpec, Toleration};
    use serde_json::json;

    use super::Changeable;

    fn spec(image: &str, deadline: Option<i64>, tolerations: &[&str]) -> PodSpec {
        PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some(image.into()),
                ..Default::default()
            }],
            init_containers: Some(vec![Container {
                name: "setup".into(),
                image: Some(format!("{image}-init")),
                ..Default::default()
            }]),
            active_deadline_seconds: deadline,
            tolerations: Some(
                tolerations
                    .iter()
                    .map(|k| Toleration {
                        key: Some((*k).into()),
                        operator: Some("Exists".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn nothing_changed_is_no_update() {
        let both = Changeable::of(&spec("nginx:1", Some(60), &["a"]));
        assert_eq!(both.update_of(&both), None);
    }

    #[test]
    fn images_a_lower_deadline_and_added_tolerations_are_written() {
        let live = Changeable::of(&spec("nginx:1", Some(60), &["host-added"]));
        let wanted = Changeable::of(&spec("nginx:2", Some(30), &["tenant"]));
        assert_eq!(
            wanted.update_of(&live),
            Some(json!({"spec": {
                "containers": [{"name": "app", "image": "nginx:2"}],
                "initContainers": [{"name": "setup", "image": "nginx:2-init"}],
                "activeDeadlineSeconds": 30,
                "tolerations": [
                    {"key": "host-added", "operator": "Exists"},
                    {"key": "tenant", "operator": "Exists"},
                ],
            }}))
        );
    }

    #[test]
    fn what_a_running_pod_cannot_change_is_not_asked_for() {
        let live = Changeable::of(&spec("nginx:1", Some(30), &["a", "b"]));
        // A raised deadline, a toleration taken away, a container the copy lacks.
        let mut wanted = Changeable::of(&spec("nginx:1", Some(60), &["a"]));
        wanted.containers.insert("added".into(), "busybox".into());
        assert_eq!(wanted.update_of(&live), None);
    }

    #[test]
    fn the_host_copy_is_read_as_its_changeable_fields() {
        let read: Changeable = serde_json::from_value(json!({
            "containers": [{"name": "app", "image": "nginx:1", "ports": [{"containerPort": 80}]}],
            "activeDeadlineSeconds": 5,
            "tolerations": null,
            "nodeName": "n1",
        }))
        .unwrap();
        assert_eq!(read.containers["app"], "nginx:1");
        assert!(read.init_containers.is_empty() && read.tolerations.is_empty());
        assert_eq!(read.active_deadline_seconds, Some(5));
    }
}
