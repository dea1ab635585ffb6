//! The VirtualCluster's status, computed from what was observed (pure), in the conventions
//! kubectl, Argo CD and Flux read: `observedGeneration`, `Ready`, `Reconciling`, `Stalled`, a
//! phase, and conditions that keep their transition time while their status holds.

use k8s_openapi::api::apps::v1::{DeploymentStatus, StatefulSetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use virtualcluster_crds::VirtualCluster;
use virtualcluster_crds::v1alpha1::{Phase, VirtualClusterStatus};

use crate::caches::Lite;
use crate::validate::Invalid;

pub mod condition {
    pub const CONFIG_VALID: &str = "ConfigValid";
    pub const CONTROL_PLANE_READY: &str = "ControlPlaneReady";
    pub const SYNCER_READY: &str = "SyncerReady";
    pub const READY: &str = "Ready";
    /// Flux's convention: the object is progressing towards its desired state.
    pub const RECONCILING: &str = "Reconciling";
    /// Flux's convention: it cannot progress without a change from the user.
    pub const STALLED: &str = "Stalled";
    /// With namespace syncing: no host namespace the mappings claim is held by another
    /// instance (those that are stay untouched).
    pub const NAMESPACES_AVAILABLE: &str = "NamespacesAvailable";
    /// With custom resources: each one's CRD is on the host, with the scope the spec says.
    pub const CUSTOM_RESOURCES_AVAILABLE: &str = "CustomResourcesAvailable";
}

/// Reason of a false [`condition::CUSTOM_RESOURCES_AVAILABLE`].
pub const CUSTOM_RESOURCE_DEFINITION_MISSING: &str = "CustomResourceDefinitionMissing";

/// Reason of a false [`condition::NAMESPACES_AVAILABLE`], and of its Event.
pub const HOST_NAMESPACE_CONFLICT: &str = "HostNamespaceConflict";

/// What the status is computed from.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The configuration's verdict.
    pub config: Result<(), &'a Invalid>,
    pub stateful_set: Option<&'a Lite<StatefulSetStatus>>,
    pub deployment: Option<&'a Lite<DeploymentStatus>>,
    /// The syncer replicas the spec asks for.
    pub syncer_replicas: i32,
    /// Name of the admin kubeconfig Secret, once it was written.
    pub kube_config_secret: Option<&'a str>,
    pub notes: Notes<'a>,
}

/// What the status reports beyond the parts' readiness, each only where it applies.
#[derive(Debug, Clone, Copy, Default)]
pub struct Notes<'a> {
    /// With namespace syncing: the host namespaces its mappings claim that another instance
    /// holds (see [`crate::validate::held_by_others`]).
    pub held_namespaces: Option<&'a [String]>,
    /// With custom resources: those left out, and why (see [`crate::custom::resolve`]).
    pub missing_custom_resources: Option<&'a [String]>,
}

/// One condition's verdict.
struct Verdict {
    ok: bool,
    reason: &'static str,
    message: String,
}

impl Verdict {
    fn yes(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            ok: true,
            reason,
            message: message.into(),
        }
    }

    fn no(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            ok: false,
            reason,
            message: message.into(),
        }
    }
}

fn control_plane(sts: Option<&Lite<StatefulSetStatus>>) -> Verdict {
    let Some(sts) = sts else {
        return Verdict::no(
            "NotProvisioned",
            "the control plane StatefulSet does not exist yet",
        );
    };
    let name = sts.metadata.name.as_deref().unwrap_or_default();
    let want = 1;
    let status = sts.status.clone().unwrap_or_default();
    let ready = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    if status.observed_generation < sts.metadata.generation {
        return Verdict::no(
            "RollingOut",
            format!("StatefulSet {name}: the new spec is not observed yet"),
        );
    }
    if updated < want || status.current_revision != status.update_revision {
        return Verdict::no(
            "RollingOut",
            format!("StatefulSet {name}: {updated}/{want} pods updated"),
        );
    }
    if ready < want {
        return Verdict::no(
            "PodsNotReady",
            format!("StatefulSet {name}: {ready}/{want} pods ready"),
        );
    }
    Verdict::yes(
        "Running",
        format!("StatefulSet {name}: {ready}/{want} pods ready"),
    )
}

fn syncer(deployment: Option<&Lite<DeploymentStatus>>, want: i32) -> Verdict {
    let Some(deployment) = deployment else {
        return Verdict::no("NotProvisioned", "the syncer Deployment does not exist yet");
    };
    let name = deployment.metadata.name.as_deref().unwrap_or_default();
    let status = deployment.status.clone().unwrap_or_default();
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if status.observed_generation < deployment.metadata.generation || updated < want {
        return Verdict::no(
            "RollingOut",
            format!("Deployment {name}: {updated}/{want} pods updated"),
        );
    }
    if available < want || status.replicas.unwrap_or(0) > want {
        return Verdict::no(
            "PodsNotReady",
            format!("Deployment {name}: {available}/{want} pods available"),
        );
    }
    Verdict::yes(
        "Running",
        format!("Deployment {name}: {available}/{want} pods available"),
    )
}

