//! Validation of a VirtualCluster beyond what admission checks: the shared mapping rules
//! (including the one CEL cannot see, the instance's own namespace), the namespace-sync block
//! against the one the instance runs with, and the service CIDR. Pure: no API calls.

use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use virtualcluster_crds::instance::InstanceRef;
use virtualcluster_crds::mapping::{self, Instance, NamespaceMapper};
use virtualcluster_crds::policy::HostPolicy;
use virtualcluster_crds::v1alpha1::NamespaceSync;
use virtualcluster_crds::{VirtualCluster, keys, marks};

use crate::settings::Settings;

/// Why a configuration cannot be provisioned: a CamelCase reason for the condition and Event,
/// and a message naming the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub reason: &'static str,
    pub message: String,
}

/// A configuration that can be provisioned.
#[derive(Debug, Clone)]
pub struct Valid {
    pub instance: InstanceRef,
    pub mapper: NamespaceMapper,
    /// The virtual cluster's service IP range.
    pub service_cidr: String,
    /// The first address of that range: the virtual `kubernetes` Service's ClusterIP.
    pub kubernetes_service_ip: IpAddr,
    /// What the instance's workloads may do on the host: the platform's policy at the level
    /// the spec asks for.
    pub policy: HostPolicy,
    /// The custom resources it syncs, as the host's CRDs define them (filled in by the
    /// controller, which reads them: validation makes no API calls).
    pub custom_resources: crate::custom::Resolved,
    /// Kinds turned off whose host copies are not removed yet (filled in by the controller,
    /// from the syncer ConfigMap's record; see `turned_off`).
    pub turned_off: Vec<virtualcluster_crds::kinds::Kind>,
}

/// Checks `vc`. `running` is the namespace-sync block of the configuration the instance already
/// runs with, if any: namespace syncing cannot change after creation.
pub fn validate(
    vc: &VirtualCluster,
    running: Option<&NamespaceSync>,
    settings: &Settings,
) -> Result<Valid, Invalid> {
    let default_service_cidr = &settings.service_cidr;
    let instance = InstanceRef::of(vc);
    let namespaces = &vc.spec.sync.to_host.namespaces;
    let mapper = mapping::validate(
        namespaces,
        Instance {
            name: &instance.name,
            namespace: &instance.namespace,
        },
    )
    .map_err(|violations| {
        let first = violations.0[0].rule;
        Invalid {
            reason: first.reason(),
            message: violations
                .0
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        }
    })?;
    if let Some(reserved) = settings
        .reserved_namespaces
        .iter()
        .find(|ns| mapper.claims_host(ns))
    {
        return Err(Invalid {
            reason: NAMESPACE_NOT_CLAIMABLE,
            message: format!(
                "spec.sync.toHost.namespaces.mappings.byName: a host side could claim namespace \
                 {reserved}, which the platform reserves (the operator's own namespace, or one \
                 listed in --reserved-namespaces); no VirtualCluster may claim it"
            ),
        });
    }
    if let Some(running) = running {
        mapping::validate_transition(running, namespaces).map_err(|v| Invalid {
            reason: v.rule.reason(),
            message: v.to_string(),
        })?;
    }
    let service_cidr = vc
        .spec
        .control_plane
        .service_cidr
        .clone()
        .unwrap_or_else(|| default_service_cidr.to_owned());
    let kubernetes_service_ip = first_address(&service_cidr).ok_or_else(|| Invalid {
        reason: "InvalidServiceCIDR",
        message: format!(
            "spec.controlPlane.serviceCIDR: {service_cidr:?} is not an IPv4 or IPv6 range in CIDR notation (address/prefix length)"
        ),
    })?;
    let policy = host_policy(vc, &settings.platform)?;
    if let Some(image) = &vc.spec.syncer.image
        && !settings
            .allowed_syncer_images
            .iter()
            .any(|pattern| image_matches(pattern, image))
    {
        return Err(Invalid {
            reason: SYNCER_IMAGE_NOT_ALLOWED,
            message: format!(
                "spec.syncer.image: {image:?} is not an image the platform allows for syncers \
                 (allowed: {}); leave it unset for the operator's own",
                settings.allowed_syncer_images.join(", ")
            ),
        });
    }
    custom_resources_allowed(vc, &policy)?;
    // Compiled here so that a patch that cannot compile is refused now, not met at sync time.
    virtualcluster_crds::patches::Patches::compile(&vc.spec.sync).map_err(|e| Invalid {
        reason: INVALID_PATCH,
        message: e.to_string(),
    })?;
    Ok(Valid {
        instance,
        mapper,
        service_cidr,
        kubernetes_service_ip,
        policy,
        custom_resources: Default::default(),
        turned_off: Vec::new(),
    })
}

