//! Starts the syncer: the watch caches of both sides, the streams that feed the queues from
//! them, and the workers. Nothing is reconciled before every cache holds a full list, so a host
//! copy is never taken for an orphan because its virtual object was not listed yet.

use std::sync::{Arc, Mutex};

use futures::stream::BoxStream;
use futures::{StreamExt, future};
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Event, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod,
    Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use virtualcluster_crds::VirtualCluster;
use virtualcluster_crds::instance::SyncerConfig;
use virtualcluster_crds::runtime::http::Health;
use virtualcluster_crds::{keys, marks};

use crate::cached::{CachedPod, HostPod};
use crate::context::{Ctx, Imported, ImportedKind, Key, Namespaces, OptIn, Queues, Stores};
use crate::metrics::Metrics;
use crate::sync;
use crate::synced::Synced;
use crate::translate::Target;
use crate::translate::import::Importable;
use crate::watches::{Followers, HostCache, HostEvents, reflect};

/// Workers per queue; pods get more, they are most of the work.
pub struct Concurrency {
    pub pods: usize,
    pub other: usize,
}

/// How the syncer runs, besides what it syncs.
pub struct Options {
    /// Name in leader election and on Events (the pod's name).
    pub identity: String,
    pub dns_image: String,
    pub concurrency: Concurrency,
    pub metrics: Arc<Metrics>,
    /// Not ready from the start of [`run`] until its caches are filled.
    pub health: Arc<Health>,
    /// Where the virtual nodes' kubelet API is reached, if it is served.
    pub kubelet: Option<std::net::SocketAddr>,
}

/// The key of virtual object `o`, unless it stands for a host object: then it goes to the
/// import queue `imports` as a `kind`, and `None` comes back.
fn own_key<K: Resource>(
    o: &K,
    kind: ImportedKind,
    imports: &crate::queue::WorkQueue<Imported>,
) -> Option<Key> {
    let key = Key::of(o)?;
    if marks::is_imported(o.annotations()) {
        imports.add(Imported { kind, key });
        return None;
    }
    Some(key)
}