/// The status `vc` should have, given what was observed at `now`. Conditions whose status did
/// not change keep their transition time.
pub fn compute(vc: &VirtualCluster, observed: Observed<'_>, now: Time) -> VirtualClusterStatus {
    use condition::*;
    let generation = vc.metadata.generation;
    let old = vc.status.clone().unwrap_or_default();
    let config = match observed.config {
        Ok(()) => Verdict::yes("Valid", "the configuration is valid"),
        Err(invalid) => Verdict::no(invalid.reason, invalid.message.clone()),
    };
    let (control_plane, syncer) = if config.ok {
        (
            control_plane(observed.stateful_set),
            syncer(observed.deployment, observed.syncer_replicas),
        )
    } else {
        let why = "not provisioned: the configuration is invalid (see ConfigValid)";
        (
            Verdict::no("ConfigInvalid", why),
            Verdict::no("ConfigInvalid", why),
        )
    };
    let ready = if !config.ok {
        Verdict::no("ConfigInvalid", config.message.clone())
    } else if !control_plane.ok {
        Verdict::no("ControlPlaneNotReady", control_plane.message.clone())
    } else if !syncer.ok {
        Verdict::no("SyncerNotReady", syncer.message.clone())
    } else {
        Verdict::yes(
            "Ready",
            match observed.kube_config_secret {
                Some(secret) => {
                    format!("the virtual cluster is ready; its kubeconfig is in Secret {secret}")
                }
                None => "the virtual cluster is ready".to_owned(),
            },
        )
    };
    let reconciling = if config.ok && !ready.ok {
        Verdict::yes("Provisioning", ready.message.clone())
    } else {
        Verdict::no(if ready.ok { "Ready" } else { "Stalled" }, "")
    };
    let stalled = if config.ok {
        Verdict::no("Valid", "")
    } else {
        Verdict::yes(config.reason, config.message.clone())
    };
    let phase = if !config.ok {
        Phase::Failed
    } else if ready.ok {
        Phase::Ready
    } else if observed.stateful_set.is_none() {
        Phase::Pending
    } else {
        Phase::Provisioning
    };
    let conditions = [
        (CONFIG_VALID, config),
        (CONTROL_PLANE_READY, control_plane),
        (SYNCER_READY, syncer),
        (READY, ready),
        (RECONCILING, reconciling),
        (STALLED, stalled),
    ]
    .into_iter()
    .chain(observed.notes.missing_custom_resources.map(|missing| {
        let verdict = if missing.is_empty() {
            Verdict::yes(
                "Found",
                "every custom resource it syncs is defined on the host",
            )
        } else {
            Verdict::no(
                CUSTOM_RESOURCE_DEFINITION_MISSING,
                format!("not synced: {}", missing.join("; ")),
            )
        };
        (CUSTOM_RESOURCES_AVAILABLE, verdict)
    }))
    .chain(observed.notes.held_namespaces.map(|held| {
        let verdict = if held.is_empty() {
            Verdict::yes(
                "NoConflict",
                "no host namespace the mappings claim is held by another instance",
            )
        } else {
            Verdict::no(
                HOST_NAMESPACE_CONFLICT,
                format!("not imported, left untouched: {}", held.join("; ")),
            )
        };
        (NAMESPACES_AVAILABLE, verdict)
    }))
    .map(|(type_, v)| condition(&old.conditions, type_, v, generation, &now))
    .collect();
    VirtualClusterStatus {
        observed_generation: generation,
        phase: Some(phase),
        conditions,
        kube_config_secret: observed.kube_config_secret.map(str::to_owned),
        cleanup_remaining: Vec::new(),
    }
}

