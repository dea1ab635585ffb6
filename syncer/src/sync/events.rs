//! Events the host records about this instance's copies appear in the virtual cluster, about
//! the virtual objects (e.g. a pod that cannot be scheduled, an image that cannot be pulled).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use kube::Api;
use kube::api::{ListParams, ObjectMeta};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use virtualcluster_crds::marks::{self, VirtualRef};

use crate::context::{Ctx, Key};
use crate::copy;
use crate::queue::Next;

/// Annotation on a virtual Event mirroring a host Event: `namespace/name@resourceVersion` of
/// the host Event it shows, so that a restarted syncer does not write it again.
pub const MIRRORS: &str = "virtualcluster.dev/mirrors-event";

/// Host Event `namespace/name` at `resourceVersion`, from a [`MIRRORS`] value.
fn parse_mirrors(value: &str) -> Option<(Key, String)> {
    let (id, version) = value.rsplit_once('@')?;
    let (namespace, name) = id.split_once('/')?;
    Some((Key::new(namespace, name), version.to_owned()))
}

/// The virtual object host object `namespace/name` of `kind` stands for: the one it is a copy
/// of, or the virtual object imported from it.
fn copied_from(ctx: &Ctx, kind: &str, namespace: &str, name: &str) -> Option<VirtualRef> {
    fn of<K: Resource<DynamicType = ()> + Clone>(
        store: &crate::watches::HostCache<K>,
        name: &str,
        namespace: &str,
    ) -> Option<VirtualRef> {
        let copy = store.get(&ObjectRef::new(name).within(namespace))?;
        marks::virtual_ref(copy.meta().annotations.as_ref()?)
    }
    let stores = &ctx.stores;
    match kind {
        "Pod" => of(&stores.host_pods, name, namespace)
            .or_else(|| import_of(ctx, &stores.virtual_pods, namespace, name)),
        "Service" => of(&stores.host_services, name, namespace)
            .or_else(|| import_of(ctx, &stores.virtual_services, namespace, name)),
        "Endpoints" => of(&stores.host_endpoints, name, namespace),
        "ConfigMap" => of(&stores.host_config_maps, name, namespace)
            .or_else(|| import_of(ctx, &stores.virtual_config_maps, namespace, name)),
        "Secret" => of(&stores.host_secrets, name, namespace)
            .or_else(|| import_of(ctx, &stores.virtual_secrets, namespace, name)),
        "PersistentVolumeClaim" => of(&stores.host_claims, name, namespace),
        _ => None,
    }
}

/// The virtual object in `store` imported from host object `namespace/name` (same name, in
/// the virtual namespace the host one is imported as).
fn import_of<K: Resource<DynamicType = ()> + Clone>(
    ctx: &Ctx,
    store: &kube::runtime::reflector::Store<K>,
    namespace: &str,
    name: &str,
) -> Option<VirtualRef> {
    let virtual_namespace = ctx.target.imported_as(namespace)?;
    let key = Key::new(&virtual_namespace, name);
    let object = store.get(&key.object_ref())?;
    marks::is_imported(object.annotations()).then(|| VirtualRef {
        namespace: key.namespace,
        name: key.name,
        uid: object.uid().unwrap_or_default(),
    })
}

/// The virtual Event standing for host Event `event` about the copy of `of`.
pub fn virtual_event(event: &Event, of: &VirtualRef, host_name: &str) -> Event {
    let host_namespace = event.metadata.namespace.as_deref().unwrap_or_default();
    let name = event.name_any();
    let mirrors = format!(
        "{host_namespace}/{name}@{}",
        event.resource_version().unwrap_or_default()
    );
    let suffix = name
        .strip_prefix(host_name)
        .map(str::to_owned)
        .unwrap_or_else(|| format!(".{}", &name[name.len().saturating_sub(16)..]));
    let involved = &event.involved_object;
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{}{suffix}", of.name)),
            namespace: Some(of.namespace.clone()),
            annotations: Some([(MIRRORS.to_owned(), mirrors)].into()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: involved.api_version.clone(),
            kind: involved.kind.clone(),
            name: Some(of.name.clone()),
            namespace: Some(of.namespace.clone()),
            uid: Some(of.uid.clone()),
            field_path: involved.field_path.clone(),
            resource_version: None,
        },
        message: event.message.as_ref().map(|m| {
            crate::translate::in_virtual_names(
                m,
                (host_namespace, host_name),
                (&of.namespace, &of.name),
            )
        }),
        reason: event.reason.clone(),
        type_: event.type_.clone(),
        count: event.count,
        first_timestamp: event.first_timestamp.clone(),
        last_timestamp: event.last_timestamp.clone(),
        event_time: event.event_time.clone(),
        series: event.series.clone(),
        action: event.action.clone(),
        source: event.source.clone(),
        reporting_component: event.reporting_component.clone(),
        reporting_instance: event.reporting_instance.clone(),
        related: None,
    }
}

