//! Profile validation: what is an error (the profile is refused), a warning
//! or information, and where each finding points.

use eci_profile::profile::{self, Compiled, Diagnostic, ProfileData, Severity};

fn compile_manifest(manifest: &str) -> Compiled {
    let data = ProfileData::from_manifest("profile.yaml", manifest).expect("manifest readable");
    profile::compile(&data)
}

fn compile_selectors(selectors: &str) -> Compiled {
    profile::compile(&ProfileData::from_map([(
        "selectors".to_string(),
        selectors.to_string(),
    )]))
}

fn findings(c: &Compiled, severity: Severity) -> Vec<&Diagnostic> {
    c.diagnostics
        .iter()
        .filter(|d| d.severity == severity)
        .collect()
}

/// Asserts the profile is refused with exactly one error containing `needle`.
fn assert_one_error(c: &Compiled, needle: &str) -> Diagnostic {
    assert!(c.profile.is_none(), "an invalid profile must not compile");
    let errors = findings(c, Severity::Error);
    assert_eq!(errors.len(), 1, "{}", c.diagnostics);
    assert!(
        errors[0].to_string().contains(needle),
        "{} lacks {needle:?}",
        errors[0]
    );
    errors[0].clone()
}

fn manifest(selectors: &str) -> String {
    let indented: String = selectors.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: eci-profile\n  namespace: kube-system\ndata:\n  selectors: |\n{indented}"
    )
}

#[test]
fn ack_profile_with_every_key_is_valid() {
    let c = compile_manifest(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: eci-profile
  namespace: kube-system
data:
  enableClusterIp: "true"
  enableHybridMode: "false"
  enableLinuxArm64Node: "false"
  enableLogController: "false"
  enablePVCController: "false"
  enablePrivateZone: "false"
  enableReuseSSLKey: "false"
  featureGates: ""
  resourceGroupId: ""
  securityGroupId: sg-2ze1w0h7ib0qabcd
  selectors: |
    [
      {
        "name": "test-selector",
        "namespaceSelector": {"matchLabels": {"eci": "true"}},
        "objectSelector": {"matchLabels": {"eci": "true"}},
        "effect": {
          "annotations": {"k8s.aliyun.com/eci-use-specs": "ecs.c6.xlarge"},
          "labels": {"created-by-eci": "true"}
        }
      }
    ]
  slsMachineGroup: ""
  vSwitchIds: vsw-2zeet2ksvw7f14ryzabcd,vsw-2ze94pjtfuj9vaymabcd
  vpcId: vpc-2zeghwzptn5zii0w7abcd
"#,
    );
    let p = c.profile.as_ref().expect("valid");
    assert!(findings(&c, Severity::Error).is_empty());
    assert!(
        findings(&c, Severity::Warning).is_empty(),
        "{}",
        c.diagnostics
    );
    // Every ignored ACK key is reported as information, by name.
    let info = findings(&c, Severity::Info);
    assert_eq!(info.len(), 11, "{}", c.diagnostics);
    assert!(
        info.iter()
            .any(|d| d.field == "vpcId" && d.message.contains("configures the virtual node"))
    );
    assert_eq!(p.rule_count(), 1);
    assert_eq!(
        p.cluster_annotations(),
        [
            (
                "k8s.aliyun.com/eci-vswitch".to_string(),
                "vsw-2zeet2ksvw7f14ryzabcd,vsw-2ze94pjtfuj9vaymabcd".to_string()
            ),
            (
                "k8s.aliyun.com/eci-security-group".to_string(),
                "sg-2ze1w0h7ib0qabcd".to_string()
            ),
        ]
    );
}

#[test]
fn empty_or_absent_selectors_mean_none() {
    for text in ["", "  \n", "[]", "null"] {
        let c = compile_selectors(text);
        assert_eq!(c.profile.expect("valid").rule_count(), 0, "{text:?}");
    }
    let c = profile::compile(&ProfileData::default());
    assert_eq!(c.profile.unwrap().rule_count(), 0);
}

