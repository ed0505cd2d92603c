//! `eci-profile diff`, run as a reviewer runs it: on a `kubectl get -A -o
//! yaml` export (the objects of the captured fixtures), on a 10,000-workload
//! export, and against an in-process fake of the API endpoints it reads,
//! whose every request must be allowed by the documented read-only RBAC.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::cli::{self, stderr, stdout};
use common::export::{kubectl_export, namespaces};
use common::fixture_path;
use serde_json::{Value, json};

fn path(relative: &str) -> String {
    cli::repo(relative)
}

/// `eci-profile diff` with `args`.
fn run(args: &[&str]) -> Output {
    cli::bin().arg("diff").args(args).output().expect("runs")
}

/// [`run`] off the test's runtime, which serves the fake API meanwhile.
async fn run_beside(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || run(&args.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .unwrap()
}

const CURRENT: &str = "manifests/examples/eci-profile.yaml";
const PROPOSED: &str = "tests/fixtures/diff/proposed.yaml";
const EXPORT: &str = "tests/fixtures/diff/cluster.yaml";

/// The proposed ConfigMap and two of the upstream eci-profile Selector examples.
fn proposed() -> Vec<String> {
    let mut args = Vec::new();
    for file in [
        PROPOSED,
        "tests/fixtures/upstream-selectors/virtual-node-only.yaml",
        "tests/fixtures/upstream-selectors/normal-node-prefer.yaml",
    ] {
        args.push("--profile".to_string());
        args.push(path(file));
    }
    args
}

fn with<'a>(head: &'a [String], tail: &[&'a str]) -> Vec<&'a str> {
    head.iter()
        .map(String::as_str)
        .chain(tail.iter().copied())
        .collect()
}

const SUMMARY: &str = "3 workloads move to virtual nodes, 1 moves off virtual nodes, 2 change placement, 1 gets different annotations or labels; 4 unchanged (11 judged)";

#[test]
fn an_export_shows_each_workload_that_changes_by_namespace() {
    let proposed = proposed();
    let (current, export) = (path(CURRENT), path(EXPORT));
    let output = run(&with(&proposed, &["--current", &current, &export]));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    // Grouped by namespace, sorted; only the workloads that change.
    let heads: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("namespace ") || l.starts_with("  ") && !l.starts_with("    "))
        .collect();
    assert_eq!(
        heads,
        [
            "namespace fx-eci",
            "  Deployment frontend: moves off virtual nodes",
            "namespace fx-plain",
            "  Deployment nginx-test-1: moves to virtual nodes",
            "  Deployment nginx-test-2: moves to virtual nodes",
            "  Deployment web: moves to virtual nodes",
            "namespace fx-team",
            "  CronJob nightly-report: changes placement",
            "  Deployment api: gets different annotations or labels",
            "  Job batch-once: changes placement",
        ],
        "{text}"
    );
    assert_eq!(text.lines().last(), Some(SUMMARY));
    // Old and new, and what differs.
    for expected in [
        "    was: real nodes: left alone: no rule selects the pod\n    now: real nodes first, virtual nodes as overflow: mutated by web-overflow, image-cache (policy normalNodePrefer)\n",
        "    now: real nodes: left alone: rule frontend-stays (policy normalNodeOnly) keeps it off virtual nodes\n",
        "    ~ annotation k8s.aliyun.com/eci-use-specs: 2-4Gi → 4-8Gi\n",
        "    + annotation k8s.aliyun.com/eci-image-cache: true\n",
        "    - field /spec/nodeSelector/k8s.aliyun.com~1vnode: \"true\"\n",
        "    now: real or virtual nodes: mutated by batch-spot, image-cache (policy fair)\n",
    ] {
        assert!(text.contains(expected), "{expected}\nnot in\n{text}");
    }
    // The CronJob is judged with the Job labels its pods get (batch-spot
    // selects on batch.kubernetes.io/job-name); what is owned is left to its owner.
    assert!(text.contains("was: virtual nodes: mutated by batch-spot, batch-overflow, image-cache (policy virtualNodeOnly)"));
    assert!(
        stderr(&output)
            .contains("note: not judged: 6 owned by a workload judged instead, 1 Service"),
        "{}",
        stderr(&output)
    );
    // The DaemonSet, the StatefulSet, the bare pod and kube-system's coredns do not change.
    for name in ["node-agent", "db:", "Pod bare", "coredns"] {
        assert!(!text.contains(name), "{name} in\n{text}");
    }
}

#[test]
fn exit_code_says_whether_anything_changes() {
    let proposed = proposed();
    let (current, export) = (path(CURRENT), path(EXPORT));
    let changes = run(&with(
        &proposed,
        &["--current", &current, "--exit-code", &export],
    ));
    assert_eq!(changes.status.code(), Some(1), "{}", stderr(&changes));
    let same = run(&[
        "--profile",
        &current,
        "--current",
        &current,
        "--exit-code",
        &export,
    ]);
    assert_eq!(same.status.code(), Some(0), "{}", stderr(&same));
    assert_eq!(stdout(&same), "no workload changes (11 judged)\n");

    // The export on standard input, as `kubectl get ... -o yaml | eci-profile diff ... -`.
    let mut args = vec!["diff"];
    args.extend(with(&proposed, &["--current", &current, "-"]));
    let piped = cli::run_stdin(&args, &std::fs::read(&export).unwrap());
    assert_eq!(
        stdout(&piped).lines().last(),
        Some(SUMMARY),
        "{}",
        stderr(&piped)
    );
}

#[test]
fn json_output_has_the_summary_the_counts_and_both_verdicts() {
    let proposed = proposed();
    let (current, export) = (path(CURRENT), path(EXPORT));
    let output = run(&with(
        &proposed,
        &["--current", &current, "-o", "json", &export],
    ));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["summary"], SUMMARY);
    assert_eq!(report["judged"], 11);
    assert_eq!(
        report["counts"],
        json!({"to-virtual-nodes": 3, "off-virtual-nodes": 1, "placement": 2, "metadata": 1})
    );
    let web = report["changed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "web")
        .unwrap();
    assert_eq!(web["namespace"], "fx-plain");
    assert_eq!(web["kind"], "Deployment");
    assert_eq!(web["change"], "to-virtual-nodes");
    assert_eq!(web["old"]["outcome"], "skipped");
    assert_eq!(web["old"]["placement"], "real-nodes");
    assert_eq!(web["old"]["reason"], "no rule selects the pod");
    assert_eq!(web["new"]["outcome"], "mutated");
    assert_eq!(web["new"]["placement"], "real-nodes-first");
    assert_eq!(web["new"]["policy"], "normalNodePrefer");
    assert_eq!(web["new"]["rules"], json!(["web-overflow", "image-cache"]));
    assert_eq!(
        web["new"]["labels"],
        json!({"eci-profile.io/virtual-node": "true"})
    );
    assert_eq!(
        web["new"]["annotations"]["k8s.aliyun.com/eci-auto-imc"],
        "true"
    );
    assert!(
        web["new"]["scheduling"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["path"] == "/spec/tolerations/-"
                && a["value"]["key"] == "k8s.aliyun.com/vnode")
    );
}

#[test]
fn namespaces_can_come_from_their_own_file() {
    // Without Namespace objects, fx-eci's label is unknown: frontend is not
    // selected by eci-namespaces under either profile, and a note says why.
    let dir = tempfile::tempdir().unwrap();
    let export: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(path(EXPORT)).unwrap()).unwrap();
    let (namespaces, others): (Vec<Value>, Vec<Value>) = export["items"]
        .as_array()
        .unwrap()
        .iter()
        .cloned()
        .partition(|item| item["kind"] == "Namespace");
    let workloads = dir.path().join("workloads.json");
    std::fs::write(
        &workloads,
        json!({"apiVersion": "v1", "kind": "List", "items": others}).to_string(),
    )
    .unwrap();
    let namespaces_file = dir.path().join("namespaces.json");
    std::fs::write(
        &namespaces_file,
        json!({"apiVersion": "v1", "kind": "List", "items": namespaces}).to_string(),
    )
    .unwrap();
    let proposed = proposed();
    let (current, workloads) = (path(CURRENT), workloads.display().to_string());
    let without = run(&with(&proposed, &["--current", &current, &workloads]));
    assert_eq!(without.status.code(), Some(0), "{}", stderr(&without));
    assert!(
        !stdout(&without).contains("frontend"),
        "{}",
        stdout(&without)
    );
    assert!(
        stderr(&without).contains("namespaces have no Namespace object in the input (fx-eci, fx-plain, fx-team, kube-system)"),
        "{}",
        stderr(&without)
    );
    let namespaces_file = namespaces_file.display().to_string();
    let with_file = run(&with(
        &proposed,
        &[
            "--current",
            &current,
            "--namespaces-file",
            &namespaces_file,
            &workloads,
        ],
    ));
    assert_eq!(stdout(&with_file).lines().last(), Some(SUMMARY));
    assert!(!stderr(&with_file).contains("no Namespace object"));
}

