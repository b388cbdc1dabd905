"""Raw-socket one-to-one load client, independent of the runtime: a check on `ttgen bench one-to-one`.

Standard library only: non-blocking sockets on `selectors`, the 16-byte TeamTalk frame header and the few
protobuf fields it needs encoded and decoded by hand (no protobuf, no asyncio, no runtime code). It logs in
the users `ttgen bench one-to-one --pairs P` creates (bench000000, bench000001, ...: pair k's sender is user
2k on msg server k % M, its receiver user 2k+1 on msg server (k+1) % M), then every sender sends `--rate`
messages a second for `--duration` seconds on an open-loop schedule; each message carries its due time, and
every latency (sender ack, delivery) is measured from it. Receivers acknowledge every delivery.

    .venv/bin/ttgen up --processes --config cfg.yaml --data-dir D &    # a cluster
    .venv/bin/ttgen bench one-to-one --target D --config cfg.yaml --pairs 500 --duration 1  # makes users
    .venv/bin/python bench/raw_client.py --data-dir D --pairs 500 --rate 20 --duration 10

Prints one JSON line: offered, sent, acked, delivered, duplicates, ack and delivery p50/p99/max (ms), CPU
seconds of the client processes. bench/compare_one_to_one.py runs both clients against one cluster.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import multiprocessing as mp
import os
import resource
import selectors
import socket
import struct
import time
from pathlib import Path
from typing import Any

HEADER = struct.Struct(">IHHHHHH")  # length, version, flag, service id, command id, seq, reserved
STAMP = struct.Struct(">d")
LOGIN_REQ, LOGIN_RES, MSG_DATA, MSG_ACK = 0x0103, 0x0104, 0x0301, 0x0302
PC, SINGLE_TEXT, SESSION_SINGLE = 1, 1, 1
PAD = b"x" * 56


# -- protobuf by hand: varints and length-delimited fields are all this client needs ----------------------
def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def field_bytes(number: int, value: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(value)) + value


def fields(body: bytes) -> dict[int, Any]:
    """Top-level fields of a protobuf message: varints as ints, length-delimited as bytes (last one wins)."""
    out: dict[int, Any] = {}
    pos, end = 0, len(body)
    while pos < end:
        key = shift = 0
        while True:
            b = body[pos]
            pos += 1
            key |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        number, wire = key >> 3, key & 7
        if wire == 0:
            value = shift = 0
            while True:
                b = body[pos]
                pos += 1
                value |= (b & 0x7F) << shift
                shift += 7
                if b < 0x80:
                    break
            out[number] = value
        elif wire == 2:
            length = shift = 0
            while True:
                b = body[pos]
                pos += 1
                length |= (b & 0x7F) << shift
                shift += 7
                if b < 0x80:
                    break
            out[number] = body[pos : pos + length]
            pos += length
        elif wire == 5:
            pos += 4
        elif wire == 1:
            pos += 8
        else:
            raise ValueError(f"wire type {wire}")
    return out


def frame(cid: int, seq: int, body: bytes) -> bytes:
    return HEADER.pack(16 + len(body), 1, 0, cid >> 8, cid, seq, 0) + body


# -- one client process -------------------------------------------------------------------------------------
class Conn:
    __slots__ = ("buf", "name", "out", "peer_id", "seen", "sent_at", "seq", "sock", "user_id")

    def __init__(self, name: str) -> None:
        self.name = name
        self.sock: socket.socket | None = None
        self.buf = b""
        self.out = bytearray()
        self.user_id = 0
        self.peer_id = 0
        self.seq = 0
        self.sent_at: dict[int, float] = {}
        self.seen: set[tuple[int, int]] = set()

    def next_seq(self) -> int:
        self.seq = self.seq % 0xFFFF + 1
        return self.seq


def run_process(
    pairs: list[int], endpoints: dict[int, tuple[str, int]], source: str, opts: Any, start: Any, out: Any
) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    m = len(endpoints)
    password = hashlib.md5(opts.password.encode()).hexdigest().encode()
    sel = selectors.DefaultSelector()
    senders, receivers = [], []
    def connect(c: Conn, instance: int) -> None:
        """A connection to msg server `instance` with the login request sent."""
        sock = socket.socket()
        sock.bind((source, 0))
        sock.connect(endpoints[instance])
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = field_bytes(1, c.name.encode()) + field_bytes(2, password) + field_varint(3, 1)
        sock.sendall(frame(LOGIN_REQ, c.next_seq(), body + field_varint(4, PC)))
        c.sock, c.buf = sock, b""

    homes: dict[str, int] = {}
    for k in pairs:
        for index, instance, role in ((2 * k, k % m, senders), (2 * k + 1, (k + 1) % m, receivers)):
            c = Conn(f"bench{index:06d}")
            homes[c.name] = instance
            connect(c, instance)
            role.append(c)
    for c in senders + receivers:  # logins answered in order
        busy = 0
        while True:
            assert c.sock is not None
            data = c.sock.recv(65536)
            if not data:
                raise SystemExit(f"login of {c.name}: the msg server closed the connection")
            c.buf += data
            if len(c.buf) >= 16:
                length, _, _, _, cid, _, _ = HEADER.unpack_from(c.buf)
                if len(c.buf) >= length and cid == LOGIN_RES:
                    res = fields(c.buf[16:length])
                    if res.get(2, 0) != 0:
                        # password checks are shared fairly per client address: a login storm from one
                        # address is answered "busy" beyond its share; a client tries again later
                        if b"busy" in res.get(3, b"") and busy < 50:
                            busy += 1
                            c.sock.close()
                            time.sleep(0.05 * busy)
                            connect(c, homes[c.name])
                            continue
                        raise SystemExit(f"login of {c.name} refused: {res.get(3)!r}")
                    c.user_id = fields(res[5])[1]
                    c.buf = c.buf[length:]
                    break
                if len(c.buf) >= length:
                    c.buf = c.buf[length:]  # a push before the login answer: skip
        c.sock.setblocking(False)
        sel.register(c.sock, selectors.EVENT_READ, c)
    for s, r in zip(senders, receivers, strict=True):
        s.peer_id = r.user_id
    quiet_until = time.monotonic() + 60  # let the logins' presence notifications pass (read and dropped)
    while time.monotonic() < quiet_until:
        ready = sel.select(1.0)
        if not ready:
            break
        for key, _ in ready:
            try:
                key.data.buf += key.data.sock.recv(262144)
            except BlockingIOError:
                continue
            buf, pos = key.data.buf, 0
            while len(buf) - pos >= 16 and len(buf) - pos >= HEADER.unpack_from(buf, pos)[0]:
                pos += HEADER.unpack_from(buf, pos)[0]
            key.data.buf = buf[pos:]
    prefixes = [
        field_varint(1, s.user_id)
        + field_varint(2, s.peer_id)
        + field_varint(3, 0)
        + field_varint(4, 0)
        + field_varint(5, SINGLE_TEXT)
        + varint(6 << 3 | 2)
        + varint(STAMP.size + len(PAD))
        for s in senders
    ]
    out.put(("ready", None))
    t0 = start.get()
    n = len(senders)
    interval = 1.0 / (opts.rate * n)
    total = int(opts.duration * opts.rate * n)
    end = t0 + opts.duration + opts.drain
    cpu0 = time.process_time()
    j = sent = acked = delivered = dups = 0
    ack_ms: list[float] = []
    e2e_ms: list[float] = []
    # --closed-loop: a sender sends its next message only when the previous one is acknowledged (and not
    # faster than --rate), stamped when it is sent: the way many load tools work, kept here to show what such
    # a client reports (its offered load falls when the cluster slows down, so queues never build).
    closed = bool(opts.closed_loop)
    ready: list[tuple[float, int]] = [(t0 + k * interval, k) for k in range(n)] if closed else []
    stop_at = t0 + opts.duration
    if closed:
        total = 0
    index_of = {id(x): k for k, x in enumerate(senders)}
    while True:
        now = time.monotonic()
        while ready and ready[0][0] <= now and now < stop_at:
            _, k = heapq.heappop(ready)
            s = senders[k]
            seq = s.next_seq()
            s.sent_at[seq] = now
            assert s.sock is not None
            s.sock.send(frame(MSG_DATA, seq, prefixes[k] + STAMP.pack(now) + PAD))
            sent += 1
        while j < total and t0 + j * interval <= now:
            due = t0 + j * interval
            s = senders[j % n]
            seq = s.next_seq()
            s.sent_at[seq] = due
            assert s.sock is not None
            try:
                s.sock.send(frame(MSG_DATA, seq, prefixes[j % n] + STAMP.pack(due) + PAD))
            except BlockingIOError:
                pass  # counted as sent and never acked: shows up in the figures
            sent += 1
            j += 1
        done_sending = now >= stop_at if closed else j >= total
        if now > end or (done_sending and acked >= sent and delivered >= sent):
            break
        timeout = max(0.0, min(t0 + j * interval - now, 0.005)) if j < total else 0.005
        if ready:
            timeout = max(0.0, min(timeout, ready[0][0] - now))
        for key, _ in sel.select(timeout):
            c = key.data
            try:
                data = c.sock.recv(262144)
            except BlockingIOError:
                continue
            if not data:
                sel.unregister(c.sock)
                continue
            now = time.monotonic()
            buf = c.buf + data if c.buf else data
            pos = 0
            acks = bytearray()
            while len(buf) - pos >= 16:
                length, _, _, _, cid, seq, _ = HEADER.unpack_from(buf, pos)
                if len(buf) - pos < length:
                    break
                body = buf[pos + 16 : pos + length]
                pos += length
                if cid == MSG_DATA:
                    f = fields(body)
                    key2 = (f.get(1, 0), f.get(3, 0))
                    if key2 in c.seen:
                        dups += 1
                    else:
                        c.seen.add(key2)
                        delivered += 1
                        e2e_ms.append((now - STAMP.unpack_from(f[6], 0)[0]) * 1000)
                    ack = (
                        field_varint(1, c.user_id)
                        + field_varint(2, f.get(1, 0))
                        + field_varint(3, f.get(3, 0))
                    )
                    acks += frame(MSG_ACK, c.next_seq(), ack + field_varint(4, SESSION_SINGLE))
                elif cid == MSG_ACK:
                    due = c.sent_at.pop(seq, None)
                    if due is not None and fields(body).get(3, 0):
                        acked += 1
                        ack_ms.append((now - due) * 1000)
                    if closed and due is not None:
                        heapq.heappush(ready, (max(now, due + 1.0 / opts.rate), index_of[id(c)]))
            c.buf = buf[pos:]
            if acks:
                c.sock.send(acks)
    out.put(
        (
            "result",
            {
                "sent": sent,
                "acked": acked,
                "delivered": delivered,
                "duplicates": dups,
                "cpu_s": time.process_time() - cpu0,
                "ack_ms": ack_ms,
                "e2e_ms": e2e_ms,
            },
        )
    )
    for c in senders + receivers:
        if c.sock is not None:
            c.sock.close()


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    data = sorted(values)
    return round(data[min(len(data) - 1, int(q * len(data)))], 2)


def msg_endpoints(data_dir: Path) -> dict[int, tuple[str, int]]:
    found = {}
    for path in (data_dir / "run").glob("msg-*-client.json"):
        doc = json.loads(path.read_text())
        found[int(doc["instance"])] = (doc["host"], int(doc["port"]))
    return dict(sorted(found.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--data-dir", type=Path, required=True, help="data dir of the running cluster")
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--rate", type=float, default=10.0, help="messages per second per sender")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--drain", type=float, default=10.0)
    ap.add_argument("--procs", type=int, default=2, help="client processes")
    ap.add_argument("--password", default="bench")
    ap.add_argument(
        "--closed-loop",
        action="store_true",
        help="send a sender's next message after its ack (not faster than --rate); latency from the send",
    )
    opts = ap.parse_args()
    endpoints = msg_endpoints(opts.data_dir)
    if not endpoints:
        raise SystemExit(f"no msg server is listening (no {opts.data_dir}/run/msg-*-client.json)")
    ctx = mp.get_context("fork")
    out, procs, starts = ctx.Queue(), [], []
    for p in range(opts.procs):
        start = ctx.Queue()
        share = list(range(p, opts.pairs, opts.procs))
        proc = ctx.Process(
            target=run_process, args=(share, endpoints, f"127.0.0.{200 + p}", opts, start, out)
        )
        proc.start()
        procs.append(proc)
        starts.append(start)
    for _ in procs:
        kind, _doc = out.get(timeout=120)
        assert kind == "ready"
    t0 = time.monotonic() + 0.3
    for s in starts:
        s.put(t0)
    results = [out.get(timeout=opts.duration + opts.drain + 60)[1] for _ in procs]
    for proc in procs:
        proc.join(10)
    ack = [v for r in results for v in r["ack_ms"]]
    e2e = [v for r in results for v in r["e2e_ms"]]
    total = {k: sum(r[k] for r in results) for k in ("sent", "acked", "delivered", "duplicates", "cpu_s")}
    print(
        json.dumps(
            {
                "client": "raw closed-loop" if opts.closed_loop else "raw",
                "pairs": opts.pairs,
                "rate": opts.rate,
                "duration": opts.duration,
                "offered_per_s": round(total["sent"] / opts.duration, 1),
                **total,
                "ack_p50_ms": pct(ack, 0.5),
                "ack_p99_ms": pct(ack, 0.99),
                "ack_max_ms": pct(ack, 1.0),
                "e2e_p50_ms": pct(e2e, 0.5),
                "e2e_p99_ms": pct(e2e, 0.99),
                "e2e_max_ms": pct(e2e, 1.0),
                "client_cpu_us_per_msg": round(1e6 * total["cpu_s"] / max(1, total["delivered"]), 1),
            }
        )
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
