"""Benchmark: the CPU one process-to-process wake-up costs on this machine (a socket ping-pong).

Every message through the cluster wakes about ten processes on its way; this measures what one blocking
round trip between two processes costs in CPU on each side, the floor under the cluster's per-message CPU at
low and moderate load (bench/RESULTS.md).

    .venv/bin/python bench/bench_wakeup.py --round-trips 20000 --runs 5
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time


def one_run(round_trips: int) -> tuple[float, float, float]:
    """(wall µs per round trip, parent CPU µs per round trip, child CPU µs per round trip)."""
    a, b = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the echoing child: blocks in recv, wakes, answers
        a.close()
        for _ in range(round_trips):
            b.send(b.recv(64))
        os._exit(0)
    b.close()
    before = os.times()
    t0 = time.perf_counter()
    payload = b"x" * 32
    for _ in range(round_trips):
        a.send(payload)
        a.recv(64)
    wall = time.perf_counter() - t0
    mid = os.times()
    os.waitpid(pid, 0)
    after = os.times()
    a.close()
    parent = (mid.user - before.user) + (mid.system - before.system)
    child = (after.children_user - mid.children_user) + (after.children_system - mid.children_system)
    return 1e6 * wall / round_trips, 1e6 * parent / round_trips, 1e6 * child / round_trips


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--round-trips", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=5)
    opts = ap.parse_args()
    rows = [one_run(opts.round_trips) for _ in range(opts.runs)]
    for i, (wall, parent, child) in enumerate(rows, 1):
        print(f"run {i}: round_trip_us={wall:.1f}  parent_cpu_us={parent:.1f}  child_cpu_us={child:.1f}")
    med = [statistics.median(r[k] for r in rows) for k in range(3)]
    print(f"median: round_trip_us={med[0]:.1f}  parent_cpu_us={med[1]:.1f}  child_cpu_us={med[2]:.1f}")


if __name__ == "__main__":
    main()