/// Reason of a mapping that could claim a namespace the platform reserves.
pub const NAMESPACE_NOT_CLAIMABLE: &str = "NamespaceNotClaimable";

/// Reason of a patch that does not parse or compile.
pub const INVALID_PATCH: &str = "InvalidPatch";

/// Reason of a custom resource the platform does not let instances sync.
pub const CUSTOM_RESOURCE_NOT_ALLOWED: &str = "CustomResourceNotAllowed";

/// Each custom resource `vc` syncs is one the platform allows in that direction, and a
/// namespaced one shown from the host comes from the instance's own namespace: another host
/// namespace's objects are not the author's to read.
fn custom_resources_allowed(vc: &VirtualCluster, policy: &HostPolicy) -> Result<(), Invalid> {
    use virtualcluster_crds::kinds::{self, Direction};
    let own = vc.metadata.namespace.as_deref().unwrap_or_default();
    for (resource, _, direction) in kinds::custom_resources(&vc.spec.sync) {
        let (side, flag) = match direction {
            Direction::ToHost => ("toHost", "--custom-resources-to-host"),
            Direction::FromHost => ("fromHost", "--custom-resources-from-host"),
        };
        if !policy.allows_custom_resource(&resource, direction) {
            return Err(Invalid {
                reason: CUSTOM_RESOURCE_NOT_ALLOWED,
                message: format!(
                    "spec.sync.{side}.customResources[{resource:?}]: the platform does not let \
                     virtual clusters sync this kind (it lists those it allows in {flag})"
                ),
            });
        }
    }
    for (resource, from) in &vc.spec.sync.from_host.custom_resources {
        let mut by_name = from.mappings.iter().flat_map(|m| m.by_name.keys());
        if let Some(source) = by_name
            .find(|host| host.split('/').next() != Some(own))
            .filter(|_| from.enabled)
        {
            return Err(Invalid {
                reason: CUSTOM_RESOURCE_NOT_ALLOWED,
                message: format!(
                    "spec.sync.fromHost.customResources[{resource:?}].mappings.byName: \
                     {source:?} is in another host namespace than the VirtualCluster's own \
                     ({own}), whose objects it may not read"
                ),
            });
        }
    }
    Ok(())
}

/// Reason of a syncer image the platform does not allow.
pub const SYNCER_IMAGE_NOT_ALLOWED: &str = "SyncerImageNotAllowed";

/// Whether image reference `image` matches `pattern`: equal, or starting with what precedes a
/// trailing `*`.
fn image_matches(pattern: &str, image: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => image.starts_with(prefix),
        None => image == pattern,
    }
}

/// Reason of a pod security level below the platform's floor.
pub const BELOW_PLATFORM_FLOOR: &str = "BelowPlatformFloor";

/// The platform's policy (`platform`, whose level is the floor) at the level `vc` asks for: the
/// floor when it asks for none, refused when it asks for less.
fn host_policy(vc: &VirtualCluster, platform: &HostPolicy) -> Result<HostPolicy, Invalid> {
    let floor = platform.pod_security;
    let level = match vc.spec.policies.pod_security_standard {
        None => floor,
        Some(asked) if asked >= floor => asked,
        Some(asked) => {
            return Err(Invalid {
                reason: BELOW_PLATFORM_FLOOR,
                message: format!(
                    "spec.policies.podSecurityStandard: {asked} is less strict than the \
                     platform's floor, {floor}; ask for {floor} or stricter"
                ),
            });
        }
    };
    Ok(HostPolicy {
        pod_security: level,
        ..platform.clone()
    })
}

