"""Benchmark: durable message inserts per second, group commit versus one transaction per message.

Both modes run on real SQLite files (WAL, synchronous=FULL) in the same process and run; each mode is
measured several times and the median is reported. Senders are concurrent (asyncio.gather), as many
connections would be.

    .venv/bin/python bench/bench_storage.py [--messages 5000] [--baseline-messages 1000] [--runs 5]

`--backend postgres` measures the PostgreSQL backend instead (asyncpg; a throwaway local server with fsync on,
started for the run, or `--dsn` of a server of your own: a database is created in it per run). Reported too:
commits per second and messages per commit (the database's write rate per commit batch).

    .venv/bin/python bench/bench_storage.py --backend postgres --encrypt --runs 3

`--biz` measures instead the CPU the biz service spends per stored 1:1 message: IMMsgData request bodies as
msg servers send them are parsed and handed to biz's one store path (`BizService.store`: store with a commit
callback, answer; the link's framing and dispatch are left out),
on SQLite with group commit, at-rest encryption and synchronous=FULL. `--window` stores stay in flight (each
answer lets the next request in, so batches are about that size, as under load in the cluster). Reported:
process CPU (time.process_time, event loop and writer thread together) per message, median of `--runs`.

    .venv/bin/python bench/bench_storage.py --biz [--messages 20000] [--window 16] [--pairs 300] [--runs 5]

`--rate R` (with --biz) offers R requests per second instead (open loop, a tick every millisecond, as msg
servers under load send them whatever biz answers): batches are then as large as the commits make them, and
the answers' latency (request to answer, p50 and p99) is reported beside the CPU.

    .venv/bin/python bench/bench_storage.py --biz --tokens --rate 10000 --messages 40000 --runs 5

`--store-cpu` measures the storage send path alone as biz drives it (`send_single_nowait` with store tokens,
`--window` in flight, encrypted at rest): CPU per message of the process and, with `--backend postgres` on
the throwaway server, of the server's processes. CPU time, not wall time: comparable on a busy machine.

    .venv/bin/python bench/bench_storage.py --store-cpu --backend postgres [--window 8] [--runs 3]

`--writer` measures the SQLite writer thread alone (no event loop): the cached send operation run on the
writer thread in transactions of `--window` messages, each flushed and committed with FULL sync; CPU of the
thread (user and system) and bytes written per message, for the whole path encrypted, the same in clear, and
the operations alone (no SQL, no commit I/O), alternated run by run.

    .venv/bin/python bench/bench_storage.py --writer --window 32 --pairs 500 [--messages 40000] [--runs 3]

`--tokens` gives each --biz request the 8-byte store token msg adds when the client sent no msg id
(runtime.services.biz.convert.pack_store_request), as in the cluster: biz then remembers and stores it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime.storage import NewUser, Storage
from runtime.storage.sqlite import SqliteStorage
from runtime.transport import run as run_loop

PAIRS = 50


def open_store(data_dir: Path, group_commit: bool, encrypt: bool, dsn: str | None) -> Storage:
    if dsn is None:
        return SqliteStorage(data_dir, group_commit=group_commit, encrypt_at_rest=encrypt)
    from runtime.storage.postgres import PostgresStorage

    return PostgresStorage(dsn, data_dir, group_commit=group_commit, encrypt_at_rest=encrypt)


async def one_run(
    data_dir: Path, messages: int, group_commit: bool, encrypt: bool, admin_dsn: str | None = None
) -> tuple[float, float]:
    """Messages per second and average batch size of one run."""
    dsn = None
    if admin_dsn is not None:
        from runtime.storage.postgres.local_server import create_database

        dsn = await create_database(admin_dsn, "bench_" + os.urandom(6).hex())
    async with open_store(data_dir, group_commit, encrypt, dsn) as store:
        users = [await store.create_user(NewUser(f"user{i}")) for i in range(PAIRS * 2)]
        payload = os.urandom(200)
        writer: Any = store.writer  # type: ignore[attr-defined]
        batches_before, ops_before = writer.batches, writer.operations
        start = time.perf_counter()
        await asyncio.gather(
            *[
                store.send_single(users[2 * (i % PAIRS)].id, users[2 * (i % PAIRS) + 1].id, 1, payload)
                for i in range(messages)
            ]
        )
        elapsed = time.perf_counter() - start
        batches = writer.batches - batches_before
        ops = writer.operations - ops_before
    return messages / elapsed, ops / max(batches, 1)


def measure(
    messages: int, group_commit: bool, runs: int, encrypt: bool, admin_dsn: str | None = None
) -> tuple[float, float]:
    rates, sizes = [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="ttgen-bench-") as tmp:
            rate, size = asyncio.run(one_run(Path(tmp), messages, group_commit, encrypt, admin_dsn))
        rates.append(rate)
        sizes.append(size)
    return statistics.median(rates), statistics.median(sizes)


def server_cpu(pidfile: Path | None) -> float:
    """CPU seconds (user + system) used so far by a PostgreSQL server's processes (0 without a pidfile)."""
    if pidfile is None:
        return 0.0
    master = int(pidfile.read_text().split()[0])
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if entry.name == str(master) or int(fields[1]) == master:  # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


