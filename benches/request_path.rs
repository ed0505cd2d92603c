//! In-process cost of the request path: request body bytes to response body
//! bytes (what the server does per request, minus HTTP and TLS), and the
//! decision with the patch alone, for three pods and profiles of 1, 100 and
//! 10,000 selectors; and reading the request next to serde_json merely
//! skipping it, the floor for any reader built on it; and the request with
//! a budget checked and reserved next to the same profile without one.
//!
//!     cargo bench --bench request_path

#[path = "data.rs"]
mod data;

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use eci_profile::decision::{self, Exclusions};
use eci_profile::namespaces::{NamespaceLookup as _, StaticNamespaces};
use eci_profile::profile::{self, Profile, ProfileData};
use eci_profile::review::{self, Context};

fn profile(n: usize) -> Profile {
    let data = ProfileData::from_manifest("bench", &data::profile_manifest(n)).unwrap();
    profile::compile(&data).into_result().unwrap().0
}

fn pods() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("minimal", data::minimal_pod_request()),
        ("typical", data::fixture("create-deployment-pod")),
        ("large", data::large_pod_request()),
    ]
}

fn bench(c: &mut Criterion) {
    let namespaces = StaticNamespaces::from_manifests(&data::namespaces_manifest(100)).unwrap();
    let exclusions = Exclusions::default();
    for n in [1, 100, 10_000] {
        let profile = profile(n);
        let mut whole = c.benchmark_group(format!("bytes_to_bytes/{n}_selectors"));
        for (name, body) in pods() {
            let context = Context {
                profile: &profile,
                exclusions: &exclusions,
                namespaces: &namespaces,
                budgets: &eci_profile::budgets::Unlimited,
            };
            // Every pod is selected by exactly one rule and mutated.
            let reviewed = review::review(&body, context).unwrap();
            assert_eq!(reviewed.evaluation.decision.applied, ["batch-api"]);
            whole.throughput(Throughput::Bytes(body.len() as u64));
            whole.bench_with_input(BenchmarkId::from_parameter(name), &body, |b, body| {
                b.iter(|| review::review(black_box(body), context).unwrap().response)
            });
        }
        whole.finish();

        let mut decide = c.benchmark_group(format!("decide_and_patch/{n}_selectors"));
        let labels = namespaces.labels("fx-team");
        for (name, body) in pods() {
            let review::Object::Pod(pod) = review::parse_request(&body).unwrap().object else {
                panic!("a pod")
            };
            decide.bench_function(name, |b| {
                b.iter(|| {
                    decision::decide(
                        black_box(&pod),
                        "fx-team",
                        labels.as_deref(),
                        &profile,
                        &exclusions,
                    )
                    .patch
                })
            });
        }
        decide.finish();
    }

    // Budgets: the same request with the rule's budget checked and a place
    // reserved in a ledger holding 10,000 pods in 100 namespaces, next to
    // the same profile without limits.
    let mut budgets = c.benchmark_group("budgets/100_selectors");
    let body = data::fixture("create-deployment-pod");
    let manifest = data::profile_manifest(100);
    let limited = manifest.replace(
        r#""name":"batch-api""#,
        r#""limits":{"pods":1000000,"requests.cpu":"100000","requests.memory":"1000Ti"},"name":"batch-api""#,
    );
    assert_ne!(limited, manifest);
    let ledger = std::sync::Mutex::new(ledger_with_pods(10_000, 100));
    for (name, manifest) in [("off", manifest), ("on", limited)] {
        let data = ProfileData::from_manifest("bench", &manifest).unwrap();
        let profile = profile::compile(&data).into_result().unwrap().0;
        assert_eq!(profile.has_budgets(), name == "on");
        budgets.bench_function(name, |b| {
            b.iter(|| {
                let now = std::time::Instant::now();
                let gate = eci_profile::budgets::Reserving {
                    ledger: &ledger,
                    id: "request-uid",
                    now,
                    expires: now + eci_profile::budgets::RESERVATION_TTL,
                };
                let context = Context {
                    profile: &profile,
                    exclusions: &exclusions,
                    namespaces: &namespaces,
                    budgets: &gate,
                };
                review::review(black_box(&body), context).unwrap().response
            })
        });
    }
    assert_eq!(ledger.lock().unwrap().len(), (10_000, 1));
    budgets.finish();

    // Reading the request against the floor of any serde_json reader:
    // skipping the whole body (every byte scanned, nothing kept).
    let mut parse = c.benchmark_group("parse");
    for (name, body) in pods() {
        parse.throughput(Throughput::Bytes(body.len() as u64));
        parse.bench_with_input(BenchmarkId::new("skip_only", name), &body, |b, body| {
            b.iter(|| serde_json::from_slice::<serde::de::IgnoredAny>(black_box(body)).unwrap())
        });
        parse.bench_with_input(BenchmarkId::new("parse_request", name), &body, |b, body| {
            b.iter(|| {
                review::parse_request(black_box(body))
                    .unwrap()
                    .operation
                    .len()
            })
        });
    }
    parse.finish();
}

/// A ledger tracking `pods` pods sent to virtual nodes, spread over `namespaces`.
fn ledger_with_pods(pods: usize, namespaces: usize) -> eci_profile::budgets::Ledger {
    use eci_profile::budgets::{Amounts, Ledger, Quantity, ledger::Seen};
    let mut ledger = Ledger::default();
    for i in 0..pods {
        let (uid, namespace) = (format!("uid-{i}"), format!("ns-{}", i % namespaces));
        ledger.observe(Seen {
            uid: &uid,
            namespace: &namespace,
            node: None,
            amounts: Amounts::pod(Quantity(500), Quantity(1 << 40)),
            live: true,
            reservation: None,
        });
    }
    ledger
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
