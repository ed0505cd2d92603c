//! `eci-profile test`, run as CI runs it: the example suite passes, failures
//! show what differed, `-o json` and `--junit` are well formed, bad test
//! files are refused with their position; and the example suite follows
//! the published JSON Schema (checked with jsonschema from PyPI, installed
//! on first use into the target directory).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::cli::{run, stderr, stdout};
use common::install_once::{run_with_json, validators};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn example(relative: &str) -> String {
    root()
        .join("manifests/examples")
        .join(relative)
        .display()
        .to_string()
}

/// A test file in a new directory, with the example profile and namespaces.
fn test_file(cases: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("suite.yaml");
    let text = format!(
        "apiVersion: eci-profile.io/v1alpha1\nkind: ProfileTest\nprofile: [{}]\nnamespaces: {}\ncases:\n{cases}",
        example("eci-profile.yaml"),
        example("namespaces.yaml"),
    );
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Runs the test file at `path`, which must pass its `cases` cases.
fn passes(path: &Path, cases: usize) {
    let out = run(&["test", arg(path)]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let summary = format!("{cases} passed, 0 failed\n");
    assert!(stdout(&out).ends_with(&summary), "{}", stdout(&out));
}

#[test]
fn the_example_suite_passes() {
    let out = run(&["test", &example("tests")]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains("FAIL"), "{text}");
    assert!(text.ends_with("9 passed, 0 failed\n"), "{text}");
    assert!(
        text.contains("  PASS DaemonSet pods are left alone\n"),
        "{text}"
    );
}

#[test]
fn a_failing_case_shows_what_differed_and_exits_1() {
    let (_dir, path) = test_file(&format!(
        r#"  - name: web goes to virtual nodes
    resource: {web}
    expect: {{outcome: mutated, rules: [eci-namespaces, image-cache], policy: virtualNodeOnly}}
  - name: web is wrongly expected to be skipped
    resource: {web}
    expect:
      outcome: skipped
      reason: daemonset
      rules: [eci-namespaces]
      annotations: {{k8s.aliyun.com/eci-use-specs: 2-4Gi, k8s.aliyun.com/eci-auto-imc: "true"}}
"#,
        web = example("pods/web-deployment.yaml")
    ));
    let out = run(&["test", arg(&path)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "{}
  PASS web goes to virtual nodes
  FAIL web is wrongly expected to be skipped
         outcome: expected skipped, got mutated
         reason: expected daemonset, got none (mutated)
         rules: expected [eci-namespaces], got [eci-namespaces, image-cache]
         annotations[k8s.aliyun.com/eci-use-specs]: expected \"2-4Gi\", got absent
1 passed, 1 failed
",
            path.display()
        )
    );
}

#[test]
fn json_output_counts_cases_and_lists_differences() {
    let (_dir, path) = test_file(&format!(
        "  - name: daemonset\n    resource: {}\n    expect: {{outcome: skipped, reason: host-network}}\n",
        example("pods/node-exporter.yaml")
    ));
    let out = run(&["test", "-o", "json", arg(&path)]);
    assert_eq!(out.status.code(), Some(1));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["passed"], 0);
    assert_eq!(doc["failed"], 1);
    let case = &doc["files"][0]["cases"][0];
    assert_eq!(case["name"], "daemonset");
    assert_eq!(case["passed"], false);
    assert_eq!(case["got"]["outcome"], "skipped");
    assert_eq!(case["got"]["reason"], "daemonset");
    assert_eq!(
        case["differences"],
        serde_json::json!([{"field": "reason", "expected": "host-network", "got": "daemonset"}])
    );
}

#[test]
fn select_names_one_object_of_a_file_with_several() {
    let dir = tempfile::tempdir().unwrap();
    let pods = dir.path().join("pods.yaml");
    std::fs::write(
        &pods,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: shop}\nspec: {containers: [{name: a, image: x}]}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: shop}\nspec: {hostNetwork: true, containers: [{name: b, image: x}]}\n",
    )
    .unwrap();
    let (_suite_dir, path) = test_file(&format!(
        "  - name: b\n    resource: {}\n    select: {{kind: Pod, name: b}}\n    expect: {{outcome: skipped, reason: host-network}}\n",
        pods.display()
    ));
    let out = run(&["test", arg(&path)]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    let (_suite_dir, path) = test_file(&format!(
        "  - name: which\n    resource: {}\n    expect: {{outcome: mutated}}\n",
        pods.display()
    ));
    let out = run(&["test", arg(&path)]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("case 1 (which): ")
            && err.contains("pods.yaml: 2 objects match; name one with select: {kind, name}"),
        "{err}"
    );
}