#[test]
fn json_syntax_errors_point_into_the_file() {
    let c = compile_manifest(&manifest("[\n  {\"name\": \"a\",}\n]"));
    let e = assert_one_error(&c, "invalid JSON");
    assert_eq!(e.file.as_deref(), Some("profile.yaml"));
    // Line 2 of the value is line 9 of the file; the value is indented by 4.
    let p = e.position.expect("mapped position");
    assert_eq!(p.line, 9, "{e}");
    assert!(e.to_string().starts_with("profile.yaml:9:"), "{e}");
}

#[test]
fn semantic_errors_name_selector_field_and_position() {
    let c = compile_manifest(&manifest(
        "[\n  {\"name\": \"spot\",\n   \"objectSelector\": {\"matchExpressions\": [\n     {\"key\": \"app\", \"operator\": \"Equals\", \"values\": [\"x\"]}]}}\n]",
    ));
    let e = assert_one_error(&c, "unknown operator \"Equals\"");
    assert_eq!(e.selector.as_deref(), Some("spot"));
    assert_eq!(
        e.field,
        "selectors[0].objectSelector.matchExpressions[0].operator"
    );
    assert_eq!(e.position.unwrap().line, 11, "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "profile.yaml:11:{}: error: selector \"spot\": selectors[0].objectSelector.matchExpressions[0].operator: unknown operator \"Equals\" (expected In, NotIn, Exists or DoesNotExist)",
            e.position.unwrap().column
        )
    );
}

