//! Writes benchmark inputs for `benches/load.sh` and `benches/memory.sh`:
//!
//!     cargo run --release --example bench_data -- profile 1000 > profile.yaml
//!     cargo run --release --example bench_data -- namespaces 10000 > namespaces.json

#[path = "../benches/data.rs"]
mod data;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let count = |i: usize| args.get(i).and_then(|n| n.parse().ok()).unwrap_or(100);
    match args.get(1).map(String::as_str) {
        Some("profile") => print!("{}", data::profile_manifest(count(2))),
        Some("namespaces") => print!("{}", data::namespaces_manifest(count(2))),
        _ => {
            eprintln!("usage: bench_data profile N | namespaces N");
            std::process::exit(2);
        }
    }
}
