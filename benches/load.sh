#!/usr/bin/env bash
# Network benchmark of eci-profile against a do-nothing baseline, side by
# side in one run: the same load generator (oha), the same TLS certificate
# and settings, the same request (a captured ReplicaSet pod CREATE) and the
# same response bytes (the baseline answers with eci-profile's own answer,
# computed beforehand), on loopback only, bounded in requests and time.
# Prints req/s and p50/p99 of both, and the ratios ours/baseline. The
# servers take turns, run by run, for ROUNDS rounds; medians are reported,
# so that a shared machine's drift does not land on one side.
#
# Two yardsticks run in the same throughput rounds (YARDSTICKS=0 leaves them
# out): the baseline reading the body as JSON without keeping any of it (the
# least any serde_json reader pays), and the baseline reading it with
# kube-rs's AdmissionReview<DynamicObject> (what a webhook built on kube-rs
# pays before deciding anything).
#
#   benches/load.sh                        # defaults below
#   REQUESTS=200 RATE_REQUESTS=200 ROUNDS=1 benches/load.sh   # a smoke run
#
# oha comes from $OHA, the PATH, or is installed from crates.io into
# target/bench-tools (once).
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-40000}           # per throughput run
CONCURRENCY=${CONCURRENCY:-32}        # connections
H2_PARALLEL=${H2_PARALLEL:-4}         # HTTP/2 streams per connection
RATE=${RATE:-2000}                    # fixed-rate run, requests/s
RATE_REQUESTS=${RATE_REQUESTS:-20000} # fixed-rate run length (10 s at 2000/s)
ROUNDS=${ROUNDS:-3}                   # each run, for each server, this many times
SELECTORS=${SELECTORS:-100}
NAMESPACES=${NAMESPACES:-1000}
YARDSTICKS=${YARDSTICKS:-1}

source benches/common.sh
oha=$(find_oha)

cargo build --release --locked --bin eci-profile --example baseline --example bench_data >&2
bin=target/release/eci-profile

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$bin" certs --out "$work/tls" --dns localhost --ip 127.0.0.1 >/dev/null
target/release/examples/bench_data profile "$SELECTORS" > "$work/profile.yaml"
target/release/examples/bench_data namespaces "$NAMESPACES" > "$work/namespaces.json"

ours=$(free_port); admin=$(free_port)

RUST_LOG=${RUST_LOG:-info} "$bin" serve --listen "127.0.0.1:$ours" --admin-listen "127.0.0.1:$admin" \
  --tls-cert "$work/tls/tls.crt" --tls-key "$work/tls/tls.key" \
  --profile-file "$work/profile.yaml" --namespaces-file "$work/namespaces.json" \
  --log-format json --shutdown-delay 0s 2> "$work/ours.log" &
pids+=($!)
"$bin" check -o review --profile "$work/profile.yaml" --namespaces-file "$work/namespaces.json" "$BODY" > "$work/response.json"
# Servers by name: port and pid.
declare -A port=([ours]=$ours) pid=([ours]=${pids[0]})
baselines=(base)
[ "$YARDSTICKS" = 0 ] || baselines+=(json kube)
for name in "${baselines[@]}"; do
  case $name in base) read=none ;; *) read=$name ;; esac
  port[$name]=$(free_port)
  target/release/examples/baseline --read "$read" "127.0.0.1:${port[$name]}" "$work/tls/tls.crt" "$work/tls/tls.key" \
    "$work/response.json" 2> "$work/$name.log" &
  pids+=($!); pid[$name]=$!
done

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for _ in $(seq 100); do
  ready=true
  curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null || ready=false
  for name in "${baselines[@]}"; do listening "${port[$name]}" || ready=false; done
  if $ready; then break; fi
  sleep 0.1
done
curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null || { cat "$work/ours.log" >&2; exit 1; }
for name in "${baselines[@]}"; do listening "${port[$name]}" || { cat "$work/$name.log" >&2; exit 1; }; done

# One request each, to check both answer (ours with a patch).
check=$(curl -s --cacert "$work/tls/ca.crt" --data-binary @"$BODY" -H 'Content-Type: application/json' "https://127.0.0.1:$ours/mutate?timeout=3s")
case "$check" in *'"patchType":"JSONPatch"'*) ;; *) echo "unexpected answer: $check" >&2; exit 1 ;; esac

# CPU time (user + system, in clock ticks) a process has used.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run() { # server run oha-args...
  local server=$1 run=$2; shift 2
  local before; before=$(ticks "${pid[$server]}")
  "$oha" --no-tui --output-format json --cacert "$work/tls/ca.crt" -m POST \
    -H 'Content-Type: application/json' -D "$BODY" "$@" \
    "https://127.0.0.1:${port[$server]}/mutate?timeout=3s" > "$work/$server-$run.json"
  echo $(( $(ticks "${pid[$server]}") - before )) > "$work/$server-$run.ticks"
}

