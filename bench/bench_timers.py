"""Benchmark: the cost of connection deadlines for N idle logged-in connections, per second of wall time.

Compares the former per-second sweep (every connection's `tick` once a second) with the deadline wheel the
servers use now (runtime.timers.ConnectionTimers: only the connections whose deadline bucket came due are
ticked). Sans-IO `Connection` objects with an injected clock: clients heartbeat every 30 s (each heartbeat
moves the idle deadline), 30% PC (120 s idle timeout) and 70% mobile (300 s). Reports the CPU time per
simulated second and the number of `tick` calls.

    .venv/bin/python bench/bench_timers.py --connections 15000 --seconds 600
"""

from __future__ import annotations

import argparse
import time

from generated.teamtalk.registry import REGISTRY
from runtime.connection import Connection, Kind
from runtime.framing import encode_frame
from runtime.timers import NO_SLOT, ConnectionTimers

HEARTBEAT = encode_frame(7, 0x0701, 1)


class Holder:
    """What a server's Link is to its timers, minus the socket."""

    __slots__ = ("conn", "ticks", "timer_slot")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.timer_slot = NO_SLOT
        self.ticks = 0

    def next_deadline(self) -> float | None:
        return self.conn.next_deadline()

    def tick(self, now: float) -> None:
        self.ticks += 1
        self.conn.tick(now)


def population(n: int) -> list[Holder]:
    out = []
    for i in range(n):
        c = Connection(REGISTRY, Kind.CLIENT_SESSION, 0.0, peer="x")
        c.authenticate(i + 1, 0x01 if i % 10 < 3 else 0x12)
        out.append(Holder(c))
    return out


def simulate(n: int, seconds: int, wheel: bool) -> tuple[float, int]:
    holders = population(n)
    timers: ConnectionTimers[Holder] = ConnectionTimers(1.0)
    if wheel:
        timers.track_all(holders)
    cpu = 0.0
    per_second = n / 30.0  # heartbeats per second (every client every 30 s, spread evenly)
    due = 0.0
    k = 0
    for second in range(1, seconds + 1):
        now = float(second)
        due += per_second
        while k < due:  # heartbeats arriving during this second (not timed: both variants do this work)
            list(holders[k % n].conn.receive_data(HEARTBEAT, now))
            holders[k % n].conn.data_to_send()
            k += 1
        t0 = time.process_time()
        if wheel:
            timers.run(now)
        else:
            for h in holders:
                h.tick(now)
        cpu += time.process_time() - t0
    assert all(h.conn.is_open for h in holders)
    return cpu / seconds, sum(h.ticks for h in holders)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--connections", type=int, default=15000)
    ap.add_argument("--seconds", type=int, default=600)
    opts = ap.parse_args()
    for name, wheel in (("per-second sweep", False), ("deadline wheel", True)):
        cpu, ticks = simulate(opts.connections, opts.seconds, wheel)
        print(
            f"{name:17s} {opts.connections} connections, {opts.seconds} s: "
            f"{cpu * 1e3:.2f} ms CPU per second, "
            f"{ticks / opts.seconds:,.0f} ticks per second"
        )


if __name__ == "__main__":
    main()
