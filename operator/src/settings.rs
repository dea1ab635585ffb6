//! What the operator is configured with (flags or environment) and passes to every reconcile:
//! default images and versions of what it provisions, and the platform's host policy.

use virtualcluster_crds::policy::HostPolicy;

/// Kubernetes version of a virtual control plane whose spec names none: the release the
/// project is built and tested against (`tests/binaries/kubernetes/go.mod`).
pub const DEFAULT_KUBERNETES_VERSION: &str = "v1.37.2";
/// Registry of the official Kubernetes images.
pub const DEFAULT_REGISTRY: &str = "registry.k8s.io";
/// The etcd image of the release above.
pub const DEFAULT_ETCD_IMAGE: &str = "registry.k8s.io/etcd:3.7.0-0";
/// The syncer image of this release of the operator.
pub const DEFAULT_SYNCER_IMAGE: &str = concat!(
    "ghcr.io/virtualcluster-dev/virtualcluster-syncer:v",
    env!("CARGO_PKG_VERSION")
);
/// Service IP range of a virtual cluster whose spec names none.
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";

/// Defaults for what the operator provisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub kubernetes_version: String,
    /// Registry of kube-apiserver and kube-controller-manager images.
    pub registry: String,
    pub etcd_image: String,
    pub syncer_image: String,
    pub service_cidr: String,
    /// What the platform lets instances' workloads do on the host; its pod security level is
    /// the floor a VirtualCluster may tighten but never loosen.
    pub platform: HostPolicy,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            kubernetes_version: DEFAULT_KUBERNETES_VERSION.into(),
            registry: DEFAULT_REGISTRY.into(),
            etcd_image: DEFAULT_ETCD_IMAGE.into(),
            syncer_image: DEFAULT_SYNCER_IMAGE.into(),
            service_cidr: DEFAULT_SERVICE_CIDR.into(),
            platform: HostPolicy::default(),
        }
    }
}
