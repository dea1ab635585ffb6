//! The built-in kinds synced only when turned on, on one path. Each is a [`Synced`] made from
//! its entry in the table of synced kinds ([`virtualcluster_crds::kinds`]): whether the
//! configuration turns it on, its caches (the host side in the held namespaces, or cluster-wide
//! for a cluster-scoped kind), its queue (named by its plural, keyed as its direction and scope
//! say) and where its patches are. A kind joins by its table entry, a field of
//! [`crate::context::OptIn`] and its reconcile in `sync::extra`.

use std::fmt::Debug;
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{StreamExt, future};
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use virtualcluster_crds::instance::SyncerConfig;
use virtualcluster_crds::keys;
use virtualcluster_crds::kinds::{self, Direction, Kind};
use virtualcluster_crds::marks;

use crate::context::{Ctx, Key};
use crate::metrics::Metrics;
use crate::queue::{Next, WorkQueue};
use crate::watches::{Followers, HostCache, reflect};

/// A kind synced only when turned on: its entry, its caches on both sides and its queue.
pub struct Synced<K: Resource<DynamicType = ()> + Clone + 'static> {
    pub kind: Kind,
    pub virtual_: Store<K>,
    pub host: HostCache<K>,
    /// Keyed by the virtual object (`namespace` empty for a cluster-scoped kind).
    pub queue: Arc<WorkQueue<Key>>,
}

/// The streams a [`Synced`] kind's queue is fed from.
pub struct Streams<K> {
    pub virtual_: BoxStream<'static, K>,
    pub host: BoxStream<'static, K>,
}

/// What the caches of every kind are made with.
pub struct Parts<'a> {
    pub host: &'a Client,
    pub virt: &'a Client,
    pub config: &'a SyncerConfig,
    pub metrics: &'a Metrics,
}

/// The entry of `K` in the table of synced kinds.
pub fn entry<K: Resource<DynamicType = ()>>() -> kinds::BuiltIn {
    kinds::built_in()
        .into_iter()
        .find(|b| b.kind.kind == K::kind(&()) && b.kind.group == K::group(&()))
        .unwrap_or_else(|| panic!("{} is in the table of synced kinds", K::kind(&())))
}

/// How a kind's host cache watches, by its scope: the held namespaces, or the whole cluster.
pub trait HostScope {
    fn cache<K>(client: &Client, config: watcher::Config) -> (HostCache<K>, BoxStream<'static, K>)
    where
        K: Resource<DynamicType = (), Scope = Self>
            + Clone
            + DeserializeOwned
            + Debug
            + Send
            + Sync
            + 'static;
}

impl HostScope for NamespaceResourceScope {
    fn cache<K>(client: &Client, config: watcher::Config) -> (HostCache<K>, BoxStream<'static, K>)
    where
        K: Resource<DynamicType = (), Scope = Self>
            + Clone
            + DeserializeOwned
            + Debug
            + Send
            + Sync
            + 'static,
    {
        HostCache::namespaced(client, config, |_| true)
    }
}

impl HostScope for ClusterResourceScope {
    fn cache<K>(client: &Client, config: watcher::Config) -> (HostCache<K>, BoxStream<'static, K>)
    where
        K: Resource<DynamicType = (), Scope = Self>
            + Clone
            + DeserializeOwned
            + Debug
            + Send
            + Sync
            + 'static,
    {
        HostCache::cluster(client, config)
    }
}

impl<K> Synced<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::Scope: HostScope,
{
    /// `K`'s caches and queue if the configuration turns it on, and the streams that feed the
    /// queue; the host caches of namespaced copies follow the held namespaces.
    pub fn start(parts: &Parts<'_>, followers: &mut Followers) -> Option<(Self, Streams<K>)> {
        let entry = entry::<K>();
        if !(entry.enabled)(&parts.config.sync) {
            return None;
        }
        let kind = entry.kind;
        let (virtual_, virtual_stream) = reflect(
            Api::<K>::all(parts.virt.clone()),
            watcher::Config::default(),
        );
        let copies =
            watcher::Config::default().labels(&marks::copies_selector(&parts.config.instance));
        let config = match kind.direction {
            Direction::ToHost => copies,
            Direction::FromHost => watcher::Config::default(),
        };
        let (host, host_stream) = <K::Scope as HostScope>::cache::<K>(parts.host, config);
        if kind.namespaced {
            followers.copies(&host);
        }
        // Queue names are the table's plurals, fixed for the life of the process.
        let name: &'static str = Box::leak(kind.plural.to_string().into_boxed_str());
        Some((
            Self {
                kind,
                virtual_,
                host,
                queue: WorkQueue::new(name, parts.metrics),
            },
            Streams {
                virtual_: virtual_stream,
                host: host_stream,
            },
        ))
    }

