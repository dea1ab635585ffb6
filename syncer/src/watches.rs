//! The syncer's watches. On the host it may watch only the namespaces its instance holds (its
//! own, and with namespace syncing those it created or imported), and those change while it
//! runs: a [`HostCache`] keeps one watch per held namespace behind the lookups of a single
//! store, started and stopped by [`HostCache::follow`].

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, RwLock};

use futures::channel::mpsc;
use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt, TryStreamExt, future};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Event;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::hash::Hash;

/// A cache and the stream of the objects it takes in, as [`reflect`] makes them.
pub type Reflected<K> = (Store<K>, BoxStream<'static, K>);

/// What the watched objects must be to be kept (judged by what cannot change, such as the
/// namespace).
type Keep<K> = Arc<dyn Fn(&K) -> bool + Send + Sync>;

/// A watch cache of `api` and the stream of objects it saw change (managed fields dropped:
/// nothing reads them and they are a large part of every object).
pub fn reflect<K>(api: Api<K>, config: watcher::Config) -> Reflected<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, kept_changes(api, config, Arc::new(|_| true)))
        .touched_objects()
        .filter_map(|r| future::ready(logged(&K::kind(&()), r)))
        .boxed();
    (reader, stream)
}

/// [`reflect`] for a kind known at run time (`resource`).
pub fn reflect_dynamic(
    api: Api<DynamicObject>,
    resource: &ApiResource,
    config: watcher::Config,
) -> Reflected<DynamicObject> {
    let writer = reflector::store::Writer::new(resource.clone());
    let reader = writer.as_reader();
    let kind = resource.kind.clone();
    let stream = reflector::reflector(writer, kept_changes(api, config, Arc::new(|_| true)))
        .touched_objects()
        .filter_map(move |r| future::ready(logged(&kind, r)))
        .boxed();
    (reader, stream)
}

