//! The cluster sources against an in-process fake of the API endpoints they
//! use (list/watch of one ConfigMap, metadata list/watch and get of
//! namespaces, Events), over a real HTTP connection, with the same kube-rs
//! client code that runs in a cluster.

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
use axum::routing::{get, patch, post};
use common::{admission_fixture, eventually, is_watch, serve_command, serving_addresses};
use eci_profile::decision::Exclusions;
use eci_profile::namespaces::NamespaceLookup as _;
use eci_profile::profile::Profile;
use eci_profile::server::{Limits, State, cluster};
use eci_profile::sources::cluster::NamespaceCache;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tokio::sync::broadcast;

// ---------- the fake API server ----------

#[derive(Default)]
struct World {
    configmap: Option<Value>,
    /// Namespaces listed and watched.
    namespaces: BTreeMap<String, Value>,
    /// Namespaces that exist for GET but are not listed yet (just created).
    fresh: BTreeMap<String, Value>,
    requests: Vec<String>,
    events: Vec<Value>,
    webhook_config: Option<Value>,
    /// How many writes of the webhook configuration answer 409 first.
    conflicts: usize,
    /// The ValidatingWebhookConfiguration (get and update only).
    validating_config: Option<Value>,
    /// Selector objects by name; `None`: their CRD is not installed.
    selectors: Option<BTreeMap<String, Value>>,
    /// The versions the Selector CRD serves.
    selector_versions: Vec<&'static str>,
    /// Listing Selectors is forbidden (RBAC without them).
    selectors_forbidden: bool,
}

struct Fake {
    addr: SocketAddr,
    world: Arc<Mutex<World>>,
    version: Arc<AtomicU64>,
    configmap_watch: broadcast::Sender<String>,
    namespace_watch: broadcast::Sender<String>,
    webhook_config_watch: broadcast::Sender<String>,
    selector_watch: broadcast::Sender<String>,
}

#[derive(Clone)]
struct FakeState {
    world: Arc<Mutex<World>>,
    version: Arc<AtomicU64>,
    configmap_watch: broadcast::Sender<String>,
    namespace_watch: broadcast::Sender<String>,
    webhook_config_watch: broadcast::Sender<String>,
    selector_watch: broadcast::Sender<String>,
}

/// Ends a watch stream, as when the API server drops the connection.
const CLOSE: &str = "CLOSE";

fn configmap_object(version: u64, data: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "eci-profile", "namespace": "kube-system", "uid": "cm-uid",
                     "resourceVersion": version.to_string()},
        "data": data
    })
}

fn namespace_object(name: &str, labels: Value, version: u64) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
        "metadata": {"name": name, "labels": labels, "resourceVersion": version.to_string(), "uid": format!("ns-{name}")}
    })
}

fn record(state: &FakeState, method: &str, path: &str, query: &Option<String>) {
    let line = match query {
        Some(q) => format!("{method} {path}?{q}"),
        None => format!("{method} {path}"),
    };
    state.world.lock().unwrap().requests.push(line);
}

fn watch_stream(rx: broadcast::Receiver<String>) -> Body {
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(line) if line == CLOSE => None,
            Ok(line) => Some((Ok::<_, Infallible>(Bytes::from(line + "\n")), rx)),
            Err(_) => None,
        }
    });
    Body::from_stream(lines)
}

async fn list_or_watch_configmaps(
    Extract(state): Extract<FakeState>,
    Path(namespace): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    record(
        &state,
        "GET",
        &format!("/api/v1/namespaces/{namespace}/configmaps"),
        &query,
    );
    if is_watch(&query) {
        return watch_stream(state.configmap_watch.subscribe()).into_response();
    }
    let world = state.world.lock().unwrap();
    let items: Vec<Value> = world.configmap.iter().cloned().collect();
    let version = state.version.load(Ordering::SeqCst);
    axum::Json(json!({"apiVersion": "v1", "kind": "ConfigMapList",
                      "metadata": {"resourceVersion": version.to_string()}, "items": items}))
    .into_response()
}

async fn list_or_watch_namespaces(
    Extract(state): Extract<FakeState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    record(&state, "GET", "/api/v1/namespaces", &query);
    common::assert_metadata_only(&headers);
    if is_watch(&query) {
        return watch_stream(state.namespace_watch.subscribe()).into_response();
    }
    let world = state.world.lock().unwrap();
    let version = state.version.load(Ordering::SeqCst);
    axum::Json(
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                      "metadata": {"resourceVersion": version.to_string()},
                      "items": world.namespaces.values().cloned().collect::<Vec<_>>()}),
    )
    .into_response()
}

async fn get_namespace(Extract(state): Extract<FakeState>, Path(name): Path<String>) -> Response {
    record(&state, "GET", &format!("/api/v1/namespaces/{name}"), &None);
    let world = state.world.lock().unwrap();
    match world.namespaces.get(&name).or_else(|| world.fresh.get(&name)) {
        Some(ns) => axum::Json(ns.clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                              "reason": "NotFound", "code": 404, "message": format!("namespaces \"{name}\" not found")})),
        )
            .into_response(),
    }
}

async fn get_webhook_config(
    Extract(state): Extract<FakeState>,
    Path(name): Path<String>,
) -> Response {
    record(
        &state,
        "GET",
        &format!("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}"),
        &None,
    );
    match state.world.lock().unwrap().webhook_config.clone() {
        Some(config) => axum::Json(config).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

const WEBHOOK_CONFIGS: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations";

async fn list_or_watch_webhook_configs(
    Extract(state): Extract<FakeState>,
    RawQuery(query): RawQuery,
) -> Response {
    record(&state, "GET", WEBHOOK_CONFIGS, &query);
    if is_watch(&query) {
        return watch_stream(state.webhook_config_watch.subscribe()).into_response();
    }
    let world = state.world.lock().unwrap();
    let version = state.version.load(Ordering::SeqCst);
    let items: Vec<Value> = world.webhook_config.iter().cloned().collect();
    axum::Json(json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfigurationList",
                      "metadata": {"resourceVersion": version.to_string()}, "items": items}))
    .into_response()
}

async fn put_webhook_config(
    Extract(state): Extract<FakeState>,
    Path(name): Path<String>,
    axum::Json(mut config): axum::Json<Value>,
) -> Response {
    record(
        &state,
        "PUT",
        &format!("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}"),
        &None,
    );
    let mut world = state.world.lock().unwrap();
    let current = world.webhook_config.clone().unwrap();
    if world.conflicts > 0 {
        world.conflicts -= 1;
        // Someone else wrote in between.
        let mut other = current;
        other["metadata"]["resourceVersion"] = json!("conflicted");
        world.webhook_config = Some(other);
        return (
            StatusCode::CONFLICT,
            axum::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
                              "message": "the object has been modified"})),
        )
            .into_response();
    }
    if config["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
        return (
            StatusCode::CONFLICT,
            axum::Json(json!({"kind": "Status", "code": 409, "reason": "Conflict"})),
        )
            .into_response();
    }
    let version = state.version.fetch_add(1, Ordering::SeqCst) + 1;
    config["metadata"]["resourceVersion"] = json!(version.to_string());
    world.webhook_config = Some(config.clone());
    let _ = state
        .webhook_config_watch
        .send(json!({"type": "MODIFIED", "object": config}).to_string());
    axum::Json(config).into_response()
}

const VALIDATING_CONFIGS: &str =
    "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations";

async fn get_validating_config(
    Extract(state): Extract<FakeState>,
    Path(name): Path<String>,
) -> Response {
    record(
        &state,
        "GET",
        &format!("{VALIDATING_CONFIGS}/{name}"),
        &None,
    );
    match state.world.lock().unwrap().validating_config.clone() {
        Some(config) => axum::Json(config).into_response(),
        None => not_found(&name),
    }
}

