"""A cluster over three "hosts" (network namespaces on a bridge, tests/multihost/netlab.py): PostgreSQL on
one, `ttgen up --only/--join` on the two others, clients on the database's host.

- Users on msg servers of different hosts talk to each other; every endpoint is advertised at its host's
  address; a host joins with `--join` and copies of the shared files.
- No single point of failure: two of every service (login, msg, router, biz, file, gateway), one per host;
  one host dies mid-conversation (every process SIGKILLed, its link down) and every client is back through a
  login service, and every acked message reached its recipient exactly once (stored once, seen).

They run in CI (CI=true, as root) and with --runslow; elsewhere they are skipped with the reason, as they
are where network namespaces cannot be made (not root, no `ip`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from generated.teamtalk.registry import REGISTRY
from runtime.client import ClientCore
from runtime.cluster.config import parse_config, shared_files
from runtime.httpkit import http_get
from runtime.storage.postgres.local_server import LocalServer, create_database
from tests.integration.conftest import AUTH, PASSWORD, WINDOWS, md5hex, seed_users
from tests.multihost.netlab import NetLab, lab_or_skip, wait_for_line
from tests.pg_support import in_ci, started

pytestmark = pytest.mark.integration
TTGEN = str(Path(sys.executable).with_name("ttgen"))
DISCOVERY = {"ttl": 2.0, "poll": 0.2}
UP_TIMEOUT = 40.0
SINGLE = 1
SEND_TIMEOUT = 3.0
RECOVERY = 35.0  # seconds every device has to be acked again after its host died
_cls = {
    name: REGISTRY.by_name(name).message_class
    for name in ("CID_LOGIN_REQ_USERLOGIN", "CID_MSG_DATA", "CID_MSG_DATA_ACK", "CID_MSG_LIST_REQUEST")
}


@pytest.fixture
def allowed(request: pytest.FixtureRequest) -> None:
    """These tests build namespaces and start three servers: in CI and with --runslow only."""
    if not (in_ci() or request.config.getoption("--runslow")):
        pytest.skip("multi-host tests run in CI (CI=true) or with --runslow (they take about a minute)")


@dataclass
class Deployment:
    lab: NetLab
    server: LocalServer
    tmp: Path
    local_dsn: str  # over the server's unix socket, for the test process (outside the namespaces)
    tcp_dsn: str  # over TCP at the database host's address, for the hosts
    users: dict[str, int] = field(default_factory=dict)

    def host_dir(self, host: str) -> Path:
        return self.tmp / host

    def config(
        self, host: str, services: dict[str, Any], *, joining: bool, extra: dict[str, Any] | None = None
    ) -> Path:
        """The host's ttgen.yaml: its own address for binding and advertising, cheap hashes, every service
        on a port of its own choosing except login's HTTP lookup (8080 + instance)."""
        address = self.lab.hosts[host].address
        doc: dict[str, Any] = {
            "data_dir": str(self.host_dir(host)),
            "host": address,
            "internal_host": address,
            "discovery": dict(DISCOVERY) if joining else {"backend": "database", **DISCOVERY},
            "drain_timeout": 1.0,
            "restart": "never",
            "services": {
                "login": {"instances": 1, "http_port": 8080, "client_port": 0, "internal_port": 0},
                "msg": {"instances": 1, "client_port": 0, "retransmit_timeout": 0.5},
                "router": {"instances": 1},
                "biz": {"instances": 1, "auth": AUTH},
                "file": {"instances": 1},
                "gateway": {"instances": 1},
                "storage": {"instances": 0},  # the blob store keeps files on its own disk: one host's
                **services,
            },
        }
        if not joining:
            doc["storage"] = {"backend": "postgres", "dsn": self.tcp_dsn}
        doc.update(extra or {})
        path = self.tmp / f"{host}.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path

    def up(self, host: str, config: Path, *args: str) -> None:
        """`ttgen up` on a host, until it says the cluster is up."""
        log = self.tmp / f"{host}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = self.lab.spawn(host, [TTGEN, "up", "--config", str(config), *args], log, env)
        wait_for_line(log, "cluster is up", proc, UP_TIMEOUT)

    def share_files(self, source: str, target: str, config: Path) -> None:
        """What a joining host copies from a host of the cluster (docs/scale.md)."""
        first = parse_config(yaml.safe_load((self.tmp / f"{source}.yaml").read_text()))
        for path, _why in shared_files(first):
            dest = self.host_dir(target) / path.relative_to(self.host_dir(source))
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
            os.chmod(dest, 0o600)
        assert config.exists()


