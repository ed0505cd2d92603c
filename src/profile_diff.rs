//! What a profile change does to workloads: each workload's pod is judged
//! under the profile in force and under the proposed one, through the
//! request path of the server (as `check` does), and the two verdicts are
//! compared.
//!
//! A verdict is what the webhook would do to the pod: where it may run
//! ([`Placement`]), under which policy, and what it adds (annotations,
//! labels, scheduling fields). Two verdicts that add the same things to the
//! pod are the same, whatever the reason a pod is left alone.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use serde::Serialize;
use serde_json::Value;

use crate::budgets::{Checking, Ledger};
use crate::decision::{Decision, Exclusions, Outcome, Target};
use crate::namespaces::NamespaceLookup;
use crate::profile::{Profile, SchedulingPolicy};
use crate::review::{self, Context};
use crate::workloads::Workload;

/// Where a pod may run, after the webhook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// Left alone: wherever the pod's own fields allow, in practice real nodes.
    RealNodes,
    /// On virtual nodes only (policy `virtualNodeOnly`, or the virtual
    /// node's nodeSelector set by hand).
    VirtualNodes,
    /// Real nodes first, virtual nodes as overflow (`normalNodePrefer`).
    RealNodesFirst,
    /// Either kind of node (`fair`).
    Either,
}

impl Placement {
    fn of(decision: &Decision<'_>) -> Self {
        if matches!(decision.outcome, Outcome::Skipped(_)) {
            return Placement::RealNodes;
        }
        match (decision.target, decision.policy) {
            (Some(Target::ByHand), _) => Placement::VirtualNodes,
            (_, Some(SchedulingPolicy::NormalNodePrefer)) => Placement::RealNodesFirst,
            (_, Some(SchedulingPolicy::Fair)) => Placement::Either,
            (_, Some(SchedulingPolicy::NormalNodeOnly)) => Placement::RealNodes,
            _ => Placement::VirtualNodes,
        }
    }

    /// Whether pods placed so can run on virtual nodes.
    pub fn uses_virtual_nodes(self) -> bool {
        self != Placement::RealNodes
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Placement::RealNodes => "real nodes",
            Placement::VirtualNodes => "virtual nodes",
            Placement::RealNodesFirst => "real nodes first, virtual nodes as overflow",
            Placement::Either => "real or virtual nodes",
        })
    }
}

/// What the webhook would do to one pod.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    /// `mutated`, `unchanged` or `skipped`.
    pub outcome: &'static str,
    /// Why the pod is left alone, when skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub placement: Placement,
    /// The policy of the first selecting rule, unless the pod is left alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<&'static str>,
    /// The rules applied: selecting, then effect-only.
    pub rules: Vec<String>,
    /// Annotations added.
    pub annotations: BTreeMap<String, String>,
    /// Labels added.
    pub labels: BTreeMap<String, String>,
    /// Other fields added (nodeSelector, tolerations, affinity...), as
    /// JSON Pointers and values, in the patch's order.
    pub scheduling: Vec<Addition>,
}

/// A value the patch adds at `path`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Addition {
    pub path: String,
    pub value: Value,
}

impl Verdict {
    /// Reads a decision.
    pub fn of(decision: &Decision<'_>) -> Self {
        let mut verdict = Verdict {
            outcome: decision.outcome.as_str(),
            reason: match &decision.outcome {
                Outcome::Skipped(reason) => Some(reason.to_string()),
                _ => None,
            },
            placement: Placement::of(decision),
            // A pod left alone has no policy; the reason names the rule.
            policy: match decision.outcome {
                Outcome::Skipped(_) => None,
                _ => decision.policy.map(SchedulingPolicy::as_str),
            },
            rules: decision.applied.iter().map(|r| r.to_string()).collect(),
            annotations: BTreeMap::new(),
            labels: BTreeMap::new(),
            scheduling: Vec::new(),
        };
        for add in decision.patch.operations() {
            let value = serde_json::to_value(add.value()).expect("a patch value is JSON");
            let map = match add.parent() {
                ["metadata", "annotations"] => &mut verdict.annotations,
                ["metadata", "labels"] => &mut verdict.labels,
                _ => {
                    // The `{}` or `[]` added before its first child says nothing more.
                    if !is_empty_container(&value) || add.key().is_some() {
                        verdict.scheduling.push(Addition {
                            path: add.path().to_string(),
                            value,
                        });
                    }
                    continue;
                }
            };
            if let (Some(key), Value::String(text)) = (add.key(), value) {
                map.insert(key.to_string(), text);
            }
        }
        verdict
    }

