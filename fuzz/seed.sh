#!/usr/bin/env bash
# Fills fuzz/corpus/<target>/ with seeds taken from the repository's own
# inputs: captured AdmissionReview requests for `review`, profiles for
# `profile`. Existing corpus files (what earlier runs found) are kept.
set -euo pipefail
cd "$(dirname "$0")"

mkdir -p corpus/review corpus/profile
for f in ../tests/fixtures/admission/*.json ../manifests/examples/admission-review.json; do
  cp "$f" "corpus/review/seed-$(basename "$f")"
done
for f in ../manifests/examples/eci-profile*.yaml ../src/profile/default-profile.yaml; do
  cp "$f" "corpus/profile/seed-$(basename "$f")"
done
for f in ../tests/fixtures/upstream-selectors/*.yaml; do
  cp "$f" "corpus/profile/seed-selector-$(basename "$f")"
done
