//! The custom resources an instance syncs, resolved against the host's CRDs: the version its
//! syncer uses, the kind and the scope. A kind whose CRD is missing (or has another scope than
//! the spec says) is left out of the syncer's configuration and named in the
//! `CustomResourcesAvailable` condition; everything else goes on. The CRDs are watched, so one
//! that appears later is picked up (the syncer's configuration changes, and it restarts).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client};
use virtualcluster_crds::kinds::{self, Kind};
use virtualcluster_crds::v1alpha1::{CustomResourceScope, Sync};

use crate::error::Error;

/// What the host's CRDs made of the instance's custom resources.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolved {
    pub kinds: Vec<Kind>,
    /// Why each left out is (`certificates.cert-manager.io: no such CRD on the host`).
    pub missing: Vec<String>,
}

/// Reads the CRD of each custom resource `sync` turns on.
pub async fn resolve(client: &Client, sync: &Sync) -> Result<Resolved, Error> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut resolved = Resolved::default();
    for (resource, scope, direction) in kinds::custom_resources(sync) {
        let crd = crds
            .get_opt(&resource)
            .await
            .map_err(Error::kube(format!("reading CRD {resource}")))?;
        match crd.as_ref().map(|crd| entry(crd, scope, direction)) {
            Some(Ok(kind)) => resolved.kinds.push(kind),
            Some(Err(why)) => resolved.missing.push(format!("{resource}: {why}")),
            None => resolved.missing.push(format!(
                "{resource}: no such CustomResourceDefinition on the host"
            )),
        }
    }
    Ok(resolved)
}

/// The table entry of `crd` for `scope` and `direction`: its storage version (always served).
fn entry(
    crd: &CustomResourceDefinition,
    scope: CustomResourceScope,
    direction: kinds::Direction,
) -> Result<Kind, String> {
    let spec = &crd.spec;
    let host_scope = match spec.scope.as_str() {
        "Cluster" => CustomResourceScope::Cluster,
        _ => CustomResourceScope::Namespaced,
    };
    if host_scope != scope {
        return Err(format!("the host's CRD is {}, not {scope:?}", spec.scope));
    }
    let version = spec
        .versions
        .iter()
        .find(|v| v.storage && v.served)
        .or_else(|| spec.versions.iter().find(|v| v.served))
        .ok_or("the host's CRD serves no version")?;
    let resource = format!("{}.{}", spec.names.plural, spec.group);
    Kind::custom(&resource, &version.name, &spec.names.kind, scope, direction)
        .ok_or_else(|| format!("{resource} is not plural.group"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd(scope: &str) -> CustomResourceDefinition {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "certificates.cert-manager.io"},
            "spec": {
                "group": "cert-manager.io",
                "names": {"plural": "certificates", "kind": "Certificate"},
                "scope": scope,
                "versions": [
                    {"name": "v1alpha2", "served": false, "storage": false},
                    {"name": "v1", "served": true, "storage": true}
                ]
            }
        }))
        .unwrap()
    }

    #[test]
    fn the_storage_version_and_the_scope_come_from_the_crd() {
        let kind = entry(
            &crd("Namespaced"),
            CustomResourceScope::Namespaced,
            kinds::Direction::ToHost,
        )
        .unwrap();
        assert_eq!(kind.api_version(), "cert-manager.io/v1");
        assert_eq!(kind.kind, "Certificate");
        let wrong = entry(
            &crd("Cluster"),
            CustomResourceScope::Namespaced,
            kinds::Direction::ToHost,
        );
        assert_eq!(
            wrong.unwrap_err(),
            "the host's CRD is Cluster, not Namespaced"
        );
    }
}
