//! An index of the selecting rules by a label each one requires, so that a
//! pod is checked against the few rules that can select it rather than
//! all of them. The index only narrows: every candidate is still evaluated
//! in full, in rule order.

use std::collections::HashMap;

use super::Rule;
use crate::selector::{Operator, Selector};

/// Rules filed by a `key=value` they require, per side.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuleIndex {
    /// Rules requiring a pod label: key → value → rule positions.
    by_pod_label: HashMap<String, HashMap<String, Vec<u32>>>,
    /// Rules requiring a namespace label (and no indexable pod label).
    by_namespace_label: HashMap<String, HashMap<String, Vec<u32>>>,
    /// Rules with no `In` requirement to file them under.
    unindexed: Vec<u32>,
}

/// The `In` requirement with the fewest values, if any.
fn most_selective(selector: Option<&Selector>) -> Option<(&str, &[String])> {
    selector?
        .requirements()
        .iter()
        .filter(|r| r.operator == Operator::In)
        .min_by_key(|r| r.values.len())
        .map(|r| (r.key.as_str(), r.values.as_slice()))
}

impl RuleIndex {
    /// Indexes `rules` (selecting rules, in order).
    pub fn new(rules: &[Rule]) -> Self {
        let mut index = Self::default();
        for (position, rule) in rules.iter().enumerate() {
            let position = position as u32;
            let (map, (key, values)) = match (
                most_selective(rule.object_selector.as_ref()),
                most_selective(rule.namespace_selector.as_ref()),
            ) {
                (Some(required), _) => (&mut index.by_pod_label, required),
                (None, Some(required)) => (&mut index.by_namespace_label, required),
                (None, None) => {
                    index.unindexed.push(position);
                    continue;
                }
            };
            let by_value = map.entry(key.to_string()).or_default();
            for value in values {
                by_value.entry(value.clone()).or_default().push(position);
            }
        }
        index
    }

    /// Positions of the rules that may select a pod with `pod_labels` in a
    /// namespace with `namespace_labels`, ascending. With `all_namespace_rules`,
    /// every rule filed by a namespace label is included (when the namespace's
    /// labels are unknown, those rules must be looked at to be reported).
    pub fn candidates<'a>(
        &self,
        pod_labels: impl Iterator<Item = (&'a str, &'a str)>,
        namespace_labels: impl Iterator<Item = (&'a str, &'a str)>,
        all_namespace_rules: bool,
        out: &mut Vec<u32>,
    ) {
        out.clear();
        out.extend_from_slice(&self.unindexed);
        let mut lookup =
            |map: &HashMap<String, HashMap<String, Vec<u32>>>, key: &str, value: &str| {
                if let Some(rules) = map.get(key).and_then(|by_value| by_value.get(value)) {
                    out.extend_from_slice(rules);
                }
            };
        for (key, value) in pod_labels {
            lookup(&self.by_pod_label, key, value);
        }
        if all_namespace_rules {
            out.extend(
                self.by_namespace_label
                    .values()
                    .flat_map(|v| v.values())
                    .flatten(),
            );
        } else {
            for (key, value) in namespace_labels {
                lookup(&self.by_namespace_label, key, value);
            }
        }
        out.sort_unstable();
        out.dedup();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::SchedulingPolicy;
    use crate::selector::Requirement;

    fn rule(
        name: &str,
        object: Option<Vec<Requirement>>,
        namespace: Option<Vec<Requirement>>,
    ) -> Rule {
        Rule {
            name: name.into(),
            source: super::super::RuleSource::ConfigMap(0),
            priority: 0,
            policy: SchedulingPolicy::default(),
            budget: None,
            object_selector: object.map(Selector::new),
            namespace_selector: namespace.map(Selector::new),
            annotations: Vec::new(),
            labels: Vec::new(),
        }
    }

    fn is(key: &str, values: &[&str]) -> Requirement {
        Requirement::new(
            key,
            Operator::In,
            values.iter().map(|v| v.to_string()).collect(),
        )
    }

    #[test]
    fn files_rules_by_their_most_selective_requirement() {
        let rules = [
            rule(
                "pod",
                Some(vec![is("tier", &["a", "b", "c"]), is("app", &["web"])]),
                None,
            ),
            rule("ns", None, Some(vec![is("team", &["x"])])),
            rule(
                "exists",
                Some(vec![Requirement::new("gpu", Operator::Exists, vec![])]),
                None,
            ),
            rule(
                "both",
                Some(vec![is("app", &["web", "api"])]),
                Some(vec![is("team", &["y"])]),
            ),
        ];
        let index = RuleIndex::new(&rules);
        let mut out = Vec::new();
        index.candidates(
            [("app", "web")].into_iter(),
            [("team", "x")].into_iter(),
            false,
            &mut out,
        );
        assert_eq!(out, [0, 1, 2, 3]);
        index.candidates(
            [("app", "api")].into_iter(),
            [("team", "z")].into_iter(),
            false,
            &mut out,
        );
        assert_eq!(out, [2, 3]);
        index.candidates(std::iter::empty(), std::iter::empty(), true, &mut out);
        assert_eq!(out, [1, 2]);
    }
}
