//! What a test case expects of a decision, and how what was decided differs
//! from it. Pure: plain data in, differences out.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde_json::Value;

/// The `expect:` of a test case; every field is optional and only the
/// fields given are checked.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Expectation {
    /// `mutated`, `unchanged` or `skipped`.
    pub outcome: Option<ExpectedOutcome>,
    /// The skip reason's code (`daemonset`, `not-selected`, ...).
    pub reason: Option<String>,
    /// The rules applied, in order (those the applied-rules annotation lists).
    pub rules: Option<Vec<String>>,
    /// The scheduling policy used; `none` when there is none.
    pub policy: Option<String>,
    /// Annotations the pod has after the patch; `null` means absent.
    pub annotations: Option<BTreeMap<String, Option<String>>>,
    /// Labels the pod has after the patch; `null` means absent.
    pub labels: Option<BTreeMap<String, Option<String>>>,
    /// nodeSelector entries the pod has after the patch; `null` means absent.
    pub node_selector: Option<BTreeMap<String, Option<String>>>,
    /// The whole pod after the patch, compared exactly.
    pub pod: Option<Value>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ExpectedOutcome {
    Mutated,
    Unchanged,
    Skipped,
}

impl ExpectedOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mutated => "mutated",
            Self::Unchanged => "unchanged",
            Self::Skipped => "skipped",
        }
    }
}

/// What was decided for one case.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// `mutated`, `unchanged` or `skipped`.
    pub outcome: String,
    /// The skip reason's code; empty unless skipped.
    pub reason: String,
    pub rules: Vec<String>,
    /// The policy's name; `None` by hand or when skipped.
    pub policy: Option<String>,
    /// The pod after the patch (`null` if the request held none).
    pub pod: Value,
}

/// One field that differs: `field: expected E, got G`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    pub field: String,
    pub expected: String,
    pub got: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{}: expected {}, got {}",
            self.field, self.expected, self.got
        )
    }
}

/// At most this many differences of a whole pod are listed.
const POD_DIFFERENCES: usize = 20;

/// Every way `observed` differs from `expected`; empty when the case passes.
pub fn compare(expected: &Expectation, observed: &Observed) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut differ = |field: &str, expected: String, got: String| {
        if expected != got {
            out.push(Difference {
                field: field.to_string(),
                expected,
                got,
            });
        }
    };
    if let Some(outcome) = expected.outcome {
        differ(
            "outcome",
            outcome.as_str().to_string(),
            observed.outcome.clone(),
        );
    }
    if let Some(reason) = &expected.reason {
        let got = if observed.reason.is_empty() {
            format!("none ({})", observed.outcome)
        } else {
            observed.reason.clone()
        };
        differ("reason", reason.clone(), got);
    }
    if let Some(rules) = &expected.rules {
        differ("rules", list(rules), list(&observed.rules));
    }
    if let Some(policy) = &expected.policy {
        let got = observed.policy.clone().unwrap_or_else(|| "none".into());
        differ("policy", policy.clone(), got);
    }
    let maps = [
        (
            "annotations",
            &expected.annotations,
            "/metadata/annotations",
        ),
        ("labels", &expected.labels, "/metadata/labels"),
        (
            "nodeSelector",
            &expected.node_selector,
            "/spec/nodeSelector",
        ),
    ];
    for (name, entries, pointer) in maps {
        let Some(entries) = entries else { continue };
        let actual = observed.pod.pointer(pointer);
        for (key, value) in entries {
            let got = actual.and_then(|m| m.get(key));
            differ(
                &format!("{name}[{key}]"),
                value.as_deref().map_or("absent".into(), quote),
                got.map_or("absent".into(), show),
            );
        }
    }
    if let Some(pod) = &expected.pod {
        let mut pod_differences = Vec::new();
        diff_values("pod", pod, &observed.pod, &mut pod_differences);
        let extra = pod_differences.len().saturating_sub(POD_DIFFERENCES);
        out.extend(pod_differences.into_iter().take(POD_DIFFERENCES));
        if extra > 0 {
            out.push(Difference {
                field: "pod".into(),
                expected: "the pod given".into(),
                got: format!("{extra} more difference(s)"),
            });
        }
    }
    out
}

