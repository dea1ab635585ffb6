//! Namespace mapping rules (`spec.sync.toHost.namespaces.mappings.byName`): which host namespace
//! a virtual namespace syncs to, which host namespaces an instance imports, and what makes a set
//! of mappings valid.
//!
//! A mapping is exact-to-exact (`frontend-prod: customer-project-alpha-prod`) or
//! pattern-to-pattern (`team-a-*: h-team-a-*`), where the text `*` matched carries over. `${name}`
//! on the host side stands for the VirtualCluster's name.
//!
//! [`validate`] is the source of truth. The CEL rules on the CRD ([`crate::v1alpha1::cel`]) say
//! the same things with the same [`Rule`] messages so the API server refuses bad input at
//! admission; the one check CEL cannot make (the VirtualCluster's own namespace is not visible to
//! CEL) is only here, and the operator reports it as `ConfigValid=False`.

use std::collections::BTreeMap;
use std::fmt;

use crate::dns;

#[cfg(feature = "strategies")]
#[path = "mapping_strategies.rs"]
pub mod strategies;
use crate::v1alpha1::NamespaceSync;

/// The placeholder for the VirtualCluster's name, allowed once on the host side of a mapping.
pub const NAME_PLACEHOLDER: &str = "${name}";

/// Host namespaces no mapping may lead to: the host's own system namespaces and `default`.
pub const RESERVED_HOST_NAMESPACES: [&str; 4] =
    ["kube-system", "kube-public", "kube-node-lease", "default"];

/// The prefix of the host's system namespaces (those above and whatever add-ons install, such as
/// `kube-flannel`): no mapping may lead to a namespace that starts with it.
pub const SYSTEM_HOST_PREFIX: &str = "kube-";

/// Whether host namespace `name` is one no mapping may lead to.
pub fn is_reserved_host(name: &str) -> bool {
    name.starts_with(SYSTEM_HOST_PREFIX) || RESERVED_HOST_NAMESPACES.contains(&name)
}

/// Virtual namespaces the virtual cluster itself needs. They always sync the default way
/// (renamed into the instance's namespace), so they cannot be mapped.
pub const SYSTEM_VIRTUAL_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// Longest VirtualCluster name: its StatefulSet's pods carry a `controller-revision-hash` label of
/// `<name>-<10 characters>`, which must fit in 63 characters.
pub const MAX_INSTANCE_NAME_LEN: usize = 52;

/// The rules a VirtualCluster's namespace-sync configuration must keep. Each has one message,
/// used by the CEL rule at admission and by [`validate`] alike, and a reason for conditions and
/// Events (a bounded set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    InstanceName,
    Immutable,
    MappingsRequired,
    MappingsOnlyNeedsEnabled,
    PatternShape,
    MixedMapping,
    EmptyHostPrefix,
    PlaceholderOnVirtualSide,
    Placeholder,
    VirtualName,
    SystemVirtualNamespace,
    HostName,
    ReservedHostNamespace,
    OwnNamespace,
    DuplicateHostNamespace,
}