/// Host Events not cached but held until shown in the virtual cluster (at one per scheduled
/// pod, a cache of them would cost as much memory as a third of the pods), and the version of
/// each one shown, so that one listed again is not written again.
#[derive(Default)]
pub struct Mirror {
    pending: HashMap<Key, Event>,
    shown: HashMap<Key, String>,
    /// Keys of the host Events a (re)list in progress has returned so far, by host namespace
    /// (each namespace has a watch of its own).
    listing: HashMap<String, HashSet<Key>>,
}

impl Mirror {
    /// Takes in a change seen by the host Events watch of namespace `namespace`; returns the
    /// key to look at. A host Event deleted while nobody watched (the syncer stopped, a watch
    /// that expired) sends no delete: what the virtual cluster shows of it is forgotten when a
    /// list of its namespace no longer has it, so that the record stays as large as the host's
    /// Events.
    fn observe(&mut self, namespace: &str, change: watcher::Event<Event>) -> Option<Key> {
        match change {
            watcher::Event::Apply(event) | watcher::Event::InitApply(event) => {
                let key = Key::of(&event)?;
                if let Some(listed) = self.listing.get_mut(namespace) {
                    listed.insert(key.clone());
                }
                self.pending.insert(key.clone(), event);
                Some(key)
            }
            watcher::Event::Delete(event) => {
                let key = Key::of(&event)?;
                self.pending.remove(&key);
                self.shown.remove(&key);
                None
            }
            watcher::Event::Init => {
                self.listing.insert(namespace.to_owned(), HashSet::new());
                None
            }
            watcher::Event::InitDone => {
                if let Some(listed) = self.listing.remove(namespace) {
                    let kept = |key: &Key| key.namespace != namespace || listed.contains(key);
                    self.shown.retain(|key, _| kept(key));
                    self.pending.retain(|key, _| kept(key));
                }
                None
            }
        }
    }
}