/// `[a, b]`.
fn list(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

fn quote(s: &str) -> String {
    Value::from(s).to_string()
}

/// A JSON value on one line.
fn show(value: &Value) -> String {
    value.to_string()
}

/// The differences between two JSON values, by path under `path`.
fn diff_values(path: &str, expected: &Value, got: &Value, out: &mut Vec<Difference>) {
    match (expected, got) {
        (Value::Object(e), Value::Object(g)) => {
            for (key, value) in e {
                let field = format!("{path}.{key}");
                match g.get(key) {
                    Some(other) => diff_values(&field, value, other, out),
                    None => out.push(Difference {
                        field,
                        expected: show(value),
                        got: "absent".into(),
                    }),
                }
            }
            for (key, value) in g.iter().filter(|(k, _)| !e.contains_key(*k)) {
                out.push(Difference {
                    field: format!("{path}.{key}"),
                    expected: "absent".into(),
                    got: show(value),
                });
            }
        }
        (Value::Array(e), Value::Array(g)) if e.len() == g.len() => {
            for (i, (e, g)) in e.iter().zip(g).enumerate() {
                diff_values(&format!("{path}[{i}]"), e, g, out);
            }
        }
        _ if expected != got => out.push(Difference {
            field: path.to_string(),
            expected: show(expected),
            got: show(got),
        }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn observed() -> Observed {
        Observed {
            outcome: "mutated".into(),
            reason: String::new(),
            rules: vec!["eci-namespaces".into(), "image-cache".into()],
            policy: Some("virtualNodeOnly".into()),
            pod: json!({
                "metadata": {"name": "web", "annotations": {"k8s.aliyun.com/eci-auto-imc": "true"}},
                "spec": {"nodeSelector": {"type": "virtual-kubelet"}, "containers": [{"name": "web"}]}
            }),
        }
    }

    fn fields(differences: &[Difference]) -> Vec<String> {
        differences.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn nothing_expected_passes() {
        assert!(compare(&Expectation::default(), &observed()).is_empty());
    }

    #[test]
    fn matching_expectations_pass() {
        let expected = Expectation {
            outcome: Some(ExpectedOutcome::Mutated),
            rules: Some(vec!["eci-namespaces".into(), "image-cache".into()]),
            policy: Some("virtualNodeOnly".into()),
            annotations: Some(BTreeMap::from([
                ("k8s.aliyun.com/eci-auto-imc".into(), Some("true".into())),
                ("k8s.aliyun.com/eci-spot-strategy".into(), None),
            ])),
            node_selector: Some(BTreeMap::from([(
                "type".into(),
                Some("virtual-kubelet".into()),
            )])),
            pod: Some(observed().pod),
            ..Expectation::default()
        };
        assert_eq!(compare(&expected, &observed()), []);
    }

    #[test]
    fn each_field_that_differs_is_named_with_both_values() {
        let expected = Expectation {
            outcome: Some(ExpectedOutcome::Skipped),
            reason: Some("daemonset".into()),
            rules: Some(vec!["eci-namespaces".into()]),
            policy: Some("fair".into()),
            annotations: Some(BTreeMap::from([
                ("k8s.aliyun.com/eci-auto-imc".into(), None),
                ("k8s.aliyun.com/eci-use-specs".into(), Some("2-4Gi".into())),
            ])),
            labels: Some(BTreeMap::from([("app".into(), Some("web".into()))])),
            ..Expectation::default()
        };
        assert_eq!(
            fields(&compare(&expected, &observed())),
            [
                "outcome: expected skipped, got mutated",
                "reason: expected daemonset, got none (mutated)",
                "rules: expected [eci-namespaces], got [eci-namespaces, image-cache]",
                "policy: expected fair, got virtualNodeOnly",
                "annotations[k8s.aliyun.com/eci-auto-imc]: expected absent, got \"true\"",
                "annotations[k8s.aliyun.com/eci-use-specs]: expected \"2-4Gi\", got absent",
                "labels[app]: expected \"web\", got absent",
            ]
        );
    }

    #[test]
    fn a_skipped_pod_has_no_policy() {
        let observed = Observed {
            outcome: "skipped".into(),
            reason: "daemonset".into(),
            rules: Vec::new(),
            policy: None,
            pod: Value::Null,
        };
        let expected = Expectation {
            outcome: Some(ExpectedOutcome::Skipped),
            reason: Some("daemonset".into()),
            policy: Some("none".into()),
            rules: Some(Vec::new()),
            ..Expectation::default()
        };
        assert_eq!(compare(&expected, &observed), []);
        let wrong = Expectation {
            reason: Some("host-network".into()),
            ..expected
        };
        assert_eq!(
            fields(&compare(&wrong, &observed)),
            ["reason: expected host-network, got daemonset"]
        );
    }

    #[test]
    fn a_whole_pod_differs_by_path() {
        let expected = Expectation {
            pod: Some(json!({
                "metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {"nodeSelector": {"type": "virtual-kubelet"}, "containers": [{"name": "api"}]}
            })),
            ..Expectation::default()
        };
        assert_eq!(
            fields(&compare(&expected, &observed())),
            [
                "pod.metadata.labels: expected {\"app\":\"web\"}, got absent",
                "pod.metadata.annotations: expected absent, got {\"k8s.aliyun.com/eci-auto-imc\":\"true\"}",
                "pod.spec.containers[0].name: expected \"api\", got \"web\"",
            ]
        );
    }

    #[test]
    fn a_long_pod_difference_is_cut_short() {
        let many: serde_json::Map<String, Value> =
            (0..30).map(|i| (format!("k{i:02}"), json!(i))).collect();
        // 30 annotations missing, and one there that is not expected.
        let mut pod = observed().pod;
        pod["metadata"]["annotations"] = Value::Object(many);
        let expected = Expectation {
            pod: Some(pod),
            ..Expectation::default()
        };
        let differences = compare(&expected, &observed());
        assert_eq!(differences.len(), POD_DIFFERENCES + 1);
        assert_eq!(
            differences.last().unwrap().to_string(),
            "pod: expected the pod given, got 11 more difference(s)"
        );
    }

    #[test]
    fn outcomes_are_read_in_lower_case_only() {
        let e: Expectation = serde_json::from_value(json!({"outcome": "skipped"})).unwrap();
        assert_eq!(e.outcome, Some(ExpectedOutcome::Skipped));
        assert!(serde_json::from_value::<Expectation>(json!({"outcome": "Skipped"})).is_err());
        assert!(serde_json::from_value::<Expectation>(json!({"outcom": "skipped"})).is_err());
    }
}
