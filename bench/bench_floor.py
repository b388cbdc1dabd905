"""Benchmark: the floor under the cluster's CPU per message: bench_cluster's processes, hops, sockets, framing
and event loop, with no work done at any hop.

The message path of `bench/bench_cluster.py` is rebuilt from stubs: a sender -> msg0 -> biz -> msg0 (ack to
the sender) -> router -> msg1 -> the recipient, whose ack ends the delivery. Every hop is a real process on
127.0.0.1 with uvloop, the runtime's frame codec, one TCP connection per client and writes between services
coalesced per event-loop iteration, as in the cluster. What the stubs leave out is everything the cluster does
with a message: no protobuf, no input stages, no dedup, no retransmit tracking, no storage (biz echoes), no
router confirmations; the load generator sends pre-built bodies and parses nothing.

`--topology one` is the floor of a one-process design instead: a single stub server holds every client
connection; a send is acked to its sender and written to its recipient at once (or, with `--store`, after a
writer thread has committed it to SQLite in WAL mode, synchronous FULL, batched like the cluster's writer:
the floor of "ack after commit" in one process). No biz or router process exists.

So the figures are a lower bound: the CPU per message that the processes and hops cost before any protocol
work. Comparing them with bench_cluster's at the same offered rate shows what share of the cluster's time is
the transport floor and what is work in the services (bench/RESULTS.md).

    .venv/bin/python bench/bench_floor.py --pairs 500 --rate 20 --duration 8 --runs 3
    .venv/bin/python bench/bench_floor.py --find-rate --pairs 1000 --min-pairs 248 --step 24
    .venv/bin/python bench/bench_floor.py --topology one --store --pairs 500 --rate 20 --duration 8 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import queue
import socket
import sqlite3
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from bench_cluster import add_search_args, cpu_seconds, offer_load, pct, run_and_report

from runtime.framing import HEADER, FrameDecoder

HELLO, DATA, ACK, ANNOUNCE, RELAY = 1, 2, 3, 4, 5
U32 = struct.Struct(">I")
BODY = struct.Struct(">IQ")  # recipient user id, send stamp (ns); then padding
PAD = b"x" * 60


def frame(command: int, seq: int, body: bytes, reserved: int = 0) -> bytes:
    return HEADER.pack(16 + len(body), 1, 0, 0, command, seq, reserved) + body


def request(command: int, corr: int, body: bytes) -> bytes:
    """A service request: the 32-bit correlation id in seq (low half) and reserved (high half)."""
    return frame(command, corr & 0xFFFF, body, corr >> 16)


class Coalesced:
    """A writer between services: the frames queued in one loop iteration leave in one write, as in Links."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.out = bytearray()
        self.loop = asyncio.get_running_loop()

    def send(self, data: bytes) -> None:
        if not self.out:
            self.loop.call_soon(self.flush)
        self.out += data

    def flush(self) -> None:
        self.transport.write(bytes(self.out))
        self.out.clear()


class Stream(asyncio.Protocol):
    """A framed connection that hands each decoded frame to `on_frame(stream, frame)`."""

    def __init__(self, on_frame: Any) -> None:
        self.on_frame = on_frame
        self.decoder = FrameDecoder()
        self.transport: Any = None
        self.writer: Coalesced | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.writer = Coalesced(transport)

    def data_received(self, data: bytes) -> None:
        on_frame = self.on_frame
        for f in self.decoder.feed(data):
            on_frame(self, f)


# -- the stub services ---------------------------------------------------------------------------------------
async def _listen(on_frame: Any, port_out: Any) -> None:
    """Serve framed connections on an ephemeral loopback port, report the port, run until terminated."""
    server = await asyncio.get_running_loop().create_server(lambda: Stream(on_frame), "127.0.0.1", 0)
    port_out.put(server.sockets[0].getsockname()[1])
    await asyncio.Event().wait()


async def _biz(port_out: Any) -> None:
    def on_frame(stream: Stream, f: Any) -> None:  # store nothing: echo the request as the reply
        assert stream.writer is not None
        stream.writer.send(frame(f.command_id, f.seq, f.body, f.reserved))  # the same correlation id

    await _listen(on_frame, port_out)


async def _router(port_out: Any) -> None:
    where: dict[int, Stream] = {}  # user id -> the msg server's stream

    def on_frame(stream: Stream, f: Any) -> None:
        if f.command_id == ANNOUNCE:
            where[U32.unpack_from(f.body)[0]] = stream
        else:  # RELAY: targeted, to the server of the recipient
            target = where.get(U32.unpack_from(f.body)[0])
            if target is not None and target.writer is not None:
                target.writer.send(frame(RELAY, 0, f.body))

    await _listen(on_frame, port_out)