/// The host namespaces `valid`'s mappings claim that another instance holds (its marks are on
/// them: it created or imported them), each with who holds it. `held` are the host namespaces
/// that carry some instance's marks. The syncer leaves them alone; the status says why.
pub fn held_by_others<'a>(
    valid: &Valid,
    held: impl IntoIterator<Item = &'a ObjectMeta>,
) -> Vec<String> {
    let mut clashes: Vec<String> = held
        .into_iter()
        .filter_map(|ns| {
            let labels = ns.labels.as_ref()?;
            let name = ns.name.as_deref().unwrap_or_default();
            let theirs = labels.get(keys::SYNCED_BY_UID) != Some(&valid.instance.uid);
            let holder = marks::holder(labels)?;
            (theirs && valid.mapper.claims_host(name))
                .then(|| format!("host namespace {name} is held by {holder}"))
        })
        .collect();
    clashes.sort();
    clashes
}

/// Reason of [`conflict`]'s refusal.
pub const MAPPING_CONFLICT: &str = "MappingConflict";

/// Whether `a` came before `b`: the older of two conflicting instances keeps its namespaces.
fn precedes(a: &VirtualCluster, b: &VirtualCluster) -> bool {
    let key = |vc: &VirtualCluster| {
        (
            vc.metadata.creation_timestamp.clone(),
            vc.metadata.uid.clone().unwrap_or_default(),
        )
    };
    key(a) < key(b)
}

/// Checks `vc`'s host mappings against the other instances (`others`, which may include `vc`):
/// none may claim a host namespace that an older instance's mappings could claim, or the
/// namespace an older instance runs in. The newer instance is refused, so one that runs is
/// never taken away its namespaces by one created later.
pub fn conflict(
    vc: &VirtualCluster,
    valid: &Valid,
    others: &[&VirtualCluster],
) -> Result<(), Invalid> {
    let me = &valid.instance;
    for other in others {
        let them = InstanceRef::of(other);
        if them.uid == me.uid || !precedes(other, vc) {
            continue;
        }
        let who = format!("VirtualCluster {}/{}", them.namespace, them.name);
        if valid.mapper.claims_host(&them.namespace) {
            return Err(Invalid {
                reason: MAPPING_CONFLICT,
                message: format!(
                    "spec.sync.toHost.namespaces.mappings.byName: a host side could claim \
                     namespace {}, where {who} runs",
                    them.namespace
                ),
            });
        }
        let theirs = mapping::validate(
            &other.spec.sync.to_host.namespaces,
            Instance {
                name: &them.name,
                namespace: &them.namespace,
            },
        );
        if let Ok(theirs) = theirs
            && let Some((mine, their_side)) = valid.mapper.overlapping_host(&theirs)
        {
            return Err(Invalid {
                reason: MAPPING_CONFLICT,
                message: format!(
                    "spec.sync.toHost.namespaces.mappings.byName: host side {mine} could claim \
                     a namespace that host side {their_side} of {who} claims"
                ),
            });
        }
    }
    Ok(())
}