/// The changes a watch of `api` sees to the objects `keep` accepts, managed fields dropped.
fn kept_changes<K>(
    api: Api<K>,
    config: watcher::Config,
    keep: Keep<K>,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Clone + Eq + Hash,
{
    watcher(api, config)
        .default_backoff()
        .modify(|o: &mut K| o.managed_fields_mut().clear())
        .try_filter(move |event| {
            future::ready(match event {
                watcher::Event::Apply(o)
                | watcher::Event::InitApply(o)
                | watcher::Event::Delete(o) => keep(o),
                watcher::Event::Init | watcher::Event::InitDone => true,
            })
        })
}

/// The item of a watch stream, or `None` with the error logged (the watch goes on: it
/// relists after backing off; a namespace whose rights are not bound yet is retried so).
fn logged<T>(kind: &str, item: Result<T, watcher::Error>) -> Option<T> {
    item.map_err(|err| tracing::warn!(%err, kind, "watch")).ok()
}

/// A namespace's task and what it keeps for the others to read.
type Running<T> = (T, tokio::task::JoinHandle<()>);
/// What starts a namespace's task.
type Start<T> = Box<dyn Fn(&str) -> Running<T> + Send + Sync>;

/// Tasks, one per namespace, started and stopped as the set of namespaces changes; each keeps
/// a `T` the others may read.
struct Spread<T> {
    start: Start<T>,
    running: RwLock<BTreeMap<String, Running<T>>>,
}

impl<T: Clone> Spread<T> {
    /// Runs a task for each of `namespaces` and for no other.
    fn follow(&self, namespaces: &[String]) {
        let mut running = self.running.write().expect("watches lock");
        running.retain(|ns, (_, task)| {
            let kept = namespaces.contains(ns);
            if !kept {
                tracing::debug!(namespace = %ns, "watch stopped");
                task.abort();
            }
            kept
        });
        for ns in namespaces {
            if !running.contains_key(ns) {
                tracing::debug!(namespace = %ns, "watch started");
                running.insert(ns.clone(), (self.start)(ns));
            }
        }
    }

    fn each(&self) -> Vec<(String, T)> {
        let running = self.running.read().expect("watches lock");
        running
            .iter()
            .map(|(ns, (t, _))| (ns.clone(), t.clone()))
            .collect()
    }

    fn of(&self, namespace: &str) -> Option<T> {
        let running = self.running.read().expect("watches lock");
        running.get(namespace).map(|(t, _)| t.clone())
    }

    fn count(&self) -> usize {
        self.running.read().expect("watches lock").len()
    }
}

impl<T> Drop for Spread<T> {
    fn drop(&mut self) {
        if let Ok(running) = self.running.get_mut() {
            running.values().for_each(|(_, task)| task.abort());
        }
    }
}

/// A host watch cache over a changing set of namespaces (one watch each), or over the whole
/// cluster for a cluster-scoped kind. Objects listed by a namespace's watch reach the stream
/// only once that namespace's list is complete, so whoever they wake finds them cached.
pub struct HostCache<K: Resource + Clone + 'static>
where
    K::DynamicType: Clone + Eq + Hash,
{
    spread: Arc<Spread<Store<K>>>,
    /// The one watch of a cluster-scoped kind, under this key.
    cluster: bool,
}

impl<K: Resource + Clone + 'static> Clone for HostCache<K>
where
    K::DynamicType: Clone + Eq + Hash,
{
    fn clone(&self) -> Self {
        Self {
            spread: Arc::clone(&self.spread),
            cluster: self.cluster,
        }
    }
}

impl<K> HostCache<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// A cache of namespaced kind `K`, watching no namespace until [`HostCache::follow`] says.
    pub fn namespaced(
        client: &Client,
        config: watcher::Config,
        keep: impl Fn(&K) -> bool + Send + Sync + 'static,
    ) -> (Self, BoxStream<'static, K>)
    where
        K: Resource<Scope = NamespaceResourceScope>,
    {
        let client = client.clone();
        Self::new(
            move |ns| Api::namespaced(client.clone(), ns),
            config,
            Arc::new(keep),
            false,
            (),
        )
    }

    /// A cache of cluster-scoped kind `K`, watching the whole cluster.
    pub fn cluster(client: &Client, config: watcher::Config) -> (Self, BoxStream<'static, K>) {
        let client = client.clone();
        let (cache, stream) = Self::new(
            move |_| Api::all(client.clone()),
            config,
            Arc::new(|_| true),
            true,
            (),
        );
        cache.spread.follow(&[String::new()]);
        (cache, stream)
    }
}

impl HostCache<DynamicObject> {
    /// A cache of the kind `resource` names: namespaced (watching no namespace until
    /// [`HostCache::follow`] says), or the whole cluster for a cluster-scoped one.
    pub fn dynamic(
        client: &Client,
        resource: &ApiResource,
        namespaced: bool,
        config: watcher::Config,
    ) -> (Self, BoxStream<'static, DynamicObject>) {
        let (client, ar) = (client.clone(), resource.clone());
        let (cache, stream) = Self::new(
            move |ns| match namespaced {
                true => Api::namespaced_with(client.clone(), ns, &ar),
                false => Api::all_with(client.clone(), &ar),
            },
            config,
            Arc::new(|_| true),
            !namespaced,
            resource.clone(),
        );
        if !namespaced {
            cache.spread.follow(&[String::new()]);
        }
        (cache, stream)
    }
}

impl<K> HostCache<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Clone + Eq + Hash + Send + Sync,
{
    fn new(
        api: impl Fn(&str) -> Api<K> + Send + Sync + 'static,
        config: watcher::Config,
        keep: Keep<K>,
        cluster: bool,
        dyntype: K::DynamicType,
    ) -> (Self, BoxStream<'static, K>) {
        let (changes, stream) = mpsc::unbounded();
        let kind = K::kind(&dyntype).to_string();
        let start = move |ns: &str| {
            let writer = reflector::store::Writer::new(dyntype.clone());
            let reader = writer.as_reader();
            let watch =
                reflector::reflector(writer, kept_changes(api(ns), config.clone(), keep.clone()));
            let (changes, kind) = (changes.clone(), kind.clone());
            let task = tokio::spawn(async move {
                let mut watch = std::pin::pin!(watch);
                let mut listed = Vec::new();
                while let Some(event) = watch.next().await {
                    let Some(event) = logged(&kind, event) else {
                        continue;
                    };
                    let send = |o: K| {
                        let _ = changes.unbounded_send(o);
                    };
                    match event {
                        watcher::Event::Apply(o) | watcher::Event::Delete(o) => send(o),
                        watcher::Event::Init => listed.clear(),
                        watcher::Event::InitApply(o) => listed.push(o),
                        // The store holds the list from now on.
                        watcher::Event::InitDone => listed.drain(..).for_each(send),
                    }
                }
            });
            (reader, task)
        };
        let spread = Spread {
            start: Box::new(start),
            running: RwLock::new(BTreeMap::new()),
        };
        (
            Self {
                spread: Arc::new(spread),
                cluster,
            },
            stream.boxed(),
        )
    }
}

impl<K: Resource + Clone + 'static> HostCache<K>
where
    K::DynamicType: Clone + Eq + Hash,
{
    /// Watches exactly `namespaces` from now on.
    pub fn follow(&self, namespaces: &[String]) {
        if !self.cluster {
            self.spread.follow(namespaces);
        }
    }

    fn store_of(&self, namespace: Option<&str>) -> Option<Store<K>> {
        let key = if self.cluster {
            ""
        } else {
            namespace.unwrap_or_default()
        };
        self.spread.of(key)
    }

    pub fn get(&self, reference: &ObjectRef<K>) -> Option<Arc<K>> {
        self.store_of(reference.namespace.as_deref())?
            .get(reference)
    }

    /// Every cached object, across the namespaces watched.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.spread
            .each()
            .into_iter()
            .flat_map(|(_, store)| store.state())
            .collect()
    }

    /// The cached objects of host namespace `namespace`.
    pub fn state_in(&self, namespace: &str) -> Vec<Arc<K>> {
        self.store_of(Some(namespace))
            .map(|s| s.state())
            .unwrap_or_default()
    }

    pub fn find(&self, predicate: impl Fn(&K) -> bool) -> Option<Arc<K>> {
        self.spread
            .each()
            .into_iter()
            .find_map(|(_, store)| store.find(&predicate))
    }

    /// Waits until each namespace watched now has been listed.
    pub async fn wait_until_ready(&self) -> Result<(), reflector::store::WriterDropped> {
        for (_, store) in self.spread.each() {
            store.wait_until_ready().await?;
        }
        Ok(())
    }

    /// Whether namespace `namespace` is watched and listed.
    pub fn is_ready(&self, namespace: &str) -> bool {
        self.store_of(Some(namespace)).is_some_and(|store| {
            store
                .wait_until_ready()
                .now_or_never()
                .is_some_and(|r| r.is_ok())
        })
    }

    /// How many watches it runs.
    pub fn watches(&self) -> usize {
        self.spread.count()
    }
}

