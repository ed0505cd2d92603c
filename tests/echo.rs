//! Input is echoed bounded: a huge value in a request (or a profile) never
//! comes back whole in a 400 body, an admission warning, a log line or a
//! diagnostic. Each request is a captured fixture with one field changed.

mod common;

use std::io;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{admission_fixture, fixture_namespaces};
use eci_profile::decision::Exclusions;
use eci_profile::profile::{self, Profile, ProfileData};
use eci_profile::server::{Limits, State, webhook};
use http_body_util::BodyExt as _;
use serde_json::Value;
use tower::ServiceExt as _;

const HUGE: usize = 1 << 20;

/// No answer, warning or log line grows with the input beyond this.
const BOUND: usize = 4096;

fn example_profile() -> Profile {
    let path = "manifests/examples/eci-profile.yaml";
    let text = std::fs::read_to_string(path).unwrap();
    let data = ProfileData::from_manifest(path, &text).unwrap();
    profile::compile(&data).into_result().unwrap().0
}

fn state() -> Arc<State> {
    Arc::new(State::new(
        example_profile(),
        Arc::new(fixture_namespaces()),
        Exclusions::default(),
        Limits {
            max_body_bytes: 8 << 20,
            ..Limits::default()
        },
    ))
}

/// A fixture with `change` applied to its JSON.
fn fixture_with(name: &str, change: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut review: Value = serde_json::from_slice(&admission_fixture(name)).unwrap();
    change(&mut review);
    serde_json::to_vec(&review).unwrap()
}

fn huge(c: char) -> String {
    std::iter::repeat_n(c, HUGE).collect()
}

/// Log output, captured.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Posts `body` to the webhook with logs at debug captured: status, body, log lines.
async fn post(body: Vec<u8>) -> (StatusCode, String, Vec<String>) {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let request = Request::post("/mutate?timeout=10s")
        .body(Body::from(body))
        .unwrap();
    let response = webhook::router(state()).oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let lines = String::from_utf8(logs.0.lock().unwrap().clone())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    (status, String::from_utf8(body.to_vec()).unwrap(), lines)
}

fn assert_logs_bounded(lines: &[String]) {
    assert!(!lines.is_empty(), "nothing logged");
    for line in lines {
        assert!(line.len() < BOUND, "a log line of {} bytes", line.len());
    }
}

/// A 400 whose body is bounded and still says what is wrong.
async fn assert_refused_bounded(body: Vec<u8>, needles: &[&str]) {
    let (status, text, logs) = post(body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.len() < 512, "a 400 body of {} bytes", text.len());
    for needle in needles {
        assert!(text.contains(needle), "{text}");
    }
    assert!(
        text.contains(&format!("{HUGE}")) || text.contains("bytes"),
        "{text}"
    );
    assert_logs_bounded(&logs);
}

