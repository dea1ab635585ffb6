//! Shared watch caches of everything the operator makes, filtered to its own objects by label.
//! The controller is triggered by the same streams that fill them, so a change to a child both
//! updates the cache and reconciles its VirtualCluster.
//!
//! Most children are cached as metadata only: the operator needs their content only to compare
//! it with what it would apply, and it knows from the resourceVersion (or, for workloads, the
//! generation) whether an object still holds what it last applied or read (see
//! [`crate::apply::Verified`]). Kept whole are what the operator reads: the certificates, the
//! API server Services (their ClusterIP) and the workloads' status.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{ApiResource, NotUsed, Object};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use virtualcluster_crds::instance::managed_selector;
use virtualcluster_crds::keys;

/// A workload as the caches keep it: metadata and status, without the spec.
pub type Lite<S> = Object<NotUsed, S>;
/// An object as the caches keep most children: its metadata.
pub type Meta<K> = PartialObjectMeta<K>;
/// A Service as the caches keep it: metadata and the ClusterIP (the serving certificate names
/// it).
pub type ServiceLite = Object<ServiceAddress, NotUsed>;

/// The part of a Service's spec the operator reads.
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
pub struct ServiceAddress {
    #[serde(rename = "clusterIP", default, skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
}

/// A store per kind of child.
#[derive(Clone)]
pub struct Caches {
    pub services: Store<ServiceLite>,
    /// The `<name>-certs` Secrets, whole.
    pub certs: Store<Secret>,
    pub secrets: Store<Meta<Secret>>,
    pub config_maps: Store<Meta<ConfigMap>>,
    pub service_accounts: Store<Meta<ServiceAccount>>,
    pub roles: Store<Meta<Role>>,
    pub role_bindings: Store<Meta<RoleBinding>>,
    pub cluster_roles: Store<Meta<ClusterRole>>,
    pub cluster_role_bindings: Store<Meta<ClusterRoleBinding>>,
    pub stateful_sets: Store<Lite<StatefulSetStatus>>,
    pub deployments: Store<Lite<DeploymentStatus>>,
    /// Host namespaces some instance's syncer created or imported (by their marks): a mapping
    /// of another instance that claims one of them reports the clash.
    pub held_namespaces: Store<Meta<Namespace>>,
    /// The syncers' RoleBindings in the host namespaces their instances hold (see
    /// [`crate::access`]), wherever they are.
    pub held_bindings: Store<Meta<RoleBinding>>,
    /// Every VirtualCluster on the host, whatever namespaces the operator reconciles: a host
    /// namespace holding one is never held by an instance.
    pub residents: Store<Meta<virtualcluster_crds::VirtualCluster>>,
    /// The isolation objects of `spec.policies` (see [`crate::isolation`]), wherever they are.
    pub resource_quotas: Store<Meta<ResourceQuota>>,
    pub limit_ranges: Store<Meta<LimitRange>>,
    pub network_policies: Store<Meta<NetworkPolicy>>,
}

/// A watch of one kind of child and the stream of changed objects it yields.
pub type ChildStream<K> = std::pin::Pin<Box<dyn Stream<Item = Result<K, watcher::Error>> + Send>>;

/// A store and the stream that fills it.
type Reflected<K> = (Store<K>, ChildStream<K>);

/// The streams that fill [`Caches`]; the controller must poll them (they are its triggers).
pub struct Streams {
    pub services: ChildStream<ServiceLite>,
    pub certs: ChildStream<Secret>,
    pub secrets: ChildStream<Meta<Secret>>,
    pub config_maps: ChildStream<Meta<ConfigMap>>,
    pub service_accounts: ChildStream<Meta<ServiceAccount>>,
    pub roles: ChildStream<Meta<Role>>,
    pub role_bindings: ChildStream<Meta<RoleBinding>>,
    pub cluster_roles: ChildStream<Meta<ClusterRole>>,
    pub cluster_role_bindings: ChildStream<Meta<ClusterRoleBinding>>,
    pub stateful_sets: ChildStream<Lite<StatefulSetStatus>>,
    pub deployments: ChildStream<Lite<DeploymentStatus>>,
    pub held_namespaces: ChildStream<Meta<Namespace>>,
    pub held_bindings: ChildStream<Meta<RoleBinding>>,
    pub residents: ChildStream<Meta<virtualcluster_crds::VirtualCluster>>,
    pub resource_quotas: ChildStream<Meta<ResourceQuota>>,
    pub limit_ranges: ChildStream<Meta<LimitRange>>,
    pub network_policies: ChildStream<Meta<NetworkPolicy>>,
}

