"""Benchmark: a PC login storm through a multi-process cluster, and the presence frames it costs.

`--users` PC clients (Windows) log in at `--login-rate` logins per second in total, spread over two msg
servers, from `--client-procs` load processes; every client stays connected and counts the presence frames it
receives (IMUserStatNotify, and IMUsersStatRsp pushed with seq 0) and the user states they carry. The run ends
when no presence frame arrived for `--quiet` seconds (at most `--drain` seconds after the last login).

Reported: frames and states delivered to all clients, the most any one client got, wall time of the logins
and until the last presence frame, login latency (p50/p99, from each login's *scheduled* time), and the CPU
seconds of every cluster process. With a presence policy the frames stay near clients x flushes; TeamTalk's
per-change broadcast costs about users^2 / 2.

    .venv/bin/python bench/bench_presence.py --users 2000 --login-rate 200

The script only uses APIs that predate the presence policy, so the same file measures older code: extract a
commit and run it from there, e.g.

    git archive c87b9d1 | tar -x -C /tmp/before
    cd /tmp/before && PYTHONPATH=/tmp/before /path/to/.venv/bin/python /path/to/bench/bench_presence.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import multiprocessing as mp
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_cluster import cpu_seconds as process_cpu

from generated.teamtalk.registry import REGISTRY
from runtime.auth import PasswordHasher
from runtime.cluster.config import parse_config
from runtime.cluster.discovery import RunDirDiscovery
from runtime.cluster.processes import ProcessSupervisor
from runtime.framing import FrameDecoder, encode_frame
from runtime.storage import NewUser
from runtime.storage.sqlite import SqliteStorage

AUTH = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}
PASSWORD_MD5 = hashlib.md5(b"bench").hexdigest()
CID_LOGIN = REGISTRY.by_name("CID_LOGIN_REQ_USERLOGIN").command_id
CID_LOGIN_RES = REGISTRY.by_name("CID_LOGIN_RES_USERLOGIN").command_id
CID_NOTIFY = REGISTRY.by_name("CID_BUDDY_LIST_STATUS_NOTIFY").command_id
CID_LIST = REGISTRY.by_name("CID_BUDDY_LIST_USERS_STATUS_RESPONSE").command_id
LoginReq = REGISTRY.by_name("CID_LOGIN_REQ_USERLOGIN").message_class
LoginRes = REGISTRY.by_name("CID_LOGIN_RES_USERLOGIN").message_class
StatList = REGISTRY.by_name("CID_BUDDY_LIST_USERS_STATUS_RESPONSE").message_class


@dataclass
class Stats:
    """What one load process measured."""

    logins: int = 0
    failed: int = 0
    frames: int = 0
    states: int = 0
    bytes: int = 0
    max_frames_one_client: int = 0
    last_frame: float = 0.0  # time.time() of the last presence frame
    logins_done: float = 0.0
    login_ns: list[int] = field(default_factory=list)  # from the scheduled login time to the answer


class PresenceConn(asyncio.Protocol):
    """A lean PC client: logs in, then only counts presence pushes."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.decoder = FrameDecoder()
        self.transport: asyncio.Transport | None = None
        self.login_done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.frames = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        stats = self.stats
        for frame in self.decoder.feed(data):
            cid = frame.command_id
            if cid == CID_NOTIFY or (cid == CID_LIST and frame.seq == 0):
                self.frames += 1
                stats.frames += 1
                stats.bytes += 16 + len(frame.body)
                if cid == CID_NOTIFY:
                    stats.states += 1
                else:
                    stats.states += len(StatList.FromString(bytes(frame.body)).user_stat_list)
                stats.last_frame = time.time()
            elif cid == CID_LOGIN_RES and not self.login_done.done():
                res = LoginRes.FromString(bytes(frame.body))
                if res.result_code == 0:
                    self.login_done.set_result(res.user_info.user_id)
                else:
                    self.login_done.set_exception(RuntimeError(res.result_string))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.login_done.done():
            self.login_done.set_exception(ConnectionError("closed during login"))


async def _login(addr: tuple[str, int], name: str, due: float, stats: Stats) -> PresenceConn | None:
    await asyncio.sleep(max(0.0, due - time.time()))
    loop = asyncio.get_running_loop()
    try:
        _, conn = await loop.create_connection(lambda: PresenceConn(stats), *addr)
        req = LoginReq(user_name=name, password=PASSWORD_MD5, online_status=1, client_type=1)
        assert conn.transport is not None
        conn.transport.write(encode_frame(CID_LOGIN >> 8, CID_LOGIN, 1, req.SerializeToString()))
        await asyncio.wait_for(conn.login_done, 60)
    except (OSError, RuntimeError, TimeoutError, ConnectionError):
        stats.failed += 1
        return None
    stats.logins += 1
    stats.login_ns.append(int((time.time() - due) * 1e9))
    return conn


