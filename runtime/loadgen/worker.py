"""Runtime load-generation layer: one load process of `ttgen bench` (`python -m runtime.loadgen.worker JOB`).

The job file (JSON, written by the orchestrator) lists this process's simulated users (name, client type,
msg server instance, loopback source address, login phase) and the scenario's parameters. The process talks
to the orchestrator with lines: it prints `{"ready": ...}`, then one `{"progress": ...}` a second and finally
`{"result": ...}`; it reads commands on stdin:

- `login PHASE T`: log in the users of that phase, open loop at `login_rate`, the first due at T;
- `traffic T`: start the chat load (senders at `rate` messages/s each from T, for `duration` seconds);
- `stop`: send nothing new (heartbeats and messages), keep the connections for the last deliveries;
- `close`: report the result, close every connection, exit.

Every time is `time.monotonic()`, which is the same clock in every process of the host. The process exits by
itself at `hard_deadline` (a bounded run even if the orchestrator dies: stdin closing also ends it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import random
import resource
import socket
import sys
import time
from pathlib import Path
from typing import Any

from runtime.cluster.discovery import RunDirDiscovery
from runtime.cluster.worker import load_stack_modules
from runtime.loadgen.conn import CLOSED, CONNECTING, LOGGING_IN, NEW, ONLINE, Counters, LoadConn, Wire
from runtime.loadgen.schedule import OpenLoop

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux: pick the port at connect
TICK = 0.002  # how often the drivers look for due events
LOST, RETRY = -1, -2  # login outcomes besides the result codes: no answer (connection lost); busy, retry


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard one; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


class LoadProcess:
    """The simulated users of one process and the drivers that make them log in, heartbeat and talk."""

    def __init__(self, job: dict[str, Any], wire: Wire) -> None:
        self.job = job
        self.wire = wire
        self.counters = Counters()
        self.password = str(job["password_md5"])
        self.endpoints: dict[int, tuple[str, int]] = {
            int(k): (str(v[0]), int(v[1])) for k, v in job["endpoints"].items()
        }
        self.run_dir = Path(job["run_dir"]) if job.get("run_dir") else None
        users = job["users"]  # [name, client type, msg instance, source address, login phase]
        self.conns = [LoadConn(self, i, u[0], int(u[1])) for i, u in enumerate(users)]
        self.instance = [int(u[2]) for u in users]
        self.source = [str(u[3]) for u in users]
        self.phase = [int(u[4]) for u in users]
        self.senders: list[tuple[int, bytes]] = []  # (conn index, message prefix), made once ids are known
        self.login_timeout = float(job.get("login_timeout", 30.0))
        self.max_inflight = int(job.get("max_inflight", 256))
        self.reconnect = str(job.get("reconnect", "none"))
        self.reconnect_spread = float(job.get("reconnect_spread", 5.0))
        self.hard_deadline = time.monotonic() + float(job.get("max_seconds", 600.0))
        self.sending = True  # heartbeats and messages; False after `stop`
        self.closing = False
        self.inflight = 0  # logins under way (connect + login), at most max_inflight
        self._slot_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._waiters: dict[int, asyncio.Future[int]] = {}  # login answer: 0, a refusal code, or LOST
        self._tasks: list[asyncio.Task[Any]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._resolved_at = 0.0

    # -- output ------------------------------------------------------------------------------------------
    @staticmethod
    def emit(kind: str, doc: Any) -> None:
        sys.stdout.write(json.dumps({kind: doc}) + "\n")
        sys.stdout.flush()

    def progress(self) -> dict[str, Any]:
        doc = self.counters.snapshot()
        doc["cpu_s"] = time.process_time()
        doc["stopped"] = not self.sending
        return doc

    def result(self) -> dict[str, Any]:
        doc = self.progress()
        doc["refusals"] = self.counters.refusals
        doc["histograms"] = {k: h.to_json() for k, h in self.counters.histograms().items()}
        doc["rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return doc

    # -- logins ------------------------------------------------------------------------------------------
    def address_of(self, index: int) -> tuple[str, int]:
        """The msg server of a reconnecting user: a restarted one listens elsewhere, so the run dir is read
        again (at most once a second: a storm of reconnects must not become a storm of file reads)."""
        now = time.monotonic()
        if self.run_dir is not None and now - self._resolved_at >= 1.0:
            self._resolved_at = now
            for ep in RunDirDiscovery(self.run_dir).endpoints("msg", "client"):
                self.endpoints[ep.instance] = (ep.host, ep.port)
        return self.endpoints[self.instance[index]]

    async def connect_and_login(self, conn: LoadConn, due: float) -> bool:
        """Open the connection from the user's source address and log in; True when logged in."""
        loop = asyncio.get_running_loop()
        c = self.counters
        conn.state = CONNECTING
        conn.due = due
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((self.source[conn.index], 0))
            host, port = (
                self.address_of(conn.index) if conn.lost_at else self.endpoints[self.instance[conn.index]]
            )
            await asyncio.wait_for(loop.sock_connect(sock, (host, port)), self.login_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.create_connection(lambda: conn, sock=sock)
        except (TimeoutError, OSError):
            sock.close()
            if conn.lost_at:
                c.reconnect_failed += 1  # the cluster is restarting: retried with backoff
            else:
                c.connect_failed += 1
            conn.state = NEW
            return False
        waiter: asyncio.Future[int] = loop.create_future()
        self._waiters[conn.index] = waiter
        if conn.ticket is not None and conn.lost_at:
            conn.send_ticket_login()
        else:
            conn.send_login(self.password)
        try:
            code = await asyncio.wait_for(waiter, max(0.1, due + self.login_timeout - time.monotonic()))
        except TimeoutError:
            c.login_timeout += 1
            if conn.transport is not None:
                conn.transport.abort()
            return False
        finally:
            self._waiters.pop(conn.index, None)
        if code == RETRY and time.monotonic() < due + self.login_timeout:
            # "Busy, try later" (the cluster's password checks are saturated): what a client does.
            if conn.transport is not None:
                conn.transport.abort()
            await asyncio.sleep(random.uniform(0.2, 1.0))
            return await self.connect_and_login(conn, due)
        return code == 0

    def login_answered(self, conn: LoadConn, code: int, text: str, user_id: int, now: float) -> None:
        c = self.counters
        waiter = self._waiters.get(conn.index)
        if code == 0:
            conn.state = ONLINE
            conn.user_id = user_id
            c.online += 1
            if self.reconnect == "ticket" and conn.ticket is None and conn.transport is not None:
                conn.ask_ticket()
            c.last_login_at = now
            if conn.lost_at:
                c.relogins += 1
                c.h_relogin.record(int((now - conn.lost_at) * 1e6))
                conn.lost_at = 0.0
            else:
                c.login_ok += 1
                c.h_login.record(int((now - conn.due) * 1e6))
        elif code == self.wire.login_busy and "try again" in text:  # not "server full": a capacity limit
            c.login_busy += 1
            conn.state = CLOSED
            code = RETRY
        else:
            c.login_refused += 1
            reason = f"{code}: {text}"
            c.refusals[reason] = c.refusals.get(reason, 0) + 1
            conn.state = CLOSED
        if waiter is not None and not waiter.done():
            waiter.set_result(code)

    def connection_lost(self, conn: LoadConn) -> None:
        was_online = conn.state == ONLINE
        if conn.state == LOGGING_IN:
            waiter = self._waiters.get(conn.index)
            if waiter is not None and not waiter.done():
                waiter.set_result(LOST)
        conn.state = CLOSED
        if conn.hb_due and not self.closing:
            self.counters.hb_cut += 1
        conn.hb_due = 0.0
        if conn.sent_at:
            conn.sent_at.clear()
        if not was_online:
            return
        self.counters.online -= 1
        if self.closing:
            return
        self.counters.lost += 1
        if self.reconnect in ("password", "ticket") and time.monotonic() < self.hard_deadline:
            conn.lost_at = time.monotonic()
            task = asyncio.get_running_loop().create_task(self._relogin(conn))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _relogin(self, conn: LoadConn) -> None:
        """Reconnect after a random delay within `reconnect_spread`, then with backoff until logged in."""
        await asyncio.sleep(random.uniform(0, self.reconnect_spread))
        backoff = 0.5
        while not self.closing and time.monotonic() < self.hard_deadline:
            await self.acquire_slot()
            try:
                ok = await self.connect_and_login(conn, time.monotonic())
            finally:
                self.release_slot()
            if ok:
                return
            await asyncio.sleep(random.uniform(0.5, 1.0) * backoff)
            backoff = min(backoff * 2, 5.0)

    async def acquire_slot(self) -> None:
        """Wait for a login slot (FIFO; a future per waiter, no polling: 100,000 clients reconnecting at once
        must not become 100,000 timers firing every few milliseconds)."""
        if self.inflight < self.max_inflight and not self._slot_waiters:
            self.inflight += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._slot_waiters.append(waiter)
        try:
            await waiter  # the releaser hands its slot over: inflight already counts us
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release_slot()
            raise

    def release_slot(self) -> None:
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to the next waiter
                return
        self.inflight -= 1

    async def login_phase(self, phase: int, start: float) -> None:
        """Log in this phase's users, open loop at `login_rate` (their due times fixed from `start`)."""
        members = [i for i, p in enumerate(self.phase) if p == phase]
        if not members:
            return
        schedule = OpenLoop(start, float(self.job["login_rate"]), len(members), count=len(members))
        pending: collections.deque[tuple[int, float]] = collections.deque()
        running: set[asyncio.Task[bool]] = set()
        loop = asyncio.get_running_loop()
        while not schedule.done or pending or running:
            if self.closing:
                break
            now = time.monotonic()
            pending.extend((members[src], due) for _, src, due in schedule.take_due(now))
            while pending and self.inflight < self.max_inflight and not self._slot_waiters:
                index, due = pending.popleft()
                self.inflight += 1
                task = loop.create_task(self.connect_and_login(self.conns[index], due))
                running.add(task)
                task.add_done_callback(self._login_done(running))
            nxt = schedule.next_due()
            await asyncio.sleep(TICK if nxt is None else min(max(nxt - time.monotonic(), 0.0), TICK * 5))

    def _login_done(self, running: set[asyncio.Task[bool]]) -> Any:
        def done(task: asyncio.Task[bool]) -> None:
            running.discard(task)
            self.release_slot()

        return done

    # -- heartbeats and messages -------------------------------------------------------------------------
    async def heartbeats(self, start: float, period: float) -> None:
        """Every connection heartbeats every `period` s (TeamTalk clients: 30 s), phases spread evenly."""
        if period <= 0 or not self.conns:
            return
        schedule = OpenLoop.periodic(start, period, len(self.conns), self.hard_deadline)
        c = self.counters
        conns = self.conns
        while self.sending and not schedule.done:
            for _, src, due in schedule.take_due(time.monotonic()):
                conn = conns[src]
                if conn.state != ONLINE or conn.transport is None:
                    continue
                if conn.send_heartbeat(due):
                    c.hb_sent += 1
                else:
                    c.hb_late += 1
            await asyncio.sleep(0.01)

    def prepare_senders(self) -> None:
        """Message prefixes of this process's senders (`job["senders"]`: [conn index, from id, to id, group],
        the to id a user's or a group's)."""
        self.senders = [
            (int(index), self.wire.message_prefix(int(from_id), int(to_id), bool(group)))
            for index, from_id, to_id, group in self.job.get("senders", [])
        ]

    async def traffic(self, start: float) -> None:
        """Each sender sends `rate` messages a second for `duration` seconds (open loop)."""
        if not self.senders:
            return
        rate = float(self.job["rate"]) * len(self.senders)
        schedule = OpenLoop(start, rate, len(self.senders), end=start + float(self.job["duration"]))
        c = self.counters
        conns = self.conns
        senders = self.senders
        while self.sending and not schedule.done:
            for _, src, due in schedule.take_due(time.monotonic()):
                index, prefix = senders[src]
                conn = conns[index]
                if conn.state != ONLINE or conn.transport is None:
                    c.refused += 1  # due but its sender is offline: counts as not delivered
                    continue
                conn.send_message(prefix, due)
                c.sent += 1
            await asyncio.sleep(TICK)

    # -- control -----------------------------------------------------------------------------------------
    async def _report(self) -> None:
        while True:
            # once stopped, the orchestrator waits for the last answers: report them promptly
            await asyncio.sleep(1.0 if self.sending else 0.1)
            self.emit("progress", self.progress())

    def _start(self, coro: Any) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        self.emit("ready", {"users": len(self.conns)})
        reporter = loop.create_task(self._report())
        heartbeats_started = False
        try:
            while True:
                remaining = self.hard_deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    line = await asyncio.wait_for(reader.readline(), remaining)
                except TimeoutError:
                    break
                if not line:
                    break  # the orchestrator is gone
                cmd, *args = line.decode().split()
                if cmd == "login":
                    start = float(args[1])
                    self._start(self.login_phase(int(args[0]), start))
                    if not heartbeats_started:
                        heartbeats_started = True
                        self._start(self.heartbeats(start, float(self.job.get("heartbeat", 0))))
                elif cmd == "traffic":
                    self.prepare_senders()
                    self._start(self.traffic(float(args[0])))
                elif cmd == "stop":
                    self.sending = False
                    self.emit("progress", self.progress())
                elif cmd == "close":
                    break
        finally:
            self.sending = False
            self.closing = True
            reporter.cancel()
            for task in [*self._tasks, *self._background]:
                task.cancel()
            await asyncio.gather(*self._tasks, *self._background, return_exceptions=True)
            self.emit("result", self.result())
            for conn in self.conns:
                if conn.transport is not None:
                    conn.transport.abort()
            await asyncio.sleep(0)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    job = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    raise_fd_limit()
    registry, _ = load_stack_modules(str(job["stack"]))
    process = LoadProcess(job, Wire(registry))
    try:
        import uvloop
    except ImportError:
        asyncio.run(process.run())
    else:
        uvloop.run(process.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