@contextlib.contextmanager
def deployment(tmp_path: Path, names: list[str]) -> Iterator[Deployment]:
    with lab_or_skip(["db", "h1", "h2"]) as lab:
        db = lab.hosts["db"]
        server = started(
            LocalServer(fsync=False, listen=db.address, trust_network=lab.network, netns=db.netns)
        )
        try:
            local = asyncio.run(create_database(server.dsn(), "ttgen"))
            dep = Deployment(lab, server, tmp_path, local, server.tcp_dsn("ttgen"))
            # users made before the first host starts; the at-rest key and cluster id are the first host's
            dep.users = asyncio.run(
                seed_users(dep.host_dir("h1"), names, True, {"backend": "postgres", "dsn": local})
            )
            yield dep
        finally:
            for host in ("h2", "h1"):
                lab.stop_host(host)
            server.stop()


async def endpoint_rows(dsn: str) -> list[tuple[str, int, str, str, int]]:
    conn = await asyncpg.connect(dsn)
    try:
        if not await conn.fetchval("SELECT to_regclass('endpoints') IS NOT NULL"):
            return []  # no process ever used database discovery here
        rows = await conn.fetch(
            "SELECT service, instance, kind, host, port FROM endpoints "
            "WHERE expires > extract(epoch from clock_timestamp()) ORDER BY service, instance, kind"
        )
    finally:
        await conn.close()
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


