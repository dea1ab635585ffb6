//! DNS-1123 label checks for the names the project derives (namespace names and prefixes).
//!
//! The CEL rules in [`crate::v1alpha1::cel`] express the same checks as regular expressions; the
//! constants below are shared by both so the two cannot drift apart.

/// Longest namespace name Kubernetes accepts (a DNS-1123 label).
pub const MAX_LABEL_LEN: usize = 63;

/// Longest literal prefix of a namespace pattern (the text before `*`), so that the part the `*`
/// matches still has room in a 63-character namespace name.
pub const MAX_PATTERN_PREFIX_LEN: usize = 32;

/// A DNS-1123 label, as a CEL/RE2 regular expression.
pub const LABEL_REGEX: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A namespace prefix (what may stand before a pattern's `*`), as a CEL/RE2 regular expression:
/// it starts like a label; it may end in `-` because the matched text follows it.
pub const PREFIX_REGEX: &str = "^[a-z0-9][-a-z0-9]*$";

fn is_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// Whether `s` is a valid DNS-1123 label (a valid namespace name).
pub fn is_label(s: &str) -> bool {
    let mut chars = s.chars();
    let (Some(first), Some(last)) = (chars.next(), s.chars().last()) else {
        return false;
    };
    s.len() <= MAX_LABEL_LEN
        && is_alnum(first)
        && is_alnum(last)
        && s.chars().all(|c| is_alnum(c) || c == '-')
}

/// Whether `s` can start a namespace name: non-empty, at most [`MAX_PATTERN_PREFIX_LEN`]
/// characters, starting with a lowercase alphanumeric, then alphanumerics or `-`.
pub fn is_prefix(s: &str) -> bool {
    s.chars().next().is_some_and(is_alnum)
        && s.len() <= MAX_PATTERN_PREFIX_LEN
        && s.chars().all(|c| is_alnum(c) || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for ok in ["a", "team-a", "0", "a0-b1", &"x".repeat(63)] {
            assert!(is_label(ok), "{ok} should be a label");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", "ä", &"x".repeat(64)] {
            assert!(!is_label(bad), "{bad} should not be a label");
        }
    }

    #[test]
    fn prefixes() {
        for ok in ["a", "team-", "h-team-a-", &"x".repeat(32)] {
            assert!(is_prefix(ok), "{ok} should be a prefix");
        }
        for bad in ["", "-a", "A-", "a.b", &"x".repeat(33)] {
            assert!(!is_prefix(bad), "{bad} should not be a prefix");
        }
    }
}