#[test]
fn trouble_exits_2_with_what_is_wrong() {
    let (current, export) = (path(CURRENT), path(EXPORT));
    let dir = tempfile::tempdir().unwrap();
    // A proposed profile with a typo that would select everything.
    let typo = dir.path().join("typo.yaml");
    std::fs::write(
        &typo,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: eci-profile, namespace: kube-system}\ndata:\n  selectors: '[{\"name\": \"web\", \"objectSelector\": {\"matchLabel\": {\"app\": \"web\"}}}]'\n",
    )
    .unwrap();
    let typo = typo.display().to_string();
    let output = run(&[
        "--profile",
        &typo,
        "--current",
        &current,
        "--exit-code",
        &export,
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("matchLabels"),
        "{}",
        stderr(&output)
    );
    assert!(output.stdout.is_empty());

    let missing = run(&[
        "--profile",
        &current,
        "--current",
        &current,
        "/nonexistent/export.yaml",
    ]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("/nonexistent/export.yaml: cannot read"));

    // Neither the profile in force nor the workloads: a usage error.
    let usage = run(&["--profile", &current]);
    assert_eq!(usage.status.code(), Some(2));
    assert!(stderr(&usage).contains("--current"), "{}", stderr(&usage));
    assert!(
        stderr(&usage).contains("--kubeconfig"),
        "{}",
        stderr(&usage)
    );
}