async fn put_validating_config(
    Extract(state): Extract<FakeState>,
    Path(name): Path<String>,
    axum::Json(mut config): axum::Json<Value>,
) -> Response {
    record(
        &state,
        "PUT",
        &format!("{VALIDATING_CONFIGS}/{name}"),
        &None,
    );
    let version = state.version.fetch_add(1, Ordering::SeqCst) + 1;
    config["metadata"]["resourceVersion"] = json!(version.to_string());
    state.world.lock().unwrap().validating_config = Some(config.clone());
    axum::Json(config).into_response()
}

fn not_found(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                          "reason": "NotFound", "code": 404, "message": format!("{what} not found")})),
    )
        .into_response()
}

/// `GET /apis/eci.aliyun.com`: the group, when the Selector CRD is installed.
async fn selector_group(Extract(state): Extract<FakeState>) -> Response {
    record(&state, "GET", "/apis/eci.aliyun.com", &None);
    let world = state.world.lock().unwrap();
    if world.selectors.is_none() {
        return not_found("the server could not find the requested resource");
    }
    let versions: Vec<Value> = world
        .selector_versions
        .iter()
        .map(|v| json!({"groupVersion": format!("eci.aliyun.com/{v}"), "version": v}))
        .collect();
    axum::Json(
        json!({"apiVersion": "v1", "kind": "APIGroup", "name": "eci.aliyun.com",
                      "versions": versions, "preferredVersion": versions[0]}),
    )
    .into_response()
}

async fn list_or_watch_selectors(
    Extract(state): Extract<FakeState>,
    Path(version): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let path = format!("/apis/eci.aliyun.com/{version}/selectors");
    record(&state, "GET", &path, &query);
    {
        let world = state.world.lock().unwrap();
        if world.selectors.is_none() || !world.selector_versions.contains(&version.as_str()) {
            return not_found(&path);
        }
    }
    if state.world.lock().unwrap().selectors_forbidden {
        return (
            StatusCode::FORBIDDEN,
            axum::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
                              "message": "selectors.eci.aliyun.com is forbidden"})),
        )
            .into_response();
    }
    if is_watch(&query) {
        return watch_stream(state.selector_watch.subscribe()).into_response();
    }
    let world = state.world.lock().unwrap();
    let version_now = state.version.load(Ordering::SeqCst);
    let items: Vec<Value> = world
        .selectors
        .iter()
        .flat_map(|s| s.values().cloned())
        .collect();
    axum::Json(
        json!({"apiVersion": format!("eci.aliyun.com/{version}"), "kind": "SelectorList",
                      "metadata": {"resourceVersion": version_now.to_string()}, "items": items}),
    )
    .into_response()
}

async fn create_event(
    Extract(state): Extract<FakeState>,
    Path(namespace): Path<String>,
    axum::Json(event): axum::Json<Value>,
) -> Response {
    record(
        &state,
        "POST",
        &format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events"),
        &None,
    );
    state.world.lock().unwrap().events.push(event.clone());
    (StatusCode::CREATED, axum::Json(event)).into_response()
}

async fn patch_event(
    Extract(state): Extract<FakeState>,
    Path((namespace, name)): Path<(String, String)>,
    axum::Json(event): axum::Json<Value>,
) -> Response {
    record(
        &state,
        "PATCH",
        &format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events/{name}"),
        &None,
    );
    state.world.lock().unwrap().events.push(event.clone());
    axum::Json(event).into_response()
}