    /// The queue key of a virtual object.
    pub fn key_of_virtual(kind: &Kind, object: &K) -> Option<Key> {
        match kind.namespaced {
            true => Key::of(object),
            false => Some(Key::new("", &object.name_any())),
        }
    }

    /// The queue key of a host object: the virtual object a copy names, or the host object
    /// itself for a kind shown from the host.
    pub fn key_of_host(kind: &Kind, object: &K) -> Option<Key> {
        match (kind.direction, kind.namespaced) {
            (Direction::ToHost, true) => Key::of_copy(object),
            (Direction::ToHost, false) => object
                .annotations()
                .get(keys::VIRTUAL_NAME)
                .map(|name| Key::new("", name)),
            (Direction::FromHost, _) => Some(Key::new("", &object.name_any())),
        }
    }

    /// Feeds the queue from `streams`; `also` sees each virtual object first (what else it
    /// makes worth a look).
    pub fn feed(
        &self,
        feeds: &mut tokio::task::JoinSet<()>,
        streams: Streams<K>,
        also: impl Fn(&K) + Send + 'static,
    ) {
        let (queue, kind) = (Arc::clone(&self.queue), self.kind.clone());
        feeds.spawn(streams.virtual_.for_each(move |o| {
            also(&o);
            queue.extend(Self::key_of_virtual(&kind, &o));
            future::ready(())
        }));
        let (queue, kind) = (Arc::clone(&self.queue), self.kind.clone());
        feeds.spawn(streams.host.for_each(move |o| {
            queue.extend(Self::key_of_host(&kind, &o));
            future::ready(())
        }));
    }
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Synced<K> {
    /// Waits until both caches hold a full list.
    pub async fn wait_until_ready(
        &self,
    ) -> Result<(), kube::runtime::reflector::store::WriterDropped> {
        self.virtual_.wait_until_ready().await?;
        self.host.wait_until_ready().await
    }

    /// The virtual object of `key`.
    pub fn virtual_object(&self, key: &Key) -> Option<Arc<K>> {
        let reference = ObjectRef::new(&key.name);
        match key.namespace.is_empty() {
            true => self.virtual_.get(&reference),
            false => self.virtual_.get(&reference.within(&key.namespace)),
        }
    }

    /// Where its patches are under `spec.sync`.
    pub fn section(&self) -> String {
        self.kind.patch_section()
    }
}

/// Runs `workers` reconciles of `synced`'s queue at once, `reconcile` each.
pub fn work<K, F, Fut>(
    workers: &mut tokio::task::JoinSet<()>,
    ctx: &Arc<Ctx>,
    synced: Option<&Synced<K>>,
    count: usize,
    reconcile: F,
) where
    K: Resource<DynamicType = ()> + Clone + 'static,
    F: Fn(Arc<Ctx>, Key) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<Next>> + Send + 'static,
{
    if let Some(synced) = synced {
        let c = Arc::clone(ctx);
        workers
            .spawn(Arc::clone(&synced.queue).run(count, move |key| reconcile(Arc::clone(&c), key)));
    }
}
