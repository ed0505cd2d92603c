//! The Selector CRD (manifests/base/crd-selector.yaml; the chart renders the
//! same, which tests/manifests.rs checks): its names and versions, a strict
//! structural-schema check, CEL rules only over bounded data, and objects
//! validated against the schema as the API server would (jsonschema for the
//! OpenAPI schema, cel-python for the CEL rules, from PyPI, installed on
//! first use into the target directory): aliyuneci/eci-profile's examples
//! are accepted, bad Selectors refused.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use common::install_once::{run_with_json, validators};
use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(root().join(path)).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn crd() -> Value {
    yaml("manifests/base/crd-selector.yaml")
}

/// The schema of the stored version (both versions share it).
fn schema() -> Value {
    crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn names_versions_and_columns() {
    let crd = crd();
    assert_eq!(crd["apiVersion"], "apiextensions.k8s.io/v1");
    assert_eq!(crd["metadata"]["name"], "selectors.eci.aliyun.com");
    assert_eq!(
        crd["metadata"]["labels"],
        json!({"app.kubernetes.io/name": "eci-profile", "app.kubernetes.io/part-of": "eci-profile"})
    );
    let spec = &crd["spec"];
    assert_eq!(spec["group"], "eci.aliyun.com");
    assert_eq!(
        spec["names"],
        json!({"kind": "Selector", "listKind": "SelectorList", "plural": "selectors", "singular": "selector"})
    );
    assert_eq!(spec["scope"], "Cluster");
    assert_eq!(spec["conversion"], json!({"strategy": "None"}));
    let versions = spec["versions"].as_array().unwrap();
    let flags: Vec<(&str, bool, bool)> = versions
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap(),
                v["served"].as_bool().unwrap(),
                v["storage"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(flags, [("v1", true, true), ("v1beta1", true, false)]);
    // One schema, so the API server converts without a webhook.
    assert_eq!(versions[0]["schema"], versions[1]["schema"]);
    assert_eq!(
        versions[0]["additionalPrinterColumns"],
        versions[1]["additionalPrinterColumns"]
    );
    assert_eq!(
        versions[0]["additionalPrinterColumns"],
        json!([
            {"name": "Priority", "type": "integer", "jsonPath": ".spec.priority"},
            {"name": "Policy", "type": "string", "jsonPath": ".spec.policy"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ])
    );
    for version in versions {
        let keys: BTreeSet<&str> = version
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            BTreeSet::from([
                "name",
                "served",
                "storage",
                "additionalPrinterColumns",
                "schema"
            ]),
            "no subresources, no deprecation"
        );
    }
    let schema = schema();
    assert_eq!(schema["required"], json!(["spec"]));
    // (Field names in order: serde_json's maps are sorted.)
    let spec_fields: Vec<&String> = schema["properties"]["spec"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(
        spec_fields,
        [
            "effect",
            "namespaceLabels",
            "objectLabels",
            "policy",
            "priority"
        ]
    );
    let policies: Vec<&String> = schema["properties"]["spec"]["properties"]["policy"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(
        policies,
        [
            "fair",
            "namespaceResourceLimit",
            "normalNodeOnly",
            "normalNodePrefer",
            "virtualNodeOnly"
        ]
    );
}

// ---------------------------------------------------------------------------
// Structural schema
// (https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#specifying-a-structural-schema).

/// The fields this schema may use: those a structural schema allows without
/// further conditions. allOf, anyOf, oneOf and not (allowed only in
/// restricted forms), default and nullable (each with its own rules) and
/// x-kubernetes-preserve-unknown-fields (no pruning) are left out on purpose;
/// $ref, definitions, id, $schema, patternProperties, dependencies,
/// additionalItems and uniqueItems: true are refused by the API server.
const ALLOWED: &[&str] = &[
    "type",
    "description",
    "properties",
    "additionalProperties",
    "items",
    "required",
    "enum",
    "pattern",
    "maxLength",
    "minLength",
    "maxProperties",
    "minProperties",
    "maxItems",
    "minItems",
    "minimum",
    "maximum",
    "format",
    "x-kubernetes-int-or-string",
    "x-kubernetes-validations",
];

const TYPES: &[&str] = &["object", "array", "string", "integer", "number", "boolean"];

/// Where a node is in the schema.
#[derive(Clone, Copy, PartialEq)]
enum Place {
    Root,
    /// A named field (of `properties`): it must be documented.
    Property,
    /// A map's values or a list's items.
    Element,
}

/// Every way `node` (at `path`) is not a structural, documented schema.
fn structural_errors(node: &Value, path: &str, place: Place, errors: &mut Vec<String>) {
    let Some(fields) = node.as_object() else {
        errors.push(format!("{path}: not a schema object"));
        return;
    };
    for key in fields.keys() {
        if !ALLOWED.contains(&key.as_str()) {
            errors.push(format!("{path}: {key} is not allowed here"));
        }
    }
    let int_or_string = node["x-kubernetes-int-or-string"] == true;
    let kind = node["type"].as_str();
    match (kind, int_or_string) {
        (Some(t), false) if TYPES.contains(&t) => {}
        (None, true) => {}
        (Some(_), true) => errors.push(format!("{path}: type with x-kubernetes-int-or-string")),
        _ => errors.push(format!("{path}: no type (or an unknown one)")),
    }
    if place == Place::Property {
        let described = node["description"]
            .as_str()
            .is_some_and(|d| !d.trim().is_empty());
        // metadata at the root may carry nothing but restrictions on name and generateName.
        if !described && path != "metadata" {
            errors.push(format!("{path}: no description"));
        }
    }
    if fields.contains_key("properties") && fields.contains_key("additionalProperties") {
        errors.push(format!(
            "{path}: properties and additionalProperties together"
        ));
    }
    let only_on = |key: &str, kinds: &[&str], errors: &mut Vec<String>| {
        let fits = kind.is_some_and(|k| kinds.contains(&k)) || int_or_string && kinds == ["string"];
        if fields.contains_key(key) && !fits {
            errors.push(format!("{path}: {key} on a {kind:?}"));
        }
    };
    for key in ["pattern", "maxLength", "minLength"] {
        only_on(key, &["string"], errors);
    }
    for key in [
        "properties",
        "additionalProperties",
        "required",
        "maxProperties",
        "minProperties",
    ] {
        only_on(key, &["object"], errors);
    }
    for key in ["items", "maxItems", "minItems"] {
        only_on(key, &["array"], errors);
    }
    for key in ["minimum", "maximum"] {
        only_on(key, &["integer", "number"], errors);
    }
    if let Some(format) = node.get("format")
        && !(kind == Some("integer") && (format == "int32" || format == "int64"))
    {
        errors.push(format!("{path}: format {format} on a {kind:?}"));
    }
    if let Some(values) = node["enum"].as_array()
        && (kind != Some("string") || !values.iter().all(Value::is_string))
    {
        errors.push(format!("{path}: enum of other than strings"));
    }
    if let Some(rules) = node.get("x-kubernetes-validations") {
        for rule in rules.as_array().unwrap() {
            let keys: BTreeSet<&str> = rule
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            if keys != BTreeSet::from(["rule", "message"]) {
                errors.push(format!("{path}: a CEL rule with {keys:?}"));
            }
            if rule["message"].as_str().is_none_or(str::is_empty) {
                errors.push(format!("{path}: a CEL rule without a message"));
            }
        }
    }
    let properties = node["properties"].as_object();
    if let Some(required) = node.get("required") {
        for name in required.as_array().unwrap() {
            let name = name.as_str().unwrap();
            if !properties.is_some_and(|p| p.contains_key(name)) {
                errors.push(format!("{path}: required {name} is not a property"));
            }
        }
    }
    for (name, child) in properties.into_iter().flatten() {
        let child_path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        if place == Place::Root && name == "metadata" && child != &json!({"type": "object"}) {
            errors.push("metadata: more than type: object".to_string());
        }
        structural_errors(child, &child_path, Place::Property, errors);
    }
    match node.get("additionalProperties") {
        Some(child) if child.is_object() => {
            structural_errors(child, &format!("{path}[*]"), Place::Element, errors);
        }
        Some(other) => errors.push(format!("{path}: additionalProperties: {other}")),
        None => {}
    }
    if kind == Some("array") {
        match node.get("items") {
            Some(child) if child.is_object() => {
                structural_errors(child, &format!("{path}[*]"), Place::Element, errors);
            }
            _ => errors.push(format!("{path}: a list without one items schema")),
        }
    }
}

#[test]
fn schema_is_structural_and_every_field_documented() {
    let schema = schema();
    let mut errors = Vec::new();
    structural_errors(&schema, "", Place::Root, &mut errors);
    assert_eq!(schema["type"], "object");
    for field in ["apiVersion", "kind", "metadata", "spec"] {
        assert!(schema["properties"].get(field).is_some(), "{field}");
    }
    assert!(errors.is_empty(), "{errors:#?}");

    // The check itself catches what it is for.
    let mut broken = schema.clone();
    let spec = &mut broken["properties"]["spec"]["properties"];
    spec["priority"].as_object_mut().unwrap().remove("type");
    spec["effect"]["properties"]["labels"]["properties"] = json!({});
    spec["policy"]["properties"]["fair"]
        .as_object_mut()
        .unwrap()
        .remove("description");
    spec["objectLabels"]["properties"]["matchExpressions"]["uniqueItems"] = json!(true);
    broken["properties"]["metadata"]["description"] = json!("the object's metadata");
    let mut errors = Vec::new();
    structural_errors(&broken, "", Place::Root, &mut errors);
    assert_eq!(
        errors,
        [
            "metadata: more than type: object",
            "spec.effect.labels: properties and additionalProperties together",
            "spec.objectLabels.matchExpressions: uniqueItems is not allowed here",
            "spec.policy.fair: no description",
            "spec.priority: no type (or an unknown one)",
            "spec.priority: minimum on a None",
            "spec.priority: maximum on a None",
            "spec.priority: format \"int32\" on a None",
        ]
    );
}

// ---------------------------------------------------------------------------
// CEL rules within the API server's cost budget.

/// Schema nodes by their path.
type Nodes<'a> = Vec<(String, &'a Value)>;

/// Every node with CEL rules: (path, node, the maps and lists around it).
fn nodes_with_rules<'a>(
    node: &'a Value,
    path: String,
    around: Nodes<'a>,
    found: &mut Vec<(String, &'a Value, Nodes<'a>)>,
) {
    if node.get("x-kubernetes-validations").is_some() {
        found.push((path.clone(), node, around.clone()));
    }
    for (name, child) in node["properties"].as_object().into_iter().flatten() {
        nodes_with_rules(child, format!("{path}.{name}"), around.clone(), found);
    }
    for key in ["additionalProperties", "items"] {
        if let Some(child) = node.get(key).filter(|c| c.is_object()) {
            let mut around = around.clone();
            around.push((path.clone(), node));
            nodes_with_rules(child, format!("{path}[*]"), around, found);
        }
    }
}

/// How many elements a map, list or string at `node` may have, if bounded.
fn bound(node: &Value) -> Option<u64> {
    if node["enum"].is_array() {
        return Some(node["enum"].as_array().unwrap().len() as u64);
    }
    let key = match node["type"].as_str() {
        Some("object") if node.get("additionalProperties").is_some() => "maxProperties",
        Some("object") => {
            return Some(node["properties"].as_object().map_or(0, |p| p.len() as u64));
        }
        Some("array") => "maxItems",
        Some("string") => "maxLength",
        _ => return Some(1),
    };
    node[key].as_u64()
}

#[test]
fn cel_rules_iterate_only_over_bounded_data() {
    let schema = schema();
    let mut found = Vec::new();
    nodes_with_rules(&schema, "self".into(), Vec::new(), &mut found);
    let paths: Vec<&str> = found.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "self.spec.effect.annotations",
            "self.spec.effect.labels",
            "self.spec.namespaceLabels.matchExpressions[*]",
            "self.spec.namespaceLabels.matchLabels",
            "self.spec.objectLabels.matchExpressions[*]",
            "self.spec.objectLabels.matchLabels",
            "self.spec.policy",
        ],
        "a new CEL rule: check its cost here"
    );
    for (path, node, around) in &found {
        // The rule runs once per element of every map and list around it.
        for (outer, list) in around {
            assert!(bound(list).is_some(), "{path}: {outer} is unbounded");
        }
        for rule in node["x-kubernetes-validations"].as_array().unwrap() {
            let text = rule["rule"].as_str().unwrap();
            // What the rule reads: self, and its fields.
            assert!(bound(node).is_some(), "{path}: {text}: self is unbounded");
            for (name, child) in node["properties"].as_object().into_iter().flatten() {
                if text.contains(&format!("self.{name}")) {
                    assert!(
                        bound(child).is_some(),
                        "{path}: {text}: self.{name} is unbounded"
                    );
                }
            }
            // A map's keys have no maxLength in OpenAPI: a rule that runs a
            // regular expression over them bounds their size first.
            if node.get("additionalProperties").is_some() && text.contains(".matches(") {
                assert!(
                    text.starts_with("self.all(k, size(k) <= 317 && k.matches("),
                    "{path}: {text}"
                );
            }
        }
    }
    // Label maps take at most 64 entries, like the lists of expressions.
    let spec = &schema["properties"]["spec"]["properties"];
    for map in [
        &spec["objectLabels"]["properties"]["matchLabels"],
        &spec["effect"]["properties"]["labels"],
        &spec["effect"]["properties"]["annotations"],
    ] {
        assert_eq!(map["maxProperties"], 64);
    }
}