fn condition(
    old: &[Condition],
    type_: &str,
    verdict: Verdict,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if verdict.ok { "True" } else { "False" };
    let last_transition_time = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: verdict.reason.to_owned(),
        message: verdict.message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// The status `old` with its phase set to Deleting (and Ready false), for the cleanup.
/// `remaining` is what the cleanup has left to do, as far as it knows.
pub fn deleting(vc: &VirtualCluster, now: Time, remaining: Vec<String>) -> VirtualClusterStatus {
    let mut status = vc.status.clone().unwrap_or_default();
    status.phase = Some(Phase::Deleting);
    let message = if remaining.is_empty() {
        "the VirtualCluster is being deleted".to_owned()
    } else {
        format!(
            "the VirtualCluster is being deleted; left: {}",
            remaining.join("; ")
        )
    };
    status.cleanup_remaining = remaining;
    let old = status.conditions.clone();
    status.conditions.retain(|c| c.type_ != condition::READY);
    status.conditions.push(condition(
        &old,
        condition::READY,
        Verdict::no("Deleting", &message),
        vc.metadata.generation,
        &now,
    ));
    status
}

/// Whether condition `type_` is true in `status`.
pub fn is_true(status: Option<&VirtualClusterStatus>, type_: &str) -> bool {
    status.is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;
    use kube::api::NotUsed;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn vc(generation: i64) -> VirtualCluster {
        let mut vc = VirtualCluster::new("demo", Default::default());
        vc.metadata.generation = Some(generation);
        vc
    }

    fn lite<S: Clone>(name: &str, status: S) -> Lite<S> {
        let mut lite = Lite::new(
            name,
            &kube::api::ApiResource::erase::<k8s_openapi::api::apps::v1::StatefulSet>(&()),
            NotUsed {},
        );
        lite.metadata.generation = Some(1);
        lite.status = Some(status);
        lite
    }

    fn sts(ready: i32) -> Lite<StatefulSetStatus> {
        lite(
            "demo",
            StatefulSetStatus {
                observed_generation: Some(1),
                ready_replicas: Some(ready),
                updated_replicas: Some(1),
                replicas: 1,
                current_revision: Some("r1".into()),
                update_revision: Some("r1".into()),
                ..Default::default()
            },
        )
    }

    fn deployment(available: i32) -> Lite<DeploymentStatus> {
        lite(
            "demo-syncer",
            DeploymentStatus {
                observed_generation: Some(1),
                updated_replicas: Some(1),
                available_replicas: Some(available),
                replicas: Some(1),
                ..Default::default()
            },
        )
    }

    fn get<'a>(status: &'a VirtualClusterStatus, type_: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn ready_when_both_parts_run() {
        let (s, d) = (sts(1), deployment(1));
        let status = compute(
            &vc(3),
            Observed {
                config: Ok(()),
                stateful_set: Some(&s),
                deployment: Some(&d),
                syncer_replicas: 1,
                kube_config_secret: Some("vc-demo"),
                notes: Notes::default(),
            },
            at(100),
        );
        assert_eq!(status.phase, Some(Phase::Ready));
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(get(&status, "Ready").status, "True");
        assert!(get(&status, "Ready").message.contains("vc-demo"));
        assert_eq!(get(&status, "Reconciling").status, "False");
        assert_eq!(get(&status, "Stalled").status, "False");
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(3))
        );
    }

    #[test]
    fn what_is_missing_is_named() {
        let (s, d) = (sts(0), deployment(1));
        let status = compute(
            &vc(1),
            Observed {
                config: Ok(()),
                stateful_set: Some(&s),
                deployment: Some(&d),
                syncer_replicas: 1,
                kube_config_secret: None,
                notes: Notes::default(),
            },
            at(100),
        );
        assert_eq!(status.phase, Some(Phase::Provisioning));
        let ready = get(&status, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "ControlPlaneNotReady")
        );
        assert!(
            ready.message.contains("0/1 pods ready"),
            "{}",
            ready.message
        );
        assert_eq!(get(&status, "Reconciling").status, "True");

        let status = compute(
            &vc(1),
            Observed {
                config: Ok(()),
                stateful_set: None,
                deployment: None,
                syncer_replicas: 1,
                kube_config_secret: None,
                notes: Notes::default(),
            },
            at(100),
        );
        assert_eq!(status.phase, Some(Phase::Pending));
    }

    #[test]
    fn an_invalid_config_stalls_and_fails() {
        let invalid = Invalid {
            reason: "OwnNamespace",
            message: "no mapping may target the VirtualCluster's own namespace".into(),
        };
        let status = compute(
            &vc(1),
            Observed {
                config: Err(&invalid),
                stateful_set: None,
                deployment: None,
                syncer_replicas: 1,
                kube_config_secret: None,
                notes: Notes::default(),
            },
            at(100),
        );
        assert_eq!(status.phase, Some(Phase::Failed));
        let valid = get(&status, "ConfigValid");
        assert_eq!(
            (valid.status.as_str(), valid.reason.as_str()),
            ("False", "OwnNamespace")
        );
        assert_eq!(get(&status, "Stalled").status, "True");
        assert_eq!(get(&status, "Reconciling").status, "False");
        assert_eq!(get(&status, "Ready").reason, "ConfigInvalid");
    }

    #[test]
    fn transition_times_move_only_on_a_change() {
        let (s, d) = (sts(0), deployment(1));
        let observed = |s| Observed {
            config: Ok(()),
            stateful_set: Some(s),
            deployment: Some(&d),
            syncer_replicas: 1,
            kube_config_secret: None,
            notes: Notes::default(),
        };
        let mut v = vc(1);
        v.status = Some(compute(&v, observed(&s), at(100)));
        let again = compute(&v, observed(&s), at(200));
        assert_eq!(
            Some(&again),
            v.status.as_ref(),
            "nothing changed, nothing to write"
        );
        let ready = sts(1);
        let later = compute(&v, observed(&ready), at(300));
        assert_eq!(get(&later, "Ready").last_transition_time, at(300));
        assert_eq!(get(&later, "ConfigValid").last_transition_time, at(100));
    }
}
