//! What a patch may not change in a host copy, kind by kind: the fields through which the
//! translation keeps an object to its instance (selectors narrowed to the instance's pods, the
//! objects it names, the platform's limits). A patched copy gets them back from the unpatched
//! translation, or is not written at all where putting back cannot make it safe.

use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use virtualcluster_crds::keys::RESERVED_PREFIX;

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;

use crate::context::Ctx;
use crate::translate::extra;
use crate::translate::pod::{self as pod, camel};

/// A kind whose host copies patches may change.
pub trait Held: Sized {
    /// Puts back in `patched` what the syncer decided in `unpatched`, and says what it put
    /// back; `Err` (why) when the patched copy must not reach the host.
    fn hold(_ctx: &Ctx, _unpatched: &Self, _patched: &mut Self) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
}

/// Puts back each named field of `$object` from `$wanted`, noting it (after `$at`, where the
/// fields are: `"spec."`) in `$notes`.
macro_rules! keep {
    ($notes:expr, $at:expr, $object:expr, $wanted:expr, $($field:ident),*) => {$(
        if $object.$field != $wanted.$field {
            $notes.push(format!("{}{} (set by the syncer)", $at, camel(stringify!($field))));
            $object.$field = $wanted.$field.clone();
        }
    )*};
}

/// What gives a pod an identity, a node and a place in the host's scheduling comes back; a
/// toleration the platform does not offer goes; it may name no object the unpatched pod does
/// not. (The Pod Security check follows, on the patched pod.)
impl Held for Pod {
    fn hold(ctx: &Ctx, unpatched: &Self, patched: &mut Self) -> Result<Vec<String>, String> {
        let mut notes = Vec::new();
        let (Some(wanted), Some(spec)) = (unpatched.spec.as_ref(), patched.spec.as_mut()) else {
            return Err("a patch removed the pod's spec".into());
        };
        keep!(
            notes,
            "spec.",
            spec,
            wanted,
            service_account_name,
            service_account,
            automount_service_account_token,
            node_name,
            node_selector,
            priority_class_name,
            priority,
            runtime_class_name,
            scheduler_name,
            dns_policy,
            dns_config
        );
        if let Some(tolerations) = spec.tolerations.as_mut() {
            let before = wanted.tolerations.clone().unwrap_or_default();
            tolerations.retain(|t| {
                let keep = before.contains(t) || pod::allowed_toleration(t, &ctx.config.policy);
                if !keep {
                    notes.push(format!(
                        "toleration {} (not offered by the platform)",
                        t.key.as_deref().unwrap_or("*")
                    ));
                }
                keep
            });
        }
        // A service-account token projected into the host pod would be a host credential.
        if pod::token_requests(patched).len() > pod::token_requests(unpatched).len() {
            return Err(
                "a patch adds a projected service-account token, which would be a host \
                 credential; the pod does not run on the host"
                    .into(),
            );
        }
        let named = |pod: &Pod| -> BTreeSet<(pod::Referenced, String)> {
            pod::references(pod)
                .into_iter()
                .map(|r| (r.kind, r.name))
                .collect()
        };
        let allowed = named(unpatched);
        if let Some(r) = pod::references(patched)
            .into_iter()
            .find(|r| !allowed.contains(&(r.kind, r.name.clone())))
        {
            return Err(format!(
                "a patch makes {} name {} {}, which the pod does not use; the pod does not run \
                 on the host",
                r.field,
                r.kind.kind(),
                r.name
            ));
        }
        Ok(notes)
    }
}

impl Held for ConfigMap {}
impl Held for Secret {}
impl Held for Endpoints {}
/// Custom resources: the syncer decides nothing in them beyond the copy's name and marks.
impl Held for kube::api::DynamicObject {}

