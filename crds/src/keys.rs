//! Keys of the finalizer, labels and annotations the project puts on objects, each defined once.

/// The API group, also the prefix of every key below.
pub const GROUP: &str = "virtualcluster.dev";

/// Finalizer the operator adds to a VirtualCluster before it creates anything, so the selective
/// cleanup runs before the object goes away.
pub const CLEANUP_FINALIZER: &str = "virtualcluster.dev/cleanup";

/// The one field manager the operator uses for server-side apply.
pub const OPERATOR_FIELD_MANAGER: &str = "virtualcluster-operator";

/// The one field manager the syncer uses for server-side apply.
pub const SYNCER_FIELD_MANAGER: &str = "virtualcluster-syncer";

/// Label: name of the VirtualCluster an object belongs to.
pub const INSTANCE_NAME: &str = "virtualcluster.dev/instance";
/// Label: namespace of the VirtualCluster an object belongs to.
pub const INSTANCE_NAMESPACE: &str = "virtualcluster.dev/instance-namespace";
/// Label: UID of the VirtualCluster an object belongs to; names alone can be reused.
pub const INSTANCE_UID: &str = "virtualcluster.dev/instance-uid";

/// Label (value `true`) on the Secret holding an instance's CA, certificates and keys.
pub const CERTIFICATES: &str = "virtualcluster.dev/certificates";

/// Annotation on the syncer's ConfigMap: the namespace-sync block (JSON) the instance was
/// provisioned with, which may not change afterwards.
pub const NAMESPACE_SYNC: &str = "virtualcluster.dev/namespace-sync";
/// On the syncer's ConfigMap: the kinds whose host copies the instance may have (see the
/// operator's `turned_off`).
pub const SYNCED_KINDS: &str = "virtualcluster.dev/synced-kinds";
/// Label (value `true`) on a virtual PersistentVolume the syncer made to stand for the host
/// volume a synced claim is bound to.
pub const FAKE_VOLUME: &str = "virtualcluster.dev/fake-volume";

/// Annotation on a host copy: name of the virtual object it was made from.
pub const VIRTUAL_NAME: &str = "virtualcluster.dev/object-name";
/// Annotation on a host copy: namespace of the virtual object it was made from.
pub const VIRTUAL_NAMESPACE: &str = "virtualcluster.dev/object-namespace";
/// Annotation on a host copy: UID of the virtual object it was made from.
pub const VIRTUAL_UID: &str = "virtualcluster.dev/object-uid";

/// Annotation on a host pod whose patches renamed containers: a JSON object from each renamed
/// container's host name to its virtual name, for its status and the kubelet API.
pub const CONTAINER_NAMES: &str = "virtualcluster.dev/container-names";

/// Label on a host namespace: how the instance came to use it, [`ORIGIN_CREATED`] or
/// [`ORIGIN_IMPORTED`]. The cleanup deletes only namespaces the instance created.
pub const NAMESPACE_ORIGIN: &str = "virtualcluster.dev/namespace-origin";
/// Value of [`NAMESPACE_ORIGIN`]: the instance created the host namespace.
pub const ORIGIN_CREATED: &str = "created";
/// Value of [`NAMESPACE_ORIGIN`]: the host namespace existed, or was made on the host, and the
/// instance only imported it.
pub const ORIGIN_IMPORTED: &str = "imported";

/// Label on a host object the instance imported (a pod made on the host in a namespace its
/// mappings match): UID of the VirtualCluster. Only ever removed by the cleanup, never a reason
/// to delete: the object is the host's own.
pub const IMPORTED_BY_UID: &str = "virtualcluster.dev/imported-by-uid";
/// Annotation on a virtual object that stands for a host object (an imported namespace or pod):
/// where it comes from, `namespace` or `namespace/name` on the host. The syncer never makes a
/// host copy of such an object; it follows the host's.
pub const IMPORTED_FROM: &str = "virtualcluster.dev/imported-from";

/// `app.kubernetes.io/managed-by` value on everything the operator creates.
pub const MANAGED_BY_OPERATOR: &str = "virtualcluster-operator";

/// Label on a host copy: name of the VirtualCluster whose syncer made it. Host copies carry
/// their own keys, never [`INSTANCE_NAME`], so no synced workload can ever be selected as part of
/// the instance's control plane or syncer.
pub const SYNCED_BY: &str = "virtualcluster.dev/synced-by";
/// Label on a host copy: namespace of the VirtualCluster whose syncer made it.
pub const SYNCED_BY_NAMESPACE: &str = "virtualcluster.dev/synced-by-namespace";
/// Label on a host copy: UID of the VirtualCluster whose syncer made it; the syncer watches the
/// host through this label.
pub const SYNCED_BY_UID: &str = "virtualcluster.dev/synced-by-uid";
/// Label on a host copy: the virtual namespace of the object, so host selectors can tell
/// tenants' namespaces apart (same key as the [`VIRTUAL_NAMESPACE`] annotation).
pub const OBJECT_NAMESPACE_LABEL: &str = VIRTUAL_NAMESPACE;

/// Annotation on a host Secret holding a pod's service-account tokens
/// (`useSecretsForSATokens`): the UID of the virtual pod whose tokens it holds. A copy of a
/// virtual Secret never has it (reserved keys are not copied).
pub const TOKENS_OF: &str = "virtualcluster.dev/tokens-of";

/// Prefix of every key above: keys with it are the project's, and are never copied from a
/// virtual object to the host, so tenants cannot forge marks.
pub const RESERVED_PREFIX: &str = "virtualcluster.dev/";