#[test]
fn a_ten_thousand_workload_export_is_read_and_judged() {
    // About 15 MB and over a million YAML nodes, as `kubectl get -A -o yaml`
    // prints 10,000 Deployments: beyond the YAML parser's default budget.
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export.yaml");
    std::fs::write(&export, kubectl_export(10_000)).unwrap();
    let size = std::fs::metadata(&export).unwrap().len();
    assert!(size > 9_000_000, "{size} bytes");
    let (current, export) = (path(CURRENT), export.display().to_string());
    let output = run(&[
        "--profile",
        &path(PROPOSED),
        "--current",
        &current,
        "-o",
        "json",
        &export,
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["judged"], 10_000);
    // web-overflow sends every `web` outside the eci namespaces (one in five
    // Deployments, less those already sent) to virtual nodes.
    assert!(
        report["counts"]["to-virtual-nodes"].as_u64().unwrap() > 1_000,
        "{}",
        report["counts"]
    );
    assert!(stderr(&output).is_empty(), "{}", stderr(&output));
    assert_eq!(namespaces(10_000), 500);
}

// ---------- against the cluster ----------

/// The objects the fake serves, by list path; and the requests it saw.
#[derive(Default)]
struct World {
    lists: BTreeMap<String, Vec<Value>>,
    configmap: Option<Value>,
    selectors: Option<Vec<Value>>,
    requests: Vec<(String, String)>,
}

type Shared = Arc<Mutex<World>>;

/// Objects per page the fake answers, whatever `limit` asks (so that paging is exercised).
const FAKE_PAGE: usize = 3;

async fn list(State(world): State<Shared>, uri: Uri, RawQuery(query): RawQuery) -> Response {
    let path = uri.path().to_string();
    let mut world = world.lock().unwrap();
    world.requests.push(("GET".into(), uri.to_string()));
    let query = query.unwrap_or_default();
    let limited = query.split('&').any(|p| p.starts_with("limit="));
    let start: usize = query
        .split('&')
        .find_map(|p| p.strip_prefix("continue="))
        .map(|token| token.parse().unwrap())
        .unwrap_or(0);
    let items = if path == "/apis/eci.aliyun.com/v1beta1/selectors" {
        match &world.selectors {
            Some(items) => items.clone(),
            None => return not_found(&path),
        }
    } else {
        match world.lists.get(&path) {
            Some(items) => items.clone(),
            None => return not_found(&path),
        }
    };
    let end = if limited {
        (start + FAKE_PAGE).min(items.len())
    } else {
        items.len()
    };
    let mut metadata = json!({"resourceVersion": "900"});
    if end < items.len() {
        metadata["continue"] = end.to_string().into();
    }
    axum::Json(json!({"apiVersion": "v1", "kind": "List", "metadata": metadata, "items": items[start..end]})).into_response()
}

async fn get_configmap(
    State(world): State<Shared>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
    uri: Uri,
) -> Response {
    let mut world = world.lock().unwrap();
    world.requests.push(("GET".into(), uri.to_string()));
    match &world.configmap {
        Some(cm) if namespace == "kube-system" && name == "eci-profile" => {
            axum::Json(cm.clone()).into_response()
        }
        _ => not_found(uri.path()),
    }
}

async fn group(State(world): State<Shared>, uri: Uri) -> Response {
    let mut world = world.lock().unwrap();
    world.requests.push(("GET".into(), uri.to_string()));
    if world.selectors.is_none() {
        return not_found(uri.path());
    }
    let version = json!({"groupVersion": "eci.aliyun.com/v1beta1", "version": "v1beta1"});
    axum::Json(json!({"apiVersion": "v1", "kind": "APIGroup", "name": "eci.aliyun.com", "versions": [version], "preferredVersion": version})).into_response()
}

fn not_found(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": format!("{what} not found")})),
    )
        .into_response()
}

