//! What every reconcile shares: the two clients, the instance and its options, the watch caches
//! of both sides, and the queues (a reconcile of one kind may need another kind looked at).

use std::sync::{Arc, Mutex};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret,
    Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use virtualcluster_crds::VirtualCluster;
use virtualcluster_crds::instance::SyncerConfig;
use virtualcluster_crds::keys;
use virtualcluster_crds::marks;

use crate::cached::{CachedPod, HostPod};
use crate::metrics::Metrics;
use crate::queue::WorkQueue;
use crate::synced::Synced;
use crate::translate::Target;
use crate::translate::service::cluster_ip;
use crate::watches::HostCache;

/// A virtual namespaced object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The key of a virtual object.
    pub fn of<K: Resource>(object: &K) -> Option<Self> {
        Some(Self::new(
            object.meta().namespace.as_deref()?,
            object.meta().name.as_deref()?,
        ))
    }

    /// The key of the virtual object a host copy names in its marks.
    pub fn of_copy<K: Resource>(copy: &K) -> Option<Self> {
        let of = marks::virtual_ref(copy.meta().annotations.as_ref()?)?;
        Some(Self::new(&of.namespace, &of.name))
    }

    pub fn object_ref<K: Resource<DynamicType = ()>>(&self) -> ObjectRef<K> {
        ObjectRef::new(&self.name).within(&self.namespace)
    }
}

/// What the import queue holds: a virtual object standing for a host one, by kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Imported {
    pub kind: ImportedKind,
    pub key: Key,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImportedKind {
    Pod,
    ConfigMap,
    Secret,
    Service,
}

/// Watch caches, one per kind and side. Host caches hold only this instance's copies (by label),
/// plus the host objects the syncer reads: nodes and the API server Service.
#[derive(Clone)]
pub struct Stores {
    /// Pods in compact form (see [`crate::cached`]).
    pub virtual_pods: Store<CachedPod>,
    pub host_pods: HostCache<HostPod>,
    pub virtual_services: Store<Service>,
    pub host_services: HostCache<Service>,
    pub virtual_endpoints: Store<Endpoints>,
    pub host_endpoints: HostCache<Endpoints>,
    pub virtual_config_maps: Store<ConfigMap>,
    pub host_config_maps: HostCache<ConfigMap>,
    pub virtual_secrets: Store<Secret>,
    pub host_secrets: HostCache<Secret>,
    pub virtual_claims: Store<PersistentVolumeClaim>,
    pub host_claims: HostCache<PersistentVolumeClaim>,
    /// The fake volumes standing for the host volumes of synced claims.
    pub fake_volumes: Store<PersistentVolume>,
    pub virtual_nodes: Store<Node>,
    pub host_nodes: Store<Node>,
    /// The instance's API server Service (made by the operator, not a copy).
    pub api_server_service: Store<Service>,
}

/// The kinds synced only when turned on (see [`crate::synced`]); `None` when off (nothing is
/// watched, and the syncer may lack the permissions to).
#[derive(Default)]
pub struct OptIn {
    pub ingresses: Option<Synced<Ingress>>,
    pub service_accounts: Option<Synced<ServiceAccount>>,
    pub network_policies: Option<Synced<NetworkPolicy>>,
    pub disruption_budgets: Option<Synced<PodDisruptionBudget>>,
    pub priority_classes: Option<Synced<PriorityClass>>,
    pub storage_classes: Option<Synced<StorageClass>>,
    pub ingress_classes: Option<Synced<IngressClass>>,
    /// Virtual namespaces, which NetworkPolicies select by label.
    pub namespaces: Option<Store<Namespace>>,
    /// Every host Ingress (with Ingresses synced): the host names others serve.
    pub served_hosts: Option<Store<Ingress>>,
}

/// Virtual and host namespaces, watched with namespace syncing, and the host's own objects in
/// the host namespaces the mappings claim (imported into the virtual cluster).
#[derive(Clone, Default)]
pub struct Namespaces {
    pub virtual_: Option<Store<Namespace>>,
    pub host: Option<Store<Namespace>>,
    pub host_pods: Option<HostCache<Pod>>,
    pub host_config_maps: Option<HostCache<ConfigMap>>,
    pub host_secrets: Option<HostCache<Secret>>,
    pub host_services: Option<HostCache<Service>>,
    /// Every VirtualCluster on the host: a host namespace holding one is never imported (its
    /// Secrets include that instance's credentials).
    pub instances: Option<Store<VirtualCluster>>,
}

impl Namespaces {
    /// Whether host namespace `namespace` holds a VirtualCluster, so no instance may claim it.
    pub fn holds_instance(&self, namespace: &str) -> bool {
        self.instances.as_ref().is_some_and(|store| {
            store
                .find(|vc| vc.metadata.namespace.as_deref() == Some(namespace))
                .is_some()
        })
    }
}

pub struct Queues {
    pub pods: Arc<WorkQueue<Key>>,
    pub services: Arc<WorkQueue<Key>>,
    pub endpoints: Arc<WorkQueue<Key>>,
    pub config_maps: Arc<WorkQueue<Key>>,
    pub secrets: Arc<WorkQueue<Key>>,
    pub claims: Arc<WorkQueue<Key>>,
    pub nodes: Arc<WorkQueue<String>>,
    /// Host events, by namespace and name.
    pub events: Arc<WorkQueue<Key>>,
    /// Virtual namespaces, by name.
    pub namespaces: Arc<WorkQueue<String>>,
    /// Virtual objects standing for host ones.
    pub imports: Arc<WorkQueue<Imported>>,
}

