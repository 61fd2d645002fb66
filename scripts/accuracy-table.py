#!/usr/bin/env python3
"""Runs the accuracy workloads in the simulator (or, with --bench, on real
processes) and prints a markdown table: summed error, worst key, share of
keys within 1 % or 2 requests, requests denied while under the limit, the
largest aligned second over the limit (each admission at its decision time:
the node's clock for a node's decision; at the answers' times beside it).

  scripts/accuracy-table.py --nodes 3,10,30 --duration 30s
  scripts/accuracy-table.py --bench --nodes 3 --duration 20s
"""
import argparse, json, os, subprocess, sys

WORKLOADS = [
    ("one key, uniform", ["--pattern", "uniform"]),
    ("one key, skew90", ["--pattern", "skew90"]),
    ("one key, hot node moving every 200 ms", ["--pattern", "rotate", "--period", "200ms"]),
    ("one key, hot node moving every 1 s", ["--pattern", "rotate", "--period", "1s"]),
    ("one key, hot node moving every 5 s", ["--pattern", "rotate", "--period", "5s"]),
    ("one key, 20 ms bursts", ["--pattern", "burst:20ms/20ms"]),
    ("one key, ramp", ["--pattern", "ramp"]),
    ("one key, flash crowd", ["--pattern", "flash"]),
    ("200 keys at 10/s, 2x", ["--keys", "200", "--key", "user:*", "--limit", "10/s"]),
    ("2,000 keys at 1/s, 2x", ["--keys", "2000", "--key", "user:*", "--limit", "1/s"]),
    ("1,000 keys at 10/s, 0.9x", ["--keys", "1000", "--key", "user:*", "--limit", "10/s", "--multiplier", "0.9"]),
]

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="quotamesh")
    ap.add_argument("--nodes", default="3")
    ap.add_argument("--duration", default="30s")
    ap.add_argument("--bench", action="store_true", help="real processes (quotamesh bench --local-cluster N)")
    ap.add_argument("--modes", default="leases,strict")
    ap.add_argument("--only", default="", help="comma-separated workload numbers (1-based)")
    a = ap.parse_args()
    only = {int(x) for x in a.only.split(",") if x}
    print("| workload | mode | N | error | worst key | keys within | denied under limit | largest aligned second | load |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in a.nodes.split(","):
        for i, (name, args) in enumerate(WORKLOADS, 1):
            if only and i not in only:
                continue
            for mode in a.modes.split(","):
                if a.bench:
                    cmd = [a.bin, "bench", "--local-cluster", n, "--duration", a.duration, "--json"] + args
                    if mode == "strict":
                        cmd.append("--strict")
                else:
                    cmd = [a.bin, "sim", "--nodes", n, "--duration", a.duration, "--json", "--clients", "1"] + args
                    if mode == "strict":
                        cmd.append("--strict")
                out = subprocess.run(cmd, capture_output=True, text=True)
                load = os.getloadavg()[0]
                try:
                    d = json.loads(out.stdout)
                except ValueError:
                    print(f"| {name} | {mode} | {n} | failed: {out.stderr.strip()[:120]} | | | | | {load:.1f} |")
                    continue
                pk = d.get("per_key", {})
                worst = pk.get("worst_key", {})
                under = pk.get("offered_under_limit", 0) or 0
                fd = pk.get("false_denials", 0) or 0
                denied = f"{100.0*fd/under:.2f} %" if under else "-"
                side = "under" if d["admitted"] < d["ideal"] else "over"
                # At the nodes' decision times; at the answers' times beside it
                # when the report has them (older builds: answers only).
                aligned = f"{pk.get('max_aligned_window_ratio', 0):.3f} (ideal {pk.get('ideal_max_aligned_window_ratio', 0):.3f}"
                if "max_aligned_window_ratio_at_answer" in pk:
                    aligned += f"; at answers {pk['max_aligned_window_ratio_at_answer']:.3f}"
                aligned += ")"
                print(f"| {name} | {mode} | {n} | {100*d['error']:.2f} % ({side}) | {100*worst.get('error', 0):+.2f} % ({worst.get('admitted', 0)}/{worst.get('ideal', 0)}) "
                      f"| {100*pk.get('within_share', 0):.1f} % | {denied} | {aligned} | {load:.1f} |", flush=True)

if __name__ == "__main__":
    main()
