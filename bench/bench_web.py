"""Benchmark: 1:1 messages per second between browser-protocol clients (WebSocket and HTTP long-poll) through
the gateway of a multi-process cluster on 127.0.0.1 (docs/web-api.md).

Each pair is a sender and a receiver, both logged in through the gateway (`POST /api/login`). Over WebSocket
the sender sends `{"op": "send"}` frames and the receiver reads `events` frames, acking after each frame as
the generated browser client does (`--ack-every S`: at most once per S seconds); over long-poll the sender
POSTs `/api/send` and the receiver loops on `GET /api/poll`. Every message goes the whole way: gateway -> biz
-> storage (encrypted at rest, `synchronous=FULL`) -> back to the gateway, which queues the event for the
receiver's session. Senders are open-loop: message i of a sender is due at start + i / rate, and its latency
is measured from that due time to its arrival at the receiver (so a stalled sender shows as latency, not as a
lower rate). `--mode mixed` runs half the pairs over each protocol.

Reported per run: offered and delivered messages per second, sends refused or unanswered, lost messages, e2e
latency p50/p90/p99/max (ms) per protocol and overall, and CPU per delivered message of every cluster process
(user + system time from /proc); then the median over `--runs`. Bounded: each run lasts `--duration` seconds
plus a drain of at most `--drain` seconds, then the cluster is stopped. Results: bench/RESULTS.md.

    .venv/bin/python bench/bench_web.py --pairs 100 --rate 20 --duration 10 --mode mixed --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from bench_cluster import AUTH, cpu_seconds, seed

from runtime.cluster.config import parse_config
from runtime.cluster.discovery import RunDirDiscovery
from runtime.cluster.processes import ProcessSupervisor

PASSWORD = "bench"


class Tally:
    """What one client process saw."""

    def __init__(self) -> None:
        self.sent = 0
        self.refused = 0
        self.lat: dict[str, list[int]] = {"ws": [], "poll": []}
        self.seen: set[str] = set()
        self.by_second: dict[int, list[int]] = {}

    def arrived(self, proto: str, text: str) -> None:
        due_ns, _, key = text.partition(" ")
        if key in self.seen or not due_ns.isdigit():
            return
        self.seen.add(key)
        lat = time.time_ns() - int(due_ns)
        self.lat[proto].append(lat)
        self.by_second.setdefault(int(due_ns) // 1_000_000_000, []).append(lat)


async def login(http: aiohttp.ClientSession, base: str, name: str) -> dict[str, Any]:
    for attempt in range(50):
        async with http.post(f"{base}/api/login", json={"user": name, "password": PASSWORD}) as rsp:
            doc: dict[str, Any] = await rsp.json()
        if doc["error_code"] == 0:
            return doc
        await asyncio.sleep(0.1 * (attempt + 1))
    raise RuntimeError(f"login of {name} failed: {doc}")


class Clock:
    """The run's schedule, known once every client process is connected and the parent says go."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.start = 0.0
        self.stop_at = float("inf")
        self.connected = 0


async def ws_receiver(base: str, token: str, tally: Tally, clock: Clock, ack_every: float) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{base}/api/ws?token={token}", max_msg_size=0) as ws,
    ):
        clock.connected += 1
        next_ack = 0.0
        while time.time() < clock.stop_at:
            try:
                msg = await ws.receive(timeout=max(0.1, min(5.0, clock.stop_at - time.time())))
            except TimeoutError:
                continue
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            doc = json.loads(msg.data)
            if doc.get("op") != "events":
                continue
            for ev in doc["events"]:
                if ev.get("type") == "msg" and ev.get("text"):
                    tally.arrived("ws", ev["text"])
            if time.monotonic() >= next_ack:
                await ws.send_str(json.dumps({"op": "ack", "seq": doc["last_seq"]}))
                next_ack = time.monotonic() + ack_every


async def ws_sender(
    base: str, token: str, peer: int, tag: str, clock: Clock, duration: float, rate: float, tally: Tally
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{base}/api/ws?token={token}", max_msg_size=0) as ws,
    ):
        pending = 0

        async def replies() -> None:
            nonlocal pending
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    return
                doc = json.loads(msg.data)
                if doc.get("op") == "reply" and doc.get("id") is not None:
                    pending -= 1
                    if doc.get("error_code") != 0:
                        tally.refused += 1

        reader = asyncio.get_running_loop().create_task(replies())
        clock.connected += 1
        await clock.go.wait()
        for i in range(int(duration * rate)):
            due = clock.start + i / rate
            await asyncio.sleep(max(0.0, due - time.time()))
            text = f"{int(due * 1e9)} {tag}-{i}"
            await ws.send_str(json.dumps({"op": "send", "id": i, "to": peer, "text": text}))
            pending += 1
            tally.sent += 1
        deadline = time.time() + 10
        while pending > 0 and time.time() < deadline:
            await asyncio.sleep(0.05)
        tally.refused += max(0, pending)
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader


async def poll_receiver(base: str, token: str, tally: Tally, clock: Clock) -> None:
    since = 0
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        clock.connected += 1
        while time.time() < clock.stop_at:
            wait = max(0.0, min(5.0, clock.stop_at - time.time()))
            async with http.get(f"{base}/api/poll?since={since}&timeout={wait:.2f}", headers=headers) as rsp:
                doc = await rsp.json()
            if doc.get("error_code") != 0:
                await asyncio.sleep(0.1)
                continue
            since = doc["last_seq"]
            for ev in doc["events"]:
                if ev.get("type") == "msg" and ev.get("text"):
                    tally.arrived("poll", ev["text"])


async def poll_sender(
    base: str, token: str, peer: int, tag: str, clock: Clock, duration: float, rate: float, tally: Tally
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8)) as http:

        async def one(i: int, due: float) -> None:
            text = f"{int(due * 1e9)} {tag}-{i}"
            try:
                async with http.post(
                    f"{base}/api/send", json={"to": peer, "text": text}, headers=headers
                ) as rsp:
                    doc = await rsp.json()
                if doc.get("error_code") != 0:
                    tally.refused += 1
            except (aiohttp.ClientError, TimeoutError):
                tally.refused += 1

        clock.connected += 1
        await clock.go.wait()
        tasks = []
        for i in range(int(duration * rate)):
            due = clock.start + i / rate
            await asyncio.sleep(max(0.0, due - time.time()))
            tasks.append(asyncio.get_running_loop().create_task(one(i, due)))
            tally.sent += 1
        await asyncio.wait(tasks, timeout=15)