/// The list path of a kind, as kube-rs asks for it.
fn list_path(kind: &str) -> &'static str {
    match kind {
        "Namespace" => "/api/v1/namespaces",
        "Pod" => "/api/v1/pods",
        "ReplicationController" => "/api/v1/replicationcontrollers",
        "Deployment" => "/apis/apps/v1/deployments",
        "ReplicaSet" => "/apis/apps/v1/replicasets",
        "StatefulSet" => "/apis/apps/v1/statefulsets",
        "DaemonSet" => "/apis/apps/v1/daemonsets",
        "Job" => "/apis/batch/v1/jobs",
        "CronJob" => "/apis/batch/v1/cronjobs",
        _ => "",
    }
}

/// A fake serving the fixture export's objects (list items without kind,
/// as the API server lists them), the example profile ConfigMap and the
/// given Selectors.
async fn fake(selectors: Option<Vec<Value>>) -> (SocketAddr, Shared) {
    let export: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(path(EXPORT)).unwrap()).unwrap();
    let mut lists: BTreeMap<String, Vec<Value>> = [
        "Namespace",
        "Pod",
        "ReplicationController",
        "Deployment",
        "ReplicaSet",
        "StatefulSet",
        "DaemonSet",
        "Job",
        "CronJob",
    ]
    .iter()
    .map(|kind| (list_path(kind).to_string(), Vec::new()))
    .collect();
    for item in export["items"].as_array().unwrap() {
        let Some(items) = lists.get_mut(list_path(item["kind"].as_str().unwrap())) else {
            continue;
        };
        let mut item = item.clone();
        let map = item.as_object_mut().unwrap();
        map.remove("kind");
        map.remove("apiVersion");
        items.push(item);
    }
    let profile: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(path(CURRENT)).unwrap()).unwrap();
    let world = Arc::new(Mutex::new(World {
        lists,
        configmap: Some(profile),
        selectors,
        requests: Vec::new(),
    }));
    let app = Router::new()
        .route(
            "/api/v1/namespaces/{namespace}/configmaps/{name}",
            get(get_configmap),
        )
        .route("/apis/eci.aliyun.com", get(group))
        .route("/api/v1/{resource}", get(list))
        .route("/apis/{group}/{version}/{resource}", get(list))
        .with_state(world.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, world)
}

