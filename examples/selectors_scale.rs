//! Figures of Selector objects at scale: the heap held by 1,000 compiled
//! Selectors and by the profile merged from them, and the time to compile
//! them and to merge again after one changes (what a Selector change costs
//! before the next pod sees it).
//!
//! `cargo run --release --example selectors_scale [COUNT]`

use std::time::{Duration, Instant};

use eci_profile::profile::node::Node;
use eci_profile::profile::{self, Origin, Profile, Rule};
use serde_json::json;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::held;

/// A Selector as the API server sends it: one team's namespaces, two
/// annotations and a label, policy fair.
fn selector(i: usize) -> serde_json::Value {
    json!({
        "apiVersion": "eci.aliyun.com/v1", "kind": "Selector",
        "metadata": {"name": format!("team-{i:04}"), "uid": format!("uid-{i}"), "resourceVersion": "1",
                     "creationTimestamp": "2026-11-30T10:00:00Z", "generation": 1},
        "spec": {
            "namespaceLabels": {"matchLabels": {"team": format!("t{i}")}},
            "objectLabels": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]},
            "effect": {"annotations": {"k8s.aliyun.com/eci-use-specs": "2-4Gi", "k8s.aliyun.com/eci-spot-strategy": "SpotAsPriceGo"},
                       "labels": {"capacity": "eci"}},
            "policy": {"fair": {}},
            "priority": (i % 7) as i32,
        }
    })
}

fn compile_all(objects: &[serde_json::Value]) -> Vec<(Rule, u64)> {
    objects
        .iter()
        .map(|o| {
            let c = profile::compile_selector(&Node::from_json(o), &Origin::None);
            (c.rule.expect("valid"), c.digest)
        })
        .collect()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .map_or(1000, |n| n.parse().expect("COUNT"));
    let objects: Vec<serde_json::Value> = (0..count).map(selector).collect();
    let configmap = Profile::embedded_default();

    let before = held();
    let rules = compile_all(&objects);
    let rules_bytes = held() - before;
    let before = held();
    let merged = profile::merge(&configmap, rules.iter().map(|(r, d)| (r, *d))).profile;
    let profile_bytes = held() - before;
    assert_eq!(merged.rule_count(), count + configmap.rule_count());

    let compile_time = median(
        (0..11)
            .map(|_| {
                let started = Instant::now();
                std::hint::black_box(compile_all(&objects));
                started.elapsed()
            })
            .collect(),
    );
    let merge_time = median(
        (0..11)
            .map(|_| {
                let started = Instant::now();
                std::hint::black_box(profile::merge(
                    &configmap,
                    rules.iter().map(|(r, d)| (r, *d)),
                ));
                started.elapsed()
            })
            .collect(),
    );
    println!("{count} Selectors:");
    println!(
        "  compiled rules held: {:.2} MiB ({} bytes per Selector)",
        rules_bytes as f64 / 1048576.0,
        rules_bytes / count as isize
    );
    println!(
        "  merged profile held: {:.2} MiB",
        profile_bytes as f64 / 1048576.0
    );
    // The follower keeps each Selector's last good rule, the assembly the
    // set it merged last, and the profile in use has its own copies.
    println!(
        "  in a server (the follower's rules, the assembly's copy, the profile in use): {:.2} MiB",
        (2 * rules_bytes + profile_bytes) as f64 / 1048576.0
    );
    println!("  compile all: {compile_time:?}; merge after one change: {merge_time:?}");
}
