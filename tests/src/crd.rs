//! Installs the committed VirtualCluster CRD (the exact bytes users apply) and waits until the
//! API server serves it.

use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};

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

/// Applies the committed admission policy that authorizes host namespace claims and its
/// binding (server-side, idempotent).
pub async fn install_claim_policy(client: &kube::Client) -> anyhow::Result<()> {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    use serde::Deserialize;
    let params = PatchParams::apply("virtualcluster-tests").force();
    let yaml = claim_policy_yaml();
    let mut docs = serde_yaml::Deserializer::from_str(&yaml);
    let policy = ValidatingAdmissionPolicy::deserialize(docs.next().expect("the policy"))?;
    let binding = ValidatingAdmissionPolicyBinding::deserialize(docs.next().expect("its binding"))?;
    let name = policy.metadata.name.clone().expect("the policy has a name");
    Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .patch(&name, &params, &Patch::Apply(&policy))
        .await?;
    let name = binding
        .metadata
        .name
        .clone()
        .expect("the binding has a name");
    Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .patch(&name, &params, &Patch::Apply(&binding))
        .await?;
    Ok(())
}

/// Applies the committed CRD and the claim policy (server-side, idempotent) and returns once
/// the CRD is Established.
pub async fn install(client: &kube::Client) -> anyhow::Result<()> {
    install_claim_policy(client).await?;
    let crd: CustomResourceDefinition = serde_yaml::from_str(&committed_yaml())?;
    let name = crd.metadata.name.clone().expect("the CRD has a name");
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("virtualcluster-tests").force();
    api.patch(&name, &params, &Patch::Apply(&crd)).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
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
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "CRD {name} not Established after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