async def store_cpu_run(
    data_dir: Path, messages: int, window: int, pairs: int, dsn: str | None, pidfile: Path | None
) -> dict[str, float]:
    """One run of the storage send path as biz drives it: `window` first 1:1 sends with store tokens in
    flight through `send_single_nowait` (each commit callback lets the next one in, so batches are about
    that size), encrypted at rest. CPU per message of this process (event loop and any writer thread) and, on
    a throwaway PostgreSQL server, of the server's processes."""
    if dsn is not None:
        from runtime.storage.postgres.local_server import create_database

        dsn = await create_database(dsn, "bench_" + os.urandom(6).hex())
    async with open_store(data_dir, True, True, dsn) as store:
        users = [u.id for u in await store.create_users([NewUser(f"user{i}") for i in range(2 * pairs)])]
        payload = os.urandom(64)
        sent = stored = 0
        done = asyncio.Event()

        def feed() -> None:
            nonlocal sent
            i = sent
            sent += 1
            a, b = users[2 * (i % pairs)], users[2 * (i % pairs) + 1]
            store.send_single_nowait(a, b, 1, payload, stored_cb, token=0x5A5A5A5A00000000 + i + 1)

        def stored_cb(result: Any, error: BaseException | None) -> None:
            nonlocal stored
            if error is not None:
                raise error
            stored += 1
            if stored == messages:
                done.set()
            elif sent < messages:
                feed()

        writer: Any = store.writer  # type: ignore[attr-defined]
        batches, operations = writer.batches, writer.operations
        cpu, server, wall = time.process_time(), server_cpu(pidfile), time.perf_counter()
        for _ in range(window):
            feed()
        await done.wait()
        cpu, server = time.process_time() - cpu, server_cpu(pidfile) - server
        wall = time.perf_counter() - wall
        batch = (writer.operations - operations) / max(writer.batches - batches, 1)
    return {
        "cpu": cpu / messages * 1e6,
        "server": server / messages * 1e6,
        "rate": messages / wall,
        "batch": batch,
    }


def measure_store_cpu(args: argparse.Namespace) -> None:
    server = None
    dsn = args.dsn
    if args.backend == "postgres" and dsn is None:
        from runtime.storage.postgres.local_server import LocalServer

        server = LocalServer(fsync=True).start()
        dsn = server.dsn()
    pidfile = server.data_dir / "postmaster.pid" if server is not None else None
    results = []
    try:
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="ttgen-bench-") as tmp:
                run = store_cpu_run(Path(tmp), args.messages, args.window, args.pairs, dsn, pidfile)
                results.append(run_loop(run, server_gc=True))
    finally:
        if server is not None:
            server.stop()
    med = {key: statistics.median(r[key] for r in results) for key in results[0]}
    where = "sqlite, WAL, synchronous=FULL"
    if args.backend == "postgres":
        where = f"postgresql ({'throwaway local server, fsync on' if server else 'given server'})"
    print(
        f"storage send path, {where}, encrypted, store tokens, {args.window} in flight, {args.pairs} pairs, "
        f"{args.messages} msgs/run, uvloop, median of {args.runs} runs"
    )
    server_part = f"; server {med['server']:.1f} us" if server else ""
    print(
        f"CPU per stored message: this process {med['cpu']:.1f} us{server_part}; {med['rate']:.0f} msg/s, "
        f"batch {med['batch']:.1f}"
    )


