//! Installs the committed VirtualCluster CRD (the exact bytes users apply) and waits until the
//! API server serves it.

use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use serde::Deserialize;

/// `crds/virtualcluster.yaml`, as committed.
pub fn committed_yaml() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/virtualcluster.yaml");
    std::fs::read_to_string(path).expect("reading crds/virtualcluster.yaml")
}

/// `crds/claim-policy.yaml`, as committed.
pub fn claim_policy_yaml() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/claim-policy.yaml");
    std::fs::read_to_string(path).expect("reading crds/claim-policy.yaml")
}

/// `crds/sync-keys-policy.yaml`, as committed.
pub fn sync_keys_policy_yaml() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/sync-keys-policy.yaml");
    std::fs::read_to_string(path).expect("reading crds/sync-keys-policy.yaml")
}

/// `crds/syncer-access.yaml`, as committed.
pub fn syncer_access_yaml() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/syncer-access.yaml");
    std::fs::read_to_string(path).expect("reading crds/syncer-access.yaml")
}

/// Applies the committed admission policy that authorizes host namespace claims and its
/// binding (server-side, idempotent).
pub async fn install_claim_policy(client: &kube::Client) -> anyhow::Result<()> {
    apply_documents(client, &claim_policy_yaml()).await
}

/// Applies every document of `yaml` (ClusterRoles, admission policies and their bindings),
/// server-side and idempotent.
async fn apply_documents(client: &kube::Client, yaml: &str) -> anyhow::Result<()> {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    use k8s_openapi::api::rbac::v1::ClusterRole;
    use serde::Deserialize;
    async fn apply<K>(client: &kube::Client, value: serde_json::Value) -> anyhow::Result<()>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::Serialize
            + serde::de::DeserializeOwned,
    {
        let object: K = serde_json::from_value(value)?;
        let name = object.meta().name.clone().expect("a named document");
        let params = PatchParams::apply("virtualcluster-tests").force();
        Api::<K>::all(client.clone())
            .patch(&name, &params, &Patch::Apply(&object))
            .await?;
        Ok(())
    }
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_json::Value::deserialize(doc)?;
        match value["kind"].as_str() {
            Some("ClusterRole") => apply::<ClusterRole>(client, value).await?,
            Some("ValidatingAdmissionPolicy") => {
                apply::<ValidatingAdmissionPolicy>(client, value).await?
            }
            Some("ValidatingAdmissionPolicyBinding") => {
                apply::<ValidatingAdmissionPolicyBinding>(client, value).await?
            }
            other => anyhow::bail!("unexpected document kind {other:?}"),
        }
    }
    Ok(())
}

/// Applies the committed CRD, its two admission policies and the syncers' access
/// (server-side, idempotent) and returns once the CRD is Established.
pub async fn install(client: &kube::Client) -> anyhow::Result<()> {
    install_claim_policy(client).await?;
    apply_documents(client, &sync_keys_policy_yaml()).await?;
    apply_documents(client, &syncer_access_yaml()).await?;
    apply_crds(client, &committed_yaml()).await
}

/// Applies each CustomResourceDefinition of the YAML stream `yaml` and returns once all are
/// Established.
pub async fn apply_crds(client: &kube::Client, yaml: &str) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("virtualcluster-tests").force();
    let mut names = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let Some(crd) = Option::<CustomResourceDefinition>::deserialize(doc)? else {
            continue;
        };
        let name = crd.metadata.name.clone().expect("a CRD has a name");
        api.patch(&name, &params, &Patch::Apply(&crd)).await?;
        names.push(name);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for name in names {
        loop {
            let established = api
                .get(&name)
                .await?
                .status
                .and_then(|s| s.conditions)
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            if established {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "CRD {name} not Established after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
