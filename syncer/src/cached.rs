//! Pods as the watch caches hold them. A decoded pod takes several times the memory of its JSON
//! (every optional field of every container, volume and probe is there, set or not: about
//! 18 KiB for a one-container pod whose JSON is 2 KiB), and at tens of thousands of pods the
//! caches are most of the syncer's memory. So a cached virtual pod keeps its metadata decoded,
//! the few things looked up across all pods precomputed, and its spec and status as JSON text,
//! decoded when a reconcile needs them; a cached host copy is read without most of its spec.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use std::sync::{Arc, OnceLock};
use virtualcluster_crds::patches::Patches;

use crate::translate::pod as translate;

/// A virtual pod.
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "Pod")]
pub struct CachedPod {
    pub metadata: ObjectMeta,
    /// `spec.nodeName`: where it runs.
    pub node_name: Option<String>,
    /// The ConfigMaps and Secrets it uses, by name.
    pub config_maps: Box<[String]>,
    pub secrets: Box<[String]>,
    spec: Option<Box<str>>,
    status: Option<Box<str>>,
}

/// The patches the syncer runs with, set once at start: what reference patches name in a pod
/// is used by it, like the objects its spec names. (The cache decodes pods where no context
/// reaches, and a syncer's configuration never changes while it runs.)
static PATCHES: OnceLock<Arc<Patches>> = OnceLock::new();

/// Sets the patches pods are read with (the first call wins).
pub fn use_patches(patches: &Arc<Patches>) {
    let _ = PATCHES.set(Arc::clone(patches));
}

/// What the reference patches of pods name in `pod`: ConfigMaps and Secrets by name.
fn referenced(pod: &Pod, config_maps: &mut Vec<String>, secrets: &mut Vec<String>) {
    let Some(patches) = PATCHES.get().filter(|p| p.has_references(POD_PATCHES)) else {
        return;
    };
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    // Only the parts the reference paths read (at every watch event: a pod's metadata is a
    // fraction of it).
    let mut object = serde_json::Map::new();
    for root in patches.reference_roots(POD_PATCHES) {
        let part = match root {
            "metadata" => serde_json::to_value(&pod.metadata),
            "spec" => serde_json::to_value(&pod.spec),
            "status" => serde_json::to_value(&pod.status),
            _ => continue,
        };
        if let Ok(part) = part {
            object.insert(root.to_owned(), part);
        }
    }
    let object = serde_json::Value::Object(object);
    for r in patches.references(POD_PATCHES, namespace, &object) {
        match r.kind.as_str() {
            "ConfigMap" if r.namespace == namespace => config_maps.push(r.name),
            "Secret" if r.namespace == namespace => secrets.push(r.name),
            _ => {}
        }
    }
    for names in [config_maps, secrets] {
        names.sort();
        names.dedup();
    }
}

const POD_PATCHES: &str = "toHost.pods";

impl From<Pod> for CachedPod {
    fn from(pod: Pod) -> Self {
        let (mut config_maps, mut secrets) = translate::used(&pod);
        referenced(&pod, &mut config_maps, &mut secrets);
        Self {
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            config_maps: config_maps.into(),
            secrets: secrets.into(),
            spec: text(pod.spec.as_ref()),
            status: text(pod.status.as_ref()),
            metadata: pod.metadata,
        }
    }
}

impl CachedPod {
    /// The whole pod, decoded.
    pub fn pod(&self) -> Pod {
        Pod {
            metadata: self.metadata.clone(),
            spec: self.spec(),
            status: self.status(),
        }
    }

    pub fn spec(&self) -> Option<PodSpec> {
        decode(self.spec.as_deref())
    }

    pub fn status(&self) -> Option<PodStatus> {
        decode(self.status.as_deref())
    }
}

/// A host copy: what the syncer reads back from one is its node, the names of its ephemeral
/// containers, what of its spec can change, metadata and status; the rest of its spec is not
/// even decoded.
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "HostPodFields")]
pub struct HostPod {
    pub metadata: ObjectMeta,
    /// `spec.nodeName`: where the host scheduled it.
    pub node_name: Option<String>,
    /// Names of its ephemeral containers (they can be added, never changed).
    pub ephemeral_containers: Vec<String>,
    /// What of its spec can still change.
    pub changeable: translate::Changeable,
    status: Option<Box<str>>,
}

