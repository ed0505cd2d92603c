//! Kubernetes label and annotation syntax, as the API server validates it.
//!
//! Used by profile validation so that a profile never asks the webhook to
//! write a key or value the API server would then reject.

use std::collections::BTreeMap;

/// Labels (or annotations) of an object, ordered by key.
pub type Labels = BTreeMap<String, String>;

/// The label every namespace carries with its own name (Kubernetes ≥ 1.21).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

const QUALIFIED_NAME_MAX: usize = 63;
const DNS_SUBDOMAIN_MAX: usize = 253;
const LABEL_VALUE_MAX: usize = 63;

/// Checks a label key or an annotation key (`[prefix/]name`), returning why it is invalid.
pub fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err("prefix part must not be empty".into());
        }
        check_dns_subdomain(prefix).map_err(|e| format!("prefix part {e}"))?;
    }
    if name.is_empty() {
        return Err("name part must not be empty".into());
    }
    if name.len() > QUALIFIED_NAME_MAX {
        return Err(format!(
            "name part must be no more than {QUALIFIED_NAME_MAX} characters"
        ));
    }
    if !is_name_token(name) {
        return Err(
            "name part must consist of alphanumeric characters, '-', '_' or '.', \
             and must start and end with an alphanumeric character"
                .into(),
        );
    }
    Ok(())
}

/// Checks a label value (may be empty), returning why it is invalid.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > LABEL_VALUE_MAX {
        return Err(format!("must be no more than {LABEL_VALUE_MAX} characters"));
    }
    if !is_name_token(value) {
        return Err("must consist of alphanumeric characters, '-', '_' or '.', \
             and must start and end with an alphanumeric character"
            .into());
    }
    Ok(())
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, non-empty.
fn is_name_token(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// Checks an RFC 1123 subdomain (lowercase labels of
/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?` joined by dots, at most 253 characters),
/// as the names of most Kubernetes objects are; returns why it is invalid.
pub fn check_dns_subdomain(s: &str) -> Result<(), String> {
    if s.len() > DNS_SUBDOMAIN_MAX {
        return Err(format!(
            "must be no more than {DNS_SUBDOMAIN_MAX} characters"
        ));
    }
    if s.split('.').all(is_dns_label) {
        Ok(())
    } else {
        Err("must be a lowercase RFC 1123 subdomain (e.g. 'example.com')".into())
    }
}

/// Checks an RFC 1123 label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63
/// characters), as namespace names are; returns why it is invalid.
pub fn check_dns_label(s: &str) -> Result<(), String> {
    if s.len() > QUALIFIED_NAME_MAX {
        return Err(format!(
            "must be no more than {QUALIFIED_NAME_MAX} characters"
        ));
    }
    if is_dns_label(s) {
        Ok(())
    } else {
        Err("must be a lowercase RFC 1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit".into())
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, any length.
fn is_dns_label(part: &str) -> bool {
    let b = part.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_keys() {
        for key in [
            "app",
            "k8s.aliyun.com/eci-use-specs",
            "kubernetes.io/metadata.name",
            "a",
            "A_b.c-9",
            "eci-profile.io/exclude",
        ] {
            assert_eq!(check_key(key), Ok(()), "{key}");
        }
    }

    #[test]
    fn rejects_invalid_keys() {
        for key in [
            "",
            "/x",
            "x/",
            "Example.com/x",
            "example.com/a~b",
            "-app",
            "app-",
            "a/b/c",
            "has space",
            &"x".repeat(64),
            &format!("{}/x", "a".repeat(254)),
        ] {
            assert!(check_key(key).is_err(), "{key:?} should be invalid");
        }
    }

    #[test]
    fn label_values() {
        assert_eq!(check_label_value(""), Ok(()));
        assert_eq!(check_label_value("true"), Ok(()));
        assert_eq!(check_label_value("v1.2_3-x"), Ok(()));
        assert!(check_label_value("a/b").is_err());
        assert!(check_label_value("-x").is_err());
        assert!(check_label_value(&"x".repeat(64)).is_err());
    }

    #[test]
    fn dns_labels_are_subdomain_parts() {
        assert_eq!(check_dns_label("team-a"), Ok(()));
        assert_eq!(check_dns_label(&"a".repeat(63)), Ok(()));
        for bad in ["", "A_b", "-a", "a-", "a.b", &"a".repeat(64)] {
            assert!(check_dns_label(bad).is_err(), "{bad}");
        }
        assert_eq!(check_dns_subdomain("a.b-c.d"), Ok(()));
        assert!(check_dns_subdomain("a..b").is_err());
    }
}
