//! CEL rules (`x-kubernetes-validations`) that make the API server refuse a bad namespace-sync
//! configuration at admission. They restate [`crate::mapping::validate`] in CEL and carry the
//! same [`Rule`] messages; an integration test feeds generated configurations to a real API
//! server and to `validate` and checks that both agree.
//!
//! Rules that need the VirtualCluster's name (`${name}`) sit at the root of the schema, the
//! only place CEL sees `self.metadata.name`; they report the `byName` field through `fieldPath`.

use kube::core::{Reason, Rule as CelRule};

use crate::dns::{LABEL_REGEX, MAX_LABEL_LEN, MAX_PATTERN_PREFIX_LEN};
use crate::mapping::Rule;

/// How many mappings one VirtualCluster may have; bounds the cost of the pairwise CEL rules and
/// of the admission policy's authorization checks (350,000 each in a budget of 10,000,000; see
/// [`crate::claim_policy`]).
pub const MAX_MAPPINGS: usize = 24;

/// Longest raw host value: a 63-character name written with `${name}` in it.
pub const MAX_HOST_VALUE_LEN: usize = MAX_LABEL_LEN + crate::mapping::NAME_PLACEHOLDER.len();

/// `byName` as the root rules see it.
const BY_NAME: &str = "self.spec.sync.toHost.namespaces.mappings.byName";
const BY_NAME_PATH: &str = ".spec.sync.toHost.namespaces.mappings.byName";

fn rule(expr: String, rule: Rule) -> CelRule {
    // FieldValueDuplicate would be shown as a bare "Duplicate value", without the message.
    let reason = match rule {
        Rule::MappingsRequired => Reason::FieldValueRequired,
        _ => Reason::FieldValueInvalid,
    };
    CelRule::new(expr).message(rule.message()).reason(reason)
}

/// A CEL list literal of the given names.
fn list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// CEL that is true when `var` (an expression) is a valid exact name or pattern (prefix then
/// `*`). The prefix may be empty only where `empty_prefix` allows it (the virtual side's bare
/// `*`). CRD validation has no `cel.bind`, so expressions are repeated rather than bound.
fn valid_side(var: &str, empty_prefix: bool) -> String {
    let prefix = if empty_prefix {
        "([a-z0-9][-a-z0-9]*)?"
    } else {
        "[a-z0-9][-a-z0-9]*"
    };
    format!(
        "({var}.endsWith('*') ? (size({var}) <= {max_pattern} && {var}.matches('^{prefix}[*]$')) \
         : (size({var}) <= {MAX_LABEL_LEN} && {var}.matches('{LABEL_REGEX}')))",
        max_pattern = MAX_PATTERN_PREFIX_LEN + 1,
    )
}

/// The host value of mapping `key`, with the VirtualCluster's name put in.
fn host(key: &str) -> String {
    format!("{BY_NAME}[{key}].replace('${{name}}', self.metadata.name)")
}

// --- Rules on the namespace-sync block -------------------------------------------------------

pub fn immutable() -> CelRule {
    CelRule::new("self == oldSelf")
        .message(Rule::Immutable.message())
        .reason(Reason::FieldValueForbidden)
}

pub fn mappings_required() -> CelRule {
    rule(
        "!self.enabled || size(self.mappings.byName) > 0".into(),
        Rule::MappingsRequired,
    )
}

pub fn mappings_only_needs_enabled() -> CelRule {
    rule(
        "!self.mappingsOnly || self.enabled".into(),
        Rule::MappingsOnlyNeedsEnabled,
    )
}

// --- Rules on the byName map (self is the map) -----------------------------------------------

pub fn pattern_shape() -> CelRule {
    rule(
        "self.all(k, k.matches('^[^*]*[*]?$') && self[k].matches('^[^*]*[*]?$'))".into(),
        Rule::PatternShape,
    )
}

pub fn exact_or_pattern() -> CelRule {
    rule(
        "self.all(k, k.endsWith('*') == self[k].endsWith('*'))".into(),
        Rule::MixedMapping,
    )
}

pub fn host_prefix_not_empty() -> CelRule {
    rule("self.all(k, self[k] != '*')".into(), Rule::EmptyHostPrefix)
}

pub fn placeholder_host_side_only() -> CelRule {
    rule(
        "self.all(k, !k.contains('${name}'))".into(),
        Rule::PlaceholderOnVirtualSide,
    )
}

pub fn placeholder_once() -> CelRule {
    rule(
        "self.all(k, self[k].matches('^[^${}]*([$][{]name[}])?[^${}]*$'))".into(),
        Rule::Placeholder,
    )
}

pub fn virtual_names() -> CelRule {
    rule(
        format!("self.all(k, {})", valid_side("k", true)),
        Rule::VirtualName,
    )
}

pub fn no_system_virtual_namespace() -> CelRule {
    rule(
        format!(
            "self.all(k, !(k in {}))",
            list(&crate::mapping::SYSTEM_VIRTUAL_NAMESPACES)
        ),
        Rule::SystemVirtualNamespace,
    )
}

// --- Rules at the root (they need self.metadata.name) ----------------------------------------

/// CEL cannot point `fieldPath` at `metadata`, so the message names the field itself.
pub fn instance_name() -> CelRule {
    let named = |r: CelRule| {
        r.message(kube::core::Message::Message(format!(
            "{}: {}",
            crate::mapping::field::NAME,
            Rule::InstanceName.message()
        )))
    };
    named(rule(
        format!(
            "size(self.metadata.name) <= {} && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
            crate::mapping::MAX_INSTANCE_NAME_LEN
        ),
        Rule::InstanceName,
    ))
}