impl Rule {
    /// What the rule requires, in words a user can act on.
    pub const fn message(self) -> &'static str {
        match self {
            Rule::InstanceName => {
                "the VirtualCluster's name must be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter) of at most 52 characters"
            }
            Rule::Immutable => {
                "namespace syncing is immutable after creation: it cannot be turned on or off, and mappingsOnly and the mappings cannot change"
            }
            Rule::MappingsRequired => "enabled: true needs at least one mapping in mappings.byName",
            Rule::MappingsOnlyNeedsEnabled => "mappingsOnly: true needs enabled: true",
            Rule::PatternShape => "a pattern has exactly one '*' and it is the last character",
            Rule::MixedMapping => {
                "a mapping is exact-to-exact or pattern-to-pattern: both sides end in '*' or neither does"
            }
            Rule::EmptyHostPrefix => "a host pattern needs a non-empty prefix before '*'",
            Rule::PlaceholderOnVirtualSide => {
                "${name} may only stand on the host side of a mapping"
            }
            Rule::Placeholder => {
                "the host side may contain ${name} at most once and no other ${...} placeholder"
            }
            Rule::VirtualName => {
                "a virtual namespace must be a DNS-1123 label of at most 63 characters, or a pattern whose prefix before '*' is empty or at most 32 lowercase letters, digits and '-' starting with a letter or digit"
            }
            Rule::SystemVirtualNamespace => {
                "kube-system, kube-public and kube-node-lease always sync the default way and cannot be mapped"
            }
            Rule::HostName => {
                "a host namespace, with ${name} replaced by the VirtualCluster's name, must be a DNS-1123 label of at most 63 characters, or a pattern whose prefix before '*' is at most 32 lowercase letters, digits and '-' starting with a letter or digit"
            }
            Rule::ReservedHostNamespace => {
                "no mapping may target default or a system namespace: kube-system, kube-public, kube-node-lease or any other starting with kube-"
            }
            Rule::OwnNamespace => "no mapping may target the VirtualCluster's own namespace",
            Rule::DuplicateHostNamespace => {
                "no two mappings may lead to the same host namespace: no host value twice, no exact host name a host pattern also matches, no host pattern whose prefix starts another's"
            }
        }
    }

    /// A CamelCase reason, for conditions and Events.
    pub const fn reason(self) -> &'static str {
        match self {
            Rule::InstanceName => "InvalidInstanceName",
            Rule::Immutable => "NamespaceSyncChanged",
            Rule::MappingsRequired => "MappingsRequired",
            Rule::MappingsOnlyNeedsEnabled => "MappingsOnlyNeedsEnabled",
            Rule::PatternShape => "InvalidPattern",
            Rule::MixedMapping => "MixedMapping",
            Rule::EmptyHostPrefix => "EmptyHostPrefix",
            Rule::PlaceholderOnVirtualSide => "PlaceholderOnVirtualSide",
            Rule::Placeholder => "InvalidPlaceholder",
            Rule::VirtualName => "InvalidVirtualNamespace",
            Rule::SystemVirtualNamespace => "SystemNamespaceMapped",
            Rule::HostName => "InvalidHostNamespace",
            Rule::ReservedHostNamespace => "ReservedHostNamespace",
            Rule::OwnNamespace => "OwnNamespace",
            Rule::DuplicateHostNamespace => "DuplicateHostNamespace",
        }
    }
}

/// Field paths the rules report, the same ones the API server names.
pub mod field {
    pub const NAME: &str = "metadata.name";
    pub const NAMESPACES: &str = "spec.sync.toHost.namespaces";
    pub const BY_NAME: &str = "spec.sync.toHost.namespaces.mappings.byName";
}

/// One broken rule: which rule, the field it concerns and the mapping(s) that break it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub rule: Rule,
    pub field: &'static str,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} ({})",
            self.field,
            self.rule.message(),
            self.detail
        )
    }
}

/// Every rule a configuration breaks, in a stable order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Violations(pub Vec<Violation>);

impl Violations {
    pub fn breaks(&self, rule: Rule) -> bool {
        self.0.iter().any(|v| v.rule == rule)
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for v in &self.0 {
            if !first {
                f.write_str("; ")?;
            }
            first = false;
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

/// One side of a mapping: an exact namespace name or a pattern (the literal prefix before `*`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    Exact(String),
    Pattern(String),
}

impl Side {
    fn parse(s: &str) -> Option<Side> {
        match s.find('*') {
            None => Some(Side::Exact(s.to_owned())),
            Some(i) if i + 1 == s.len() => Some(Side::Pattern(s[..i].to_owned())),
            Some(_) => None,
        }
    }

    /// The text `*` matches in `namespace`, or `""` for an exact match; `None` if no match.
    pub fn capture<'n>(&self, namespace: &'n str) -> Option<&'n str> {
        match self {
            Side::Exact(name) => (name == namespace).then_some(""),
            Side::Pattern(prefix) => namespace.strip_prefix(prefix.as_str()),
        }
    }

    /// The namespace this side gives for the text a `*` matched on the other side.
    pub fn fill(&self, captured: &str) -> String {
        match self {
            Side::Exact(name) => name.clone(),
            Side::Pattern(prefix) => format!("{prefix}{captured}"),
        }
    }

    /// Whether some namespace name matches both sides. A `*` may match the empty string, so this
    /// errs on the side of calling two sides overlapping.
    pub fn overlaps(&self, other: &Side) -> bool {
        match (self, other) {
            (Side::Exact(a), Side::Exact(b)) => a == b,
            (Side::Pattern(p), Side::Exact(e)) | (Side::Exact(e), Side::Pattern(p)) => {
                e.starts_with(p.as_str())
            }
            (Side::Pattern(a), Side::Pattern(b)) => {
                a.starts_with(b.as_str()) || b.starts_with(a.as_str())
            }
        }
    }