#[test]
fn junit_is_well_formed_xml_with_a_failure_per_failing_case() {
    let (dir, path) = test_file(&format!(
        r#"  - name: "api <pod> & \"friends\""
    resource: {api}
    expect: {{outcome: unchanged}}
  - name: web
    resource: {web}
    expect: {{outcome: mutated}}
"#,
        api = example("pods/api-pod.yaml"),
        web = example("pods/web-deployment.yaml"),
    ));
    let junit = dir.path().join("junit.xml");
    let out = run(&["test", "--junit", arg(&junit), arg(&path)]);
    assert_eq!(out.status.code(), Some(1));
    let xml = std::fs::read_to_string(&junit).unwrap();
    let root = xml::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    assert_eq!(root.name, "testsuites");
    assert_eq!(root.attr("tests"), Some("2"));
    assert_eq!(root.attr("failures"), Some("1"));
    let [suite] = root.children.as_slice() else {
        panic!("one testsuite: {xml}")
    };
    assert_eq!(suite.name, "testsuite");
    assert_eq!(suite.attr("name"), Some(arg(&path)));
    let [failing, passing] = suite.children.as_slice() else {
        panic!("two testcases: {xml}")
    };
    assert_eq!(failing.attr("name"), Some("api <pod> & \"friends\""));
    let [failure] = failing.children.as_slice() else {
        panic!("a failure: {xml}")
    };
    assert_eq!(failure.name, "failure");
    assert_eq!(
        failure.attr("message"),
        Some("outcome: expected unchanged, got mutated")
    );
    assert!(
        failure
            .text
            .contains("Pod default/api\noutcome: expected unchanged, got mutated")
    );
    assert_eq!(passing.attr("name"), Some("web"));
    assert!(passing.children.is_empty());
}

