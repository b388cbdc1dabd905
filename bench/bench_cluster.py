"""Benchmark: end-to-end 1:1 messages per second through a multi-process cluster on 127.0.0.1.

Every message goes the whole way: client send -> msg (input stages) -> biz -> storage (group commit, at-rest
encryption) -> ack to the sender -> router (targeted relay) -> the other msg server -> the recipient, whose
IMMsgDataAck ends the delivery. Senders log in on msg server 0 and their peers on msg server 1, so every
message crosses servers. Each sender sends open-loop at `--rate` messages per second (TeamTalk's limit is 20/s
per connection, enforced by the input stage), so the offered load is `pairs x rate`.

Reported per run: offered and delivered messages per second, sender-ack latency and send-to-delivery latency
(p50/p99), CPU per delivered message of every cluster process (user + system time from /proc, which stays
meaningful on a shared machine) and the system-time share, and the CPU the load generator used per message (it
runs in `--client-procs` separate processes, so it is not measured as cluster time); then the median over
`--runs`. Bounded: each run lasts `--duration` seconds plus a drain of at most `--drain` seconds, then the
cluster is stopped. Results of past runs: bench/RESULTS.md.

    .venv/bin/python bench/bench_cluster.py --pairs 300 --rate 15 --duration 10 --runs 3

With `--find-rate` it searches instead the highest load (pairs x rate, bisecting the pair count up to
`--pairs`) whose median e2e p99 stays under `--target-p99-ms` (50) with every message delivered:

    .venv/bin/python bench/bench_cluster.py --find-rate --pairs 500 --min-pairs 100 --rate 20 --duration 8

`ttgen bench one-to-one` is the better instrument (latency from each message's due time, senders spread over
the msg servers, presence storm settled before the load): bench/RESULTS.md (2026-12-07) compares them. With
BENCH_CLIENT_TYPE=0x12 the clients log in as mobiles, which causes no presence storm at login. `--layout
sharded` groups msg, biz and router of one instance number into one process (runtime.cluster.layout); the load
client is the same in every layout, and the same as this bench's before the layouts existed.

`--backend postgres` runs the cluster on PostgreSQL (a throwaway local server with fsync on, started once for
all runs, a fresh database per run; or `--dsn` of a server of your own), optionally with `--biz 2` instances
writing at once; it also reports the database's commits per second and messages per commit (pg_stat_database).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import multiprocessing as mp
import os
import resource
import shutil
import statistics
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generated.teamtalk.registry import REGISTRY
from runtime.auth import PasswordHasher
from runtime.cluster.config import parse_config
from runtime.cluster.discovery import RunDirDiscovery
from runtime.cluster.processes import ProcessSupervisor
from runtime.framing import FrameDecoder, encode_frame
from runtime.storage import NewUser

AUTH = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}
PASSWORD_MD5 = hashlib.md5(b"bench").hexdigest()
CID = {
    name: REGISTRY.by_name(name).command_id
    for name in ("CID_LOGIN_REQ_USERLOGIN", "CID_LOGIN_RES_USERLOGIN", "CID_MSG_DATA", "CID_MSG_DATA_ACK")
}
MsgData = REGISTRY.by_name("CID_MSG_DATA").message_class
MsgAck = REGISTRY.by_name("CID_MSG_DATA_ACK").message_class
LoginReq = REGISTRY.by_name("CID_LOGIN_REQ_USERLOGIN").message_class
LoginRes = REGISTRY.by_name("CID_LOGIN_RES_USERLOGIN").message_class
STAMP = struct.Struct(">Q")
CID_DATA, CID_ACK = CID["CID_MSG_DATA"], CID["CID_MSG_DATA_ACK"]
PAD = b"x" * 56
CLIENT_TYPE = [int(os.environ.get("BENCH_CLIENT_TYPE", "1"), 0)]  # 0x12: mobile (no presence storm)


# -- client side (runs in client processes) -----------------------------------------------------------------
class BenchConn(asyncio.Protocol):
    """A lean client connection: login, send chat messages, ack deliveries, record latencies."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.decoder = FrameDecoder()
        self.transport: asyncio.Transport | None = None
        self.login_done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.user_id = 0
        self.seq = 0
        self.sent_at: dict[int, int] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport

    def send(self, cid: int, body: bytes) -> int:
        self.seq = self.seq % 0xFFFF + 1
        assert self.transport is not None
        self.transport.write(encode_frame(cid >> 8, cid, self.seq, body))
        return self.seq

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        acks: list[bytes] = []  # receipts for what this read delivered, in one write (as a client would)
        for frame in self.decoder.feed(data):
            cid = frame.command_id
            if cid == CID_DATA:
                msg = MsgData.FromString(frame.body)
                (stamp,) = STAMP.unpack_from(msg.msg_data, 0)
                self.stats.delivered += 1
                self.stats.delivery_ns.append(now - stamp)
                ack = MsgAck()
                ack.user_id = self.user_id
                ack.session_id = msg.from_user_id
                ack.msg_id = msg.msg_id
                ack.session_type = 1
                self.seq = self.seq % 0xFFFF + 1
                acks.append(encode_frame(CID_ACK >> 8, CID_ACK, self.seq, ack.SerializeToString()))
            elif cid == CID_ACK:
                sent = self.sent_at.pop(frame.seq, None)
                if MsgAck.FromString(frame.body).msg_id:
                    self.stats.acked += 1
                else:
                    self.stats.refused += 1
                if sent is not None:
                    self.stats.ack_ns.append(now - sent)
            elif cid == CID["CID_LOGIN_RES_USERLOGIN"] and not self.login_done.done():
                res = LoginRes.FromString(bytes(frame.body))
                if res.result_code == 0:
                    self.user_id = res.user_info.user_id
                    self.login_done.set_result(self.user_id)
                else:
                    self.login_done.set_exception(RuntimeError(res.result_string))
        if acks and self.transport is not None:
            self.transport.write(b"".join(acks))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.login_done.done():
            self.login_done.set_exception(ConnectionError("closed during login"))
        self.stats.lost += 1


