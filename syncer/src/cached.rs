//! Pods as the watch caches hold them. A decoded pod takes several times the memory of its JSON
//! (every optional field of every container, volume and probe is there, set or not: about
//! 18 KiB for a one-container pod whose JSON is 2 KiB), and at tens of thousands of pods the
//! caches are most of the syncer's memory. So a cached pod keeps its metadata decoded, the few
//! things looked up across all pods precomputed, and its spec and status as JSON text, decoded
//! when a reconcile needs them.

use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

use crate::translate::pod as translate;

#[derive(Clone, Debug, Deserialize)]
#[serde(from = "Pod")]
pub struct CachedPod {
    pub metadata: ObjectMeta,
    /// `spec.nodeName`: where it runs.
    pub node_name: Option<String>,
    /// The ConfigMaps and Secrets it uses, by name.
    pub config_maps: Box<[String]>,
    pub secrets: Box<[String]>,
    /// JSON; `None` once forgotten (see [`CachedPod::forget_spec`]).
    spec: Option<Box<str>>,
    status: Option<Box<str>>,
}

impl From<Pod> for CachedPod {
    fn from(pod: Pod) -> Self {
        let text = |v: Option<String>| v.map(String::into_boxed_str);
        Self {
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            config_maps: translate::config_maps(&pod).into(),
            secrets: translate::secrets(&pod).into(),
            spec: text(
                pod.spec
                    .as_ref()
                    .and_then(|s| serde_json::to_string(s).ok()),
            ),
            status: text(
                pod.status
                    .as_ref()
                    .and_then(|s| serde_json::to_string(s).ok()),
            ),
            metadata: pod.metadata,
        }
    }
}

impl CachedPod {
    /// The whole pod, decoded. Only a pod whose spec was kept has its spec.
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

    /// Drops all of the spec but its node. For caches whose readers need no more (the host
    /// copies: what the syncer reads back from them is their node, metadata and status).
    pub fn forget_spec(&mut self) {
        self.spec = None;
        self.config_maps = Box::default();
        self.secrets = Box::default();
    }
}

/// Text written by `serde_json` from the same type always reads back.
fn decode<T: serde::de::DeserializeOwned>(text: Option<&str>) -> Option<T> {
    serde_json::from_str(text?).ok()
}

impl k8s_openapi::Resource for CachedPod {
    const API_VERSION: &'static str = <Pod as k8s_openapi::Resource>::API_VERSION;
    const GROUP: &'static str = <Pod as k8s_openapi::Resource>::GROUP;
    const KIND: &'static str = <Pod as k8s_openapi::Resource>::KIND;
    const VERSION: &'static str = <Pod as k8s_openapi::Resource>::VERSION;
    const URL_PATH_SEGMENT: &'static str = <Pod as k8s_openapi::Resource>::URL_PATH_SEGMENT;
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::Metadata for CachedPod {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

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
    fn a_forgotten_spec_keeps_node_metadata_and_status() {
        let mut cached = CachedPod::from(pod());
        cached.forget_spec();
        assert_eq!(cached.spec(), None);
        assert_eq!(cached.node_name.as_deref(), Some("node-1"));
        assert_eq!(cached.status(), pod().status);
        assert_eq!(cached.metadata, pod().metadata);
        assert!(cached.config_maps.is_empty());
    }
}
