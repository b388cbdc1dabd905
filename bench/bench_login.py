"""Benchmark: logins per second with the password (argon2id) versus with a resumption ticket (HMAC).

A multi-process cluster (login, msg, router, biz, SQLite) runs on 127.0.0.1 with the default password policy
(argon2id at OWASP's baseline: 19 MiB, t=2, p=1) and the default verify pool (one worker per core). Then
`--concurrency` clients (lean raw-socket connections, frames in clear as TeamTalk clients send them) log in
over and over for `--duration` seconds each way, every login a new TCP connection: connect, log in, close.

- password: `CID_LOGIN_REQ_USERLOGIN` with MD5hex(password): biz runs argon2id in its pool.
- ticket: `CID_EXT_TICKET_LOGIN_REQ` with the ticket from the previous login (each ticket logs in once and
  its answer carries the successor): biz checks an HMAC and records the ticket as used.

Reported for each: logins/s, login latency p50/p99 (connect to answer), logins answered busy, and the CPU
the cluster's processes spent per login (user + system from /proc). The load client runs in this process
and shares the machine's cores with the cluster; its CPU per login is reported too.

    .venv/bin/python bench/bench_login.py --concurrency 16 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_cluster import cpu_seconds as process_cpu

from generated.teamtalk.registry import REGISTRY
from runtime.auth import HashPolicy, PasswordHasher
from runtime.auth.tickets import TicketKey
from runtime.cluster.config import parse_config
from runtime.cluster.discovery import RunDirDiscovery
from runtime.cluster.processes import ProcessSupervisor
from runtime.framing import FrameDecoder, encode_frame
from runtime.storage import NewUser
from runtime.storage.sqlite import SqliteStorage

PASSWORD_MD5 = hashlib.md5(b"bench").hexdigest()
WINDOWS = 1


def new(command: str, **fields: Any) -> Any:
    return REGISTRY.by_name(command).message_class(**fields)


async def seed(data_dir: Path, n: int) -> list[str]:
    """n users whose stored hash has the default policy's parameters (one shared hash: quick seeding)."""
    digest = PasswordHasher(policy=HashPolicy()).hash_wire(PASSWORD_MD5)
    storage = SqliteStorage(data_dir, encrypt_at_rest=True)
    await storage.open()
    try:
        names = [f"login{i:05d}" for i in range(n)]
        for name in names:
            await storage.create_user(NewUser(login_name=name, nick=name, password_hash=digest))
        return names
    finally:
        await storage.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process."""
    return sum(process_cpu(pid))


def own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


CID = {
    name: REGISTRY.by_name(name).command_id
    for name in (
        "CID_LOGIN_REQ_USERLOGIN",
        "CID_LOGIN_RES_USERLOGIN",
        "CID_EXT_RESUME_TICKET_REQ",
        "CID_EXT_RESUME_TICKET_RSP",
        "CID_EXT_TICKET_LOGIN_REQ",
        "CID_EXT_TICKET_LOGIN_RSP",
    )
}


class Conn:
    """A lean raw-socket client connection (frames in clear, as a TeamTalk client sends them), so the load
    client's own cost stays small next to the cluster's."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = FrameDecoder()
        self.pending: list[Any] = []
        self.seq = 0

    @classmethod
    async def open(cls, addr: tuple[str, int]) -> Conn:
        reader, writer = await asyncio.open_connection(*addr)
        return cls(reader, writer)

    async def call(self, request: str, reply: str, msg: Any) -> Any:
        cid = CID[request]
        self.seq += 1
        self.writer.write(encode_frame(cid >> 8, cid, self.seq, msg.SerializeToString()))
        want = CID[reply]
        while True:
            while self.pending:
                frame = self.pending.pop(0)
                if frame.command_id == want:
                    return REGISTRY.by_id(want).message_class.FromString(bytes(frame.body))
            data = await asyncio.wait_for(self.reader.read(65536), 30)
            if not data:
                raise ConnectionError("closed")
            self.pending.extend(self.decoder.feed(data))

    def close(self) -> None:
        self.writer.close()


class Worker:
    """One user logging in again and again, each time on a new connection."""

    def __init__(self, addr: tuple[str, int], name: str) -> None:
        self.addr, self.name = addr, name
        self.ticket = b""
        self.latencies: list[float] = []
        self.busy = 0
        self.failed = 0

    async def password_login(self, want_ticket: bool = False) -> bool:
        started = time.perf_counter()
        conn = await Conn.open(self.addr)
        try:
            req = new(
                "CID_LOGIN_REQ_USERLOGIN",
                user_name=self.name,
                password=PASSWORD_MD5,
                online_status=1,
                client_type=WINDOWS,
            )
            res: Any = await conn.call("CID_LOGIN_REQ_USERLOGIN", "CID_LOGIN_RES_USERLOGIN", req)
            if res.result_code != 0:
                self.busy += res.result_code == 2
                self.failed += res.result_code != 2
                return False
            self.latencies.append(time.perf_counter() - started)
            if want_ticket:
                rsp: Any = await conn.call(
                    "CID_EXT_RESUME_TICKET_REQ", "CID_EXT_RESUME_TICKET_RSP", new("CID_EXT_RESUME_TICKET_REQ")
                )
                self.ticket = bytes(rsp.ticket)
            return True
        finally:
            conn.close()

    async def ticket_login(self) -> bool:
        started = time.perf_counter()
        conn = await Conn.open(self.addr)
        try:
            req = new("CID_EXT_TICKET_LOGIN_REQ", ticket=self.ticket, online_status=1, client_type=WINDOWS)
            res: Any = await conn.call("CID_EXT_TICKET_LOGIN_REQ", "CID_EXT_TICKET_LOGIN_RSP", req)
            if res.result_code != 0 or not res.ticket:
                self.failed += 1
                self.ticket = b""
                return False
            self.latencies.append(time.perf_counter() - started)
            self.ticket = bytes(res.ticket)
            return True
        finally:
            conn.close()


