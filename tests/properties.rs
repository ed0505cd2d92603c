//! Properties over generated pods and profiles: the patch always applies,
//! only adds, never changes an existing value, and is idempotent; the
//! patched pod is still a valid Pod.

use eci_profile::decision::{self, Exclusions};
use eci_profile::labels::Labels;
use eci_profile::pod::Pod;
use eci_profile::profile::{self, Profile, ProfileData};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use serde_json::{Value, json};

const KEYS: &[&str] = &[
    "app",
    "eci",
    "team",
    "k8s.aliyun.com/vnode",
    "example.com/a",
    "tier",
];
const VALUES: &[&str] = &["true", "false", "a", "b", ""];
const ANNOTATION_KEYS: &[&str] = &[
    "example.com/owner",
    "example.com/a~b",
    "k8s.aliyun.com/eci-use-specs",
    "k8s.aliyun.com/eci-vswitch",
    "eci-profile.io/selectors",
];

fn key() -> impl Strategy<Value = String> {
    proptest::sample::select(KEYS).prop_map(str::to_string)
}

fn value() -> impl Strategy<Value = String> {
    proptest::sample::select(VALUES).prop_map(str::to_string)
}

fn labels() -> impl Strategy<Value = Labels> {
    btree_map(key(), value(), 0..4)
}

fn toleration() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(
            json!({"key": "k8s.aliyun.com/vnode", "operator": "Equal", "value": "true", "effect": "NoSchedule"})
        ),
        Just(json!({"key": "k8s.aliyun.com/vnode", "value": "true", "effect": "NoSchedule"})),
        Just(json!({"key": "k8s.aliyun.com/vnode", "operator": "Exists"})),
        Just(
            json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
        ),
        Just(json!({"operator": "Exists"})),
    ]
}

fn affinity() -> impl Strategy<Value = Option<Value>> {
    option::of(prop_oneof![
        Just(json!({})),
        Just(json!({"nodeAffinity": {}})),
        Just(json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}})),
        Just(
            json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "preference": {"matchExpressions": [
                {"key": "k8s.aliyun.com/vnode", "operator": "NotIn", "values": ["true"]}]}}]}})
        ),
        Just(
            json!({"podAffinity": {}, "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}})
        ),
    ])
}

prop_compose! {
    fn pod()(
        labels in option::of(labels()),
        annotations in option::of(btree_map(proptest::sample::select(ANNOTATION_KEYS).prop_map(str::to_string), value(), 0..3)),
        node_selector in option::of(btree_map(key(), value(), 0..3)),
        tolerations in option::of(vec(toleration(), 0..3)),
        affinity in affinity(),
        host_network in proptest::bool::weighted(0.1),
        node_name in option::weighted(0.1, Just("node-a")),
    ) -> Value {
        let mut metadata = json!({"name": "p"});
        if let Some(l) = labels { metadata["labels"] = json!(l); }
        if let Some(a) = annotations { metadata["annotations"] = json!(a); }
        let mut spec = json!({"containers": [{"name": "c", "image": "nginx"}]});
        if let Some(n) = node_selector { spec["nodeSelector"] = json!(n); }
        if let Some(t) = tolerations { spec["tolerations"] = json!(t); }
        if let Some(a) = affinity { spec["affinity"] = a; }
        if host_network { spec["hostNetwork"] = json!(true); }
        if let Some(n) = node_name { spec["nodeName"] = json!(n); }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
    }
}

fn selector() -> impl Strategy<Value = Option<Value>> {
    let expression = (
        key(),
        0..4usize,
        vec(value().prop_filter("non-empty", |v| !v.is_empty()), 1..3),
    )
        .prop_map(|(key, op, values)| match op {
            0 => json!({"key": key, "operator": "In", "values": values}),
            1 => json!({"key": key, "operator": "NotIn", "values": values}),
            2 => json!({"key": key, "operator": "Exists"}),
            _ => json!({"key": key, "operator": "DoesNotExist"}),
        });
    option::of(
        (btree_map(key(), value(), 0..2), vec(expression, 0..2)).prop_map(
            |(labels, expressions)| json!({"matchLabels": labels, "matchExpressions": expressions}),
        ),
    )
}

prop_compose! {
    fn rule()(
        namespace_selector in selector(),
        object_selector in selector(),
        priority in -2i32..3,
        policy in proptest::sample::select(&["virtualNodeOnly", "normalNodePrefer", "fair"][..]),
        annotations in btree_map(proptest::sample::select(&ANNOTATION_KEYS[..4]).prop_filter("valid key", |k| !k.contains('~')).prop_map(str::to_string), Just("2-4Gi".to_string()), 0..3),
        labels in btree_map(key(), value(), 0..3),
    ) -> Value {
        let mut rule = json!({"priority": priority, "policy": policy,
                              "effect": {"annotations": annotations, "labels": labels}});
        if let Some(s) = namespace_selector { rule["namespaceSelector"] = s; }
        if let Some(s) = object_selector { rule["objectSelector"] = s; }
        rule
    }
}

