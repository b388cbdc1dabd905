#!/usr/bin/env python3
"""Hostile-client suite: replays the perimeter attacks (issue 15) against a live process cluster and reports,
for each, what it cost the attacker, what it cost the cluster, and what a well-behaved client beside it saw.

A process cluster (`ttgen up --processes` machinery: login, 2 msg, router, biz on SQLite, file, storage,
gateway) runs on 127.0.0.1. A well-behaved pair (two users, one sending a message every 50 ms to the other
and waiting for each ack) runs through every phase; its ack latency p50/p99 and failures are reported per
phase, beside a quiet baseline before the attacks. The attacks, one after the other, each from its own
loopback source address (127.0.0.x) and bounded in count and time:

- `internal`: a plain socket to every internal listener sends a forged store request; expected: nothing but
  the HELLO comes back and the socket is closed at the handshake deadline;
- `zlib_bomb`: a logged-in user sends 1.1 KB zlib frames that inflate to 1 MiB, 30 a second;
- `heartbeat_flood`: 600 sockets that never read send heartbeats with 16 KiB bodies before login, then one
  1 MiB heartbeat each; the kernel send queues of msg's sockets are summed from /proc/net/tcp;
- `conn_flood`: one address opens 6,000 connections to one msg server (its per-address cap is a quarter of
  its file limit) while another user logs in;
- `slow_loris`: 50 logged-in users trickle one byte of a frame every 2 s; 100 sockets do it before login;
- `spraying`: one address tries 3 passwords on each of 60 accounts; 40 addresses guess one account; then the
  owner of that account logs in from its usual address;
- `bad_utf8`: login names and message fields with invalid UTF-8, before and after login;
- `foreign_files`: offline-file downloads with a bare task id, blob downloads without a credential or by the
  content's hash, an upload with the token of a session that logged out;
- `login_replay`: an eavesdropper records two logins on the wire (the shipped client's sealed password login,
  CID_EXT_PASSWORD_LOGIN_REQ, and an original TeamTalk client's clear MD5 login) and replays each recorded
  byte stream on new connections for the phase; expected: the sealed one logs nobody in (the handshake is
  answered with fresh keys, the recorded login no longer opens), the MD5 one does while
  `services.biz.auth.md5_login` is `allow` (the default; what that key is for).

Usage: bench/hostile.py [--phase-seconds 10] [--only NAME,...] [--json out.json] [--md5-login allow]
(`--md5-login` sets `services.biz.auth.md5_login`: allow, secure_only or refuse.)
Figures: bench/RESULTS.md ("Hostile clients").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import socket
import sys
import tempfile
import termios
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from generated.teamtalk.registry import REGISTRY  # noqa: E402
from runtime.auth import MD5_LOGIN_POLICIES, PasswordHasher, wire_password  # noqa: E402
from runtime.client import ClientCore  # noqa: E402
from runtime.client_login import SessionLogin  # noqa: E402
from runtime.cluster.config import parse_config  # noqa: E402
from runtime.cluster.discovery import RunDirDiscovery  # noqa: E402
from runtime.cluster.processes import ProcessSupervisor  # noqa: E402
from runtime.framing import FLAG_COMPRESSED, encode_frame  # noqa: E402
from runtime.storage import NewUser  # noqa: E402
from runtime.storage.sqlite import SqliteStorage  # noqa: E402
from ttgen.bench.cluster import cpu_seconds, rss_kb  # noqa: E402

PASSWORD = "hostile"
AUTH = {
    "time_cost": 2,
    "memory_cost": 19456,
    "parallelism": 1,
}  # the production policy: spraying costs hashes
PC = 0x01
HEARTBEAT = 0x0701
USERS = 200
ATTACKS = (
    "internal",
    "zlib_bomb",
    "heartbeat_flood",
    "conn_flood",
    "slow_loris",
    "spraying",
    "bad_utf8",
    "foreign_files",
    "login_replay",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cid(name: str) -> int:
    return REGISTRY.by_name(name).command_id


def frame_of(name: str, seq: int, raw: bytes, flag: int = 0) -> bytes:
    """A frame of the named command with a raw body."""
    info = REGISTRY.by_name(name)
    return encode_frame(info.service_id, info.command_id, seq, raw, flag=flag)


def body(name: str, **fields: Any) -> bytes:
    return bytes(REGISTRY.by_name(name).message_class(**fields).SerializeToString())


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)


async def login(
    login_url: str, name: str, password: str = PASSWORD, timeout: float = 10.0
) -> tuple[ClientCore, Any]:
    core = ClientCore(REGISTRY, login_url=login_url, reconnect=False, default_timeout=timeout)
    await core.connect()
    res = await core.call(
        "CID_LOGIN_REQ_USERLOGIN",
        REGISTRY.by_name("CID_LOGIN_REQ_USERLOGIN").message_class(
            user_name=name, password=wire_password(password), online_status=1, client_type=PC
        ),
    )
    return core, res


async def open_from(source: str, host: str, port: int, timeout: float = 5.0) -> tuple[Any, Any]:
    return await asyncio.wait_for(asyncio.open_connection(host, port, local_addr=(source, 0)), timeout)


class Pair:
    """The well-behaved client: user good0 sends to good1 every 50 ms and waits for each ack."""

    def __init__(self, login_url: str, ids: dict[str, int]) -> None:
        self.login_url = login_url
        self.ids = ids
        self.samples: list[tuple[float, float | None]] = []  # (sent at, latency or None = failed)
        self.stop = asyncio.Event()

    async def run(self) -> None:
        while not self.stop.is_set():
            try:
                a, ra = await login(self.login_url, "good0")
                b, rb = await login(self.login_url, "good1")
                if ra.result_code or rb.result_code:
                    raise ConnectionError("good pair refused")
                reader = asyncio.create_task(self._drain(b))
                try:
                    n = 0
                    while not self.stop.is_set():
                        n += 1
                        started = time.monotonic()
                        try:
                            ack = await a.call(
                                "CID_MSG_DATA",
                                REGISTRY.by_name("CID_MSG_DATA").message_class(
                                    from_user_id=0,
                                    to_session_id=self.ids["good1"],
                                    msg_id=n,
                                    create_time=0,
                                    msg_type=1,
                                    msg_data=b"hello %d" % n,
                                ),
                                timeout=5.0,
                            )
                            ok = bool(ack.msg_id)
                        except Exception:
                            ok = False
                        self.samples.append((started, time.monotonic() - started if ok else None))
                        if not ok and (a.link is None or a.link.closed.done()):
                            break
                        await asyncio.sleep(0.05)
                finally:
                    reader.cancel()
                    for core in (a, b):
                        with contextlib.suppress(Exception):
                            await core.close()
            except Exception:
                self.samples.append((time.monotonic(), None))
                await asyncio.sleep(0.5)

    async def _drain(self, core: ClientCore) -> None:
        async for _info, _msg in core.pushes():
            pass

    def window(self, start: float, end: float) -> dict[str, Any]:
        got = [lat for t, lat in self.samples if start <= t < end]
        ok = [lat for lat in got if lat is not None]
        return {
            "sends": len(got),
            "failed": len(got) - len(ok),
            "p50_ms": pct(ok, 0.5),
            "p99_ms": pct(ok, 0.99),
        }


class Hostile:
    def __init__(self, data_dir: Path, phase_seconds: float, md5_login: str = "allow") -> None:
        self.data_dir = data_dir
        self.phase = phase_seconds
        self.http_port = free_port()
        self.config = parse_config(
            {
                "data_dir": str(data_dir),
                "restart": "on-failure",
                "services": {
                    "login": {
                        "instances": 1,
                        "http_port": self.http_port,
                        "client_port": 0,
                        "internal_port": 0,
                    },
                    "msg": {"instances": 2, "client_port": 0},
                    "router": {"instances": 1},
                    "biz": {"instances": 1, "auth": {**AUTH, "md5_login": md5_login}},
                    "file": {"instances": 1},
                    "storage": {"instances": 1},
                    "gateway": {"instances": 1},
                },
                "drain_timeout": 1.0,
            }
        )
        self.sup = ProcessSupervisor(self.config, "generated.teamtalk", console=lambda _s: None)
        self.ids: dict[str, int] = {}
        self.login_url = f"http://127.0.0.1:{self.http_port}/msg_server"

    # setup -------------------------------------------------------------------------------------------------
    async def seed(self) -> None:
        digest = PasswordHasher(**AUTH).hash_wire(wire_password(PASSWORD))
        async with SqliteStorage(self.data_dir) as storage:
            for name in ["good0", "good1", "owner"] + [f"h{i:03d}" for i in range(USERS)]:
                user = await storage.get_user_by_login(name)
                if user is None:
                    user = await storage.create_user(
                        NewUser(login_name=name, nick=name, password_hash=digest)
                    )
                self.ids[name] = user.id

    def endpoints(self, service: str, kind: str) -> list[tuple[str, int]]:
        return [(e.host, e.port) for e in RunDirDiscovery(self.config.run_dir).endpoints(service, kind)]

    def pids(self) -> dict[str, int]:
        return {w.name: w.process.pid for w in self.sup.workers if w.process.returncode is None}

    def sample(self) -> dict[str, tuple[float, int]]:
        return {name: (cpu_seconds(pid), rss_kb(pid)) for name, pid in self.pids().items()}

    def msg_send_queue(self) -> int:
        """Bytes queued to send on every socket of the msg servers' client ports (from /proc/net/tcp)."""
        ports = {p for _h, p in self.endpoints("msg", "client")}
        total = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError):
                for line in Path(table).read_text().splitlines()[1:]:
                    parts = line.split()
                    local_port = int(parts[1].rsplit(":", 1)[1], 16)
                    if local_port in ports:
                        total += int(parts[4].split(":")[0], 16)
        return total

    # attacks -----------------------------------------------------------------------------------------------
    async def attack_internal(self) -> dict[str, Any]:
        forged = frame_of(
            "CID_MSG_DATA",
            1,
            body(
                "CID_MSG_DATA",
                from_user_id=self.ids["good0"],
                to_session_id=self.ids["good1"],
                msg_id=1,
                create_time=0,
                msg_type=1,
                msg_data=b"forged",
            ),
            flag=0x4000,
        )
        targets = [
            (svc, ep) for svc in ("biz", "router", "login", "file") for ep in self.endpoints(svc, "internal")
        ]
        sockets = bytes_back = 0
        worst: dict[str, float] = {}
        end = time.monotonic() + self.phase
        while time.monotonic() < end:  # every internal listener, again and again, for the phase
            for service, (host, port) in targets:
                started = time.monotonic()
                reader, writer = await open_from("127.0.0.20", host, port)
                writer.write(forged * 10)
                got = await asyncio.wait_for(reader.read(), 15)
                writer.close()
                sockets += 1
                bytes_back = max(bytes_back, len(got))
                worst[service] = max(worst.get(service, 0.0), round(time.monotonic() - started, 3))
            await asyncio.sleep(0.02)
        return {
            "attacker": {"sockets": sockets, "bytes_sent": len(forged) * 10 * sockets},
            "outcome": {"most_bytes_back": bytes_back, "closed_after_s_max": worst},
        }

    async def attack_zlib_bomb(self) -> dict[str, Any]:
        bomb = zlib.compress(b"\0" * (1 << 20), 9)
        frame = frame_of("CID_MSG_DATA", 0, bomb, flag=FLAG_COMPRESSED)
        sent = logins = closed = 0
        end = time.monotonic() + self.phase
        while time.monotonic() < end:  # send 30 a second; when closed, log in again and go on
            core, _res = await login(self.login_url, "h000")
            logins += 1
            try:
                while time.monotonic() < end and core.link is not None and not core.link.closed.done():
                    core.link.transport.write(frame)  # type: ignore[union-attr]
                    sent += 1
                    await asyncio.sleep(1 / 30)
                closed += core.link is None or core.link.closed.done()
            finally:
                with contextlib.suppress(Exception):
                    await core.close()
        return {
            "attacker": {"frames": sent, "bytes_sent": sent * len(frame), "inflates_to_bytes": sent << 20},
            "outcome": {"logins_needed": logins, "connections_closed_by_msg": closed},
        }

    async def attack_heartbeat_flood(self) -> dict[str, Any]:
        host, port = self.endpoints("msg", "client")[0]
        small = encode_frame(7, HEARTBEAT, 1, b"h" * (16 * 1024 - 32)) * 16
        big = encode_frame(7, HEARTBEAT, 2, b"H" * (1 << 20))
        socks: list[socket.socket] = []
        loop = asyncio.get_running_loop()
        sent = 0
        try:
            for i in range(600):
                s = socket.socket()
                s.setblocking(False)
                s.bind((f"127.0.0.{30 + i % 8}", 0))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that never reads
                await loop.sock_connect(s, (host, port))
                socks.append(s)

            async def send(s: socket.socket, data: bytes) -> int:
                try:
                    await loop.sock_sendall(s, data)
                except OSError:
                    return 0
                return len(data)

            async def send_all(targets: list[socket.socket], data: bytes) -> int:
                tasks = [asyncio.ensure_future(send(s, data)) for s in targets]
                done, pending = await asyncio.wait(tasks, timeout=10)
                for t in pending:
                    t.cancel()
                return sum(t.result() for t in done if not t.cancelled())

            sent += await send_all(socks, small)
            await asyncio.sleep(1.0)
            queued_small = self.msg_send_queue()
            sent += await send_all(socks[:100], big)
            await asyncio.sleep(max(1.0, self.phase - 3))
            queued_big = self.msg_send_queue()
            unread = sum(
                int.from_bytes(fcntl.ioctl(s.fileno(), termios.FIONREAD, b"\0\0\0\0"), "little")
                for s in socks
            )
            open_now = 0
            for s in socks:
                try:
                    while s.recv(65536):
                        pass
                except BlockingIOError:
                    open_now += 1  # nothing more to read and no EOF: still open
                except OSError:
                    pass
        finally:
            for s in socks:
                s.close()
        return {
            "attacker": {"sockets": len(socks), "bytes_sent": sent},
            "outcome": {
                "msg_send_queue_bytes_after_16k_heartbeats": queued_small,
                "msg_send_queue_bytes_after_1mib_heartbeats": queued_big,
                "echo_bytes_unread_by_attacker": unread,
                "sockets_still_open": open_now,
            },
        }

    async def attack_conn_flood(self) -> dict[str, Any]:
        host, port = self.endpoints("msg", "client")[0]
        held: list[Any] = []
        failed = 0
        for _ in range(6000):
            try:
                held.append(await open_from("127.0.0.40", host, port, 2))
            except OSError:
                failed += 1
        await asyncio.sleep(1.0)
        alive = 0
        for reader, _w in held:
            try:
                got = await asyncio.wait_for(reader.read(1), 0.001)
                alive += got != b""
            except TimeoutError:
                alive += 1
            except OSError:
                pass
        started = time.monotonic()
        try:
            core, res = await login(self.login_url, "h001")
            newcomer = {"result": res.result_code, "login_ms": round((time.monotonic() - started) * 1000, 1)}
            await core.close()
        except Exception as exc:
            newcomer = {"result": repr(exc)}
        for _r, w in held:
            w.close()
        return {
            "attacker": {"connections_opened": len(held), "connect_failures": failed},
            "outcome": {"kept_open_by_msg": alive, "other_user_login": newcomer},
        }

    async def attack_slow_loris(self) -> dict[str, Any]:
        host, port = self.endpoints("msg", "client")[0]
        cores = []
        for i in range(50):
            with contextlib.suppress(Exception):
                core, res = await login(self.login_url, f"h{10 + i:03d}")
                if res.result_code == 0:
                    cores.append(core)
        raw = []
        for i in range(100):
            with contextlib.suppress(OSError, TimeoutError):
                raw.append(await open_from(f"127.0.0.{50 + i % 4}", host, port))
        frame = frame_of("CID_MSG_DATA", 9, b"x" * 200)
        started = time.monotonic()
        closed_at: dict[int, float] = {}
        i = 0
        while time.monotonic() - started < 45 and len(closed_at) < len(cores) + len(raw):
            for n, core in enumerate(cores):
                link = core.link
                if n in closed_at:
                    continue
                if link is None or link.closed.done() or link.transport is None:
                    closed_at[n] = time.monotonic() - started
                    continue
                link.transport.write(frame[i : i + 1])
            for m, (reader, writer) in enumerate(raw):
                key = 1000 + m
                if key in closed_at:
                    continue
                if reader.at_eof() or writer.is_closing():
                    closed_at[key] = time.monotonic() - started
                    continue
                with contextlib.suppress(OSError):
                    writer.write(frame[i : i + 1])
            for _r, _w in raw:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(_r.read(64), 0.001)
            i = min(i + 1, len(frame) - 2)
            await asyncio.sleep(2.0)
        for core in cores:
            with contextlib.suppress(Exception):
                await core.close()
        for _r, w in raw:
            w.close()
        logged = [t for k, t in closed_at.items() if k < 1000]
        pre = [t for k, t in closed_at.items() if k >= 1000]
        return {
            "attacker": {"logged_in": len(cores), "prelogin_sockets": len(raw), "bytes_each_per_2s": 1},
            "outcome": {
                "logged_in_closed": len(logged),
                "logged_in_closed_after_s_max": round(max(logged), 1) if logged else None,
                "prelogin_closed": len(pre),
                "prelogin_closed_after_s_max": round(max(pre), 1) if pre else None,
            },
        }

    async def _try_login(self, name: str, password: str, source: str) -> tuple[int, str, float]:
        host, port = self.endpoints("msg", "client")[1]
        core = ClientCore(REGISTRY, host=host, port=port, reconnect=False, default_timeout=15.0)
        started = time.monotonic()
        # ClientCore dials from the default address; the lockout keys on the address msg sees, so bind first.
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setblocking(False)
        sock.bind((source, 0))
        await loop.sock_connect(sock, (host, port))
        reader, writer = await asyncio.open_connection(sock=sock)
        req = frame_of(
            "CID_LOGIN_REQ_USERLOGIN",
            1,
            body(
                "CID_LOGIN_REQ_USERLOGIN",
                user_name=name,
                password=wire_password(password),
                online_status=1,
                client_type=PC,
            ),
        )
        writer.write(req)
        try:
            head = await asyncio.wait_for(reader.readexactly(16), 20)
            length = int.from_bytes(head[:4], "big")
            data = await asyncio.wait_for(reader.readexactly(length - 16), 5)
            msg = REGISTRY.by_name("CID_LOGIN_RES_USERLOGIN").message_class()
            msg.ParseFromString(data)
            return msg.result_code, msg.result_string, time.monotonic() - started
        except Exception as exc:
            return -1, repr(exc), time.monotonic() - started
        finally:
            writer.close()
            del core

    async def attack_spraying(self) -> dict[str, Any]:
        owner_ok = await self._try_login("owner", PASSWORD, "127.0.0.60")  # the owner's usual device
        sprayed: list[tuple[int, str, float]] = []
        for i in range(60):
            for guess in ("123456", "password", "qwerty"):
                sprayed.append(await self._try_login(f"h{100 + i:03d}", guess, "127.0.0.61"))
        guessed = await asyncio.gather(
            *(self._try_login("owner", f"guess{i}", f"127.0.1.{i + 1}") for i in range(40))
        )
        owner = await self._try_login("owner", PASSWORD, "127.0.0.60")
        stranger = await self._try_login("owner", PASSWORD, "127.0.2.1")

        def tally(results: list[tuple[int, str, float]]) -> dict[str, Any]:
            locked = sum("too many" in text for _c, text, _t in results)
            return {
                "attempts": len(results),
                "refused_by_lockout_no_hash": locked,
                "checked_wrong": sum(c == 6 and "too many" not in t for c, t, _ in results),
                "p50_answer_ms": pct([t for *_x, t in results], 0.5),
            }

        return {
            "attacker": {
                "spray_one_address": tally(sprayed),
                "one_account_40_addresses": tally(list(guessed)),
            },
            "outcome": {
                "owner_before": owner_ok[0],
                "owner_known_device_after": {"result": owner[0], "ms": round(owner[2] * 1000, 1)},
                "right_password_new_address_after": {"result": stranger[0], "text": stranger[1]},
            },
        }

    async def attack_bad_utf8(self) -> dict[str, Any]:
        host, port = self.endpoints("msg", "client")[0]
        good = body(
            "CID_LOGIN_REQ_USERLOGIN", user_name="zzzzzz", password="x" * 32, online_status=1, client_type=PC
        )
        bad_login = frame_of(
            "CID_LOGIN_REQ_USERLOGIN", 1, good.replace(b"zzzzzz", b"\xff\xfe\xfd\xfc\xfb\xfa")
        )
        answered = closed = prelogin = 0
        end = time.monotonic() + self.phase
        while time.monotonic() < end - self.phase / 2:
            reader, writer = await open_from("127.0.0.70", host, port)
            writer.write(bad_login)
            got = await asyncio.wait_for(reader.read(), 20)
            prelogin += 1
            answered += len(got) > 0
            closed += reader.at_eof()
            writer.close()
            await asyncio.sleep(0.02)
        req = REGISTRY.by_name("CID_BUDDY_LIST_CHANGE_SIGN_INFO_REQUEST").message_class(
            user_id=0, sign_info="zzzz"
        )
        raw = req.SerializeToString().replace(b"zzzz", b"\xc3\x28\xa0\xa1")
        sent = logins = closed_after = 0
        while time.monotonic() < end:  # after login: each bad field closes the session; log in again
            core, _res = await login(self.login_url, "h002")
            logins += 1
            link = core.link
            if link is not None and link.transport is not None:
                link.transport.write(frame_of("CID_BUDDY_LIST_CHANGE_SIGN_INFO_REQUEST", 100, raw))
                sent += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(link.closed), 5)
                closed_after += link.closed.done()
            with contextlib.suppress(Exception):
                await core.close()
        errors = 0
        for log in (self.data_dir / "logs").glob("*.log"):
            with contextlib.suppress(OSError):
                errors += log.read_text(errors="replace").count("Traceback")
        return {
            "attacker": {"prelogin_frames": prelogin, "logged_in_frames": sent, "logins": logins},
            "outcome": {
                "prelogin_answered": answered,
                "prelogin_closed": closed,
                "logged_in_closed": closed_after,
                "tracebacks_in_logs": errors,
            },
        }

    async def attack_foreign_files(self) -> dict[str, Any]:
        ((f_host, f_port),) = self.endpoints("file", "client")[:1]
        refused = tried = 0
        end = time.monotonic() + self.phase / 2
        while time.monotonic() < end:  # offline downloads by a (guessed or leaked) bare task id
            tried += 1
            core = ClientCore(REGISTRY, host=f_host, port=f_port, reconnect=False, default_timeout=5.0)
            await core.connect()
            rsp = await core.call(
                "CID_FILE_LOGIN_REQ",
                REGISTRY.by_name("CID_FILE_LOGIN_REQ").message_class(
                    user_id=self.ids["good1"], task_id=str(uuid.uuid4()), file_role=3
                ),
            )
            refused += rsp.result_code != 0
            with contextlib.suppress(Exception):
                await core.close()
        ((s_host, s_port),) = self.endpoints("storage", "http")[:1]
        ((g_host, g_port),) = self.endpoints("gateway", "http")[:1]
        statuses: dict[str, int] = {}
        gets = 0
        async with aiohttp.ClientSession() as http:
            login_doc = await (
                await http.post(
                    f"http://{g_host}:{g_port}/api/login", json={"user": "h003", "password": PASSWORD}
                )
            ).json()
            token = login_doc["upload_token"]
            form = aiohttp.FormData()
            form.add_field("file", b"\x89PNG secret", filename="a.png", content_type="image/png")
            up = await (
                await http.post(
                    f"http://{s_host}:{s_port}/", data=form, headers={"Authorization": f"Bearer {token}"}
                )
            ).json()
            path = up["path"].split("?")[0]
            statuses["download_without_credential"] = (
                await http.get(f"http://{s_host}:{s_port}/{path}")
            ).status
            statuses["download_signed_url"] = (
                await http.get(f"http://{s_host}:{s_port}/{up['path']}")
            ).status
            digest = hashlib.sha256(b"\x89PNG secret").hexdigest()
            end = time.monotonic() + self.phase / 2
            while time.monotonic() < end:  # blob downloads without a credential, and by the content's hash
                for url in (f"/{path}", f"/g0/{digest[:2]}/{digest}.png"):
                    status = (await http.get(f"http://{s_host}:{s_port}{url}")).status
                    statuses[f"anonymous_get_{'named' if url[1:] == path else 'hashed'}"] = status
                    gets += 1
            statuses["download_by_content_hash"] = (
                await http.get(
                    f"http://{s_host}:{s_port}/g0/{digest[:2]}/{digest}.png",
                    headers={"Authorization": f"Bearer {token}"},
                )
            ).status
            await http.post(
                f"http://{g_host}:{g_port}/api/logout",
                headers={"Authorization": f"Bearer {login_doc['token']}"},
            )
            form = aiohttp.FormData()
            form.add_field("file", b"after logout", filename="b.png", content_type="image/png")
            statuses["upload_after_logout"] = (
                await http.post(
                    f"http://{s_host}:{s_port}/", data=form, headers={"Authorization": f"Bearer {token}"}
                )
            ).status
        return {
            "attacker": {"file_logins": tried, "http_requests": gets + 5},
            "outcome": {"offline_downloads_refused": refused, **statuses},
        }

    async def _record(self, source: str, login: Callable[[int], Awaitable[bool]]) -> tuple[bytes, bool]:
        """The bytes a client sent to msg 0 while `login(proxy_port)` ran through a recording proxy bound to
        `source`, and whether it logged in."""
        host, port = self.endpoints("msg", "client")[0]
        sent = bytearray()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_r, up_w = await open_from(source, host, port)

            async def pump(
                src: asyncio.StreamReader, dst: asyncio.StreamWriter, keep: bytearray | None
            ) -> None:
                with contextlib.suppress(ConnectionError, OSError):
                    while data := await src.read(65536):
                        if keep is not None:
                            keep += data
                        dst.write(data)
                        await dst.drain()
                dst.close()

            await asyncio.gather(pump(reader, up_w, sent), pump(up_r, writer, None))

        proxy = await asyncio.start_server(serve, "127.0.0.1", 0)
        try:
            ok = await login(int(proxy.sockets[0].getsockname()[1]))
            await asyncio.sleep(0.2)
        finally:
            proxy.close()
        return bytes(sent), ok

    async def _replay(self, source: str, transcript: bytes) -> list[int]:
        """Command ids the server answered a replayed transcript with, until it closed, answered a login or
        3 s passed; after a clear IMLoginRes, -1 when it logged in and -2 when it refused."""
        host, port = self.endpoints("msg", "client")[0]
        logins = (cid("CID_LOGIN_RES_USERLOGIN"), cid("CID_EXT_PASSWORD_LOGIN_RSP"))
        reader, writer = await open_from(source, host, port)
        writer.write(transcript)
        got, answers, at = bytearray(), list[int](), 0
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(3.0):
                while not any(a in logins for a in answers) and (data := await reader.read(65536)):
                    got += data
                    while at + 16 <= len(got):
                        length = max(16, int.from_bytes(got[at : at + 4], "big"))
                        if at + length > len(got):
                            break
                        command = int.from_bytes(got[at + 10 : at + 12], "big")
                        answers.append(command)
                        if command == logins[0]:
                            res = REGISTRY.by_name("CID_LOGIN_RES_USERLOGIN").message_class()
                            res.ParseFromString(bytes(got[at + 16 : at + length]))
                            answers.append(-1 if res.result_code == 0 else -2)
                        at += length
        writer.close()
        return answers

    async def attack_login_replay(self) -> dict[str, Any]:
        async def sealed_login(port: int) -> bool:
            core = ClientCore(REGISTRY, host="127.0.0.1", port=port, reconnect=False, default_timeout=15.0)
            session = SessionLogin(core, "h003", PASSWORD, use_tickets=False, allow_md5=False)
            try:
                await session.login()
                return core.encrypted and not session.sent_md5
            finally:
                await core.close()

        async def md5_login(port: int) -> bool:
            core = ClientCore(
                REGISTRY, host="127.0.0.1", port=port, reconnect=False, encryption="off", default_timeout=15.0
            )
            try:
                await core.connect()
                res: Any = await core.call(
                    "CID_LOGIN_REQ_USERLOGIN",
                    REGISTRY.by_name("CID_LOGIN_REQ_USERLOGIN").message_class(
                        user_name="h004", password=wire_password(PASSWORD), online_status=1, client_type=PC
                    ),
                )
                return bool(res.result_code == 0)
            finally:
                await core.close()

        sealed, sealed_ok = await self._record("127.0.0.80", sealed_login)
        clear, clear_ok = await self._record("127.0.0.80", md5_login)
        secrets_seen = {
            "sealed_shows_password_or_md5": PASSWORD.encode() in sealed
            or wire_password(PASSWORD).encode() in sealed,
            "clear_shows_md5": wire_password(PASSWORD).encode() in clear,
        }
        tally = {"sealed": [0, 0, 0], "md5": [0, 0, 0]}  # replays, logged in, bytes sent
        login_rsp = cid("CID_EXT_PASSWORD_LOGIN_RSP")
        end = time.monotonic() + self.phase
        while time.monotonic() < end:
            for kind, transcript in (("sealed", sealed), ("md5", clear)):
                answers = await self._replay("127.0.0.81", transcript)
                tally[kind][0] += 1
                tally[kind][1] += (-1 in answers) or (login_rsp in answers)
                tally[kind][2] += len(transcript)
            await asyncio.sleep(0.25)
        return {
            "attacker": {
                "recorded": {"sealed_login_ok": sealed_ok, "md5_login_ok": clear_ok, **secrets_seen},
                "replays": {k: v[0] for k, v in tally.items()},
                "bytes_sent": sum(v[2] for v in tally.values()),
            },
            "outcome": {"logged_in_by_replay": {k: v[1] for k, v in tally.items()}},
        }

    # the run -----------------------------------------------------------------------------------------------
    async def run(self, only: list[str]) -> dict[str, Any]:
        await self.seed()
        await self.sup.start()
        pair = Pair(self.login_url, self.ids)
        pair_task = asyncio.create_task(pair.run())
        report: dict[str, Any] = {"phase_seconds": self.phase, "attacks": {}}
        try:
            await asyncio.sleep(2.0)
            start = time.monotonic()
            before = self.sample()
            await asyncio.sleep(self.phase)
            report["baseline"] = {"good_pair": pair.window(start, time.monotonic()), **self._costs(before)}
            for name in only:
                attack: Callable[[], Awaitable[dict[str, Any]]] = getattr(self, f"attack_{name}")
                before = self.sample()
                start = time.monotonic()
                try:
                    result = await asyncio.wait_for(attack(), 120)
                except Exception as exc:
                    result = {"error": repr(exc)}
                end = time.monotonic()
                await asyncio.sleep(1.0)
                result["seconds"] = round(end - start, 1)
                result["good_pair"] = pair.window(start, end)
                result.update(self._costs(before))
                report["attacks"][name] = result
                print(name, json.dumps(result), flush=True)
                await asyncio.sleep(2.0)
        finally:
            pair.stop.set()
            pair_task.cancel()
            with contextlib.suppress(BaseException):
                await pair_task
            await self.sup.stop()
        return report

    def _costs(self, before: dict[str, tuple[float, int]]) -> dict[str, Any]:
        after = self.sample()
        cpu = {n: round(after[n][0] - before.get(n, (after[n][0], 0))[0], 2) for n in after}
        return {
            "cluster_cpu_s": round(sum(cpu.values()), 2),
            "busiest": max(cpu, key=lambda n: cpu[n]) if cpu else None,
            "max_rss_mb": round(max((r for _c, r in after.values()), default=0) / 1024, 1),
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--phase-seconds", type=float, default=10.0)
    ap.add_argument("--only", default=",".join(ATTACKS))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--data-dir", type=Path)
    ap.add_argument("--md5-login", choices=MD5_LOGIN_POLICIES, default="allow")
    args = ap.parse_args()
    only = [a for a in args.only.split(",") if a]
    unknown = set(only) - set(ATTACKS)
    if unknown:
        ap.error(f"unknown attacks: {', '.join(sorted(unknown))}")

    async def go() -> dict[str, Any]:
        if args.data_dir:
            return await Hostile(args.data_dir, args.phase_seconds, args.md5_login).run(only)
        with tempfile.TemporaryDirectory(prefix="ttgen-hostile-") as tmp:
            return await Hostile(Path(tmp), args.phase_seconds, args.md5_login).run(only)

    report = asyncio.run(go())
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