class _BenchLink:
    """Stands in for the msg servers: counts biz's answers and lets the next request in (closed loop; with a
    rate the requests come from a clock instead, and each answer's latency is kept)."""

    def __init__(self, total: int, feed: Callable[[], None], done: asyncio.Event, open_loop: bool) -> None:
        self.total, self.feed, self.done, self.open_loop = total, feed, done, open_loop
        self.replies = self.stored = 0
        self.sent_at: list[float] = []
        self.latencies: list[float] = []

    def answered(self, reply: Any) -> None:
        if self.open_loop:
            self.latencies.append(time.perf_counter() - self.sent_at[self.replies])
        self.replies += 1
        self.stored += bool(reply is not None and reply.msg_id)
        if self.replies == self.total:
            self.done.set()
        elif not self.open_loop:
            self.feed()


async def biz_run(
    data_dir: Path,
    messages: int,
    window: int,
    pairs: int,
    tokens: bool = False,
    rate: float = 0.0,
) -> dict[str, float]:
    """One run of the biz store path: CPU per message (all threads, and the writer thread alone). With a
    `rate`, requests arrive at that rate (a tick every millisecond) whatever the answers do, as from msg
    servers under load; the answers' latency is reported too."""
    from generated.teamtalk.registry import REGISTRY
    from runtime.cluster.discovery import StaticDiscovery
    from runtime.services.base import ServiceContext
    from runtime.services.biz.service import BizService
    from runtime.services.contracts import pack_store_request

    info = REGISTRY.by_name("CID_MSG_DATA")
    storage = {"backend": "sqlite", "encrypt_at_rest": True, "synchronous": "FULL"}
    ctx = ServiceContext(
        name="biz",
        instance=0,
        registry=REGISTRY,
        config={"internal_port": 0},
        cluster_config={"storage": storage},
        data_dir=data_dir,
        discovery=StaticDiscovery([]),
    )
    biz = BizService(ctx)
    await biz.start()
    gc.freeze()  # as a worker process does once its service started
    try:
        users = [(await biz.storage.create_user(NewUser(f"user{i}"))).id for i in range(2 * pairs)]
        requests = []
        for i in range(messages):
            sender, peer = users[2 * (i % pairs)], users[2 * (i % pairs) + 1]
            body = info.message_class(
                from_user_id=sender,
                to_session_id=peer,
                msg_id=0,
                create_time=0,
                msg_type=1,
                msg_data=b"%08d" % i + b"x" * 56,
                attach_data=pack_store_request(0, b"\x5a\x5a\x5a\x5a" + i.to_bytes(4, "big"))
                if tokens
                else None,
            ).SerializeToString()
            requests.append((sender, body))
        pending = iter(requests)
        done = asyncio.Event()
        parse = info.message_class.FromString

        def feed() -> None:
            request = next(pending, None)
            if request is not None:
                sender, body = request
                if rate:
                    link.sent_at.append(time.perf_counter())
                biz.store(sender, parse(body), False, link.answered)

        loop = asyncio.get_running_loop()
        started = 0.0
        fed = 0

        def tick() -> None:  # open loop: the requests due by now, then again in a millisecond
            nonlocal fed
            due = min(messages, int((time.perf_counter() - started) * rate) + 1)
            while fed < due:
                fed += 1
                feed()
            if fed < messages:
                loop.call_later(0.001, tick)

        link = _BenchLink(messages, feed, done, open_loop=bool(rate))
        writer = biz.storage.writer  # type: ignore[attr-defined]
        writer_clock = time.pthread_getcpuclockid(writer._thread.ident)
        batches, operations = writer.batches, writer.operations
        cpu, writer_cpu, wall = time.process_time(), time.clock_gettime(writer_clock), time.perf_counter()
        if rate:
            started = time.perf_counter()
            tick()
        else:
            for _ in range(window):
                feed()
        await done.wait()
        cpu, writer_cpu = time.process_time() - cpu, time.clock_gettime(writer_clock) - writer_cpu
        wall = time.perf_counter() - wall
        assert link.stored == messages, f"{messages - link.stored} stores failed"
        batch = (writer.operations - operations) / max(writer.batches - batches, 1)
    finally:
        await biz.stop()
        gc.unfreeze()
    lat = sorted(link.latencies) or [0.0]
    return {
        "cpu": cpu / messages * 1e6,
        "writer": writer_cpu / messages * 1e6,
        "rate": messages / wall,
        "batch": batch,
        "p50_ms": lat[len(lat) // 2] * 1e3,
        "p99_ms": lat[int(len(lat) * 0.99)] * 1e3,
    }


def measure_biz(args: argparse.Namespace) -> None:
    results = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="ttgen-bench-") as tmp:
            # uvloop and the GC settings of a server process, as the cluster's worker processes run
            run = biz_run(Path(tmp), args.messages, args.window, args.pairs, args.tokens, args.rate)
            results.append(run_loop(run, server_gc=True))
    med = {key: statistics.median(r[key] for r in results) for key in results[0]}
    load = f"{args.rate:.0f} msgs/s offered" if args.rate else f"{args.window} in flight"
    print(
        f"biz store path, sqlite {__import__('sqlite3').sqlite_version}, WAL, synchronous=FULL, encrypted, "
        f"{load}, {args.pairs} pairs, {args.messages} msgs/run, "
        f"store tokens {'on' if args.tokens else 'off'}, uvloop and server GC, median of {args.runs} runs"
    )
    latency = f", answer p50 {med['p50_ms']:.1f} ms p99 {med['p99_ms']:.1f} ms" if args.rate else ""
    print(
        f"CPU per stored message: {med['cpu']:.1f} us (writer thread {med['writer']:.1f} us), "
        f"{med['rate']:.0f} msg/s, batch {med['batch']:.1f}{latency}"
    )