/// Runs until the future is dropped (leadership lost, or a signal).
pub async fn run(
    host: Client,
    virt: Client,
    config: SyncerConfig,
    options: Options,
) -> anyhow::Result<()> {
    let Options {
        identity,
        dns_image,
        concurrency,
        metrics,
        health,
        kubelet,
    } = options;
    health.set_ready(false);
    let instance = config.instance.clone();
    let host_ns = instance.namespace.clone();
    let copies = || watcher::Config::default().labels(&marks::copies_selector(&instance));
    let all = watcher::Config::default;
    let namespace_sync = config.sync.to_host.namespaces.enabled;
    let target = Target::of(&config)?;
    // The operator compiled the same patches before it started this syncer.
    let patches = Arc::new(
        virtualcluster_crds::patches::Patches::compile_for(
            &config.sync,
            crate::patching::vcluster_context(&config),
        )
        .map_err(|e| anyhow::anyhow!("compiling the instance's patches: {e}"))?,
    );
    crate::cached::use_patches(&patches);
    // Copies live in the instance's namespace, and with namespace syncing in the host
    // namespaces it holds too: one watch each, as `followers` says (see `follow_held`).
    let mut followers = Followers::default();
    macro_rules! host_copies {
        ($kind:ty) => {{
            let (cache, stream) = HostCache::<$kind>::namespaced(&host, copies(), |_| true);
            followers.copies(&cache);
            (cache, stream)
        }};
    }
    macro_rules! pair {
        ($kind:ty) => {{
            let (v, vs) = reflect(Api::<$kind>::all(virt.clone()), all());
            let (h, hs) = host_copies!($kind);
            (v, vs, h, hs)
        }};
    }
    let (virtual_pods, vpods) = reflect(Api::<CachedPod>::all(virt.clone()), all());
    let (host_pods, hpods) = host_copies!(HostPod);
    let (virtual_services, vsvc, host_services, hsvc) = pair!(Service);
    let (virtual_endpoints, vep, host_endpoints, hep) = pair!(Endpoints);
    let (virtual_config_maps, vcm, host_config_maps, hcm) = pair!(ConfigMap);
    let (virtual_secrets, vsec, host_secrets, hsec) = pair!(Secret);
    let (virtual_claims, vpvc, host_claims, hpvc) = pair!(PersistentVolumeClaim);
    let (fake_volumes, vpv) = reflect(
        Api::<PersistentVolume>::all(virt.clone()),
        watcher::Config::default().labels(&format!("{}=true", keys::FAKE_VOLUME)),
    );
    let (virtual_nodes, vnodes) = reflect(Api::<Node>::all(virt.clone()), all());
    let (host_nodes, hnodes) = reflect(Api::<Node>::all(host.clone()), all());
    // Host Events about copies, where the copies are. Not cached: each is held until mirrored.
    let (host_events, hevents) = HostEvents::new(&host);
    followers.events(host_events);
    let (api_server_service, apisvc) = reflect(
        Api::<Service>::namespaced(host.clone(), &host_ns),
        watcher::Config::default().fields(&format!("metadata.name={}", config.api_server_service)),
    );
    // Kinds synced only when turned on, each from its entry in the table of synced kinds.
    let to_host = &config.sync.to_host;
    let parts = crate::synced::Parts {
        host: &host,
        virt: &virt,
        config: &config,
        metrics: &metrics,
    };
    let (ingresses, ingress_streams) = Synced::<Ingress>::start(&parts, &mut followers).unzip();
    let (service_accounts, account_streams) =
        Synced::<ServiceAccount>::start(&parts, &mut followers).unzip();
    let (network_policies, policy_streams) =
        Synced::<NetworkPolicy>::start(&parts, &mut followers).unzip();
    let (disruption_budgets, budget_streams) =
        Synced::<PodDisruptionBudget>::start(&parts, &mut followers).unzip();
    let (priority_classes, class_streams) =
        Synced::<PriorityClass>::start(&parts, &mut followers).unzip();
    let (storage_classes, storage_streams) =
        Synced::<StorageClass>::start(&parts, &mut followers).unzip();
    let (ingress_classes, ingress_class_streams) =
        Synced::<IngressClass>::start(&parts, &mut followers).unzip();
    // Every host Ingress, for the host names others already serve (read-only).
    let (served_hosts, served_stream) = if to_host.ingresses.enabled {
        let (store, stream) = reflect(Api::<Ingress>::all(host.clone()), all());
        (Some(store), Some(stream))
    } else {
        (None, None)
    };
    // Virtual namespaces, whose labels NetworkPolicies select by.
    let (namespaces, namespace_stream) = if to_host.network_policies.enabled {
        let (store, stream) = reflect(Api::<Namespace>::all(virt.clone()), all());
        (Some(store), Some(stream))
    } else {
        (None, None)
    };
    let opt_in = OptIn {
        ingresses,
        service_accounts,
        network_policies,
        disruption_budgets,
        priority_classes,
        storage_classes,
        ingress_classes,
        namespaces,
        served_hosts,
    };

    // Custom resources: each one's CRD in the virtual cluster first. One that cannot be copied
    // is left out (and logged); the rest syncs.
    let mut custom = Vec::new();
    let mut custom_streams = Vec::new();
    for kind in &config.custom_resources {
        if let Err(err) = sync::custom::install_definition(&host, &virt, kind).await {
            tracing::error!("custom resource {} not synced: {err:#}", kind.resource());
            continue;
        }
        let (c, streams) = sync::custom::caches(&host, &virt, kind, &config, &metrics);
        custom.push(c);
        custom_streams.push((sync::custom::follow_definition(&host, &virt, kind), streams));
    }

    let (namespaces, namespace_streams) = if namespace_sync {
        let (v, vs) = reflect(Api::<Namespace>::all(virt.clone()), all());
        let (h, hs) = reflect(Api::<Namespace>::all(host.clone()), all());
        // What no instance made, in the held host namespaces the mappings claim: what is
        // imported.
        macro_rules! own {
            ($kind:ty) => {{
                let (cache, stream) = HostCache::<$kind>::namespaced(
                    &host,
                    watcher::Config::default().labels(&marks::not_copies_selector()),
                    |o: &$kind| o.shown(),
                );
                followers.imports(&cache);
                (cache, stream)
            }};
        }
        let (p, ps) = own!(Pod);
        let (c, cs) = own!(ConfigMap);
        let (s, ss) = own!(Secret);
        let (svc, svcs) = own!(Service);
        let (vcs, vcss) = reflect(Api::<VirtualCluster>::all(host.clone()), all());
        (
            Namespaces {
                virtual_: Some(v),
                host: Some(h),
                host_pods: Some(p),
                host_config_maps: Some(c),
                host_secrets: Some(s),
                host_services: Some(svc),
                instances: Some(vcs),
            },
            Some((vs, hs, ps, cs, ss, svcs, vcss)),
        )
    } else {
        (Namespaces::default(), None)
    };

    let stores = Stores {
        virtual_pods,
        host_pods,
        virtual_services,
        host_services,
        virtual_endpoints,
        host_endpoints,
        virtual_config_maps,
        host_config_maps,
        virtual_secrets,
        host_secrets,
        virtual_claims,
        host_claims,
        fake_volumes,
        virtual_nodes,
        host_nodes,
        api_server_service,
    };
    let recorder = Recorder::new(
        virt.clone(),
        Reporter {
            controller: "virtualcluster-syncer".into(),
            instance: Some(identity),
        },
    );
    let ctx = Arc::new(Ctx {
        host,
        virt,
        target,
        config,
        stores: stores.clone(),
        opt_in,
        namespaces: namespaces.clone(),
        queues: Queues::new(&metrics),
        recorder,
        events: Mutex::new(Default::default()),
        refused_ephemeral: Mutex::new(Default::default()),
        followers,
        host_watches: metrics.host_watches.clone(),
        kubelet,
        patches,
        custom,
    });

    // Feed the queues from the watches.
    let mut feeds = tokio::task::JoinSet::new();
    let q = &ctx.queues;
    fn feed<K: Send + 'static>(
        feeds: &mut tokio::task::JoinSet<()>,
        stream: BoxStream<'static, K>,
        f: impl Fn(K) + Send + 'static,
    ) {
        feeds.spawn(stream.for_each(move |o| {
            f(o);
            future::ready(())
        }));
    }
    {
        let (pods, cms, secrets, nodes) = (
            q.pods.clone(),
            q.config_maps.clone(),
            q.secrets.clone(),
            q.nodes.clone(),
        );
        let imports = q.imports.clone();
        feed(&mut feeds, vpods, move |p: CachedPod| {
            let Some(key) = own_key(&p, ImportedKind::Pod, &imports) else {
                return;
            };
            let (used_cms, used_secrets) = sync::config::used_by(&p);
            used_cms.into_iter().for_each(|k| cms.add(k));
            used_secrets.into_iter().for_each(|k| secrets.add(k));
            match p.node_name.clone() {
                Some(node) => {
                    nodes.add(node);
                    pods.add(key);
                }
                // Not bound yet: it waits for its host copy, which comes before the status
                // of pods already running, so that a burst of creates is not queued behind
                // the status updates of the burst before.
                None if p.metadata.deletion_timestamp.is_none() => pods.add_urgent(key),
                None => pods.add(key),
            }
        });
    }
    macro_rules! by_copy {
        ($stream:expr, $queue:expr) => {{
            let queue = $queue.clone();
            feed(&mut feeds, $stream, move |o| queue.extend(Key::of_copy(&o)));
        }};
    }
    macro_rules! by_key {
        ($stream:expr, $queue:expr) => {{
            let queue = $queue.clone();
            feed(&mut feeds, $stream, move |o| queue.extend(Key::of(&o)));
        }};
    }
    // Virtual objects standing for host ones go to the import queue instead.
    macro_rules! own_by_key {
        ($stream:expr, $kind:expr, $queue:expr) => {{
            let (queue, imports) = ($queue.clone(), q.imports.clone());
            feed(&mut feeds, $stream, move |o| {
                queue.extend(own_key(&o, $kind, &imports))
            });
        }};
    }
    by_copy!(hpods, q.pods);
    {
        let (services, endpoints, imports) =
            (q.services.clone(), q.endpoints.clone(), q.imports.clone());
        feed(&mut feeds, vsvc, move |s: Service| {
            if let Some(key) = own_key(&s, ImportedKind::Service, &imports) {
                endpoints.add(key.clone());
                services.add(key);
            }
        });
    }
    by_copy!(hsvc, q.services);
    by_key!(vep, q.endpoints);
    by_copy!(hep, q.endpoints);
    own_by_key!(vcm, ImportedKind::ConfigMap, q.config_maps);
    by_copy!(hcm, q.config_maps);
    own_by_key!(vsec, ImportedKind::Secret, q.secrets);
    by_copy!(hsec, q.secrets);
    by_key!(vpvc, q.claims);
    by_copy!(hpvc, q.claims);
    {
        let claims = q.claims.clone();
        feed(&mut feeds, vpv, move |v: PersistentVolume| {
            claims.extend(crate::sync::fake_volumes::claim_of(&v))
        });
    }
    {
        let nodes = q.nodes.clone();
        feed(&mut feeds, vnodes, move |n: Node| nodes.add(n.name_any()));
    }
    {
        let (nodes, virtual_nodes) = (q.nodes.clone(), stores.virtual_nodes.clone());
        // Real nodes are shown as `fromHost.nodes` selects them; others only where a virtual
        // pod runs.
        let shown = ctx.config.sync.from_host.nodes.clone();
        feed(&mut feeds, hnodes, move |n: Node| {
            let name = n.name_any();
            if crate::sync::nodes::shown(&shown, &n)
                || virtual_nodes
                    .get(&reflector::ObjectRef::new(&name))
                    .is_some()
            {
                nodes.add(name);
            }
        });
    }
    {
        let services = q.services.clone();
        feed(&mut feeds, apisvc, move |_: Service| {
            let (namespace, name) = crate::translate::service::API_SERVICE;
            services.add(Key::new(namespace, name));
        });
    }

    let o = &ctx.opt_in;
    if let (Some(synced), Some(streams)) = (&o.ingresses, ingress_streams) {
        // The Secrets an Ingress names (its TLS) are synced as used.
        let secrets = q.secrets.clone();
        synced.feed(&mut feeds, streams, move |i: &Ingress| {
            let namespace = i.namespace().unwrap_or_default();
            for secret in crate::translate::extra::ingress_secrets(i) {
                secrets.add(Key::new(&namespace, &secret));
            }
        });
    }
    if let Some(stream) = served_stream {
        // Only looked up when a virtual Ingress is synced; the cache must still be fed.
        feed(&mut feeds, stream, |_: Ingress| {});
    }
    if let (Some(synced), Some(streams)) = (&o.service_accounts, account_streams) {
        synced.feed(&mut feeds, streams, |_| {});
    }
    if let (Some(synced), Some(streams)) = (&o.network_policies, policy_streams) {
        synced.feed(&mut feeds, streams, |_| {});
    }
    if let (Some(stream), Some(synced)) = (namespace_stream, &o.network_policies) {
        // A namespace's labels decide which policies select it.
        let (policies, store) = (synced.queue.clone(), synced.virtual_.clone());
        feed(&mut feeds, stream, move |_: Namespace| {
            policies.extend(store.state().iter().filter_map(|p| Key::of(p.as_ref())));
        });
    }
    if let (Some(synced), Some(streams)) = (&o.disruption_budgets, budget_streams) {
        synced.feed(&mut feeds, streams, |_| {});
    }
    if let (Some(synced), Some(streams)) = (&o.priority_classes, class_streams) {
        synced.feed(&mut feeds, streams, |_| {});
    }
    if let (Some(synced), Some(streams)) = (&o.storage_classes, storage_streams) {
        synced.feed(&mut feeds, streams, |_| {});
    }
    if let (Some(synced), Some(streams)) = (&o.ingress_classes, ingress_class_streams) {
        synced.feed(&mut feeds, streams, |_| {});
    }

    for (index, (definition, streams)) in custom_streams.into_iter().enumerate() {
        feed(&mut feeds, definition, |()| {});
        let c = Arc::clone(&ctx);
        feed(&mut feeds, streams.virtual_, move |o| {
            let custom = &c.custom[index];
            custom.queue.extend(custom.key_of_virtual(&o));
        });
        let c = Arc::clone(&ctx);
        feed(&mut feeds, streams.host, move |o| {
            let custom = &c.custom[index];
            custom.queue.extend(custom.key_of_host(&o));
        });
    }

    if let Some((vs, hs, ps, cs, ss, svcs, vcss)) = namespace_streams {
        let (queue, c) = (q.namespaces.clone(), Arc::clone(&ctx));
        feed(&mut feeds, vcss, move |vc: VirtualCluster| {
            // A claimed namespace that holds an instance is not claimed after all: look at it
            // again (every other instance's change, its status too, costs nothing more).
            let namespace = vc.namespace().unwrap_or_default();
            if c.target.mapper.claims_host(&namespace) {
                // What it imported from there is looked at while still cached; then its
                // watches stop if it is no longer held.
                sync::imports::enqueue_namespace(&c, &namespace);
                follow_held(&c);
                queue.extend(c.target.mapper.virtual_for(&namespace));
            }
        });
        let queue = q.namespaces.clone();
        feed(&mut feeds, vs, move |n: Namespace| queue.add(n.name_any()));
        let (queue, c) = (q.namespaces.clone(), Arc::clone(&ctx));
        feed(&mut feeds, hs, move |n: Namespace| {
            follow_held(&c);
            queue.extend(c.target.mapper.virtual_for(&n.name_any()));
            if marks::is_copy_of(&c.target.instance, n.labels()) {
                // Held now (perhaps just marked): what the host made in it can be imported.
                sync::imports::enqueue_namespace(&c, &n.name_any());
            }
        });
        macro_rules! imports {
            ($stream:expr, $kind:expr) => {{
                let (queue, target) = (q.imports.clone(), ctx.target.clone());
                feed(&mut feeds, $stream, move |o| {
                    queue.extend(sync::imports::imported(&target, $kind, &o));
                });
            }};
        }
        imports!(ps, ImportedKind::Pod);
        imports!(cs, ImportedKind::ConfigMap);
        imports!(ss, ImportedKind::Secret);
        imports!(svcs, ImportedKind::Service);
    }

    tracing::info!("listing both sides");
    // Which host namespaces are held is known first: the host caches watch those.
    for store in [&namespaces.virtual_, &namespaces.host]
        .into_iter()
        .flatten()
    {
        store.wait_until_ready().await?;
    }
    if let Some(store) = &namespaces.instances {
        store.wait_until_ready().await?;
    }
    follow_held(&ctx);
    wait_ready(&stores).await?;
    wait_opt_in_ready(&ctx.opt_in).await?;
    for custom in &ctx.custom {
        custom.virtual_.wait_until_ready().await?;
        custom.host.wait_until_ready().await?;
    }
    if let Some(cache) = &namespaces.host_pods {
        cache.wait_until_ready().await?;
    }
    if let Some(cache) = &namespaces.host_config_maps {
        cache.wait_until_ready().await?;
    }
    if let Some(cache) = &namespaces.host_secrets {
        cache.wait_until_ready().await?;
    }
    if let Some(cache) = &namespaces.host_services {
        cache.wait_until_ready().await?;
    }
    // What the virtual cluster shows already is read before the host Events are listed, so
    // that the end of that list can tell which of them are gone.
    sync::events::seed(&ctx).await?;
    {
        let events = ctx.queues.events.clone();
        let c = Arc::clone(&ctx);
        feed(
            &mut feeds,
            hevents,
            move |(namespace, e): (String, watcher::Event<Event>)| {
                events.extend(sync::events::observe(&c, &namespace, e))
            },
        );
    }
    tracing::info!(
        virtual_pods = stores.virtual_pods.state().len(),
        host_pods = stores.host_pods.state().len(),
        host_watches = ctx.followers.watches(),
        "caches ready, syncing"
    );
    {
        let virt = ctx.virt.clone();
        tokio::spawn(async move {
            if let Err(err) = crate::dns::install(&virt, &dns_image).await {
                tracing::error!("installing DNS into the virtual cluster: {err:#}");
            }
        });
    }
    if ctx.target.mappings_only {
        // Refused at the virtual API server, where the user sees it; the syncer does not run
        // until it is in place.
        crate::admission::install(&ctx.virt, &ctx.target.mapper).await?;
    }

    health.set_ready(true);
    let mut workers = tokio::task::JoinSet::new();
    macro_rules! work {
        ($queue:ident, $n:expr, $f:path) => {{
            let c = Arc::clone(&ctx);
            workers.spawn(Arc::clone(&ctx.queues.$queue).run($n, move |k| $f(Arc::clone(&c), k)));
        }};
    }
    work!(pods, concurrency.pods, sync::pods::reconcile);
    work!(services, concurrency.other, sync::services::reconcile);
    work!(
        endpoints,
        concurrency.other,
        sync::services::reconcile_endpoints
    );
    work!(
        config_maps,
        concurrency.other,
        sync::config::reconcile_config_map
    );
    work!(secrets, concurrency.other, sync::config::reconcile_secret);
    work!(claims, concurrency.other, sync::storage::reconcile);
    work!(nodes, concurrency.other, sync::nodes::reconcile);
    work!(events, concurrency.other, sync::events::reconcile);
    {
        use crate::synced::work as opt_in;
        let (o, n) = (&ctx.opt_in, concurrency.other);
        let w = &mut workers;
        opt_in(
            w,
            &ctx,
            o.ingresses.as_ref(),
            n,
            sync::extra::reconcile_ingress,
        );
        opt_in(
            w,
            &ctx,
            o.service_accounts.as_ref(),
            n,
            sync::extra::reconcile_service_account,
        );
        opt_in(
            w,
            &ctx,
            o.network_policies.as_ref(),
            n,
            sync::extra::reconcile_network_policy,
        );
        opt_in(
            w,
            &ctx,
            o.disruption_budgets.as_ref(),
            n,
            sync::extra::reconcile_disruption_budget,
        );
        opt_in(
            w,
            &ctx,
            o.priority_classes.as_ref(),
            n,
            sync::extra::reconcile_priority_class,
        );
        opt_in(
            w,
            &ctx,
            o.storage_classes.as_ref(),
            n,
            sync::extra::reconcile_storage_class,
        );
        opt_in(
            w,
            &ctx,
            o.ingress_classes.as_ref(),
            n,
            sync::extra::reconcile_ingress_class,
        );
    }
    work!(namespaces, concurrency.other, sync::namespaces::reconcile);
    work!(imports, concurrency.other, sync::imports::reconcile);
    for index in 0..ctx.custom.len() {
        let c = Arc::clone(&ctx);
        workers.spawn(
            Arc::clone(&ctx.custom[index].queue).run(concurrency.other, move |k| {
                sync::custom::reconcile(Arc::clone(&c), index, k)
            }),
        );
    }
    tokio::select! {
        _ = workers.join_next() => anyhow::bail!("a worker pool stopped"),
        _ = feeds.join_next() => anyhow::bail!("a watch stopped"),
    }
}