fn kubeconfig(dir: &Path, addr: SocketAddr) -> String {
    let file = dir.join("kubeconfig");
    std::fs::write(
        &file,
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: review\n  context:\n    cluster: fake\n    user: ci\ncurrent-context: review\nusers:\n- name: ci\n  user: {{}}\n"),
    )
    .unwrap();
    file.display().to_string()
}

fn selector(file: &str) -> Value {
    serde_saphyr::from_str(
        &std::fs::read_to_string(fixture_path(&format!("upstream-selectors/{file}"))).unwrap(),
    )
    .unwrap()
}

/// Whether the documented RBAC allows `GET uri`: discovery (`/apis/GROUP`,
/// allowed to every user by `system:discovery`), a listed resource, or the
/// profile ConfigMap.
fn allowed(rbac: &[Value], uri: &str) -> bool {
    let path = uri.split('?').next().unwrap();
    if path == "/apis/eci.aliyun.com" {
        return true;
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return false,
    };
    let (verb, namespace, resource, name) = match rest {
        [resource] => ("list", None, *resource, None),
        ["namespaces", namespace, resource, name] => {
            ("get", Some(*namespace), *resource, Some(*name))
        }
        _ => return false,
    };
    rbac.iter().any(|object| {
        let scope_ok = match object["kind"].as_str() {
            Some("ClusterRole") => true,
            Some("Role") => {
                namespace.is_some() && object["metadata"]["namespace"] == namespace.unwrap()
            }
            _ => false,
        };
        scope_ok
            && object["rules"].as_array().unwrap().iter().any(|rule| {
                let has = |field: &str, value: &str| {
                    rule[field]
                        .as_array()
                        .is_some_and(|values| values.iter().any(|v| v == value))
                };
                has("apiGroups", group)
                    && has("resources", resource)
                    && has("verbs", verb)
                    && (rule.get("resourceNames").is_none()
                        || name.is_some_and(|n| has("resourceNames", n)))
            })
    })
}