async def writer_run(data_dir: Path, messages: int, batch: int, pairs: int, part: str) -> dict[str, float]:
    """The SQLite writer thread's work per 1:1 message without the event loop: the cached send operation
    (`send_single_op`, encrypted) run on the writer thread in transactions of `batch`, each flushed and
    committed (FULL). `part`: "all"; "python" (the operations only: rows dropped before the flush, so no SQL
    and no commit I/O); "clear" (as "all", without encryption at rest). CPU of the thread (user, system,
    getrusage) and bytes the process wrote to the disk, per message."""
    import resource

    from runtime.storage.sqlite import messages as sqlite_messages

    async with SqliteStorage(data_dir, encrypt_at_rest=True) as store:
        users = [u.id for u in await store.create_users([NewUser(f"user{i}") for i in range(2 * pairs)])]
        ctx = store._ctx
        payload = os.urandom(64)

        def io_written() -> int:
            fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
            return int(fields["write_bytes"])

        def work(conn: Any) -> dict[str, float]:
            cache = ctx.cache
            assert cache is not None
            conn.execute("COMMIT")  # the writer opened a transaction for this operation: run our own
            if part == "clear":
                ctx.cipher = None
            written, before = io_written(), resource.getrusage(resource.RUSAGE_THREAD)
            for start in range(0, messages, batch):
                conn.execute("BEGIN IMMEDIATE")
                cache.begin(conn)
                for i in range(start, min(messages, start + batch)):
                    a, b = users[2 * (i % pairs)], users[2 * (i % pairs) + 1]
                    sqlite_messages.send_single_op(ctx, a, b, 1, payload, None, False, 0x5A000000 + i, conn)
                if part == "python":
                    cache.messages.clear()
                    cache.pairs_dirty.clear()
                    cache.touches.clear()
                else:
                    cache.flush(conn)
                conn.execute("COMMIT")
            after, written = resource.getrusage(resource.RUSAGE_THREAD), io_written() - written
            conn.execute("BEGIN IMMEDIATE")
            return {
                "user": (after.ru_utime - before.ru_utime) / messages * 1e6,
                "system": (after.ru_stime - before.ru_stime) / messages * 1e6,
                "disk": written / messages,
            }

        result: dict[str, float] = await store.writer.submit(work)
        return result


