//! Budgets and the scale-in order against an in-process fake of the API
//! endpoints they use (metadata list/watch of Nodes, list/watch of Pods by
//! label, merge patch of a Pod), over a real HTTP connection, with the same
//! kube-rs code that runs in a cluster; admissions go through the webhook's
//! router as the API server sends them.

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State as Extract};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::is_watch;
use eci_profile::decision::Exclusions;
use eci_profile::namespaces::StaticNamespaces;
use eci_profile::server::{Limits, State, cluster};
use eci_profile::sources::pods::ScaleIn;
use serde_json::{Value, json};
use tokio::sync::broadcast;

// ---------- the fake API server ----------

#[derive(Default)]
struct World {
    nodes: BTreeMap<String, Value>,
    /// Pods by namespace/name.
    pods: BTreeMap<String, Value>,
    requests: Vec<String>,
    /// Merge patches received, by namespace/name.
    patches: Vec<(String, Value)>,
}

#[derive(Clone)]
struct Fake {
    addr: SocketAddr,
    world: Arc<Mutex<World>>,
    version: Arc<AtomicU64>,
    node_watch: broadcast::Sender<(Instant, String)>,
    pod_watch: broadcast::Sender<(Instant, String)>,
    /// How late watch events arrive after the change (the watch delay).
    watch_delay: Arc<Mutex<Duration>>,
    /// Pod lists wait until this is true.
    pods_listable: tokio::sync::watch::Sender<bool>,
}

const VIRTUAL: &str = "virtual-kubelet-cn-hangzhou-k";

/// The labels of the default profile's virtual node.
fn virtual_node_labels() -> Value {
    json!({"k8s.aliyun.com/vnode": "true"})
}

fn node(name: &str, labels: Value, version: u64) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
           "metadata": {"name": name, "labels": labels, "uid": format!("node-{name}"),
                        "resourceVersion": version.to_string()}})
}

/// A pod sent to virtual nodes by rule `team`, requesting `cpu`.
fn sent_pod(namespace: &str, name: &str, node: Option<&str>, cpu: &str) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{namespace}-{name}"),
                     "labels": {"eci-profile.io/virtual-node": "true", "app": "web"},
                     "annotations": {"eci-profile.io/selectors": "team"}},
        "spec": {"containers": [{"name": "app", "image": "nginx",
                                 "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}}]},
        "status": {"phase": "Pending"}
    });
    if let Some(node) = node {
        pod["spec"]["nodeName"] = json!(node);
        pod["status"]["phase"] = json!("Running");
    }
    pod
}

/// `labelSelector` of a query, decoded.
fn label_selector(query: &Option<String>) -> Vec<(String, String)> {
    let Some(query) = query else { return vec![] };
    let Some(raw) = query
        .split('&')
        .find_map(|p| p.strip_prefix("labelSelector="))
    else {
        return vec![];
    };
    let decoded = raw
        .replace("%3D", "=")
        .replace("%2F", "/")
        .replace("%2C", ",");
    decoded
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn matches(object: &Value, selector: &[(String, String)]) -> bool {
    selector
        .iter()
        .all(|(k, v)| object["metadata"]["labels"][k].as_str() == Some(v))
}

fn watch_stream(
    rx: broadcast::Receiver<(Instant, String)>,
    selector: Vec<(String, String)>,
    delay: Duration,
) -> Body {
    let lines = futures_util::stream::unfold(rx, move |mut rx| {
        let selector = selector.clone();
        async move {
            loop {
                match rx.recv().await {
                    Ok((at, line)) => {
                        tokio::time::sleep_until((at + delay).into()).await;
                        let event: Value = serde_json::from_str(&line).unwrap();
                        if matches(&event["object"], &selector) {
                            return Some((Ok::<_, Infallible>(Bytes::from(line + "\n")), rx));
                        }
                    }
                    Err(_) => return None,
                }
            }
        }
    });
    Body::from_stream(lines)
}

fn record(fake: &Fake, line: String) {
    fake.world.lock().unwrap().requests.push(line);
}

async fn list_or_watch_nodes(
    Extract(fake): Extract<Fake>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    record(
        &fake,
        format!("GET /api/v1/nodes?{}", query.clone().unwrap_or_default()),
    );
    common::assert_metadata_only(&headers);
    let selector = label_selector(&query);
    assert!(!selector.is_empty(), "nodes are watched by label");
    if is_watch(&query) {
        return watch_stream(fake.node_watch.subscribe(), selector, fake.delay()).into_response();
    }
    let world = fake.world.lock().unwrap();
    let items: Vec<Value> = world
        .nodes
        .values()
        .filter(|n| matches(n, &selector))
        .cloned()
        .collect();
    axum::Json(json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
        "metadata": {"resourceVersion": fake.version.load(Ordering::SeqCst).to_string()}, "items": items}))
    .into_response()
}

