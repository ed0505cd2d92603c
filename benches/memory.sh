#!/usr/bin/env bash
# Memory of eci-profile serve: resident set size idle (embedded profile, no
# namespaces), and peak with 10,000 namespaces known and 1,000 selectors
# loaded, after 100,000 requests. Loopback only, bounded, stops by itself.
#
#   benches/memory.sh
#   REQUESTS=1000 benches/memory.sh      # a smoke run
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-100000}
SELECTORS=${SELECTORS:-1000}
NAMESPACES=${NAMESPACES:-10000}

source benches/common.sh
oha=$(find_oha)

cargo build --release --locked --bin eci-profile --example bench_data >&2
bin=target/release/eci-profile

work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$bin" certs --out "$work/tls" --dns localhost --ip 127.0.0.1 >/dev/null
target/release/examples/bench_data profile "$SELECTORS" > "$work/profile.yaml"
target/release/examples/bench_data namespaces "$NAMESPACES" > "$work/namespaces.json"
kib() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$pid/status"; }

start() { # extra serve args...
  local port=$1 admin=$2; shift 2
  "$bin" serve --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
    --tls-cert "$work/tls/tls.crt" --tls-key "$work/tls/tls.key" --shutdown-delay 0s "$@" 2> "$work/serve.log" &
  pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && return; sleep 0.1; done
  cat "$work/serve.log" >&2; exit 1
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

# Idle: embedded profile, nothing known.
port=$(free_port); admin=$(free_port)
start "$port" "$admin"
sleep 1
idle=$(kib VmRSS)
stop

# Loaded: 10,000 namespaces, 1,000 selectors, 100,000 requests.
port=$(free_port); admin=$(free_port)
start "$port" "$admin" --profile-file "$work/profile.yaml" --namespaces-file "$work/namespaces.json"
loaded=$(kib VmRSS)
"$oha" --no-tui --output-format json --cacert "$work/tls/ca.crt" -m POST -H 'Content-Type: application/json' \
  -D "$BODY" -n "$REQUESTS" -c 32 --http-version 1.1 "https://127.0.0.1:$port/mutate?timeout=3s" > "$work/oha.json"
after=$(kib VmRSS); peak=$(kib VmHWM)
ok=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["statusCodeDistribution"].get("200",0))' "$work/oha.json")
stop

mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
echo "idle (embedded profile):                         $(mib "$idle")"
echo "loaded ($NAMESPACES namespaces, $SELECTORS selectors), before load: $(mib "$loaded")"
echo "after $REQUESTS requests ($ok answered 200):  $(mib "$after") resident, $(mib "$peak") peak"
[ "$ok" -eq "$REQUESTS" ] || { echo "some requests failed" >&2; exit 1; }