    /// Judges `workload`'s pod in its namespace against `context`, through
    /// the server's request path.
    pub fn judge(workload: &Workload, context: Context<'_>) -> Self {
        let body = review::pod_create_request(
            &workload.pod,
            &workload.namespace,
            "00000000-0000-4000-8000-000000000000",
        );
        match review::review(&body, context) {
            Ok(reviewed) => Verdict::of(&reviewed.evaluation.decision),
            Err(e) => Verdict::of(&Decision::skipped(
                crate::decision::SkipReason::UnreadableObject(e.to_string()),
            )),
        }
    }

    /// Whether the pod gets the same things under both verdicts.
    fn same_effect(&self, other: &Verdict) -> bool {
        self.placement == other.placement
            && self.policy == other.policy
            && self.annotations == other.annotations
            && self.labels == other.labels
            && self.scheduling == other.scheduling
    }
}

fn is_empty_container(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

/// How a workload's pods change, the first that applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    /// From real nodes only to a placement that uses virtual nodes.
    ToVirtualNodes,
    /// From a placement that uses virtual nodes to real nodes only.
    OffVirtualNodes,
    /// Another placement or policy that uses virtual nodes.
    Placement,
    /// Other scheduling fields (nodeSelector values, tolerations, affinity).
    Scheduling,
    /// Other annotations or labels.
    Metadata,
}

impl Change {
    /// All of them, in summary order.
    pub const ALL: [Change; 5] = [
        Change::ToVirtualNodes,
        Change::OffVirtualNodes,
        Change::Placement,
        Change::Scheduling,
        Change::Metadata,
    ];

    /// How the change reads after "N workloads".
    pub fn phrase(self, count: usize) -> &'static str {
        let one = count == 1;
        match self {
            Change::ToVirtualNodes if one => "moves to virtual nodes",
            Change::ToVirtualNodes => "move to virtual nodes",
            Change::OffVirtualNodes if one => "moves off virtual nodes",
            Change::OffVirtualNodes => "move off virtual nodes",
            Change::Placement if one => "changes placement",
            Change::Placement => "change placement",
            Change::Scheduling if one => "gets different scheduling fields",
            Change::Scheduling => "get different scheduling fields",
            Change::Metadata if one => "gets different annotations or labels",
            Change::Metadata => "get different annotations or labels",
        }
    }

    /// The change from `old` to `new`, if the pod gets anything different.
    pub fn between(old: &Verdict, new: &Verdict) -> Option<Change> {
        if old.same_effect(new) {
            return None;
        }
        let (was, is) = (
            old.placement.uses_virtual_nodes(),
            new.placement.uses_virtual_nodes(),
        );
        Some(if !was && is {
            Change::ToVirtualNodes
        } else if was && !is {
            Change::OffVirtualNodes
        } else if old.placement != new.placement || old.policy != new.policy {
            Change::Placement
        } else if old.scheduling != new.scheduling {
            Change::Scheduling
        } else {
            Change::Metadata
        })
    }
}

/// One workload whose pods change.
#[derive(Debug, Serialize)]
pub struct Changed<'w> {
    #[serde(flatten)]
    pub workload: Named<'w>,
    pub change: Change,
    pub old: Verdict,
    pub new: Verdict,
}

/// A workload's kind, namespace and name.
#[derive(Debug, Serialize)]
pub struct Named<'w> {
    pub namespace: &'w str,
    pub kind: &'w str,
    pub name: &'w str,
}

/// The workloads a profile change moves, and how many were judged.
#[derive(Debug, Serialize)]
pub struct Report<'w> {
    /// Workloads whose pods change, by namespace, kind and name.
    pub changed: Vec<Changed<'w>>,
    pub judged: usize,
}