/// Watches of the children in `namespace` (all namespaces when `None`). Cluster-scoped
/// children are watched cluster-wide, narrowed to the namespace's instances by label.
pub fn watch(client: &Client, namespace: Option<&str>) -> (Caches, Streams) {
    let selector = managed_selector();
    let certs_selector = format!("{selector},{}=true", keys::CERTIFICATES);
    let cluster_selector = match namespace {
        Some(ns) => format!("{selector},{}={ns}", keys::INSTANCE_NAMESPACE),
        None => selector.clone(),
    };
    fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let (services, services_stream) =
        reflect_object::<Service, ServiceAddress, NotUsed>(client, namespace, &selector);
    let (certs, certs_stream) = reflect_certs(api::<Secret>(client, namespace), &certs_selector);
    let (secrets, secrets_stream) = reflect_meta(api::<Meta<Secret>>(client, namespace), &selector);
    let (config_maps, config_maps_stream) =
        reflect_meta(api::<Meta<ConfigMap>>(client, namespace), &selector);
    let (service_accounts, service_accounts_stream) =
        reflect_meta(api::<Meta<ServiceAccount>>(client, namespace), &selector);
    let (roles, roles_stream) = reflect_meta(api::<Meta<Role>>(client, namespace), &selector);
    let (role_bindings, role_bindings_stream) =
        reflect_meta(api::<Meta<RoleBinding>>(client, namespace), &selector);
    // Cluster-scoped children keep their labels: they name the instance they belong to.
    let (cluster_roles, cluster_roles_stream) = reflect(
        Api::<Meta<ClusterRole>>::all(client.clone()),
        &cluster_selector,
    );
    let (cluster_role_bindings, cluster_role_bindings_stream) = reflect(
        Api::<Meta<ClusterRoleBinding>>::all(client.clone()),
        &cluster_selector,
    );
    let (stateful_sets, stateful_sets_stream) =
        reflect_object::<StatefulSet, NotUsed, StatefulSetStatus>(client, namespace, &selector);
    let (deployments, deployments_stream) =
        reflect_object::<Deployment, NotUsed, DeploymentStatus>(client, namespace, &selector);
    let (held_namespaces, held_namespaces_stream) = reflect(
        Api::<Meta<Namespace>>::all(client.clone()),
        keys::SYNCED_BY_UID,
    );
    let (held_bindings, held_bindings_stream) = reflect(
        Api::<Meta<RoleBinding>>::all(client.clone()),
        &format!(
            "{cluster_selector},{}",
            virtualcluster_crds::syncer_access::BINDING_LABEL
        ),
    );
    let (residents, residents_stream) = reflect(
        Api::<Meta<virtualcluster_crds::VirtualCluster>>::all(client.clone()),
        "",
    );
    let (resource_quotas, resource_quotas_stream) = reflect_meta(
        Api::<Meta<ResourceQuota>>::all(client.clone()),
        &cluster_selector,
    );
    let (limit_ranges, limit_ranges_stream) = reflect_meta(
        Api::<Meta<LimitRange>>::all(client.clone()),
        &cluster_selector,
    );
    let (network_policies, network_policies_stream) = reflect_meta(
        Api::<Meta<NetworkPolicy>>::all(client.clone()),
        &cluster_selector,
    );
    (
        Caches {
            services,
            certs,
            secrets,
            config_maps,
            service_accounts,
            roles,
            role_bindings,
            cluster_roles,
            cluster_role_bindings,
            stateful_sets,
            deployments,
            held_namespaces,
            held_bindings,
            residents,
            resource_quotas,
            limit_ranges,
            network_policies,
        },
        Streams {
            services: services_stream,
            certs: certs_stream,
            secrets: secrets_stream,
            config_maps: config_maps_stream,
            service_accounts: service_accounts_stream,
            roles: roles_stream,
            role_bindings: role_bindings_stream,
            cluster_roles: cluster_roles_stream,
            cluster_role_bindings: cluster_role_bindings_stream,
            stateful_sets: stateful_sets_stream,
            deployments: deployments_stream,
            held_namespaces: held_namespaces_stream,
            held_bindings: held_bindings_stream,
            residents: residents_stream,
            resource_quotas: resource_quotas_stream,
            limit_ranges: limit_ranges_stream,
            network_policies: network_policies_stream,
        },
    )
}

/// A reflector of `api`'s objects matching `selector`, without their managed fields (the
/// operator never reads them and they are often the largest part of the metadata).
fn reflect<K>(api: Api<K>, selector: &str) -> Reflected<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync,
    K: 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default().labels(selector))
        .default_backoff()
        .modify(|obj: &mut K| {
            obj.managed_fields_mut().clear();
        })
        .reflect(writer)
        .touched_objects()
        .boxed();
    (reader, stream)
}

/// Like [`reflect`], for the certs Secrets, kept as [`crate::pki::digested`] bundles.
fn reflect_certs(api: Api<Secret>, selector: &str) -> Reflected<Secret> {
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default().labels(selector))
        .default_backoff()
        .modify(|secret: &mut Secret| {
            secret.metadata.managed_fields = None;
            if let Some(data) = secret.data.as_mut() {
                let mut plain: std::collections::BTreeMap<String, Vec<u8>> = std::mem::take(data)
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                crate::pki::digested(&mut plain);
                *data = plain
                    .into_iter()
                    .map(|(k, v)| (k, k8s_openapi::ByteString(v)))
                    .collect();
            }
        })
        .reflect(writer)
        .touched_objects()
        .boxed();
    (reader, stream)
}