async def drive(workers: list[Worker], kind: str, duration: float) -> None:
    deadline = time.monotonic() + duration

    async def loop(w: Worker) -> None:
        while time.monotonic() < deadline:
            if kind == "password":
                await w.password_login()
            elif w.ticket:
                await w.ticket_login()
            else:
                await w.password_login(want_ticket=True)

    await asyncio.gather(*(loop(w) for w in workers))


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def check_costs() -> None:
    """The check itself, without sockets: argon2id verify under the default policy versus a ticket's HMAC."""
    hasher = PasswordHasher(policy=HashPolicy())
    stored = hasher.hash_wire(PASSWORD_MD5)
    started = time.perf_counter()
    for _ in range(10):
        hasher.verify_wire(stored, PASSWORD_MD5)
    argon_ms = (time.perf_counter() - started) / 10 * 1000
    key = TicketKey(bytes(32))
    now = int(time.time())
    ticket, _ = key.issue(
        user_id=1, client_type=1, now=now, ttl=900, auth_time=now, max_age=86400, password_hash=stored
    )
    started = time.perf_counter()
    for _ in range(20_000):
        key.check(ticket, client_type=1, device_id=b"", now=now)
    hmac_us = (time.perf_counter() - started) / 20_000 * 1e6
    print(f"check alone: argon2id verify {argon_ms:.1f} ms; ticket check (HMAC-SHA256) {hmac_us:.1f} us")


async def main(opts: argparse.Namespace) -> None:
    check_costs()
    data_dir = Path(tempfile.mkdtemp(prefix="ttgen-bench-login-"))
    try:
        names = await seed(data_dir, opts.concurrency)
        config = parse_config(
            {
                "data_dir": str(data_dir),
                "storage": {"backend": "sqlite", "encrypt_at_rest": True},
                "services": {
                    "login": {"instances": 1, "http_port": 0},
                    "msg": {"instances": 1, "client_port": 0},
                    "router": {"instances": 1},
                    # The default argon2id policy; lockout limits out of the way of one address's storm.
                    "biz": {"instances": 1, "auth": {"max_pending_per_address": 10_000}},
                    "file": {"instances": 0},
                    "storage": {"instances": 0},
                    "gateway": {"instances": 0},
                },
            }
        )
        sup = ProcessSupervisor(config, "generated.teamtalk", console=lambda _s: None)
        await sup.start()
        try:
            (ep,) = RunDirDiscovery(config.run_dir).endpoints("msg", "client")
            pids = {f"{w.service}{w.instance}": w.process.pid for w in sup.workers}
            print(f"cluster: {', '.join(sorted(pids))}; argon2id {HashPolicy()}; {opts.concurrency} clients")
            for kind in ("password", "ticket"):
                workers = [Worker((ep.host, ep.port), n) for n in names]
                if kind == "ticket":  # every worker holds a ticket before the clock starts
                    await asyncio.gather(*(w.password_login(want_ticket=True) for w in workers))
                    for w in workers:
                        w.latencies.clear()
                cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
                own0, t0 = own_cpu(), time.monotonic()
                await drive(workers, kind, opts.duration)
                elapsed = time.monotonic() - t0
                cpu = {k: cpu_seconds(p) - cpu0[k] for k, p in pids.items()}
                lat = [x for w in workers for x in w.latencies]
                n = max(1, len(lat))
                per_login = ", ".join(f"{k} {1000 * v / n:.2f}" for k, v in sorted(cpu.items()))
                print(
                    f"{kind:>8}: {len(lat) / elapsed:8.1f} logins/s  p50 {pct(lat, 0.5):7.1f} ms  "
                    f"p99 {pct(lat, 0.99):7.1f} ms  busy {sum(w.busy for w in workers)}  "
                    f"failed {sum(w.failed for w in workers)}  ({len(lat)} logins in {elapsed:.1f} s)"
                )
                server_ms = 1000 * sum(cpu.values()) / n
                print(
                    f"          cluster CPU per login {server_ms:.2f} ms ({per_login}); "
                    f"load client {1000 * (own_cpu() - own0) / n:.2f} ms; "
                    f"so 2 cores of cluster alone would sustain about {2000 / server_ms:.0f} logins/s"
                )
        finally:
            await sup.stop()
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(data_dir)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", type=int, default=16, help="clients logging in at once")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per kind of login")
    asyncio.run(main(ap.parse_args()))