#[derive(Deserialize)]
struct HostPodFields {
    metadata: ObjectMeta,
    spec: Option<SpecFields>,
    status: Option<PodStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecFields {
    node_name: Option<String>,
    #[serde(default)]
    ephemeral_containers: Vec<NameOnly>,
    #[serde(default, deserialize_with = "translate::images")]
    containers: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "translate::images")]
    init_containers: BTreeMap<String, String>,
    active_deadline_seconds: Option<i64>,
    #[serde(default, deserialize_with = "translate::null_as_empty")]
    tolerations: Vec<Toleration>,
}

#[derive(Deserialize)]
struct NameOnly {
    name: String,
}

impl From<HostPodFields> for HostPod {
    fn from(pod: HostPodFields) -> Self {
        let Some(spec) = pod.spec else {
            return Self {
                metadata: pod.metadata,
                node_name: None,
                ephemeral_containers: Vec::new(),
                changeable: Default::default(),
                status: text(pod.status.as_ref()),
            };
        };
        Self {
            metadata: pod.metadata,
            node_name: spec.node_name,
            ephemeral_containers: spec
                .ephemeral_containers
                .into_iter()
                .map(|c| c.name)
                .collect(),
            changeable: translate::Changeable {
                containers: spec.containers,
                init_containers: spec.init_containers,
                active_deadline_seconds: spec.active_deadline_seconds,
                tolerations: spec.tolerations,
            },
            status: text(pod.status.as_ref()),
        }
    }
}

impl HostPod {
    pub fn status(&self) -> Option<PodStatus> {
        decode(self.status.as_deref())
    }
}

fn text<T: serde::Serialize>(value: Option<&T>) -> Option<Box<str>> {
    value
        .and_then(|v| serde_json::to_string(v).ok())
        .map(String::into_boxed_str)
}

/// Text written by `serde_json` from the same type always reads back.
fn decode<T: serde::de::DeserializeOwned>(text: Option<&str>) -> Option<T> {
    serde_json::from_str(text?).ok()
}

/// Both are read and written through the pods API.
macro_rules! pod_resource {
    ($t:ty) => {
        impl k8s_openapi::Resource for $t {
            const API_VERSION: &'static str = <Pod as k8s_openapi::Resource>::API_VERSION;
            const GROUP: &'static str = <Pod as k8s_openapi::Resource>::GROUP;
            const KIND: &'static str = <Pod as k8s_openapi::Resource>::KIND;
            const VERSION: &'static str = <Pod as k8s_openapi::Resource>::VERSION;
            const URL_PATH_SEGMENT: &'static str = <Pod as k8s_openapi::Resource>::URL_PATH_SEGMENT;
            type Scope = k8s_openapi::NamespaceResourceScope;
        }

        impl k8s_openapi::Metadata for $t {
            type Ty = ObjectMeta;

            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}
pod_resource!(CachedPod);
pod_resource!(HostPod);

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1",
                         "labels": {"app": "web"}},
            "spec": {"nodeName": "node-1",
                     "containers": [{"name": "c", "image": "nginx",
                                     "envFrom": [{"configMapRef": {"name": "settings"}}]}],
                     "volumes": [{"name": "s", "secret": {"secretName": "creds"}}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1"}
        }))
        .unwrap()
    }

    #[test]
    fn a_cached_pod_gives_back_the_pod_it_was_made_from() {
        let cached = CachedPod::from(pod());
        assert_eq!(cached.pod(), pod());
        assert_eq!(cached.node_name.as_deref(), Some("node-1"));
        assert_eq!(&*cached.config_maps, ["settings".to_owned()]);
        assert_eq!(&*cached.secrets, ["creds".to_owned()]);
        let from_json: CachedPod =
            serde_json::from_value(serde_json::to_value(pod()).unwrap()).unwrap();
        assert_eq!(from_json.pod(), pod());
    }

    #[test]
    fn a_host_copy_is_read_as_node_metadata_and_status() {
        let host: HostPod = serde_json::from_value(serde_json::to_value(pod()).unwrap()).unwrap();
        assert_eq!(host.node_name.as_deref(), Some("node-1"));
        assert_eq!(host.status(), pod().status);
        assert_eq!(host.metadata, pod().metadata);
        assert_eq!(host.changeable.containers["c"], "nginx");
        let unscheduled: HostPod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web"}, "spec": {"containers": []}
        }))
        .unwrap();
        assert_eq!(
            (unscheduled.node_name.clone(), unscheduled.status()),
            (None, None)
        );
    }
}