async def wait_rows(dsn: str, wanted: set[tuple[str, int, str]], timeout: float = 10.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        rows = await endpoint_rows(dsn)
        if wanted <= {(r[0], r[1], r[2]) for r in rows}:
            return rows
        assert time.monotonic() < deadline, f"not registered: {wanted - {(r[0], r[1], r[2]) for r in rows}}"
        await asyncio.sleep(0.1)


async def wait_routers(metrics: list[tuple[str, int]], routers: int, timeout: float = 20.0) -> None:
    """Until every msg server (its /health at `metrics`) has links to `routers` routers: a relay sent before
    the receiver's msg server reached the sender's master router would find the receiver offline."""
    deadline = time.monotonic() + timeout
    for host, port in metrics:
        while True:
            with contextlib.suppress(Exception):  # not up yet, or not answering yet: asked again
                _status, body = await http_get(host, port, "/health", timeout=2.0)
                health = json.loads(body)
                if health.get("routers") == routers and health.get("biz"):
                    break
            assert time.monotonic() < deadline, f"msg at {host}:{port} has no link to {routers} routers"
            await asyncio.sleep(0.1)


async def login(core: ClientCore, name: str) -> int:
    res: Any = await core.call(
        "CID_LOGIN_REQ_USERLOGIN",
        _cls["CID_LOGIN_REQ_USERLOGIN"](
            user_name=name, password=md5hex(PASSWORD), online_status=1, client_type=WINDOWS
        ),
    )
    if res.result_code != 0:
        raise ConnectionError(f"login of {name} refused: {res.result_code} {res.result_string}")
    return int(res.user_info.user_id)


def text(sender: int, to: int, number: int, data: bytes) -> Any:
    return _cls["CID_MSG_DATA"](
        from_user_id=sender, to_session_id=to, msg_id=number, create_time=0, msg_type=0x01, msg_data=data
    )


async def next_push(core: ClientCore, timeout: float = 10.0) -> Any:
    async def first() -> Any:
        async for info, msg in core.pushes():
            if info.name == "CID_MSG_DATA":
                return msg
        raise ConnectionError("connection closed before a message arrived")

    return await asyncio.wait_for(first(), timeout)


# --------------------------------------------------------------------------------------------------------
def test_users_on_different_hosts_talk(allowed: None, tmp_path: Path) -> None:
    names = ["ann", "bob", "cyd"]
    with deployment(tmp_path, names) as dep:
        h1, h2 = dep.lab.hosts["h1"], dep.lab.hosts["h2"]
        dep.up("h1", dep.config("h1", {}, joining=False), "--only", "biz,login,router,msg")
        # the second host joins with copies of the first one's shared files, and runs msg and a router
        config2 = dep.config("h2", {}, joining=True)
        dep.share_files("h1", "h2", config2)
        dep.up("h2", config2, "--join", dep.tcp_dsn, "--only", "msg,router", "--first-instance", "1")

        async def clients() -> None:
            rows = await wait_rows(
                dep.tcp_dsn,
                {
                    ("msg", 0, "client"),
                    ("msg", 1, "client"),
                    ("router", 1, "internal"),
                    ("msg", 1, "metrics"),
                },
            )
            where = {(r[0], r[1], r[2]): (r[3], r[4]) for r in rows}
            await wait_routers([where[("msg", i, "metrics")] for i in (0, 1)], 2)
            # every endpoint is advertised at its host's address, none at loopback
            assert {r[3] for r in rows} == {h1.address, h2.address}, rows
            assert where[("msg", 1, "client")][0] == h2.address
            assert not {("biz", 1, "internal"), ("login", 1, "http")} & set(where)  # --only
            ann = ClientCore(
                REGISTRY, host=where[("msg", 0, "client")][0], port=where[("msg", 0, "client")][1]
            )
            bob = ClientCore(
                REGISTRY, host=where[("msg", 1, "client")][0], port=where[("msg", 1, "client")][1]
            )
            http = where[("login", 0, "http")]
            cyd = ClientCore(REGISTRY, login_url=f"http://{http[0]}:{http[1]}/msg_server")
            try:
                for core in (ann, bob, cyd):
                    await core.connect()
                ids = {
                    name: await login(core, name) for name, core in zip(names, (ann, bob, cyd), strict=True)
                }
                assert cyd.host in (h1.address, h2.address)  # the login service hands out routable addresses
                for number, (src, dst, core, peer) in enumerate(
                    [("ann", "bob", ann, bob), ("bob", "ann", bob, ann), ("cyd", "bob", cyd, bob)], 1
                ):
                    body = f"{src} to {dst} across hosts".encode()
                    ack: Any = await core.call("CID_MSG_DATA", text(ids[src], ids[dst], number, body))
                    assert ack.msg_id > 0
                    got = await next_push(peer)
                    assert (got.from_user_id, bytes(got.msg_data)) == (ids[src], body)
            finally:
                for core in (ann, bob, cyd):
                    await core.close()

        dep.lab.in_host("db", clients, timeout=60)
        for host in ("h2", "h1"):  # a clean stop: drained, exit 0, endpoints withdrawn
            dep.lab.stop_host(host)
            assert [p.returncode for p in dep.lab.hosts[host].processes] == [0]
        assert asyncio.run(endpoint_rows(dep.local_dsn)) == []


def test_a_static_address_list_is_discovery_across_hosts(allowed: None, tmp_path: Path) -> None:
    """No database discovery: each host lists the other's endpoints (fixed ports) in `endpoints:`."""
    with deployment(tmp_path, ["ann", "bob"]) as dep:
        h1, h2 = dep.lab.hosts["h1"].address, dep.lab.hosts["h2"].address
        ports = {
            "biz": {"instances": 1, "internal_port": 7100, "auth": AUTH},
            "login": {"instances": 1, "http_port": 8080, "client_port": 7200, "internal_port": 7300},
            "router": {"instances": 1, "internal_port": 7400},  # + the instance number: 7401 on h2
            "msg": {"instances": 1, "client_port": 7500, "metrics_port": 7600, "retransmit_timeout": 0.5},
        }
        static = {"discovery": {"backend": "run_dir"}}
        to_h2 = [{"service": "router", "instance": 1, "kind": "internal", "host": h2, "port": 7401}]
        to_h1 = [
            {"service": "biz", "instance": 0, "kind": "internal", "host": h1, "port": 7100},
            {"service": "login", "instance": 0, "kind": "internal", "host": h1, "port": 7300},
            {"service": "router", "instance": 0, "kind": "internal", "host": h1, "port": 7400},
        ]
        config1 = dep.config("h1", ports, joining=False, extra={**static, "endpoints": to_h2})
        dep.up("h1", config1, "--only", "biz,login,router,msg")
        config2 = dep.config("h2", ports, joining=True, extra={"discovery": {}, "endpoints": to_h1})
        dep.share_files("h1", "h2", config2)
        dep.up("h2", config2, "--join", dep.tcp_dsn, "--only", "msg,router", "--first-instance", "1")

        async def clients() -> None:
            await wait_routers([(h1, 7600), (h2, 7601)], 2)
            ann = ClientCore(REGISTRY, host=h1, port=7500)
            bob = ClientCore(REGISTRY, host=h2, port=7501)
            try:
                await ann.connect()
                await bob.connect()
                ids = {"ann": await login(ann, "ann"), "bob": await login(bob, "bob")}
                for number, (src, dst, core, peer) in enumerate(
                    [("ann", "bob", ann, bob), ("bob", "ann", bob, ann)], 1
                ):
                    body = f"{src} to {dst}, static".encode()
                    deadline = time.monotonic() + 10  # the msg servers dial the listed routers
                    while True:
                        ack: Any = await core.call("CID_MSG_DATA", text(ids[src], ids[dst], number, body))
                        if ack.msg_id > 0 or time.monotonic() > deadline:
                            break
                        await asyncio.sleep(0.2)
                    assert ack.msg_id > 0
                    got = await next_push(peer)
                    assert (got.from_user_id, bytes(got.msg_data)) == (ids[src], body)
            finally:
                await ann.close()
                await bob.close()

        dep.lab.in_host("db", clients, timeout=60)
        assert asyncio.run(endpoint_rows(dep.local_dsn)) == []  # nothing went through the database


# --------------------------------------------------------------------------------------------------------
@dataclass
class Sent:
    to: int
    number: int
    data: bytes
    acked: int = 0
    refused: bool = False


@dataclass
class Device:
    """One user sending numbered messages to the next one (each with a client msg id, resent after a
    reconnect until acked or refused), reading pushes, and syncing history after every login."""

    name: str
    user_id: int
    peer: int
    sender_of_mine: int  # the user whose messages this one receives
    sent: list[Sent] = field(default_factory=list)
    seen: dict[int, bytes] = field(default_factory=dict)  # msg id -> body, from pushes and syncs
    pushes: dict[int, int] = field(default_factory=lambda: defaultdict(int))  # msg id -> pushes of it
    hosts: list[str] = field(default_factory=list)  # the msg server's address at each login
    ack_times: list[float] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)  # (when, what) made it log in again