impl Held for Service {
    fn hold(_: &Ctx, unpatched: &Self, patched: &mut Self) -> Result<Vec<String>, String> {
        let mut notes = Vec::new();
        let (Some(wanted), Some(spec)) = (&unpatched.spec, patched.spec.as_mut()) else {
            return Err("a patch removed the Service's spec".into());
        };
        // The type is the platform's to allow; addresses are the host's to give.
        keep!(
            notes,
            "spec.",
            spec,
            wanted,
            type_,
            external_ips,
            external_name,
            load_balancer_ip,
            cluster_ip,
            cluster_ips
        );
        // The selector keeps the marks that narrow it to this instance's pods.
        if let Some(selector) = spec.selector.as_mut() {
            let own = wanted.selector.clone().unwrap_or_default();
            selector.retain(|k, _| !k.starts_with(RESERVED_PREFIX));
            selector.extend(
                own.into_iter()
                    .filter(|(k, _)| k.starts_with(RESERVED_PREFIX)),
            );
        } else if wanted.selector.is_some() {
            notes.push("spec.selector (set by the syncer)".into());
            spec.selector = wanted.selector.clone();
        }
        Ok(notes)
    }
}

impl Held for PersistentVolumeClaim {
    fn hold(_: &Ctx, unpatched: &Self, patched: &mut Self) -> Result<Vec<String>, String> {
        let mut notes = Vec::new();
        let (Some(wanted), Some(spec)) = (&unpatched.spec, patched.spec.as_mut()) else {
            return Err("a patch removed the claim's spec".into());
        };
        // What it binds to or copies from: another's volume or claim otherwise.
        keep!(
            notes,
            "spec.",
            spec,
            wanted,
            volume_name,
            data_source,
            data_source_ref,
            selector
        );
        Ok(notes)
    }
}

impl Held for ServiceAccount {
    fn hold(_: &Ctx, unpatched: &Self, patched: &mut Self) -> Result<Vec<String>, String> {
        let mut notes = Vec::new();
        keep!(
            notes,
            "",
            patched,
            unpatched,
            secrets,
            image_pull_secrets,
            automount_service_account_token
        );
        Ok(notes)
    }
}

impl Held for Ingress {
    fn hold(ctx: &Ctx, unpatched: &Self, patched: &mut Self) -> Result<Vec<String>, String> {
        let named = |i: &Ingress| -> std::collections::BTreeSet<String> {
            let mut names: std::collections::BTreeSet<String> =
                extra::ingress_secrets(i).into_iter().collect();
            names.extend(extra::ingress_services(i));
            names
        };
        let allowed = named(unpatched);
        if let Some(name) = named(patched).into_iter().find(|n| !allowed.contains(n)) {
            return Err(format!(
                "a patch makes the Ingress name {name}, which it does not use; it is not synced"
            ));
        }
        // Host names others serve, and snippets, stay out whatever a patch added.
        let taken = |host: &str| ctx.host_name_taken(host);
        Ok(extra::restrict_ingress(
            patched,
            ctx.config.policy.ingress_snippets,
            &taken,
        ))
    }
}

impl Held for NetworkPolicy {
    fn hold(_: &Ctx, unpatched: &Self, patched: &mut Self) -> Result<Vec<String>, String> {
        let mut notes = Vec::new();
        let (Some(wanted), Some(spec)) = (&unpatched.spec, patched.spec.as_mut()) else {
            return Err("a patch removed the NetworkPolicy's spec".into());
        };
        // Which pods it applies to: this instance's only.
        keep!(notes, "spec.", spec, wanted, pod_selector);
        Ok(notes)
    }
}

impl Held for PodDisruptionBudget {
    fn hold(_: &Ctx, unpatched: &Self, patched: &mut Self) -> Result<Vec<String>, String> {
        let mut notes = Vec::new();
        let (Some(wanted), Some(spec)) = (&unpatched.spec, patched.spec.as_mut()) else {
            return Err("a patch removed the PodDisruptionBudget's spec".into());
        };
        keep!(notes, "spec.", spec, wanted, selector);
        Ok(notes)
    }
}

impl Held for PriorityClass {
    fn hold(_: &Ctx, unpatched: &Self, patched: &mut Self) -> Result<Vec<String>, String> {
        let mut notes = Vec::new();
        // The platform caps the value; no tenant's class is the host's default.
        keep!(notes, "", patched, unpatched, value, global_default);
        Ok(notes)
    }
}
