//! `eci-profile diff` on 10,000 Deployments (a 10 MB `kubectl get -A -o
//! yaml` export), side by side in one run: the whole command as a reviewer
//! runs it (process start, reading, judging under both profiles, printing),
//! and its two halves in process: reading and sorting out the export, and
//! judging every workload under the profile in force and the proposed one.
//!
//!     cargo bench --bench diff

#[path = "../tests/common/export.rs"]
mod export;

use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use eci_profile::decision::Exclusions;
use eci_profile::profile::{self, Profile, ProfileData};
use eci_profile::profile_diff::Report;
use eci_profile::workloads::{Inventory, parse_objects};

const WORKLOADS: usize = 10_000;
const CURRENT: &str = "manifests/examples/eci-profile.yaml";
const PROPOSED: &str = "tests/fixtures/diff/proposed.yaml";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn profile(relative: &str) -> Profile {
    let text = std::fs::read_to_string(root().join(relative)).unwrap();
    let data = ProfileData::from_manifest(relative, &text).unwrap();
    profile::compile(&data).into_result().unwrap().0
}

fn diff(c: &mut Criterion) {
    let text = export::kubectl_export(WORKLOADS);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.yaml");
    std::fs::write(&file, &text).unwrap();
    eprintln!("export: {} bytes, {WORKLOADS} Deployments", text.len());

    let mut group = c.benchmark_group("diff_10000_workloads");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(30));
    group.bench_function("command", |b| {
        b.iter(|| {
            let output = Command::new(env!("CARGO_BIN_EXE_eci-profile"))
                .args(["diff", "--profile"])
                .arg(root().join(PROPOSED))
                .arg("--current")
                .arg(root().join(CURRENT))
                .arg(&file)
                .output()
                .unwrap();
            assert!(output.status.success());
            black_box(output.stdout.len())
        })
    });
    group.bench_function("read", |b| {
        b.iter(|| {
            let inventory =
                Inventory::from_objects(parse_objects(black_box(&text)).unwrap()).unwrap();
            black_box(inventory.workloads.len())
        })
    });
    let inventory = Inventory::from_objects(parse_objects(&text).unwrap()).unwrap();
    let (old, new) = (profile(CURRENT), profile(PROPOSED));
    let exclusions = Exclusions::default();
    group.bench_function("judge", |b| {
        b.iter(|| {
            let report = Report::new(
                &inventory.workloads,
                &inventory.namespaces,
                &exclusions,
                &old,
                &new,
            );
            black_box(report.changed.len())
        })
    });
    group.finish();
}

criterion_group!(benches, diff);
criterion_main!(benches);
