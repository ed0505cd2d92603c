//! `Selector` objects (`eci.aliyun.com/v1` and `v1beta1`, cluster-scoped),
//! the rule format of the open-source eci-profile: each object is one rule,
//! named by `metadata.name`, checked with the same messages as the
//! ConfigMap's rules.
//!
//! ```yaml
//! apiVersion: eci.aliyun.com/v1
//! kind: Selector
//! metadata:
//!   name: web
//! spec:
//!   namespaceLabels: {matchLabels: {team: web}}   # the ConfigMap's namespaceSelector
//!   objectLabels: {matchLabels: {app: nginx}}      # the ConfigMap's objectSelector
//!   effect: {annotations: {...}, labels: {...}}
//!   policy: {fair: {}}                             # exactly one key; absent: virtualNodeOnly
//!   priority: 3
//! ```

use super::compile::{Checker, field};
use super::node::{Node, Value};
use super::{Budget, Diagnostics, Origin, Rule, RuleSource, SchedulingPolicy, Severity};
use crate::budgets::Limits;
use crate::labels;

/// The API group of Selector objects.
pub const GROUP: &str = "eci.aliyun.com";
/// The versions served, the stored one first.
pub const VERSIONS: &[&str] = &["v1", "v1beta1"];
/// The kind.
pub const KIND: &str = "Selector";

/// The policies a Selector's `spec.policy` may name, one at a time.
const POLICIES: &[&str] = &[
    "virtualNodeOnly",
    "fair",
    "normalNodePrefer",
    "normalNodeOnly",
    "namespaceResourceLimit",
];

/// One Selector object, checked and compiled.
#[derive(Clone, Debug)]
pub struct CompiledSelector {
    /// `metadata.name`, when readable.
    pub name: Option<String>,
    /// The rule, when the object has no errors.
    pub rule: Option<Rule>,
    pub diagnostics: Diagnostics,
    /// A stable digest of the name and `spec`, to tell versions apart.
    pub digest: u64,
}

/// Whether `node` is a Selector object (by `apiVersion` group and `kind`).
pub fn is_selector(node: &Node) -> bool {
    let group = node
        .get("apiVersion")
        .and_then(Node::as_str)
        .and_then(|v| v.split_once('/'))
        .map(|(group, _)| group);
    group == Some(GROUP) && node.get("kind").and_then(Node::as_str) == Some(KIND)
}

/// Checks a Selector object and compiles it into a rule; `origin` says
/// where its positions are (a file, or nowhere for the cluster's objects).
pub fn compile_selector(object: &Node, origin: &Origin) -> CompiledSelector {
    let mut checker = Checker {
        origin: Some(origin.clone()),
        key_position: object.position,
        ..Checker::default()
    };
    let name = object
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Node::as_str)
        .map(str::to_string);
    let digest = crate::digest::fnv1a([
        name.as_deref().unwrap_or("").as_bytes(),
        object
            .get("spec")
            .and_then(Node::to_json)
            .map(|spec| spec.to_string())
            .unwrap_or_default()
            .as_bytes(),
    ]);
    checker.selector = name.clone();
    let rule = checker.selector_object(object, name.as_deref());
    CompiledSelector {
        name,
        rule,
        diagnostics: Diagnostics(checker.diagnostics),
        digest,
    }
}

