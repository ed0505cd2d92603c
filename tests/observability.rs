//! What an operator sees of a running `serve`: its metrics, its JSON logs,
//! and the Grafana dashboard reading them.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{serve_command, serving_addresses};
use eci_profile::{certs, tls};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A `serve` process on loopback, its stderr collected line by line.
struct Served {
    process: Child,
    webhook: SocketAddr,
    admin: SocketAddr,
    ca_pem: String,
    lines: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Served {
    /// Starts `serve` with JSON logs, `RUST_LOG` set to `rust_log` and these
    /// more arguments, and waits until it serves.
    fn start(rust_log: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pair = certs::generate(&["localhost".into()], &["127.0.0.1".parse().unwrap()]).unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        certs::write_to(&cert, &key, &pair).unwrap();
        let mut process = serve_command(&cert, &key)
            .args(args)
            .args(["--shutdown-delay", "0s"])
            .env("RUST_LOG", rust_log)
            .env_remove("ECI_PROFILE_LOG_LEVEL")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(process.stderr.take().unwrap()).lines();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut addresses = None;
        for line in stderr.by_ref().map_while(Result::ok) {
            addresses = serving_addresses(&line);
            lines.lock().unwrap().push(line);
            if addresses.is_some() {
                break;
            }
        }
        let Some((webhook, admin)) = addresses else {
            let _ = process.kill();
            panic!("serve did not start: {:?}", lines.lock().unwrap());
        };
        let collected = lines.clone();
        std::thread::spawn(move || {
            for line in stderr.map_while(Result::ok) {
                collected.lock().unwrap().push(line);
            }
        });
        Self {
            process,
            webhook,
            admin,
            ca_pem: pair.ca_pem,
            lines,
            _dir: dir,
        }
    }

    /// POSTs `body` to `/mutate` over TLS (HTTP/1.1, as kube-apiserver); the response body.
    fn mutate(&self, body: &[u8]) -> Value {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).unwrap())
            .unwrap();
        let config = rustls::ClientConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connection =
            rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap())
                .unwrap();
        let socket = TcpStream::connect(self.webhook).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut stream = rustls::StreamOwned::new(connection, socket);
        write!(
            stream,
            "POST /mutate?timeout=10s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .unwrap();
        stream.write_all(body).unwrap();
        let mut answer = Vec::new();
        // The server closes without close_notify once it has answered.
        let _ = stream.read_to_end(&mut answer);
        let answer = String::from_utf8(answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        serde_json::from_str(body).unwrap()
    }

    /// `GET path` on the admin listener: the body.
    fn admin_get(&self, path: &str) -> String {
        let mut stream = TcpStream::connect(self.admin).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        body.to_string()
    }

    /// Waits until a log line satisfies `wanted` (at most 5 s); that line.
    fn log_line(&self, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(line) = self.lines.lock().unwrap().iter().find(|l| wanted(l)) {
                return line.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no such log line in {:?}",
                self.lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The sample AdmissionReview of the README: a pod the embedded default
/// profile sends to a virtual node.
fn sample_review() -> Vec<u8> {
    std::fs::read(root().join("manifests/examples/admission-review.json")).unwrap()
}

/// The rules the answer to `review` records as applied (from its patch).
fn applied_rules(review: &Value) -> Vec<String> {
    use base64::Engine as _;
    let patch = review["response"]["patch"].as_str().expect("a patch");
    let patch: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(patch)
            .unwrap(),
    )
    .unwrap();
    let applied = patch
        .as_array()
        .unwrap()
        .iter()
        .find_map(|op| {
            let path = op["path"].as_str()?;
            let annotation = eci_profile::decision::APPLIED_ANNOTATION;
            if path.ends_with(&annotation.replace('/', "~1")) {
                op["value"].as_str().map(str::to_string)
            } else {
                op["value"][annotation].as_str().map(str::to_string)
            }
        })
        .unwrap_or_else(|| panic!("no annotation of the rules applied in {patch}"));
    applied.split(',').map(str::to_string).collect()
}

/// The sample names of an OpenMetrics exposition: those of its samples, and
/// those each `# TYPE` line promises (a counter's `_total`, a histogram's
/// `_bucket`, `_sum` and `_count`), so that families without a sample yet
/// count too.
fn sample_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            match kind {
                "counter" => {
                    names.insert(format!("{name}_total"));
                }
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
                "info" => {
                    names.insert(format!("{name}_info"));
                }
                _ => {
                    names.insert(name.to_string());
                }
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// The value of the sample `series` (name and labels, as printed).
fn value(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

#[test]
fn a_served_request_shows_in_the_build_process_and_rule_metrics() {
    let served = Served::start("info", &[]);
    let review = served.mutate(&sample_review());
    let rules = applied_rules(&review);
    assert!(!rules.is_empty());
    let text = served.admin_get("/metrics");
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(text.matches("# EOF").count(), 1);
    let build = format!(
        r#"eci_profile_build_info{{version="{}",revision="#,
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.contains(&build), "{text}");
    for rule in &rules {
        let series =
            format!(r#"eci_profile_rule_decisions_total{{rule="{rule}",outcome="mutated"}}"#);
        assert_eq!(value(&text, &series), Some(1.0), "{series} in {text}");
    }
    assert_eq!(
        value(
            &text,
            r#"eci_profile_admission_requests_total{outcome="mutated",reason=""}"#
        ),
        Some(1.0),
        "{text}"
    );
    // The profile's own figures.
    assert_eq!(value(&text, "eci_profile_profile_generation"), Some(1.0));
    assert!(value(&text, "eci_profile_profile_selectors").unwrap() >= rules.len() as f64);
    // Without a cluster no watch runs (and a family without series is not printed).
    assert!(!text.contains("eci_profile_watch_"), "{text}");
    if cfg!(target_os = "linux") {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = value(&text, "process_start_time_seconds").unwrap();
        assert!(
            (now - started).abs() < 120.0,
            "started {started}, now {now}"
        );
        let resident = value(&text, "process_resident_memory_bytes").unwrap();
        assert!((1e6..1e9).contains(&resident), "{resident}");
        let cpu = value(&text, "process_cpu_seconds_total").unwrap();
        assert!((0.0..60.0).contains(&cpu), "{cpu}");
        let fds = value(&text, "process_open_fds").unwrap();
        assert!((3.0..1000.0).contains(&fds), "{fds}");
        assert!(value(&text, "process_max_fds").unwrap() >= fds);
    }
}

#[test]
fn json_logs_are_flat_with_lists_as_arrays() {
    // --log-level wins over RUST_LOG.
    let served = Served::start("off", &["--log-level", "info,eci_profile=debug"]);
    served.mutate(&sample_review());
    // The sample's namespace labels are unknown: the pod is patched with a
    // warning, logged at info with everything about it.
    let warned = served.log_line(|l| l.contains("\"warnings\""));
    let warned: Value = serde_json::from_str(&warned).unwrap();
    assert_eq!(warned["level"], "INFO", "{warned}");
    assert_eq!(warned["message"], "pod mutated", "{warned}");
    assert_eq!(warned["decision"], "mutated", "{warned}");
    assert_eq!(warned["namespace"], "fx-team", "{warned}");
    assert!(warned["warnings"].is_array(), "{warned}");
    assert!(
        warned["warnings"][0]
            .as_str()
            .unwrap()
            .contains("labels of namespace fx-team are unknown"),
        "{warned}"
    );
    // A debug event inside the request's span carries the span's fields, flat.
    let update = String::from_utf8(sample_review())
        .unwrap()
        .replace(r#""operation":"CREATE""#, r#""operation":"UPDATE""#)
        .replace("62de17f5-", "00000000-");
    served.mutate(update.as_bytes());
    let allowed = served.log_line(|l| l.contains("not a pod creation"));
    let allowed: Value = serde_json::from_str(&allowed).unwrap();
    assert_eq!(allowed["level"], "DEBUG", "{allowed}");
    assert_eq!(
        allowed["uid"], "00000000-252e-4633-904d-e0ddfc211615",
        "{allowed}"
    );
    assert_eq!(allowed["operation"], "UPDATE", "{allowed}");
    assert_eq!(allowed["decision"], "skipped", "{allowed}");
    let starting = served.log_line(|l| l.contains("\"starting\""));
    let starting: Value = serde_json::from_str(&starting).unwrap();
    assert!(starting["excluded"].is_array(), "{starting}");
    assert!(starting["selectors"].is_u64(), "{starting}");
    // Every line: one flat object, no Option printed as Some(..).
    for line in served.lines.lock().unwrap().iter() {
        let log: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: not JSON: {line}"));
        let object = log.as_object().unwrap();
        for key in ["timestamp", "level", "target", "message"] {
            assert!(object.contains_key(key), "{key} missing: {line}");
        }
        for nested in ["fields", "span", "spans"] {
            assert!(!object.contains_key(nested), "{line}");
        }
        assert!(line.starts_with(r#"{"timestamp":"#), "{line}");
        assert!(!line.contains("Some("), "{line}");
    }
}

/// The PromQL expressions of every panel of a Grafana dashboard.
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = panels.pop() {
        if let Some(inner) = panel["panels"].as_array() {
            panels.extend(inner);
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap().to_string();
            queries.push((title, target["expr"].as_str().unwrap().to_string()));
        }
    }
    queries
}

/// The metric names a PromQL expression selects: every identifier followed
/// by a `{` (the dashboard writes each selector with its braces), and every
/// `eci_profile_` or `process_` identifier anywhere.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_') {
        let after = &rest[start..];
        let end = after.find(|c: char| !is_name(c)).unwrap_or(after.len());
        let name = &after[..end];
        let before = rest[..start].chars().last();
        let selector = after[end..].trim_start().starts_with('{');
        let standalone = before.is_none_or(|c| !is_name(c) && c != '$' && c != '"');
        if standalone
            && (selector || name.starts_with("eci_profile_") || name.starts_with("process_"))
        {
            names.insert(name.to_string());
        }
        rest = &after[end..];
    }
    names
}

/// The sample names of every family src/metrics.rs registers, by the kind
/// its construction names: families print nothing until they have a series
/// (the budget and watch families need a cluster).
fn registered_samples() -> BTreeSet<String> {
    let source = std::fs::read_to_string(root().join("src/metrics.rs")).unwrap();
    let mut samples = BTreeSet::new();
    for call in source.split("registry.register(").skip(1) {
        let mut parts = call[..call.find(");").unwrap()].split(',');
        let name = parts.next().unwrap().trim().trim_matches('"');
        let variable = call[..call.find(");").unwrap()]
            .trim_end()
            .trim_end_matches(',')
            .rsplit(',')
            .next()
            .unwrap()
            .trim()
            .trim_end_matches(".clone()");
        let construction = source[source.find(&format!("let {variable} = ")).unwrap()..]
            .lines()
            .next()
            .unwrap();
        let name = format!("eci_profile_{name}");
        if construction.contains("Counter") {
            samples.insert(format!("{name}_total"));
        } else if construction.contains("Histogram") {
            for suffix in ["_bucket", "_sum", "_count"] {
                samples.insert(format!("{name}{suffix}"));
            }
        } else {
            assert!(construction.contains("Gauge"), "{construction}");
            samples.insert(name);
        }
    }
    samples
}

/// Series of other exporters the dashboard may read: the API server's
/// webhook metrics and kube-state-metrics' Deployment series.
const OTHER_EXPORTERS: [&str; 4] = [
    "apiserver_admission_webhook_fail_open_count",
    "apiserver_admission_webhook_rejection_count",
    "kube_deployment_status_replicas_available",
    "kube_deployment_spec_replicas",
];

#[test]
fn the_dashboard_reads_only_metrics_a_server_exports() {
    let path = root().join("manifests/dashboards/eci-profile.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(dashboard["uid"], "eci-profile");
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36);
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");
    assert_eq!(dashboard["__inputs"][0]["pluginId"], "prometheus");
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables
            .iter()
            .any(|v| v["name"] == "datasource" && v["type"] == "datasource")
    );

    let served = Served::start("info", &[]);
    served.mutate(&sample_review());
    let served = sample_names(&served.admin_get("/metrics"));
    let registered = registered_samples();
    // What a server prints is what src/metrics.rs registers (the process
    // metrics aside), so the registered names are the exported ones.
    for name in served.iter().filter(|n| n.starts_with("eci_profile_")) {
        assert!(registered.contains(name), "{name} vs {registered:?}");
    }
    for name in [
        "eci_profile_admission_request_duration_seconds_bucket",
        "eci_profile_rule_decisions_total",
        "eci_profile_build_info",
        "eci_profile_budget_used",
        "eci_profile_watch_last_event_timestamp_seconds",
    ] {
        assert!(registered.contains(name), "{name} vs {registered:?}");
    }
    let exported: BTreeSet<String> = served.union(&registered).cloned().collect();

    let queries = panel_queries(&dashboard);
    let mut read = BTreeSet::new();
    for (title, expr) in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{title}: no metric in {expr}");
        for name in names {
            assert!(
                exported.contains(&name) || OTHER_EXPORTERS.contains(&name.as_str()),
                "{title}: {name} is neither exported nor another exporter's ({exported:?})"
            );
            read.insert(name);
        }
    }
    // What an operator needs to see is there.
    for name in [
        "eci_profile_admission_requests_total",
        "eci_profile_rule_decisions_total",
        "eci_profile_admission_request_duration_seconds_bucket",
        "apiserver_admission_webhook_fail_open_count",
        "apiserver_admission_webhook_rejection_count",
        "eci_profile_profile_reloads_total",
        "eci_profile_profile_reload_failing",
        "eci_profile_budget_used",
        "eci_profile_budget_limit",
        "eci_profile_sent_pods_synced",
        "kube_deployment_status_replicas_available",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "eci_profile_watch_last_event_timestamp_seconds",
    ] {
        assert!(read.contains(name), "no panel reads {name}");
    }
    let heatmap = queries
        .iter()
        .find(|(_, expr)| expr.contains("_duration_seconds_bucket"))
        .unwrap();
    assert!(heatmap.1.contains("by (le)"), "{heatmap:?}");
    // The API server names the webhook as the MutatingWebhookConfiguration does.
    for (_, expr) in queries.iter().filter(|(_, e)| e.contains("apiserver_")) {
        assert!(expr.contains(r#"name="pods.eci-profile.io""#), "{expr}");
    }
    let webhook =
        std::fs::read_to_string(root().join("manifests/base/mutatingwebhookconfiguration.yaml"))
            .unwrap();
    assert!(webhook.contains("- name: pods.eci-profile.io"));
}

#[test]
fn metric_names_of_promql() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le) (rate(eci_profile_x_bucket{namespace=~"$namespace"}[$__rate_interval]))) / on (pod) time() - kube_y{a="b"}"#,
    );
    assert_eq!(
        names,
        BTreeSet::from(["eci_profile_x_bucket".to_string(), "kube_y".to_string()])
    );
}
