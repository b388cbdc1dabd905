"""Baseline: a conventional one-process chat relay on grpc.aio, measured like `ttgen bench one-to-one`.

The relay is what a team would write without ttgen: one process, one bidirectional gRPC stream per client
(`Relay.Chat(stream Up) returns (stream Down)`, messages compiled from RELAY_PROTO with grpcio-tools),
SQLite in WAL mode with `synchronous=FULL`, one writer thread committing every message queued since its last
commit in one transaction (group commit), AES-GCM at rest (`--no-encrypt` to leave it out), the sender's ack
sent after the commit, then the message pushed to the recipient's stream; the recipient's receipt ends the
delivery (the relay keeps each delivery pending until then, as the cluster's delivery tracker does).

The load is the cluster bench's: `--pairs` senders each send `--rate` messages a second on an open-loop
schedule (runtime.loadgen.schedule.OpenLoop), in `--client-procs` load processes; every latency (sender ack,
delivery) is measured from the message's due time into runtime.loadgen.histogram. The relay's CPU (user +
system from /proc, as ttgen.bench.cluster.cpu_seconds reads it) is counted from the start of the traffic to
the end of the drain, per delivered message, like `ttgen bench`'s cluster CPU per delivery.

    .venv/bin/python bench/grpc_relay.py --pairs 500 --rate 20 --duration 8
    .venv/bin/python bench/grpc_relay.py --find-rate --pairs 1000 --min-pairs 100 --step 25 --rate 20

Prints one JSON line per run and, with `--find-rate`, the highest offered load whose e2e p99 (from the due
time) stays under 50 ms with every message delivered. Bounded: each run lasts `--duration` plus a drain of at
most `--drain` seconds; the relay process is stopped at the end. Results: bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import resource
import shutil
import signal
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from runtime.loadgen.histogram import Histogram  # noqa: E402
from runtime.loadgen.schedule import OpenLoop  # noqa: E402

RELAY_PROTO = """
syntax = "proto3";
package benchrelay;

message Login { uint32 user_id = 1; }
message Send { uint32 to = 1; uint32 seq = 2; bytes body = 3; }
message Receipt { uint64 msg_id = 1; }
message Up { oneof kind { Login login = 1; Send send = 2; Receipt receipt = 3; } }

message Sent { uint32 seq = 1; uint64 msg_id = 2; }
message Deliver { uint32 from_user = 1; uint64 msg_id = 2; bytes body = 3; }
message Down { oneof kind { Sent sent = 1; Deliver deliver = 2; } }

service Relay { rpc Chat(stream Up) returns (stream Down); }
"""
STAMP = struct.Struct(">d")
PAD = b"x" * 56  # the cluster bench's messages carry a stamp and 56 bytes


def compiled(folder: Path) -> tuple[Any, Any]:
    """(messages module, grpc module) compiled from RELAY_PROTO into `folder` with grpcio-tools' protoc."""
    from grpc_tools import protoc

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "benchrelay.proto").write_text(RELAY_PROTO)
    if not (folder / "benchrelay_pb2_grpc.py").exists():
        out = [f"--python_out={folder}", f"--grpc_python_out={folder}"]
        code = protoc.main(["protoc", f"-I{folder}", *out, "benchrelay.proto"])
        if code != 0:
            raise SystemExit("protoc failed on the relay's proto")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return importlib.import_module("benchrelay_pb2"), importlib.import_module("benchrelay_pb2_grpc")


# -- the relay (server process) ---------------------------------------------------------------------------
class Store:
    """SQLite (WAL, synchronous=FULL) behind one writer thread that commits every queued message per batch."""

    def __init__(self, path: Path, encrypt: bool) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS message (id INTEGER PRIMARY KEY, from_id INTEGER NOT NULL, "
            "to_id INTEGER NOT NULL, created REAL NOT NULL, body BLOB NOT NULL)"
        )
        self.db.execute("CREATE INDEX IF NOT EXISTS message_pair ON message (to_id, from_id, id)")
        self.cipher = None
        if encrypt:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self.cipher = AESGCM(AESGCM.generate_key(bit_length=256))
        self.next_id = 1 + (self.db.execute("SELECT coalesce(max(id), 0) FROM message").fetchone()[0])

    def commit(self, rows: list[tuple[int, int, bytes]]) -> list[int]:
        """Store (from, to, body) rows in one transaction; their ids, in order (runs on the writer thread)."""
        now = time.time()
        first = self.next_id
        ids = list(range(first, first + len(rows)))
        cipher = self.cipher
        params = []
        for msg_id, (src, dst, body) in zip(ids, rows, strict=True):
            if cipher is not None:
                nonce = os.urandom(12)
                body = nonce + cipher.encrypt(nonce, body, None)
            params.append((msg_id, src, dst, now, body))
        self.db.execute("BEGIN IMMEDIATE")
        insert = "INSERT INTO message (id, from_id, to_id, created, body) VALUES (?, ?, ?, ?, ?)"
        self.db.executemany(insert, params)
        self.db.execute("COMMIT")
        self.next_id = first + len(rows)
        return ids