impl Checker {
    fn selector_object(&mut self, object: &Node, name: Option<&str>) -> Option<Rule> {
        let fields = self.object("", object, "a Selector object")?;
        match field(fields, "apiVersion").and_then(Node::as_str) {
            Some(v)
                if VERSIONS
                    .iter()
                    .any(|version| v == format!("{GROUP}/{version}")) => {}
            _ => self.error(
                "apiVersion",
                field(fields, "apiVersion").unwrap_or(object),
                format!(
                    "must be {} (a Selector of the open-source eci-profile)",
                    VERSIONS
                        .iter()
                        .map(|v| format!("{GROUP}/{v}"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            ),
        }
        let metadata = field(fields, "metadata");
        let name = match (name, metadata.and_then(|m| m.get("name"))) {
            (Some(name), Some(node)) if !name.is_empty() => {
                self.rule_name("metadata.name", node, name).then_some(name)
            }
            (_, node) => {
                self.error(
                    "metadata.name",
                    node.or(metadata).unwrap_or(object),
                    "is required, a string",
                );
                None
            }
        };
        if let Some(namespace) = metadata.and_then(|m| m.get("namespace")) {
            self.warning(
                "metadata.namespace",
                namespace,
                "is ignored: Selector objects are cluster-scoped",
            );
        }
        let Some(spec) = field(fields, "spec") else {
            self.error("spec", object, "is required");
            return None;
        };
        let spec_fields = self.object("spec", spec, "an object")?;
        let errors_before = self.error_count();
        self.unknown_fields(
            "spec",
            spec_fields,
            &[
                "namespaceLabels",
                "objectLabels",
                "effect",
                "policy",
                "priority",
            ],
        );
        let mut rule = self.rule_body(
            "spec",
            spec_fields,
            ["namespaceLabels", "objectLabels"],
            RuleSource::Selector,
        );
        let policy = field(spec_fields, "policy").filter(|n| n.value != Value::Null);
        if let Some(node) = policy {
            self.policy(node, &mut rule);
        }
        rule.name = name?.to_string();
        if self.error_count() > errors_before {
            return None;
        }
        self.rule_warnings("spec", spec, policy, &rule);
        Some(rule)
    }

    /// `spec.policy`: an object with exactly one of [`POLICIES`].
    fn policy(&mut self, node: &Node, rule: &mut Rule) {
        let Some(entries) = self.object("spec.policy", node, "an object with one policy") else {
            return;
        };
        let expected = format!("exactly one of {}", POLICIES.join(", "));
        let [(key, value)] = entries else {
            let found: Vec<&str> = entries.iter().filter_map(|(k, _)| k.as_str()).collect();
            self.error(
                "spec.policy",
                node,
                match found.as_slice() {
                    [] => format!("must have {expected}"),
                    found => format!("must have {expected}, found {}", found.join(", ")),
                },
            );
            return;
        };
        let Some(name) = key.as_str() else {
            self.error("spec.policy", key, "field names must be strings");
            return;
        };
        let path = format!("spec.policy.{name}");
        let fields: &[(Node, Node)] = match &value.value {
            Value::Null => &[],
            Value::Mapping(fields) => fields,
            other => {
                self.error(
                    &path,
                    value,
                    format!("must be an object, found {}", other.kind()),
                );
                return;
            }
        };
        rule.policy = match name {
            "virtualNodeOnly" | "fair" | "normalNodeOnly" => {
                self.unknown_fields(&path, fields, &[]);
                SchedulingPolicy::parse(name).expect("a known policy")
            }
            "normalNodePrefer" => {
                self.unknown_fields(&path, fields, &["cpuRatio", "memoryRatio"]);
                for ratio in ["cpuRatio", "memoryRatio"] {
                    match field(fields, ratio) {
                        None | Some(Node { value: Value::Null, .. }) => {}
                        Some(n @ Node { value: Value::Integer(_) | Value::Float(_), .. }) => self.warning(
                            &format!("{path}.{ratio}"),
                            n,
                            "is accepted and ignored, as by the open-source eci-profile: real nodes are preferred whatever their load",
                        ),
                        Some(n) => self.error(
                            &format!("{path}.{ratio}"),
                            n,
                            format!("must be a number, found {}", n.value.kind()),
                        ),
                    }
                }
                SchedulingPolicy::NormalNodePrefer
            }
            "namespaceResourceLimit" => {
                self.unknown_fields(&path, fields, &["namespace", "limits"]);
                rule.budget = self.namespace_limit(&path, value, fields);
                SchedulingPolicy::VirtualNodeOnly
            }
            _ => {
                self.error(
                    "spec.policy",
                    key,
                    format!("unknown policy {name:?}: must have {expected}"),
                );
                SchedulingPolicy::default()
            }
        };
    }

    fn namespace_limit(
        &mut self,
        path: &str,
        node: &Node,
        fields: &[(Node, Node)],
    ) -> Option<Budget> {
        let errors_before = self.error_count();
        let namespace = match field(fields, "namespace") {
            Some(Node {
                value: Value::String(ns),
                position,
            }) => {
                if let Err(why) = labels::check_dns_label(ns) {
                    self.report(
                        Severity::Error,
                        &format!("{path}.namespace"),
                        *position,
                        format!("invalid namespace {ns:?}: {why}"),
                    );
                }
                ns.clone()
            }
            Some(n) => {
                self.error(
                    &format!("{path}.namespace"),
                    n,
                    format!("must be a string, found {}", n.value.kind()),
                );
                String::new()
            }
            None => {
                self.error(&format!("{path}.namespace"), node, "is required");
                String::new()
            }
        };
        let limits = match field(fields, "limits") {
            None => {
                self.error(&format!("{path}.limits"), node, "is required");
                Limits::default()
            }
            Some(n) => self.limits(&format!("{path}.limits"), n),
        };
        (self.error_count() == errors_before).then_some(Budget {
            limits,
            namespace: Some(namespace),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budgets::{Quantity, Resource};
    use crate::profile::node::{self, Booleans};

    fn compile(yaml: &str) -> CompiledSelector {
        let node = node::parse(yaml, Booleans::Yaml11).unwrap();
        compile_selector(&node, &Origin::File("s.yaml".into()))
    }

    fn messages(c: &CompiledSelector) -> String {
        c.diagnostics.to_string()
    }

    const HEAD: &str = "apiVersion: eci.aliyun.com/v1\nkind: Selector\nmetadata:\n  name: web\n";

    #[test]
    fn every_policy_compiles() {
        for (policy, expected) in [
            ("{virtualNodeOnly: {}}", SchedulingPolicy::VirtualNodeOnly),
            ("{fair: {}}", SchedulingPolicy::Fair),
            ("{normalNodePrefer: {}}", SchedulingPolicy::NormalNodePrefer),
            ("{normalNodeOnly: {}}", SchedulingPolicy::NormalNodeOnly),
            (
                "{namespaceResourceLimit: {namespace: team-a, limits: {cpu: 8, memory: 16Gi}}}",
                SchedulingPolicy::VirtualNodeOnly,
            ),
        ] {
            let c = compile(&format!(
                "{HEAD}spec:\n  objectLabels: {{matchLabels: {{app: web}}}}\n  policy: {policy}\n  priority: 4\n"
            ));
            let text = messages(&c);
            let rule = c.rule.unwrap_or_else(|| panic!("{policy}: {text}"));
            assert_eq!(rule.policy, expected, "{policy}");
            assert_eq!((rule.name.as_str(), rule.priority), ("web", 4));
            assert_eq!(rule.source, RuleSource::Selector);
        }
    }

    #[test]
    fn absent_policy_is_virtual_node_only_and_limits_are_kept() {
        let c = compile(&format!(
            "{HEAD}spec:\n  objectLabels: {{matchLabels: {{app: web}}}}\n"
        ));
        assert_eq!(c.rule.unwrap().policy, SchedulingPolicy::VirtualNodeOnly);
        let c = compile(&format!(
            "{HEAD}spec:\n  namespaceLabels: {{matchLabels: {{team: a}}}}\n  policy:\n    namespaceResourceLimit:\n      namespace: team-a\n      limits: {{cpu: \"8\", memory: 16Gi}}\n"
        ));
        let text = messages(&c);
        assert!(!text.contains("namespaceResourceLimit"), "enforced: {text}");
        assert_eq!(
            c.rule.unwrap().budget,
            Some(Budget {
                namespace: Some("team-a".into()),
                limits: Limits(vec![
                    (Resource::Cpu, Quantity::units(8)),
                    (Resource::Memory, Quantity::parse("16Gi").unwrap())
                ])
            })
        );
    }

    #[test]
    fn policy_errors_name_the_field_and_line() {
        for (policy, message) in [
            (
                "{}",
                "spec.policy: must have exactly one of virtualNodeOnly, fair",
            ),
            (
                "{fair: {}, virtualNodeOnly: {}}",
                "must have exactly one of virtualNodeOnly, fair, normalNodePrefer, normalNodeOnly, namespaceResourceLimit, found fair, virtualNodeOnly",
            ),
            ("{fiar: {}}", "unknown policy \"fiar\""),
            (
                "fair",
                "spec.policy: must be an object with one policy, found a string",
            ),
            (
                "{normalNodePrefer: {cpuRatio: high}}",
                "spec.policy.normalNodePrefer.cpuRatio: must be a number",
            ),
            (
                "{namespaceResourceLimit: {limits: {cpu: 2}}}",
                "spec.policy.namespaceResourceLimit.namespace: is required",
            ),
            (
                "{namespaceResourceLimit: {namespace: a}}",
                "spec.policy.namespaceResourceLimit.limits: is required",
            ),
            (
                "{namespaceResourceLimit: {namespace: A_b, limits: {cpu: 2}}}",
                "invalid namespace \"A_b\"",
            ),
            (
                "{namespaceResourceLimit: {namespace: a, limits: {cpu: 2x}}}",
                "spec.policy.namespaceResourceLimit.limits[\"cpu\"]: invalid quantity \"2x\"",
            ),
            (
                "{namespaceResourceLimit: {namespace: a, limits: {cpu: \"-1\"}}}",
                "invalid quantity \"-1\": a number with an optional suffix, not negative",
            ),
            (
                "{namespaceResourceLimit: {namespace: a, limits: {cpu: 1, requests.cpu: 2}}}",
                "requests.cpu is given twice",
            ),
        ] {
            let c = compile(&format!(
                "{HEAD}spec:\n  objectLabels: {{matchLabels: {{app: web}}}}\n  policy: {policy}\n"
            ));
            assert!(c.rule.is_none(), "{policy}");
            let text = messages(&c);
            assert!(text.contains(message), "{policy}: {text}");
            assert!(text.starts_with("s.yaml:7:"), "{policy}: {text}");
        }
    }

    #[test]
    fn limits_of_other_resources_are_accepted_and_not_counted() {
        let c = compile(&format!(
            "{HEAD}spec:\n  namespaceLabels: {{matchLabels: {{team: a}}}}\n  policy: {{namespaceResourceLimit: {{namespace: a, limits: {{pods: 40, nvidia.com/gpu: 2}}}}}}\n"
        ));
        let text = messages(&c);
        assert!(text.contains("limits[\"nvidia.com/gpu\"]: is not counted: budgets cap pods, requests.cpu (cpu) and requests.memory (memory)"), "{text}");
        let limit = c.rule.unwrap().budget.unwrap();
        assert_eq!(
            limit.limits,
            Limits(vec![(Resource::Pods, Quantity::units(40))])
        );
    }

    #[test]
    fn ratios_are_accepted_and_reported_as_ignored() {
        let c = compile(&format!(
            "{HEAD}spec:\n  objectLabels: {{matchLabels: {{app: web}}}}\n  policy: {{normalNodePrefer: {{cpuRatio: 0.5, memoryRatio: 2}}}}\n"
        ));
        let text = messages(&c);
        assert_eq!(c.rule.unwrap().policy, SchedulingPolicy::NormalNodePrefer);
        assert_eq!(text.matches("is accepted and ignored").count(), 2, "{text}");
    }

    #[test]
    fn object_errors() {
        let c = compile("apiVersion: eci.aliyun.com/v2\nkind: Selector\nspec: {}\n");
        let text = messages(&c);
        assert!(text.contains("s.yaml:1:13: error: apiVersion: must be eci.aliyun.com/v1 or eci.aliyun.com/v1beta1"), "{text}");
        assert!(text.contains("metadata.name: is required"), "{text}");
        let c = compile(HEAD);
        assert!(
            messages(&c).contains("error: selector \"web\": spec: is required"),
            "{}",
            messages(&c)
        );
        let c = compile(&format!(
            "{HEAD}spec:\n  objectSelector: {{matchLabels: {{app: web}}}}\n"
        ));
        let text = messages(&c);
        assert!(text.contains("warning: selector \"web\": spec.objectSelector: unknown field, ignored (known: namespaceLabels, objectLabels, effect, policy, priority)"), "{text}");
        // Annotation values are strings: the README's unquoted -1000.
        let c = compile(&format!(
            "{HEAD}spec:\n  objectLabels: {{matchLabels: {{app: nginx}}}}\n  effect:\n    annotations:\n      controller.kubernetes.io/pod-deletion-cost: -1000\n"
        ));
        assert!(c.rule.is_none());
        let text = messages(&c);
        assert!(text.contains("s.yaml:9:51: error: selector \"web\": spec.effect.annotations[\"controller.kubernetes.io/pod-deletion-cost\"]: must be a string, found a number (quote it)"), "{text}");
    }

    #[test]
    fn normal_node_only_with_effects_warns() {
        let c = compile(&format!(
            "{HEAD}spec:\n  objectLabels: {{matchLabels: {{app: web}}}}\n  effect: {{labels: {{a: b}}}}\n  policy: {{normalNodeOnly: {{}}}}\n"
        ));
        assert!(c.rule.is_some());
        assert!(
            messages(&c).contains("is never applied"),
            "{}",
            messages(&c)
        );
    }

    #[test]
    fn digest_follows_name_and_spec_only() {
        let a = compile(&format!("{HEAD}spec: {{priority: 1}}\n"));
        let b = compile(&format!("{HEAD}  labels: {{x: y}}\nspec:\n  priority: 1\n"));
        let c = compile(&format!("{HEAD}spec: {{priority: 2}}\n"));
        assert_eq!(a.digest, b.digest);
        assert_ne!(a.digest, c.digest);
    }
}