    fn matches_any(&self, names: &[&str]) -> bool {
        names.iter().any(|n| self.capture(n).is_some())
    }

    fn is_pattern(&self) -> bool {
        matches!(self, Side::Pattern(_))
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Side::Exact(name) => f.write_str(name),
            Side::Pattern(prefix) => write!(f, "{prefix}*"),
        }
    }
}

/// One validated mapping; the host side has `${name}` already put in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub virtual_side: Side,
    pub host: Side,
}

/// The VirtualCluster a configuration belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Instance<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
}

/// A valid set of mappings, ready to resolve names in both directions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceMapper {
    /// Exact mappings first, then patterns by decreasing prefix length: the order in which a
    /// virtual namespace is matched.
    mappings: Vec<Mapping>,
}

impl NamespaceMapper {
    pub fn mappings(&self) -> &[Mapping] {
        &self.mappings
    }

    /// The host namespace for a virtual namespace (exact mappings first, then the pattern with
    /// the longest prefix), or `None` when it syncs the default way. The result can still be too
    /// long for a namespace name; callers check it with [`dns::is_label`].
    pub fn host_for(&self, virtual_ns: &str) -> Option<String> {
        if SYSTEM_VIRTUAL_NAMESPACES.contains(&virtual_ns) {
            return None;
        }
        self.mappings
            .iter()
            .find_map(|m| m.virtual_side.capture(virtual_ns).map(|c| m.host.fill(c)))
    }

    /// The virtual namespace a host namespace is imported as, or `None` if no mapping claims it.
    /// Host sides never overlap (see [`Rule::DuplicateHostNamespace`]), so at most one matches.
    pub fn virtual_for(&self, host_ns: &str) -> Option<String> {
        self.mappings
            .iter()
            .find_map(|m| m.host.capture(host_ns).map(|c| m.virtual_side.fill(c)))
    }

    /// Whether any of this instance's host sides could claim a namespace another's could too.
    pub fn overlapping_host<'a>(
        &'a self,
        other: &'a NamespaceMapper,
    ) -> Option<(&'a Side, &'a Side)> {
        self.mappings.iter().find_map(|a| {
            other
                .mappings
                .iter()
                .find(|b| a.host.overlaps(&b.host))
                .map(|b| (&a.host, &b.host))
        })
    }

    /// Whether one of the host sides could claim `namespace`.
    pub fn claims_host(&self, namespace: &str) -> bool {
        self.mappings
            .iter()
            .any(|m| m.host.capture(namespace).is_some())
    }
}

/// Checks a VirtualCluster's name against [`Rule::InstanceName`].
pub fn validate_instance_name(name: &str) -> Result<(), Violation> {
    let ok = name.len() <= MAX_INSTANCE_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && dns::is_label(name);
    ok.then_some(()).ok_or_else(|| Violation {
        rule: Rule::InstanceName,
        field: field::NAME,
        detail: name.to_owned(),
    })
}

/// Puts the instance's name in for `${name}`, after checking the placeholder is used correctly.
fn substitute(host: &str, name: &str) -> Option<String> {
    let rest = host.replacen(NAME_PLACEHOLDER, "", 1);
    if rest.contains(['$', '{', '}']) {
        return None;
    }
    Some(host.replacen(NAME_PLACEHOLDER, name, 1))
}