@dataclass
class Stats:
    """What one client process measured."""

    sent: int = 0
    acked: int = 0
    refused: int = 0
    delivered: int = 0
    lost: int = 0
    cpu_s: float = 0.0  # CPU time of the client process during the load and the drain
    ack_ns: list[int] = field(default_factory=list)
    delivery_ns: list[int] = field(default_factory=list)


async def _login(host: str, port: int, name: str, stats: Stats) -> BenchConn:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: BenchConn(stats), host, port)
    req = LoginReq(user_name=name, password=PASSWORD_MD5, online_status=1, client_type=CLIENT_TYPE[0])
    conn.send(CID["CID_LOGIN_REQ_USERLOGIN"], req.SerializeToString())
    await asyncio.wait_for(conn.login_done, 30)
    return conn


async def offer_load(
    n: int,
    start_at: float,
    duration: float,
    rate: float,
    drain: float,
    send: Callable[[int], None],
    stats: Any,
) -> None:
    """The open-loop load of one client process (bench_floor's too): from `start_at`, each of the `n`
    senders gets `send(k)` called `rate` times a second for `duration` seconds, the senders spread over the
    interval so that the load is smooth, not bursts; then up to `drain` seconds for the last deliveries. Sets
    `stats.cpu_s`, the process's CPU time from the start of the load."""
    await asyncio.sleep(max(0.0, start_at - time.time()))
    cpu0 = time.process_time()
    interval = 1.0 / rate
    t0 = time.monotonic()
    next_due = [t0 + interval * k / n for k in range(n)]
    while (now := time.monotonic()) - t0 < duration:
        for k in range(n):
            if next_due[k] <= now:
                next_due[k] += interval
                send(k)
        await asyncio.sleep(0.005)
    deadline = time.monotonic() + drain
    while time.monotonic() < deadline and stats.delivered < stats.sent:
        await asyncio.sleep(0.05)
    stats.cpu_s = time.process_time() - cpu0


async def _client_main(
    pairs: list[tuple[str, str]],
    eps: list[tuple[str, int]],
    start_at: float,
    duration: float,
    rate: float,
    drain: float,
) -> Stats:
    stats = Stats()
    senders, receivers = [], []
    for i in range(0, len(pairs), 50):  # log in in batches, like clients arriving
        chunk = pairs[i : i + 50]
        senders += await asyncio.gather(*(_login(*eps[0], s, stats) for s, _ in chunk))
        receivers += await asyncio.gather(*(_login(*eps[1], r, stats) for _, r in chunk))
    # Each sender's IMMsgData is the same but for the 8-byte send stamp that starts msg_data (the last field):
    # serialized once, then the stamp is spliced in.
    prefixes = []
    for s, r in zip(senders, receivers, strict=True):
        template = MsgData(
            from_user_id=s.user_id,
            to_session_id=r.user_id,
            msg_id=0,
            create_time=0,
            msg_type=1,
            msg_data=bytes(STAMP.size) + PAD,
        ).SerializeToString()
        prefixes.append(template[: -(STAMP.size + len(PAD))])
    pack_stamp = STAMP.pack

    def send(k: int) -> None:
        stamp = time.monotonic_ns()
        seq = senders[k].send(CID_DATA, prefixes[k] + pack_stamp(stamp) + PAD)
        senders[k].sent_at[seq] = stamp
        stats.sent += 1

    await offer_load(len(senders), start_at, duration, rate, drain, send, stats)
    for c in senders + receivers:
        if c.transport is not None:
            c.transport.close()
    return stats