impl Fake {
    async fn start(configmap_data: Option<Value>, namespaces: &[(&str, Value)]) -> Fake {
        eci_profile::tls::install_default_provider();
        let version = Arc::new(AtomicU64::new(10));
        let mut world = World::default();
        if let Some(data) = configmap_data {
            world.configmap = Some(configmap_object(10, data));
        }
        for (name, labels) in namespaces {
            world
                .namespaces
                .insert(name.to_string(), namespace_object(name, labels.clone(), 10));
        }
        let world = Arc::new(Mutex::new(world));
        let (configmap_watch, _) = broadcast::channel(64);
        let (namespace_watch, _) = broadcast::channel(64);
        let (webhook_config_watch, _) = broadcast::channel(64);
        let (selector_watch, _) = broadcast::channel(2048);
        let state = FakeState {
            world: world.clone(),
            version: version.clone(),
            configmap_watch: configmap_watch.clone(),
            namespace_watch: namespace_watch.clone(),
            webhook_config_watch: webhook_config_watch.clone(),
            selector_watch: selector_watch.clone(),
        };
        let app = Router::new()
            .route(
                "/api/v1/namespaces/{namespace}/configmaps",
                get(list_or_watch_configmaps),
            )
            .route("/api/v1/namespaces", get(list_or_watch_namespaces))
            .route("/api/v1/namespaces/{name}", get(get_namespace))
            .route(
                "/apis/events.k8s.io/v1/namespaces/{namespace}/events",
                post(create_event),
            )
            .route(
                "/apis/events.k8s.io/v1/namespaces/{namespace}/events/{name}",
                patch(patch_event),
            )
            .route("/apis/eci.aliyun.com", get(selector_group))
            .route(
                "/apis/eci.aliyun.com/{version}/selectors",
                get(list_or_watch_selectors),
            )
            .route(
                &format!("{VALIDATING_CONFIGS}/{{name}}"),
                get(get_validating_config).put(put_validating_config),
            )
            .route(WEBHOOK_CONFIGS, get(list_or_watch_webhook_configs))
            .route(
                "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}",
                get(get_webhook_config).put(put_webhook_config),
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Fake {
            addr,
            world,
            version,
            configmap_watch,
            namespace_watch,
            webhook_config_watch,
            selector_watch,
        }
    }

    fn client(&self) -> kube::Client {
        let config = kube::Config::new(format!("http://{}", self.addr).parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    fn requests(&self) -> Vec<String> {
        self.world.lock().unwrap().requests.clone()
    }

    fn events(&self) -> Vec<Value> {
        self.world.lock().unwrap().events.clone()
    }

    fn count(&self, prefix: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.starts_with(prefix))
            .count()
    }

    /// Waits until `n` watch requests on `path` have arrived (events sent
    /// before a watch is open would be lost).
    async fn watches(&self, path: &str, n: usize) {
        let prefix = format!("GET {path}?");
        let ok = eventually(Duration::from_secs(10), || {
            self.requests()
                .iter()
                .filter(|r| r.starts_with(&prefix) && r.contains("watch=true"))
                .count()
                >= n
        })
        .await;
        assert!(ok, "no watch #{n} on {path}: {:?}", self.requests());
    }

    /// Sends a ConfigMap watch event with a new resourceVersion.
    fn configmap_event(&self, kind: &str, data: Value) {
        let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        let object = configmap_object(version, data);
        let _ = self
            .configmap_watch
            .send(json!({"type": kind, "object": object}).to_string());
    }

    fn namespace_event(&self, kind: &str, name: &str, labels: Value) {
        let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        let object = namespace_object(name, labels, version);
        let _ = self
            .namespace_watch
            .send(json!({"type": kind, "object": object}).to_string());
    }

    /// Installs the Selector CRD, serving `versions` (the first stored), with `objects`.
    fn install_selector_crd(&self, versions: &[&'static str], objects: &[Value]) {
        let mut world = self.world.lock().unwrap();
        world.selector_versions = versions.to_vec();
        world.selectors = Some(
            objects
                .iter()
                .map(|o| {
                    (
                        o["metadata"]["name"].as_str().unwrap().to_string(),
                        o.clone(),
                    )
                })
                .collect(),
        );
    }

    /// Deletes the CRD: its objects are deleted (and their deletion
    /// announced), then the resource is no longer served.
    fn delete_selector_crd(&self) {
        let objects: Vec<Value> = self
            .world
            .lock()
            .unwrap()
            .selectors
            .take()
            .into_iter()
            .flat_map(|s| s.into_values())
            .collect();
        for object in objects {
            let _ = self
                .selector_watch
                .send(json!({"type": "DELETED", "object": object}).to_string());
        }
        let _ = self.selector_watch.send(CLOSE.into());
    }

    /// Stores a Selector and announces it (`ADDED` or `MODIFIED`), with a new resourceVersion.
    fn put_selector(&self, kind: &str, mut object: Value) -> Value {
        let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        self.world
            .lock()
            .unwrap()
            .selectors
            .get_or_insert_default()
            .insert(name, object.clone());
        let _ = self
            .selector_watch
            .send(json!({"type": kind, "object": object}).to_string());
        object
    }

    /// Deletes a Selector and announces it.
    fn delete_selector(&self, name: &str) {
        let object = self
            .world
            .lock()
            .unwrap()
            .selectors
            .as_mut()
            .and_then(|s| s.remove(name))
            .unwrap();
        let _ = self
            .selector_watch
            .send(json!({"type": "DELETED", "object": object}).to_string());
    }

    /// A namespace that GET finds but list/watch have not shown yet.
    fn create_unlisted_namespace(&self, name: &str, labels: Value) {
        self.world
            .lock()
            .unwrap()
            .fresh
            .insert(name.to_string(), namespace_object(name, labels, 99));
    }
}

// ---------- the webhook side ----------

const CM: &str = "/api/v1/namespaces/kube-system/configmaps";

fn selectors(json_text: &str) -> Value {
    json!({"selectors": json_text, "vpcId": "vpc-1"})
}

const TWO_RULES: &str = r#"[{"name": "eci-ns", "namespaceSelector": {"matchLabels": {"eci": "true"}}},
                            {"name": "eci-pod", "objectSelector": {"matchLabels": {"eci": "true"}}}]"#;

struct Webhook {
    state: Arc<State>,
}

impl Webhook {
    fn new(namespaces: Arc<dyn eci_profile::namespaces::NamespaceLookup>) -> Self {
        let state = Arc::new(State::new(
            Profile::empty(),
            namespaces,
            Exclusions::default(),
            Limits::default(),
        ));
        state.readiness.set_certificate_served();
        Self { state }
    }

    /// Follows the fake's `kube-system/eci-profile`.
    fn follow_profile(&self, fake: &Fake) {
        cluster::follow_profile_configmap(
            &self.state,
            fake.client(),
            "kube-system",
            "eci-profile",
            None,
        );
    }

    /// Waits (at most 10 s) until every source has synced.
    async fn until_ready(&self) {
        let ready = eventually(Duration::from_secs(10), || {
            self.state.readiness.check().is_ok()
        })
        .await;
        assert!(ready, "not ready: {:?}", self.state.readiness.check());
    }

    fn rule_count(&self) -> usize {
        self.state.profile.get().rule_count()
    }

    async fn readyz(&self) -> (StatusCode, String) {
        common::admin_get(&self.state, "/readyz").await
    }

    async fn mutate(&self, body: Vec<u8>) -> Value {
        common::mutate(&self.state, body).await
    }
}

/// A fake API server with the two-rule profile, and a webhook that has
/// loaded it and is watching for changes.
async fn following_two_rules() -> (Fake, Webhook) {
    let fake = Fake::start(Some(selectors(TWO_RULES)), &[]).await;
    let hook = Webhook::new(Arc::new(
        eci_profile::namespaces::StaticNamespaces::default(),
    ));
    hook.follow_profile(&fake);
    assert!(eventually(Duration::from_secs(10), || hook.rule_count() == 2).await);
    fake.watches(CM, 1).await;
    (fake, hook)
}

/// A webhook following a profile ConfigMap that does not exist, ready.
async fn following_no_configmap() -> (Fake, Webhook) {
    let fake = Fake::start(None, &[]).await;
    let hook = Webhook::new(Arc::new(
        eci_profile::namespaces::StaticNamespaces::default(),
    ));
    hook.follow_profile(&fake);
    hook.until_ready().await;
    (fake, hook)
}

fn event_reasons(fake: &Fake) -> Vec<(String, String, String)> {
    fake.events()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or("").to_string(),
                e["reason"].as_str().unwrap_or("").to_string(),
                e["note"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

// ---------- scenarios ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_load_is_published_reported_and_makes_ready() {
    let fake = Fake::start(
        Some(selectors(TWO_RULES)),
        &[("team-a", json!({"eci": "true"}))],
    )
    .await;
    let cache = Arc::new(NamespaceCache::new(fake.client()));
    let hook = Webhook::new(cache.clone());
    cluster::follow_namespaces(&hook.state, cache.clone());
    cluster::follow_profile_configmap(
        &hook.state,
        fake.client(),
        "kube-system",
        "eci-profile",
        Some("pod-0".into()),
    );

    // The profile is published with the listing; readiness follows when it is complete.
    hook.until_ready().await;
    assert_eq!(hook.readyz().await.0, StatusCode::OK);
    assert_eq!(hook.rule_count(), 2);
    assert!(cache.is_synced());
    assert!(eventually(Duration::from_secs(5), || !fake.events().is_empty()).await);
    let events = fake.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["type"], "Normal");
    assert_eq!(events[0]["reason"], "ProfileLoaded");
    assert_eq!(events[0]["note"], "profile loaded: 2 selectors");
    assert_eq!(events[0]["regarding"]["kind"], "ConfigMap");
    assert_eq!(events[0]["regarding"]["name"], "eci-profile");
    assert_eq!(events[0]["reportingController"], "eci-profile");
    assert_eq!(events[0]["reportingInstance"], "pod-0");
    // Only the one ConfigMap is read: by field selector on its name.
    let reads: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.starts_with(&format!("GET {CM}")))
        .collect();
    assert!(!reads.is_empty());
    for r in &reads {
        assert!(
            r.contains("fieldSelector=metadata.name%3Deci-profile"),
            "{r}"
        );
    }
    // Namespace labels from the cache drive namespaceSelectors.
    assert_eq!(
        cache
            .labels("team-a")
            .unwrap()
            .get("eci")
            .map(String::as_str),
        Some("true")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_applies_within_a_second() {
    let (fake, hook) = following_two_rules().await;
    let started = Instant::now();
    fake.configmap_event(
        "MODIFIED",
        selectors(r#"[{"name": "only", "objectSelector": {}}]"#),
    );
    assert!(
        eventually(Duration::from_secs(1), || hook.rule_count() == 1).await,
        "applied within a second"
    );
    let elapsed = started.elapsed();
    println!("update applied after {elapsed:?}");
    assert!(eventually(Duration::from_secs(5), || fake.events().len() == 2).await);
    assert_eq!(
        event_reasons(&fake)[1],
        (
            "Normal".into(),
            "ProfileLoaded".into(),
            "profile loaded: 1 selectors".into()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_update_keeps_the_last_good_profile_and_warns() {
    let (fake, hook) = following_two_rules().await;
    let digest = hook.state.profile.get().digest();
    fake.configmap_event(
        "MODIFIED",
        selectors(r#"[{"name": "x", "policy": "sometimes", "objectSelector": {}}]"#),
    );
    assert!(
        eventually(Duration::from_secs(5), || fake.events().len() == 2).await,
        "{:?}",
        fake.events()
    );
    let (kind, reason, note) = event_reasons(&fake)[1].clone();
    assert_eq!(
        (kind.as_str(), reason.as_str()),
        ("Warning", "InvalidProfile")
    );
    assert!(note.contains("unknown policy \"sometimes\""), "{note}");
    assert_eq!(
        hook.state.profile.get().digest(),
        digest,
        "the last good profile stays"
    );
    assert!(
        hook.state
            .metrics
            .encode()
            .contains(r#"eci_profile_profile_reloads_total{result="failure"} 1"#)
    );
}

/// The value of a metric line (`name{labels}`), 0 when absent.
fn metric(hook: &Webhook, line: &str) -> u64 {
    hook.state
        .metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(line)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

const FAILURES: &str = r#"eci_profile_profile_reloads_total{result="failure"}"#;
const FAILING: &str = "eci_profile_profile_reload_failing";
const INVALID: &str = r#"[{"name": "x", "policy": "sometimes", "objectSelector": {}}]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_failing_stays_set_while_the_configmap_is_invalid() {
    let (fake, hook) = following_two_rules().await;
    let digest = hook.state.profile.get().digest();
    assert_eq!(metric(&hook, FAILING), 0);
    let events = |n: usize| {
        let fake = &fake;
        async move {
            assert!(
                eventually(Duration::from_secs(5), || fake.events().len() == n).await,
                "{:?}",
                fake.events()
            )
        }
    };
    fake.configmap_event("MODIFIED", selectors(INVALID));
    events(2).await;
    assert_eq!((metric(&hook, FAILURES), metric(&hook, FAILING)), (1, 1));
    // Edited again (say, a label) with the same invalid data: a Warning
    // Event for the new version, but one failure for one content, and the
    // gauge stays set.
    fake.configmap_event("MODIFIED", selectors(INVALID));
    events(3).await;
    assert_eq!((metric(&hook, FAILURES), metric(&hook, FAILING)), (1, 1));
    // Reverted to the profile in use: nothing is pending any more.
    fake.configmap_event("MODIFIED", selectors(TWO_RULES));
    events(4).await;
    assert_eq!((metric(&hook, FAILURES), metric(&hook, FAILING)), (1, 0));
    assert_eq!(hook.state.profile.get().digest(), digest);
    // Invalid again, then deleted: no ConfigMap is a valid state.
    fake.configmap_event("MODIFIED", selectors(INVALID));
    events(5).await;
    assert_eq!((metric(&hook, FAILURES), metric(&hook, FAILING)), (2, 1));
    fake.configmap_event("DELETED", selectors(INVALID));
    assert!(eventually(Duration::from_secs(5), || hook.rule_count() == 0).await);
    assert_eq!((metric(&hook, FAILURES), metric(&hook, FAILING)), (2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_failing_clears_when_an_invalid_configmap_is_deleted() {
    // No ConfigMap at start: no selectors, the profile in use.
    let (fake, hook) = following_no_configmap().await;
    fake.watches(CM, 1).await;
    fake.configmap_event("ADDED", selectors(INVALID));
    assert!(eventually(Duration::from_secs(5), || metric(&hook, FAILING) == 1).await);
    fake.configmap_event("DELETED", selectors(INVALID));
    assert!(
        eventually(Duration::from_secs(5), || metric(&hook, FAILING) == 0).await,
        "deleted: the source holds the profile in use (no selectors)"
    );
    assert_eq!(metric(&hook, FAILURES), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_configmap_means_no_selectors() {
    let (fake, hook) = following_two_rules().await;
    fake.configmap_event("DELETED", selectors(TWO_RULES));
    assert!(eventually(Duration::from_secs(5), || hook.rule_count() == 0).await);
    // A pod that the old profile selected is now left alone.
    let answer = hook
        .mutate(admission_fixture("create-labelled-pod-with-everything"))
        .await;
    assert!(answer["response"].get("patch").is_none(), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_configmap_at_start_is_synced_with_no_selectors() {
    let (fake, hook) = following_no_configmap().await;
    assert_eq!(hook.rule_count(), 0);
    // Created later: picked up.
    fake.watches(CM, 1).await;
    fake.configmap_event("ADDED", selectors(TWO_RULES));
    assert!(eventually(Duration::from_secs(5), || hook.rule_count() == 2).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_watches_are_resumed() {
    let fake = Fake::start(Some(selectors(TWO_RULES)), &[("a", json!({}))]).await;
    let cache = Arc::new(NamespaceCache::new(fake.client()));
    let hook = Webhook::new(cache.clone());
    cluster::follow_namespaces(&hook.state, cache.clone());
    hook.follow_profile(&fake);
    fake.watches(CM, 1).await;
    fake.watches("/api/v1/namespaces", 1).await;
    // The API server drops both watches.
    let _ = fake.configmap_watch.send(CLOSE.into());
    let _ = fake.namespace_watch.send(CLOSE.into());
    fake.watches(CM, 2).await;
    fake.watches("/api/v1/namespaces", 2).await;
    // Changes after the reconnection arrive.
    fake.configmap_event(
        "MODIFIED",
        selectors(r#"[{"name": "after", "objectSelector": {}}]"#),
    );
    fake.namespace_event("ADDED", "b", json!({"eci": "true"}));
    assert!(eventually(Duration::from_secs(5), || hook.rule_count() == 1).await);
    assert!(eventually(Duration::from_secs(5), || cache.labels("b").is_some()).await);
    assert_eq!(hook.readyz().await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_watch_follows_label_changes_and_deletions() {
    let fake = Fake::start(None, &[("a", json!({"eci": "false"}))]).await;
    let cache = Arc::new(NamespaceCache::new(fake.client()));
    let hook = Webhook::new(cache.clone());
    cluster::follow_namespaces(&hook.state, cache.clone());
    fake.watches("/api/v1/namespaces", 1).await;
    assert_eq!(
        cache.labels("a").unwrap().get("eci").map(String::as_str),
        Some("false")
    );
    fake.namespace_event("MODIFIED", "a", json!({"eci": "true"}));
    assert!(
        eventually(Duration::from_secs(5), || cache
            .labels("a")
            .is_some_and(|l| l.get("eci").map(String::as_str) == Some("true")))
        .await
    );
    fake.namespace_event("DELETED", "a", json!({}));
    assert!(eventually(Duration::from_secs(5), || cache.labels("a").is_none()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_namespace_is_fetched_once() {
    let fake = Fake::start(Some(selectors(TWO_RULES)), &[]).await;
    let cache = Arc::new(NamespaceCache::new(fake.client()));
    let hook = Webhook::new(cache.clone());
    cluster::follow_namespaces(&hook.state, cache.clone());
    hook.follow_profile(&fake);
    hook.until_ready().await;
    // A namespace created a moment ago, labelled eci=true, not yet seen by the watch.
    fake.create_unlisted_namespace("brand-new", json!({"eci": "true"}));
    let mut request: Value = serde_json::from_slice(&admission_fixture("create-bare-pod")).unwrap();
    request["request"]["namespace"] = json!("brand-new");
    request["request"]["object"]["metadata"]["namespace"] = json!("brand-new");
    let body = serde_json::to_vec(&request).unwrap();
    let answer = hook.mutate(body.clone()).await;
    assert_eq!(
        answer["response"]["patchType"], "JSONPatch",
        "selected by its namespace label: {answer}"
    );
    assert!(answer["response"].get("warnings").is_none(), "{answer}");
    hook.mutate(body.clone()).await;
    assert_eq!(
        fake.count("GET /api/v1/namespaces/brand-new"),
        1,
        "fetched once"
    );
    // An unknown namespace that does not exist is also asked for only once.
    request["request"]["namespace"] = json!("ghost");
    let body = serde_json::to_vec(&request).unwrap();
    let answer = hook.mutate(body.clone()).await;
    assert!(answer["response"].get("patch").is_none());
    hook.mutate(body).await;
    assert_eq!(fake.count("GET /api/v1/namespaces/ghost"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_every_source_has_synced() {
    // An API server that is not there: nothing ever syncs.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    eci_profile::tls::install_default_provider();
    let client =
        kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap()))
            .unwrap();
    let cache = Arc::new(NamespaceCache::new(client.clone()));
    let hook = Webhook::new(cache.clone());
    assert_eq!(
        hook.readyz().await.0,
        StatusCode::OK,
        "no source to wait for"
    );
    cluster::follow_namespaces(&hook.state, cache);
    cluster::follow_profile_configmap(&hook.state, client, "kube-system", "eci-profile", None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        hook.readyz().await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: namespace labels not synced\n".to_string()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_adds_this_replicas_ca_to_the_webhook_configuration() {
    use base64::Engine as _;
    let fake = Fake::start(None, &[]).await;
    let other_replica = eci_profile::certs::generate(&["other".into()], &[])
        .unwrap()
        .ca_pem;
    {
        let mut world = fake.world.lock().unwrap();
        world.webhook_config = Some(json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "eci-profile", "resourceVersion": "7"},
            "webhooks": [{
                "name": "eci-profile.eci-profile.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "clientConfig": {"service": {"namespace": "eci-profile-system", "name": "eci-profile", "path": "/mutate"},
                                 "caBundle": base64::engine::general_purpose::STANDARD.encode(&other_replica)}
            }]
        }));
        world.conflicts = 1;
    }
    let mine = eci_profile::certs::generate(
        &eci_profile::bootstrap::service_dns_names("eci-profile-system", "eci-profile"),
        &[],
    )
    .unwrap()
    .ca_pem;
    eci_profile::bootstrap::install_ca::<
        k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration,
    >(fake.client(), "eci-profile", &mine)
    .await
    .unwrap();
    let config = fake.world.lock().unwrap().webhook_config.clone().unwrap();
    let bundle = base64::engine::general_purpose::STANDARD
        .decode(
            config["webhooks"][0]["clientConfig"]["caBundle"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    let bundle = String::from_utf8(bundle).unwrap();
    assert!(
        bundle.contains(other_replica.trim()),
        "the other replica's CA is kept"
    );
    assert!(bundle.contains(mine.trim()), "this replica's CA is added");
    assert_eq!(
        fake.count("PUT /apis/admissionregistration.k8s.io"),
        2,
        "retried after the conflict"
    );
    // Adding it again writes nothing.
    eci_profile::bootstrap::install_ca::<
        k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration,
    >(fake.client(), "eci-profile", &mine)
    .await
    .unwrap();
    assert_eq!(fake.count("PUT /apis/admissionregistration.k8s.io"), 2);
}

/// A webhook configuration with two webhooks trusting `cas`.
fn webhook_configuration(cas: &[String], version: &str) -> Value {
    use base64::Engine as _;
    let bundle = base64::engine::general_purpose::STANDARD.encode(cas.join("\n"));
    let webhook = |name: &str| {
        json!({"name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
               "clientConfig": {"service": {"namespace": "eci-profile-system", "name": "eci-profile", "path": "/mutate"},
                                "caBundle": bundle}})
    };
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "eci-profile", "resourceVersion": version},
        "webhooks": [webhook("pods.eci-profile.io"), webhook("more.eci-profile.io")]
    })
}

/// The caBundle of each webhook of the fake's configuration, as text.
fn bundles(fake: &Fake) -> Vec<String> {
    use base64::Engine as _;
    let config = fake.world.lock().unwrap().webhook_config.clone().unwrap();
    config["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let b64 = w["clientConfig"]["caBundle"].as_str().unwrap_or("");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            String::from_utf8(bytes).unwrap()
        })
        .collect()
}

/// Other replicas restart: their CAs replace the whole bundle (`announce`:
/// with a watch event, as the API server sends).
fn push_out(fake: &Fake, others: &[String], announce: bool) {
    let version = fake.version.fetch_add(1, Ordering::SeqCst) + 1;
    let config = webhook_configuration(others, &version.to_string());
    fake.world.lock().unwrap().webhook_config = Some(config.clone());
    if announce {
        let _ = fake
            .webhook_config_watch
            .send(json!({"type": "MODIFIED", "object": config}).to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_adds_this_replicas_ca_again_when_it_is_pushed_out() {
    use eci_profile::bootstrap::{self, KEEP_CAS};
    let fake = Fake::start(None, &[]).await;
    fake.world.lock().unwrap().webhook_config = Some(webhook_configuration(&[], "5"));
    let generate = |name: String| eci_profile::certs::generate(&[name], &[]).unwrap().ca_pem;
    let mine = generate("mine".into());
    bootstrap::install_ca::<
        k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration,
    >(fake.client(), "eci-profile", &mine)
    .await
    .unwrap();
    let puts = || fake.count(&format!("PUT {WEBHOOK_CONFIGS}/"));
    assert_eq!(puts(), 1);
    let metrics = Arc::new(eci_profile::metrics::Metrics::default());
    let added = |result: &str| {
        let line = format!("eci_profile_ca_bundle_updates_total{{result=\"{result}\"}} ");
        metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix(&line)?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let trusted = |ca: &str| bundles(&fake).iter().all(|b| b.contains(ca.trim()));

    // On a watch event that shows it missing (the periodic check is far off).
    // This replica's keeper, checking every `recheck` besides watching.
    let keep = |recheck| {
        tokio::spawn(bootstrap::keep_ca::<
            k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration,
        >(
            fake.client(),
            "eci-profile".into(),
            mine.clone(),
            metrics.clone(),
            recheck,
        ))
    };
    let keeper = keep(Duration::from_secs(3600));
    fake.watches(WEBHOOK_CONFIGS, 1).await;
    let others: Vec<String> = (0..KEEP_CAS)
        .map(|i| generate(format!("other-{i}")))
        .collect();
    fake.world.lock().unwrap().conflicts = 1;
    let started = Instant::now();
    push_out(&fake, &others, true);
    assert!(
        eventually(Duration::from_secs(5), || trusted(&mine)).await,
        "added again"
    );
    println!("added again after {:?}", started.elapsed());
    assert!(!trusted(&others[0]), "the oldest is pushed out in turn");
    for other in &others[1..] {
        assert!(trusted(other), "the others are kept");
    }
    assert!(eventually(Duration::from_secs(5), || added("success") == 1).await);
    assert_eq!(puts(), 3, "one write, retried after a conflict");
    // Its own write comes back as a watch event showing it: nothing more to do.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(puts(), 3);
    keeper.abort();

    // With no watch event, the periodic check finds it missing.
    let keeper = keep(Duration::from_millis(300));
    fake.watches(WEBHOOK_CONFIGS, 2).await;
    push_out(&fake, &others, false);
    assert!(
        eventually(Duration::from_secs(5), || trusted(&mine)).await,
        "added again by the periodic check"
    );
    keeper.abort();
    assert_eq!(added("failure"), 0);

    // Conflicting writes, again and again: given up after a few attempts,
    // counted and logged; the next event tries again.
    let keeper = keep(Duration::from_secs(3600));
    fake.watches(WEBHOOK_CONFIGS, 3).await;
    fake.world.lock().unwrap().conflicts = 5;
    push_out(&fake, &others, true);
    assert!(eventually(Duration::from_secs(5), || added("failure") == 1).await);
    assert!(!trusted(&mine));
    push_out(&fake, &others, true);
    assert!(
        eventually(Duration::from_secs(5), || trusted(&mine)).await,
        "added on the next event"
    );
    keeper.abort();

    // The calls made are exactly what the self-signed RBAC grants: get,
    // list and watch by field selector on the name, and update, of that one
    // configuration.
    let mut verbs = std::collections::BTreeSet::new();
    for request in fake.requests() {
        let Some((method, rest)) = request.split_once(' ') else {
            continue;
        };
        if !rest.starts_with(WEBHOOK_CONFIGS) {
            continue;
        }
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let verb = match (method, path == WEBHOOK_CONFIGS) {
            (_, true) => {
                assert!(
                    query.contains("fieldSelector=metadata.name%3Deci-profile"),
                    "{request}"
                );
                if is_watch(&Some(query.to_string())) {
                    "watch"
                } else {
                    "list"
                }
            }
            (method, false) => {
                assert_eq!(path, format!("{WEBHOOK_CONFIGS}/eci-profile"), "{request}");
                match method {
                    "GET" => "get",
                    "PUT" => "update",
                    other => panic!("unexpected {other}: {request}"),
                }
            }
        };
        verbs.insert(verb.to_string());
    }
    let rbac = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("manifests/overlays/self-signed/rbac-webhook-config.yaml"),
    )
    .unwrap();
    let documents: Vec<Value> = serde_saphyr::from_multiple(&rbac).unwrap();
    let rule = documents
        .iter()
        .filter(|d| d["kind"] == "ClusterRole")
        .flat_map(|d| d["rules"].as_array().unwrap().iter())
        .find(|r| r["resources"] == json!(["mutatingwebhookconfigurations"]))
        .expect("a rule for mutatingwebhookconfigurations");
    assert_eq!(rule["resourceNames"], json!(["eci-profile"]));
    let granted: std::collections::BTreeSet<String> = rule["verbs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(verbs, granted, "calls made vs verbs granted");
}

/// `eci-profile serve` in cluster mode, as the self-signed overlay runs it,
/// against the fake API server: it bootstraps its certificate into the
/// webhook configuration, syncs the profile and namespaces, becomes ready,
/// and mutates a pod by its namespace's labels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_in_cluster_mode_end_to_end() {
    use std::io::{BufRead as _, BufReader};
    use std::process::{Command, Stdio};
    let fake = Fake::start(
        Some(selectors(TWO_RULES)),
        &[("fx-plain", json!({"eci": "true"}))],
    )
    .await;
    fake.world.lock().unwrap().webhook_config = Some(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "eci-profile", "resourceVersion": "1"},
        "webhooks": [{"name": "pods.eci-profile.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                      "clientConfig": {"service": {"namespace": "eci-profile-system", "name": "eci-profile"}}}]
    }));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\nusers:\n- name: fake\n  user: {{}}\ncurrent-context: fake\n",
            fake.addr
        ),
    )
    .unwrap();
    let tls = dir.path().join("tls");
    let mut child = serve_command(&tls.join("tls.crt"), &tls.join("tls.key"))
        .args(["--shutdown-delay", "0s"])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args([
            "--webhook-config",
            "eci-profile",
            "--pod-name",
            "eci-profile-abc",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (webhook_addr, admin_addr) = tokio::task::spawn_blocking(move || {
        rx.iter()
            .find_map(|line| serving_addresses(&line))
            .expect("the server starts")
    })
    .await
    .unwrap();

    // The generated CA is in the webhook configuration's caBundle.
    let ca = std::fs::read_to_string(tls.join("ca.crt")).unwrap();
    let config = fake.world.lock().unwrap().webhook_config.clone().unwrap();
    let bundle = {
        use base64::Engine as _;
        let b64 = config["webhooks"][0]["clientConfig"]["caBundle"]
            .as_str()
            .unwrap();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap()
    };
    assert!(bundle.contains(ca.trim()));

    // Ready once both sources synced.
    let admin_get = |path: &'static str| async move {
        let stream = tokio::net::TcpStream::connect(admin_addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let request = axum::http::Request::get(path)
            .header("host", "a")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        sender.send_request(request).await.unwrap().status()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin_get("/readyz").await != StatusCode::OK {
        assert!(Instant::now() < deadline, "not ready in 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(eventually(Duration::from_secs(5), || !fake.events().is_empty()).await);
    assert_eq!(fake.events()[0]["reportingInstance"], "eci-profile-abc");

    // Other replicas push its CA out of the bundle: it adds it again.
    fake.watches(WEBHOOK_CONFIGS, 1).await;
    let others: Vec<String> = (0..eci_profile::bootstrap::KEEP_CAS)
        .map(|i| {
            eci_profile::certs::generate(&[format!("other-{i}")], &[])
                .unwrap()
                .ca_pem
        })
        .collect();
    push_out(&fake, &others, true);
    assert!(
        eventually(Duration::from_secs(5), || bundles(&fake)
            .iter()
            .all(|b| b.contains(ca.trim())))
        .await,
        "the CA is added again"
    );

    // A pod in fx-plain (labelled eci=true in the cluster) is mutated, over TLS
    // verified against the bootstrap CA.
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject as _;
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(eci_profile::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(webhook_addr).await.unwrap();
    let name =
        rustls::pki_types::ServerName::try_from("eci-profile.eci-profile-system.svc").unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = axum::http::Request::post("/mutate?timeout=3s")
        .header("host", "eci-profile.eci-profile-system.svc")
        .body(http_body_util::Full::new(Bytes::from(admission_fixture(
            "create-bare-pod",
        ))))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["response"]["patchType"], "JSONPatch", "{answer}");

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
}

// ---------- Selector objects ----------

const SELECTORS: &str = "/apis/eci.aliyun.com/v1/selectors";
const SELECTOR_RECHECK: Duration = Duration::from_millis(200);

fn selector_object(name: &str, priority: i32, spec: Value) -> Value {
    let mut spec = spec;
    spec["priority"] = json!(priority);
    json!({"apiVersion": "eci.aliyun.com/v1", "kind": "Selector",
           "metadata": {"name": name, "uid": format!("sel-{name}"), "resourceVersion": "10"},
           "spec": spec})
}

/// A Selector selecting pods labelled `eci: "true"` with policy `policy`.
fn opt_in_selector(name: &str, priority: i32, policy: &str) -> Value {
    selector_object(
        name,
        priority,
        json!({"objectLabels": {"matchLabels": {"eci": "true"}}, "policy": {policy: {}},
               "effect": {"labels": {"via": name}}}),
    )
}

impl Webhook {
    fn follow_selectors(&self, fake: &Fake) {
        cluster::follow_selectors_every(&self.state, fake.client(), None, SELECTOR_RECHECK);
    }

    /// The names of the rules in use, in the order they are tried.
    fn rule_names(&self) -> Vec<String> {
        let profile = self.state.profile.get();
        profile.rules().map(|r| r.name.clone()).collect()
    }

    /// The rule named `name` in use, as (priority, policy).
    fn rule(&self, name: &str) -> Option<(i32, String)> {
        let profile = self.state.profile.get();
        profile
            .rule(name)
            .map(|r| (r.priority, r.policy.to_string()))
    }
}

/// The ConfigMap with TWO_RULES and the Selector CRD with `objects`, followed.
async fn following_selectors(objects: &[Value]) -> (Fake, Webhook) {
    let fake = Fake::start(Some(selectors(TWO_RULES)), &[]).await;
    fake.install_selector_crd(&["v1", "v1beta1"], objects);
    let hook = Webhook::new(Arc::new(
        eci_profile::namespaces::StaticNamespaces::default(),
    ));
    hook.follow_profile(&fake);
    // The ConfigMap first: a name clash found when the ConfigMap changes
    // under a Selector already in use is logged and counted but gets its
    // Event only with the Selector's next change, so the order is fixed.
    assert!(eventually(Duration::from_secs(10), || hook.rule_count() == 2).await);
    hook.follow_selectors(&fake);
    hook.until_ready().await;
    fake.watches(SELECTORS, 1).await;
    (fake, hook)
}

fn invalid_selector_events(fake: &Fake) -> Vec<Value> {
    fake.events()
        .into_iter()
        .filter(|e| e["reason"] == "InvalidSelector")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_are_merged_and_followed_through_create_update_delete() {
    let (fake, hook) = following_selectors(&[opt_in_selector("top", 5, "fair")]).await;
    // Listed before ready: merged with the ConfigMap's rules, by priority.
    assert_eq!(hook.rule_names(), ["top", "eci-ns", "eci-pod"]);
    let answer = hook
        .mutate(admission_fixture("create-labelled-pod-with-everything"))
        .await;
    let patch = String::from_utf8(
        base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            answer["response"]["patch"].as_str().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(patch.contains(r#""value":"top,eci-pod""#), "{patch}");
    assert!(!patch.contains("nodeSelector"), "policy fair: {patch}");

    // Created.
    fake.put_selector("ADDED", opt_in_selector("also", 0, "virtualNodeOnly"));
    assert!(eventually(Duration::from_secs(5), || hook.rule_names().len() == 4).await);
    assert_eq!(hook.rule_names(), ["top", "eci-ns", "eci-pod", "also"]);
    // Updated: a new priority moves it.
    fake.put_selector("MODIFIED", opt_in_selector("also", 9, "normalNodePrefer"));
    assert!(
        eventually(Duration::from_secs(5), || hook.rule("also")
            == Some((9, "normalNodePrefer".into())))
        .await
    );
    assert_eq!(hook.rule_names(), ["also", "top", "eci-ns", "eci-pod"]);
    // Deleted.
    fake.delete_selector("also");
    assert!(eventually(Duration::from_secs(5), || hook.rule("also").is_none()).await);
    assert_eq!(hook.rule_names(), ["top", "eci-ns", "eci-pod"]);
    assert_eq!(
        metric(&hook, r#"eci_profile_selector_objects{state="applied"}"#),
        1
    );
    assert_eq!(metric(&hook, "eci_profile_selector_crd_installed"), 1);
    assert!(invalid_selector_events(&fake).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_selector_is_reported_and_its_last_good_version_keeps_applying() {
    let (fake, hook) = following_selectors(&[
        opt_in_selector("a", 1, "fair"),
        opt_in_selector("b", 2, "fair"),
    ])
    .await;
    assert_eq!(hook.rule("a"), Some((1, "fair".into())));
    let mut broken = opt_in_selector("a", 3, "fair");
    broken["spec"]["policy"] = json!({"fair": {}, "virtualNodeOnly": {}});
    let broken = fake.put_selector("MODIFIED", broken);
    assert!(
        eventually(Duration::from_secs(5), || invalid_selector_events(&fake)
            .len()
            == 1)
        .await
    );
    let event = &invalid_selector_events(&fake)[0];
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["regarding"]["kind"], "Selector");
    assert_eq!(event["regarding"]["name"], "a");
    assert_eq!(event["regarding"]["apiVersion"], "eci.aliyun.com/v1");
    assert_eq!(
        event["regarding"]["resourceVersion"],
        broken["metadata"]["resourceVersion"]
    );
    let note = event["note"].as_str().unwrap();
    assert!(
        note.starts_with("Selector refused, its last good version keeps applying:\nerror: selector \"a\": spec.policy: must have exactly one of"),
        "{note}"
    );
    // Cluster-scoped: the Event is in namespace default.
    assert!(
        fake.requests()
            .iter()
            .any(|r| r == "POST /apis/events.k8s.io/v1/namespaces/default/events"),
        "{:?}",
        fake.requests()
    );
    // The last good version of a applies; b is unaffected.
    assert_eq!(hook.rule("a"), Some((1, "fair".into())));
    assert_eq!(hook.rule("b"), Some((2, "fair".into())));
    // Counted once the refused version has been merged (just after its Event).
    assert!(
        eventually(Duration::from_secs(5), || metric(
            &hook,
            r#"eci_profile_selector_objects{state="invalid"}"#
        ) == 1)
        .await
    );
    // Fixed: the new version applies.
    fake.put_selector("MODIFIED", opt_in_selector("a", 3, "normalNodeOnly"));
    assert!(
        eventually(Duration::from_secs(5), || hook.rule("a")
            == Some((3, "normalNodeOnly".into())))
        .await
    );
    assert_eq!(
        metric(&hook, r#"eci_profile_selector_objects{state="invalid"}"#),
        0
    );
    // Broken again, then deleted: nothing of it is left.
    let mut broken = opt_in_selector("a", 4, "fair");
    broken["spec"]["objectLabels"] = json!({"matchLabels": {"eci": "not ok"}});
    fake.put_selector("MODIFIED", broken);
    assert!(
        eventually(Duration::from_secs(5), || invalid_selector_events(&fake)
            .len()
            == 2)
        .await
    );
    assert_eq!(hook.rule("a"), Some((3, "normalNodeOnly".into())));
    fake.delete_selector("a");
    assert!(eventually(Duration::from_secs(5), || hook.rule("a").is_none()).await);
    assert_eq!(hook.rule("b"), Some((2, "fair".into())));
    assert_eq!(
        metric(&hook, r#"eci_profile_selector_objects{state="invalid"}"#),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selector_invalid_from_the_start_does_not_apply_and_others_do() {
    let mut bad = opt_in_selector("bad", 0, "fair");
    bad["spec"]["effect"] =
        json!({"annotations": {"controller.kubernetes.io/pod-deletion-cost": -1000}});
    let (fake, hook) = following_selectors(&[bad, opt_in_selector("good", 0, "fair")]).await;
    assert_eq!(hook.rule_names(), ["eci-ns", "eci-pod", "good"]);
    assert!(
        eventually(Duration::from_secs(5), || invalid_selector_events(&fake)
            .len()
            == 1)
        .await
    );
    let note = invalid_selector_events(&fake)[0]["note"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        note.starts_with("Selector refused, it does not apply:"),
        "{note}"
    );
    assert!(
        note.contains("spec.effect.annotations[\"controller.kubernetes.io/pod-deletion-cost\"]: must be a string, found a number (quote it)"),
        "{note}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selector_named_like_a_configmap_rule_is_left_out_and_reported() {
    let (fake, hook) = following_selectors(&[opt_in_selector("eci-pod", 100, "fair")]).await;
    assert_eq!(
        hook.rule("eci-pod"),
        Some((0, "virtualNodeOnly".into())),
        "the ConfigMap's rule"
    );
    assert_eq!(hook.rule_names(), ["eci-ns", "eci-pod"]);
    assert!(
        eventually(Duration::from_secs(5), || invalid_selector_events(&fake)
            .len()
            == 1)
        .await
    );
    let note = invalid_selector_events(&fake)[0]["note"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        note.contains("is also a rule of the profile ConfigMap"),
        "{note}"
    );
    assert_eq!(
        metric(&hook, r#"eci_profile_selector_objects{state="name-clash"}"#),
        1
    );
    // The ConfigMap renames its rule: the Selector applies.
    fake.configmap_event(
        "MODIFIED",
        selectors(r#"[{"name": "renamed", "objectSelector": {"matchLabels": {"eci": "true"}}}]"#),
    );
    assert!(
        eventually(Duration::from_secs(5), || hook.rule("eci-pod")
            == Some((100, "fair".into())))
        .await
    );
    assert_eq!(hook.rule_names(), ["eci-pod", "renamed"]);
    let states = |hook: &Webhook| {
        ["applied", "name-clash"].map(|state| {
            metric(
                hook,
                &format!(r#"eci_profile_selector_objects{{state="{state}"}}"#),
            )
        })
    };
    assert_eq!(states(&hook), [1, 0]);
    // And back: a ConfigMap change alone makes the clash, and counts it.
    fake.configmap_event("MODIFIED", selectors(TWO_RULES));
    assert!(eventually(Duration::from_secs(5), || states(&hook) == [0, 1]).await);
    assert_eq!(hook.rule("eci-pod"), Some((0, "virtualNodeOnly".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_crd_the_configmap_alone_applies_until_it_is_installed() {
    let fake = Fake::start(Some(selectors(TWO_RULES)), &[]).await;
    let hook = Webhook::new(Arc::new(
        eci_profile::namespaces::StaticNamespaces::default(),
    ));
    hook.follow_profile(&fake);
    hook.follow_selectors(&fake);
    hook.until_ready().await;
    assert_eq!(hook.rule_names(), ["eci-ns", "eci-pod"]);
    assert_eq!(metric(&hook, "eci_profile_selector_crd_installed"), 0);
    // Asked again, quietly, without listing anything.
    assert!(
        eventually(Duration::from_secs(5), || fake
            .count("GET /apis/eci.aliyun.com")
            >= 3)
        .await
    );
    assert_eq!(fake.count(&format!("GET {SELECTORS}")), 0);
    // Installed later (serving only v1beta1, as the open-source eci-profile's
    // CRD does): watched without a restart.
    fake.install_selector_crd(&["v1beta1"], &[opt_in_selector("late", 7, "fair")]);
    assert!(eventually(Duration::from_secs(5), || hook.rule("late").is_some()).await);
    assert_eq!(metric(&hook, "eci_profile_selector_crd_installed"), 1);
    assert!(fake.count("GET /apis/eci.aliyun.com/v1beta1/selectors") >= 1);
    assert_eq!(fake.count(&format!("GET {SELECTORS}")), 0);
    // Deleted again: its objects go with it, and the ConfigMap alone applies.
    fake.watches("/apis/eci.aliyun.com/v1beta1/selectors", 1)
        .await;
    fake.delete_selector_crd();
    assert!(eventually(Duration::from_secs(5), || hook.rule("late").is_none()).await);
    assert!(
        eventually(Duration::from_secs(5), || metric(
            &hook,
            "eci_profile_selector_crd_installed"
        ) == 0)
        .await
    );
    assert_eq!(hook.rule_names(), ["eci-ns", "eci-pod"]);
    assert_eq!(hook.readyz().await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_forbidden_by_rbac_leave_the_configmap_serving() {
    let fake = Fake::start(Some(selectors(TWO_RULES)), &[]).await;
    fake.install_selector_crd(&["v1"], &[opt_in_selector("hidden", 0, "fair")]);
    fake.world.lock().unwrap().selectors_forbidden = true;
    let hook = Webhook::new(Arc::new(
        eci_profile::namespaces::StaticNamespaces::default(),
    ));
    hook.follow_profile(&fake);
    hook.follow_selectors(&fake);
    hook.until_ready().await;
    assert_eq!(hook.rule_names(), ["eci-ns", "eci-pod"]);
    // Not watched, and the gauge says so.
    assert_eq!(metric(&hook, "eci_profile_selector_crd_installed"), 0);
    // Allowed later (RBAC fixed): the watch, retrying, lists them.
    fake.world.lock().unwrap().selectors_forbidden = false;
    assert!(eventually(Duration::from_secs(10), || hook.rule("hidden").is_some()).await);
    assert!(
        eventually(Duration::from_secs(5), || metric(
            &hook,
            "eci_profile_selector_crd_installed"
        ) == 1)
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_selectors_to_be_listed() {
    let fake = Fake::start(Some(selectors(TWO_RULES)), &[]).await;
    fake.install_selector_crd(&["v1"], &[opt_in_selector("listed", 0, "fair")]);
    let hook = Webhook::new(Arc::new(
        eci_profile::namespaces::StaticNamespaces::default(),
    ));
    hook.follow_profile(&fake);
    let (status, body) = hook.readyz().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("profile not synced"), "{body}");
    hook.follow_selectors(&fake);
    hook.until_ready().await;
    // Ready means the listed Selector is in use.
    assert!(hook.rule("listed").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_adds_this_replicas_ca_to_the_validating_configuration_too() {
    use base64::Engine as _;
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    let fake = Fake::start(None, &[]).await;
    let mine = eci_profile::certs::generate(&["eci-profile".into()], &[])
        .unwrap()
        .ca_pem;
    // Not installed (the chart's validation.enabled=false): a clean 404.
    let absent = eci_profile::bootstrap::install_ca::<ValidatingWebhookConfiguration>(
        fake.client(),
        "eci-profile",
        &mine,
    )
    .await;
    assert!(
        matches!(&absent, Err(kube::Error::Api(s)) if s.code == 404),
        "{absent:?}"
    );
    let webhook = |name: &str| {
        json!({"name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
               "clientConfig": {"service": {"namespace": "eci-profile-system", "name": "eci-profile", "path": "/validate"}}})
    };
    fake.world.lock().unwrap().validating_config = Some(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "eci-profile", "resourceVersion": "3"},
        "webhooks": [webhook("selectors.eci-profile.io"), webhook("profile.eci-profile.io")]
    }));
    eci_profile::bootstrap::install_ca::<ValidatingWebhookConfiguration>(
        fake.client(),
        "eci-profile",
        &mine,
    )
    .await
    .unwrap();
    let config = fake
        .world
        .lock()
        .unwrap()
        .validating_config
        .clone()
        .unwrap();
    for webhook in config["webhooks"].as_array().unwrap() {
        let bundle = base64::engine::general_purpose::STANDARD
            .decode(webhook["clientConfig"]["caBundle"].as_str().unwrap())
            .unwrap();
        assert!(
            String::from_utf8(bundle).unwrap().contains(mine.trim()),
            "{webhook}"
        );
    }
    assert_eq!(
        fake.count(&format!("PUT {VALIDATING_CONFIGS}/eci-profile")),
        1
    );
}

/// The figure of a Selector change: from the watch event leaving the API
/// server to the profile in use (the next pod) having it, with 1 and with
/// 1,000 other Selectors loaded. A measurement, not a check of speed:
/// `cargo nextest run --test cluster --run-ignored only selector_change_latency --no-capture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand"]
async fn selector_change_latency() {
    for others in [1usize, 1000] {
        let objects: Vec<Value> = (0..others)
            .map(|i| {
                selector_object(
                    &format!("team-{i:04}"),
                    0,
                    json!({"namespaceLabels": {"matchLabels": {"team": format!("t{i}")}},
                           "effect": {"annotations": {"k8s.aliyun.com/eci-use-specs": "2-4Gi"}},
                           "policy": {"fair": {}}}),
                )
            })
            .collect();
        let (fake, hook) = following_selectors(&objects).await;
        let mut times = Vec::new();
        for round in 1..=100 {
            fake.put_selector("MODIFIED", opt_in_selector("probe", round, "fair"));
            let started = Instant::now();
            while hook.rule("probe").map(|(p, _)| p) != Some(round) {
                assert!(started.elapsed() < Duration::from_secs(10), "never applied");
                tokio::task::yield_now().await;
            }
            times.push(started.elapsed());
        }
        // The next pod sees it.
        let answer = hook
            .mutate(admission_fixture("create-labelled-pod-with-everything"))
            .await;
        assert!(answer.to_string().contains("patch"), "{answer}");
        times.sort();
        println!(
            "{others} other Selectors: change to profile in use p50 {:?}, p90 {:?}, max {:?} ({} changes)",
            times[times.len() / 2],
            times[times.len() * 9 / 10],
            times[times.len() - 1],
            times.len()
        );
    }
}