fn documented_rbac() -> Vec<Value> {
    serde_saphyr::from_multiple(
        &std::fs::read_to_string(path("manifests/examples/diff-reader-rbac.yaml")).unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_gives_the_profile_in_force_and_the_workloads() {
    // In force: the example ConfigMap and the virtual-node-only Selector; a
    // Selector that does not compile is left out, with a note.
    let broken = json!({"apiVersion": "eci.aliyun.com/v1beta1", "kind": "Selector",
                        "metadata": {"name": "broken"}, "spec": {"objectLabels": {"matchLabel": {"app": "x"}}}});
    let (addr, world) = fake(Some(vec![selector("virtual-node-only.yaml"), broken])).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig(dir.path(), addr);
    let proposed = proposed();
    let args: Vec<String> = with(
        &proposed,
        &[
            "--kubeconfig",
            &kubeconfig,
            "--context",
            "review",
            "-o",
            "json",
        ],
    )
    .into_iter()
    .map(String::from)
    .collect();
    let output = run_beside(args).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    // nginx-test-1's Selector is already in force: it does not change.
    let names: Vec<&str> = report["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "frontend",
            "nginx-test-2",
            "web",
            "nightly-report",
            "api",
            "batch-once"
        ]
    );
    assert_eq!(report["judged"], 11, "the same objects as the export");
    assert!(
        stderr(&output).contains("Selector broken does not compile and is left out"),
        "{}",
        stderr(&output)
    );
    // Controllers are listed first, and what they own is dropped as it
    // arrives: the ReplicaSet, the CronJob's Job and 4 pods.
    assert!(
        stderr(&output).contains("note: not judged: 6 owned by a workload judged instead\n"),
        "{}",
        stderr(&output)
    );

    // Read-only, paged, and all allowed by the documented RBAC.
    let requests = world.lock().unwrap().requests.clone();
    let rbac = documented_rbac();
    for (method, uri) in &requests {
        assert_eq!(method, "GET");
        assert!(
            allowed(&rbac, uri),
            "{uri} is not allowed by manifests/examples/diff-reader-rbac.yaml"
        );
    }
    let position = |prefix: &str| {
        requests
            .iter()
            .position(|(_, uri)| uri.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} not asked: {requests:?}"))
    };
    assert!(position("/apis/apps/v1/deployments?") < position("/apis/apps/v1/replicasets?"));
    assert!(position("/apis/batch/v1/cronjobs?") < position("/apis/batch/v1/jobs?"));
    assert!(position("/apis/apps/v1/replicasets?") < position("/api/v1/pods?"));
    let pages = requests
        .iter()
        .filter(|(_, uri)| uri.starts_with("/api/v1/pods?"))
        .count();
    assert_eq!(pages, 2, "6 pods in pages of {FAKE_PAGE}: {requests:?}");
    assert!(
        requests.iter().any(|(_, uri)| uri.contains("continue=3")),
        "{requests:?}"
    );
    // Every listed resource was asked for, and the documented RBAC names no more.
    for resource in eci_profile::sources::snapshot::inventory_resource_names() {
        let (plural, group) = resource.split_once('.').unwrap_or((&resource, ""));
        assert!(
            requests
                .iter()
                .any(|(_, uri)| uri.contains(&format!("/{plural}?"))),
            "{resource}"
        );
        assert!(
            allowed(&rbac, &format!("/apis/{group}/v1/{plural}"))
                || allowed(&rbac, &format!("/api/v1/{plural}")),
            "{resource}"
        );
    }
    // The RBAC refuses what diff does not need.
    assert!(!allowed(&rbac, "/api/v1/secrets"));
    assert!(!allowed(
        &rbac,
        "/api/v1/namespaces/kube-system/configmaps/other"
    ));
    assert!(!allowed(
        &rbac,
        "/api/v1/namespaces/default/configmaps/eci-profile"
    ));
    assert!(
        rbac.iter()
            .flat_map(|o| o["rules"].as_array().unwrap())
            .all(|rule| rule["verbs"]
                .as_array()
                .unwrap()
                .iter()
                .all(|v| v == "get" || v == "list"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_given_are_not_read_from_the_cluster() {
    let (addr, world) = fake(None).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig(dir.path(), addr);
    let proposed = proposed();
    let (current, export) = (path(CURRENT), path(EXPORT));
    // The workloads from the cluster, the profile in force from a file.
    let args: Vec<String> = with(
        &proposed,
        &["--kubeconfig", &kubeconfig, "--current", &current],
    )
    .into_iter()
    .map(String::from)
    .collect();
    let output = run_beside(args).await;
    assert_eq!(
        stdout(&output).lines().last(),
        Some(SUMMARY),
        "{}",
        stderr(&output)
    );
    let requests = world.lock().unwrap().requests.clone();
    assert!(
        !requests
            .iter()
            .any(|(_, uri)| uri.contains("configmaps") || uri.contains("eci.aliyun.com")),
        "{requests:?}"
    );

    // Both from files: the cluster is not asked at all.
    world.lock().unwrap().requests.clear();
    let args: Vec<String> = with(
        &proposed,
        &["--kubeconfig", &kubeconfig, "--current", &current, &export],
    )
    .into_iter()
    .map(String::from)
    .collect();
    let output = run_beside(args).await;
    assert_eq!(stdout(&output).lines().last(), Some(SUMMARY));
    assert!(world.lock().unwrap().requests.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_is_trouble() {
    // A port nothing listens on.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig(dir.path(), addr);
    let current = path(CURRENT);
    let args = [
        "--profile".to_string(),
        current,
        "--kubeconfig".into(),
        kubeconfig,
    ];
    let output = run_beside(args.to_vec()).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("cannot read ConfigMap kube-system/eci-profile"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_does_not_answer_is_trouble_after_the_request_timeout() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--profile".to_string(),
        path(CURRENT),
        "--kubeconfig".into(),
        kubeconfig(dir.path(), addr),
        "--request-timeout".into(),
        "1s".into(),
    ];
    let output = run_beside(args.to_vec()).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("cannot read ConfigMap kube-system/eci-profile"),
        "{}",
        stderr(&output)
    );
}