async fn wait_opt_in_ready(o: &OptIn) -> anyhow::Result<()> {
    async fn synced<K: Resource<DynamicType = ()> + Clone>(
        s: &Option<Synced<K>>,
    ) -> Result<(), reflector::store::WriterDropped> {
        match s {
            Some(s) => s.wait_until_ready().await,
            None => Ok(()),
        }
    }
    synced(&o.ingresses).await?;
    synced(&o.service_accounts).await?;
    synced(&o.network_policies).await?;
    synced(&o.disruption_budgets).await?;
    synced(&o.priority_classes).await?;
    synced(&o.storage_classes).await?;
    synced(&o.ingress_classes).await?;
    for store in [&o.served_hosts].into_iter().flatten() {
        store.wait_until_ready().await?;
    }
    if let Some(namespaces) = &o.namespaces {
        namespaces.wait_until_ready().await?;
    }
    Ok(())
}

async fn wait_ready(stores: &Stores) -> anyhow::Result<()> {
    let s = stores;
    tokio::try_join!(
        s.virtual_pods.wait_until_ready(),
        s.host_pods.wait_until_ready(),
        s.virtual_services.wait_until_ready(),
        s.host_services.wait_until_ready(),
        s.virtual_endpoints.wait_until_ready(),
        s.host_endpoints.wait_until_ready(),
        s.virtual_config_maps.wait_until_ready(),
        s.host_config_maps.wait_until_ready(),
        s.virtual_secrets.wait_until_ready(),
        s.host_secrets.wait_until_ready(),
        s.virtual_claims.wait_until_ready(),
        s.host_claims.wait_until_ready(),
        s.fake_volumes.wait_until_ready(),
        s.virtual_nodes.wait_until_ready(),
        s.host_nodes.wait_until_ready(),
        s.api_server_service.wait_until_ready(),
    )?;
    Ok(())
}

/// Points the host watches at the namespaces the instance holds now: its own, and with
/// namespace syncing each host namespace marked as its own that its mappings claim and that
/// holds no VirtualCluster (the operator binds the syncer's rights in exactly those).
fn follow_held(ctx: &Ctx) {
    let own = &ctx.target.instance.namespace;
    let mapped: Vec<String> = ctx
        .namespaces
        .host
        .iter()
        .flat_map(|store| store.state())
        .filter(|ns| marks::is_copy_of(&ctx.target.instance, ns.labels()))
        .map(|ns| ns.name_any())
        .filter(|name| {
            name != own
                && ctx.target.mapper.claims_host(name)
                && !ctx.namespaces.holds_instance(name)
        })
        .collect();
    ctx.followers.follow(own, &mapped);
    ctx.host_watches.set(ctx.followers.watches() as i64);
}