/// Records which host Events the virtual cluster shows already, from the virtual Events'
/// [`MIRRORS`] marks: read once at start (page by page, metadata only), so that a restart does
/// not write every Event again and no cache of virtual Events is kept.
pub async fn seed(ctx: &Ctx) -> anyhow::Result<()> {
    if !ctx.config.sync.from_host.events.enabled {
        return Ok(());
    }
    let api: Api<Event> = Api::all(ctx.virt.clone());
    let mut params = ListParams::default().limit(500);
    let mut seen = 0usize;
    loop {
        let page = api.list_metadata(&params).await?;
        let mut mirror = ctx.events.lock().expect("events lock");
        for event in &page.items {
            if let Some((key, version)) = event
                .annotations()
                .get(MIRRORS)
                .and_then(|v| parse_mirrors(v))
            {
                mirror.shown.insert(key, version);
                seen += 1;
            }
        }
        drop(mirror);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    tracing::info!(
        events = seen,
        "host Events the virtual cluster shows already"
    );
    Ok(())
}

/// Takes in a change seen by the host Events watch of `namespace`; returns the key to look at.
pub fn observe(ctx: &Ctx, namespace: &str, change: watcher::Event<Event>) -> Option<Key> {
    ctx.events
        .lock()
        .expect("events lock")
        .observe(namespace, change)
}

pub async fn reconcile(ctx: Arc<Ctx>, key: Key) -> anyhow::Result<Next> {
    let event = {
        let mut mirror = ctx.events.lock().expect("events lock");
        let Some(event) = mirror.pending.get(&key) else {
            return Ok(Next::Done);
        };
        let version = event.resource_version().unwrap_or_default();
        if !ctx.config.sync.from_host.events.enabled || mirror.shown.get(&key) == Some(&version) {
            mirror.pending.remove(&key);
            return Ok(Next::Done);
        }
        event.clone()
    };
    let version = event.resource_version().unwrap_or_default();
    let involved = &event.involved_object;
    let of = match (&involved.kind, &involved.name) {
        (Some(kind), Some(host_name)) => {
            copied_from(&ctx, kind, &key.namespace, host_name).map(|of| (of, host_name.clone()))
        }
        _ => None,
    };
    let shown = match of {
        Some((of, host_name)) => {
            let desired = virtual_event(&event, &of, &host_name);
            // On failure the Event stays pending and the queue tries again.
            copy::apply(&ctx.virtual_api::<Event>(&of.namespace), &desired).await?;
            true
        }
        None => false,
    };
    let mut mirror = ctx.events.lock().expect("events lock");
    if shown {
        mirror.shown.insert(key.clone(), version.clone());
    }
    // Unless a newer version came meanwhile (the queue then looks again).
    if mirror
        .pending
        .get(&key)
        .is_some_and(|e| e.resource_version().unwrap_or_default() == version)
    {
        mirror.pending.remove(&key);
    }
    Ok(Next::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_events_name_the_virtual_object() {
        let event: Event = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0-x-shop-x-vc.18a2b3c4d5e6f7a8", "namespace": "team-a"},
            "involvedObject": {"kind": "Pod", "name": "web-0-x-shop-x-vc", "namespace": "team-a",
                               "uid": "host-uid", "apiVersion": "v1"},
            "reason": "FailedScheduling",
            "message": "Successfully assigned team-a/web-0-x-shop-x-vc to node-1; pod web-0-x-shop-x-vc",
            "type": "Warning", "count": 3
        }))
        .unwrap();
        let of = VirtualRef {
            namespace: "shop".into(),
            name: "web-0".into(),
            uid: "v-uid".into(),
        };
        let mirrored = virtual_event(&event, &of, "web-0-x-shop-x-vc");
        assert_eq!(
            mirrored.metadata.name.as_deref(),
            Some("web-0.18a2b3c4d5e6f7a8")
        );
        assert_eq!(mirrored.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(mirrored.involved_object.uid.as_deref(), Some("v-uid"));
        assert_eq!(
            mirrored.message.as_deref(),
            Some("Successfully assigned shop/web-0 to node-1; pod web-0")
        );
        assert_eq!(mirrored.count, Some(3));
        // The mark names the host Event and its version (none here), and reads back.
        let mark = &mirrored.metadata.annotations.as_ref().unwrap()[MIRRORS];
        assert_eq!(mark, "team-a/web-0-x-shop-x-vc.18a2b3c4d5e6f7a8@");
        assert_eq!(
            parse_mirrors(mark),
            Some((
                Key::new("team-a", "web-0-x-shop-x-vc.18a2b3c4d5e6f7a8"),
                String::new()
            ))
        );
    }

    fn host_event(name: &str, version: &str) -> Event {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "team-a", "resourceVersion": version},
            "involvedObject": {"kind": "Pod", "name": "web-0-x-shop-x-vc", "namespace": "team-a"},
        }))
        .unwrap()
    }

    #[test]
    fn a_list_forgets_what_it_no_longer_has() {
        let mut mirror = Mirror::default();
        // Seeded from the virtual Events: two host Events shown, one pending from before.
        mirror.shown.insert(Key::new("team-a", "kept"), "5".into());
        mirror.shown.insert(Key::new("team-a", "gone"), "6".into());
        // Another namespace's list, not this one's, says what is gone there.
        mirror.shown.insert(Key::new("team-b", "other"), "1".into());
        mirror
            .pending
            .insert(Key::new("team-a", "stale"), host_event("stale", "7"));

        assert_eq!(mirror.observe("team-a", watcher::Event::Init), None);
        assert_eq!(
            mirror.observe("team-a", watcher::Event::InitApply(host_event("kept", "5"))),
            Some(Key::new("team-a", "kept"))
        );
        // Until the list ends, nothing is forgotten.
        assert!(mirror.shown.contains_key(&Key::new("team-a", "gone")));
        assert_eq!(mirror.observe("team-a", watcher::Event::InitDone), None);

        let mut shown: Vec<_> = mirror.shown.keys().collect();
        shown.sort();
        assert_eq!(
            shown,
            [&Key::new("team-a", "kept"), &Key::new("team-b", "other")]
        );
        assert_eq!(
            mirror.pending.keys().collect::<Vec<_>>(),
            [&Key::new("team-a", "kept")]
        );
        // Changes after the list are not collected.
        mirror.observe("team-a", watcher::Event::Apply(host_event("new", "8")));
        assert!(mirror.listing.is_empty());
        assert!(mirror.pending.contains_key(&Key::new("team-a", "new")));
    }
}
