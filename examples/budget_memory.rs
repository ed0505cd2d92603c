//! Memory held for budgets: the webhook's sent-pod follower (the same code
//! as in a cluster) lists `PODS` pods sent to virtual nodes (default
//! 10,000, in 100 namespaces, half bound to the virtual node, half pending)
//! from an in-process fake API server, which serves the list in pages (as
//! the API server does: the watch asks for 500 pods a page) built on the
//! fly and keeps nothing. Prints the heap held and the resident set size before
//! the follower starts and once it has synced.
//!
//!     cargo run --release --example budget_memory
//!     PODS=100000 cargo run --release --example budget_memory

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::RawQuery;
use axum::response::IntoResponse;
use axum::routing::get;
use eci_profile::decision::Exclusions;
use eci_profile::namespaces::StaticNamespaces;
use eci_profile::server::{Limits, State, cluster};
use serde_json::{Value, json};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::held;

const VIRTUAL: &str = "virtual-kubelet-cn-hangzhou-k";

/// A `/proc/self/status` figure, in KiB.
fn kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    kib("VmRSS:")
}

/// A pod as the API server lists it: a Deployment's pod, with the fields
/// a real one has (most of which the follower skips).
fn pod(i: usize) -> Value {
    let namespace = format!("team-{}", i % 100);
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("web-5d8f7c9b4-{i:05}"), "namespace": namespace,
            "uid": format!("3f0c1a52-0000-4000-8000-{i:012}"), "resourceVersion": "100",
            "generateName": "web-5d8f7c9b4-", "creationTimestamp": "2026-11-30T10:00:00Z",
            "labels": {"app": "web", "pod-template-hash": "5d8f7c9b4", "eci-profile.io/virtual-node": "true"},
            "annotations": {"eci-profile.io/selectors": "team", "k8s.aliyun.com/eci-use-specs": "2-4Gi",
                            "eci-profile.io/budget-reservation": "9b1c0e7e-6a1d-4c53-8f4e-1f1f1f1f1f1f"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d8f7c9b4",
                                 "uid": "11111111-2222-3333-4444-555555555555", "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": {
            "containers": [{"name": "web", "image": "registry.example.com/team/web:1.2.3",
                            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                            "env": [{"name": "MODE", "value": "production"}],
                            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}},
                            "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}],
                            "terminationMessagePath": "/dev/termination-log", "imagePullPolicy": "IfNotPresent"}],
            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}],
            "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
            "serviceAccountName": "default", "priority": 0,
            "volumes": [{"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}}]
        },
        "status": {"phase": "Pending", "qosClass": "Burstable"}
    });
    if i.is_multiple_of(2) {
        pod["spec"]["nodeName"] = json!(VIRTUAL);
        pod["status"]["phase"] = json!("Running");
        pod["status"]["podIP"] = json!("10.1.2.3");
    }
    pod
}

fn is_watch(query: &Option<String>) -> bool {
    query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    eci_profile::tls::install_default_provider();
    eci_profile::server::budget::tune_allocator(&Limits::default());
    let pods: usize = std::env::var("PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let app = Router::new()
        .route(
            "/api/v1/nodes",
            get(|RawQuery(query): RawQuery| async move {
                if is_watch(&query) {
                    return axum::body::Body::from_stream(futures_util::stream::pending::<
                        Result<axum::body::Bytes, std::convert::Infallible>,
                    >())
                    .into_response();
                }
                axum::Json(
                    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                    "metadata": {"resourceVersion": "100"},
                    "items": [{"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                               "metadata": {"name": VIRTUAL, "resourceVersion": "100",
                                            "labels": {"k8s.aliyun.com/vnode": "true"}}}]}),
                )
                .into_response()
            }),
        )
        .route(
            "/api/v1/pods",
            get(move |RawQuery(query): RawQuery| async move {
                if is_watch(&query) {
                    return axum::body::Body::from_stream(futures_util::stream::pending::<
                        Result<axum::body::Bytes, std::convert::Infallible>,
                    >())
                    .into_response();
                }
                // Pages, as the API server serves a list with `limit`.
                let param = |name: &str| {
                    query.as_deref().and_then(|q| {
                        q.split('&')
                            .find_map(|p| p.strip_prefix(name))
                            .and_then(|v| v.parse::<usize>().ok())
                    })
                };
                let start = param("continue=").unwrap_or(0);
                let end = (start + param("limit=").unwrap_or(pods)).min(pods);
                // Written pod by pod: the fake holds one page's text at most.
                let mut page = String::from(
                    r#"{"apiVersion":"v1","kind":"PodList","metadata":{"resourceVersion":"100""#,
                );
                if end < pods {
                    page.push_str(&format!(r#","continue":"{end}""#));
                }
                page.push_str(r#"},"items":["#);
                for i in start..end {
                    if i > start {
                        page.push(',');
                    }
                    page.push_str(&pod(i).to_string());
                }
                page.push_str("]}");
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    page,
                )
                    .into_response()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();

    let profile = eci_profile::profile::compile(&eci_profile::profile::ProfileData::from_map([(
        "selectors".to_string(),
        r#"[{"name": "team", "objectSelector": {"matchLabels": {"app": "web"}}, "limits": {"pods": 40}}]"#
            .to_string(),
    )]))
    .into_result()
    .unwrap()
    .0;
    let state = Arc::new(State::new(
        profile,
        Arc::new(StaticNamespaces::default()),
        Exclusions::default(),
        Limits::default(),
    ));
    state.readiness.set_certificate_served();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (heap_before, rss_before) = (held(), rss_kib());
    cluster::follow_sent_pods(&state, client, None);
    while state.readiness.check().is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the list's buffers go.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (heap_after, rss_after) = (held(), rss_kib());
    // What the allocator keeps of freed memory, given back.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
    let rss_trimmed = rss_kib();
    let (tracked, _) = state.ledger.lock().unwrap().len();
    assert_eq!(tracked, pods);
    let mib = |bytes: f64| bytes / (1024.0 * 1024.0);
    println!("{pods} pods sent to virtual nodes, tracked and counted:");
    println!(
        "  heap held: {:.1} MiB before, {:.1} MiB after: {:.0} bytes a pod",
        mib(heap_before as f64),
        mib(heap_after as f64),
        (heap_after - heap_before) as f64 / pods.max(1) as f64
    );
    println!(
        "  resident:  {:.1} MiB before, {:.1} MiB after (peak includes the list being read)",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    println!(
        "  resident after malloc_trim: {:.1} MiB; peak: {:.1} MiB",
        rss_trimmed as f64 / 1024.0,
        kib("VmHWM:") as f64 / 1024.0
    );
}