def client_process(args: tuple[Any, ...], out: Any) -> None:
    """Entry point of a client process: runs the load and puts its Stats on the queue."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 20_000 if hard == resource.RLIM_INFINITY else min(hard, 20_000)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    try:
        import uvloop

        stats = uvloop.run(_client_main(*args))
    except ImportError:
        stats = asyncio.run(_client_main(*args))
    out.put(stats)


# -- orchestration -----------------------------------------------------------------------------------------
async def seed(data_dir: Path, n: int, storage_cfg: dict[str, Any] | None = None) -> list[str]:
    """Create n users with the bench password (cheap argon2 so seeding is quick)."""
    from runtime.services.biz.storage_open import storage_from_config

    digest = PasswordHasher(**AUTH).hash_wire(PASSWORD_MD5)
    storage = storage_from_config(
        {"backend": "sqlite", **(storage_cfg or {}), "encrypt_at_rest": True}, data_dir
    )
    await storage.open()
    try:
        names = [f"bench{i:05d}" for i in range(n)]
        for name in names:
            await storage.create_user(NewUser(login_name=name, nick=name, password_hash=digest))
        return names
    finally:
        await storage.close()


def postgres_pids(opts: argparse.Namespace) -> dict[str, int]:
    """The throwaway PostgreSQL server's processes (postmaster and its children), so the database's CPU counts
    as the cluster's; none for a server given with --dsn (it may live elsewhere)."""
    pidfile = getattr(opts, "pg_pidfile", None)
    if not pidfile:
        return {}
    master = int(Path(pidfile).read_text().split()[0])
    pids = {"postgres_master": master}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == master:
                pids[f"postgres_{stat.parent.name}"] = int(stat.parent.name)
    return pids