impl Queues {
    pub fn new(metrics: &Metrics) -> Self {
        Self {
            pods: WorkQueue::new("pods", metrics),
            services: WorkQueue::new("services", metrics),
            endpoints: WorkQueue::new("endpoints", metrics),
            config_maps: WorkQueue::new("configmaps", metrics),
            secrets: WorkQueue::new("secrets", metrics),
            claims: WorkQueue::new("persistentvolumeclaims", metrics),
            nodes: WorkQueue::new("nodes", metrics),
            events: WorkQueue::new("events", metrics),
            namespaces: WorkQueue::new("namespaces", metrics),
            imports: WorkQueue::new("imports", metrics),
        }
    }
}

pub struct Ctx {
    pub host: Client,
    pub virt: Client,
    pub config: SyncerConfig,
    pub target: Target,
    pub stores: Stores,
    pub opt_in: OptIn,
    pub namespaces: Namespaces,
    pub queues: Queues,
    /// Publishes Events on virtual objects (what their owners must know).
    pub recorder: Recorder,
    /// Host Events to show in the virtual cluster, and those shown.
    pub events: Mutex<crate::sync::events::Mirror>,
    /// Ephemeral containers of virtual pods not added to their host copies (see
    /// `sync::pods`): refused once, not again on every update of the pod.
    pub refused_ephemeral: Mutex<crate::sync::pods::RefusedEphemeral>,
    /// The host watches that follow the namespaces the instance holds, and their count shown.
    pub followers: crate::watches::Followers,
    pub host_watches: prometheus_client::metrics::gauge::Gauge,
    /// Where the virtual nodes advertise their kubelet API (the syncer's), if it is served.
    pub kubelet: Option<std::net::SocketAddr>,
    /// The instance's patches, compiled once.
    pub patches: Arc<virtualcluster_crds::patches::Patches>,
    /// The custom resources it syncs, each with its caches and queue.
    pub custom: Vec<crate::sync::custom::Custom>,
}

impl Ctx {
    /// The host API of the copies of objects in virtual namespace `namespace`.
    pub fn host_api<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.host.clone(), &self.target.host_namespace(namespace))
    }

    /// Whether objects of virtual namespace `namespace` are synced at all.
    pub fn synced(&self, namespace: &str) -> bool {
        self.target.place(namespace).is_some()
    }

    /// Whether virtual namespace `namespace` has a host namespace of its own (a mapping), where
    /// every ConfigMap and Secret is synced.
    pub fn mapped(&self, namespace: &str) -> bool {
        self.target.place(namespace).is_some_and(|p| p.keep_names)
    }

    pub fn virtual_api<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.virt.clone(), namespace)
    }

    /// The host copy of virtual object `key` in `store`, if this instance made it for that
    /// virtual object (two virtual names could hash to one host name).
    pub fn host_copy<K>(&self, store: &HostCache<K>, key: &Key) -> Option<Arc<K>>
    where
        K: Resource<DynamicType = ()> + Clone,
    {
        let name = self.target.host_name(&key.namespace, &key.name);
        store
            .get(&ObjectRef::new(&name).within(&self.target.host_namespace(&key.namespace)))
            .filter(|copy| Key::of_copy(copy.as_ref()).as_ref() == Some(key))
    }

    /// Host ClusterIP of the instance's API server Service.
    pub fn api_server_ip(&self) -> Option<String> {
        self.stores
            .api_server_service
            .state()
            .iter()
            .find_map(|s| cluster_ip(s).map(str::to_owned))
    }

    /// Host ClusterIP of the virtual cluster's DNS Service (its host copy's).
    pub fn dns_ip(&self) -> Option<String> {
        let key = Key::new(crate::dns::NAMESPACE, crate::dns::SERVICE);
        self.host_copy(&self.stores.host_services, &key)
            .and_then(|s| cluster_ip(&s).map(str::to_owned))
    }

    /// Whether a host Ingress that is not this instance's copy serves host name `host`.
    pub fn host_name_taken(&self, host: &str) -> bool {
        self.opt_in
            .served_hosts
            .iter()
            .flat_map(|s| s.state())
            .any(|i| {
                !marks::is_copy_of(&self.target.instance, i.labels())
                    && crate::translate::extra::ingress_hosts(&i).any(|h| h == host)
            })
    }

    /// Whether `ip` is an address of a host node.
    pub fn is_host_node_address(&self, ip: std::net::IpAddr) -> bool {
        self.stores.host_nodes.state().iter().any(|node| {
            node.status
                .iter()
                .flat_map(|s| s.addresses.iter().flatten())
                .any(|a| a.address.parse() == Ok(ip))
        })
    }

    /// The addresses of this instance's host pods and Services.
    pub fn own_addresses(&self) -> std::collections::HashSet<std::net::IpAddr> {
        let services = self.stores.host_services.state();
        let service_ips = services
            .iter()
            .flat_map(|s| {
                s.spec
                    .iter()
                    .flat_map(|spec| spec.cluster_ips.iter().flatten())
            })
            .filter_map(|a| a.parse().ok());
        let pod_ips: Vec<std::net::IpAddr> = self
            .stores
            .host_pods
            .state()
            .iter()
            .filter_map(|p| p.status())
            .flat_map(|s| s.pod_ips.into_iter().flatten())
            .filter_map(|a| a.ip.parse().ok())
            .collect();
        service_ips.chain(pod_ips).collect()
    }

    /// UID of the virtual object a host copy was made from.
    pub fn copy_of_uid<K: Resource>(copy: &K) -> Option<&str> {
        copy.meta()
            .annotations
            .as_ref()?
            .get(keys::VIRTUAL_UID)
            .map(String::as_str)
    }
}
