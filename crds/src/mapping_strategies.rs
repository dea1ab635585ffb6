//! Generators of namespace mappings for property tests, shared by this crate's tests and the
//! integration tests that compare these rules with the API server's.

use std::collections::BTreeMap;

use proptest::prelude::*;

/// Names from a small alphabet, so generated mappings overlap often.
pub fn name() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "a", "ab", "abc", "b", "team", "team-a", "h", "x1", "kube", "vcluster",
    ])
    .prop_map(str::to_owned)
}

/// A raw side as a user might write it, including invalid ones.
pub fn side(host: bool) -> impl Strategy<Value = String> {
    let placeholder = if host { "${name}" } else { "a" };
    prop_oneof![
        4 => name(),
        4 => name().prop_map(|n| format!("{n}-*")),
        1 => name().prop_map(|n| format!("{n}*")),
        1 => Just("*".to_owned()),
        1 => name().prop_map(move |n| format!("{placeholder}-{n}")),
        1 => name().prop_map(move |n| format!("{n}-{placeholder}-*")),
        1 => prop::sample::select(vec!["kube-system", "default", "vcluster-ns", "A", "a*b", "${x}", "-a"])
            .prop_map(str::to_owned),
    ]
}

pub fn pairs() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(side(false), side(true), 1..6)
}