class Conversation:
    def __init__(self, devices: list[Device], login_urls: list[str]) -> None:
        self.devices, self.login_urls = devices, login_urls
        self.stop = asyncio.Event()
        self.random = random.Random(17)

    async def device(self, d: Device, index: int) -> None:
        pending: Sent | None = None
        number = 0
        attempt = 0
        while not self.stop.is_set():
            # through a login service: this device's usual one first, the other after a failure
            url = self.login_urls[(index + attempt) % len(self.login_urls)]
            attempt += 1
            core = ClientCore(REGISTRY, login_url=url, reconnect=False, default_timeout=3.0)
            reader: asyncio.Task[None] | None = None
            try:
                await core.connect()
                await login(core, d.name)
                assert core.host is not None
                d.hosts.append(core.host)
                reader = asyncio.create_task(self.read(core, d))
                await self.sync(core, d)
                while not self.stop.is_set():
                    if pending is None:
                        number += 1
                        pending = Sent(d.peer, number, f"{d.user_id}:{number}".encode())
                        d.sent.append(pending)
                    # A client that waits no more than SEND_TIMEOUT for an ack and then logs in again (the
                    # protocol's own retransmissions wait 5 x 5 s on a connection to a silent host).
                    ack: Any = await asyncio.wait_for(
                        core.call("CID_MSG_DATA", text(d.user_id, pending.to, pending.number, pending.data)),
                        SEND_TIMEOUT,
                    )
                    if ack.msg_id:
                        pending.acked = int(ack.msg_id)
                        d.ack_times.append(time.monotonic())
                    else:
                        pending.refused = True
                    pending = None
                    await asyncio.sleep(self.random.uniform(0.1, 0.3))
            except Exception as exc:  # the host died, or a server is not reachable yet: log in again
                d.errors.append((time.monotonic(), f"{type(exc).__name__}: {exc}"[:120]))
                await asyncio.sleep(0.2 + self.random.random() * 0.3)
            finally:
                if reader is not None:
                    reader.cancel()
                with contextlib.suppress(Exception):
                    await core.close()

    async def read(self, core: ClientCore, d: Device) -> None:
        async for info, msg in core.pushes():
            if info.name != "CID_MSG_DATA":
                continue
            d.pushes[msg.msg_id] += 1
            d.seen[msg.msg_id] = bytes(msg.msg_data)
            with contextlib.suppress(Exception):
                await core.send(
                    "CID_MSG_DATA_ACK",
                    _cls["CID_MSG_DATA_ACK"](
                        user_id=d.user_id, msg_id=msg.msg_id, session_type=SINGLE, session_id=msg.from_user_id
                    ),
                )

    async def sync(self, core: ClientCore, d: Device) -> None:
        """The whole history of the conversation from the sender of this device's messages."""
        begin = 0
        while True:
            page: Any = await core.call(
                "CID_MSG_LIST_REQUEST",
                _cls["CID_MSG_LIST_REQUEST"](
                    user_id=0,
                    session_type=SINGLE,
                    session_id=d.sender_of_mine,
                    msg_id_begin=begin,
                    msg_cnt=100,
                ),
            )
            for m in page.msg_list:
                if m.from_session_id != d.user_id:
                    d.seen[m.msg_id] = bytes(m.msg_data)
            ids = [m.msg_id for m in page.msg_list]
            if len(ids) < 100:
                return
            begin = min(ids) - 1

    async def final_sync(self) -> None:
        for index, d in enumerate(self.devices):
            for attempt in range(10):
                url = self.login_urls[(index + attempt) % len(self.login_urls)]
                core = ClientCore(REGISTRY, login_url=url, reconnect=False, default_timeout=5.0)
                try:
                    await core.connect()
                    await login(core, d.name)
                    await self.sync(core, d)
                    break
                except Exception:
                    if attempt == 9:
                        raise
                    await asyncio.sleep(0.5)
                finally:
                    with contextlib.suppress(Exception):
                        await core.close()