impl<'w> Report<'w> {
    /// Judges every workload in its namespace (labels from `namespaces`,
    /// `exclusions` left alone) under the profiles `old` and `new`. Budgets
    /// are checked with nothing in use: each workload's pod alone against
    /// the limits.
    pub fn new(
        workloads: &'w [Workload],
        namespaces: &dyn NamespaceLookup,
        exclusions: &Exclusions,
        old: &Profile,
        new: &Profile,
    ) -> Self {
        let usage = Mutex::new(Ledger::default());
        let budgets = Checking(&usage);
        let context = |profile| Context {
            profile,
            exclusions,
            namespaces,
            budgets: &budgets,
        };
        Self::judge(workloads, context(old), context(new))
    }

    /// Judges every workload under the contexts `old` and `new`.
    pub fn judge(workloads: &'w [Workload], old: Context<'_>, new: Context<'_>) -> Self {
        let mut changed: Vec<Changed<'w>> = workloads
            .iter()
            .filter_map(|workload| {
                let (before, after) =
                    (Verdict::judge(workload, old), Verdict::judge(workload, new));
                Some(Changed {
                    change: Change::between(&before, &after)?,
                    workload: Named {
                        namespace: &workload.namespace,
                        kind: &workload.kind,
                        name: &workload.name,
                    },
                    old: before,
                    new: after,
                })
            })
            .collect();
        changed.sort_by(|a, b| {
            let key = |c: &Changed<'w>| (c.workload.namespace, c.workload.kind, c.workload.name);
            key(a).cmp(&key(b))
        });
        Report {
            changed,
            judged: workloads.len(),
        }
    }

    /// How many workloads change, by change.
    pub fn counts(&self) -> BTreeMap<Change, usize> {
        let mut counts = BTreeMap::new();
        for changed in &self.changed {
            *counts.entry(changed.change).or_default() += 1;
        }
        counts
    }