#[test]
fn a_malformed_test_file_is_refused_with_its_position() {
    let (_dir, path) = test_file(&format!(
        "  - name: typo\n    resource: {}\n    expect:\n      outcome: Mutated\n",
        example("pods/api-pod.yaml")
    ));
    let out = run(&["test", arg(&path)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).ends_with("0 passed, 0 failed, 1 error\n"),
        "{}",
        stdout(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{}: unknown variant `Mutated`", path.display()))
            && err.contains("line 9"),
        "{err}"
    );

    let (_dir, path) = test_file("  - name: typo\n    object: {kind: Pod}\n    expcet: {}\n");
    let err = stderr(&run(&["test", arg(&path)]));
    assert!(
        err.contains("unknown field `expcet`") && err.contains("line 8"),
        "{err}"
    );
}

#[test]
fn bad_inputs_are_named_and_exit_1() {
    let (_dir, path) = test_file("  - name: nothing to decide\n    expect: {}\n");
    let out = run(&["test", arg(&path)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("case 1 (nothing to decide): give resource or object"),
        "{}",
        stderr(&out)
    );

    let (_dir, path) = test_file("  - name: gone\n    resource: missing.yaml\n    expect: {}\n");
    let out = run(&["test", arg(&path)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("case 1 (gone): ")
            && stderr(&out).contains("missing.yaml: cannot read"),
        "{}",
        stderr(&out)
    );

    let empty = tempfile::tempdir().unwrap();
    let out = run(&["test", arg(empty.path())]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no ProfileTest files"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_file_or_case_that_cannot_run_does_not_stop_the_others() {
    // One directory: a test file whose second case names a missing file, and
    // a malformed test file. Every other case runs; the run exits 1.
    let (dir, _good) = test_file(&format!(
        "  - name: web\n    resource: {}\n    expect: {{outcome: mutated}}\n  - name: gone\n    resource: missing.yaml\n    expect: {{}}\n",
        example("pods/web-deployment.yaml")
    ));
    std::fs::write(
        dir.path().join("broken.yaml"),
        "apiVersion: eci-profile.io/v1alpha1\nkind: ProfileTest\ncases:\n  - name: x\n    object: {kind: Pod}\n    expcet: {}\n",
    )
    .unwrap();
    let junit = dir.path().join("junit.xml");
    let out = run(&["test", "--junit", arg(&junit), arg(dir.path())]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(
        table.contains("broken.yaml\n  ERROR ")
            && table.contains("broken.yaml: unknown field `expcet`"),
        "{table}"
    );
    assert!(table.contains("  PASS web\n  ERROR gone\n"), "{table}");
    assert!(table.ends_with("1 passed, 0 failed, 2 errors\n"), "{table}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    let root = xml::parse(&xml).unwrap();
    assert_eq!(root.attr("errors"), Some("2"));
    assert_eq!(root.attr("tests"), Some("3"));
    let errors: Vec<&str> = root
        .children
        .iter()
        .flat_map(|suite| &suite.children)
        .filter(|case| case.children.iter().any(|c| c.name == "error"))
        .map(|case| case.attr("name").unwrap())
        .collect();
    assert_eq!(errors, ["(test file)", "gone"]);
}

#[test]
fn a_directory_holds_test_files_among_other_manifests() {
    let (dir, _path) = test_file(&format!(
        "  - name: api\n    resource: {}\n    expect: {{outcome: mutated}}\n",
        example("pods/api-pod.yaml")
    ));
    // Fixtures next to the tests are not test files.
    std::fs::write(dir.path().join("pod.yaml"), "apiVersion: v1\nkind: Pod\n").unwrap();
    let out = run(&["test", arg(dir.path())]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).ends_with("1 passed, 0 failed\n"));
}

/// The example suite, and a test file with every field, follow the schema;
/// files with mistakes do not.
#[test]
fn the_schema_accepts_the_example_suite_and_refuses_mistakes() {
    let suite: Value = yaml(&root().join("manifests/examples/tests/eci-profile.test.yaml"));
    let every_field: Value = serde_json::json!({
        "apiVersion": "eci-profile.io/v1alpha1",
        "kind": "ProfileTest",
        "profile": "profile.yaml",
        "namespaces": ["a.yaml", "b.yaml"],
        "usage": "usage.yaml",
        "excludeNamespaces": ["ci"],
        "cases": [{
            "name": "all",
            "resource": "pods.yaml",
            "select": {"kind": "Pod", "name": "a"},
            "namespace": "shop",
            "expect": {
                "outcome": "skipped", "reason": "over-budget", "rules": [], "policy": "none",
                "annotations": {"a": "1", "b": null}, "labels": {}, "nodeSelector": {},
                "pod": {"kind": "Pod"}
            }
        }]
    });
    let mut typo = suite.clone();
    typo["cases"][0]["expect"]["outcome"] = "Mutated".into();
    let mut both = suite.clone();
    both["cases"][0]["object"] = serde_json::json!({"kind": "Pod"});
    let mut unknown = suite.clone();
    unknown["cases"][0]["expcet"] = serde_json::json!({});
    let mut no_cases = suite.clone();
    no_cases["cases"] = serde_json::json!([]);
    let errors = validate(&[suite, every_field, typo, both, unknown, no_cases]);
    assert_eq!(
        errors[..2],
        [Vec::<String>::new(), Vec::new()],
        "{errors:?}"
    );
    for (i, e) in errors[2..].iter().enumerate() {
        assert!(!e.is_empty(), "mistake {i} accepted");
    }
}

/// The command refuses a case with both a resource and an object, as the schema does.
#[test]
fn a_case_with_both_resource_and_object_is_refused() {
    let (_dir, path) = test_file(&format!(
        "  - name: both\n    resource: {}\n    object: {{kind: Pod}}\n    expect: {{}}\n",
        example("pods/api-pod.yaml")
    ));
    let out = run(&["test", arg(&path)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("give resource or object, not both"),
        "{}",
        stderr(&out)
    );
}

fn yaml(path: &Path) -> Value {
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The schema's errors for each document (jsonschema, Draft 2020-12).
fn validate(documents: &[Value]) -> Vec<Vec<String>> {
    let script = r#"
import json, sys
from jsonschema import Draft202012Validator
schema = json.load(open(sys.argv[1]))
Draft202012Validator.check_schema(schema)
validator = Draft202012Validator(schema)
documents = json.load(sys.stdin)
print(json.dumps([[e.message for e in validator.iter_errors(d)] for d in documents]))
"#;
    let errors = run_with_json(
        Command::new("python3")
            .args(["-c", script])
            .arg(root().join("schemas/eci-profile-test.schema.json"))
            .env("PYTHONPATH", validators()),
        &Value::from(documents.to_vec()),
    );
    serde_json::from_value(errors).unwrap()
}

/// Just enough of an XML reader to tell the JUnit output is well formed:
/// one root element, balanced tags, quoted attributes, only the five
/// predefined entities and character references.
mod xml {
    #[derive(Debug)]
    pub struct Element {
        pub name: String,
        pub attrs: Vec<(String, String)>,
        pub children: Vec<Element>,
        pub text: String,
    }

    impl Element {
        pub fn attr(&self, name: &str) -> Option<&str> {
            self.attrs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
    }

    pub fn parse(text: &str) -> Result<Element, String> {
        let rest = text
            .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>")
            .ok_or("no XML declaration")?;
        let mut reader = Reader {
            rest: rest.trim_start(),
        };
        let root = reader.element()?;
        if !reader.rest.trim().is_empty() {
            return Err(format!("after the root element: {:?}", reader.rest));
        }
        Ok(root)
    }

    struct Reader<'a> {
        rest: &'a str,
    }

    impl Reader<'_> {
        fn element(&mut self) -> Result<Element, String> {
            self.rest = self.rest.strip_prefix('<').ok_or("expected <")?;
            let name = self.name()?;
            let mut element = Element {
                name,
                attrs: Vec::new(),
                children: Vec::new(),
                text: String::new(),
            };
            loop {
                self.rest = self.rest.trim_start();
                if let Some(rest) = self.rest.strip_prefix("/>") {
                    self.rest = rest;
                    return Ok(element);
                }
                if let Some(rest) = self.rest.strip_prefix('>') {
                    self.rest = rest;
                    break;
                }
                let attr = self.name()?;
                self.rest = self
                    .rest
                    .strip_prefix("=\"")
                    .ok_or_else(|| format!("attribute {attr} not quoted"))?;
                let end = self.rest.find('"').ok_or("unterminated attribute")?;
                let value = unescape(&self.rest[..end])?;
                self.rest = &self.rest[end + 1..];
                element.attrs.push((attr, value));
            }
            loop {
                let end = self.rest.find('<').ok_or("unterminated element")?;
                element.text.push_str(&unescape(&self.rest[..end])?);
                self.rest = &self.rest[end..];
                if let Some(rest) = self.rest.strip_prefix("</") {
                    let close = rest.find('>').ok_or("unterminated end tag")?;
                    if rest[..close] != element.name {
                        return Err(format!("</{}> closes <{}>", &rest[..close], element.name));
                    }
                    self.rest = &rest[close + 1..];
                    return Ok(element);
                }
                element.children.push(self.element()?);
            }
        }

        fn name(&mut self) -> Result<String, String> {
            let end = self
                .rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-' || c == ':'))
                .unwrap_or(self.rest.len());
            if end == 0 {
                return Err(format!(
                    "expected a name at {:?}",
                    &self.rest[..self.rest.len().min(20)]
                ));
            }
            let name = self.rest[..end].to_string();
            self.rest = &self.rest[end..];
            Ok(name)
        }
    }

    fn unescape(text: &str) -> Result<String, String> {
        if text.contains('<') {
            return Err(format!("raw < in {text:?}"));
        }
        let mut out = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('&') {
            out.push_str(&rest[..at]);
            let end = rest[at..].find(';').ok_or("unterminated entity")? + at;
            let entity = &rest[at + 1..end];
            let c = match entity {
                "amp" => '&',
                "lt" => '<',
                "gt" => '>',
                "quot" => '"',
                "apos" => '\'',
                _ => entity
                    .strip_prefix('#')
                    .and_then(|n| n.parse::<u32>().ok())
                    .and_then(char::from_u32)
                    .ok_or_else(|| format!("unknown entity &{entity};"))?,
            };
            out.push(c);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// The ProfileTest the README shows passes against the examples.
#[test]
fn the_readme_example_passes() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let block = readme
        .split("```yaml\n")
        .find(|b| b.starts_with("apiVersion: eci-profile.io/v1alpha1"))
        .and_then(|b| b.split("```").next())
        .expect("the README's ProfileTest");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("readme.yaml");
    let examples = format!("{}/", example(""));
    std::fs::write(&path, block.replace("../", &examples)).unwrap();
    passes(&path, 3);
}

/// The schema's skip reasons and policies are those the decision gives.
#[test]
fn the_schema_names_every_skip_reason_and_policy() {
    use eci_profile::decision::SkipReason;
    use eci_profile::profile::SchedulingPolicy;
    // Fails to compile when a reason is added: add it below and to the schema.
    fn _every(reason: &SkipReason) {
        match reason {
            SkipReason::NotPodCreate
            | SkipReason::UnreadableObject(_)
            | SkipReason::ExcludedNamespace(_)
            | SkipReason::ExcludedByLabel
            | SkipReason::NotSelected
            | SkipReason::DaemonSet(_)
            | SkipReason::MirrorPod
            | SkipReason::HostNetwork
            | SkipReason::HostPid
            | SkipReason::HostIpc
            | SkipReason::HostPath { .. }
            | SkipReason::HostPort { .. }
            | SkipReason::NodeName(_)
            | SkipReason::NodeSelectorConflict { .. }
            | SkipReason::NormalNodeOnly(_)
            | SkipReason::OverBudget { .. } => {}
        }
    }
    let s = String::new;
    let reasons = [
        SkipReason::NotPodCreate,
        SkipReason::UnreadableObject(s()),
        SkipReason::ExcludedNamespace(s()),
        SkipReason::ExcludedByLabel,
        SkipReason::NotSelected,
        SkipReason::DaemonSet(s()),
        SkipReason::MirrorPod,
        SkipReason::HostNetwork,
        SkipReason::HostPid,
        SkipReason::HostIpc,
        SkipReason::HostPath { volume: s() },
        SkipReason::HostPort {
            container: s(),
            port: 0,
        },
        SkipReason::NodeName(s()),
        SkipReason::NodeSelectorConflict {
            key: s(),
            value: s(),
            wanted: s(),
        },
        SkipReason::NormalNodeOnly(s()),
        SkipReason::OverBudget {
            rule: s(),
            namespace: s(),
            usage: s(),
        },
    ];
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("schemas/eci-profile-test.schema.json")).unwrap(),
    )
    .unwrap();
    let expect = &schema["$defs"]["case"]["properties"]["expect"]["properties"];
    let codes: Vec<&str> = reasons.iter().map(SkipReason::code).collect();
    assert_eq!(expect["reason"]["enum"], serde_json::json!(codes));
    let mut policies: Vec<&str> = [
        SchedulingPolicy::VirtualNodeOnly,
        SchedulingPolicy::NormalNodePrefer,
        SchedulingPolicy::Fair,
        SchedulingPolicy::NormalNodeOnly,
    ]
    .iter()
    .map(|p| p.as_str())
    .collect();
    policies.push("none");
    assert_eq!(expect["policy"]["enum"], serde_json::json!(policies));
}

#[test]
fn upstream_selectors_against_workloads_as_kubectl_exports_them() {
    // The open-source eci-profile's Selector examples as the profile, and
    // objects of `kubectl get -A -o yaml` (one List of every kind) as cases.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("upstream.test.yaml");
    let fixtures = root().join("tests/fixtures");
    let fixture = |relative: &str| fixtures.join(relative).display().to_string();
    std::fs::write(
        &path,
        format!(
            r#"apiVersion: eci-profile.io/v1alpha1
kind: ProfileTest
profile: [{vno}, {nnp}, {fair}]
cases:
  - name: the virtual-node-only Selector sends nginx-test-1
    resource: {export}
    select: {{kind: Deployment, name: nginx-test-1}}
    expect:
      outcome: mutated
      rules: [test-virtual-node-only]
      policy: virtualNodeOnly
      annotations: {{k8s.aliyun.com/eci-image-cache: "true"}}
      labels: {{eci-profile.io/virtual-node: "true"}}
      nodeSelector: {{k8s.aliyun.com/vnode: "true"}}
  - name: the normal-node-prefer Selector lets nginx-test-2 overflow
    resource: {export}
    select: {{kind: Deployment, name: nginx-test-2}}
    expect: {{outcome: mutated, rules: [test-normal-node-prefer], policy: normalNodePrefer, nodeSelector: {{k8s.aliyun.com/vnode: null}}}}
  - name: a Deployment no Selector names stays
    resource: {export}
    select: {{kind: Deployment, name: web}}
    expect: {{outcome: skipped, reason: not-selected}}
"#,
            vno = fixture("upstream-selectors/virtual-node-only.yaml"),
            nnp = fixture("upstream-selectors/normal-node-prefer.yaml"),
            fair = fixture("upstream-selectors/fair.yaml"),
            export = fixture("diff/cluster.yaml"),
        ),
    )
    .unwrap();
    passes(&path, 3);
}