/// Drops from cached metadata what the operator never reads from the cache: labels (owner
/// references tie namespaced children to their instance) and the annotations but the
/// records of the syncer ConfigMap (namespace sync, the kinds it may have copies of). Whether a child is as wanted is known from
/// its version (see [`crate::apply::Verified`]), not from the cached copy.
fn slim(meta: &mut kube::api::ObjectMeta) {
    meta.managed_fields = None;
    meta.labels = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|k, _| k == keys::NAMESPACE_SYNC || k == keys::SYNCED_KINDS);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// Like [`reflect`], keeping only the metadata the operator reads (see [`slim`]).
fn reflect_meta<K>(api: Api<Meta<K>>, selector: &str) -> Reflected<Meta<K>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync,
    K: 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default().labels(selector))
        .default_backoff()
        .modify(|obj: &mut Meta<K>| slim(&mut obj.metadata))
        .reflect(writer)
        .touched_objects()
        .boxed();
    (reader, stream)
}

/// Like [`reflect_meta`], for objects of kind `K` kept as the parts `P` of their spec and `S`
/// of their status that the operator reads ([`Lite`], [`ServiceLite`]).
fn reflect_object<K, P, S>(
    client: &Client,
    namespace: Option<&str>,
    selector: &str,
) -> Reflected<Object<P, S>>
where
    K: Resource<DynamicType = ()>,
    P: Clone + Default + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    S: Clone + Default + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let resource = ApiResource::erase::<K>(&());
    let api: Api<Object<P, S>> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let writer = reflector::store::Writer::new(resource);
    let reader = writer.as_reader();
    let stream = watcher(api, watcher::Config::default().labels(selector))
        .default_backoff()
        .modify(|obj: &mut Object<P, S>| slim(&mut obj.metadata))
        .reflect(writer)
        .touched_objects()
        .boxed();
    (reader, stream)
}

/// What a full workload the API server returned looks like in the cache.
pub fn lite<K, S>(object: &K, status: Option<S>) -> Lite<S>
where
    K: Resource<DynamicType = ()>,
    S: Clone,
{
    Object {
        types: None,
        metadata: object.meta().clone(),
        spec: NotUsed {},
        status,
    }
}

impl Caches {
    /// Waits until every store has its first full list, so that a missing object in a cache
    /// means missing in the cluster (the certificates must never be issued again because a
    /// cache was still empty).
    pub async fn ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.services.wait_until_ready().await?;
        self.certs.wait_until_ready().await?;
        self.secrets.wait_until_ready().await?;
        self.config_maps.wait_until_ready().await?;
        self.service_accounts.wait_until_ready().await?;
        self.roles.wait_until_ready().await?;
        self.role_bindings.wait_until_ready().await?;
        self.cluster_roles.wait_until_ready().await?;
        self.cluster_role_bindings.wait_until_ready().await?;
        // Rights follow what these show: never decided from a partial list.
        self.held_namespaces.wait_until_ready().await?;
        self.held_bindings.wait_until_ready().await?;
        self.residents.wait_until_ready().await?;
        self.resource_quotas.wait_until_ready().await?;
        self.limit_ranges.wait_until_ready().await?;
        self.network_policies.wait_until_ready().await?;
        self.stateful_sets.wait_until_ready().await?;
        self.deployments.wait_until_ready().await
    }
}

/// The cached object `name` in `namespace` (`None` for cluster-scoped kinds).
pub fn get<K>(store: &Store<K>, namespace: Option<&str>, name: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    let reference = ObjectRef::new(name);
    let reference = match namespace {
        Some(ns) => reference.within(ns),
        None => reference,
    };
    store.get(&reference)
}

/// The cached object `name` of kind `K` in `namespace`, kept as an [`Object`].
pub fn get_lite<K, P, S>(
    store: &Store<Object<P, S>>,
    namespace: &str,
    name: &str,
) -> Option<Arc<Object<P, S>>>
where
    K: Resource<DynamicType = ()>,
    P: Clone,
    S: Clone,
{
    store.get(&ObjectRef::new_with(name, ApiResource::erase::<K>(&())).within(namespace))
}

/// The VirtualCluster a cluster-scoped child belongs to, from its labels.
pub fn owner_by_labels<K: Resource>(
    child: &K,
) -> Option<ObjectRef<virtualcluster_crds::VirtualCluster>> {
    let labels = child.labels();
    let name = labels.get(keys::INSTANCE_NAME)?;
    let namespace = labels.get(keys::INSTANCE_NAMESPACE)?;
    Some(ObjectRef::new(name).within(namespace))
}
