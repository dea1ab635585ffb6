//! A running pod's spec following the virtual pod, as far as Kubernetes lets a pod change:
//! `kubectl set image` (and `translateImage` with it), a lowered `activeDeadlineSeconds`, added
//! tolerations reach the host copy.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Patch;

use super::PATCHES;
use crate::cached::HostPod;
use crate::context::{Ctx, Key};
use crate::copy::{self, Part};
use crate::patching;
use crate::translate::pod::{self as translate, Changeable};

/// Reason of the Warning Event on a virtual pod whose spec change the host refused.
pub const SPEC_UPDATE_REFUSED: &str = "SpecUpdateRefused";

/// Brings host copy `copy` of virtual pod `pod` to what of `desired` (its translation) a
/// running pod can take.
pub async fn run(
    ctx: &Ctx,
    key: &Key,
    pod: &Pod,
    copy: &HostPod,
    desired: &Pod,
) -> anyhow::Result<()> {
    let Some(spec) = desired.spec.as_ref() else {
        return Ok(());
    };
    // Containers that patches renamed are known on the copy by their host names.
    let renamed = translate::container_names(copy.annotations());
    let mut wanted = by_host_names(Changeable::of(spec), &renamed);
    if wanted.update_of(&copy.changeable).is_none() {
        return Ok(());
    }
    if ctx.patches.touches(PATCHES, "spec", false) {
        // Patches may be what makes them differ (an image a patch sets): judge the patched
        // spec, as the copy was made from it.
        let outcome = patching::apply(ctx, PATCHES, pod, None, desired.clone());
        let Ok(patched) = outcome.object else {
            return Ok(());
        };
        wanted = patched
            .spec
            .as_ref()
            .map(Changeable::of)
            .unwrap_or_default();
    }
    let Some(mut patch) = wanted.update_of(&copy.changeable) else {
        return Ok(());
    };
    // Only the copy this pod's own: a copy of another UID is replaced, not updated.
    patch["metadata"] = serde_json::json!({ "uid": copy.uid() });
    let host = ctx.host_api::<Pod>(&key.namespace);
    let name = copy.name_any();
    match copy::patch_present(&host, &name, Part::Object, &Patch::Strategic(&patch)).await {
        Ok(()) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 422 => {
            let note = format!("the host did not take the pod's change: {}", status.message);
            copy::warn(ctx, pod, SPEC_UPDATE_REFUSED, note).await;
            Ok(())
        }
        Err(err) => Err(err.into()),
    }
}

/// `changeable` with its containers keyed by their host names (`renamed`: host name to
/// virtual name, for those patches renamed).
fn by_host_names(mut changeable: Changeable, renamed: &BTreeMap<String, String>) -> Changeable {
    if renamed.is_empty() {
        return changeable;
    }
    let host_name: BTreeMap<&String, &String> = renamed.iter().map(|(h, v)| (v, h)).collect();
    for images in [&mut changeable.containers, &mut changeable.init_containers] {
        *images = std::mem::take(images)
            .into_iter()
            .map(|(name, image)| match host_name.get(&name) {
                Some(host) => ((*host).clone(), image),
                None => (name, image),
            })
            .collect();
    }
    changeable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renamed_containers_are_compared_by_their_host_names() {
        let mut changeable = Changeable::default();
        changeable.containers.insert("app".into(), "nginx:2".into());
        changeable.containers.insert("side".into(), "envoy".into());
        let renamed = BTreeMap::from([("p-app".to_owned(), "app".to_owned())]);
        let by_host = by_host_names(changeable, &renamed);
        assert_eq!(
            by_host.containers.keys().collect::<Vec<_>>(),
            ["p-app", "side"]
        );
    }
}
