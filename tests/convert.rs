//! `eci-profile convert`, run as a user runs it: what it prints reads back as
//! a profile that decides as the one converted, rule for rule and patch for
//! patch.

mod common;

use std::path::Path;

use common::cli::{repo, run, stderr};
use eci_profile::profile::{self, Profile, Rule, SchedulingPolicy};
use eci_profile::selector::Selector;
use eci_profile::sources::file::read_profile;
use tempfile::TempDir;

fn upstream(name: &str) -> String {
    repo(&format!("tests/fixtures/upstream-selectors/{name}.yaml"))
}

/// Runs `convert` with `args`, expecting success; writes what it prints to
/// `dir/out` and returns that path and the warnings.
fn convert(dir: &TempDir, out: &str, args: &[&str]) -> (String, String) {
    let mut all = vec!["convert"];
    all.extend(args);
    let o = run(&all);
    assert!(o.status.success(), "{all:?}: {}", stderr(&o));
    let path = dir.path().join(out);
    std::fs::write(&path, &o.stdout).unwrap();
    (path.display().to_string(), stderr(&o))
}

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

/// The compiled profile of a file, as deciding sees it: the rules in the
/// order they are tried, the virtual node and the cluster-wide annotations.
fn decides(path: &str) -> (Vec<Seen>, Vec<Seen>, String) {
    let (manifests, _) = read_profile(Path::new(path)).unwrap_or_else(|d| panic!("{path}: {d}"));
    let profile: Profile = profile::compile_manifests(&manifests)
        .profile
        .unwrap_or_else(|| panic!("{path} is not a valid profile"));
    let seen = |rules: &[Rule]| {
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
    (
        seen(profile.selecting_rules()),
        seen(profile.effect_only_rules()),
        format!(
            "{:?} {:?}",
            profile.virtual_node(),
            profile.cluster_annotations()
        ),
    )
}

/// `check -o patch` of `pods` with the profile `path`: the bytes printed.
fn patches(path: &str, pods: &[String]) -> Vec<u8> {
    let namespaces = repo("manifests/examples/namespaces.yaml");
    let mut args = vec![
        "check",
        "--profile",
        path,
        "--namespaces-file",
        &namespaces,
        "-o",
        "patch",
    ];
    args.extend(pods.iter().map(String::as_str));
    let o = run(&args);
    assert!(o.status.success(), "{path}: {}", stderr(&o));
    o.stdout
}

fn example_pods() -> Vec<String> {
    let mut pods: Vec<String> = std::fs::read_dir(repo("manifests/examples/pods"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    pods.sort();
    pods
}

/// Pods labelled as the upstream Selectors select them, and one they do not.
fn upstream_pods(dir: &TempDir) -> Vec<String> {
    let pods: String = ["nginx", "nginx-test-1", "nginx-test-2", "nginx-test-3", "other"]
        .iter()
        .map(|app| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {app}\n  namespace: default\n  labels:\n    app: {app}\nspec:\n  containers:\n    - name: c\n      image: nginx\n---\n"
            )
        })
        .collect();
    let path = dir.path().join("pods.yaml");
    std::fs::write(&path, pods).unwrap();
    vec![path.display().to_string()]
}

/// Asserts that every profile of `paths` decides as the first one does.
fn assert_same_decisions(paths: &[&str], pods: &[String]) {
    let expected = decides(paths[0]);
    assert!(!expected.0.is_empty(), "{}: no selecting rules", paths[0]);
    let expected_patches = patches(paths[0], pods);
    assert!(
        expected_patches.windows(2).any(|w| w == b"op"),
        "{}: no pod patched",
        paths[0]
    );
    for path in &paths[1..] {
        assert_eq!(decides(path), expected, "{path} vs {}", paths[0]);
        assert_eq!(
            String::from_utf8_lossy(&patches(path, pods)),
            String::from_utf8_lossy(&expected_patches),
            "{path} vs {}",
            paths[0]
        );
    }
}

#[test]
fn configmaps_to_selectors_and_back_decide_identically() {
    let dir = TempDir::new().unwrap();
    for example in ["eci-profile.yaml", "eci-profile-virtual-kubelet.yaml"] {
        let original = repo(&format!("manifests/examples/{example}"));
        let (selectors, warnings) = convert(
            &dir,
            &format!("selectors-{example}"),
            &["--to", "selectors", "--keep-configmap", &original],
        );
        assert!(!warnings.contains("priority"), "{warnings}");
        let text = std::fs::read_to_string(&selectors).unwrap();
        assert!(text.contains("kind: Selector"), "{text}");
        assert!(!text.contains("selectors:"), "{text}");
        let (configmap, warnings) = convert(
            &dir,
            &format!("configmap-{example}"),
            &["--to", "configmap", &selectors],
        );
        assert_eq!(warnings, "");
        assert_same_decisions(&[&original, &selectors, &configmap], &example_pods());
    }
}

#[test]
fn what_selectors_cannot_carry_is_named_and_kept_on_request() {
    let dir = TempDir::new().unwrap();
    let original = repo("manifests/examples/eci-profile-virtual-kubelet.yaml");
    let (without, warnings) = convert(&dir, "without", &["--to", "selectors", &original]);
    assert!(
        warnings.contains("warning: virtualNode: Selector objects cannot carry it: it stays in the ConfigMap (--keep-configmap prints that ConfigMap without its selectors)"),
        "{warnings}"
    );
    let text = std::fs::read_to_string(&without).unwrap();
    assert!(!text.contains("ConfigMap"), "{text}");
    // Without the ConfigMap, the Selectors send pods to the default VNode.
    assert_ne!(decides(&without).2, decides(&original).2);
    let (kept, warnings) = convert(
        &dir,
        "kept",
        &[
            "--to",
            "selectors",
            "--keep-configmap",
            "--namespace",
            "eci",
            "--name",
            "profile",
            &original,
        ],
    );
    assert!(
        warnings.contains("warning: virtualNode: Selector objects cannot carry it: it stays in the ConfigMap, printed after the Selectors"),
        "{warnings}"
    );
    let text = std::fs::read_to_string(&kept).unwrap();
    assert!(
        text.contains("---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: profile\n  namespace: eci\ndata:\n  virtualNode: |\n"),
        "{text}"
    );
    assert_eq!(decides(&kept), decides(&original));
}

#[test]
fn selectors_to_a_configmap_and_back_decide_identically() {
    let dir = TempDir::new().unwrap();
    let pods = upstream_pods(&dir);
    for inputs in [
        vec![
            upstream("fair"),
            upstream("normal-node-prefer"),
            upstream("virtual-node-only"),
        ],
        vec![upstream("eip")],
    ] {
        let tag = inputs.len();
        let mut args = vec!["--to", "configmap"];
        args.extend(inputs.iter().map(String::as_str));
        let (configmap, warnings) = convert(&dir, &format!("configmap-{tag}"), &args);
        assert_eq!(warnings, "");
        let text = std::fs::read_to_string(&configmap).unwrap();
        assert!(
            text.contains("metadata:\n  name: eci-profile\n  namespace: kube-system\ndata:\n  selectors: |\n    [\n"),
            "{text}"
        );
        let (selectors, warnings) = convert(
            &dir,
            &format!("selectors-{tag}"),
            &["--to", "selectors", &configmap],
        );
        assert_eq!(warnings, "");
        // All the inputs in one file, as `check --profile` takes one.
        let together = dir.path().join(format!("together-{tag}"));
        let texts: Vec<String> = inputs
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        std::fs::write(&together, texts.join("---\n")).unwrap();
        let together = together.display().to_string();
        assert_same_decisions(&[&together, &configmap, &selectors], &pods);
    }
}

#[test]
fn two_selectors_of_one_name_are_refused_without_output() {
    let o = run(&[
        "convert",
        "--to",
        "configmap",
        &upstream("fair"),
        &upstream("eip"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    let text = stderr(&o);
    assert!(
        text.contains("eip.yaml:4:9: error: selector \"test-fair\": metadata.name: a second Selector named \"test-fair\""),
        "{text}"
    );
}

#[test]
fn an_invalid_profile_is_refused_without_output() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("broken.yaml");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: ConfigMap\ndata:\n  selectors: '[{\"name\": \"a\", \"policy\": \"sometimes\"}]'\n",
    )
    .unwrap();
    for to in ["selectors", "configmap"] {
        let o = run(&["convert", "--to", to, path.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1));
        assert!(o.stdout.is_empty());
        assert!(
            stderr(&o).contains(
                "error: selector \"a\": selectors[0].policy: unknown policy \"sometimes\""
            ),
            "{}",
            stderr(&o)
        );
    }
    // Two ConfigMaps in two files are two profiles.
    let example = repo("manifests/examples/eci-profile.yaml");
    let other = repo("manifests/examples/eci-profile-virtual-kubelet.yaml");
    let o = run(&["convert", "--to", "selectors", &example, &other]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("a second ConfigMap"), "{}", stderr(&o));
    // A flag of the other direction is a mistake, not ignored.
    let o = run(&["convert", "--to", "configmap", "--keep-configmap", &example]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("--keep-configmap applies to --to selectors only"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn equal_priorities_that_selectors_would_reorder_are_named() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("profile.yaml");
    std::fs::write(
        &path,
        r#"apiVersion: v1
kind: ConfigMap
data:
  selectors: |
    [{"name": "web-exception", "policy": "normalNodeOnly", "objectSelector": {"matchLabels": {"app": "web", "tier": "db"}}},
     {"name": "web", "objectSelector": {"matchLabels": {"app": "web"}}}]
"#,
    )
    .unwrap();
    let (selectors, warnings) =
        convert(&dir, "out", &["--to", "selectors", path.to_str().unwrap()]);
    assert!(
        warnings.contains(r#"warning: priority: rules "web-exception", "web" (priority 0) are tried in this order, but as Selectors of equal priority they would be tried by name ("web", "web-exception"): give them different priorities to keep the order"#),
        "{warnings}"
    );
    // Not renumbered: the order changes, as the warning says.
    let names: Vec<String> = decides(&selectors).0.into_iter().map(|r| r.0).collect();
    assert_eq!(names, ["web", "web-exception"]);
}

const LIMITED: &str = r#"apiVersion: eci.aliyun.com/v1
kind: Selector
metadata:
  name: team-a-quota
spec:
  namespaceLabels: {matchLabels: {team: a}}
  policy:
    namespaceResourceLimit: {namespace: team-a, limits: {cpu: "8"}}
---
apiVersion: eci.aliyun.com/v1
kind: Selector
metadata:
  name: prefer
spec:
  objectLabels: {matchLabels: {app: web}}
  policy:
    normalNodePrefer: {cpuRatio: 0.5, memoryRatio: 2}
"#;

#[test]
fn namespace_limits_are_refused_and_ratios_dropped() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("selectors.yaml");
    std::fs::write(&path, LIMITED).unwrap();
    let path = path.to_str().unwrap();
    let o = run(&["convert", "--to", "configmap", path]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    let text = stderr(&o);
    assert!(
        text.contains("error: selector \"team-a-quota\": spec.policy.namespaceResourceLimit: the ConfigMap has no such policy: keep this rule a Selector, or convert it to virtualNodeOnly"),
        "{text}"
    );
    let (configmap, warnings) = convert(
        &dir,
        "out",
        &["--to", "configmap", "--drop-unsupported", path],
    );
    for expected in [
        "warning: selector \"team-a-quota\": spec.policy.namespaceResourceLimit: the ConfigMap has no such policy: converted to virtualNodeOnly, as the webhook schedules it today; the limits of namespace \"team-a\" are dropped",
        "warning: selector \"prefer\": spec.policy.normalNodePrefer.cpuRatio: dropped: the ConfigMap's normalNodePrefer has no ratios",
        "warning: selector \"prefer\": spec.policy.normalNodePrefer.memoryRatio: dropped",
    ] {
        assert!(warnings.contains(expected), "{expected}\n{warnings}");
    }
    let text = std::fs::read_to_string(&configmap).unwrap();
    assert!(!text.contains("Ratio"), "{text}");
    let rules = decides(&configmap).0;
    assert_eq!(rules[1].0, "team-a-quota");
    assert_eq!(rules[1].2, SchedulingPolicy::VirtualNodeOnly);
    assert_eq!(decides(&configmap), decides(path));
}