fn profile_of(rules: Vec<Value>, vswitch: bool) -> Profile {
    let rules: Vec<Value> = rules
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            r["name"] = json!(format!("r{i}"));
            // A vswitch effect must be a vswitch ID.
            if let Some(a) = r["effect"]["annotations"].as_object_mut()
                && a.contains_key("k8s.aliyun.com/eci-vswitch")
            {
                a.insert("k8s.aliyun.com/eci-vswitch".into(), json!("vsw-rule"));
            }
            r
        })
        .collect();
    let mut data = vec![(
        "selectors".to_string(),
        serde_json::to_string(&rules).unwrap(),
    )];
    if vswitch {
        data.push(("vSwitchIds".to_string(), "vsw-a,vsw-b".to_string()));
    }
    match profile::compile(&ProfileData::from_map(data)).into_result() {
        Ok((p, _)) => p,
        Err(e) => panic!("generated profile is invalid: {e}"),
    }
}

fn decide(pod: &Value, ns: Option<&Labels>, profile: &Profile) -> json_patch::Patch {
    let view: Pod = serde_json::from_value(pod.clone()).unwrap();
    decision::decide(&view, "team-a", ns, profile, &Exclusions::default())
        .patch
        .to_json_patch()
}

/// Every value of `before` is still in `after`: objects keep their keys and
/// values, arrays keep their elements in place (and may grow at the end).
fn preserved(before: &Value, after: &Value, path: &str) -> Result<(), String> {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            for (k, v) in b {
                let next = a.get(k).ok_or_else(|| format!("{path}/{k} removed"))?;
                preserved(v, next, &format!("{path}/{k}"))?;
            }
            Ok(())
        }
        (Value::Array(b), Value::Array(a)) => {
            if a.len() < b.len() {
                return Err(format!("{path} shrank"));
            }
            for (i, v) in b.iter().enumerate() {
                preserved(v, &a[i], &format!("{path}/{i}"))?;
            }
            Ok(())
        }
        (b, a) if b == a => Ok(()),
        (b, a) => Err(format!("{path} changed from {b} to {a}")),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn patches_apply_only_add_and_are_idempotent(
        pod in pod(),
        rules in vec(rule(), 0..6),
        vswitch in any::<bool>(),
        ns in option::of(labels()),
    ) {
        let profile = profile_of(rules, vswitch);
        let patch = decide(&pod, ns.as_ref(), &profile);
        for op in patch.0.iter() {
            prop_assert!(matches!(op, json_patch::PatchOperation::Add(_)), "{op}");
        }
        let mut patched = pod.clone();
        json_patch::patch(&mut patched, &patch).map_err(|e| TestCaseError::fail(format!("{e}: {patch}")))?;
        preserved(&pod, &patched, "").map_err(TestCaseError::fail)?;
        let again = decide(&patched, ns.as_ref(), &profile);
        prop_assert!(again.0.is_empty(), "second patch {} after {}", again, patch);
        let typed: Result<k8s_openapi::api::core::v1::Pod, _> = serde_json::from_value(patched);
        prop_assert!(typed.is_ok(), "{:?}", typed.err());
    }
}

/// The rules that select a pod, by scanning every rule (what the index must agree with).
fn brute_force_selection(
    profile: &Profile,
    pod: &Pod,
    namespace: &str,
    ns: Option<&Labels>,
) -> Vec<String> {
    use eci_profile::labels::NAMESPACE_NAME_LABEL;
    use eci_profile::selector::NamespaceLabels;
    let pod_labels = pod.metadata.labels.clone().unwrap_or_default();
    let namespace_labels = NamespaceLabels {
        name: namespace,
        labels: ns,
    };
    profile
        .selecting_rules()
        .iter()
        .filter(|rule| {
            rule.object_selector
                .as_ref()
                .is_none_or(|s| s.matches(&pod_labels))
                && rule.namespace_selector.as_ref().is_none_or(|s| {
                    (ns.is_some() || s.uses_only_key(NAMESPACE_NAME_LABEL))
                        && s.matches(&namespace_labels)
                })
        })
        .map(|rule| rule.name.clone())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn indexed_selection_equals_a_full_scan(
        pod in pod(),
        rules in vec(rule(), 0..12),
        ns in option::of(labels()),
    ) {
        // Without effect labels, one pass decides the selection.
        let rules: Vec<Value> = rules
            .into_iter()
            .map(|mut r| {
                r["effect"]["labels"] = json!({});
                r
            })
            .collect();
        let profile = profile_of(rules, false);
        let view: Pod = serde_json::from_value(pod).unwrap();
        let decision = decision::decide(&view, "team-a", ns.as_ref(), &profile, &Exclusions::default());
        let selected: Vec<String> = decision.selected.iter().map(|r| r.name.clone()).collect();
        prop_assert_eq!(selected, brute_force_selection(&profile, &view, "team-a", ns.as_ref()));
    }
}
