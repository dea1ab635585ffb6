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
    /// Images a VirtualCluster may name in `spec.syncer.image`: exact, or a prefix ending in
    /// `*`. The syncer runs with the instance's host credentials, so its code is the
    /// platform's to choose.
    pub allowed_syncer_images: Vec<String>,
    /// Host namespaces no mapping may claim besides the system ones: the operator's own and
    /// those the platform lists.
    pub reserved_namespaces: Vec<String>,
    /// The ClusterRole bound to syncers in the host namespaces their instances imported (its
    /// `-created` twin where they created them), installed with the CRD.
    pub syncer_role: String,
}

/// The images allowed by default: any tag or digest of the repository of `syncer_image`.
pub fn default_allowed_syncer_images(syncer_image: &str) -> Vec<String> {
    let repository = repository(syncer_image);
    vec![format!("{repository}:*"), format!("{repository}@*")]
}

/// The repository of image reference `image` (without tag or digest).
fn repository(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    match without_digest.rsplit_once(':') {
        // A colon after the last slash starts the tag; before it, it is a registry's port.
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => without_digest,
    }
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
            allowed_syncer_images: default_allowed_syncer_images(DEFAULT_SYNCER_IMAGE),
            reserved_namespaces: Vec::new(),
            syncer_role: virtualcluster_crds::syncer_access::held_role(
                virtualcluster_crds::syncer_access::DEFAULT_PREFIX,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_allows_the_syncers_own_repository_only() {
        assert_eq!(
            default_allowed_syncer_images("registry.local:5000/team/syncer:v1"),
            [
                "registry.local:5000/team/syncer:*",
                "registry.local:5000/team/syncer@*"
            ]
        );
        assert_eq!(
            default_allowed_syncer_images("syncer@sha256:abc"),
            ["syncer:*", "syncer@*"]
        );
    }
}
