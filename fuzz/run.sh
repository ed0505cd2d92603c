#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) each, one process, on
# seeds from the repository (see seed.sh). A crash fails with its input
# saved in fuzz/artifacts/<target>/. Needs cargo-fuzz and a nightly toolchain.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}

./seed.sh
# cargo-fuzz keeps its build in fuzz/target, apart from the main crate's.
unset CARGO_TARGET_DIR
for target in review profile; do
  echo "fuzzing $target for ${seconds}s"
  cargo +nightly fuzz run --sanitizer none "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -max_len=262144 -print_final_stats=1
done
