//! How an object synced into the instance's own host namespace is renamed, so that objects of
//! the same name in different virtual namespaces (and instances) cannot clash on the host.

use sha2::{Digest, Sha256};

use crate::dns::MAX_LABEL_LEN;

/// Characters of the joined name kept before the hash when it is too long.
const KEPT_LEN: usize = 52;
/// Hex digits of the SHA-256 of the joined name that replace the rest.
const HASH_LEN: usize = 10;

/// The host name of virtual object `name` in virtual namespace `namespace` of instance
/// `instance`: `NAME-x-NAMESPACE-x-INSTANCE`. Past 63 characters it becomes the first 52
/// characters, `-`, and the first 10 hex digits of the SHA-256 of the full name, with every
/// `.-` then turned into `-` (a cut can leave a dot before the dash). Gives the same names as
/// the product the seed documents describe, so users find their objects where they expect.
pub fn host_name(name: &str, namespace: &str, instance: &str) -> String {
    let full = format!("{name}-x-{namespace}-x-{instance}");
    if full.len() <= MAX_LABEL_LEN {
        return full;
    }
    let digest = hex::encode(Sha256::digest(full.as_bytes()));
    // Kubernetes names are ASCII, so byte 52 is a character boundary; guard anyway.
    let cut = (0..=KEPT_LEN)
        .rev()
        .find(|&i| full.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}-{}", &full[..cut], &digest[..HASH_LEN]).replace(".-", "-")
}

/// Longest name of most objects (a DNS-1123 subdomain).
const MAX_SUBDOMAIN_LEN: usize = 253;

/// `name` followed by `suffix`, for an object that belongs with object `name`. Past 253
/// characters `name` is cut and the first 10 hex digits of its SHA-256 put before the suffix, so
/// two long names never give the same result.
pub fn suffixed(name: &str, suffix: &str) -> String {
    let full = format!("{name}{suffix}");
    if full.len() <= MAX_SUBDOMAIN_LEN {
        return full;
    }
    let digest = hex::encode(Sha256::digest(name.as_bytes()));
    let keep = MAX_SUBDOMAIN_LEN - suffix.len() - HASH_LEN - 1;
    let cut = (0..=keep)
        .rev()
        .find(|&i| name.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}-{}{suffix}", &name[..cut], &digest[..HASH_LEN]).replace(".-", "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixed_names_stay_within_the_limit_and_apart() {
        assert_eq!(suffixed("web-0", "-sa-token"), "web-0-sa-token");
        let (a, b) = ("a".repeat(250), format!("{}b", "a".repeat(249)));
        let (sa, sb) = (suffixed(&a, "-sa-token"), suffixed(&b, "-sa-token"));
        assert_eq!(sa.len(), 253);
        assert!(sa.ends_with("-sa-token"));
        assert_ne!(sa, sb);
    }

    #[test]
    fn short_names_are_joined() {
        assert_eq!(
            host_name("test", "my-namespace", "my-vcluster"),
            "test-x-my-namespace-x-my-vcluster"
        );
        assert_eq!(
            host_name(
                "coredns-94f599b5-wdgzg",
                "kube-system",
                "default-namespace-sync"
            ),
            "coredns-94f599b5-wdgzg-x-kube-system-x-default-namespace-sync"
        );
    }

    #[test]
    fn long_names_are_cut_and_hashed_as_documented() {
        // The pod of the namespace-syncing example in the seed documents.
        assert_eq!(
            host_name(
                "nginx-from-other-namespace",
                "some-other-namespace",
                "default-namespace-sync"
            ),
            "nginx-from-other-namespace-x-some-other-namespace-x--4b96e8f948"
        );
    }

    #[test]
    fn a_dot_before_the_cut_does_not_stay_before_a_dash() {
        let name = format!("{}.bb", "a".repeat(51));
        let host = host_name(&name, "ns", "vc");
        assert_eq!(host.len(), 62, "{host}");
        assert!(!host.contains(".-"), "{host}");
    }
}
