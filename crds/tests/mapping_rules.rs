//! The namespace-mapping rules: the seeds' examples as test vectors, every rule on its own, and
//! properties over generated mappings.

use proptest::prelude::*;
use virtualcluster_crds::mapping::strategies::{name, pairs};
use virtualcluster_crds::mapping::{self, Instance, Rule, by_name};
use virtualcluster_crds::v1alpha1::{NamespaceMappings, NamespaceSync};

fn config(pairs: &[(&str, &str)]) -> NamespaceSync {
    NamespaceSync {
        enabled: true,
        mappings_only: false,
        mappings: NamespaceMappings {
            by_name: by_name(pairs.iter().copied()),
        },
    }
}

/// Mappings as written in `byName`.
type Pairs<'a> = &'a [(&'a str, &'a str)];

fn instance(name: &str) -> Instance<'_> {
    Instance {
        name,
        namespace: "vcluster-ns",
    }
}

fn broken_rules(pairs: &[(&str, &str)], name: &str) -> Vec<Rule> {
    match mapping::validate(&config(pairs), instance(name)) {
        Ok(_) => Vec::new(),
        Err(v) => {
            let mut rules: Vec<Rule> = v.0.iter().map(|v| v.rule).collect();
            rules.dedup();
            rules
        }
    }
}

#[test]
fn mapping_demo_example() {
    let cfg = config(&[
        ("frontend-prod", "customer-project-alpha-prod"),
        ("team-a-*", "h-team-a-*"),
        ("datasets-*", "${name}-data-*"),
    ]);
    let m = mapping::validate(&cfg, instance("my-vc")).unwrap();
    assert_eq!(
        m.host_for("frontend-prod").as_deref(),
        Some("customer-project-alpha-prod")
    );
    assert_eq!(m.host_for("team-a-ns1").as_deref(), Some("h-team-a-ns1"));
    assert_eq!(
        m.host_for("team-a-staging").as_deref(),
        Some("h-team-a-staging")
    );
    assert_eq!(
        m.host_for("datasets-raw").as_deref(),
        Some("my-vc-data-raw")
    );
    assert_eq!(
        m.host_for("datasets-processed").as_deref(),
        Some("my-vc-data-processed")
    );
    assert_eq!(m.host_for("some-other-namespace"), None);
    // A host namespace created on the host is imported under the virtual name the mapping gives.
    assert_eq!(
        m.virtual_for("h-team-a-namespace-synced-from-host")
            .as_deref(),
        Some("team-a-namespace-synced-from-host")
    );
    assert_eq!(m.virtual_for("vcluster-mapping-demo"), None);
}

#[test]
fn strict_vc_example() {
    let cfg = config(&[
        ("synced-*", "host-${name}-synced-*"),
        ("important-configs", "host-configs-critical"),
    ]);
    let m = mapping::validate(&cfg, instance("strict-vc")).unwrap();
    assert_eq!(
        m.host_for("synced-data-alpha").as_deref(),
        Some("host-strict-vc-synced-data-alpha")
    );
    assert_eq!(
        m.host_for("important-configs").as_deref(),
        Some("host-configs-critical")
    );
    assert_eq!(m.host_for("experimental-app"), None);
}

#[test]
fn test_cleanup_example() {
    let m = mapping::validate(&config(&[("sync-*", "host-*")]), instance("test-cleanup")).unwrap();
    assert_eq!(
        m.host_for("sync-namespace-from-vcluster").as_deref(),
        Some("host-namespace-from-vcluster")
    );
    assert_eq!(
        m.virtual_for("host-namespace-from-host").as_deref(),
        Some("sync-namespace-from-host")
    );
    assert!(m.claims_host("host-anything"));
    assert!(!m.claims_host("vcluster-test-cleanup"));
}

#[test]
fn exact_wins_then_longest_prefix() {
    let cfg = config(&[
        ("*", "vc-*"),
        ("team-*", "t-*"),
        ("team-a-*", "ta-*"),
        ("team-a-x", "special"),
    ]);
    let m = mapping::validate(&cfg, instance("vc")).unwrap();
    assert_eq!(m.host_for("team-a-x").as_deref(), Some("special"));
    assert_eq!(m.host_for("team-a-y").as_deref(), Some("ta-y"));
    assert_eq!(m.host_for("team-b").as_deref(), Some("t-b"));
    assert_eq!(m.host_for("other").as_deref(), Some("vc-other"));
    // The virtual cluster's own system namespaces never map, even under a bare `*`.
    assert_eq!(m.host_for("kube-system"), None);
    assert_eq!(m.host_for("default").as_deref(), Some("vc-default"));
}

#[test]
fn disabled_without_mappings_is_valid_and_maps_nothing() {
    let m = mapping::validate(&NamespaceSync::default(), instance("vc")).unwrap();
    assert!(m.mappings().is_empty());
    assert_eq!(m.host_for("anything"), None);
}

