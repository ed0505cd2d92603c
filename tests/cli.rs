//! The `eci-profile` command line, run as a user runs it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::cli::{bin, run, run_stdin, stderr, stdout};
use common::{admission_fixture, fixture_namespaces, fixture_path, serve_on_loopback};
use eci_profile::decision::Exclusions;
use eci_profile::profile::Profile;
use eci_profile::review::{self, Context};
use serde_json::Value;

fn example(relative: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("manifests/examples")
        .join(relative)
        .display()
        .to_string()
}

#[test]
fn review_output_is_the_servers_response_byte_for_byte() {
    let fixture = fixture_path("admission/create-labelled-pod-with-everything.json");
    let namespaces = fixture_path("namespaces.yaml");
    let out = run(&[
        "check",
        "--namespaces-file",
        namespaces.to_str().unwrap(),
        "-o",
        "review",
        fixture.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let profile = Profile::embedded_default();
    let ns = fixture_namespaces();
    let context = Context {
        profile: &profile,
        exclusions: &Exclusions::default(),
        namespaces: &ns,
        budgets: &eci_profile::budgets::Unlimited,
    };
    let reviewed = review::review(
        &admission_fixture("create-labelled-pod-with-everything"),
        context,
    )
    .unwrap();
    let mut expected_line = reviewed.response;
    expected_line.push(b'\n');
    assert_eq!(out.stdout, expected_line);
}

#[test]
fn explain_walkthrough_on_examples() {
    let out = run(&[
        "check",
        "--profile",
        &example("eci-profile.yaml"),
        "--namespaces-file",
        &example("namespaces.yaml"),
        &example("pods/report-job.yaml"),
        &example("pods/node-exporter.yaml"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("MUTATED"), "{text}");
    assert!(
        text.contains(
            "selected:  batch-spot (priority 10, policy virtualNodeOnly); batch-overflow"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "add /metadata/annotations/k8s.aliyun.com~1eci-spot-strategy \"SpotAsPriceGo\""
        ),
        "{text}"
    );
    assert!(
        text.contains("SKIPPED: left unchanged: it is owned by DaemonSet node-exporter"),
        "{text}"
    );
    assert!(
        text.contains("warning:   eci-profile: pod not sent to a virtual node"),
        "{text}"
    );
}

#[test]
fn pod_output_is_the_patched_pod_in_the_input_format() {
    let out = run(&[
        "check",
        "--profile",
        &example("eci-profile.yaml"),
        "-o",
        "pod",
        &example("pods/api-pod.yaml"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pod: Value = serde_saphyr::from_str(&stdout(&out)).expect("YAML out for YAML in");
    assert_eq!(pod["spec"]["nodeSelector"]["k8s.aliyun.com/vnode"], "true");
    // The user's own value is kept.
    assert_eq!(
        pod["metadata"]["annotations"]["k8s.aliyun.com/eci-use-specs"],
        "4-8Gi"
    );
    assert_eq!(
        pod["metadata"]["annotations"]["eci-profile.io/selectors"],
        "eci-pods,image-cache"
    );
    let typed: Result<k8s_openapi::api::core::v1::Pod, _> = serde_json::from_value(pod);
    assert!(typed.is_ok(), "{typed:?}");
}

#[test]
fn patch_output_from_stdin_with_several_documents() {
    let input = b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  labels:\n    eci: \"true\"\nspec:\n  containers: [{name: c, image: x}]\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: b\nspec:\n  containers: [{name: c, image: x}]\n";
    let out = run_stdin(&["check", "-o", "patch"], input);
    assert!(out.status.success(), "{}", stderr(&out));
    let patches: Vec<Value> = serde_json::Deserializer::from_str(&stdout(&out))
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(patches.len(), 2);
    assert!(!patches[0].as_array().unwrap().is_empty());
    assert_eq!(patches[1], serde_json::json!([]));
}

#[test]
fn namespace_flag_places_manifests() {
    let input = b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\nspec:\n  containers: [{name: c, image: x}]\n";
    let ns = fixture_path("namespaces.yaml");
    let out = run_stdin(
        &[
            "check",
            "--namespaces-file",
            ns.to_str().unwrap(),
            "--namespace",
            "fx-eci",
            "-o",
            "patch",
        ],
        input,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("namespace-label-alibabacloud-eci"),
        "{}",
        stdout(&out)
    );
    // The same pod in an excluded namespace is left alone.
    let out = run_stdin(
        &[
            "check",
            "--namespaces-file",
            ns.to_str().unwrap(),
            "--namespace",
            "fx-eci",
            "--exclude-namespace",
            "fx-eci",
        ],
        input,
    );
    assert!(
        stdout(&out).contains("SKIPPED: left unchanged: namespace fx-eci is excluded"),
        "{}",
        stdout(&out)
    );
}

fn write_temp(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("eci-profile-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("profile.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

const BROKEN: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: eci-profile\ndata:\n  selectors: |\n    [{\"name\": \"a\", \"objectSelector\": {\"matchLabels\": {\"eci\": \"true\"}},\n      \"policy\": \"sometimes\"}]\n";

#[test]
fn validate_reports_errors_with_positions_and_fails() {
    let path = write_temp("validate", BROKEN);
    let out = run(&["validate", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let expected = format!(
        "{}:8:17: error: selector \"a\": selectors[0].policy: unknown policy \"sometimes\"",
        path.display()
    );
    assert!(text.contains(&expected), "{text}\nexpected: {expected}");
    assert!(text.contains("invalid: 1 error, 0 warnings"), "{text}");
}

#[test]
fn validate_accepts_the_examples_and_mounted_directories() {
    let out = run(&[
        "validate",
        &example("eci-profile.yaml"),
        &example("eci-profile-virtual-kubelet.yaml"),
    ]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("info: vpcId: ignored by the webhook"));
    // A mounted ConfigMap: one file per key, kubelet's dot entries ignored.
    let dir = std::env::temp_dir().join(format!("eci-profile-cli-{}-mounted", std::process::id()));
    std::fs::create_dir_all(dir.join("..2026_11_22")).unwrap();
    std::fs::write(
        dir.join("selectors"),
        "[{\"name\": \"x\", \"objectSelector\": {}}]",
    )
    .unwrap();
    std::fs::write(dir.join("..2026_11_22/selectors"), "not json").unwrap();
    let out = run(&["validate", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("valid: 1 selector, 1 warning"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn check_refuses_an_invalid_profile() {
    let path = write_temp("check", BROKEN);
    let out = run(&[
        "check",
        "--profile",
        path.to_str().unwrap(),
        &example("pods/api-pod.yaml"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("unknown policy \"sometimes\""),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn unreadable_input_is_an_error() {
    let out = run_stdin(
        &["check"],
        b"{\"kind\": \"AdmissionReview\", \"apiVersion\": \"admission.k8s.io/v1\"}",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no request"), "{}", stderr(&out));
    let out = run(&["check", "/does/not/exist.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot read"), "{}", stderr(&out));
}

/// `serve` as the README runs it: in a fresh directory it generates a
/// development CA and serving pair into `certs/`, serves, reads flags from
/// the environment, and exits 0 on SIGTERM.
#[test]
fn serve_starts_on_a_fresh_machine_and_stops_on_sigterm() {
    use std::io::{BufRead as _, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = bin()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("ECI_PROFILE_ADMIN_LISTEN", "127.0.0.1:0")
        .env("ECI_PROFILE_SHUTDOWN_DELAY", "0s")
        .env("ECI_PROFILE_LOG_FORMAT", "json")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let serving = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|line| line.contains("\"serving\""))
        .expect("the server logs that it is serving");
    let log: Value = serde_json::from_str(&serving).expect("JSON logs");
    let webhook: std::net::SocketAddr = log["webhook"].as_str().unwrap().parse().unwrap();
    assert_ne!(webhook.port(), 0);
    use std::os::unix::fs::PermissionsExt as _;
    let key_mode = std::fs::metadata(dir.path().join("certs/tls.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    assert!(dir.path().join("certs/ca.crt").exists());
    // TLS answers on the port.
    assert!(std::net::TcpStream::connect(webhook).is_ok());
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("\"stopped\"")), "{rest:?}");
}

#[test]
fn serve_refuses_an_invalid_profile_at_start() {
    let path = write_temp("serve", BROKEN);
    let out = serve_on_loopback(Path::new(env!("CARGO_BIN_EXE_eci-profile")))
        .env("ECI_PROFILE_PROFILE_FILE", &path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("unknown policy \"sometimes\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn serve_refuses_a_body_budget_that_cannot_hold_one_largest_body() {
    let out = serve_on_loopback(Path::new(env!("CARGO_BIN_EXE_eci-profile")))
        .env("ECI_PROFILE_MAX_BUFFERED_BYTES", "4194304")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "--max-buffered-bytes 4194304 cannot hold a body of --max-body-bytes 4194304"
        ),
        "{}",
        stderr(&out)
    );
    let out = bin()
        .args(["serve", "--max-large-decisions", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn certs_command_writes_a_cert_manager_style_secret() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("tls");
    let out = run(&[
        "certs",
        "--out",
        out_dir.to_str().unwrap(),
        "--dns",
        "eci-profile.eci-profile-system.svc",
        "--ip",
        "10.0.0.1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    for file in ["ca.crt", "tls.crt", "tls.key"] {
        assert!(out_dir.join(file).exists(), "{file}");
    }
    eci_profile::tls::install_default_provider();
    let pair =
        eci_profile::tls::load_pair(&out_dir.join("tls.crt"), &out_dir.join("tls.key")).unwrap();
    assert!(pair.expiry.is_some());
    let out = run(&["certs", "--out", out_dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn workloads_become_the_pods_their_controllers_create() {
    let out = run(&[
        "check",
        "-o",
        "pod",
        &example("pods/report-job.yaml"),
        &example("pods/node-exporter.yaml"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pods: Vec<Value> = serde_saphyr::from_multiple(&stdout(&out)).unwrap();
    assert_eq!(pods.len(), 2);
    assert_eq!(pods[0]["metadata"]["generateName"], "nightly-report-");
    assert_eq!(pods[0]["metadata"]["namespace"], "batch");
    assert_eq!(
        pods[0]["metadata"]["ownerReferences"][0]["apiVersion"],
        "batch/v1"
    );
    assert_eq!(pods[0]["metadata"]["ownerReferences"][0]["kind"], "Job");
    assert_eq!(
        pods[1]["metadata"]["ownerReferences"][0]["kind"],
        "DaemonSet"
    );
    assert_eq!(pods[1]["spec"]["hostNetwork"], true);
}

/// A ConfigMap, a Selector, a Deployment and a `kind: List` of two more
/// Selectors, in one file as a GitOps repository holds them.
const MIXED: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: eci-profile
  namespace: kube-system
data:
  selectors: |
    [{"name": "batch", "namespaceSelector": {"matchLabels": {"team": "batch"}}}]
---
apiVersion: eci.aliyun.com/v1beta1
kind: Selector
metadata:
  name: web
spec:
  objectLabels:
    matchLabels:
      app: web
  policy:
    fair: {}
  priority: 3
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
---
apiVersion: v1
kind: List
items:
  - apiVersion: eci.aliyun.com/v1
    kind: Selector
    metadata:
      name: db-stays-home
    spec:
      objectLabels: {matchLabels: {app: db}}
      policy: {normalNodeOnly: {}}
      priority: 10
  - apiVersion: eci.aliyun.com/v1
    kind: Selector
    metadata:
      name: ratios
    spec:
      objectLabels: {matchLabels: {app: api}}
      policy: {normalNodePrefer: {cpuRatio: 2}}
"#;

#[test]
fn validate_reads_selectors_next_to_the_configmap() {
    let path = write_temp("mixed", MIXED);
    let out = run(&["validate", path.to_str().unwrap()]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("valid: 4 selectors, 1 warning"), "{text}");
    let file = path.display();
    assert!(
        text.contains(&format!("{file}:44:45: warning: selector \"ratios\": spec.policy.normalNodePrefer.cpuRatio: is accepted and ignored")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{file}:22:1: info: kind: kind Deployment ignored: not a profile object"
        )),
        "{text}"
    );
    // A Selector named like a ConfigMap rule, and a Selector with an error.
    let clash = MIXED
        .replace("name: web\nspec", "name: batch\nspec")
        .replace(
            "app: db}}",
            "app: db}, matchExpressions: [{key: tier, operator: In}]}",
        );
    let path = write_temp("clash", &clash);
    let out = run(&["validate", path.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("{file}:13:9: error: selector \"batch\": metadata.name: selector \"batch\" is also a rule of the profile ConfigMap", file = path.display())),
        "{text}"
    );
    assert!(
        text.contains("error: selector \"db-stays-home\": spec.objectLabels.matchExpressions[0].values: must be non-empty when the operator is In"),
        "{text}"
    );
    assert!(text.contains("invalid: 2 errors, 1 warning"), "{text}");
}

#[test]
fn check_decides_with_selectors_from_the_profile_file() {
    let path = write_temp("mixed-check", MIXED);
    let pod = |app: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {app}\n  namespace: default\n  labels:\n    app: {app}\nspec:\n  containers:\n    - name: c\n      image: nginx\n"
        )
    };
    let out = run_stdin(
        &["check", "--profile", path.to_str().unwrap(), "-"],
        format!("{}---\n{}", pod("web"), pod("db")).as_bytes(),
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(
        text.contains("selected:  web (priority 3, policy fair)"),
        "{text}"
    );
    assert!(
        text.contains("SKIPPED: left unchanged: rule db-stays-home (policy normalNodeOnly) keeps it off virtual nodes"),
        "{text}"
    );
}

/// The open-source eci-profile's `examples/fair.yaml`, verbatim: a v1beta1
/// Selector and the Deployment it is for.
const UPSTREAM_FAIR_EXAMPLE: &str = r#"apiVersion: eci.aliyun.com/v1beta1
kind: Selector
metadata:
  name: test-fair
spec:
  objectLabels:
    matchLabels:
      app: nginx-test-3
  effect:
    annotations:
      k8s.aliyun.com/eci-image-cache: "true" # 注入annotation，开启自动镜像缓存
  policy:
    fair: {}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx-test-3
spec:
  selector:
    matchLabels:
      app: nginx-test-3
  replicas: 1
  template:
    metadata:
      labels:
        app: nginx-test-3
    spec:
      containers:
        - name: nginx
          image: registry-vpc.cn-shanghai.aliyuncs.com/eci_open/nginx:1.14.2
          ports:
            - containerPort: 80
          resources:
            requests:
              cpu: 2
              memory: 4"#;

#[test]
fn the_open_source_eci_profiles_examples_are_read_verbatim() {
    for name in ["fair", "normal-node-prefer", "virtual-node-only", "eip"] {
        let path = fixture_path(&format!("upstream-selectors/{name}.yaml"));
        let out = run(&["validate", path.to_str().unwrap()]);
        assert!(out.status.success(), "{name}: {}", stdout(&out));
        assert!(
            stdout(&out).ends_with("valid: 1 selector, 0 warnings\n"),
            "{name}: {}",
            stdout(&out)
        );
    }
    let path = fixture_path("upstream-selectors/pod-deletion-cost.yaml");
    let out = run(&["validate", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains(&format!(
            "{}:11:51: error: selector \"test-fair\": spec.effect.annotations[\"controller.kubernetes.io/pod-deletion-cost\"]: must be a string, found a number (quote it)",
            path.display()
        )),
        "{}",
        stdout(&out)
    );
    // The example file with its Deployment: the Selector is read, and
    // decides for the Deployment's pods.
    let path = write_temp("upstream-fair", UPSTREAM_FAIR_EXAMPLE);
    let out = run(&["validate", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("info: kind: kind Deployment ignored: not a profile object"),
        "{}",
        stdout(&out)
    );
    let out = run(&[
        "check",
        "--profile",
        path.to_str().unwrap(),
        "-o",
        "patch",
        path.to_str().unwrap(),
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains("k8s.aliyun.com~1eci-image-cache"), "{text}");
    assert!(text.contains("\"value\": \"test-fair\""), "{text}");
    assert!(
        !text.contains("nodeSelector"),
        "fair: tolerations only: {text}"
    );
}

/// A ConfigMap rule with a budget for each namespace it selects.
const BUDGETED: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: eci-profile
  namespace: kube-system
data:
  selectors: |
    [{"name": "team-cap", "objectSelector": {"matchLabels": {"eci": "true"}},
      "limits": {"pods": 40, "requests.cpu": "64", "requests.memory": "64Gi"}}]
"#;

/// A pod of namespace team-a the budgeted rule selects, asking for `cpu`.
fn budgeted_pod(name: &str, cpu: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: team-a\n  labels:\n    eci: \"true\"\nspec:\n  containers:\n    - name: c\n      image: nginx\n      resources:\n        requests:\n          cpu: \"{cpu}\"\n          memory: 4Gi\n"
    )
}

/// `check --profile BUDGETED [--usage-file usage] pods...`, in explain
/// form; `test` names the profile's temporary directory.
fn check_budgeted(test: &str, usage: Option<&Path>, pods: &[&str]) -> Output {
    let profile = write_temp(&format!("budgeted-{test}"), BUDGETED);
    let mut args = vec!["check", "--profile", profile.to_str().unwrap()];
    if let Some(usage) = usage {
        args.extend(["--usage-file", usage.to_str().unwrap()]);
    }
    run_stdin(&args, pods.join("---\n").as_bytes())
}

/// [`check_budgeted`], which must succeed: what it prints.
fn check_budgeted_passes(test: &str, usage: Option<&Path>, pods: &[&str]) -> String {
    let out = check_budgeted(test, usage, pods);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    text
}

#[test]
fn check_holds_pods_to_budgets_with_the_usage_file() {
    let pod = budgeted_pod("web", "2");
    // The namespace is full: the pod stays off virtual nodes, with the warning.
    let full = write_temp(
        "usage-full",
        "team-a:\n  pods: 40\n  requests.cpu: \"10\"\n  requests.memory: 20Gi\n",
    );
    let text = check_budgeted_passes("full", Some(&full), &[&pod]);
    assert!(
        text.contains("result:    SKIPPED: left unchanged: budget of rule team-cap in namespace team-a: 40/40 pods"),
        "{text}"
    );
    assert!(
        text.contains("warning:   eci-profile: pod not sent to a virtual node: budget of rule team-cap in namespace team-a: 40/40 pods"),
        "{text}"
    );
    assert!(
        text.contains("budget:    rule team-cap (each namespace it selects): 40/40 pods, 10/64 requests.cpu, 20Gi/64Gi requests.memory (namespace team-a)"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "in use from {}; the pod adds 1 pod, 2 requests.cpu, 4Gi requests.memory",
            full.display()
        )),
        "{text}"
    );
    assert!(text.contains("patch:     none"), "{text}");
    // Room left (bare cpu and memory are requests): sent.
    let below = write_temp(
        "usage-below",
        "team-a: {pods: 12, cpu: 10, memory: 20Gi}\nteam-b: {pods: 40}\n",
    );
    let text = check_budgeted_passes("below", Some(&below), &[&pod]);
    assert!(text.contains("MUTATED: sent to a virtual node"), "{text}");
    assert!(
        text.contains("budget:    rule team-cap (each namespace it selects): 12/40 pods, 10/64 requests.cpu, 20Gi/64Gi requests.memory (namespace team-a)"),
        "{text}"
    );
    assert!(!text.contains("warning:"), "{text}");
}

#[test]
fn check_holds_pods_to_budgets_without_usage_and_each_pod_on_its_own() {
    // Nothing in use: only a pod larger than the budget is over it.
    let text = check_budgeted_passes(
        "none",
        None,
        &[&budgeted_pod("small", "2"), &budgeted_pod("huge", "65")],
    );
    let (small, huge) = text.split_once("\n\n").expect("two pods");
    assert!(small.contains("MUTATED"), "{small}");
    assert!(
        small.contains("0/40 pods, 0/64 requests.cpu, 0/64Gi requests.memory (namespace team-a)"),
        "{small}"
    );
    assert!(
        small.contains("nothing in use (no --usage-file); the pod adds 1 pod"),
        "{small}"
    );
    assert!(
        huge.contains(
            "budget of rule team-cap in namespace team-a: 0/64 requests.cpu (the pod requests 65)"
        ),
        "{huge}"
    );
    // One place left: each pod of a run is checked against the file alone,
    // so both fit.
    let usage = write_temp("usage-one-left", r#"{"team-a": {"pods": 39}}"#);
    let text = check_budgeted_passes(
        "one-left",
        Some(&usage),
        &[&budgeted_pod("a", "1"), &budgeted_pod("b", "1")],
    );
    assert_eq!(text.matches("MUTATED").count(), 2, "{text}");
    assert_eq!(text.matches("39/40 pods").count(), 2, "{text}");
}

#[test]
fn check_counts_the_live_pods_of_a_pod_list() {
    let item = |name: &str, phase: &str| {
        format!(
            r#"{{"apiVersion": "v1", "kind": "Pod",
                "metadata": {{"name": "{name}", "namespace": "team-a", "uid": "uid-{name}",
                             "labels": {{"eci-profile.io/virtual-node": "true"}}}},
                "spec": {{"nodeName": "virtual-kubelet-cn-hangzhou-h",
                          "containers": [{{"name": "c", "resources": {{"requests": {{"cpu": "30", "memory": "1Gi"}}}}}}]}},
                "status": {{"phase": "{phase}"}}}}"#
        )
    };
    let list = format!(
        r#"{{"apiVersion": "v1", "kind": "List", "metadata": {{"resourceVersion": ""}},
            "items": [{}, {}, {}]}}"#,
        item("a", "Running"),
        item("b", "Pending"),
        item("done", "Succeeded")
    );
    let usage = write_temp("usage-pod-list", &list);
    let text = check_budgeted_passes(
        "pod-list",
        Some(&usage),
        &[&budgeted_pod("fits", "4"), &budgeted_pod("too-big", "5")],
    );
    let (fits, too_big) = text.split_once("\n\n").expect("two pods");
    assert!(fits.contains("MUTATED"), "{fits}");
    assert!(
        fits.contains("2/40 pods, 60/64 requests.cpu, 2Gi/64Gi requests.memory (namespace team-a)"),
        "{fits}"
    );
    assert!(
        too_big.contains("SKIPPED: left unchanged: budget of rule team-cap in namespace team-a: 60/64 requests.cpu (the pod requests 5)"),
        "{too_big}"
    );
}

#[test]
fn a_malformed_usage_file_is_an_error() {
    let pod = budgeted_pod("web", "2");
    let usage = write_temp("usage-malformed", "team-a:\n  pods: 3\n  pod: 1\n");
    let out = check_budgeted("malformed", Some(&usage), &[&pod]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "{}: namespace team-a, key pod: not a budget resource",
            usage.display()
        )),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());
    let usage = write_temp("usage-not-a-quantity", "team-a: {requests.memory: lots}\n");
    let out = check_budgeted("not-a-quantity", Some(&usage), &[&pod]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "namespace team-a, key requests.memory: not a quantity of 0 or more: \"lots\""
        ),
        "{}",
        stderr(&out)
    );
    let out = check_budgeted("missing", Some(Path::new("/does/not/exist.yaml")), &[&pod]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("/does/not/exist.yaml: cannot read"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn version_names_the_build() {
    let out = run(&["version"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!("eci-profile {}", env!("CARGO_PKG_VERSION"))
    );
    for (line, key) in lines[1..]
        .iter()
        .zip(["revision: ", "build date: ", "rustc: "])
    {
        let value = line.strip_prefix(key).unwrap_or_else(|| panic!("{text}"));
        assert!(!value.is_empty(), "{text}");
    }
    assert!(
        lines[3].starts_with("rustc: rustc ") || lines[3] == "rustc: unknown",
        "{text}"
    );
    let date = lines[2].trim_start_matches("build date: ");
    assert!(
        date == "unknown" || (date.len() == 10 && date.as_bytes()[4] == b'-'),
        "{text}"
    );
    // --version says the same.
    let out = run(&["--version"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), text);
}

#[test]
fn completion_scripts_know_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completion", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = String::from_utf8(out.stdout).unwrap();
        for word in ["serve", "validate", "log-level", "namespaces-file"] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
    }
    let out = run(&["completion", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}

/// `serve`'s start-up errors name the flag to change.
#[test]
fn serve_errors_name_the_flag_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let out = bin()
        .args([
            "serve",
            "--listen",
            &address,
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .current_dir(dir.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(
        message.contains(&format!("cannot listen on {address}: "))
            && message.contains("(--listen)"),
        "{message}"
    );

    let out = serve_on_loopback(Path::new(env!("CARGO_BIN_EXE_eci-profile")))
        .args(["--namespaces-file", "/does/not/exist.yaml"])
        .current_dir(dir.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(
        message.contains("/does/not/exist.yaml: cannot read")
            && message.contains("(--namespaces-file)"),
        "{message}"
    );

    let out = serve_on_loopback(Path::new(env!("CARGO_BIN_EXE_eci-profile")))
        .args(["--log-level", "verbose"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("(--log-level)"), "{}", stderr(&out));

    let missing = dir.path().join("nothing.yaml");
    let out = serve_on_loopback(Path::new(env!("CARGO_BIN_EXE_eci-profile")))
        .arg("--profile-file")
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("(--profile-file)"),
        "{}",
        stderr(&out)
    );
}

/// A ConfigMap whose only findings are warnings: a misspelt key and a rule
/// that selects every pod on purpose.
const WARNINGS_ONLY: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: eci-profile\ndata:\n  vswitchIds: vsw-1\n  selectors: |\n    [{\"name\": \"all\", \"objectSelector\": {}}]\n";

#[test]
fn validate_strict_fails_on_warnings() {
    let path = write_temp("strict-warnings", WARNINGS_ONLY);
    let file = path.to_str().unwrap();
    let out = run(&["validate", file]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains(
            ":6:3: warning: vswitchIds: unknown key, ignored; did you mean \"vSwitchIds\"?"
        ),
        "{text}"
    );
    assert!(text.contains(": valid: 1 selector, 2 warnings"), "{text}");
    let out = run(&["validate", "--strict", file]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(": invalid under --strict: 2 warnings"),
        "{}",
        stdout(&out)
    );
    // Without warnings, --strict passes.
    let out = run(&["validate", "--strict", &example("eci-profile.yaml")]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn validate_refuses_a_selector_left_empty_by_a_typo() {
    let profile = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: eci-profile\ndata:\n  selectors: |\n    [{\"name\": \"x\", \"objectSelector\": {\"matchLabel\": {\"a\": \"b\"}}}]\n";
    let path = write_temp("strict-typo", profile);
    let out = run(&["validate", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains(":7:39: error: selector \"x\": selectors[0].objectSelector.matchLabel: unknown field: without it the selector is empty and matches everything (known: matchLabels, matchExpressions); did you mean \"matchLabels\"?"),
        "{text}"
    );
    assert!(!text.contains("selects every pod"), "{text}");
}

#[test]
fn validate_json_lists_every_finding() {
    let warnings = write_temp("json-warnings", WARNINGS_ONLY);
    let broken = write_temp("json-broken", BROKEN);
    let out = run(&[
        "validate",
        "-o",
        "json",
        warnings.to_str().unwrap(),
        broken.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let doc: Value = serde_json::from_str(&stdout(&out)).expect("one JSON document");
    assert_eq!(doc["errors"], 1);
    assert_eq!(doc["warnings"], 2);
    assert_eq!(doc["valid"], false);
    let files = doc["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(files[0]["file"], warnings.to_str().unwrap());
    assert_eq!(files[0]["valid"], true);
    assert_eq!(files[0]["rules"], 1);
    let typo = files[0]["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["field"] == "vswitchIds")
        .expect("the misspelt key");
    assert_eq!(
        typo,
        &serde_json::json!({
            "file": warnings.to_str().unwrap(), "line": 6, "column": 3,
            "severity": "warning", "rule": null, "field": "vswitchIds",
            "message": "unknown key, ignored; did you mean \"vSwitchIds\"?",
            "suggestion": "vSwitchIds",
        })
    );
    assert_eq!(files[1]["valid"], false);
    assert_eq!(files[1]["rules"], Value::Null);
    let error = &files[1]["diagnostics"][0];
    assert_eq!(
        (
            &error["severity"],
            &error["rule"],
            &error["field"],
            &error["line"]
        ),
        (
            &Value::from("error"),
            &Value::from("a"),
            &Value::from("selectors[0].policy"),
            &Value::from(8)
        )
    );
    // --strict decides "valid" and the exit code the same way.
    let out = run(&[
        "validate",
        "--strict",
        "-o",
        "json",
        warnings.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        (&doc["valid"], &doc["files"][0]["valid"]),
        (&Value::Bool(false), &Value::Bool(false))
    );
    let out = run(&["validate", "-o", "json", warnings.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn validate_usage_errors_exit_2() {
    for args in [
        &["validate"][..],
        &["validate", "-o", "yaml", "x.yaml"],
        &["validate", "--stricter", "x.yaml"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{args:?}");
    }
    // An unreadable file is a finding, not a usage error.
    let out = run(&["validate", "/nonexistent/profile.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let help = stdout(&run(&["validate", "--help"]));
    assert!(help.contains("Exit status: 0 every file valid; 1 an error (with --strict, also a warning) or an unreadable file; 2 a usage error."), "{help}");
}

#[test]
fn a_reader_that_stops_early_is_not_a_failure() {
    // `check ... | head -1`: the pipe is closed before the 200 explanations
    // (over 64 KiB, more than the pipe holds) are written.
    let pod = example("pods/web-deployment.yaml");
    let mut args = vec!["check", "--profile"];
    let profile = example("eci-profile.yaml");
    args.push(&profile);
    args.extend(std::iter::repeat_n(pod.as_str(), 200));
    let mut child = bin()
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn check_takes_namespace_labels_from_namespace_objects_in_its_input() {
    // A `kubectl get -A -o yaml` export holds the namespaces next to the
    // workloads: fx-eci's label sends its Deployment frontend.
    let export = fixture_path("diff/cluster.yaml").display().to_string();
    let profile = example("eci-profile.yaml");
    let out = run(&["check", "--profile", &profile, &export]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let frontend = text
        .split("\n\n")
        .find(|block| block.contains("Deployment fx-eci/frontend"))
        .unwrap();
    assert!(
        frontend.contains("result:    MUTATED") && frontend.contains("eci-namespaces"),
        "{frontend}"
    );
    assert!(!text.contains("labels unknown"), "{text}");
    assert!(!stderr(&out).contains("Namespace"), "{}", stderr(&out));

    // --namespaces-file wins over the input's Namespace objects.
    let dir = tempfile::tempdir().unwrap();
    let relabelled = dir.path().join("ns.yaml");
    std::fs::write(
        &relabelled,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: fx-eci, labels: {kubernetes.io/metadata.name: fx-eci}}\n",
    )
    .unwrap();
    let out = run(&[
        "check",
        "--profile",
        &profile,
        "--namespaces-file",
        relabelled.to_str().unwrap(),
        &export,
    ]);
    let text = stdout(&out);
    let frontend = text
        .split("\n\n")
        .find(|block| block.contains("Deployment fx-eci/frontend"))
        .unwrap();
    assert!(frontend.contains("result:    SKIPPED"), "{frontend}");
}