/// Checks one mapping on its own: what it breaks, and the mapping itself whenever it can be
/// parsed, so that the pairwise check sees it even when another rule fails (as CEL does).
fn validate_one(
    virtual_raw: &str,
    host_raw: &str,
    instance: Instance<'_>,
) -> (Option<Mapping>, Vec<Violation>) {
    let detail = || format!("{virtual_raw}: {host_raw}");
    let violation = |rule| Violation {
        rule,
        field: field::BY_NAME,
        detail: detail(),
    };
    let mut broken = Vec::new();

    if virtual_raw.contains(NAME_PLACEHOLDER) {
        broken.push(violation(Rule::PlaceholderOnVirtualSide));
    }
    let host_text = substitute(host_raw, instance.name);
    if host_text.is_none() {
        broken.push(violation(Rule::Placeholder));
    }
    let (virtual_side, host) = match (Side::parse(virtual_raw), Side::parse(host_raw)) {
        (Some(v), Some(h)) => (v, h),
        _ => {
            broken.push(violation(Rule::PatternShape));
            return (None, broken);
        }
    };
    if virtual_side.is_pattern() != host.is_pattern() {
        broken.push(violation(Rule::MixedMapping));
    }
    if host == Side::Pattern(String::new()) {
        broken.push(violation(Rule::EmptyHostPrefix));
    }
    let virtual_ok = match &virtual_side {
        Side::Exact(name) => dns::is_label(name),
        Side::Pattern(prefix) => prefix.is_empty() || dns::is_prefix(prefix),
    };
    if !virtual_ok && !virtual_raw.contains(NAME_PLACEHOLDER) {
        broken.push(violation(Rule::VirtualName));
    }
    if matches!(&virtual_side, Side::Exact(name) if SYSTEM_VIRTUAL_NAMESPACES.contains(&name.as_str()))
    {
        broken.push(violation(Rule::SystemVirtualNamespace));
    }
    let host = host_text.and_then(|text| Side::parse(&text));
    if let Some(host) = &host {
        let host_ok = match host {
            Side::Exact(name) => dns::is_label(name),
            Side::Pattern(prefix) => prefix.is_empty() || dns::is_prefix(prefix),
        };
        if !host_ok {
            broken.push(violation(Rule::HostName));
        }
        if host.matches_any(&RESERVED_HOST_NAMESPACES)
            || host.overlaps(&Side::Pattern(SYSTEM_HOST_PREFIX.into()))
        {
            broken.push(violation(Rule::ReservedHostNamespace));
        }
        if host.capture(instance.namespace).is_some() {
            broken.push(violation(Rule::OwnNamespace));
        }
    }
    (host.map(|host| Mapping { virtual_side, host }), broken)
}

/// Checks a namespace-sync configuration against every rule and returns the mapper it defines.
/// A configuration with `enabled: false` and no mappings is valid and maps nothing.
pub fn validate(
    config: &NamespaceSync,
    instance: Instance<'_>,
) -> Result<NamespaceMapper, Violations> {
    let by_name = &config.mappings.by_name;
    let mut broken = Vec::new();
    if let Err(v) = validate_instance_name(instance.name) {
        broken.push(v);
    }
    if config.enabled && by_name.is_empty() {
        broken.push(Violation {
            rule: Rule::MappingsRequired,
            field: field::NAMESPACES,
            detail: "mappings.byName is empty".into(),
        });
    }
    if config.mappings_only && !config.enabled {
        broken.push(Violation {
            rule: Rule::MappingsOnlyNeedsEnabled,
            field: field::NAMESPACES,
            detail: "enabled is false".into(),
        });
    }

    let mut mappings = Vec::with_capacity(by_name.len());
    for (virtual_raw, host_raw) in by_name {
        let (parsed, violations) = validate_one(virtual_raw, host_raw, instance);
        broken.extend(violations);
        if let Some(m) = parsed {
            mappings.push((virtual_raw, host_raw, m));
        }
    }
    for (i, (va, ha, a)) in mappings.iter().enumerate() {
        for (vb, hb, b) in &mappings[i + 1..] {
            if a.host.overlaps(&b.host) {
                broken.push(Violation {
                    rule: Rule::DuplicateHostNamespace,
                    field: field::BY_NAME,
                    detail: format!("{va}: {ha} and {vb}: {hb}"),
                });
            }
        }
    }
    if !broken.is_empty() {
        return Err(Violations(broken));
    }

    let mut mappings: Vec<Mapping> = mappings.into_iter().map(|(_, _, m)| m).collect();
    mappings.sort_by_key(|m| match &m.virtual_side {
        Side::Exact(_) => (0, 0),
        Side::Pattern(prefix) => (1, usize::MAX - prefix.len()),
    });
    Ok(NamespaceMapper { mappings })
}

/// Whether the namespace-sync block may change from `old` to `new`: it may not change at all.
pub fn validate_transition(old: &NamespaceSync, new: &NamespaceSync) -> Result<(), Violation> {
    (old == new).then_some(()).ok_or(Violation {
        rule: Rule::Immutable,
        field: field::NAMESPACES,
        detail: "changed after creation".into(),
    })
}

/// Convenience for tests and examples: a mapping table from pairs.
pub fn by_name<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> BTreeMap<String, String> {
    pairs
        .into_iter()
        .map(|(v, h)| (v.to_owned(), h.to_owned()))
        .collect()
}