#[test]
fn enabled_needs_mappings_and_mappings_only_needs_enabled() {
    let cfg = NamespaceSync {
        enabled: true,
        ..Default::default()
    };
    assert!(
        mapping::validate(&cfg, instance("vc"))
            .unwrap_err()
            .breaks(Rule::MappingsRequired)
    );
    let cfg = NamespaceSync {
        mappings_only: true,
        ..Default::default()
    };
    assert!(
        mapping::validate(&cfg, instance("vc"))
            .unwrap_err()
            .breaks(Rule::MappingsOnlyNeedsEnabled)
    );
}

#[test]
fn each_rule_on_its_own() {
    let cases: &[(Pairs, &str, Rule)] = &[
        (&[("a*b", "c*")], "vc", Rule::PatternShape),
        (&[("a**", "c**")], "vc", Rule::PatternShape),
        (&[("a", "c*")], "vc", Rule::MixedMapping),
        (&[("a*", "c")], "vc", Rule::MixedMapping),
        (&[("a*", "*")], "vc", Rule::EmptyHostPrefix),
        (&[("${name}-a", "x")], "vc", Rule::PlaceholderOnVirtualSide),
        (&[("a", "${foo}-x")], "vc", Rule::Placeholder),
        (&[("a", "${name}-${name}")], "vc", Rule::Placeholder),
        (&[("A", "x")], "vc", Rule::VirtualName),
        (&[(&"v".repeat(64), "x")], "vc", Rule::VirtualName),
        (
            &[(&format!("{}*", "v".repeat(33)), "x-*")],
            "vc",
            Rule::VirtualName,
        ),
        (&[("kube-system", "x")], "vc", Rule::SystemVirtualNamespace),
        (&[("a", "X")], "vc", Rule::HostName),
        (&[("a", "x-")], "vc", Rule::HostName),
        (
            &[("a*", &format!("{}*", "h".repeat(33)))],
            "vc",
            Rule::HostName,
        ),
        // ${name} counts once it is put in: 60 + 4 characters is too long.
        (
            &[("a", &format!("{}-${{name}}", "h".repeat(60)))],
            "long",
            Rule::HostName,
        ),
        (&[("a", "kube-system")], "vc", Rule::ReservedHostNamespace),
        (&[("a", "default")], "vc", Rule::ReservedHostNamespace),
        (&[("a*", "kube-*")], "vc", Rule::ReservedHostNamespace),
        (&[("a*", "de*")], "vc", Rule::ReservedHostNamespace),
        (&[("a", "${name}")], "default", Rule::ReservedHostNamespace),
        (&[("a", "vcluster-ns")], "vc", Rule::OwnNamespace),
        (&[("a*", "vcluster-*")], "vc", Rule::OwnNamespace),
        (
            &[("a", "x"), ("b", "x")],
            "vc",
            Rule::DuplicateHostNamespace,
        ),
        (
            &[("a", "vc-x"), ("b", "${name}-x")],
            "vc",
            Rule::DuplicateHostNamespace,
        ),
        (
            &[("a*", "h-*"), ("b", "h-b")],
            "vc",
            Rule::DuplicateHostNamespace,
        ),
        (
            &[("a*", "h-*"), ("b*", "h-b-*")],
            "vc",
            Rule::DuplicateHostNamespace,
        ),
        (
            &[("a*", "h-*"), ("b*", "h-*")],
            "vc",
            Rule::DuplicateHostNamespace,
        ),
        (&[("a", "x")], "Bad_Name", Rule::InstanceName),
        (&[("a", "x")], "1abc", Rule::InstanceName),
        (&[("a", "x")], &"n".repeat(53), Rule::InstanceName),
    ];
    for (pairs, name, rule) in cases {
        let broken = broken_rules(pairs, name);
        assert!(
            broken.contains(rule),
            "{pairs:?} (instance {name}) should break {rule:?}, broke {broken:?}"
        );
    }
}

#[test]
fn valid_edge_cases() {
    let ok: &[(Pairs, &str)] = &[
        (&[("*", "vc-*")], "vc"),
        (&[("a", &"h".repeat(63))], "vc"),
        (&[("a*", &format!("{}*", "h".repeat(32)))], "vc"),
        (&[("a", "${name}")], "vc"),
        (&[("a*", "${name}-*"), ("b*", "x-${name}-*")], "vc"),
        (&[("a", "kube"), ("b", "defaults")], "vc"),
        (&[("a*", "h-a-*"), ("b*", "h-b-*")], "vc"),
    ];
    for (pairs, name) in ok {
        assert_eq!(
            broken_rules(pairs, name),
            vec![],
            "{pairs:?} (instance {name}) should be valid"
        );
    }
}

