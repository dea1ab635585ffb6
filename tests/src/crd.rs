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

/// Applies the committed CRD (server-side, idempotent) and returns once it is Established.
pub async fn install(client: &kube::Client) -> anyhow::Result<()> {
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
