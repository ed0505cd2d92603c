//! Kubernetes label selectors: compiled form and matching, with the exact
//! semantics of `metav1.LabelSelectorAsSelector`.
//!
//! `matchLabels` entries become `In` requirements with one value; every
//! requirement must hold (logical AND). An empty selector matches everything.

use crate::labels::{Labels, NAMESPACE_NAME_LABEL};

/// A `matchExpressions` operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    /// The key is present and its value is one of the values.
    In,
    /// The key is absent, or its value is none of the values.
    NotIn,
    /// The key is present.
    Exists,
    /// The key is absent.
    DoesNotExist,
}

impl Operator {
    /// Parses the operator as spelled in the Kubernetes API.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "In" => Some(Self::In),
            "NotIn" => Some(Self::NotIn),
            "Exists" => Some(Self::Exists),
            "DoesNotExist" => Some(Self::DoesNotExist),
            _ => None,
        }
    }

    /// The operator as spelled in the Kubernetes API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::In => "In",
            Self::NotIn => "NotIn",
            Self::Exists => "Exists",
            Self::DoesNotExist => "DoesNotExist",
        }
    }

    /// Whether the operator takes a non-empty `values` list (`In`, `NotIn`) or none.
    pub fn takes_values(self) -> bool {
        matches!(self, Self::In | Self::NotIn)
    }
}

/// One requirement of a selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    /// Sorted and de-duplicated.
    pub values: Vec<String>,
}

impl Requirement {
    /// Builds a requirement; `values` are sorted and de-duplicated.
    pub fn new(key: impl Into<String>, operator: Operator, mut values: Vec<String>) -> Self {
        values.sort_unstable();
        values.dedup();
        Self {
            key: key.into(),
            operator,
            values,
        }
    }

    fn matches(&self, labels: &impl LabelSource) -> bool {
        let value = labels.label(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }

    fn contains(&self, value: &str) -> bool {
        self.values
            .binary_search_by(|candidate| candidate.as_str().cmp(value))
            .is_ok()
    }
}

/// A compiled label selector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// A selector from its requirements (already validated).
    pub fn new(requirements: Vec<Requirement>) -> Self {
        Self { requirements }
    }

    /// Whether every requirement holds for `labels`.
    pub fn matches(&self, labels: &impl LabelSource) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// The requirements, in declaration order (`matchLabels` first).
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether the selector is `{}` and so matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether every requirement uses only `key` (true for `{}`).
    pub fn uses_only_key(&self, key: &str) -> bool {
        self.requirements.iter().all(|r| r.key == key)
    }
}

/// Something that has labels to match a selector against.
pub trait LabelSource {
    /// The value of label `key`, if set.
    fn label(&self, key: &str) -> Option<&str>;
}

impl LabelSource for Labels {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl<T: LabelSource> LabelSource for Option<&T> {
    fn label(&self, key: &str) -> Option<&str> {
        self.and_then(|labels| labels.label(key))
    }
}

/// A namespace's labels as selectors see them: whatever is known, plus
/// `kubernetes.io/metadata.name`, which every namespace carries.
#[derive(Clone, Copy, Debug)]
pub struct NamespaceLabels<'a> {
    pub name: &'a str,
    /// `None` when the namespace's labels are unknown.
    pub labels: Option<&'a Labels>,
}

impl LabelSource for NamespaceLabels<'_> {
    fn label(&self, key: &str) -> Option<&str> {
        if key == NAMESPACE_NAME_LABEL {
            Some(self.name)
        } else {
            self.labels.label(key)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req(key: &str, op: Operator, values: &[&str]) -> Requirement {
        Requirement::new(key, op, values.iter().map(|v| v.to_string()).collect())
    }

    #[test]
    fn empty_selector_matches_everything() {
        let s = Selector::default();
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn operators_follow_kubernetes_semantics() {
        let l = labels(&[("env", "prod"), ("tier", "")]);
        let cases = [
            (req("env", Operator::In, &["prod", "dev"]), true),
            (req("env", Operator::In, &["dev"]), false),
            (req("missing", Operator::In, &["x"]), false),
            (req("env", Operator::NotIn, &["dev"]), true),
            (req("env", Operator::NotIn, &["prod"]), false),
            // NotIn matches a missing key.
            (req("missing", Operator::NotIn, &["x"]), true),
            (req("tier", Operator::Exists, &[]), true),
            (req("missing", Operator::Exists, &[]), false),
            (req("missing", Operator::DoesNotExist, &[]), true),
            (req("tier", Operator::DoesNotExist, &[]), false),
            // An empty value is a value.
            (req("tier", Operator::In, &[""]), true),
        ];
        for (r, expected) in cases {
            let s = Selector::new(vec![r.clone()]);
            assert_eq!(s.matches(&l), expected, "{r:?}");
        }
    }

    #[test]
    fn all_requirements_must_hold() {
        let s = Selector::new(vec![
            req("env", Operator::In, &["prod"]),
            req("team", Operator::Exists, &[]),
        ]);
        assert!(s.matches(&labels(&[("env", "prod"), ("team", "a")])));
        assert!(!s.matches(&labels(&[("env", "prod")])));
    }

    #[test]
    fn namespace_always_carries_its_name() {
        let s = Selector::new(vec![req(NAMESPACE_NAME_LABEL, Operator::In, &["team-a"])]);
        let unknown = NamespaceLabels {
            name: "team-a",
            labels: None,
        };
        assert!(s.matches(&unknown));
        // The namespace's real name wins over a stale or forged label value.
        let l = labels(&[(NAMESPACE_NAME_LABEL, "other")]);
        let known = NamespaceLabels {
            name: "team-a",
            labels: Some(&l),
        };
        assert!(s.matches(&known));
        assert!(s.uses_only_key(NAMESPACE_NAME_LABEL));
        assert!(
            !Selector::new(vec![req("x", Operator::Exists, &[])])
                .uses_only_key(NAMESPACE_NAME_LABEL)
        );
    }
}