for round in $(seq "$ROUNDS"); do
  for kind in h1 h2 rate; do
    case $kind in
      h1) args=(-n "$REQUESTS" -c "$CONCURRENCY" --http-version 1.1) ;;
      h2) args=(-n "$REQUESTS" -c "$CONCURRENCY" -p "$H2_PARALLEL" --http2) ;;
      rate) args=(-n "$RATE_REQUESTS" -c "$CONCURRENCY" -q "$RATE" --http-version 1.1 --latency-correction) ;;
    esac
    servers=(ours "${baselines[@]}")
    [ "$kind" = rate ] && servers=(ours base) # the yardsticks are for throughput
    for server in "${servers[@]}"; do run "$server" "$kind-$round" "${args[@]}"; done
  done
done

python3 - "$work" "$REQUESTS" "$CONCURRENCY" "$H2_PARALLEL" "$RATE" "$SELECTORS" "$(getconf CLK_TCK)" "$ROUNDS" "$YARDSTICKS" <<'PY'
import json, statistics, sys
work, requests, conc, par, rate, selectors, hz, rounds, yardsticks = sys.argv[1:]
rounds = int(rounds)
def load(name):
    with open(f"{work}/{name}.json") as f:
        r = json.load(f)
    s, p = r["summary"], r["latencyPercentiles"]
    codes = r.get("statusCodeDistribution", {})
    ok = codes.get("200", 0)
    with open(f"{work}/{name}.ticks") as f:
        cpu_us = int(f.read()) / int(hz) * 1e6 / max(ok, 1)
    return {"rps": s["requestsPerSec"], "p50": p["p50"] * 1000, "p99": p["p99"] * 1000, "ok": ok, "cpu": cpu_us,
            "errors": sum(r.get("errorDistribution", {}).values()) + sum(v for k, v in codes.items() if k != "200")}
def median(runs, key):
    return statistics.median(r[key] for r in runs)
def runs(server, run):
    return [load(f"{server}-{run}-{i}") for i in range(1, rounds + 1)]
def ratios_to_base(runs, base):
    return [x["rps"] / y["rps"] for x, y in zip(runs, base)]
print(f"eci-profile vs baseline: {requests} requests, {conc} connections (HTTP/2: x{par} streams), "
      f"profile of {selectors} selectors, same TLS and load generator, loopback; medians of {rounds} round(s)")
print(f"{'run':<26}{'ours req/s':>11}{'base req/s':>11}{'ratio':>7}{'(range)':>12}{'ours p50':>10}{'ours p99':>10}"
      f"{'base p50':>10}{'base p99':>10}{'ours CPU':>10}{'base CPU':>10}")
bad = False
for run, label in [("h1", "HTTP/1.1 keep-alive"), ("h2", "HTTP/2"), ("rate", f"HTTP/1.1 at {rate} req/s")]:
    o, b = runs("ours", run), runs("base", run)
    bad |= any(r["errors"] > 0 for r in o + b)
    ratios = ratios_to_base(o, b)
    spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
    print(f"{label:<26}{median(o, 'rps'):>11.0f}{median(b, 'rps'):>11.0f}{statistics.median(ratios):>7.2f}{spread:>12}"
          f"{median(o, 'p50'):>8.2f}ms{median(o, 'p99'):>8.2f}ms{median(b, 'p50'):>8.2f}ms{median(b, 'p99'):>8.2f}ms"
          f"{median(o, 'cpu'):>8.1f}µs{median(b, 'cpu'):>8.1f}µs")
print("ratio: the median of each round's ours/baseline req/s, with its range over the rounds.")
print("CPU: the server process's own CPU time per answered request (user + system), the load generator excluded.")
if yardsticks != "0":
    print()
    print("Yardsticks, in the same rounds: every server answers the same bytes; only what it reads differs.")
    print(f"{'server':<50}{'HTTP/1.1 req/s':>15}{'ratio':>7}{'CPU':>9}{'HTTP/2 req/s':>14}{'ratio':>7}{'CPU':>9}")
    for server, label in [("base", "baseline: reads nothing"),
                          ("json", "reads the body as JSON, keeps nothing"),
                          ("kube", "reads it as kube-rs AdmissionReview, no decision"),
                          ("ours", "eci-profile: reads, decides, patches")]:
        line = f"{label:<50}"
        for run in ("h1", "h2"):
            r = runs(server, run)
            bad |= any(x["errors"] > 0 for x in r)
            ratio = statistics.median(ratios_to_base(r, runs("base", run)))
            line += f"{median(r, 'rps'):>15.0f}{ratio:>7.2f}{median(r, 'cpu'):>7.1f}µs"
        print(line)
if bad:
    print("some requests failed"); sys.exit(1)
PY