/// An answered review whose warnings and size are bounded; its warnings.
async fn answered_bounded(body: Vec<u8>) -> Vec<String> {
    let (status, text, logs) = post(body).await;
    assert_eq!(status, StatusCode::OK, "{}", &text[..text.len().min(300)]);
    assert!(text.len() < BOUND, "an answer of {} bytes", text.len());
    let review: Value = serde_json::from_str(&text).unwrap();
    let warnings: Vec<String> = review["response"]["warnings"]
        .as_array()
        .map(|w| w.iter().map(|w| w.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    for w in &warnings {
        // Short of the 256 characters at which kube-apiserver may cut a
        // warning itself, plus the words around the value.
        assert!(w.chars().count() < 512, "a warning of {} bytes", w.len());
    }
    assert_logs_bounded(&logs);
    warnings
}

#[tokio::test]
async fn a_huge_wrong_typed_dry_run_is_not_echoed() {
    let body = fixture_with("create-dry-run", |r| {
        r["request"]["dryRun"] = huge('x').into();
    });
    assert_refused_bounded(body, &["invalid type: string \"xxx", "expected a boolean"]).await;
}

#[tokio::test]
async fn a_huge_uid_is_refused_not_echoed() {
    let body = fixture_with("create-deployment-pod", |r| {
        r["request"]["uid"] = huge('u').into();
    });
    assert_refused_bounded(body, &["request.uid is 1048576 bytes long"]).await;
}

#[tokio::test]
async fn a_huge_kind_is_not_echoed() {
    let body = fixture_with("create-deployment-pod", |r| {
        r["kind"] = huge('k').into();
    });
    assert_refused_bounded(body, &["kind \"kkk"]).await;
}

#[tokio::test]
async fn a_huge_namespace_is_not_echoed() {
    let namespace = huge('n');
    let body = fixture_with("create-deployment-pod", |r| {
        r["request"]["namespace"] = namespace.clone().into();
        r["request"]["object"]["metadata"]["namespace"] = namespace.clone().into();
    });
    let warnings = answered_bounded(body).await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("eci-profile: labels of namespace nnn"),
        "{warnings:?}"
    );
    assert!(warnings[0].contains("1048576 bytes"), "{warnings:?}");
}

#[tokio::test]
async fn a_huge_pod_name_is_not_logged_whole() {
    let body = fixture_with("create-hostnetwork-hostpath-pod", |r| {
        r["request"]["name"] = huge('p').into();
        r["request"]["object"]["metadata"]["name"] = huge('p').into();
    });
    answered_bounded(body).await;
}

#[tokio::test]
async fn a_huge_host_path_volume_name_is_not_echoed() {
    let body = fixture_with("create-hostnetwork-hostpath-pod", |r| {
        let spec = &mut r["request"]["object"]["spec"];
        spec["hostNetwork"] = false.into();
        spec["volumes"][0]["name"] = huge('v').into();
    });
    let warnings = answered_bounded(body).await;
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("volume vvv") && w.ends_with("vvv is a hostPath")),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn a_huge_owner_name_is_not_echoed() {
    let body = fixture_with("create-daemonset-pod", |r| {
        r["request"]["object"]["metadata"]["ownerReferences"][0]["name"] = huge('d').into();
    });
    let warnings = answered_bounded(body).await;
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("owned by DaemonSet ddd")),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn a_huge_node_selector_value_is_not_echoed() {
    let body = fixture_with("create-deployment-pod", |r| {
        r["request"]["object"]["spec"]["nodeSelector"] =
            serde_json::json!({"k8s.aliyun.com/vnode": huge('l')});
    });
    let warnings = answered_bounded(body).await;
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("its nodeSelector k8s.aliyun.com/vnode=lll")),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn a_huge_wrong_typed_pod_field_is_not_echoed() {
    let body = fixture_with("create-deployment-pod", |r| {
        r["request"]["object"]["spec"]["hostNetwork"] = huge('h').into();
    });
    let warnings = answered_bounded(body).await;
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("the pod could not be read: invalid type: string \"hhh")),
        "{warnings:?}"
    );
}

#[test]
fn profile_diagnostics_do_not_echo_huge_values() {
    // Big, not huge: a YAML scalar of 1 MiB is over the parser's own budget.
    let value = "z".repeat(64 << 10);
    let selectors = format!(
        r#"[{{"name": "{value}", "objectSelector": {{"matchLabels": {{"k": "{value}"}}}}}}]"#
    );
    let compiled = profile::compile(&ProfileData::from_map([(
        "selectors".to_string(),
        selectors,
    )]));
    assert!(compiled.profile.is_none());
    let text = compiled.diagnostics.to_string();
    assert!(
        text.contains("invalid label value \"zzz"),
        "{}",
        &text[..text.len().min(2000)]
    );
    for line in text.lines() {
        assert!(
            line.len() < 2048,
            "a diagnostic of {} bytes: {}",
            line.len(),
            &line[..600]
        );
    }
}

#[test]
fn check_does_not_echo_huge_names() {
    let dir = tempfile::tempdir().unwrap();
    let name = "p".repeat(64 << 10);
    let path = dir.path().join("pod.json");
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": name, "labels": {"alibabacloud.com/eci": "true"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}], "nodeName": name},
    });
    std::fs::write(&path, serde_json::to_vec(&pod).unwrap()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_eci-profile"))
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("spec.nodeName is already set (ppp"),
        "{stdout:.2000}"
    );
    for line in stdout
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
    {
        assert!(line.len() < BOUND, "a line of {} bytes", line.len());
    }
}