class RelayServer:
    """Streams by user id; sends queued for the writer; acks and deliveries after each commit."""

    def __init__(self, pb: Any, store: Store) -> None:
        self.pb, self.store = pb, store
        self.streams: dict[int, asyncio.Queue[Any]] = {}
        self.queued: list[tuple[int, int, bytes, asyncio.Queue[Any], int]] = []
        self.committing = False
        self.pending: dict[int, int] = {}  # msg id -> recipient: deliveries not yet receipted
        self.delivered = 0

    def _kick(self) -> None:
        if self.committing or not self.queued:
            return
        batch, self.queued = self.queued, []
        self.committing = True
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(None, self.store.commit, [(s, d, b) for s, d, b, _q, _seq in batch])
        fut.add_done_callback(lambda f: self._committed(batch, f))

    def _committed(self, batch: list[tuple[int, int, bytes, asyncio.Queue[Any], int]], fut: Any) -> None:
        self.committing = False
        ids = fut.result()
        pb = self.pb
        for msg_id, (src, dst, body, queue, seq) in zip(ids, batch, strict=True):
            queue.put_nowait(pb.Down(sent=pb.Sent(seq=seq, msg_id=msg_id)))
            target = self.streams.get(dst)
            if target is not None:
                self.pending[msg_id] = dst
                target.put_nowait(pb.Down(deliver=pb.Deliver(from_user=src, msg_id=msg_id, body=body)))
        self._kick()

    async def Chat(self, requests: Any, context: Any) -> None:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        user = 0

        async def write() -> None:
            while True:
                await context.write(await queue.get())

        writer = asyncio.get_running_loop().create_task(write())
        try:
            async for up in requests:
                kind = up.WhichOneof("kind")
                if kind == "send":
                    if not user:
                        break
                    self.queued.append((user, up.send.to, up.send.body, queue, up.send.seq))
                    self._kick()
                elif kind == "receipt":
                    if self.pending.pop(up.receipt.msg_id, None) is not None:
                        self.delivered += 1
                elif kind == "login":
                    user = up.login.user_id
                    self.streams[user] = queue
                    queue.put_nowait(self.pb.Down(sent=self.pb.Sent(seq=0, msg_id=0)))  # logged in
        finally:
            writer.cancel()
            if user and self.streams.get(user) is queue:
                del self.streams[user]


async def serve(args: argparse.Namespace) -> None:
    import grpc

    pb, pb_grpc = compiled(Path(args.proto_dir))
    store = Store(Path(args.db), encrypt=not args.no_encrypt)
    store_executor = __import__("concurrent.futures").futures.ThreadPoolExecutor(1, "relay-writer")
    asyncio.get_running_loop().set_default_executor(store_executor)
    server = grpc.aio.server()
    relay = RelayServer(pb, store)
    pb_grpc.add_RelayServicer_to_server(relay, server)
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    await server.start()
    print(json.dumps({"port": port, "pid": os.getpid()}), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)


# -- the load (client processes) --------------------------------------------------------------------------
def load_process(args: list[Any]) -> None:
    """One load process (`grpc_relay.py load ARGS_JSON`): prints its counters and histograms as JSON."""
    try:
        print(json.dumps(asyncio.run(_load(*args))), flush=True)
    except BaseException as exc:  # report instead of hanging the parent
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)