async def client_main(
    pairs: list[tuple[str, str, str]],
    bases: list[str],
    duration: float,
    rate: float,
    drain: float,
    ack_every: float,
    out: Any,
    go: Any,
) -> dict[str, Any]:
    """Log in, connect, say ready; on the parent's start time, run the load; the tally."""
    tally = Tally()
    clock = Clock()
    async with aiohttp.ClientSession() as http:
        logged = []
        for n, (proto, sender, receiver) in enumerate(pairs):
            base = bases[(n // 2) % len(bases)]  # pairs alternate protocols: each gateway gets both
            s = await login(http, base, sender)
            r = await login(http, base, receiver)
            logged.append((proto, base, s, r))
    jobs = []
    for proto, base, s, r in logged:
        tag = f"{s['user_id']}"
        if proto == "ws":
            jobs.append(ws_receiver(base, r["token"], tally, clock, ack_every))
            jobs.append(ws_sender(base, s["token"], r["user_id"], tag, clock, duration, rate, tally))
        else:
            jobs.append(poll_receiver(base, r["token"], tally, clock))
            jobs.append(poll_sender(base, s["token"], r["user_id"], tag, clock, duration, rate, tally))
    running = asyncio.gather(*jobs, return_exceptions=True)
    while clock.connected < len(jobs):
        await asyncio.sleep(0.05)
    out.put("ready")
    clock.start = await asyncio.get_running_loop().run_in_executor(None, go.get)
    clock.stop_at = clock.start + duration + drain
    clock.go.set()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    expected = int(duration * rate) * len(logged)
    while time.time() < clock.stop_at:
        if time.time() > clock.start + duration and len(tally.seen) >= expected - tally.refused:
            break
        await asyncio.sleep(0.1)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    running.cancel()
    with contextlib.suppress(BaseException):
        await running
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    if os.environ.get("BENCH_WEB_DEBUG"):
        for sec, lats in sorted(tally.by_second.items()):
            print(f"second {sec % 1000}: n {len(lats)} p50 {pct(lats, 0.5):.0f} p99 {pct(lats, 0.99):.0f}")
    return {
        "sent": tally.sent,
        "refused": tally.refused,
        "lat": tally.lat,
        "arrived": len(tally.seen),
        "cpu": cpu,
    }


def client_process(args: tuple[Any, ...], out: Any, go: Any) -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    out.put(asyncio.run(client_main(*args, out, go)))


def pct(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    data = sorted(values)
    return data[min(len(data) - 1, int(q * len(data)))] / 1e6


async def one_run(opts: argparse.Namespace) -> dict[str, float]:
    data_dir = Path(tempfile.mkdtemp(prefix="ttgen-bench-web-"))
    try:
        storage = {"backend": "sqlite", "synchronous": "full"}
        names = await seed(data_dir, 2 * opts.pairs, storage)
        config = parse_config(
            {
                "data_dir": str(data_dir),
                "storage": {**storage, "encrypt_at_rest": True},
                "services": {
                    "login": {"instances": 1, "http_port": 0},
                    "msg": {"instances": 1, "client_port": 0},
                    "router": {"instances": 1},
                    "biz": {
                        "instances": 1,
                        "auth": {**AUTH, "verify_queue": 100_000, "max_pending_per_address": 100_000},
                    },
                    "file": {"instances": 0},
                    "storage": {"instances": 0},
                    # All clients come from 127.0.0.1: the per-address limit would be the bottleneck.
                    "gateway": {"instances": opts.gateways, "ip_rate": 1_000_000, "ip_burst": 1_000_000},
                },
            }
        )
        sup = ProcessSupervisor(config, "generated.teamtalk", console=lambda _s: None)
        await sup.start()
        try:
            eps = sorted(
                RunDirDiscovery(config.run_dir).endpoints("gateway", "http"), key=lambda e: e.instance
            )
            bases = [f"http://{e.host}:{e.port}" for e in eps]
            protos = {"ws": ["ws"], "poll": ["poll"], "mixed": ["ws", "poll"]}[opts.mode]
            pairs = [(protos[i % len(protos)], names[2 * i], names[2 * i + 1]) for i in range(opts.pairs)]
            ctx = mp.get_context("spawn")
            out = ctx.Queue()
            procs, gos = [], []
            for p in range(opts.client_procs):
                share = pairs[p :: opts.client_procs]
                args = (share, bases, opts.duration, opts.rate, opts.drain, opts.ack_every)
                go = ctx.Queue()
                proc = ctx.Process(target=client_process, args=(args, out, go))
                proc.start()
                procs.append(proc)
                gos.append(go)
            for _ in procs:  # every client logged in and connected (the login presence storm under way)
                assert out.get(timeout=300) == "ready"
            start = time.time() + opts.settle
            for go in gos:
                go.put(start)
            workers = {f"{w.service}{w.instance}": w.process.pid for w in sup.workers}
            time.sleep(max(0.0, start - time.time()))
            before = {name: cpu_seconds(pid) for name, pid in workers.items()}
            results = [out.get(timeout=120 + opts.duration + opts.drain) for _ in procs]
            after = {name: cpu_seconds(pid) for name, pid in workers.items()}
            for proc in procs:
                proc.join(10)
        finally:
            await sup.stop()
        sent = sum(r["sent"] for r in results)
        refused = sum(r["refused"] for r in results)
        arrived = sum(r["arrived"] for r in results)
        lat = {k: [v for r in results for v in r["lat"][k]] for k in ("ws", "poll")}
        everything = lat["ws"] + lat["poll"]
        row: dict[str, float] = {
            "offered/s": sent / opts.duration,
            "delivered/s": arrived / opts.duration,
            "refused": refused,
            "lost": sent - refused - arrived,
            "p50": pct(everything, 0.5),
            "p90": pct(everything, 0.9),
            "p99": pct(everything, 0.99),
            "max": pct(everything, 1.0),
        }
        for k in ("ws", "poll"):
            if lat[k]:
                row[f"{k} p50"] = pct(lat[k], 0.5)
                row[f"{k} p99"] = pct(lat[k], 0.99)
        row["clients us/msg"] = sum(r["cpu"] for r in results) / max(1, arrived) * 1e6
        for name in workers:
            used = sum(after[name]) - sum(before[name])
            row[f"{name} us/msg"] = used / max(1, arrived) * 1e6
        return row
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--rate", type=float, default=20.0, help="messages per second per sender (at most 20)")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--drain", type=float, default=10.0)
    ap.add_argument("--settle", type=float, default=5.0, help="s after every client connected to the start")
    ap.add_argument("--mode", choices=("ws", "poll", "mixed"), default="mixed")
    ap.add_argument("--gateways", type=int, default=1)
    ap.add_argument("--client-procs", type=int, default=2)
    ap.add_argument("--ack-every", type=float, default=0.0, help="s between WebSocket acks (0: every frame)")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--json", type=Path, help="write the runs (and their median) here as JSON")
    opts = ap.parse_args()
    rows = []
    for i in range(opts.runs):
        row = asyncio.run(one_run(opts))
        rows.append(row)
        print(f"run {i + 1}: " + ", ".join(f"{k} {v:,.1f}" for k, v in row.items()), flush=True)
    keys = [k for k in rows[0] if all(k in r for r in rows)]
    med = {k: statistics.median(r[k] for r in rows) for k in keys}
    if len(rows) > 1:
        print("median: " + ", ".join(f"{k} {v:,.1f}" for k, v in med.items()), flush=True)
    if opts.json is not None:
        opts.json.write_text(json.dumps({"runs": rows, "median": med}, indent=1))


if __name__ == "__main__":
    main()