async fn list_or_watch_pods(Extract(fake): Extract<Fake>, RawQuery(query): RawQuery) -> Response {
    record(
        &fake,
        format!("GET /api/v1/pods?{}", query.clone().unwrap_or_default()),
    );
    let selector = label_selector(&query);
    assert_eq!(
        selector,
        [(
            "eci-profile.io/virtual-node".to_string(),
            "true".to_string()
        )],
        "pods are watched by the sent label only"
    );
    if is_watch(&query) {
        return watch_stream(fake.pod_watch.subscribe(), selector, fake.delay()).into_response();
    }
    let mut listable = fake.pods_listable.subscribe();
    let _ = listable.wait_for(|ok| *ok).await;
    let world = fake.world.lock().unwrap();
    let items: Vec<Value> = world
        .pods
        .values()
        .filter(|p| matches(p, &selector))
        .cloned()
        .collect();
    axum::Json(json!({"apiVersion": "v1", "kind": "PodList",
        "metadata": {"resourceVersion": fake.version.load(Ordering::SeqCst).to_string()}, "items": items}))
    .into_response()
}

/// A merge patch, as the API server applies it: `metadata.resourceVersion`
/// (and `uid`) in the patch are preconditions.
async fn patch_pod(
    Extract(fake): Extract<Fake>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = format!("{namespace}/{name}");
    record(&fake, format!("PATCH /api/v1/namespaces/{key}"));
    assert_eq!(
        headers.get("content-type").unwrap(),
        "application/merge-patch+json"
    );
    let patch: Value = serde_json::from_slice(&body).unwrap();
    let mut world = fake.world.lock().unwrap();
    world.patches.push((key.clone(), patch.clone()));
    let Some(pod) = world.pods.get_mut(&key) else {
        return (StatusCode::NOT_FOUND, axum::Json(status(404, "NotFound"))).into_response();
    };
    for field in ["resourceVersion", "uid"] {
        if let Some(wanted) = patch["metadata"].get(field)
            && pod["metadata"][field] != *wanted
        {
            return (StatusCode::CONFLICT, axum::Json(status(409, "Conflict"))).into_response();
        }
    }
    let mut merged = pod.clone();
    json_patch::merge(&mut merged, &patch);
    let version = fake.version.fetch_add(1, Ordering::SeqCst) + 1;
    merged["metadata"]["resourceVersion"] = json!(version.to_string());
    *pod = merged.clone();
    drop(world);
    let _ = fake.pod_watch.send((
        Instant::now(),
        json!({"type": "MODIFIED", "object": merged}).to_string(),
    ));
    axum::Json(merged).into_response()
}

fn status(code: u16, reason: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code, "reason": reason, "message": reason})
}