pub fn host_names() -> CelRule {
    rule(
        format!("{BY_NAME}.all(k, {})", valid_side(&host("k"), false)),
        Rule::HostName,
    )
    .field_path(BY_NAME_PATH)
}

pub fn no_reserved_host_namespace() -> CelRule {
    let reserved = list(&crate::mapping::RESERVED_HOST_NAMESPACES);
    let h = host("k");
    rule(
        format!(
            "{BY_NAME}.all(k, {h}.endsWith('*') \
             ? !({reserved}.exists(r, r.startsWith({h}.substring(0, size({h}) - 1))) \
                 || {h}.startsWith('{system}') || '{system}'.startsWith({h}.substring(0, size({h}) - 1))) \
             : !({h} in {reserved} || {h}.startsWith('{system}')))",
            system = crate::mapping::SYSTEM_HOST_PREFIX
        ),
        Rule::ReservedHostNamespace,
    )
    .field_path(BY_NAME_PATH)
}

pub fn distinct_host_namespaces() -> CelRule {
    // For every ordered pair: a pattern x must not be a prefix of y (whether y is a name or a
    // pattern); two names must differ. The reversed pair covers the other direction.
    let (x, y) = (host("a"), host("b"));
    rule(
        format!(
            "{BY_NAME}.all(a, {BY_NAME}.all(b, a == b || \
             !({x}.endsWith('*') ? {y}.startsWith({x}.substring(0, size({x}) - 1)) : {x} == {y})))"
        ),
        Rule::DuplicateHostNamespace,
    )
    .field_path(BY_NAME_PATH)
}

// --- Pods ------------------------------------------------------------------------------------

pub fn tolerations() -> CelRule {
    CelRule::new(
        "self.all(t, t.matches('^[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?(=[-A-Za-z0-9_.]*)?(:(NoSchedule|PreferNoSchedule|NoExecute))?$'))",
    )
    .message("each toleration is written key=value:Effect, key:Effect, key=value or key, where Effect is NoSchedule, PreferNoSchedule or NoExecute")
    .reason(Reason::FieldValueInvalid)
}

// --- Rules on patches -------------------------------------------------------------------------

pub fn patch_has_an_action() -> CelRule {
    CelRule::new("has(self.expression) || has(self.reverseExpression) || has(self.reference)")
        .message("a patch needs an expression, a reverseExpression or a reference")
        .reason(Reason::FieldValueRequired)
}

pub fn patch_is_expression_or_reference() -> CelRule {
    CelRule::new("!has(self.reference) || !(has(self.expression) || has(self.reverseExpression))")
        .message("a patch has either expressions or a reference, not both")
        .reason(Reason::FieldValueInvalid)
}

pub fn reference_kind() -> CelRule {
    let kinds = list(crate::patches::REFERENCE_KINDS);
    CelRule::new(format!("self.apiVersion == 'v1' && self.kind in {kinds}"))
        .message(kube::core::Message::Message(format!(
            "a reference names a v1 object of kind {}",
            crate::patches::REFERENCE_KINDS.join(", ")
        )))
        .reason(Reason::FieldValueInvalid)
}

/// A custom resource's key: `plural.group`, lower-case DNS labels with at least one dot.
pub const CUSTOM_RESOURCE_KEY_REGEX: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+$";

/// Every key of a `customResources` map is `plural.group`.
pub fn custom_resource_keys() -> CelRule {
    CelRule::new(format!(
        "self.all(k, size(k) <= 253 && k.matches('{CUSTOM_RESOURCE_KEY_REGEX}'))"
    ))
    .message(kube::core::Message::Message(
        "a custom resource is named plural.group, e.g. certificates.cert-manager.io".into(),
    ))
    .reason(Reason::FieldValueInvalid)
}

/// Only namespaced custom resources are synced to the host.
pub fn to_host_custom_resource_scope() -> CelRule {
    CelRule::new("!has(self.scope) || self.scope == 'Namespaced'")
        .message(kube::core::Message::Message(
            "only Namespaced custom resources are synced to the host".into(),
        ))
        .reason(Reason::FieldValueForbidden)
}

/// A namespaced kind shown from the host names its objects in `mappings.byName`; a
/// cluster-scoped one shows all and has no mappings.
pub fn from_host_custom_resource_mappings() -> CelRule {
    CelRule::new(
        "(has(self.scope) && self.scope == 'Cluster') ? !has(self.mappings) \
         : (has(self.mappings) && size(self.mappings.byName) > 0)",
    )
    .message(kube::core::Message::Message(
        "a Namespaced custom resource from the host needs mappings.byName; a Cluster one takes \
         no mappings"
            .into(),
    ))
    .reason(Reason::FieldValueInvalid)
}

/// `namespace/name` or `namespace/*` on both sides, `*` on both or neither.
pub fn custom_resource_mappings() -> CelRule {
    let side = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?/([*]|[a-z0-9]([-a-z0-9.]*[a-z0-9])?)$";
    CelRule::new(format!(
        "self.all(k, k.matches('{side}') && self[k].matches('{side}') \
         && k.endsWith('/*') == self[k].endsWith('/*'))"
    ))
    .message(kube::core::Message::Message(
        "each mapping is host namespace/name to virtual namespace/name, or namespace/* to \
         namespace/*"
            .into(),
    ))
    .reason(Reason::FieldValueInvalid)
}