def check(devices: list[Device]) -> dict[str, Any]:
    """Lost (acked, never seen by the recipient), duplicated (one sent message stored under two ids),
    pushed twice, and phantom (refused, yet stored) messages, after the final sync."""
    by_id = {d.user_id: d for d in devices}
    lost: list[str] = []
    phantom = duplicated = pushed_twice = 0
    for d in devices:
        r = by_id[d.peer]
        texts = list(r.seen.values())
        for s in d.sent:
            if s.acked and r.seen.get(s.acked) != s.data:
                lost.append(f"{d.name} #{s.number} (msg id {s.acked})")
            if s.refused and s.data in texts:
                phantom += 1
        duplicated += len(texts) - len(set(texts))
        pushed_twice += sum(1 for n in d.pushes.values() if n > 1)
    return {"lost": lost, "duplicated": duplicated, "pushed_twice": pushed_twice, "phantom": phantom}


def test_a_host_dies_mid_conversation(allowed: None, tmp_path: Path) -> None:
    names = [f"dev{i}" for i in range(8)]
    with deployment(tmp_path, names) as dep:
        h1, h2 = dep.lab.hosts["h1"], dep.lab.hosts["h2"]
        dep.up("h1", dep.config("h1", {}, joining=False))
        config2 = dep.config("h2", {}, joining=True)
        dep.share_files("h1", "h2", config2)
        dep.up("h2", config2, "--join", dep.tcp_dsn, "--first-instance", "1")
        ids = [dep.users[n] for n in names]
        devices = [
            Device(n, ids[i], ids[(i + 1) % len(ids)], ids[(i - 1) % len(ids)]) for i, n in enumerate(names)
        ]
        report: dict[str, Any] = {}

        async def run() -> None:
            every = {
                (s, i, k)
                for s, k in [
                    ("login", "http"),
                    ("msg", "client"),
                    ("router", "internal"),
                    ("biz", "internal"),
                    ("file", "client"),
                    ("gateway", "http"),
                ]
                for i in (0, 1)
            }
            rows = await wait_rows(dep.tcp_dsn, every)
            hosts = {(r[0], r[1]): r[3] for r in rows}
            for service in ("login", "msg", "router", "biz", "file", "gateway"):  # two of each, one per host
                assert (hosts[(service, 0)], hosts[(service, 1)]) == (h1.address, h2.address), service
            urls = [f"http://{r[3]}:{r[4]}/msg_server" for r in rows if r[0] == "login" and r[2] == "http"]
            talk = Conversation(devices, urls)
            tasks = [asyncio.create_task(talk.device(d, i)) for i, d in enumerate(devices)]
            await asyncio.sleep(5.0)
            on_h2 = [d.name for d in devices if d.hosts and d.hosts[-1] == h2.address]
            assert on_h2, "no device was on the second host's msg server before it died"
            assert all(d.ack_times for d in devices), "a device had no ack before the kill"
            killed_at = time.monotonic()
            report["killed"] = await asyncio.to_thread(dep.lab.kill_host, "h2")
            # Dead peers are dropped within ~5 s (links.DEAD_PEER_TIMEOUT) and leases lapse in 2 s: the talk
            # goes on until every device was acked again after the kill (at least 8 s, at most RECOVERY s).
            await asyncio.sleep(8.0)
            while time.monotonic() - killed_at < RECOVERY and not all(
                any(t > killed_at for t in d.ack_times) for d in devices
            ):
                await asyncio.sleep(0.5)
            await asyncio.sleep(1.0)
            talk.stop.set()
            await asyncio.wait(tasks, timeout=20)
            await talk.final_sync()
            report.update(check(devices))
            report["on_h2"] = on_h2
            report["back"] = {
                d.name: next((round(t - killed_at, 2) for t in d.ack_times if t > killed_at), None)
                for d in devices
            }
            report["last_hosts"] = {d.name: d.hosts[-1] for d in devices}
            report["errors"] = {
                d.name: [(round(t - killed_at, 2), e) for t, e in d.errors] for d in devices if d.errors
            }
            report["sent"] = sum(len(d.sent) for d in devices)
            report["acked"] = sum(1 for d in devices for s in d.sent if s.acked)

        dep.lab.in_host("db", run, timeout=120)
        print({k: report[k] for k in ("sent", "acked", "on_h2", "back", "last_hosts", "errors")})
        assert report["killed"], "nothing ran on the second host"
        assert report["lost"] == [], report
        assert (report["duplicated"], report["pushed_twice"], report["phantom"]) == (0, 0, 0), report
        # every device is back, acked again after the kill, through a login service on the living host
        assert all(v is not None for v in report["back"].values()), report["back"]
        assert set(report["last_hosts"].values()) == {h1.address}, report["last_hosts"]
        assert report["acked"] > 100, report