    /// One line: "2 workloads move to virtual nodes, 1 moves off virtual
    /// nodes; 7 unchanged (10 judged)".
    pub fn summary(&self) -> String {
        let counts = self.counts();
        let parts: Vec<String> = Change::ALL
            .iter()
            .filter_map(|change| {
                let n = *counts.get(change)?;
                Some((n, change.phrase(n)))
            })
            .enumerate()
            .map(|(i, (n, phrase))| match (i, n) {
                (0, 1) => format!("1 workload {phrase}"),
                (0, n) => format!("{n} workloads {phrase}"),
                (_, n) => format!("{n} {phrase}"),
            })
            .collect();
        let unchanged = self.judged - self.changed.len();
        if parts.is_empty() {
            format!("no workload changes ({} judged)", self.judged)
        } else {
            format!(
                "{}; {unchanged} unchanged ({} judged)",
                parts.join(", "),
                self.judged
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::namespaces::StaticNamespaces;
    use crate::profile::{self, ProfileData};

    fn profile(selectors: Value) -> Profile {
        profile_with(selectors, None)
    }

    fn profile_with(selectors: Value, virtual_node: Option<&str>) -> Profile {
        let mut data = vec![("selectors".to_string(), selectors.to_string())];
        if let Some(virtual_node) = virtual_node {
            data.push(("virtualNode".to_string(), virtual_node.to_string()));
        }
        profile::compile(&ProfileData::from_map(data))
            .into_result()
            .unwrap()
            .0
    }

    fn workload(name: &str, labels: Value) -> Workload {
        Workload {
            kind: "Deployment".into(),
            namespace: "shop".into(),
            name: name.into(),
            pod: json!({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"generateName": format!("{name}-"), "labels": labels},
                        "spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
        }
    }

    fn report<'w>(workloads: &'w [Workload], old: &Profile, new: &Profile) -> Report<'w> {
        let namespaces = StaticNamespaces::default();
        Report::new(workloads, &namespaces, &Exclusions::default(), old, new)
    }

    fn rule(name: &str, app: &str, extra: Value) -> Value {
        let mut rule = json!({"name": name, "objectSelector": {"matchLabels": {"app": app}}});
        rule.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        rule
    }

    #[test]
    fn each_kind_of_change_is_told_apart() {
        let workloads = [
            workload("web", json!({"app": "web"})),
            workload("batch", json!({"app": "batch"})),
            workload("api", json!({"app": "api"})),
            workload("cache", json!({"app": "cache"})),
            workload("db", json!({"app": "db"})),
            workload("other", json!({"app": "other"})),
        ];
        let old = profile(json!([
            rule("batch", "batch", json!({})),
            rule("api", "api", json!({})),
            rule(
                "cache",
                "cache",
                json!({"effect": {"annotations": {"k8s.aliyun.com/eci-use-specs": "2-4Gi"}}})
            ),
            rule(
                "db",
                "db",
                json!({"effect": {"annotations": {"k8s.aliyun.com/eci-spot-strategy": "SpotAsPriceGo"}}})
            ),
        ]));
        let new = profile(json!([
            rule("web", "web", json!({})),
            rule("api", "api", json!({"policy": "normalNodePrefer"})),
            rule(
                "cache",
                "cache",
                json!({"effect": {"annotations": {"k8s.aliyun.com/eci-use-specs": "4-8Gi"}}})
            ),
            rule(
                "db",
                "db",
                json!({"effect": {"annotations": {"k8s.aliyun.com/eci-spot-strategy": "SpotAsPriceGo"}}})
            ),
        ]));
        let report = report(&workloads, &old, &new);
        let changes: Vec<(&str, Change)> = report
            .changed
            .iter()
            .map(|c| (c.workload.name, c.change))
            .collect();
        assert_eq!(
            changes,
            [
                ("api", Change::Placement),
                ("batch", Change::OffVirtualNodes),
                ("cache", Change::Metadata),
                ("web", Change::ToVirtualNodes),
            ]
        );
        let web = &report.changed[3];
        assert_eq!(web.old.placement, Placement::RealNodes);
        assert_eq!(web.old.reason.as_deref(), Some("no rule selects the pod"));
        assert_eq!(web.new.placement, Placement::VirtualNodes);
        assert_eq!(web.new.rules, ["web"]);
        assert_eq!(web.new.labels[crate::decision::SENT_LABEL], "true");
        assert!(
            web.new
                .scheduling
                .iter()
                .any(|a| a.path.starts_with("/spec/tolerations")),
            "{:?}",
            web.new.scheduling
        );
        let cache = &report.changed[2];
        assert_eq!(
            cache.old.annotations["k8s.aliyun.com/eci-use-specs"],
            "2-4Gi"
        );
        assert_eq!(
            cache.new.annotations["k8s.aliyun.com/eci-use-specs"],
            "4-8Gi"
        );
        assert_eq!(
            report.summary(),
            "1 workload moves to virtual nodes, 1 moves off virtual nodes, 1 changes placement, 1 gets different annotations or labels; 2 unchanged (6 judged)"
        );
    }

    #[test]
    fn the_same_profile_changes_nothing() {
        let workloads = [workload("web", json!({"app": "web"}))];
        let p = profile(json!([rule("web", "web", json!({}))]));
        let report = report(&workloads, &p, &p);
        assert!(report.changed.is_empty());
        assert_eq!(report.summary(), "no workload changes (1 judged)");
    }

    #[test]
    fn another_skip_reason_is_not_a_change() {
        // Not selected before; kept off by a normalNodeOnly rule after.
        let workloads = [workload("web", json!({"app": "web"}))];
        let old = profile(json!([]));
        let new = profile(json!([rule(
            "web",
            "web",
            json!({"policy": "normalNodeOnly"})
        )]));
        assert!(report(&workloads, &old, &new).changed.is_empty());
    }

    #[test]
    fn other_virtual_node_selector_values_are_a_scheduling_change() {
        let workloads = [workload("web", json!({"app": "web"}))];
        let rules = json!([rule("web", "web", json!({}))]);
        let old = profile_with(
            rules.clone(),
            Some(
                "nodeSelector: {type: virtual-kubelet}\ntolerations: [{key: virtual-kubelet.io/provider, operator: Exists, effect: NoSchedule}]",
            ),
        );
        let new = profile_with(
            rules,
            Some(
                "nodeSelector: {type: virtual-kubelet}\ntolerations: [{key: virtual-kubelet.io/provider, operator: Equal, value: alibabacloud, effect: NoSchedule}]",
            ),
        );
        let report = report(&workloads, &old, &new);
        assert_eq!(report.changed.len(), 1, "{:?}", report.changed);
        assert_eq!(report.changed[0].change, Change::Scheduling);
    }
}