async def _load(
    proto_dir: str, port: int, pairs: list[int], rate: float, start: float, duration: float, drain: float
) -> dict[str, Any]:
    import grpc

    pb, pb_grpc = compiled(Path(proto_dir))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.RelayStub(channel)
    ack_h, e2e_h = Histogram(), Histogram()
    counts = {"sent": 0, "acked": 0, "delivered": 0, "duplicates": 0}
    seen: set[int] = set()
    due_of: dict[tuple[int, int], float] = {}  # (sender index, seq) -> due time
    outboxes: list[asyncio.Queue[Any]] = []
    calls = []

    def stream(user: int) -> tuple[asyncio.Queue[Any], Any]:
        box: asyncio.Queue[Any] = asyncio.Queue()
        box.put_nowait(pb.Up(login=pb.Login(user_id=user)))

        async def ups() -> Any:
            while True:
                item = await box.get()
                if item is None:
                    return
                yield item

        return box, stub.Chat(ups())

    ready: list[asyncio.Event] = []

    async def read_sender(k: int, call: Any, logged_in: asyncio.Event) -> None:
        async for down in call:
            if down.WhichOneof("kind") == "sent":
                if down.sent.seq == 0:
                    logged_in.set()
                    continue
                due = due_of.pop((k, down.sent.seq), None)
                counts["acked"] += 1
                if due is not None:
                    ack_h.record_seconds(time.monotonic() - due)

    async def read_receiver(box: asyncio.Queue[Any], call: Any, logged_in: asyncio.Event) -> None:
        async for down in call:
            if down.WhichOneof("kind") == "sent":
                logged_in.set()
            elif down.WhichOneof("kind") == "deliver":
                d = down.deliver
                (due,) = STAMP.unpack_from(d.body, 0)
                if d.msg_id in seen:
                    counts["duplicates"] += 1
                else:
                    seen.add(d.msg_id)
                    counts["delivered"] += 1
                    e2e_h.record_seconds(time.monotonic() - due)
                box.put_nowait(pb.Up(receipt=pb.Receipt(msg_id=d.msg_id)))

    readers = []
    loop = asyncio.get_running_loop()
    for k in pairs:
        ready += [asyncio.Event(), asyncio.Event()]
        rbox, rcall = stream(2 * k + 2)
        readers.append(loop.create_task(read_receiver(rbox, rcall, ready[-2])))
        sbox, scall = stream(2 * k + 1)
        outboxes.append(sbox)
        calls.append((rbox, sbox))
        readers.append(loop.create_task(read_sender(len(outboxes) - 1, scall, ready[-1])))
    # every stream logged in before the first message (a late start shows as latency: due times are fixed)
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in ready)), 60)
    schedule = OpenLoop(start, rate * len(pairs), len(pairs), end=start + duration)
    seqs = [0] * len(pairs)
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    while not schedule.done:
        for _i, k, due in schedule.take_due(time.monotonic()):
            seqs[k] += 1
            due_of[(k, seqs[k])] = due
            body = STAMP.pack(due) + PAD
            outboxes[k].put_nowait(pb.Up(send=pb.Send(to=2 * pairs[k] + 2, seq=seqs[k], body=body)))
            counts["sent"] += 1
        nxt = schedule.next_due()
        if nxt is not None:
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
    expected = counts["sent"]
    deadline = time.monotonic() + drain
    while (counts["acked"] < expected or counts["delivered"] < expected) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for rbox, sbox in calls:
        rbox.put_nowait(None)
        sbox.put_nowait(None)
    for task in readers:
        task.cancel()
    await channel.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        **counts,
        "ack": ack_h.to_json(),
        "e2e": e2e_h.to_json(),
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }


def cpu_seconds(pid: int) -> float:
    from ttgen.bench.cluster import cpu_seconds as cpu

    return cpu(pid)


