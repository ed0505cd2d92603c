//! Hostile clients next to ordinary traffic: for each server binary given,
//! and for each attack (none; 48 clients holding 4 MiB bodies open by
//! withholding their last byte; 16 clients sending 3.5 MB reviews with
//! 330,000 labels), starts `serve` fresh, runs the attack with kept-alive
//! clients sending a captured pod CREATE next to it, and prints the
//! ordinary requests' p50/p99/max, their failures, what the attackers got,
//! and the server's peak resident memory. Loopback only, bounded in time.
//!
//!     cargo build --release --bin eci-profile --example attack
//!     target/release/examples/attack target/release/eci-profile [OTHER_BINARY...]
//!
//! `SECONDS` (default 10) sets each run's length; `CLIENTS` (4) the ordinary
//! connections, each sending a request every 5 ms at most.

#[path = "traffic.rs"]
mod traffic;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use eci_profile::decision::Exclusions;
use eci_profile::namespaces::StaticNamespaces;
use eci_profile::profile::Profile;
use eci_profile::review::{self, Context};
use hyper::body::Bytes;
use traffic::{Attack, Held, Server};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/admission/create-deployment-pod.json"
);
const NAMESPACES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/namespaces.yaml"
);

#[tokio::main]
async fn main() {
    eci_profile::tls::install_default_provider();
    let binaries: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if binaries.is_empty() {
        eprintln!("usage: attack ECI_PROFILE_BINARY...");
        std::process::exit(2);
    }
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let duration = Duration::from_secs(env("SECONDS", 10));
    let clients = env("CLIENTS", 4) as usize;
    let body = Bytes::from(std::fs::read(FIXTURE).expect("the fixture"));
    let expected = expected_answer(&body);
    let attacks = [
        ("no attack", Attack::None),
        (
            "48 x 4 MiB bodies held open",
            Attack::HeldBodies {
                connections: 48,
                size: 4 * 1024 * 1024,
            },
        ),
        (
            "16 x 3.5 MB reviews, 330k labels",
            Attack::Labels {
                clients: 16,
                labels: 330_000,
            },
        ),
    ];
    println!(
        "{:<34} {:<28} {:>7} {:>6} {:>9} {:>9} {:>9} {:>9}  attackers got",
        "attack", "server", "ordinary", "failed", "p50", "p99", "max", "peak RSS"
    );
    for (name, attack) in attacks {
        for bin in &binaries {
            let server = Server::start(bin, &[]);
            let report = traffic::run(
                &server,
                attack,
                body.clone(),
                expected.clone(),
                clients,
                Duration::from_millis(5),
                duration,
            )
            .await;
            let failed = report.ordinary.len() - report.ordinary_ok();
            println!(
                "{:<34} {:<28} {:>7} {:>6} {:>9.1?} {:>9.1?} {:>9.1?} {:>5.1} MiB  {}",
                name,
                bin.display().to_string(),
                report.ordinary.len(),
                failed,
                report.ordinary_quantile(0.5),
                report.ordinary_quantile(0.99),
                report.ordinary_quantile(1.0),
                report.peak_kib as f64 / 1024.0,
                attackers(&report),
            );
            if let Some(error) = report.ordinary.iter().find_map(|o| o.error.as_ref()) {
                println!("    first ordinary error: {error}");
            }
        }
    }
}

/// What the server answers to `body`, computed in process.
fn expected_answer(body: &[u8]) -> Bytes {
    let text = std::fs::read_to_string(NAMESPACES).expect("the namespaces fixture");
    let namespaces = StaticNamespaces::from_manifests(&text).expect("namespaces");
    let profile = Profile::embedded_default();
    let context = Context {
        profile: &profile,
        exclusions: &Exclusions::default(),
        namespaces: &namespaces,
        budgets: &eci_profile::budgets::Unlimited,
    };
    Bytes::from(review::review(body, context).expect("a review").response)
}

/// The attackers' answers, counted: `503: 40 (max 12ms), open: 8`.
fn attackers(report: &traffic::Report) -> String {
    let mut counts: BTreeMap<String, (usize, Duration)> = BTreeMap::new();
    for held in &report.held {
        let (key, after) = match held {
            Held::Answered { status, after } => (status.to_string(), *after),
            Held::Open => ("held open".into(), Duration::ZERO),
            Held::Failed(_) => ("no answer".into(), Duration::ZERO),
        };
        let entry = counts.entry(key).or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(after);
    }
    for status in &report.heavy {
        let key = match status {
            0 => "no answer".to_string(),
            s => s.to_string(),
        };
        counts.entry(key).or_default().0 += 1;
    }
    counts
        .iter()
        .map(|(k, (n, max))| match max.is_zero() {
            true => format!("{k}: {n}"),
            false => format!("{k}: {n} (within {max:.0?})"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
