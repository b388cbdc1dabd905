"""Benchmark check: `ttgen bench one-to-one` and the independent raw-socket client (bench/raw_client.py)
against the same running cluster, alternated, so the two instruments can be compared in one run.

Starts `ttgen up --processes` (login, --msg-servers msg, 1 router, 1 biz; SQLite FULL sync, encrypted at
rest; cheap argon2 since only messages are measured), lets `ttgen bench one-to-one --target` create the users,
then runs the two clients `--rounds` times each, in turn, at the same offered load (`--pairs` x `--rate`).
`--backend postgres` stores on PostgreSQL instead: a throwaway local server (fsync and synchronous_commit on)
with a fresh database, stopped at the end.
The cluster's CPU per delivered message is read from /proc around each run. Bounded: every run has its
duration and drain; the cluster is stopped at the end.

    .venv/bin/python bench/compare_one_to_one.py --pairs 250 --rate 20 --duration 10 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ttgen.bench.cluster import cpu_seconds

ROOT = Path(__file__).resolve().parents[1]
TTGEN = [sys.executable, "-c", "from ttgen.cli import main; main()"]
CONFIG = """\
drain_timeout: 5
services:
  login: {{http_port: 0}}
  msg: {{instances: {msg}}}
  router: {{instances: 1}}
  biz: {{instances: 1, auth: {{time_cost: 1, memory_cost: 1024, parallelism: 1}}}}
  storage: {{instances: 0}}
  file: {{instances: 0}}
  gateway: {{instances: 0}}
"""
POSTGRES = """storage:
  backend: postgres
  dsn: "{dsn}"
"""


def cluster_cpu(data: Path) -> float:
    """CPU seconds of every cluster process (pids from the run dir)."""
    pids = set()
    for path in (data / "run").glob("*-*-*.json"):
        try:
            pids.add(int(json.loads(path.read_text())["pid"]))
        except (OSError, ValueError, KeyError):
            pass
    return sum(cpu_seconds(pid) for pid in pids)


def run_ttgen(data: Path, config: Path, opts: argparse.Namespace, out: Path) -> dict[str, Any]:
    args = ["bench", "one-to-one", "--target", str(data), "--config", str(config), "--hash", "cheap"]
    args += ["--pairs", str(opts.pairs), "--rate", str(opts.rate), "--duration", str(opts.duration)]
    args += ["--msg-servers", str(opts.msg_servers), "--json", str(out)]
    proc = subprocess.run([*TTGEN, *args], capture_output=True, text=True, timeout=opts.duration + 300)
    if not out.exists():
        raise SystemExit(f"ttgen bench failed:\n{proc.stderr[-3000:]}")
    r = json.loads(out.read_text())
    c, lat = r["counters"], r["latency_ms"]
    return {
        "client": "ttgen bench",
        "offered_per_s": r["messages"]["offered_per_s"],
        "sent": c["sent"],
        "acked": c["acked"],
        "delivered": c["delivered"],
        "duplicates": c["duplicates"],
        "ack_p50_ms": lat["ack"]["p50_ms"],
        "ack_p99_ms": lat["ack"]["p99_ms"],
        "e2e_p50_ms": lat["e2e"]["p50_ms"],
        "e2e_p99_ms": lat["e2e"]["p99_ms"],
        "e2e_max_ms": lat["e2e"]["max_ms"],
        "cluster_us_per_msg": r["messages"]["cluster_cpu_us_per_delivery"],
        "client_cpu_us_per_msg": r["messages"]["load_cpu_us_per_delivery"],
    }


def run_raw(data: Path, opts: argparse.Namespace, closed: bool = False) -> dict[str, Any]:
    args = [sys.executable, str(ROOT / "bench" / "raw_client.py"), "--data-dir", str(data)]
    if closed:
        args.append("--closed-loop")
    args += ["--pairs", str(opts.pairs), "--rate", str(opts.rate), "--duration", str(opts.duration)]
    before = None
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # the raw client logs in, settles, then sends: sample the cluster's CPU once its load starts
    time.sleep(0.0)
    before = cluster_cpu(data)
    out, err = proc.communicate(timeout=opts.duration + 300)
    if proc.returncode != 0:
        raise SystemExit(f"raw client failed:\n{err[-3000:]}")
    r = json.loads(out.strip().splitlines()[-1])
    r["client"] = "raw closed-loop" if closed else "raw socket"
    r["cluster_us_per_msg"] = round(1e6 * (cluster_cpu(data) - before) / max(1, r["delivered"]), 1)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--pairs", type=int, default=250)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--msg-servers", type=int, default=2)
    ap.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite", help="storage backend")
    ap.add_argument(
        "--closed-loop",
        action="store_true",
        help="also run the raw client closed-loop (next message after the ack): what such tools report",
    )
    opts = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ttgen-compare-"))
    data, config = tmp / "data", tmp / "ttgen.yaml"
    text = CONFIG.format(msg=opts.msg_servers)
    server = None
    up: subprocess.Popen[str] | None = None
    rows: list[dict[str, Any]] = []
    try:  # everything started below is stopped in `finally`, also when a later start fails
        if opts.backend == "postgres":
            import asyncio

            from runtime.storage.postgres.local_server import LocalServer, create_database

            server = LocalServer(fsync=True).start()
            dsn = asyncio.run(create_database(server.dsn(), "compare_" + os.urandom(6).hex()))
            text += POSTGRES.format(dsn=dsn)
        config.write_text(text)
        up = subprocess.Popen(
            [*TTGEN, "up", "--processes", "--config", str(config), "--data-dir", str(data)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert up.stdout is not None
        line = ""
        for line in up.stdout:
            if "cluster is up" in line or "error" in line:
                break
        if "cluster is up" not in line:
            raise SystemExit(f"the cluster did not start: {line}")
        for i in range(opts.rounds):
            for run in ("ttgen", "raw", "closed") if opts.closed_loop else ("ttgen", "raw"):
                if run == "ttgen":
                    row = run_ttgen(data, config, opts, tmp / f"t{i}.json")
                else:
                    row = run_raw(data, opts, closed=run == "closed")
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        if up is not None:
            up.send_signal(signal.SIGINT)
            up.wait(60)
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    keys = (
        "offered_per_s",
        "sent",
        "delivered",
        "duplicates",
        "ack_p50_ms",
        "ack_p99_ms",
        "e2e_p50_ms",
        "e2e_p99_ms",
        "cluster_us_per_msg",
        "client_cpu_us_per_msg",
    )
    print(
        f"\n{opts.backend}: offered {opts.pairs * opts.rate:,.0f} msgs/s "
        f"({opts.pairs} pairs x {opts.rate:g}/s) for {opts.duration:g} s, medians of {opts.rounds}:\n"
    )
    print("| client | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for client in ("ttgen bench", "raw socket", "raw closed-loop"):
        mine = [r for r in rows if r["client"] == client]
        if not mine:
            continue
        cells = [f"{statistics.median(r[k] for r in mine):,.1f}" for k in keys]
        print(f"| {client} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
