//! Prints an export of COUNT Deployments (default 10,000) as `kubectl get
//! namespaces,deployments -A -o yaml` prints it: the input of the `diff`
//! figures in the README.
//!
//! `cargo run --release --example diff_export [COUNT] > export.yaml`

#[path = "../tests/common/export.rs"]
mod export;

use std::io::Write as _;

fn main() {
    let count = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("COUNT is a number"))
        .unwrap_or(10_000);
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(export::kubectl_export(count).as_bytes())
        .expect("stdout");
}