def measure_writer(args: argparse.Namespace) -> None:
    """--writer: the parts alternate run by run; medians."""
    parts = ("all", "clear", "python")
    results: dict[str, list[dict[str, float]]] = {part: [] for part in parts}
    for _ in range(args.runs):
        for part in parts:
            with tempfile.TemporaryDirectory(prefix="ttgen-bench-") as tmp:
                run = writer_run(Path(tmp), args.messages, args.window, args.pairs, part)
                results[part].append(asyncio.run(run))
    print(
        f"sqlite writer thread alone, WAL, synchronous=FULL, transactions of {args.window}, "
        f"{args.pairs} pairs, {args.messages} msgs/run, median of {args.runs} runs"
    )
    names = {"all": "encrypted, stored", "clear": "clear, stored", "python": "operations only (no SQL)"}
    for part, runs in results.items():
        med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        print(
            f"{names[part]:26s}: {med['user'] + med['system']:5.1f} us per message (user {med['user']:.1f}, "
            f"system {med['system']:.1f}), {med['disk']:.0f} bytes written"
        )


def measure_postgres(args: argparse.Namespace) -> None:
    """The default measurement on PostgreSQL (fsync and synchronous_commit on: every ack is durable)."""
    from runtime.storage.postgres.local_server import LocalServer

    server = None
    admin = args.dsn
    if admin is None:
        server = LocalServer(fsync=True).start()
        admin = server.dsn()
    try:
        grouped, batch = measure(args.messages, True, args.runs, args.encrypt, admin)
        single, _ = measure(args.baseline_messages, False, args.runs, args.encrypt, admin)
    finally:
        if server is not None:
            server.stop()
    print(
        f"postgresql ({'throwaway local server, unix socket' if server else 'given server'}), fsync on, "
        f"synchronous_commit on, encrypt={args.encrypt}, median of {args.runs} runs"
    )
    print(
        f"group commit          : {grouped:10.0f} msg/s  ({args.messages} msgs/run, "
        f"median batch {batch:.0f}, {grouped / max(batch, 1):.0f} commits/s)"
    )
    print(f"one txn per message   : {single:10.0f} msg/s  ({args.baseline_messages} msgs/run)")
    print(f"ratio                 : {grouped / single:10.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--messages", type=int, default=None, help="messages per group-commit run (5000; --biz: 20000)"
    )
    parser.add_argument("--baseline-messages", type=int, default=1000, help="messages per baseline run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--encrypt", action="store_true", help="AES-256-GCM at rest")
    parser.add_argument("--biz", action="store_true", help="CPU per message of the biz store path instead")
    parser.add_argument(
        "--store-cpu", action="store_true", help="CPU per message of the storage send path (and the server's)"
    )
    parser.add_argument(
        "--writer", action="store_true", help="CPU per message of the SQLite writer thread alone, by part"
    )
    parser.add_argument("--window", type=int, default=16, help="--biz: stores in flight; --writer: batch")
    parser.add_argument("--pairs", type=int, default=300, help="--biz: sender/recipient pairs")
    parser.add_argument("--tokens", action="store_true", help="--biz: requests carry msg's store token")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="--biz: requests per second (open loop) instead of a window"
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--dsn", help="--backend postgres: a server of your own (default: a throwaway one)")
    args = parser.parse_args()
    if args.store_cpu:
        args.messages = args.messages or 20000
        measure_store_cpu(args)
        return
    if args.writer:
        args.messages = args.messages or 40000
        measure_writer(args)
        return
    if args.biz:
        args.messages = args.messages or 20000
        measure_biz(args)
        return
    args.messages = args.messages or 5000
    if args.backend == "postgres":
        measure_postgres(args)
        return
    grouped, batch = measure(args.messages, True, args.runs, args.encrypt)
    single, _ = measure(args.baseline_messages, False, args.runs, args.encrypt)
    print(
        f"sqlite {__import__('sqlite3').sqlite_version}, WAL, synchronous=FULL, encrypt={args.encrypt}, "
        f"median of {args.runs} runs"
    )
    print(
        f"group commit          : {grouped:10.0f} msg/s  ({args.messages} msgs/run, median batch {batch:.0f})"
    )
    print(f"one txn per message   : {single:10.0f} msg/s  ({args.baseline_messages} msgs/run)")
    print(f"ratio                 : {grouped / single:10.1f}x")


if __name__ == "__main__":
    main()
