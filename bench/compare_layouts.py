"""Benchmark: the cluster's layouts, today's tree and the grpc.aio relay baseline, alternated in one session.

Each stack runs `ttgen bench one-to-one` (open loop, latency from each message's due time, CPU of every
server process from /proc, counted from the start of the traffic) or, for `grpc`, bench/grpc_relay.py (the
same schedule and histograms). Stacks:

- `split`: this tree, one process per service instance (login, 2 msg, 2 routers, 1 biz);
- `sharded`: this tree, msg + biz + router of one instance number per process (login, shard-0 with msg 0,
  biz 0 and router 0, shard-1 with msg 1 and router 1);
- `sharded1`: this tree, one shard (login, and msg 0 + biz 0 + router 0 in one process);
- `base`: another tree (`--base-tree`, e.g. main extracted with `git archive main | tar -x -C DIR`) run with
  its own code, one process per instance (login, 2 msg, 1 router, 1 biz: `ttgen bench`'s default cluster);
- `base-split`, `base-sharded`, `base-sharded1`: those clusters run with `--base-tree`'s code (before and
  after a change, alternated in one session);
- `grpc`: the conventional relay (bench/grpc_relay.py).

Stacks alternate within each round (`--rounds`), so all see the same background load; the table gives
medians. With `--find-rate` each stack is searched instead for the highest offered load (pairs x rate,
bisecting the pairs) whose median e2e p99 over `--runs` stays under `--target-p99-ms` with every message
delivered. Bounded: every run has its duration, drain and a hard timeout.

    .venv/bin/python bench/compare_layouts.py --stacks split,sharded,grpc --pairs 500 --rate 20 --rounds 3
    .venv/bin/python bench/compare_layouts.py --stacks sharded --find-rate --pairs 600 --min-pairs 100
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLUSTERS = {  # stack -> (ttgen bench options, tree)
    "split": ["--layout", "split", "--msg-servers", "2", "--routers", "2"],
    "sharded": ["--layout", "sharded", "--msg-servers", "2", "--routers", "2"],
    "sharded1": ["--layout", "sharded", "--msg-servers", "1", "--routers", "1"],
    "base": ["--msg-servers", "2", "--routers", "1"],
}
# the same clusters run with --base-tree's code (before/after a change, alternated in one session)
CLUSTERS.update({f"base-{name}": CLUSTERS[name] for name in ("split", "sharded", "sharded1")})

KEYS = ("offered_per_s", "delivered_per_s", "server_us", "load_us", "e2e_p50_ms", "e2e_p99_ms")


def run_cluster(stack: str, pairs: int, opts: argparse.Namespace, out: Path) -> dict[str, Any]:
    tree = Path(opts.base_tree).resolve() if stack.startswith("base") else ROOT
    env = {**os.environ, "PYTHONPATH": str(tree)}
    argv = [sys.executable, "-c", "from ttgen.cli import main; main()", "bench", "one-to-one"]
    argv += ["--hash", "cheap"]
    argv += ["--pairs", str(pairs), "--rate", str(opts.rate), "--duration", str(opts.duration)]
    argv += [*CLUSTERS[stack], "--json", str(out)]
    out.unlink(missing_ok=True)
    limit = opts.duration + 400
    proc = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True, timeout=limit)
    if not out.exists():
        raise SystemExit(f"{stack}: ttgen bench failed:\n{proc.stderr[-3000:]}")
    r = json.loads(out.read_text())
    m, lat = r["messages"], r["latency_ms"]
    return {
        "stack": stack,
        "pairs": pairs,
        "offered_per_s": m["offered_per_s"],
        "delivered_per_s": m["delivered_per_s"],
        "server_us": m["cluster_cpu_us_per_delivery"],
        "load_us": m["load_cpu_us_per_delivery"],
        "e2e_p50_ms": lat["e2e"]["p50_ms"],
        "e2e_p99_ms": lat["e2e"]["p99_ms"],
        "ok": bool(r["ok"]),
        "cpu_s": r["cpu_s"],
    }


def run_grpc(pairs: int, opts: argparse.Namespace) -> dict[str, Any]:
    argv = [sys.executable, str(ROOT / "bench" / "grpc_relay.py"), "--pairs", str(pairs)]
    argv += ["--rate", str(opts.rate), "--duration", str(opts.duration), "--runs", "1"]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=opts.duration + 400)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"grpc relay failed:\n{proc.stderr[-3000:]}")
    r = lines[0]
    return {
        "stack": "grpc",
        "pairs": pairs,
        "offered_per_s": r["offered_per_s"],
        "delivered_per_s": round(r["delivered"] / opts.duration, 1),
        "server_us": r["server_cpu_us_per_msg"],
        "load_us": r["client_cpu_us_per_msg"],
        "e2e_p50_ms": r["e2e_p50_ms"],
        "e2e_p99_ms": r["e2e_p99_ms"],
        "ok": r["delivered"] >= r["sent"] and r["acked"] >= r["sent"] and r["duplicates"] == 0,
    }


def run(stack: str, pairs: int, opts: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    row = run_grpc(pairs, opts) if stack == "grpc" else run_cluster(stack, pairs, opts, tmp / "r.json")
    print(json.dumps(row), flush=True)
    return row


def median(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"stack": rows[0]["stack"], "runs": len(rows), "ok": all(r["ok"] for r in rows)}
    for key in KEYS:
        values = [r[key] for r in rows if r[key] is not None]
        out[key] = statistics.median(values) if values else None
    return out


def table(rows: list[dict[str, Any]]) -> None:
    print("\n| stack | runs | " + " | ".join(KEYS) + " | all ok |")
    print("|---|---|" + "---|" * len(KEYS) + "---|")
    for r in rows:
        cells = [f"{r[k]:,.1f}" if r[k] is not None else "-" for k in KEYS]
        print(f"| {r['stack']} | {r['runs']} | " + " | ".join(cells) + f" | {r['ok']} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    names = ", ".join([*CLUSTERS, "grpc"])
    ap.add_argument("--stacks", default="split,sharded,grpc", help=f"comma-separated: {names}")
    ap.add_argument("--base-tree", help="the tree of the `base` stack (e.g. main, extracted)")
    ap.add_argument("--pairs", type=int, default=500)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--find-rate", action="store_true")
    ap.add_argument("--runs", type=int, default=3, help="--find-rate: runs per probe (median)")
    ap.add_argument("--min-pairs", type=int, default=50)
    ap.add_argument("--step", type=int, default=25)
    ap.add_argument("--target-p99-ms", type=float, default=50.0)
    opts = ap.parse_args()
    stacks = [s.strip() for s in opts.stacks.split(",") if s.strip()]
    for s in stacks:
        if s not in CLUSTERS and s != "grpc":
            raise SystemExit(f"unknown stack {s!r}")
    if any(s.startswith("base") for s in stacks) and not opts.base_tree:
        raise SystemExit("the base stacks need --base-tree")
    tmp = Path(tempfile.mkdtemp(prefix="ttgen-layouts-"))
    if not opts.find_rate:
        rows: dict[str, list[dict[str, Any]]] = {s: [] for s in stacks}
        for _ in range(opts.rounds):
            for s in stacks:
                rows[s].append(run(s, opts.pairs, opts, tmp))
        print(f"\noffered {opts.pairs * opts.rate:,.0f} msgs/s for {opts.duration:g} s, medians:")
        table([median(rows[s]) for s in stacks])
        return
    found = []
    for s in stacks:
        lo, hi, best = opts.min_pairs, opts.pairs, None
        probes = []
        while hi - lo >= opts.step or best is None:
            mid = lo if best is None and not probes else (lo + hi) // 2
            row = median([run(s, mid, opts, tmp) for _ in range(opts.runs)])
            good = row["ok"] and row["e2e_p99_ms"] is not None and row["e2e_p99_ms"] < opts.target_p99_ms
            probes.append(f"{row['offered_per_s']:,.0f}: {row['e2e_p99_ms']}")
            if good:
                best, lo = row, mid
            elif best is None:
                break  # even the lowest load misses the target
            else:
                hi = mid
        print(f"{s}: probes (offered/s: e2e p99 ms) {'; '.join(probes)}", flush=True)
        found.append(best or {"stack": s, "runs": 0, "ok": False, **dict.fromkeys(KEYS)})
    print(f"\nhighest offered load with e2e p99 < {opts.target_p99_ms:g} ms (median of {opts.runs}):")
    table(found)


if __name__ == "__main__":
    main()