#[test]
fn names_are_required_and_unique() {
    assert_one_error(
        &compile_selectors(r#"[{"objectSelector": {}}]"#),
        "selectors[0].name: is required",
    );
    assert_one_error(&compile_selectors(r#"[{"name": ""}]"#), "must not be empty");
    assert_one_error(&compile_selectors(r#"[{"name": 7}]"#), "must be a string");
    assert_one_error(
        &compile_selectors(r#"[{"name": "a,b", "objectSelector": {}}]"#),
        "must not contain ','",
    );
    let e = assert_one_error(
        &compile_selectors(
            r#"[{"name": "a", "objectSelector": {}}, {"name": "a", "namespaceSelector": {}}]"#,
        ),
        "duplicate name (also selectors[0])",
    );
    assert_eq!(e.field, "selectors[1].name");
}

#[test]
fn label_selector_errors() {
    let cases = [
        (r#"{"matchLabels": {"bad key!": "x"}}"#, "invalid label key"),
        (
            r#"{"matchLabels": {"app": "bad value!"}}"#,
            "invalid label value",
        ),
        (
            r#"{"matchLabels": {"eci": true}}"#,
            "must be a string, found a boolean (quote it)",
        ),
        (
            r#"{"matchExpressions": [{"key": "a", "operator": "In"}]}"#,
            "must be non-empty when the operator is In",
        ),
        (
            r#"{"matchExpressions": [{"key": "a", "operator": "NotIn", "values": []}]}"#,
            "must be non-empty",
        ),
        (
            r#"{"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}"#,
            "must be empty when the operator is Exists",
        ),
        (
            r#"{"matchExpressions": [{"operator": "Exists"}]}"#,
            "key: is required",
        ),
        (
            r#"{"matchExpressions": [{"key": "a"}]}"#,
            "operator: is required",
        ),
        (r#"{"matchExpressions": {"key": "a"}}"#, "must be a list"),
        (r#""eci=true""#, "must be a label selector object"),
    ];
    for (selector, needle) in cases {
        let c = compile_selectors(&format!(
            r#"[{{"name": "r", "namespaceSelector": {selector}}}]"#
        ));
        let e = assert_one_error(&c, needle);
        assert_eq!(e.selector.as_deref(), Some("r"), "{e}");
        assert!(e.field.starts_with("selectors[0].namespaceSelector"), "{e}");
    }
}

#[test]
fn effect_errors() {
    let cases = [
        (
            r#"{"annotations": {"k8s.aliyun.com/eci-use-specs": "2C4G"}}"#,
            "invalid value \"2C4G\"",
        ),
        (
            r#"{"annotations": {"k8s.aliyun.com/eci-spot-strategy": "Cheap"}}"#,
            "must be one of SpotAsPriceGo, SpotWithPriceLimit",
        ),
        (
            r#"{"annotations": {"k8s.aliyun.com/eci-with-eip": "yes"}}"#,
            "must be one of true, false",
        ),
        (
            r#"{"annotations": {"k8s.aliyun.com/eci-instance-id": "eci-1"}}"#,
            "is set by ECI itself",
        ),
        (
            r#"{"annotations": {"example.com/a~b": "x"}}"#,
            "invalid annotation key",
        ),
        (
            r#"{"annotations": {"eci-profile.io/selectors": "x"}}"#,
            "is reserved",
        ),
        (
            r#"{"annotations": {"example.com/n": 5}}"#,
            "must be a string, found a number",
        ),
        (
            r#"{"labels": {"eci-profile.io/exclude": "true"}}"#,
            "is reserved",
        ),
        (
            r#"{"labels": {"pool": "not valid"}}"#,
            "invalid label value",
        ),
        (r#"{"labels": ["a"]}"#, "must be an object of strings"),
        (r#""nope""#, "must be an object"),
    ];
    for (effect, needle) in cases {
        let c = compile_selectors(&format!(
            r#"[{{"name": "r", "objectSelector": {{}}, "effect": {effect}}}]"#
        ));
        let e = assert_one_error(&c, needle);
        assert!(e.field.starts_with("selectors[0].effect"), "{e}");
    }
}

#[test]
fn priority_and_policy_errors() {
    assert_one_error(
        &compile_selectors(r#"[{"name": "r", "objectSelector": {}, "policy": "cheapest"}]"#),
        "unknown policy \"cheapest\"",
    );
    assert_one_error(
        &compile_selectors(r#"[{"name": "r", "objectSelector": {}, "priority": "high"}]"#),
        "priority: must be a whole number",
    );
    assert_one_error(
        &compile_selectors(r#"[{"name": "r", "objectSelector": {}, "priority": 1.5}]"#),
        "priority: must be a whole number",
    );
    assert_one_error(
        &compile_selectors(r#"{"name": "r"}"#),
        "must be a list of selectors",
    );
}

#[test]
fn virtual_node_errors() {
    let vn = |text: &str| {
        profile::compile(&ProfileData::from_map([(
            "virtualNode".to_string(),
            text.to_string(),
        )]))
    };
    assert_one_error(&vn(r#"{"tolerations": []}"#), "nodeSelector: is required");
    assert_one_error(
        &vn(r#"{"nodeSelector": {}}"#),
        "must have at least one label",
    );
    assert_one_error(
        &vn(
            r#"{"nodeSelector": {"type": "virtual-kubelet"}, "tolerations": [{"key": "k", "operator": "Equals"}]}"#,
        ),
        "unknown operator \"Equals\" (expected Equal or Exists)",
    );
    assert_one_error(
        &vn(
            r#"{"nodeSelector": {"type": "vk"}, "tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}"#,
        ),
        "must be empty when the operator is Exists",
    );
    assert_one_error(
        &vn(
            r#"{"nodeSelector": {"type": "vk"}, "tolerations": [{"key": "k", "effect": "NoRun"}]}"#,
        ),
        "unknown effect \"NoRun\"",
    );
    assert_one_error(&vn("nodeSelector: [a]\n"), "must be an object of strings");
    assert_one_error(&vn("{"), "invalid JSON");
    // YAML works too.
    let c = vn(
        "nodeSelector:\n  type: virtual-kubelet\ntolerations:\n- key: virtual-kubelet.io/provider\n  operator: Exists\n  effect: NoSchedule\n",
    );
    assert!(c.profile.is_some(), "{}", c.diagnostics);
}

#[test]
fn warnings_and_information_do_not_refuse_the_profile() {
    let c = profile::compile(&ProfileData::from_map([
        (
            "selectors".to_string(),
            r#"[{"name": "r", "objectSelector": {"matchLabels": {"eci": "true"}}, "colour": "blue",
                 "effect": {"annotations": {"k8s.aliyun.com/eci-brand-new": "x"}}},
                {"name": "all", "objectSelector": {}},
                {"name": "nothing"},
                {"name": "effect-only", "policy": "fair", "effect": {"labels": {"a": "b"}}}]"#
                .to_string(),
        ),
        ("mystery".to_string(), "x".to_string()),
        ("vpcId".to_string(), "vpc-1".to_string()),
    ]));
    assert!(c.profile.is_some(), "{}", c.diagnostics);
    let warnings: Vec<String> = findings(&c, Severity::Warning)
        .iter()
        .map(|d| d.to_string())
        .collect();
    let expect = [
        "selectors[0].colour: unknown field",
        "is not a known ECI annotation",
        "selects every pod in every namespace",
        "has no selector and no effect",
        "policy: has no effect",
        "mystery: unknown key",
    ];
    assert_eq!(warnings.len(), expect.len(), "{warnings:#?}");
    for needle in expect {
        assert!(
            warnings.iter().any(|w| w.contains(needle)),
            "no warning {needle:?} in {warnings:#?}"
        );
    }
    assert_eq!(findings(&c, Severity::Info).len(), 1);
}

#[test]
fn yaml_selectors_are_accepted() {
    let c = compile_selectors(
        "- name: yaml-rule\n  priority: 3\n  policy: fair\n  objectSelector:\n    matchLabels:\n      eci: \"true\"\n  effect:\n    annotations:\n      k8s.aliyun.com/eci-use-specs: 2-4Gi\n",
    );
    let p = c.profile.expect("valid");
    let rule = &p.selecting_rules()[0];
    assert_eq!(rule.name, "yaml-rule");
    assert_eq!(rule.priority, 3);
    assert_eq!(
        rule.annotations,
        [(
            "k8s.aliyun.com/eci-use-specs".to_string(),
            "2-4Gi".to_string()
        )]
    );
}

#[test]
fn yaml_unquoted_values_are_caught() {
    let c = compile_selectors("- name: r\n  objectSelector:\n    matchLabels:\n      eci: true\n");
    let e = assert_one_error(&c, "must be a string, found a boolean (quote it)");
    assert_eq!(e.field, "selectors[0].objectSelector.matchLabels[\"eci\"]");
    // No file: the position is given relative to the value.
    assert!(
        e.message
            .contains("(line 4, column 12 of the selectors value)"),
        "{e}"
    );
}

#[test]
fn invalid_id_lists() {
    let c = profile::compile(&ProfileData::from_map([(
        "vSwitchIds".to_string(),
        "subnet-1".to_string(),
    )]));
    assert_one_error(&c, "vSwitchIds: invalid value \"subnet-1\"");
    let c = profile::compile(&ProfileData::from_map([(
        "securityGroupId".to_string(),
        "sg-a,sg-b,sg-c,sg-d,sg-e,sg-f".to_string(),
    )]));
    assert_one_error(&c, "at most 5");
}

#[test]
fn embedded_default_profile_is_valid_and_quiet() {
    let data = ProfileData::from_manifest("default", profile::EMBEDDED_DEFAULT).unwrap();
    let c = profile::compile(&data);
    assert!(c.diagnostics.0.is_empty(), "{}", c.diagnostics);
    assert_eq!(c.profile.unwrap().rule_count(), 4);
}

/// YAML 1.1's boolean spellings (`y`, `yes`, `on`, ...) that YAML 1.2's core schema reads as strings.
const YAML_1_1_BOOLEANS: &[&str] = &[
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "on", "On", "ON", "off", "Off", "OFF",
];

#[test]
fn yaml_selectors_read_yaml_1_1_boolean_spellings_as_strings() {
    for word in YAML_1_1_BOOLEANS {
        let c = compile_selectors(&format!(
            "- name: {word}\n  objectSelector:\n    matchLabels:\n      answer: {word}\n    matchExpressions:\n      - {{key: mode, operator: In, values: [{word}, x]}}\n  effect:\n    labels:\n      switch: {word}\n"
        ));
        assert!(
            findings(&c, Severity::Error).is_empty(),
            "{word}: {}",
            c.diagnostics
        );
        let p = c.profile.expect("valid");
        let rule = &p.selecting_rules()[0];
        assert_eq!(rule.name, *word);
        assert_eq!(rule.labels, [("switch".to_string(), word.to_string())]);
        let selector = rule.object_selector.as_ref().expect("a selector");
        let pod = |answer: &str| {
            eci_profile::labels::Labels::from([
                ("answer".to_string(), answer.to_string()),
                ("mode".to_string(), word.to_string()),
            ])
        };
        assert!(selector.matches(&pod(word)), "{word}");
        assert!(!selector.matches(&pod("true")), "{word}");
    }
}

#[test]
fn yaml_1_2_booleans_are_still_booleans_in_selectors() {
    for word in ["true", "True", "TRUE", "false", "False", "FALSE"] {
        let c = compile_selectors(&format!("- name: {word}\n"));
        assert_one_error(&c, "must be a string, found a boolean");
        let c = compile_selectors(&format!(
            "- name: r\n  objectSelector:\n    matchLabels:\n      eci: {word}\n"
        ));
        assert_one_error(&c, "must be a string, found a boolean (quote it)");
    }
    // Quoted, they are strings.
    let c = compile_selectors(
        "- name: \"true\"\n  objectSelector:\n    matchLabels:\n      eci: 'true'\n",
    );
    assert_eq!(c.profile.expect("valid").selecting_rules()[0].name, "true");
}

#[test]
fn manifest_data_reads_booleans_as_kubectl_does() {
    // kubectl reads manifests as YAML 1.1: an unquoted `yes` in `data` is a
    // boolean it refuses, and so is it here, saying why.
    for word in ["yes", "on", "N", "Off"] {
        let err = ProfileData::from_manifest(
            "p.yaml",
            &format!("kind: ConfigMap\ndata:\n  vpcId: {word}\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(&format!(
                "must be a string, found {word:?}, a YAML 1.1 boolean as kubectl reads it: quote it"
            )),
            "{word}: {err}"
        );
    }
    let err = ProfileData::from_manifest("p.yaml", "kind: ConfigMap\ndata:\n  vpcId: true\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("must be a string, found a boolean"), "{err}");
    assert!(!err.contains("YAML 1.1"), "{err}");
    // Quoted, the same words are strings.
    let data = ProfileData::from_manifest(
        "p.yaml",
        "kind: ConfigMap\ndata:\n  vpcId: \"yes\"\n  b: 'on'\n",
    )
    .unwrap();
    assert_eq!(data.entries["vpcId"].text, "yes");
    assert_eq!(data.entries["b"].text, "on");
}

// Budgets: `limits` on a ConfigMap rule.

#[test]
fn limits_are_read_with_positions() {
    let c = compile_manifest(&manifest(
        r#"[{"name": "team", "namespaceSelector": {"matchLabels": {"team": "a"}},
  "limits": {"pods": 40, "cpu": "64", "requests.memory": "128Gi", "nvidia.com/gpu": 2}}]"#,
    ));
    let profile = c.profile.as_ref().expect("valid");
    let budget = profile.selecting_rules()[0].budget.as_ref().unwrap();
    assert_eq!(budget.namespace, None);
    assert_eq!(
        budget
            .limits
            .0
            .iter()
            .map(|(r, q)| format!("{r}={q}"))
            .collect::<Vec<_>>(),
        ["pods=40", "requests.cpu=64", "requests.memory=137438953472"]
    );
    let warnings: Vec<String> = findings(&c, Severity::Warning)
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert!(
        warnings.iter().any(|w| w.starts_with("profile.yaml:9:71: warning: selector \"team\": selectors[0].limits[\"nvidia.com/gpu\"]: is not counted")),
        "{warnings:#?}"
    );
    assert_eq!(warnings.len(), 1, "budgets are enforced: {warnings:#?}");

    let c = compile_manifest(&manifest(
        r#"[{"name": "team", "namespaceSelector": {"matchLabels": {"team": "a"}},
  "limits": {"pods": "forty"}}]"#,
    ));
    let error = assert_one_error(
        &c,
        "selectors[0].limits[\"pods\"]: invalid quantity \"forty\"",
    );
    assert_eq!(error.position.map(|p| (p.line, p.column)), Some((9, 26)));
    let c = compile_selectors(
        r#"[{"name": "x", "objectSelector": {}, "limits": {"cpu": 1, "requests.cpu": 2}}]"#,
    );
    assert_one_error(&c, "requests.cpu is given twice");
    let c = compile_selectors(
        r#"[{"name": "x", "effect": {"labels": {"a": "b"}}, "limits": {"pods": 1}}]"#,
    );
    assert!(
        c.diagnostics
            .to_string()
            .contains("its budget has no effect: a rule without selectors sends no pod"),
        "{}",
        c.diagnostics
    );
}

#[test]
fn unknown_keys_and_fields_suggest_the_meant_name() {
    let c = profile::compile(&ProfileData::from_map([
        (
            "selectors".to_string(),
            r#"[{"name": "r", "objectSelector": {"matchLabels": {"a": "b"}, "matchExpression": []},
                 "Priority": 3, "efect": {}}]"#
                .to_string(),
        ),
        ("vswitchIds".to_string(), "vsw-1".to_string()),
        ("securityGroupID".to_string(), "sg-1".to_string()),
        ("mystery".to_string(), "x".to_string()),
    ]));
    assert!(c.profile.is_some(), "{}", c.diagnostics);
    let suggested: Vec<(&str, Option<&str>)> = findings(&c, Severity::Warning)
        .into_iter()
        .map(|d| (d.field.as_str(), d.suggestion.as_deref()))
        .collect();
    for expected in [
        (
            "selectors[0].objectSelector.matchExpression",
            Some("matchExpressions"),
        ),
        ("selectors[0].Priority", Some("priority")),
        ("selectors[0].efect", Some("effect")),
        ("vswitchIds", Some("vSwitchIds")),
        ("securityGroupID", Some("securityGroupId")),
        ("mystery", None),
    ] {
        assert!(
            suggested.contains(&expected),
            "{expected:?} not in {suggested:?}"
        );
    }
    let text = c.diagnostics.to_string();
    assert!(
        text.contains("vswitchIds: unknown key, ignored; did you mean \"vSwitchIds\"?"),
        "{text}"
    );
}

#[test]
fn a_selector_left_empty_by_unknown_fields_is_an_error() {
    // The typo would select every pod in every namespace.
    let e = assert_one_error(
        &compile_selectors(r#"[{"name": "x", "objectSelector": {"matchLabel": {"a": "b"}}}]"#),
        "selectors[0].objectSelector.matchLabel: unknown field: without it the selector is empty and matches everything",
    );
    assert_eq!(e.suggestion.as_deref(), Some("matchLabels"));
    assert_eq!(e.selector.as_deref(), Some("x"));
    // Also beside a namespace selector, and with an empty matchLabels.
    let e = assert_one_error(
        &compile_selectors(
            r#"[{"name": "x", "namespaceSelector": {"matchLabels": {"t": "a"}},
                 "objectSelector": {"matchLabels": {}, "matchExpresions": [{"key": "a", "operator": "Exists"}]}}]"#,
        ),
        "matchExpresions: unknown field: without it",
    );
    assert_eq!(e.suggestion.as_deref(), Some("matchExpressions"));
    // Written empty on purpose: a warning, as before.
    let c = compile_selectors(r#"[{"name": "y", "objectSelector": {}}]"#);
    assert!(c.profile.is_some(), "{}", c.diagnostics);
    assert!(
        c.diagnostics
            .to_string()
            .contains("its selectors are empty")
    );
    // An unknown field beside a real requirement stays a warning.
    let c = compile_selectors(
        r#"[{"name": "z", "objectSelector": {"matchLabels": {"a": "b"}, "matchLabel": {"c": "d"}}}]"#,
    );
    assert!(c.profile.is_some(), "{}", c.diagnostics);
    let warnings = findings(&c, Severity::Warning);
    assert_eq!(warnings.len(), 1, "{}", c.diagnostics);
    assert_eq!(warnings[0].suggestion.as_deref(), Some("matchLabels"));
}

#[test]
fn a_duplicate_name_is_reported_beside_other_errors() {
    let c = compile_selectors(
        r#"[{"name": "a", "objectSelector": {"matchLabels": {"x": "y"}}},
            {"name": "a", "policy": "sometimes", "objectSelector": {"matchLabels": {"x": "y"}}},
            {"name": "a", "objectSelector": {"matchLabels": {"bad key!": "y"}}}]"#,
    );
    assert!(c.profile.is_none());
    let errors: Vec<String> = findings(&c, Severity::Error)
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert_eq!(errors.len(), 4, "{errors:#?}");
    for needle in [
        "selectors[1].policy: unknown policy",
        "selectors[1].name: duplicate name (also selectors[0])",
        "invalid label key",
        "selectors[2].name: duplicate name (also selectors[0])",
    ] {
        assert!(
            errors.iter().any(|e| e.contains(needle)),
            "{needle:?} not in {errors:#?}"
        );
    }
}

fn selector_object(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: eci.aliyun.com/v1\nkind: Selector\nmetadata:\n  name: {name}\nspec: {spec}\n"
    )
}

#[test]
fn selector_objects_get_the_same_checks() {
    let text = selector_object("web", "{objectLabels: {matchLabel: {app: web}}}");
    let (manifests, _) = profile::Manifests::read("s.yaml", &text).unwrap();
    let c = profile::compile_manifests(&manifests);
    assert!(c.profile.is_none());
    let e = assert_one_error(
        &c,
        "s.yaml:5:23: error: selector \"web\": spec.objectLabels.matchLabel: unknown field: without it the selector is empty",
    );
    assert_eq!(e.suggestion.as_deref(), Some("matchLabels"));
    let text = selector_object("web", "{objectLabel: {matchLabels: {app: web}}}");
    let (manifests, _) = profile::Manifests::read("s.yaml", &text).unwrap();
    let c = profile::compile_manifests(&manifests);
    let warning = findings(&c, Severity::Warning)
        .into_iter()
        .find(|d| d.field == "spec.objectLabel")
        .cloned();
    assert_eq!(
        warning.as_ref().and_then(|d| d.suggestion.as_deref()),
        Some("objectLabels"),
        "{}",
        c.diagnostics
    );
}

#[test]
fn selector_name_clashes_are_reported_beside_other_errors() {
    // Two Selectors of one name, the second invalid; a third named like a
    // rule of a ConfigMap that is itself invalid.
    let text = [
        selector_object("web", "{objectLabels: {matchLabels: {app: web}}}"),
        selector_object("web", "{objectLabels: {matchLabels: {app: web}}, policy: {sometimes: {}}}"),
        selector_object("batch", "{objectLabels: {matchLabels: {app: batch}}}"),
        manifest(r#"[{"name": "batch", "policy": "never", "objectSelector": {"matchLabels": {"a": "b"}}}]"#),
    ]
    .join("---\n");
    let (manifests, _) = profile::Manifests::read("all.yaml", &text).unwrap();
    let c = profile::compile_manifests(&manifests);
    assert!(c.profile.is_none());
    let errors: Vec<String> = findings(&c, Severity::Error)
        .iter()
        .map(|d| d.to_string())
        .collect();
    for needle in [
        "unknown policy \"never\"",
        "unknown policy \"sometimes\"",
        "selector \"web\": metadata.name: a second Selector named \"web\"",
        "selector \"batch\": metadata.name: selector \"batch\" is also a rule of the profile ConfigMap",
    ] {
        assert!(
            errors.iter().any(|e| e.contains(needle)),
            "{needle:?} not in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), 4, "{errors:#?}");
}