#[test]
fn transition_is_refused_for_any_change() {
    let old = config(&[("a", "b")]);
    assert!(mapping::validate_transition(&old, &old.clone()).is_ok());
    for new in [
        config(&[("a", "c")]),
        config(&[("a", "b"), ("c", "d")]),
        NamespaceSync {
            mappings_only: true,
            ..old.clone()
        },
        NamespaceSync {
            enabled: false,
            ..old.clone()
        },
    ] {
        let v = mapping::validate_transition(&old, &new).unwrap_err();
        assert_eq!(v.rule, Rule::Immutable);
    }
}

#[test]
fn violations_name_the_field_and_the_mapping() {
    let err = mapping::validate(&config(&[("a", "x"), ("b", "x")]), instance("vc")).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("spec.sync.toHost.namespaces.mappings.byName: no two mappings"),
        "{text}"
    );
    assert!(text.contains("a: x and b: x"), "{text}");
}

// --- Properties ------------------------------------------------------------------------------

proptest! {
    #[test]
    fn valid_mappings_resolve_both_ways(table in pairs(), probe in name(), suffix in name()) {
        let cfg = NamespaceSync { enabled: true, mappings_only: false, mappings: NamespaceMappings { by_name: table } };
        if let Ok(m) = mapping::validate(&cfg, instance("vc")) {
            for virtual_ns in [probe.clone(), format!("{probe}-{suffix}"), format!("{probe}{suffix}")] {
                if let Some(host) = m.host_for(&virtual_ns) {
                    // No two host sides overlap, so the host namespace leads back to its origin.
                    prop_assert_eq!(m.virtual_for(&host), Some(virtual_ns.clone()));
                    prop_assert!(m.claims_host(&host));
                    prop_assert!(!mapping::is_reserved_host(&host), "{} is reserved", host);
                    prop_assert_ne!(host.as_str(), "vcluster-ns");
                }
            }
            let claiming = |h: &str| m.mappings().iter().filter(|x| x.host.capture(h).is_some()).count();
            for host in [probe.clone(), format!("{probe}-{suffix}"), format!("vc-{probe}")] {
                prop_assert!(claiming(&host) <= 1, "{} is claimed by more than one mapping", host);
            }
        }
    }

    #[test]
    fn validation_is_total_and_deterministic(table in prop::collection::btree_map(".{0,12}", ".{0,12}", 0..4), enabled: bool, only: bool) {
        let cfg = NamespaceSync { enabled, mappings_only: only, mappings: NamespaceMappings { by_name: table } };
        let first = mapping::validate(&cfg, instance("vc"));
        prop_assert_eq!(first, mapping::validate(&cfg, instance("vc")));
    }

    #[test]
    fn an_instance_never_overlaps_a_disjoint_one(a in name(), b in name()) {
        prop_assume!(!a.starts_with(&b) && !b.starts_with(&a));
        // kube-* and vcluster-* are refused on their own (reserved, own namespace).
        prop_assume!(![&a, &b].iter().any(|n| ["kube", "vcluster"].contains(&n.as_str())));
        let one = mapping::validate(&config(&[("x-*", &format!("{a}-*"))]), instance("one")).unwrap();
        let two = mapping::validate(&config(&[("x-*", &format!("{b}-*"))]), instance("two")).unwrap();
        prop_assert!(one.overlapping_host(&two).is_none());
        prop_assert!(one.overlapping_host(&one).is_some());
    }
}

/// Mappings valid by construction: distinct virtual sides, and host sides `h<i>-…` that cannot
/// overlap because each index is followed by `-`.
fn valid_table() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::btree_set(name(), 1..8)
        .prop_flat_map(|virtuals| {
            let n = virtuals.len();
            (
                Just(virtuals),
                prop::collection::vec(any::<bool>(), n),
                prop::collection::vec(any::<bool>(), n),
            )
        })
        .prop_map(|(virtuals, patterns, placeholders)| {
            virtuals
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    let host = if placeholders[i] {
                        format!("h{i}-${{name}}")
                    } else {
                        format!("h{i}-x")
                    };
                    if patterns[i] {
                        (format!("{v}-*"), format!("{host}-*"))
                    } else {
                        (v, host)
                    }
                })
                .collect()
        })
}

proptest! {
    #[test]
    fn generated_valid_tables_validate_and_round_trip(table in valid_table(), suffix in name()) {
        let pairs: Vec<(&str, &str)> = table.iter().map(|(v, h)| (v.as_str(), h.as_str())).collect();
        let m = mapping::validate(&config(&pairs), instance("vc"));
        prop_assert!(m.is_ok(), "{:?}", m);
        let m = m.unwrap();
        for (v, _) in &table {
            let virtual_ns = match v.strip_suffix('*') { Some(p) => format!("{p}{suffix}"), None => v.clone() };
            let host = m.host_for(&virtual_ns);
            prop_assert!(host.is_some(), "{} should map", virtual_ns);
            let host = host.unwrap();
            prop_assert!(!host.contains(mapping::NAME_PLACEHOLDER));
            prop_assert_eq!(m.virtual_for(&host), Some(virtual_ns));
        }
    }
}
