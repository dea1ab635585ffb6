//! What the operator renders for one instance, for the unit tests of the plans made from it.

use k8s_openapi::api::core::v1::Secret;
use virtualcluster_crds::VirtualCluster;
use virtualcluster_operator::build::{self, Desired, Instance};
use virtualcluster_operator::pki;
use virtualcluster_operator::settings::{self, Settings};
use virtualcluster_operator::validate;

/// The ClusterIP of the syncer's Service the children are rendered with.
pub const SYNCER_IP: &str = "10.96.3.5";

/// Every child the operator renders for `demo` in `team-a` (after `edit`), and the
/// certificates Secret they were rendered with.
pub fn rendered(edit: impl FnOnce(&mut VirtualCluster)) -> (Desired, Secret) {
    let mut vc = VirtualCluster::new("demo", Default::default());
    vc.metadata.namespace = Some("team-a".into());
    vc.metadata.uid = Some("uid-1".into());
    edit(&mut vc);
    let valid = validate::validate(&vc, None, &settings::Settings::default()).unwrap();
    let settings = Settings::default();
    let instance = Instance {
        vc: &vc,
        valid: &valid,
        settings: &settings,
    };
    let subjects = build::cert_subjects(&instance, Some("10.96.3.4"), Some(SYNCER_IP));
    let bundle = pki::issue(
        pki::Plan::IssueAll,
        None,
        None,
        &subjects,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let desired = build::desired(&instance, &bundle.data, Some(SYNCER_IP)).unwrap();
    (desired, build::certs_secret(&instance, &bundle))
}
