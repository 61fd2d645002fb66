#!/usr/bin/env bash
# Runs one workload in the simulator (with SDK clients, as the bench has)
# and on real node processes (quotamesh bench --local-cluster), one after
# the other, and prints their figures side by side: the check that the
# simulator reproduces what real processes do.
#
#   scripts/sim-vs-bench.sh [WORKLOAD AND SDK FLAGS...]
#   NODES=3 DURATION=20s scripts/sim-vs-bench.sh --key 'user:*' --keys 200 --limit 10/s
#   scripts/sim-vs-bench.sh --limit 1000/s --pattern rotate --period 1s --strict
#
# The flags go to both commands unchanged: the workload's (--pattern,
# --keys, --key, --limit, --placement, --period, --popularity, --arrivals,
# --multiplier, --key-rate, --rate, --seed) and --strict, --nearest,
# --lease-ttl. NODES (default 3) is --nodes and --local-cluster; DURATION
# (default 20s) is both runs' --duration; CLIENT_RTT (default the sim's)
# is the simulated clients' link; QUOTAMESH is the binary (default: built
# from this tree into a temporary directory). Needs jq.
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=${NODES:-3}
duration=${DURATION:-20s}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bin=${QUOTAMESH:-}
if [ -z "$bin" ]; then
  bin=$tmp/quotamesh
  go build -o "$bin" ./cmd/quotamesh
fi
simflags=(--nodes "$nodes" --clients 1 --duration "$duration" --json)
[ -n "${CLIENT_RTT:-}" ] && simflags+=(--client-rtt "$CLIENT_RTT")
"$bin" sim "${simflags[@]}" "$@" >"$tmp/sim.json"
load=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo "?")
"$bin" bench --local-cluster "$nodes" --duration "$duration" --json "$@" >"$tmp/bench.json"
load2=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo "?")
echo "workload: $(jq -r .workload "$tmp/bench.json"); $nodes nodes, $duration; flags: $*"
echo "load average before / after the bench: $load / $load2"
jq -r -s '
  def pct(x): (x * 10000 | round) / 100;
  def row(name; f): [name, (.[0] | f | tostring), (.[1] | f | tostring)] | @tsv;
  ["figure", "sim", "bench"], 
  row("offered"; .offered),
  row("admitted"; .admitted),
  row("ideal"; .ideal),
  row("error % (signed)"; if .ideal > 0 then pct((.admitted - .ideal) / .ideal) else 0 end),
  row("keys within 1 % or 2 req, %"; pct(.per_key.within_share)),
  row("|err| p50/p90/max"; "\(.per_key.abs_error_p50)/\(.per_key.abs_error_p90)/\(.per_key.abs_error_max)"),
  row("worst key error %"; pct(.per_key.worst_key.error)),
  row("denied under limit %"; pct(.per_key.false_denial_share)),
  row("max aligned window/limit"; .per_key.max_aligned_window_ratio),
  row("max sliding window/limit"; .max_window_ratio),
  row("failed (sim) / errors (bench)"; (.failed // .errors // 0))
  | if type == "array" then @tsv else . end
' "$tmp/sim.json" "$tmp/bench.json" | column -t -s $'\t'