async def _msg(port_out: Any, biz_port: int, router_port: int) -> None:
    loop = asyncio.get_running_loop()
    clients: dict[int, Stream] = {}
    pending: dict[int, tuple[Stream, int]] = {}
    next_corr = [1]

    def from_biz(_s: Stream, f: Any) -> None:
        corr = f.seq | f.reserved << 16
        client, seq = pending.pop(corr)
        client.transport.write(frame(ACK, seq, U32.pack(corr)))  # the sender's ack, right away
        assert router.writer is not None
        router.writer.send(frame(RELAY, 0, f.body))

    def from_router(_s: Stream, f: Any) -> None:
        client = clients.get(U32.unpack_from(f.body)[0])
        if client is not None:
            client.transport.write(frame(DATA, 0, f.body))

    def from_client(stream: Stream, f: Any) -> None:
        cid = f.command_id
        if cid == DATA:
            corr = next_corr[0]
            next_corr[0] = corr + 1 if corr < 0xFFFFFFFF else 1
            pending[corr] = (stream, f.seq)
            assert biz.writer is not None
            biz.writer.send(request(DATA, corr, f.body))
        elif cid == HELLO:
            uid = U32.unpack_from(f.body)[0]
            clients[uid] = stream
            assert router.writer is not None
            router.writer.send(frame(ANNOUNCE, 0, f.body))
        # ACK: the recipient's receipt ends the delivery; nothing to do here

    _, biz = await loop.create_connection(lambda: Stream(from_biz), "127.0.0.1", biz_port)
    _, router = await loop.create_connection(lambda: Stream(from_router), "127.0.0.1", router_port)
    await _listen(from_client, port_out)


async def _single(port_out: Any, store: bool) -> None:
    """Every client on one server: a send is acked and delivered at once, or after its batch committed."""
    loop = asyncio.get_running_loop()
    clients: dict[int, Stream] = {}

    def settle(done: list[tuple[Stream, int, bytes]]) -> None:
        for sender, seq, body in done:
            sender.transport.write(frame(ACK, seq, U32.pack(seq)))
            client = clients.get(U32.unpack_from(body)[0])
            if client is not None:
                client.transport.write(frame(DATA, 0, body))

    todo: queue.SimpleQueue[tuple[Stream, int, bytes]] = queue.SimpleQueue()

    def writer(path: str) -> None:  # one transaction per batch of what is queued, then one loop wake-up
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE m (id INTEGER PRIMARY KEY, to_user INTEGER NOT NULL, body BLOB NOT NULL)")
        while True:
            batch = [todo.get()]
            while len(batch) < 1024:
                try:
                    batch.append(todo.get_nowait())
                except queue.Empty:
                    break
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO m (to_user, body) VALUES (?, ?)",
                [(U32.unpack_from(b)[0], b) for _, _, b in batch],
            )
            db.execute("COMMIT")
            loop.call_soon_threadsafe(settle, batch)

    if store:
        folder = tempfile.mkdtemp(prefix="ttgen-floor-")
        threading.Thread(target=writer, args=(f"{folder}/floor.db",), daemon=True).start()

    def from_client(stream: Stream, f: Any) -> None:
        cid = f.command_id
        if cid == DATA:
            if store:
                todo.put((stream, f.seq, f.body))
            else:
                settle([(stream, f.seq, f.body)])
        elif cid == HELLO:
            clients[U32.unpack_from(f.body)[0]] = stream

    await _listen(from_client, port_out)


def service_process(name: str, port_out: Any, *args: Any) -> None:
    import uvloop

    services: dict[str, Callable[..., Coroutine[Any, Any, None]]] = {"biz": _biz, "router": _router}
    services["msg"] = _msg
    services["single"] = _single
    uvloop.run(services[name](port_out, *args))


# -- the load generator --------------------------------------------------------------------------------------
class Stats:
    def __init__(self) -> None:
        self.sent = self.acked = self.delivered = 0
        self.cpu_s = 0.0
        self.ack_ns: list[int] = []
        self.delivery_ns: list[int] = []