async def _load_main(
    names: list[tuple[str, float]], addrs: list[tuple[str, int]], quiet: float, drain: float
) -> Stats:
    stats = Stats()
    conns = await asyncio.gather(
        *(_login(addrs[i % len(addrs)], name, due, stats) for i, (name, due) in enumerate(names))
    )
    stats.logins_done = time.time()
    deadline = time.time() + drain
    while time.time() < deadline and time.time() - max(stats.last_frame, stats.logins_done) < quiet:
        await asyncio.sleep(0.1)
    stats.max_frames_one_client = max((c.frames for c in conns if c is not None), default=0)
    for c in conns:
        if c is not None and c.transport is not None:
            c.transport.close()
    return stats


def load_process(args: tuple[Any, ...], out: Any) -> None:
    """Entry point of a load process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 20_000 if hard == resource.RLIM_INFINITY else min(hard, 20_000)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    out.put(asyncio.run(_load_main(*args)))


async def seed(data_dir: Path, n: int) -> list[str]:
    """n users with the bench password (cheap argon2: the storm measures presence, not hashing)."""
    digest = PasswordHasher(**AUTH).hash_wire(PASSWORD_MD5)
    storage = SqliteStorage(data_dir, encrypt_at_rest=True)
    await storage.open()
    try:
        names = [f"pc{i:06d}" for i in range(n)]
        for name in names:
            await storage.create_user(NewUser(login_name=name, nick=name, password_hash=digest))
        return names
    finally:
        await storage.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process."""
    return sum(process_cpu(pid))


def pct(values: list[int], q: float) -> float:
    """Percentile in milliseconds."""
    data = sorted(values)
    return data[min(len(data) - 1, int(q * len(data)))] / 1e6 if data else float("nan")


async def one_run(opts: argparse.Namespace) -> dict[str, float]:
    data_dir = Path(tempfile.mkdtemp(prefix="ttgen-bench-presence-"))
    try:
        names = await seed(data_dir, opts.users)
        config = parse_config(
            {
                "data_dir": str(data_dir),
                "storage": {"backend": "sqlite", "encrypt_at_rest": True},
                "services": {
                    "login": {"instances": 1, "http_port": 0},
                    "msg": {"instances": 2, "client_port": 0},
                    "router": {"instances": opts.routers},
                    "biz": {"instances": 1, "auth": AUTH},
                    "file": {"instances": 0},
                    "storage": {"instances": 0},
                    "gateway": {"instances": 0},
                },
            }
        )
        sup = ProcessSupervisor(config, "generated.teamtalk", console=lambda _s: None)
        await sup.start()
        try:
            eps = sorted(RunDirDiscovery(config.run_dir).endpoints("msg", "client"), key=lambda e: e.instance)
            addrs = [(e.host, e.port) for e in eps]
            start = time.time() + 3.0 + opts.users / 1000
            schedule = [(name, start + i / opts.login_rate) for i, name in enumerate(names)]
            ctx = mp.get_context("spawn")
            out = ctx.Queue()
            procs = []
            for p in range(opts.client_procs):
                args = (schedule[p :: opts.client_procs], addrs, opts.quiet, opts.drain)
                proc = ctx.Process(target=load_process, args=(args, out))
                proc.start()
                procs.append(proc)
            workers = {f"{w.service}{w.instance}": w.process.pid for w in sup.workers}
            time.sleep(max(0.0, start - time.time()))
            cpu_before = {k: cpu_seconds(pid) for k, pid in workers.items()}
            wait = 120 + opts.users / opts.login_rate + opts.drain
            results: list[Stats] = [out.get(timeout=wait) for _ in procs]
            cpu_after = {k: cpu_seconds(pid) for k, pid in workers.items()}
            for proc in procs:
                proc.join(10)
        finally:
            await sup.stop()
        login_ns = [ns for s in results for ns in s.login_ns]
        last_frame = max(s.last_frame for s in results)
        row = {
            "users": float(opts.users),
            "logins": float(sum(s.logins for s in results)),
            "failed": float(sum(s.failed for s in results)),
            "frames": float(sum(s.frames for s in results)),
            "states": float(sum(s.states for s in results)),
            "mbytes": sum(s.bytes for s in results) / 1e6,
            "max_frames_one_client": float(max(s.max_frames_one_client for s in results)),
            "logins_s": max(s.logins_done for s in results) - start,
            "last_frame_s": (last_frame - start) if last_frame else float("nan"),
            "login_p50_ms": pct(login_ns, 0.5),
            "login_p99_ms": pct(login_ns, 0.99),
        }
        for k in sorted(workers):
            row[f"cpu_s_{k}"] = cpu_after[k] - cpu_before[k]
        row["cpu_s_cluster"] = sum(cpu_after.values()) - sum(cpu_before.values())
        return row
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(data_dir)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--users", type=int, default=2000, help="PC clients that log in and stay")
    ap.add_argument("--login-rate", type=float, default=200.0, help="logins per second, all load processes")
    ap.add_argument("--client-procs", type=int, default=2, help="load processes (separate from the cluster)")
    ap.add_argument("--routers", type=int, default=1)
    ap.add_argument("--quiet", type=float, default=3.0, help="end when no presence frame came for this long")
    ap.add_argument("--drain", type=float, default=180.0, help="max seconds after the last login")
    opts = ap.parse_args()
    policy = getattr(REGISTRY, "presence", None)
    print(f"presence policy: {dict(policy) if policy else 'none (per-change broadcast)'}", flush=True)
    row = asyncio.run(one_run(opts))
    print("  ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