impl Fake {
    async fn start(nodes: &[(&str, Value)], pods: &[Value]) -> Fake {
        eci_profile::tls::install_default_provider();
        let mut world = World::default();
        for (name, labels) in nodes {
            world
                .nodes
                .insert(name.to_string(), node(name, labels.clone(), 10));
        }
        let version = Arc::new(AtomicU64::new(10));
        for pod in pods {
            let mut pod = pod.clone();
            pod["metadata"]["resourceVersion"] = json!("10");
            world.pods.insert(key(&pod), pod);
        }
        let fake = Fake {
            addr: "127.0.0.1:0".parse().unwrap(),
            world: Arc::new(Mutex::new(world)),
            version,
            node_watch: broadcast::channel(4096).0,
            pod_watch: broadcast::channel(4096).0,
            watch_delay: Arc::default(),
            pods_listable: tokio::sync::watch::channel(true).0,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = Fake {
            addr: listener.local_addr().unwrap(),
            ..fake
        };
        let app = Router::new()
            .route("/api/v1/nodes", get(list_or_watch_nodes))
            .route("/api/v1/pods", get(list_or_watch_pods))
            .route(
                "/api/v1/namespaces/{namespace}/pods/{name}",
                axum::routing::patch(patch_pod),
            )
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    fn delay(&self) -> Duration {
        *self.watch_delay.lock().unwrap()
    }

    fn client(&self) -> kube::Client {
        let config = kube::Config::new(format!("http://{}", self.addr).parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    fn requests(&self) -> Vec<String> {
        self.world.lock().unwrap().requests.clone()
    }

    /// Waits until a watch of `path` is open (events sent before would be lost).
    async fn watching(&self, path: &str) {
        let prefix = format!("GET {path}?");
        let ok = eventually(|| {
            self.requests()
                .iter()
                .any(|r| r.starts_with(&prefix) && r.contains("watch=true"))
        })
        .await;
        assert!(ok, "no watch of {path}: {:?}", self.requests());
    }

    /// Stores `pod` with a new resourceVersion and announces it.
    fn put_pod(&self, kind: &str, mut pod: Value) -> Value {
        let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        pod["metadata"]["resourceVersion"] = json!(version.to_string());
        self.world
            .lock()
            .unwrap()
            .pods
            .insert(key(&pod), pod.clone());
        let _ = self.pod_watch.send((
            Instant::now(),
            json!({"type": kind, "object": pod}).to_string(),
        ));
        pod
    }

    fn delete_pod(&self, namespace: &str, name: &str) {
        let pod = self
            .world
            .lock()
            .unwrap()
            .pods
            .remove(&format!("{namespace}/{name}"))
            .unwrap();
        let _ = self.pod_watch.send((
            Instant::now(),
            json!({"type": "DELETED", "object": pod}).to_string(),
        ));
    }

    fn pod(&self, namespace: &str, name: &str) -> Value {
        self.world.lock().unwrap().pods[&format!("{namespace}/{name}")].clone()
    }

    fn patches(&self) -> Vec<(String, Value)> {
        self.world.lock().unwrap().patches.clone()
    }
}

fn key(pod: &Value) -> String {
    format!(
        "{}/{}",
        pod["metadata"]["namespace"].as_str().unwrap(),
        pod["metadata"]["name"].as_str().unwrap()
    )
}

/// Waits at most 10 s for `condition`.
async fn eventually(condition: impl FnMut() -> bool) -> bool {
    common::eventually(Duration::from_secs(10), condition).await
}

// ---------- the webhook side ----------

/// Rule `team`: pods labelled `app: web` go to virtual nodes with
/// `normalNodePrefer`, within `limits` in each namespace.
fn budgeted_profile(limits: &str) -> eci_profile::profile::Profile {
    common::profile(&format!(
        r#"[{{"name": "team", "objectSelector": {{"matchLabels": {{"app": "web"}}}}, "policy": "normalNodePrefer", "limits": {limits}}}]"#
    ))
}

struct Webhook {
    state: Arc<State>,
}

impl Webhook {
    /// A webhook with `profile`, following the fake's nodes and pods.
    fn following(
        fake: &Fake,
        profile: eci_profile::profile::Profile,
        scale_in: Option<ScaleIn>,
    ) -> Self {
        let state = Arc::new(State::new(
            profile,
            Arc::new(StaticNamespaces::default()),
            Exclusions::default(),
            Limits::default(),
        ));
        state.readiness.set_certificate_served();
        cluster::follow_sent_pods(&state, fake.client(), scale_in);
        Webhook { state }
    }

    async fn until_ready(&self) {
        let ready = eventually(|| self.state.readiness.check().is_ok()).await;
        assert!(ready, "not ready: {:?}", self.state.readiness.check());
    }

    /// Admits a pod like `sent_pod` but not sent yet, as request `uid`.
    async fn admit(&self, namespace: &str, name: &str, cpu: &str, uid: &str) -> Value {
        let mut pod = sent_pod(namespace, name, None, cpu);
        let metadata = pod["metadata"].as_object_mut().unwrap();
        metadata.remove("uid");
        metadata.remove("annotations");
        metadata.insert("labels".into(), json!({"app": "web"}));
        let body = eci_profile::review::pod_create_request(&pod, namespace, uid);
        let review = common::mutate(&self.state, body).await;
        review["response"].clone()
    }

    async fn metrics(&self) -> String {
        common::admin_get(&self.state, "/metrics").await.1
    }
}

/// The pod as the API server creates it from an admission response: the
/// patch applied, a uid given.
fn created(namespace: &str, name: &str, cpu: &str, response: &Value) -> Value {
    let mut pod = sent_pod(namespace, name, None, cpu);
    let metadata = pod["metadata"].as_object_mut().unwrap();
    metadata.remove("annotations");
    metadata.insert("labels".into(), json!({"app": "web"}));
    let patch = base64_decode(response["patch"].as_str().expect("a patch"));
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    json_patch::patch(&mut pod, &patch).unwrap();
    pod
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

/// Whether the response sends the pod to virtual nodes (adds the toleration).
fn sent(response: &Value) -> bool {
    response.get("patch").is_some_and(|p| {
        String::from_utf8(base64_decode(p.as_str().unwrap()))
            .unwrap()
            .contains("/spec/tolerations")
    })
}

fn warnings(response: &Value) -> Vec<String> {
    response["warnings"]
        .as_array()
        .map(|w| w.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

fn metric(text: &str, line_prefix: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .map(|v| v.trim().parse().unwrap())
}

// ---------- scenarios ----------

#[tokio::test]
async fn not_ready_until_the_sent_pods_are_listed() {
    let fake = Fake::start(
        &[(VIRTUAL, virtual_node_labels())],
        &[sent_pod("team-a", "web-1", Some(VIRTUAL), "1")],
    )
    .await;
    fake.pods_listable.send_replace(false);
    let hook = Webhook::following(&fake, budgeted_profile(r#"{"pods": 1}"#), None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        hook.state.readiness.check(),
        Err("pods on virtual nodes not counted yet")
    );
    assert_eq!(
        metric(&hook.metrics().await, "eci_profile_sent_pods_synced "),
        Some(0.0)
    );
    fake.pods_listable.send_replace(true);
    hook.until_ready().await;
    // Ready means counted: the namespace's one place is taken.
    let response = hook.admit("team-a", "web-2", "1", "req-1").await;
    assert!(!sent(&response), "{response}");
    assert_eq!(
        warnings(&response),
        [
            "eci-profile: pod not sent to a virtual node: budget of rule team in namespace team-a: 1/1 pods"
        ]
    );
    let text = hook.metrics().await;
    assert_eq!(metric(&text, "eci_profile_sent_pods_synced "), Some(1.0));
    assert_eq!(
        metric(
            &text,
            r#"eci_profile_admission_requests_total{outcome="skipped",reason="over-budget"} "#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn without_budgets_readiness_does_not_wait_for_the_pods() {
    let fake = Fake::start(&[(VIRTUAL, virtual_node_labels())], &[]).await;
    fake.pods_listable.send_replace(false);
    let hook = Webhook::following(
        &fake,
        common::profile(r#"[{"name": "team", "objectSelector": {"matchLabels": {"app": "web"}}}]"#),
        None,
    );
    hook.until_ready().await;
}

#[tokio::test]
async fn pods_bound_to_virtual_nodes_count_and_deletion_releases_budget() {
    let fake = Fake::start(
        &[
            (VIRTUAL, virtual_node_labels()),
            ("cn-hangzhou.10.0.0.1", json!({"kubernetes.io/os": "linux"})),
        ],
        &[
            sent_pod("team-a", "on-virtual", Some(VIRTUAL), "2"),
            sent_pod("team-a", "pending", None, "1"),
            // normalNodePrefer: placed on a real node, not counted.
            sent_pod("team-a", "on-real", Some("cn-hangzhou.10.0.0.1"), "8"),
            // Terminal and being deleted: not counted, as in ResourceQuota.
            {
                let mut p = sent_pod("team-a", "done", Some(VIRTUAL), "8");
                p["status"]["phase"] = json!("Succeeded");
                p
            },
            {
                let mut p = sent_pod("team-a", "leaving", Some(VIRTUAL), "8");
                p["metadata"]["deletionTimestamp"] = json!("2026-11-30T10:00:00Z");
                p
            },
            // Another namespace's pods are its own.
            sent_pod("team-b", "other", Some(VIRTUAL), "8"),
        ],
    )
    .await;
    let hook = Webhook::following(
        &fake,
        budgeted_profile(r#"{"pods": 5, "requests.cpu": "4"}"#),
        None,
    );
    hook.until_ready().await;
    fake.watching("/api/v1/pods").await;
    let text = hook.metrics().await;
    let used = |text: &str, resource: &str| {
        metric(
            text,
            &format!(
                r#"eci_profile_budget_used{{rule="team",namespace="team-a",resource="{resource}"}} "#
            ),
        )
    };
    assert_eq!(used(&text, "pods"), Some(2.0), "{text}");
    assert_eq!(used(&text, "requests.cpu"), Some(3.0), "{text}");
    assert_eq!(
        metric(
            &text,
            r#"eci_profile_budget_limit{rule="team",namespace="team-a",resource="requests.cpu"} "#
        ),
        Some(4.0)
    );
    assert_eq!(metric(&text, "eci_profile_budgets_configured "), Some(1.0));

    // 3 of 4 cores: a 1-core pod fits, a second does not.
    let first = hook.admit("team-a", "web-1", "1", "req-1").await;
    assert!(sent(&first), "{first}");
    let second = hook.admit("team-a", "web-2", "1", "req-2").await;
    assert!(!sent(&second), "{second}");
    assert_eq!(
        warnings(&second),
        [
            "eci-profile: pod not sent to a virtual node: budget of rule team in namespace team-a: 4/4 requests.cpu (the pod requests 1)"
        ]
    );
    // Its pod shows up: the reservation becomes a count.
    assert_eq!(
        metric(&hook.metrics().await, "eci_profile_budget_reservations "),
        Some(1.0)
    );
    fake.put_pod("ADDED", created("team-a", "web-1", "1", &first));
    assert!(eventually(|| hook.state.ledger.lock().unwrap().len() == (5, 0)).await);
    assert_eq!(used(&hook.metrics().await, "pods"), Some(3.0));

    // The pending pod binds to a real node: its place comes back.
    fake.put_pod(
        "MODIFIED",
        sent_pod("team-a", "pending", Some("cn-hangzhou.10.0.0.1"), "1"),
    );
    assert!(eventually(|| hook.state.ledger.lock().unwrap().used("team-a").pods.0 == 2000).await);
    // Deleting the pod on the virtual node releases its 2 cores.
    fake.delete_pod("team-a", "on-virtual");
    assert!(eventually(|| hook.state.ledger.lock().unwrap().used("team-a").pods.0 == 1000).await);
    let third = hook.admit("team-a", "web-3", "2", "req-3").await;
    assert!(sent(&third), "{third}");
    // The pod carries what the watch needs: the label and its reservation.
    let pod = created("team-a", "web-3", "2", &third);
    assert_eq!(
        pod["metadata"]["labels"]["eci-profile.io/virtual-node"],
        "true"
    );
    assert_eq!(
        pod["metadata"]["annotations"]["eci-profile.io/budget-reservation"],
        "req-3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_100_concurrent_admissions_against_40_sends_exactly_40() {
    let fake = Fake::start(&[(VIRTUAL, virtual_node_labels())], &[]).await;
    let hook = Arc::new(Webhook::following(
        &fake,
        budgeted_profile(r#"{"pods": 40}"#),
        None,
    ));
    hook.until_ready().await;
    fake.watching("/api/v1/pods").await;
    let admissions: Vec<_> = (0..100)
        .map(|i| {
            let hook = hook.clone();
            tokio::spawn(async move {
                let response = hook
                    .admit("team-a", &format!("web-{i}"), "500m", &format!("req-{i}"))
                    .await;
                (i, response)
            })
        })
        .collect();
    let mut responses = Vec::new();
    for admission in admissions {
        responses.push(admission.await.unwrap());
    }
    let admitted: Vec<_> = responses.iter().filter(|(_, r)| sent(r)).collect();
    assert_eq!(admitted.len(), 40);
    let refused = responses.iter().filter(|(_, r)| !sent(r)).count();
    assert_eq!(refused, 60);
    assert!(responses.iter().filter(|(_, r)| !sent(r)).all(|(_, r)| {
        warnings(r)[0].ends_with("budget of rule team in namespace team-a: 40/40 pods")
    }));
    // The 40 pods are created: counted in place of their reservations.
    for (i, response) in &admitted {
        fake.put_pod(
            "ADDED",
            created("team-a", &format!("web-{i}"), "500m", response),
        );
    }
    assert!(eventually(|| hook.state.ledger.lock().unwrap().len() == (40, 0)).await);
    let text = hook.metrics().await;
    assert_eq!(
        metric(
            &text,
            r#"eci_profile_budget_used{rule="team",namespace="team-a",resource="pods"} "#
        ),
        Some(40.0),
        "{text}"
    );
    assert!(!sent(
        &hook.admit("team-a", "web-100", "500m", "req-100").await
    ));
}

#[tokio::test]
async fn the_deletion_cost_is_added_after_binding_and_never_overwrites() {
    let fake = Fake::start(
        &[
            (VIRTUAL, virtual_node_labels()),
            ("cn-hangzhou.10.0.0.1", json!({})),
        ],
        &[],
    )
    .await;
    // No budget: the scale-in order works on its own.
    let profile = common::profile(
        r#"[{"name": "team", "objectSelector": {"matchLabels": {"app": "web"}}, "policy": "normalNodePrefer"}]"#,
    );
    let hook = Webhook::following(
        &fake,
        profile,
        Some(ScaleIn {
            deletion_cost: -1000,
        }),
    );
    hook.until_ready().await;
    fake.watching("/api/v1/pods").await;
    const COST: &str = "controller.kubernetes.io/pod-deletion-cost";

    // Not bound yet: nothing.
    fake.put_pod("ADDED", sent_pod("team-a", "web-1", None, "1"));
    // Bound to a real node: nothing.
    fake.put_pod(
        "ADDED",
        sent_pod("team-a", "web-real", Some("cn-hangzhou.10.0.0.1"), "1"),
    );
    // The user's own cost: kept.
    let mut own = sent_pod("team-a", "web-own", Some(VIRTUAL), "1");
    own["metadata"]["annotations"][COST] = json!("250");
    fake.put_pod("ADDED", own);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fake.patches().is_empty(), "{:?}", fake.patches());

    // Binds to the virtual node: the cost is added, at that version.
    let bound = fake.put_pod("MODIFIED", sent_pod("team-a", "web-1", Some(VIRTUAL), "1"));
    assert!(
        eventually(|| fake.pod("team-a", "web-1")["metadata"]["annotations"][COST] == "-1000")
            .await
    );
    let patches = fake.patches();
    assert_eq!(patches.len(), 1, "{patches:?}");
    assert_eq!(patches[0].0, "team-a/web-1");
    assert_eq!(
        patches[0].1["metadata"]["resourceVersion"],
        bound["metadata"]["resourceVersion"]
    );
    assert_eq!(
        fake.pod("team-a", "web-own")["metadata"]["annotations"][COST],
        "250"
    );

    // The user sets a cost between the event and the patch: the patch is
    // refused (409) and the user's cost stays.
    let seen = sent_pod("team-a", "web-2", Some(VIRTUAL), "1");
    let mut changed = seen.clone();
    changed["metadata"]["annotations"][COST] = json!("7");
    changed["metadata"]["resourceVersion"] = json!("9999");
    let announced = fake.put_pod("ADDED", seen);
    {
        let mut world = fake.world.lock().unwrap();
        world.pods.insert("team-a/web-2".into(), changed);
    }
    assert!(eventually(|| fake.patches().len() == 2).await);
    assert_eq!(
        fake.patches()[1].1["metadata"]["resourceVersion"],
        announced["metadata"]["resourceVersion"]
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        fake.pod("team-a", "web-2")["metadata"]["annotations"][COST],
        "7"
    );
    assert!(
        eventually(|| hook
            .state
            .metrics
            .encode()
            .contains(r#"eci_profile_deletion_cost_patches_total{result="conflict"} 1"#))
        .await
    );
    // Pods no rule selected (sent by hand: no record annotation) are left alone.
    let mut by_hand = sent_pod("team-a", "by-hand", Some(VIRTUAL), "1");
    by_hand["metadata"]["annotations"] = json!({});
    fake.put_pod("ADDED", by_hand);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.patches().len(), 2);
}

#[tokio::test]
async fn a_node_labelled_virtual_later_counts_its_pods() {
    let fake = Fake::start(
        &[("vk-new", json!({}))],
        &[sent_pod("team-a", "web-1", Some("vk-new"), "1")],
    )
    .await;
    let hook = Webhook::following(&fake, budgeted_profile(r#"{"pods": 10}"#), None);
    hook.until_ready().await;
    fake.watching("/api/v1/nodes").await;
    assert_eq!(hook.state.ledger.lock().unwrap().used("team-a").pods.0, 0);
    let labelled = node("vk-new", virtual_node_labels(), 20);
    let _ = fake.node_watch.send((
        Instant::now(),
        json!({"type": "ADDED", "object": labelled}).to_string(),
    ));
    assert!(eventually(|| hook.state.ledger.lock().unwrap().used("team-a").pods.0 == 1000).await);
}

/// The overshoot of one budget with several replicas: each counts from its
/// own watch, so what the others admitted within the watch delay is unseen.
/// `REPLICAS` webhooks share one fake API whose watch events arrive
/// `DELAY_MS` late; admissions come at `RATE` per second, round-robin, and
/// every pod sent is created at once. Prints the pods sent against a budget
/// of `LIMIT`.
///
///     cargo test --release --test virtual_node_budgets -- --ignored --nocapture budget_overshoot
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: prints the overshoot"]
async fn budget_overshoot_with_replicas() {
    let env = |name: &str, default: u64| -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let limit = env("LIMIT", 40);
    let rate = env("RATE", 200);
    for replicas in [1u64, 2, 3] {
        for delay_ms in [10u64, 100, 500] {
            let fake = Fake::start(&[(VIRTUAL, virtual_node_labels())], &[]).await;
            *fake.watch_delay.lock().unwrap() = Duration::from_millis(delay_ms);
            let hooks: Vec<Webhook> = (0..replicas)
                .map(|_| {
                    Webhook::following(
                        &fake,
                        budgeted_profile(&format!(r#"{{"pods": {limit}}}"#)),
                        None,
                    )
                })
                .collect();
            for hook in &hooks {
                hook.until_ready().await;
            }
            fake.watching("/api/v1/pods").await;
            let mut sent_pods = 0u64;
            let total = limit * 3;
            let mut tick = tokio::time::interval(Duration::from_secs(1) / rate as u32);
            for i in 0..total {
                tick.tick().await;
                let hook = &hooks[(i % replicas) as usize];
                let name = format!("web-{i}");
                let response = hook
                    .admit("team-a", &name, "100m", &format!("req-{i}"))
                    .await;
                if sent(&response) {
                    sent_pods += 1;
                    fake.put_pod("ADDED", created("team-a", &name, "100m", &response));
                }
            }
            println!(
                "replicas {replicas}, watch delay {delay_ms} ms, {rate} admissions/s: {sent_pods} sent against {limit} ({} over)",
                sent_pods.saturating_sub(limit)
            );
            if replicas == 1 {
                assert_eq!(sent_pods, limit, "one replica is exact");
            }
        }
    }
}
