//! Conversion between the two rule formats: the profile ConfigMap's
//! `selectors` and `Selector` objects, so that a profile can move from one to
//! the other and decide the same.
//!
//! Both functions take what manifest files hold ([`Manifests`]), compile it
//! as `validate` does and return the objects to print with findings: the
//! input's own, then what the conversion keeps, drops or cannot carry.
//!
//! - [`to_selectors`]: one Selector per ConfigMap rule (Selector objects of
//!   the input are kept as they are). What Selectors cannot carry
//!   (`virtualNode`, `vSwitchIds`, `securityGroupId`, the virtual node's own
//!   keys) stays in the ConfigMap. Rules of equal priority that Selectors
//!   would try in another order (by name, not position) are reported.
//! - [`to_configmap`]: one ConfigMap whose `selectors` lists every rule in
//!   the order the profile tries them. Policy `namespaceResourceLimit` has no
//!   ConfigMap equivalent and is refused (or, when asked, turned into
//!   `virtualNodeOnly`, what the webhook does with it today).

use std::cmp::Reverse;
use std::collections::BTreeMap;

use serde::ser::{SerializeMap, SerializeSeq};

use super::node::{Node, Value};
use super::selector_object::{GROUP, KIND, VERSIONS};
use super::{
    Budget, Diagnostic, Diagnostics, Manifests, Profile, Rule, RuleSource, SchedulingPolicy,
    Severity, compile_manifests,
};
use crate::selector::{Operator, Selector};

/// A YAML/JSON value that keeps its keys in the order given (the
/// profile's), unlike `serde_json::Value`; it serialises with serde (as YAML
/// or JSON).
#[derive(Clone, Debug, PartialEq)]
pub enum Doc {
    Null,
    Bool(bool),
    Integer(i128),
    Float(f64),
    String(String),
    Sequence(Vec<Doc>),
    Mapping(Vec<(String, Doc)>),
}

impl Doc {
    fn string(s: impl Into<String>) -> Doc {
        Doc::String(s.into())
    }

    /// A mapping of strings, in order.
    fn strings<'a>(pairs: impl IntoIterator<Item = (&'a String, &'a String)>) -> Doc {
        Doc::Mapping(
            pairs
                .into_iter()
                .map(|(k, v)| (k.clone(), Doc::string(v)))
                .collect(),
        )
    }

    /// The value of a parsed manifest, positions dropped; a key that is not
    /// a string is written as its scalar text.
    pub fn from_node(node: &Node) -> Doc {
        match &node.value {
            Value::Null => Doc::Null,
            Value::Bool(b) => Doc::Bool(*b),
            Value::Integer(i) => Doc::Integer(*i),
            Value::Float(f) => Doc::Float(*f),
            Value::String(s) => Doc::string(s),
            Value::Sequence(items) => Doc::Sequence(items.iter().map(Doc::from_node).collect()),
            Value::Mapping(entries) => Doc::Mapping(
                entries
                    .iter()
                    .map(|(k, v)| {
                        let key = match &k.value {
                            Value::String(s) => s.clone(),
                            _ => k.to_json().map(|j| j.to_string()).unwrap_or_default(),
                        };
                        (key, Doc::from_node(v))
                    })
                    .collect(),
            ),
        }
    }

    /// The value of field `name`, when this is a mapping that has it.
    pub fn get(&self, name: &str) -> Option<&Doc> {
        match self {
            Doc::Mapping(entries) => entries.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }
}