/// The first usable address of `cidr` (network address + 1), if it is a valid range with room
/// for it.
pub fn first_address(cidr: &str) -> Option<IpAddr> {
    let (addr, len) = virtualcluster_crds::policy::parse_cidr(cidr)?;
    match addr {
        IpAddr::V4(v4) if len <= 30 => {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            Some(IpAddr::V4(((u32::from(v4) & mask) + 1).into()))
        }
        IpAddr::V6(v6) if len <= 126 => {
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            Some(IpAddr::V6(((u128::from(v6) & mask) + 1).into()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtualcluster_crds::mapping::by_name;

    fn vc(namespace: &str, mappings: &[(&str, &str)]) -> VirtualCluster {
        let mut vc = VirtualCluster::new("vc", Default::default());
        vc.metadata.namespace = Some(namespace.into());
        vc.metadata.uid = Some("uid-1".into());
        let ns = &mut vc.spec.sync.to_host.namespaces;
        ns.enabled = !mappings.is_empty();
        ns.mappings.by_name = by_name(mappings.iter().copied());
        vc
    }

    fn created(mut vc: VirtualCluster, name: &str, uid: &str, second: i64) -> VirtualCluster {
        vc.metadata.name = Some(name.into());
        vc.metadata.uid = Some(uid.into());
        vc.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_second(second).unwrap(),
            ));
        vc
    }

    #[test]
    fn no_mapping_claims_a_namespace_the_platform_reserves() {
        let settings = Settings {
            reserved_namespaces: vec!["virtualcluster-system".into()],
            ..Settings::default()
        };
        for mappings in [
            &[("ops", "virtualcluster-system")][..],
            &[("v-*", "virtualcluster-*")][..],
        ] {
            let err = validate(&vc("team-a", mappings), None, &settings).unwrap_err();
            assert_eq!(err.reason, NAMESPACE_NOT_CLAIMABLE, "{mappings:?}");
            assert!(
                err.message.contains("virtualcluster-system"),
                "{}",
                err.message
            );
        }
        validate(
            &vc("team-a", &[("v-*", "virtualcluster-tenant-*")]),
            None,
            &settings,
        )
        .unwrap();
    }

    #[test]
    fn the_newer_of_two_instances_with_overlapping_host_sides_is_refused() {
        let older = created(vc("a", &[("team-*", "h-team-*")]), "first", "u1", 100);
        let newer = created(vc("b", &[("x", "h-team-b")]), "second", "u2", 200);
        let others = [&older, &newer];
        let valid = validate(&newer, None, &Settings::default()).unwrap();
        let err = conflict(&newer, &valid, &others).unwrap_err();
        assert_eq!(err.reason, MAPPING_CONFLICT);
        assert!(
            err.message.contains("VirtualCluster a/first"),
            "{}",
            err.message
        );
        // The older one keeps running.
        let valid = validate(&older, None, &Settings::default()).unwrap();
        assert_eq!(conflict(&older, &valid, &others), Ok(()));
        // Disjoint host sides do not conflict.
        let apart = created(vc("c", &[("x", "h-other")]), "third", "u3", 300);
        let valid = validate(&apart, None, &Settings::default()).unwrap();
        assert_eq!(conflict(&apart, &valid, &[&older, &apart]), Ok(()));
    }

    #[test]
    fn host_namespaces_another_instance_holds_are_reported() {
        let mine = created(vc("a", &[("sync-*", "host-*")]), "mine", "u1", 100);
        let valid = validate(&mine, None, &Settings::default()).unwrap();
        let ns = |name: &str, uid: &str| ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                [
                    (keys::SYNCED_BY.to_owned(), "other".to_owned()),
                    (keys::SYNCED_BY_NAMESPACE.to_owned(), "b".to_owned()),
                    (keys::SYNCED_BY_UID.to_owned(), uid.to_owned()),
                ]
                .into(),
            ),
            ..Default::default()
        };
        let held = [
            ns("host-taken", "u2"),
            ns("host-mine", "u1"),
            ns("elsewhere", "u2"),
        ];
        assert_eq!(
            held_by_others(&valid, &held),
            ["host namespace host-taken is held by VirtualCluster b/other (UID u2)"]
        );
    }

    #[test]
    fn a_mapping_onto_another_instances_namespace_is_refused() {
        let older = created(vc("shared", &[]), "first", "u1", 100);
        let newer = created(vc("b", &[("x", "shared")]), "second", "u2", 200);
        let valid = validate(&newer, None, &Settings::default()).unwrap();
        let err = conflict(&newer, &valid, &[&older]).unwrap_err();
        assert_eq!(err.reason, MAPPING_CONFLICT);
        assert!(
            err.message
                .contains("namespace shared, where VirtualCluster shared/first runs"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_valid_config_resolves() {
        let valid = validate(&vc("ns", &[("a-*", "h-a-*")]), None, &Settings::default()).unwrap();
        assert_eq!(valid.instance.uid, "uid-1");
        assert_eq!(valid.mapper.host_for("a-x").as_deref(), Some("h-a-x"));
        assert_eq!(valid.kubernetes_service_ip.to_string(), "10.96.0.1");
    }

    #[test]
    fn a_mapping_to_the_instances_own_namespace_is_invalid() {
        let err = validate(&vc("home", &[("x", "home")]), None, &Settings::default()).unwrap_err();
        assert_eq!(err.reason, "OwnNamespace");
        assert!(
            err.message
                .contains("spec.sync.toHost.namespaces.mappings.byName")
        );
        assert!(err.message.contains("own namespace"), "{}", err.message);
    }

    #[test]
    fn namespace_sync_may_not_change_from_what_runs() {
        let running = vc("ns", &[("a-*", "h-a-*")]).spec.sync.to_host.namespaces;
        let changed = vc("ns", &[("a-*", "h-b-*")]);
        let err = validate(&changed, Some(&running), &Settings::default()).unwrap_err();
        assert_eq!(err.reason, "NamespaceSyncChanged");
        assert!(
            validate(
                &vc("ns", &[("a-*", "h-a-*")]),
                Some(&running),
                &Settings::default()
            )
            .is_ok()
        );
    }

    #[test]
    fn the_pod_security_level_is_the_floor_or_stricter() {
        use virtualcluster_crds::v1alpha1::PodSecurityStandard::{
            Baseline, Privileged, Restricted,
        };
        let mut strict = Settings::default();
        strict.platform.pod_security = Restricted;
        let unset = vc("ns", &[]);
        assert_eq!(
            validate(&unset, None, &Settings::default())
                .unwrap()
                .policy
                .pod_security,
            Baseline
        );
        assert_eq!(
            validate(&unset, None, &strict).unwrap().policy.pod_security,
            Restricted
        );
        let mut asks = vc("ns", &[]);
        asks.spec.policies.pod_security_standard = Some(Restricted);
        assert_eq!(
            validate(&asks, None, &Settings::default())
                .unwrap()
                .policy
                .pod_security,
            Restricted
        );
        asks.spec.policies.pod_security_standard = Some(Privileged);
        let err = validate(&asks, None, &Settings::default()).unwrap_err();
        assert_eq!(err.reason, BELOW_PLATFORM_FLOOR);
        assert!(
            err.message.contains("spec.policies.podSecurityStandard"),
            "{}",
            err.message
        );
        assert!(err.message.contains("floor, baseline"), "{}", err.message);
        let mut open = Settings::default();
        open.platform.pod_security = Privileged;
        assert_eq!(
            validate(&asks, None, &open).unwrap().policy.pod_security,
            Privileged
        );
    }

    #[test]
    fn only_syncer_images_the_platform_allows_are_run() {
        let mut own = vc("ns", &[]);
        own.spec.syncer.image = Some("ghcr.io/virtualcluster-dev/virtualcluster-syncer:v9".into());
        assert!(validate(&own, None, &Settings::default()).is_ok());
        let mut foreign = vc("ns", &[]);
        foreign.spec.syncer.image =
            Some("ghcr.io/virtualcluster-dev/virtualcluster-syncer-evil:v1".into());
        let err = validate(&foreign, None, &Settings::default()).unwrap_err();
        assert_eq!(err.reason, SYNCER_IMAGE_NOT_ALLOWED);
        assert!(err.message.contains("spec.syncer.image"), "{}", err.message);
        let mut open = Settings::default();
        open.allowed_syncer_images
            .push("ghcr.io/virtualcluster-dev/*".into());
        assert!(validate(&foreign, None, &open).is_ok());
        // Unset runs the operator's own.
        assert!(validate(&vc("ns", &[]), None, &Settings::default()).is_ok());
    }

    #[test]
    fn a_patch_that_does_not_compile_is_refused_naming_its_place() {
        let mut vc = vc("team", &[]);
        vc.spec.sync.to_host.config_maps.patches = vec![
            virtualcluster_crds::v1alpha1::Patch {
                path: "data[\"a\"]".into(),
                expression: Some("value".into()),
                ..Default::default()
            },
            virtualcluster_crds::v1alpha1::Patch {
                path: "data[\"b\"]".into(),
                expression: Some("value.(".into()),
                ..Default::default()
            },
        ];
        let err = validate(&vc, None, &Settings::default()).unwrap_err();
        assert_eq!(err.reason, INVALID_PATCH);
        assert!(
            err.message
                .starts_with("spec.sync.toHost.configMaps.patches[1]: does not compile"),
            "{}",
            err.message
        );
    }

    #[test]
    fn service_cidrs() {
        assert_eq!(first_address("10.0.0.0/8").unwrap().to_string(), "10.0.0.1");
        assert_eq!(
            first_address("10.96.7.3/16").unwrap().to_string(),
            "10.96.0.1"
        );
        assert_eq!(first_address("fd00::/108").unwrap().to_string(), "fd00::1");
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "10.0.0.0/31", ""] {
            assert!(first_address(bad).is_none(), "{bad}");
        }
        let mut bad = vc("ns", &[]);
        bad.spec.control_plane.service_cidr = Some("10.0.0.0".into());
        let err = validate(&bad, None, &Settings::default()).unwrap_err();
        assert_eq!(err.reason, "InvalidServiceCIDR");
        assert!(err.message.contains("spec.controlPlane.serviceCIDR"));
    }
}