/// Host Events of a changing set of namespaces, not cached (each is held until mirrored): the
/// changes come tagged with their namespace, whose lists end separately.
pub struct HostEvents {
    spread: Spread<()>,
}

impl HostEvents {
    pub fn new(client: &Client) -> (Self, BoxStream<'static, (String, watcher::Event<Event>)>) {
        let (changes, stream) = mpsc::unbounded();
        let client = client.clone();
        let start = move |ns: &str| {
            let events = kept_changes(
                Api::<Event>::namespaced(client.clone(), ns),
                watcher::Config::default(),
                Arc::new(|_| true),
            );
            let (changes, ns) = (changes.clone(), ns.to_owned());
            let task = tokio::spawn(async move {
                let mut events = std::pin::pin!(events);
                while let Some(event) = events.next().await {
                    if let Some(event) = logged("Event", event) {
                        let _ = changes.unbounded_send((ns.clone(), event));
                    }
                }
            });
            ((), task)
        };
        (
            Self {
                spread: Spread {
                    start: Box::new(start),
                    running: RwLock::new(BTreeMap::new()),
                },
            },
            stream.boxed(),
        )
    }

    pub fn follow(&self, namespaces: &[String]) {
        self.spread.follow(namespaces);
    }

    pub fn watches(&self) -> usize {
        self.spread.count()
    }
}

/// A host watch over the held namespaces.
trait Follow: Send + Sync {
    fn follow(&self, namespaces: &[String]);
    fn watches(&self) -> usize;
}

impl<K: Resource + Clone + Send + Sync + 'static> Follow for HostCache<K>
where
    K::DynamicType: Clone + Eq + Hash + Send + Sync,
{
    fn follow(&self, namespaces: &[String]) {
        HostCache::follow(self, namespaces);
    }

    fn watches(&self) -> usize {
        HostCache::watches(self)
    }
}

impl Follow for HostEvents {
    fn follow(&self, namespaces: &[String]) {
        HostEvents::follow(self, namespaces);
    }

    fn watches(&self) -> usize {
        HostEvents::watches(self)
    }
}

/// Every host watch that follows the namespaces the instance holds, by where it watches.
#[derive(Default)]
pub struct Followers {
    /// In every held namespace, the instance's own included: its copies and their Events.
    everywhere: Vec<Box<dyn Follow>>,
    /// In the held namespaces mappings claim: the host's own objects, which are imported.
    mapped: Vec<Box<dyn Follow>>,
}

impl Followers {
    pub fn copies<K: Resource + Clone + Send + Sync + 'static>(&mut self, cache: &HostCache<K>)
    where
        K::DynamicType: Clone + Eq + Hash + Send + Sync,
    {
        self.everywhere.push(Box::new(cache.clone()));
    }

    pub fn events(&mut self, events: HostEvents) {
        self.everywhere.push(Box::new(events));
    }

    pub fn imports<K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static>(
        &mut self,
        cache: &HostCache<K>,
    ) {
        self.mapped.push(Box::new(cache.clone()));
    }

    /// Watches the instance's namespace `own` and the held host namespaces `mapped`.
    pub fn follow(&self, own: &str, mapped: &[String]) {
        let mut all = vec![own.to_owned()];
        all.extend(mapped.iter().filter(|ns| *ns != own).cloned());
        self.everywhere.iter().for_each(|f| f.follow(&all));
        self.mapped.iter().for_each(|f| f.follow(mapped));
    }

    /// How many host watches follow the held namespaces.
    pub fn watches(&self) -> usize {
        self.everywhere
            .iter()
            .chain(&self.mapped)
            .map(|f| f.watches())
            .sum()
    }
}