impl serde::Serialize for Doc {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Doc::Null => serializer.serialize_unit(),
            Doc::Bool(b) => serializer.serialize_bool(*b),
            Doc::Integer(i) => match i64::try_from(*i) {
                Ok(i) => serializer.serialize_i64(i),
                Err(_) => serializer.serialize_i128(*i),
            },
            Doc::Float(f) => serializer.serialize_f64(*f),
            Doc::String(s) => serializer.serialize_str(s),
            Doc::Sequence(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Doc::Mapping(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// The result of a conversion.
#[derive(Clone, Debug, Default)]
pub struct Conversion {
    /// The objects to print, in order; empty when `diagnostics` has errors.
    pub objects: Vec<Doc>,
    /// The input's findings, then the conversion's.
    pub diagnostics: Diagnostics,
}

/// Converts the ConfigMap's rules of `manifests` into Selector objects
/// (`eci.aliyun.com/v1`, named as the rules); Selectors of the input are kept
/// as they are (server-set metadata and `status` left out). With
/// `keep_configmap` (namespace, name), the ConfigMap is also returned, last,
/// with what Selectors cannot carry (every data key but `selectors`), when
/// there is any.
///
/// Refused (errors): a rule name that is not a Kubernetes object name (a
/// DNS subdomain). Reported (warnings): each key left in the ConfigMap, and
/// rules of equal priority whose order would change (ConfigMap rules are
/// tried in ConfigMap order, Selectors by name).
pub fn to_selectors(manifests: &Manifests, keep_configmap: Option<(&str, &str)>) -> Conversion {
    let compiled = compile_manifests(manifests);
    let mut diagnostics = compiled.diagnostics.0;
    let Some(profile) = compiled.profile else {
        return refused(diagnostics);
    };
    let mut objects = Vec::new();
    for rule in profile.rules() {
        match rule.source {
            RuleSource::ConfigMap(_) => {
                if let Err(why) = crate::labels::check_dns_subdomain(&rule.name) {
                    diagnostics.push(Diagnostic::new(
                        Severity::Error,
                        Some(&rule.name),
                        "name",
                        format!(
                            "cannot be the name of a Selector object: {why}, at most 253 characters; rename the rule"
                        ),
                    ));
                    continue;
                }
                if rule.budget.is_some() {
                    diagnostics.push(Diagnostic::new(
                        Severity::Error,
                        Some(&rule.name),
                        "limits",
                        "a Selector cannot carry a budget for each namespace it selects (its namespaceResourceLimit caps one named namespace): keep this rule in the ConfigMap".into(),
                    ));
                    continue;
                }
                objects.push(selector_object(rule));
            }
            RuleSource::Selector => {
                if let Some((node, _)) = manifests.selectors.iter().find(|(node, _)| {
                    node.get("metadata")
                        .and_then(|m| m.get("name"))
                        .and_then(Node::as_str)
                        == Some(&rule.name)
                }) {
                    objects.push(kept_selector(node));
                }
            }
        }
    }
    diagnostics.extend(reordered(&profile));
    let kept: Vec<(&String, &String)> = manifests
        .configmap
        .iter()
        .flat_map(|data| &data.entries)
        .filter(|(key, _)| key.as_str() != "selectors")
        .map(|(key, entry)| (key, &entry.text))
        .collect();
    for (key, _) in &kept {
        diagnostics.push(Diagnostic::new(
            Severity::Warning,
            None,
            key,
            match keep_configmap {
                Some(_) => "Selector objects cannot carry it: it stays in the ConfigMap, printed after the Selectors".into(),
                None => "Selector objects cannot carry it: it stays in the ConfigMap (--keep-configmap prints that ConfigMap without its selectors)".into(),
            },
        ));
    }
    if let Some(metadata) = keep_configmap
        && !kept.is_empty()
    {
        objects.push(configmap_object(metadata, kept));
    }
    finish(objects, diagnostics)
}

/// Converts every rule of `manifests` (a ConfigMap's and Selector objects)
/// into one ConfigMap `namespace/name` whose `selectors` (pretty JSON) lists
/// them in the order the profile tries them: priority, then the
/// ConfigMap's own order, then Selector name. The input ConfigMap's other
/// keys are kept as they are.
///
/// Refused (errors): policy `namespaceResourceLimit`, unless
/// `drop_unsupported`, which makes it `virtualNodeOnly` (what the webhook does
/// with it today) with a warning. Reported (warnings): `cpuRatio` and
/// `memoryRatio` of `normalNodePrefer`, dropped (the webhook ignores them).
pub fn to_configmap(
    manifests: &Manifests,
    (namespace, name): (&str, &str),
    drop_unsupported: bool,
) -> Conversion {
    let compiled = compile_manifests(manifests);
    let mut diagnostics = compiled.diagnostics.0;
    let Some(profile) = compiled.profile else {
        return refused(diagnostics);
    };
    let mut rules: Vec<&Rule> = profile.rules().collect();
    rules.sort_by_key(|r| (Reverse(r.priority), r.source, r.name.as_str()));
    let mut items = Vec::new();
    for rule in rules {
        if let Some(Budget {
            namespace: Some(namespace),
            ..
        }) = &rule.budget
        {
            let field = "spec.policy.namespaceResourceLimit";
            if drop_unsupported {
                diagnostics.push(Diagnostic::new(
                    Severity::Warning,
                    Some(&rule.name),
                    field,
                    format!(
                        "the ConfigMap has no such policy: converted to virtualNodeOnly, as the webhook schedules it today; the limits of namespace {:?} are dropped",
                        namespace
                    ),
                ));
            } else {
                diagnostics.push(Diagnostic::new(
                    Severity::Error,
                    Some(&rule.name),
                    field,
                    "the ConfigMap has no such policy: keep this rule a Selector, or convert it to virtualNodeOnly (as the webhook schedules it today, its limits not enforced) with --drop-unsupported".into(),
                ));
                continue;
            }
        }
        items.push(configmap_rule(rule));
    }
    for (node, _) in &manifests.selectors {
        let selector = node
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Node::as_str);
        let prefer = node
            .get("spec")
            .and_then(|s| s.get("policy"))
            .and_then(|p| p.get("normalNodePrefer"));
        for ratio in ["cpuRatio", "memoryRatio"] {
            if prefer
                .and_then(|p| p.get(ratio))
                .is_some_and(|n| n.value != Value::Null)
            {
                diagnostics.push(Diagnostic::new(
                    Severity::Warning,
                    selector,
                    &format!("spec.policy.normalNodePrefer.{ratio}"),
                    "dropped: the ConfigMap's normalNodePrefer has no ratios (the webhook ignores them either way)".into(),
                ));
            }
        }
    }
    let selectors = serde_json::to_string_pretty(&Doc::Sequence(items))
        .expect("a Doc serialises as JSON")
        + "\n";
    let mut data: BTreeMap<&String, &String> = manifests
        .configmap
        .iter()
        .flat_map(|d| &d.entries)
        .map(|(key, entry)| (key, &entry.text))
        .collect();
    let key = "selectors".to_string();
    data.insert(&key, &selectors);
    let objects = vec![configmap_object((namespace, name), data)];
    finish(objects, diagnostics)
}

fn refused(diagnostics: Vec<Diagnostic>) -> Conversion {
    Conversion {
        objects: Vec::new(),
        diagnostics: Diagnostics(diagnostics),
    }
}

fn finish(objects: Vec<Doc>, diagnostics: Vec<Diagnostic>) -> Conversion {
    let diagnostics = Diagnostics(diagnostics);
    Conversion {
        objects: if diagnostics.has_errors() {
            Vec::new()
        } else {
            objects
        },
        diagnostics,
    }
}

/// Warnings for rules of equal priority that Selector objects would try in
/// another order: Selectors of equal priority are tried by name, the
/// ConfigMap's rules in ConfigMap order (and before Selectors).
fn reordered(profile: &Profile) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for rules in [profile.selecting_rules(), profile.effect_only_rules()] {
        for group in rules.chunk_by(|a, b| a.priority == b.priority) {
            let moved: Vec<&str> = group
                .iter()
                .enumerate()
                .filter(|(i, rule)| {
                    group[..*i].iter().any(|before| before.name > rule.name)
                        || group[i + 1..].iter().any(|after| after.name < rule.name)
                })
                .map(|(_, rule)| rule.name.as_str())
                .collect();
            if moved.is_empty() {
                continue;
            }
            let mut by_name = moved.clone();
            by_name.sort_unstable();
            let list = |names: &[&str]| {
                names
                    .iter()
                    .map(|n| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            out.push(Diagnostic::new(
                Severity::Warning,
                None,
                "priority",
                format!(
                    "rules {} (priority {}) are tried in this order, but as Selectors of equal priority they would be tried by name ({}): give them different priorities to keep the order",
                    list(&moved),
                    group[0].priority,
                    list(&by_name)
                ),
            ));
        }
    }
    out
}

/// A label selector as written: the leading single-value `In` requirements
/// (what `matchLabels` compiles to) as `matchLabels`, the rest as
/// `matchExpressions`, so that it compiles back to the same requirements in
/// the same order.
fn label_selector(selector: &Selector) -> Doc {
    let requirements = selector.requirements();
    let mut match_labels: Vec<(String, Doc)> = Vec::new();
    let mut rest = requirements;
    while let [first, tail @ ..] = rest {
        let single = first.operator == Operator::In && first.values.len() == 1;
        if !single || match_labels.iter().any(|(k, _)| *k == first.key) {
            break;
        }
        match_labels.push((first.key.clone(), Doc::string(&first.values[0])));
        rest = tail;
    }
    let mut fields = Vec::new();
    if !match_labels.is_empty() {
        fields.push(("matchLabels".to_string(), Doc::Mapping(match_labels)));
    }
    if !rest.is_empty() {
        let expressions = rest
            .iter()
            .map(|r| {
                let mut e = vec![
                    ("key".to_string(), Doc::string(&r.key)),
                    ("operator".to_string(), Doc::string(r.operator.as_str())),
                ];
                if r.operator.takes_values() {
                    e.push((
                        "values".to_string(),
                        Doc::Sequence(r.values.iter().map(Doc::string).collect()),
                    ));
                }
                Doc::Mapping(e)
            })
            .collect();
        fields.push(("matchExpressions".to_string(), Doc::Sequence(expressions)));
    }
    Doc::Mapping(fields)
}

/// The rule's `effect`, when it has one.
fn effect(rule: &Rule) -> Option<Doc> {
    let mut fields = Vec::new();
    if !rule.annotations.is_empty() {
        let pairs = rule.annotations.iter().map(|(k, v)| (k, v));
        fields.push(("annotations".to_string(), Doc::strings(pairs)));
    }
    if !rule.labels.is_empty() {
        let pairs = rule.labels.iter().map(|(k, v)| (k, v));
        fields.push(("labels".to_string(), Doc::strings(pairs)));
    }
    (!fields.is_empty()).then_some(Doc::Mapping(fields))
}

/// Whether the policy is written out: always for a rule with a selector
/// (explicit is clearer); for one without, only when not the default (it has
/// no effect there, and is reported so, as in the input).
fn writes_policy(rule: &Rule) -> bool {
    rule.has_selector() || rule.policy != SchedulingPolicy::default()
}

/// A ConfigMap rule as a Selector object.
fn selector_object(rule: &Rule) -> Doc {
    let mut spec = Vec::new();
    if let Some(s) = &rule.namespace_selector {
        spec.push(("namespaceLabels".to_string(), label_selector(s)));
    }
    if let Some(s) = &rule.object_selector {
        spec.push(("objectLabels".to_string(), label_selector(s)));
    }
    if let Some(effect) = effect(rule) {
        spec.push(("effect".to_string(), effect));
    }
    if writes_policy(rule) {
        let policy = Doc::Mapping(vec![(
            rule.policy.as_str().to_string(),
            Doc::Mapping(vec![]),
        )]);
        spec.push(("policy".to_string(), policy));
    }
    if rule.priority != 0 {
        spec.push(("priority".to_string(), Doc::Integer(rule.priority.into())));
    }
    Doc::Mapping(vec![
        (
            "apiVersion".into(),
            Doc::string(format!("{GROUP}/{}", VERSIONS[0])),
        ),
        ("kind".into(), Doc::string(KIND)),
        (
            "metadata".into(),
            Doc::Mapping(vec![("name".into(), Doc::string(&rule.name))]),
        ),
        ("spec".into(), Doc::Mapping(spec)),
    ])
}

/// A Selector object of the input, without what the API server sets
/// (`status`, and metadata other than name, labels and annotations).
fn kept_selector(node: &Node) -> Doc {
    let Doc::Mapping(fields) = Doc::from_node(node) else {
        unreachable!("a compiled Selector is an object");
    };
    Doc::Mapping(
        fields
            .into_iter()
            .filter(|(k, _)| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "spec"))
            .map(|(k, v)| match (k.as_str(), v) {
                ("metadata", Doc::Mapping(meta)) => (
                    k,
                    Doc::Mapping(
                        meta.into_iter()
                            .filter(|(k, _)| {
                                matches!(k.as_str(), "name" | "labels" | "annotations")
                            })
                            .collect(),
                    ),
                ),
                (_, v) => (k, v),
            })
            .collect(),
    )
}

/// A rule as an item of the ConfigMap's `selectors`.
fn configmap_rule(rule: &Rule) -> Doc {
    let mut fields = vec![("name".to_string(), Doc::string(&rule.name))];
    if rule.priority != 0 {
        fields.push(("priority".into(), Doc::Integer(rule.priority.into())));
    }
    if writes_policy(rule) {
        fields.push(("policy".into(), Doc::string(rule.policy.as_str())));
    }
    if let Some(s) = &rule.namespace_selector {
        fields.push(("namespaceSelector".into(), label_selector(s)));
    }
    if let Some(s) = &rule.object_selector {
        fields.push(("objectSelector".into(), label_selector(s)));
    }
    if let Some(effect) = effect(rule) {
        fields.push(("effect".into(), effect));
    }
    if let Some(Budget {
        limits,
        namespace: None,
    }) = &rule.budget
    {
        fields.push((
            "limits".into(),
            Doc::Mapping(
                limits
                    .0
                    .iter()
                    .map(|(resource, quantity)| {
                        (
                            resource.as_str().to_string(),
                            Doc::string(quantity.to_string()),
                        )
                    })
                    .collect(),
            ),
        ));
    }
    Doc::Mapping(fields)
}

/// A ConfigMap `namespace/name` with `data`.
fn configmap_object<'a>(
    (namespace, name): (&str, &str),
    data: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Doc {
    Doc::Mapping(vec![
        ("apiVersion".into(), Doc::string("v1")),
        ("kind".into(), Doc::string("ConfigMap")),
        (
            "metadata".into(),
            Doc::Mapping(vec![
                ("name".into(), Doc::string(name)),
                ("namespace".into(), Doc::string(namespace)),
            ]),
        ),
        ("data".into(), Doc::strings(data)),
    ])
}

/// The objects as YAML documents separated by `---`, strings quoted where
/// YAML 1.1 (kubectl) would read them as something else.
pub fn to_yaml(objects: &[Doc]) -> String {
    serde_saphyr::to_string_multiple(objects).expect("a Doc serialises as YAML")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::ProfileData;

    /// A rule as deciding sees it: everything but where it came from.
    type Seen = (
        String,
        i32,
        SchedulingPolicy,
        Option<Selector>,
        Option<Selector>,
        Vec<(String, String)>,
        Vec<(String, String)>,
    );

    fn seen(profile: &Profile) -> [Vec<Seen>; 2] {
        let of = |rules: &[Rule]| {
            rules
                .iter()
                .map(|r| {
                    (
                        r.name.clone(),
                        r.priority,
                        r.policy,
                        r.namespace_selector.clone(),
                        r.object_selector.clone(),
                        r.annotations.clone(),
                        r.labels.clone(),
                    )
                })
                .collect()
        };
        [
            of(profile.selecting_rules()),
            of(profile.effect_only_rules()),
        ]
    }

    fn configmap(selectors: &str, more: &[(&str, &str)]) -> Manifests {
        let mut data = vec![("selectors".to_string(), selectors.to_string())];
        data.extend(more.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Manifests {
            configmap: Some(ProfileData::from_map(data)),
            selectors: Vec::new(),
        }
    }

    /// The printed objects read back as a profile file is.
    fn read_back(conversion: &Conversion) -> (Manifests, Profile) {
        let yaml = to_yaml(&conversion.objects);
        let (manifests, _) =
            Manifests::read("out.yaml", &yaml).unwrap_or_else(|d| panic!("{d}\n{yaml}"));
        let profile = compile_manifests(&manifests)
            .profile
            .unwrap_or_else(|| panic!("{yaml}"));
        (manifests, profile)
    }

    fn profile_of(manifests: &Manifests) -> Profile {
        compile_manifests(manifests).profile.unwrap()
    }

    fn messages(conversion: &Conversion) -> String {
        conversion.diagnostics.to_string()
    }

    const RULES: &str = r#"[
        {"name": "low", "objectSelector": {"matchLabels": {"app": "a"}}},
        {"name": "batch", "priority": 5, "policy": "fair",
         "namespaceSelector": {"matchLabels": {"team": "batch", "on": "yes"}},
         "objectSelector": {"matchExpressions": [
            {"key": "tier", "operator": "Exists"},
            {"key": "app", "operator": "In", "values": ["y"]},
            {"key": "env", "operator": "NotIn", "values": ["prod", "dev"]}]},
         "effect": {"annotations": {"k8s.aliyun.com/eci-use-specs": "2-4Gi", "a.example.com/x": "true"},
                    "labels": {"capacity": "on"}}},
        {"name": "mixed", "priority": 5, "policy": "normalNodeOnly",
         "objectSelector": {"matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}},
        {"name": "everyone", "effect": {"labels": {"seen": "1.0"}}}
    ]"#;

    #[test]
    fn selectors_decide_as_the_configmap_did_and_back() {
        let input = configmap(RULES, &[]);
        let original = profile_of(&input);
        let to = to_selectors(&input, None);
        assert!(!to.diagnostics.has_errors(), "{}", messages(&to));
        assert_eq!(to.objects.len(), 4);
        let (selectors, profile) = read_back(&to);
        assert_eq!(selectors.selectors.len(), 4);
        assert!(selectors.configmap.is_none());
        assert_eq!(seen(&profile), seen(&original));
        assert!(profile.rules().all(|r| r.source == RuleSource::Selector));
        // The first requirements that matchLabels can hold go there, the rest stay expressions.
        let batch = &to.objects[0];
        assert_eq!(
            batch.get("metadata").unwrap().get("name"),
            Some(&Doc::string("batch"))
        );
        let spec = batch.get("spec").unwrap();
        let expressions = spec
            .get("objectLabels")
            .unwrap()
            .get("matchExpressions")
            .unwrap();
        assert!(matches!(expressions, Doc::Sequence(e) if e.len() == 3));
        assert_eq!(spec.get("priority"), Some(&Doc::Integer(5)));
        assert_eq!(
            spec.get("policy"),
            Some(&Doc::Mapping(vec![("fair".into(), Doc::Mapping(vec![]))]))
        );
        let low = to
            .objects
            .iter()
            .find(|o| o.get("metadata").unwrap().get("name") == Some(&Doc::string("low")))
            .unwrap();
        assert_eq!(low.get("spec").unwrap().get("priority"), None);
        // An effect-only rule writes no policy (it would have none).
        let everyone = &to.objects[3];
        assert_eq!(everyone.get("spec").unwrap().get("policy"), None);

        let back = to_configmap(&selectors, DEFAULT, false);
        assert!(back.diagnostics.0.is_empty(), "{}", messages(&back));
        let (manifests, profile) = read_back(&back);
        assert!(manifests.selectors.is_empty());
        assert_eq!(seen(&profile), seen(&original));
        assert!(matches!(
            profile.rules().next().unwrap().source,
            RuleSource::ConfigMap(_)
        ));
    }

    const DEFAULT: (&str, &str) = crate::profile::DEFAULT_CONFIGMAP;

    #[test]
    fn yaml_1_1_words_stay_strings() {
        let to = to_selectors(&configmap(RULES, &[]), None);
        let yaml = to_yaml(&to.objects);
        for quoted in [
            r#""on": "yes""#,
            r#"- "y""#,
            r#"capacity: "on""#,
            r#"a.example.com/x: "true""#,
            r#"seen: "1.0""#,
        ] {
            assert!(yaml.contains(quoted), "{quoted}\n{yaml}");
        }
        assert!(yaml.contains("\n---\n"), "{yaml}");
        // What the ConfigMap keeps is quoted alike.
        let with = configmap(
            "[]",
            &[
                ("enableClusterIp", "true"),
                ("virtualNode", "nodeSelector:\n  type: virtual-kubelet\n"),
            ],
        );
        let to = to_selectors(&with, Some(DEFAULT));
        let yaml = to_yaml(&to.objects);
        assert!(yaml.contains("enableClusterIp: \"true\""), "{yaml}");
        assert!(
            yaml.contains("virtualNode: |\n    nodeSelector:\n      type: virtual-kubelet\n"),
            "{yaml}"
        );
        let (kept, _) = read_back(&to);
        assert_eq!(
            kept.configmap.unwrap().entries["virtualNode"].text,
            "nodeSelector:\n  type: virtual-kubelet\n"
        );
    }

    #[test]
    fn what_selectors_cannot_carry_stays_in_the_configmap() {
        let input = configmap(
            RULES,
            &[
                ("virtualNode", "nodeSelector: {type: vk}"),
                ("vpcId", "vpc-1"),
            ],
        );
        let to = to_selectors(&input, None);
        let text = messages(&to);
        assert!(text.contains("warning: virtualNode: Selector objects cannot carry it: it stays in the ConfigMap (--keep-configmap"), "{text}");
        assert!(
            text.contains("warning: vpcId: Selector objects cannot carry it"),
            "{text}"
        );
        assert_eq!(to.objects.len(), 4);
        let to = to_selectors(&input, Some(("system", "profile")));
        assert_eq!(to.objects.len(), 5);
        let kept = to.objects.last().unwrap();
        assert_eq!(kept.get("kind"), Some(&Doc::string("ConfigMap")));
        assert_eq!(
            kept.get("metadata").unwrap().get("namespace"),
            Some(&Doc::string("system"))
        );
        let data = kept.get("data").unwrap();
        assert!(data.get("selectors").is_none());
        assert_eq!(data.get("vpcId"), Some(&Doc::string("vpc-1")));
        // Selectors and the ConfigMap left decide as the ConfigMap did.
        let (_, profile) = read_back(&to);
        assert_eq!(seen(&profile), seen(&profile_of(&input)));
        assert_eq!(profile.virtual_node(), profile_of(&input).virtual_node());
        // Nothing to keep: no ConfigMap.
        assert_eq!(
            to_selectors(&configmap(RULES, &[]), Some(DEFAULT))
                .objects
                .len(),
            4
        );
    }

    #[test]
    fn equal_priorities_that_would_reorder_are_reported() {
        let input = configmap(
            r#"[{"name": "zeta", "objectSelector": {"matchLabels": {"a": "1"}}},
                {"name": "alpha", "objectSelector": {"matchLabels": {"a": "1"}}},
                {"name": "beta", "objectSelector": {"matchLabels": {"a": "1"}}, "priority": 1},
                {"name": "zulu", "objectSelector": {"matchLabels": {"a": "1"}}}]"#,
            &[],
        );
        let to = to_selectors(&input, None);
        let text = messages(&to);
        assert_eq!(to.diagnostics.0.len(), 1, "{text}");
        assert!(text.contains(r#"warning: priority: rules "zeta", "alpha" (priority 0) are tried in this order, but as Selectors of equal priority they would be tried by name ("alpha", "zeta"): give them different priorities to keep the order"#), "{text}");
        // Still converted: the order is the user's to fix.
        assert_eq!(to.objects.len(), 4);
        let ordered = configmap(
            r#"[{"name": "a", "objectSelector": {}}, {"name": "b", "objectSelector": {}}]"#,
            &[],
        );
        assert!(!messages(&to_selectors(&ordered, None)).contains("priority"));
    }

    #[test]
    fn names_that_cannot_be_object_names_are_refused() {
        let input = configmap(
            r#"[{"name": "Batch_Spot", "objectSelector": {"matchLabels": {"a": "1"}}}, {"name": "ok", "objectSelector": {"matchLabels": {"a": "1"}}}]"#,
            &[],
        );
        let to = to_selectors(&input, None);
        assert!(to.objects.is_empty());
        let text = messages(&to);
        assert!(text.contains("error: selector \"Batch_Spot\": name: cannot be the name of a Selector object: must be a lowercase RFC 1123 subdomain"), "{text}");
        assert_eq!(to.diagnostics.errors().count(), 1, "{text}");
    }

    fn selector_manifests(yaml: &str) -> Manifests {
        Manifests::read("s.yaml", yaml).unwrap().0
    }

    const LIMIT: &str = "apiVersion: eci.aliyun.com/v1\nkind: Selector\nmetadata: {name: quota}\nspec:\n  namespaceLabels: {matchLabels: {team: a}}\n  policy: {namespaceResourceLimit: {namespace: team-a, limits: {cpu: 8}}}\n---\napiVersion: eci.aliyun.com/v1\nkind: Selector\nmetadata: {name: prefer}\nspec:\n  objectLabels: {matchLabels: {app: web}}\n  policy: {normalNodePrefer: {cpuRatio: 0.5}}\n";

    #[test]
    fn namespace_limits_are_refused_or_dropped_and_ratios_dropped() {
        let input = selector_manifests(LIMIT);
        let to = to_configmap(&input, DEFAULT, false);
        assert!(to.objects.is_empty());
        let text = messages(&to);
        assert!(text.contains("error: selector \"quota\": spec.policy.namespaceResourceLimit: the ConfigMap has no such policy: keep this rule a Selector"), "{text}");
        let to = to_configmap(&input, DEFAULT, true);
        let text = messages(&to);
        assert!(!to.diagnostics.has_errors(), "{text}");
        assert!(text.contains("warning: selector \"quota\": spec.policy.namespaceResourceLimit: the ConfigMap has no such policy: converted to virtualNodeOnly"), "{text}");
        assert!(
            text.contains(
                "warning: selector \"prefer\": spec.policy.normalNodePrefer.cpuRatio: dropped"
            ),
            "{text}"
        );
        assert!(!text.contains("memoryRatio"), "{text}");
        let (_, profile) = read_back(&to);
        assert_eq!(seen(&profile), seen(&profile_of(&input)));
    }

    #[test]
    fn configmap_limits_stay_in_the_configmap() {
        let input = configmap(
            r#"[{"name": "team", "namespaceSelector": {"matchLabels": {"team": "a"}}, "limits": {"pods": 40, "cpu": "1500m"}}]"#,
            &[],
        );
        let to = to_selectors(&input, None);
        assert!(to.objects.is_empty());
        assert!(
            messages(&to).contains("error: selector \"team\": limits: a Selector cannot carry a budget for each namespace it selects"),
            "{}",
            messages(&to)
        );
        let to = to_configmap(&input, DEFAULT, false);
        assert!(!to.diagnostics.has_errors(), "{}", messages(&to));
        let (_, profile) = read_back(&to);
        assert_eq!(
            profile.selecting_rules()[0].budget,
            profile_of(&input).selecting_rules()[0].budget
        );
    }

    #[test]
    fn selectors_of_the_input_are_kept_as_they_are() {
        let yaml = format!(
            "{LIMIT}---\napiVersion: v1\nkind: ConfigMap\ndata:\n  selectors: '[{{\"name\": \"cm\", \"objectSelector\": {{}}}}]'\n"
        );
        let input = selector_manifests(&yaml.replace(
            "metadata: {name: prefer}",
            "metadata: {name: prefer, uid: x, resourceVersion: \"1\", labels: {a: b}}",
        ));
        let to = to_selectors(&input, None);
        assert!(!to.diagnostics.has_errors(), "{}", messages(&to));
        let prefer = to
            .objects
            .iter()
            .find(|o| o.get("metadata").unwrap().get("name") == Some(&Doc::string("prefer")))
            .unwrap();
        assert_eq!(
            prefer.get("metadata").unwrap(),
            &Doc::Mapping(vec![
                ("name".into(), Doc::string("prefer")),
                (
                    "labels".into(),
                    Doc::Mapping(vec![("a".into(), Doc::string("b"))])
                )
            ])
        );
        assert_eq!(
            prefer.get("spec"),
            Some(&Doc::from_node(input.selectors[1].0.get("spec").unwrap()))
        );
        let (_, profile) = read_back(&to);
        assert_eq!(seen(&profile), seen(&profile_of(&input)));
    }

    #[test]
    fn input_errors_refuse_the_conversion() {
        let input = configmap(r#"[{"name": "a", "policy": "sometimes"}]"#, &[]);
        for to in [
            to_selectors(&input, None),
            to_configmap(&input, DEFAULT, false),
        ] {
            assert!(to.objects.is_empty());
            assert!(
                messages(&to).contains("unknown policy \"sometimes\""),
                "{}",
                messages(&to)
            );
        }
    }
}
