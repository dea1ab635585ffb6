//! Whether what a pod names on the host is this instance's own. By the naming rule two
//! instances can give different virtual objects the same host name (`NAME-x-NS-x-INSTANCE` is
//! ambiguous), and in a mapped namespace names are kept, so a host object of the name a pod
//! uses may belong to someone else. A host pod is made only once every object it names is
//! this instance's copy (or an object it imported); an optional one that exists nowhere is left
//! out, as the kubelet would start the pod without it.

use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, ServiceAccount};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use virtualcluster_crds::marks;

use crate::context::{Ctx, Key};
use crate::translate::pod::{self as translate, Referenced};

/// How soon a pod waiting for a copy that is being made is looked at again.
const WAIT_FOR_COPY: Duration = Duration::from_millis(250);
/// How soon a pod naming an object that does not exist is looked at again.
const WAIT_FOR_OBJECT: Duration = Duration::from_secs(5);

/// What [`resolve`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolved {
    /// Every object the pod names is the instance's own on the host.
    Ready,
    /// A copy is still to be made, or an object to be created.
    Wait(Duration),
    /// The host object of a name the pod uses is someone else's: what and where.
    Refused(String),
}

/// Where a referenced object stands, from the caches alone.
enum Found {
    /// This instance's copy of it is on the host.
    Copied,
    /// It stands for the host object of the same name (imported), which the pod may use.
    Imported,
    /// It exists in the virtual cluster; its copy is not (yet) on the host.
    Uncopied,
    /// It does not exist in the virtual cluster.
    Missing,
}

fn found<K>(ctx: &Ctx, virtual_: &Store<K>, host: &crate::watches::HostCache<K>, key: &Key) -> Found
where
    K: Resource<DynamicType = ()> + Clone,
{
    if ctx.host_copy(host, key).is_some() {
        return Found::Copied;
    }
    match virtual_.get(&key.object_ref()) {
        Some(o) if marks::is_imported(o.annotations()) => Found::Imported,
        Some(_) => Found::Uncopied,
        None => Found::Missing,
    }
}

/// Checks every object `pod` (in virtual namespace `key.namespace`) names, leaving out of it
/// the optional ones that exist nowhere.
pub async fn resolve(ctx: &Ctx, key: &Key, pod: &mut Pod) -> anyhow::Result<Resolved> {
    let s = &ctx.stores;
    let mut absent = Vec::new();
    for reference in translate::references(pod) {
        let object = Key::new(&key.namespace, &reference.name);
        let state = match reference.kind {
            Referenced::ConfigMap => {
                found(ctx, &s.virtual_config_maps, &s.host_config_maps, &object)
            }
            Referenced::Secret => found(ctx, &s.virtual_secrets, &s.host_secrets, &object),
            Referenced::Claim => found(ctx, &s.virtual_claims, &s.host_claims, &object),
        };
        let what = || format!("{} {}", reference.kind.kind(), reference.name);
        match state {
            Found::Copied | Found::Imported => {}
            Found::Missing if reference.optional => absent.push((reference.kind, reference.name)),
            Found::Missing => {
                tracing::debug!(?key, object = %what(), "waiting for an object the pod needs");
                return Ok(Resolved::Wait(WAIT_FOR_OBJECT));
            }
            Found::Uncopied => {
                let foreign = match reference.kind {
                    Referenced::ConfigMap => foreign::<ConfigMap>(ctx, &object).await?,
                    Referenced::Secret => foreign::<Secret>(ctx, &object).await?,
                    Referenced::Claim => foreign::<PersistentVolumeClaim>(ctx, &object).await?,
                };
                return Ok(match foreign {
                    Some(host) => Resolved::Refused(refusal(&reference.field, &what(), &host)),
                    None => Resolved::Wait(WAIT_FOR_COPY),
                });
            }
        }
    }
    // With ServiceAccounts synced the host pod runs as the account's copy.
    if let Some(pair) = &ctx.opt_in.service_accounts {
        let account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| "default".into());
        let object = Key::new(&key.namespace, &account);
        match found(ctx, &pair.virtual_, &pair.host, &object) {
            Found::Copied | Found::Imported => {}
            Found::Missing => return Ok(Resolved::Wait(WAIT_FOR_OBJECT)),
            Found::Uncopied => {
                return Ok(match foreign::<ServiceAccount>(ctx, &object).await? {
                    Some(host) => Resolved::Refused(refusal(
                        "spec.serviceAccountName",
                        &format!("ServiceAccount {account}"),
                        &host,
                    )),
                    None => Resolved::Wait(WAIT_FOR_COPY),
                });
            }
        }
    }
    for (kind, name) in absent {
        translate::without_optional(pod, kind, &name);
    }
    Ok(Resolved::Ready)
}

fn refusal(field: &str, what: &str, host: &str) -> String {
    format!(
        "{field}: {what} has the host name {host}, which an object that is not this virtual \
         cluster's holds; the pod does not run on the host"
    )
}

/// The host object holding the host name of virtual object `key`, as `namespace/name`, if one
/// that is not this instance's copy of it does (the copy is on the way otherwise).
async fn foreign<K>(ctx: &Ctx, key: &Key) -> anyhow::Result<Option<String>>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let name = ctx.target.host_name(&key.namespace, &key.name);
    let live = ctx.host_api::<K>(&key.namespace).get_opt(&name).await?;
    Ok(live
        .filter(|o| {
            !marks::is_copy_of(&ctx.target.instance, o.labels())
                || Key::of_copy(o).as_ref() != Some(key)
        })
        .map(|_| format!("{}/{name}", ctx.target.host_namespace(&key.namespace))))
}