def one_run(opts: argparse.Namespace, pairs: int, workdir: Path) -> dict[str, Any]:
    """Start a fresh relay, offer `pairs x rate` messages a second, report what was measured."""
    db = workdir / f"relay-{time.monotonic_ns()}.db"
    proto_dir = workdir / "proto"
    compiled(proto_dir)
    argv = [sys.executable, __file__, "serve", "--db", str(db), "--proto-dir", str(proto_dir)]
    if opts.no_encrypt:
        argv.append("--no-encrypt")
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        info = json.loads(server.stdout.readline())
        procs = max(1, min(opts.client_procs, pairs))
        start = time.monotonic() + 1.5 + pairs / 500  # time for every process to open its streams
        workers = []
        for p in range(procs):
            mine = list(range(p, pairs, procs))
            args = [str(proto_dir), info["port"], mine, opts.rate, start, opts.duration, opts.drain]
            load = [sys.executable, __file__, "load", json.dumps(args)]
            workers.append(subprocess.Popen(load, stdout=subprocess.PIPE, text=True))
        time.sleep(max(0.0, start - time.monotonic()))
        before = cpu_seconds(info["pid"])
        results = []
        for w in workers:
            out, _err = w.communicate(timeout=opts.duration + opts.drain + 120)
            lines = [line for line in out.splitlines() if line.startswith("{")]
            results.append(json.loads(lines[-1]) if lines else {"error": f"exit code {w.returncode}"})
        after = cpu_seconds(info["pid"])
    finally:
        if server.stdout is not None:
            server.stdout.close()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise SystemExit(f"load process failed: {errors[0]}")
    total = {k: sum(r[k] for r in results) for k in ("sent", "acked", "delivered", "duplicates", "cpu_s")}
    ack = Histogram.merged(Histogram.from_json(r["ack"]) for r in results)
    e2e = Histogram.merged(Histogram.from_json(r["e2e"]) for r in results)
    delivered = max(1, total["delivered"])
    return {
        "stack": "grpc.aio relay",
        "pairs": pairs,
        "offered_per_s": round(total["sent"] / opts.duration, 1),
        "sent": total["sent"],
        "acked": total["acked"],
        "delivered": total["delivered"],
        "duplicates": total["duplicates"],
        "ack_p50_ms": ack.percentile(0.5),
        "ack_p99_ms": ack.percentile(0.99),
        "e2e_p50_ms": e2e.percentile(0.5),
        "e2e_p99_ms": e2e.percentile(0.99),
        "server_cpu_us_per_msg": round(1e6 * (after - before) / delivered, 1),
        "client_cpu_us_per_msg": round(1e6 * total["cpu_s"] / delivered, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = ap.add_subparsers(dest="command")
    srv = sub.add_parser("serve", help="run the relay (the bench starts it)")
    srv.add_argument("--port", type=int, default=0)
    srv.add_argument("--db", required=True)
    srv.add_argument("--proto-dir", required=True)
    srv.add_argument("--no-encrypt", action="store_true")
    load = sub.add_parser("load", help="one load process (the bench starts them)")
    load.add_argument("args", help="JSON: proto dir, port, pair indexes, rate, start, duration, drain")
    ap.add_argument("--pairs", type=int, default=500)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--drain", type=float, default=10.0)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--client-procs", type=int, default=2)
    ap.add_argument("--no-encrypt", action="store_true", help="store bodies in clear (default: AES-GCM)")
    ap.add_argument("--find-rate", action="store_true", help="search the highest load with p99 < target")
    ap.add_argument("--target-p99-ms", type=float, default=50.0)
    ap.add_argument("--min-pairs", type=int, default=50)
    ap.add_argument("--step", type=int, default=25)
    opts = ap.parse_args()
    if opts.command == "serve":
        asyncio.run(serve(opts))
        return
    if opts.command == "load":
        load_process(json.loads(opts.args))
        return
    workdir = Path(tempfile.mkdtemp(prefix="ttgen-grpc-relay-"))
    try:

        def measure(pairs: int) -> dict[str, Any]:
            rows = [one_run(opts, pairs, workdir) for _ in range(opts.runs)]
            for row in rows:
                print(json.dumps(row), flush=True)
            med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "stack"}
            return {"stack": rows[0]["stack"], **med}

        if not opts.find_rate:
            print(json.dumps({"median": measure(opts.pairs)}), flush=True)
            return
        lo, hi, best = opts.min_pairs, opts.pairs, None
        while hi - lo >= opts.step:
            mid = (lo + hi) // 2
            row = measure(mid)
            ok = row["delivered"] >= row["sent"] and (row["e2e_p99_ms"] or 1e9) < opts.target_p99_ms
            print(f"probe {row['offered_per_s']:,.0f}/s: e2e p99 {row['e2e_p99_ms']} ms ok={ok}", flush=True)
            if ok:
                lo, best = mid, row
            else:
                hi = mid
        print(json.dumps({"sustainable": best}), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