async def pg_commits(storage: dict[str, Any]) -> int:
    """Committed transactions of the run's PostgreSQL database so far (0 on SQLite). The statistics are
    flushed by each backend at most once a second while busy, so this is exact to about a second of load."""
    if storage.get("backend") != "postgres":
        return 0
    import asyncpg

    conn = await asyncpg.connect(storage["dsn"])
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        return int(
            await conn.fetchval("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        )
    finally:
        await conn.close()


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process (all threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def pct(values: list[int], q: float) -> float:
    """Percentile in milliseconds."""
    if not values:
        return float("nan")
    data = sorted(values)
    return data[min(len(data) - 1, int(q * len(data)))] / 1e6


def use_uvloop_in_workers(data_dir: Path) -> None:
    """Make the worker processes run on uvloop (the workers call asyncio.run; a sitecustomize on PYTHONPATH
    installs uvloop's policy first). Measurement aid until the worker itself opts in to uvloop."""
    site = data_dir / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import asyncio, uvloop\nasyncio.set_event_loop_policy(uvloop.EventLoopPolicy())\n"
    )
    os.environ["PYTHONPATH"] = f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"


async def one_run(opts: argparse.Namespace) -> dict[str, float]:
    data_dir = Path(tempfile.mkdtemp(prefix="ttgen-bench-"))
    if opts.uvloop:
        use_uvloop_in_workers(data_dir)
    try:
        storage: dict[str, Any] = {"backend": "sqlite", "synchronous": opts.synchronous}
        if opts.backend == "postgres":
            from runtime.storage.postgres.local_server import create_database

            dsn = await create_database(opts.pg_admin_dsn, "bench_" + os.urandom(6).hex())
            storage = {"backend": "postgres", "dsn": dsn, "commit_pipeline": opts.commit_pipeline}
        names = await seed(data_dir, 2 * opts.pairs, storage)
        config = parse_config(
            {
                "data_dir": str(data_dir),
                **({"layout": opts.layout} if getattr(opts, "layout", None) else {}),
                "storage": {**storage, "encrypt_at_rest": True},
                "services": {
                    "login": {"instances": 1, "http_port": 0},
                    "msg": {"instances": 2, "client_port": 0},
                    "router": {"instances": opts.routers},
                    # Hundreds of logins at once from one address, none retried on "busy": an unbounded verify
                    # queue, as before the pool was bounded (the bench measures messages, not logins).
                    "biz": {
                        "instances": opts.biz,
                        "auth": {**AUTH, "verify_queue": 100_000, "max_pending_per_address": 100_000},
                    },
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
            pairs = [(names[2 * i], names[2 * i + 1]) for i in range(opts.pairs)]
            ctx = mp.get_context("spawn")
            out = ctx.Queue()
            start_at = time.time() + 3.0 + opts.pairs / 200
            procs = []
            for p in range(opts.client_procs):
                share = pairs[p :: opts.client_procs]
                args = (share, addrs, start_at, opts.duration, opts.rate, opts.drain)
                proc = ctx.Process(target=client_process, args=(args, out))
                proc.start()
                procs.append(proc)
            workers = {
                (w.group.name.replace("-", "") if w.group else f"{w.service}{w.instance}"): w.process.pid
                for w in sup.workers
            }
            workers.update(postgres_pids(opts))
            time.sleep(max(0.0, start_at - time.time()))
            cpu_before = {name: cpu_seconds(pid) for name, pid in workers.items()}
            commits_before = await pg_commits(storage)
            results = [out.get(timeout=120 + opts.duration + opts.drain) for _ in procs]
            cpu_after = {name: cpu_seconds(pid) for name, pid in workers.items()}
            commits = await pg_commits(storage) - commits_before
            for proc in procs:
                proc.join(10)
        finally:
            await sup.stop()
        total = Stats()
        cpu_used = {
            name: sum(cpu_after[name]) - sum(cpu_before[name]) for name in workers if name in cpu_after
        }
        sys_used = sum(cpu_after[name][1] - cpu_before[name][1] for name in workers if name in cpu_after)
        for s in results:
            total.cpu_s += s.cpu_s
            total.sent += s.sent
            total.acked += s.acked
            total.refused += s.refused
            total.delivered += s.delivered
            total.ack_ns += s.ack_ns
            total.delivery_ns += s.delivery_ns
        pg_cpu = sum(v for k, v in cpu_used.items() if k.startswith("postgres_"))
        cpu_used = {k: v for k, v in cpu_used.items() if not k.startswith("postgres_")}
        if opts.backend == "postgres" and getattr(opts, "pg_pidfile", None):
            cpu_used["postgres"] = pg_cpu  # every server process together
        per_msg = {f"cpu_us_{k}": 1e6 * v / max(1, total.delivered) for k, v in sorted(cpu_used.items())}
        pg = {}
        if opts.backend == "postgres":  # transactions of the load window (stored messages and a few reads)
            pg = {"db_commits": commits, "db_msgs_per_commit": total.acked / max(1, commits)}
        server_us = sum(per_msg.values())
        return {
            **per_msg,
            "cpu_us_cluster": server_us,
            "sys_share_cluster": sys_used / max(1e-9, sum(cpu_used.values())),
            "cpu_us_clients": 1e6 * total.cpu_s / max(1, total.delivered),
            "capacity_2cores_per_s": 2e6 / server_us if server_us else float("nan"),
            "offered_per_s": total.sent / opts.duration,
            "acked_per_s": total.acked / opts.duration,
            "delivered_per_s": total.delivered / opts.duration,
            "delivered_ratio": total.delivered / max(1, total.sent),
            "refused": total.refused,
            "ack_p50_ms": pct(total.ack_ns, 0.5),
            "ack_p99_ms": pct(total.ack_ns, 0.99),
            "e2e_p50_ms": pct(total.delivery_ns, 0.5),
            "e2e_p99_ms": pct(total.delivery_ns, 0.99),
            **pg,
        }
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(data_dir)


def _fmt(key: str, value: float) -> str:
    return f"{key}={value:.2f}" if key.startswith("sys_share") else f"{key}={value:.1f}"


def median_row(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def add_search_args(ap: argparse.ArgumentParser) -> None:
    """The options of the sustainable-rate search, shared with bench_floor."""
    ap.add_argument(
        "--find-rate",
        action="store_true",
        help="search the highest offered load (in steps of --step pairs, up to --pairs) whose median e2e p99 "
        "stays under --target-p99-ms with every message delivered",
    )
    ap.add_argument("--target-p99-ms", type=float, default=50.0)
    ap.add_argument("--min-pairs", type=int, default=50, help="lower end of the search")
    ap.add_argument("--step", type=int, default=25, help="resolution of the search, in pairs")


def find_rate(
    measure: Callable[[int], dict[str, float]], lo: int, hi: int, step: int, target_ms: float
) -> dict[str, float] | None:
    """Bisect the pair count for the highest load that meets the target (the latency is taken to grow with
    the load). `measure(pairs)` returns the median row of a probe; each probe is printed. None if even `lo`
    misses the target."""

    def meets(pairs: int) -> dict[str, float] | None:
        row = measure(pairs)
        ok = row["e2e_p99_ms"] < target_ms and row["delivered_per_s"] >= 0.999 * row["offered_per_s"]
        verdict = "meets" if ok else "misses"
        print(f"probe pairs={pairs} ({verdict} p99 < {target_ms:g} ms): " + _line(row), flush=True)
        return row if ok else None

    best = meets(lo)
    if best is None:
        return None
    good, bad = lo, hi
    top = meets(hi)
    if top is not None:
        return top
    while bad - good > step:
        mid = good + max(1, (bad - good) // (2 * step)) * step
        row = meets(mid)
        if row is None:
            bad = mid
        else:
            good, best = mid, row
    return best


def _line(row: dict[str, float]) -> str:
    return "  ".join(_fmt(k, v) for k, v in row.items())


Run = Callable[[argparse.Namespace], dict[str, float]]


def run_and_report(opts: argparse.Namespace, one_run: Run) -> None:
    """`--runs` runs at `--pairs` and their median, or with `--find-rate` the search (bench_floor too)."""

    def measure(pairs: int, verbose: bool = False) -> dict[str, float]:
        rows = []
        for i in range(opts.runs):
            row = one_run(argparse.Namespace(**{**vars(opts), "pairs": pairs}))
            rows.append(row)
            if verbose:
                print(f"run {i + 1}: " + _line(row), flush=True)
        return median_row(rows)

    if opts.find_rate:
        best = find_rate(measure, opts.min_pairs, opts.pairs, opts.step, opts.target_p99_ms)
        print("sustainable: " + (_line(best) if best else f"none (even {opts.min_pairs} pairs miss)"))
        return
    print("median: " + _line(measure(opts.pairs, verbose=True)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--pairs", type=int, default=200, help="sender/receiver pairs (connections = 2 x pairs)")
    ap.add_argument("--rate", type=float, default=15.0, help="messages per second per sender (limit: 20)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of load per run")
    ap.add_argument("--drain", type=float, default=10.0, help="max seconds to wait for the last deliveries")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--client-procs", type=int, default=4, help="load-generator processes (separate from the cluster)"
    )
    ap.add_argument("--routers", type=int, default=1)
    ap.add_argument(
        "--layout",
        choices=("split", "sharded"),
        help="which roles share a process (default: the config's default, runtime.cluster.layout); the load "
        "client is the same for every layout",
    )
    ap.add_argument(
        "--synchronous",
        default="FULL",
        choices=["FULL", "NORMAL"],
        help="SQLite synchronous mode (FULL: every commit fsynced before the ack)",
    )
    ap.add_argument(
        "--uvloop",
        action="store_true",
        help="force uvloop in the workers (they use it by default when it is installed)",
    )
    ap.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite", help="storage backend")
    ap.add_argument("--dsn", help="--backend postgres: a server of your own (default: a throwaway local one)")
    ap.add_argument("--biz", type=int, default=1, help="biz instances (several need --backend postgres)")
    ap.add_argument("--commit-pipeline", type=int, default=2, help="--backend postgres: COMMITs in flight")
    add_search_args(ap)
    opts = ap.parse_args()
    opts.pg_admin_dsn = opts.dsn
    opts.pg_pidfile = None
    server = None
    if opts.backend == "postgres" and opts.dsn is None:
        from runtime.storage.postgres.local_server import LocalServer

        server = LocalServer(fsync=True).start()
        opts.pg_admin_dsn = server.dsn()
        opts.pg_pidfile = str(server.data_dir / "postmaster.pid")
    try:
        run_and_report(opts, lambda o: asyncio.run(one_run(o)))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