// ---------------------------------------------------------------------------
// Objects against the schema.

/// The errors the schema and its CEL rules find in each object.
fn validate(objects: &[Value]) -> Vec<Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let schema_file = dir.path().join("schema.json");
    std::fs::write(&schema_file, schema().to_string()).unwrap();
    let report = run_with_json(
        Command::new("python3")
            .arg(root().join("tests/support/validate_selectors.py"))
            .arg(&schema_file)
            .env("PYTHONPATH", validators()),
        &Value::Array(objects.to_vec()),
    );
    assert_eq!(
        report["compile_errors"],
        json!([]),
        "every CEL rule compiles"
    );
    serde_json::from_value(report["results"].clone()).unwrap()
}

fn upstream(file: &str) -> Value {
    yaml(&format!("tests/fixtures/upstream-selectors/{file}"))
}

#[test]
fn upstream_examples_are_accepted_and_the_unquoted_number_refused() {
    let files = [
        "fair.yaml",
        "normal-node-prefer.yaml",
        "virtual-node-only.yaml",
        "eip.yaml",
        "pod-deletion-cost.yaml",
    ];
    let objects: Vec<Value> = files.iter().map(|f| upstream(f)).collect();
    assert_eq!(
        objects[4]["spec"]["effect"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"],
        -1000,
        "the fixture is as upstream wrote it"
    );
    let results = validate(&objects);
    for (file, errors) in files.iter().zip(&results).take(4) {
        assert!(errors.is_empty(), "{file}: {errors:#?}");
    }
    assert_eq!(
        results[4],
        [
            "spec.effect.annotations.controller.kubernetes.io/pod-deletion-cost: -1000 is not of type 'string'"
        ]
    );
    // Quoted, as the schema's description says, it is accepted.
    let mut quoted = objects[4].clone();
    quoted["spec"]["effect"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"] =
        json!("-1000");
    assert_eq!(validate(&[quoted]), [Vec::<String>::new()]);
}

/// A Selector with this spec.
fn selector(spec: Value) -> Value {
    json!({"apiVersion": "eci.aliyun.com/v1", "kind": "Selector",
           "metadata": {"name": "test"}, "spec": spec})
}

#[test]
fn valid_selectors_are_accepted() {
    let specs = [
        json!({}),
        json!({"policy": {"virtualNodeOnly": {}}}),
        json!({"policy": {"normalNodeOnly": {}}, "priority": 10}),
        json!({"policy": {"normalNodePrefer": {"cpuRatio": 1, "memoryRatio": 0.5}}}),
        json!({"policy": {"namespaceResourceLimit": {"namespace": "batch",
               "limits": {"cpu": 8, "memory": "16Gi", "nvidia.com/gpu": "1", "ephemeral-storage": "1.5e3"}}}}),
        json!({"priority": -2_147_483_648_i64}),
        json!({"priority": 2_147_483_647}),
        json!({"namespaceLabels": {"matchLabels": {"alibabacloud.com/eci": "true", "team": ""}},
        "objectLabels": {"matchExpressions": [
            {"key": "app", "operator": "In", "values": ["web", "api"]},
            {"key": "example.com/tier", "operator": "NotIn", "values": ["db"]},
            {"key": "eci", "operator": "Exists"},
            {"key": "pinned", "operator": "DoesNotExist", "values": []},
        ]}}),
        json!({"effect": {"labels": {"eci-profile.io/sent": "yes"},
               "annotations": {"k8s.aliyun.com/eci-use-specs": "2-4Gi", "Example.COM/Mixed": "{\"a\": 1}"}}}),
        json!({"objectLabels": {"matchLabels": {(format!("{}/{}", "a".repeat(63), "b".repeat(63))): "c".repeat(63)}}}),
    ];
    let objects: Vec<Value> = specs.iter().cloned().map(selector).collect();
    for (spec, errors) in specs.iter().zip(validate(&objects)) {
        assert!(errors.is_empty(), "{spec}: {errors:#?}");
    }
}

#[test]
fn bad_selectors_are_refused() {
    const VALUES: &str = "values must be non-empty for the operators In and NotIn, and empty for Exists and DoesNotExist";
    const POLICY: &str = "policy must have exactly one of virtualNodeOnly, fair, normalNodePrefer, normalNodeOnly, namespaceResourceLimit";
    const LABEL_KEY: &str = "Invalid value: label keys must be";
    const ANNOTATION_KEY: &str = "Invalid value: annotation keys must be";
    let expression = |e: Value| json!({"objectLabels": {"matchExpressions": [e]}});
    let cases: Vec<(&str, Value, Vec<String>)> = vec![
        (
            "two policies",
            json!({"policy": {"fair": {}, "virtualNodeOnly": {}}}),
            vec![
                format!("spec.policy: Invalid value: {POLICY}"),
                "spec.policy: {'fair': {}, 'virtualNodeOnly': {}} has too many properties".into(),
            ],
        ),
        (
            "no policy in policy",
            json!({"policy": {}}),
            vec![
                format!("spec.policy: Invalid value: {POLICY}"),
                "spec.policy: {} should be non-empty".into(),
            ],
        ),
        (
            "operator Foo",
            expression(json!({"key": "app", "operator": "Foo", "values": ["x"]})),
            // The rule asks for no values from an operator other than In and NotIn.
            vec![
                format!("spec.objectLabels.matchExpressions.0: Invalid value: {VALUES}"),
                "spec.objectLabels.matchExpressions.0.operator: 'Foo' is not one of ['In', 'NotIn', 'Exists', 'DoesNotExist']".into(),
            ],
        ),
        (
            "In without values",
            expression(json!({"key": "app", "operator": "In"})),
            vec![format!(
                "spec.objectLabels.matchExpressions.0: Invalid value: {VALUES}"
            )],
        ),
        (
            "NotIn with no values",
            json!({"namespaceLabels": {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": []}]}}),
            vec![format!(
                "spec.namespaceLabels.matchExpressions.0: Invalid value: {VALUES}"
            )],
        ),
        (
            "Exists with values",
            expression(json!({"key": "app", "operator": "Exists", "values": ["x"]})),
            vec![format!(
                "spec.objectLabels.matchExpressions.0: Invalid value: {VALUES}"
            )],
        ),
        (
            "an expression without its operator",
            expression(json!({"key": "app"})),
            vec![
                "spec.objectLabels.matchExpressions.0: 'operator' is a required property".into(),
                // The API server's CEL fails on the missing field too.
                format!(
                    "spec.objectLabels.matchExpressions.0: Invalid value: {VALUES} (evaluation error: "
                ),
            ],
        ),
        (
            "label value too long",
            json!({"objectLabels": {"matchLabels": {"app": "x".repeat(64)}}}),
            vec![format!(
                "spec.objectLabels.matchLabels.app: '{}' is too long",
                "x".repeat(64)
            )],
        ),
        (
            "label value with a space",
            json!({"effect": {"labels": {"app": "a b"}}}),
            vec![
                "spec.effect.labels.app: 'a b' does not match '^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$'".into(),
            ],
        ),
        (
            "label key with a space",
            json!({"objectLabels": {"matchLabels": {"my app": "web"}}}),
            vec![format!("spec.objectLabels.matchLabels: {LABEL_KEY}")],
        ),
        (
            "label key name too long",
            json!({"namespaceLabels": {"matchLabels": {("a".repeat(64)): "x"}}}),
            vec![format!("spec.namespaceLabels.matchLabels: {LABEL_KEY}")],
        ),
        (
            "label key with an uppercase prefix",
            json!({"effect": {"labels": {"Example.com/app": "x"}}}),
            vec![format!("spec.effect.labels: {LABEL_KEY}")],
        ),
        (
            "annotation key with two slashes",
            json!({"effect": {"annotations": {"a/b/c": "x"}}}),
            vec![format!("spec.effect.annotations: {ANNOTATION_KEY}")],
        ),
        (
            "expression key with a space",
            expression(json!({"key": "my app", "operator": "Exists"})),
            vec!["spec.objectLabels.matchExpressions.0.key: 'my app' does not match '^(".into()],
        ),
        (
            "priority 2^31",
            json!({"priority": 2_147_483_648_i64}),
            vec!["spec.priority: 2147483648 is greater than the maximum of 2147483647".into()],
        ),
        (
            "priority as a string",
            json!({"priority": "3"}),
            vec!["spec.priority: '3' is not of type 'integer'".into()],
        ),
        (
            "namespaceResourceLimit without namespace",
            json!({"policy": {"namespaceResourceLimit": {"limits": {"cpu": "8"}}}}),
            vec!["spec.policy.namespaceResourceLimit: 'namespace' is a required property".into()],
        ),
        (
            "namespaceResourceLimit with a bad namespace",
            json!({"policy": {"namespaceResourceLimit": {"namespace": "Batch_Jobs"}}}),
            vec!["spec.policy.namespaceResourceLimit.namespace: 'Batch_Jobs' does not match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'".into()],
        ),
        (
            "a limit that is no quantity",
            json!({"policy": {"namespaceResourceLimit": {"namespace": "batch", "limits": {"cpu": "eight"}}}}),
            vec!["spec.policy.namespaceResourceLimit.limits.cpu: 'eight' does not match '^(".into()],
        ),
        (
            "an annotation value that is a boolean",
            json!({"effect": {"annotations": {"k8s.aliyun.com/eci-with-eip": true}}}),
            vec!["spec.effect.annotations.k8s.aliyun.com/eci-with-eip: True is not of type 'string'".into()],
        ),
    ];
    let objects: Vec<Value> = cases
        .iter()
        .map(|(_, spec, _)| selector(spec.clone()))
        .collect();
    let results = validate(&objects);
    for ((case, spec, expected), errors) in cases.iter().zip(results) {
        let mut expected = expected.clone();
        expected.sort();
        // Each error is checked by its start (jsonschema quotes whole patterns).
        let matches = errors.len() == expected.len()
            && errors.iter().zip(&expected).all(|(e, x)| e.starts_with(x));
        assert!(
            matches,
            "{case}: {spec}\nexpected {expected:#?}\ngot {errors:#?}"
        );
    }
    // spec is required.
    let no_spec = json!({"apiVersion": "eci.aliyun.com/v1beta1", "kind": "Selector", "metadata": {"name": "x"}});
    assert_eq!(
        validate(&[no_spec]),
        [["<root>: 'spec' is a required property"]]
    );
}