async def _clients(
    first_uid: int, pairs: int, ports: tuple[int, int], start_at: float, duration: float, rate: float
) -> Stats:
    loop = asyncio.get_running_loop()
    stats = Stats()
    sent_at: dict[tuple[int, int], int] = {}

    def sender_frame(stream: Stream, f: Any) -> None:  # the ack of a send
        stamp = sent_at.pop((id(stream), f.seq), None)
        stats.acked += 1
        if stamp is not None:
            stats.ack_ns.append(time.monotonic_ns() - stamp)

    def receiver_frame(stream: Stream, f: Any) -> None:  # a delivery: note its latency, ack it
        stats.delivered += 1
        stats.delivery_ns.append(time.monotonic_ns() - BODY.unpack_from(f.body)[1])
        assert stream.writer is not None
        stream.writer.send(frame(ACK, 0, b""))

    senders, receivers = [], []
    for k in range(pairs):
        s_uid, r_uid = first_uid + 2 * k, first_uid + 2 * k + 1
        _, r = await loop.create_connection(lambda: Stream(receiver_frame), "127.0.0.1", ports[1])
        r.transport.write(frame(HELLO, 0, U32.pack(r_uid)))
        _, s = await loop.create_connection(lambda: Stream(sender_frame), "127.0.0.1", ports[0])
        s.transport.write(frame(HELLO, 0, U32.pack(s_uid)))
        senders.append((s, r_uid))
        receivers.append(r)
    seqs = [0] * len(senders)

    def send(k: int) -> None:
        stream, to = senders[k]
        seqs[k] = seq = seqs[k] % 0xFFFF + 1
        stamp = time.monotonic_ns()
        stream.transport.write(frame(DATA, seq, BODY.pack(to, stamp) + PAD))
        sent_at[(id(stream), seq)] = stamp
        stats.sent += 1

    await offer_load(len(senders), start_at, duration, rate, 10.0, send, stats)
    return stats


def client_process(args: tuple[Any, ...], out: Any) -> None:
    import uvloop

    out.put(uvloop.run(_clients(*args)))


def one_run(opts: argparse.Namespace) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    ports = ctx.Queue()
    procs: dict[str, Any] = {}

    def start(name: str, kind: str, *args: Any) -> int:
        proc = ctx.Process(target=service_process, args=(kind, ports, *args), daemon=True)
        proc.start()
        procs[name] = proc
        port: int = ports.get(timeout=30)
        return port

    if opts.topology == "one":
        port = start("single", "single", opts.store)
        msg_ports = (port, port)
    else:
        biz_port = start("biz0", "biz")
        router_port = start("router0", "router")
        msg_ports = (start("msg0", "msg", biz_port, router_port), start("msg1", "msg", biz_port, router_port))
    out = ctx.Queue()
    start_at = time.time() + 2.0 + opts.pairs / 500
    share = opts.pairs // opts.client_procs
    clients = []
    for p in range(opts.client_procs):
        args = (1 + 2 * share * p, share, msg_ports, start_at, opts.duration, opts.rate)
        proc = ctx.Process(target=client_process, args=(args, out), daemon=True)
        proc.start()
        clients.append(proc)
    try:
        time.sleep(max(0.0, start_at - time.time()))
        before = {name: cpu_seconds(p.pid) for name, p in procs.items()}
        results = [out.get(timeout=60 + opts.duration) for _ in clients]
        after = {name: cpu_seconds(p.pid) for name, p in procs.items()}
    finally:
        for proc in [*clients, *procs.values()]:
            proc.terminate()
            proc.join(5)
    delivered = sum(s.delivered for s in results)
    per_msg = {
        f"cpu_us_{name}": 1e6 * (sum(after[name]) - sum(before[name])) / max(1, delivered) for name in procs
    }
    ack_ns = [x for s in results for x in s.ack_ns]
    delivery_ns = [x for s in results for x in s.delivery_ns]
    return {
        **per_msg,
        "cpu_us_cluster": sum(per_msg.values()),
        "cpu_us_clients": 1e6 * sum(s.cpu_s for s in results) / max(1, delivered),
        "offered_per_s": sum(s.sent for s in results) / opts.duration,
        "delivered_per_s": delivered / opts.duration,
        "ack_p50_ms": pct(ack_ns, 0.5),
        "ack_p99_ms": pct(ack_ns, 0.99),
        "e2e_p50_ms": pct(delivery_ns, 0.5),
        "e2e_p99_ms": pct(delivery_ns, 0.99),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--pairs", type=int, default=500, help="sender/receiver pairs (connections = 2 x pairs)")
    ap.add_argument("--rate", type=float, default=20.0, help="messages per second per sender")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds of load per run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--client-procs", type=int, default=4, help="load-generator processes")
    ap.add_argument(
        "--topology",
        choices=("split", "one"),
        default="split",
        help="split: msg x 2, biz and router processes (bench_cluster's cluster); one: one server process",
    )
    ap.add_argument(
        "--store",
        action="store_true",
        help="--topology one: ack and deliver after a SQLite commit (WAL, FULL)",
    )
    add_search_args(ap)
    opts = ap.parse_args()
    if opts.store and opts.topology != "one":
        ap.error("--store needs --topology one")
    for name in ("pairs", "min_pairs", "step") if opts.find_rate else ("pairs",):
        if getattr(opts, name) % opts.client_procs:
            ap.error(f"--{name.replace('_', '-')} must be a multiple of --client-procs")

    run_and_report(opts, one_run)


if __name__ == "__main__":
    main()
