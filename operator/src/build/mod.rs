//! The objects a VirtualCluster should have, built from its spec, the operator's settings and
//! what was observed (the API server Service's ClusterIP, the stored certificates). Pure: no
//! API calls, so every object can be checked in unit tests.

mod admission;
mod control_plane;
mod secrets;
mod syncer;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use sha2::{Digest, Sha256};
use virtualcluster_crds::VirtualCluster;
use virtualcluster_crds::instance::{Component, InstanceRef};

use crate::pki;
use crate::settings::Settings;
use crate::validate::Valid;

pub use admission::{ADMISSION_CONFIG_KEY, admission_configuration};
pub use control_plane::{
    API_SERVER_CONTAINER, CONTROLLER_MANAGER_CONTAINER, DATA_DIR, ETCD_CONTAINER, PKI_DIR,
    cert_subjects, services, stateful_set,
};
pub use secrets::{certs_secret, kubeconfig_secrets};
pub use syncer::{
    SYNCER_CONTAINER, config_map as syncer_config_map, recorded_namespace_sync, syncer_config,
};

/// Annotation on a pod template: hash of the configuration its pods read from Secrets and
/// ConfigMaps, so that a change rolls them.
pub const CONFIG_HASH: &str = "virtualcluster.dev/config-hash";

/// One VirtualCluster with what every builder needs.
#[derive(Debug, Clone)]
pub struct Instance<'a> {
    pub vc: &'a VirtualCluster,
    pub valid: &'a Valid,
    pub settings: &'a Settings,
}

impl Instance<'_> {
    pub fn id(&self) -> &InstanceRef {
        &self.valid.instance
    }

    fn owner(&self) -> OwnerReference {
        self.vc
            .controller_owner_ref(&())
            .expect("a VirtualCluster read from the API has a name and UID")
    }

    /// Metadata of a namespaced child: name, the instance's namespace, labels, owner.
    fn meta(&self, name: String, component: Component) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.id().namespace.clone()),
            labels: Some(self.id().labels(component)),
            owner_references: Some(vec![self.owner()]),
            ..Default::default()
        }
    }

    /// Metadata of a cluster-scoped child: no owner (an owner must be cluster-scoped), so the
    /// labels are what the finalizer finds it by.
    fn cluster_meta(&self, name: String, component: Component) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            labels: Some(self.id().labels(component)),
            ..Default::default()
        }
    }
}

/// Everything but the certificates, which must exist first: the kubeconfig Secrets embed them.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    pub secrets: Vec<Secret>,
    pub config_maps: Vec<ConfigMap>,
    pub service_accounts: Vec<ServiceAccount>,
    pub roles: Vec<Role>,
    pub role_bindings: Vec<RoleBinding>,
    pub cluster_roles: Vec<ClusterRole>,
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
    pub stateful_sets: Vec<StatefulSet>,
    pub deployments: Vec<Deployment>,
}

/// The children that follow from the instance, its certificates (the data of `<name>-certs`
/// as [`pki::digested`] keeps it) and the ClusterIP of the syncer's Service.
pub fn desired(
    instance: &Instance<'_>,
    certs: &BTreeMap<String, Vec<u8>>,
    syncer_ip: Option<&str>,
) -> Result<Desired, Error> {
    let kubeconfigs = kubeconfig_secrets(instance, certs)?;
    let config = syncer::config_map(instance);
    let syncer_rbac = syncer::rbac(instance);
    let syncer_inputs = config
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .chain(
            kubeconfigs
                .syncer
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.as_str(), v.0.as_slice())),
        );
    let deployment = syncer::deployment(instance, &content_hash(syncer_inputs), syncer_ip);
    let admission = admission::config_map(instance);
    // The control plane rolls when its certificates or its configuration files change.
    let control_plane_inputs = certs.iter().map(|(k, v)| (k.as_str(), v.as_slice())).chain(
        admission
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_bytes())),
    );
    let certs_hash = content_hash(control_plane_inputs);
    Ok(Desired {
        secrets: vec![kubeconfigs.admin, kubeconfigs.syncer],
        config_maps: vec![admission, config],
        service_accounts: vec![syncer_rbac.service_account],
        roles: syncer_rbac
            .custom_resources
            .iter()
            .map(|(role, _)| role.clone())
            .collect(),
        role_bindings: std::iter::once(syncer_rbac.role_binding)
            .chain(syncer_rbac.custom_resources.map(|(_, binding)| binding))
            .collect(),
        cluster_roles: syncer_rbac.cluster_role.into_iter().collect(),
        cluster_role_bindings: vec![syncer_rbac.cluster_role_binding],
        stateful_sets: vec![stateful_set(instance, &certs_hash)],
        deployments: vec![deployment],
    })
}

/// A short, stable hash of named contents (the data of ConfigMaps and Secrets).
pub fn content_hash<'a>(items: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in items {
        hasher.update((key.len() as u64).to_le_bytes());
        hasher.update(key.as_bytes());
        hasher.update((value.len() as u64).to_le_bytes());
        hasher.update(value);
    }
    hex::encode(&hasher.finalize()[..8])
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the certificates Secret lacks {0}")]
    MissingCert(&'static str),
    #[error(transparent)]
    Pki(#[from] pki::Error),
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::validate::validate;

    /// A VirtualCluster as read from the API server, with `edit` applied to it.
    pub fn vc(edit: impl FnOnce(&mut VirtualCluster)) -> VirtualCluster {
        let mut vc = VirtualCluster::new("demo", Default::default());
        vc.metadata.namespace = Some("team-a".into());
        vc.metadata.uid = Some("0b7c6a8e-uid".into());
        vc.metadata.generation = Some(1);
        edit(&mut vc);
        vc
    }

    pub fn valid(vc: &VirtualCluster) -> Valid {
        validate(vc, None, &crate::settings::Settings::default()).unwrap()
    }

    pub fn certs(instance: &Instance<'_>) -> BTreeMap<String, Vec<u8>> {
        let subjects = cert_subjects(instance, Some("10.96.3.4"), Some("10.96.3.5"));
        pki::issue(
            pki::Plan::IssueAll,
            None,
            None,
            &subjects,
            time::OffsetDateTime::now_utc(),
        )
        .unwrap()
        .data
    }
}
