"""Integration fixtures: a real cluster (login, 2 msg, 2 routers, biz; SQLite or PostgreSQL) on loopback; real
clients. `with_cluster` runs each test once per storage backend."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from generated.teamtalk import servers as tt_servers
from generated.teamtalk.registry import REGISTRY
from runtime.auth import PasswordHasher
from runtime.client import ClientCore
from runtime.cluster.config import DEFAULT_LAYOUT, parse_config
from runtime.cluster.runner import ClusterRunner
from runtime.registry import Registry
from runtime.services.biz.storage_open import storage_from_config
from runtime.storage import NewUser, Storage
from runtime.storage.sqlite.readers import database_digest

# Cheap argon2 parameters keep seeding fast; the biz config below uses the same ones, so no rehash happens.
AUTH = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}
PASSWORD = "secret"
WINDOWS, MAC, IOS, ANDROID = 0x01, 0x02, 0x11, 0x12


def md5hex(text: str) -> str:
    """What TeamTalk clients send as the password."""
    return hashlib.md5(text.encode()).hexdigest()


# The storage section `cluster_config` and `seed_users` use when none is given: SQLite in the data dir, or
# what the `backend_storage` fixture chose for the running test (modules opt in with
# usefixtures("backend_storage")).
_default_storage: dict[str, Any] = {"backend": "sqlite"}
# The layout (runtime.cluster.layout) `cluster_config` uses when none is given: the `cluster_layout` fixture
# runs every integration test once per layout.
_default_layout = DEFAULT_LAYOUT


def cluster_config(
    data_dir: Path,
    encrypt: bool = True,
    login: dict[str, Any] | None = None,
    biz: dict[str, Any] | None = None,
    storage: dict[str, Any] | None = None,
    discovery: dict[str, Any] | None = None,
    router: dict[str, Any] | None = None,
    layout: str | None = None,
    **msg: Any,
) -> dict[str, Any]:
    """A cluster for tests: every port 0, short retransmit timeout, only the services this suite needs.
    `storage` is the backend's section (default: SQLite in data_dir); `layout` defaults to the running
    test's (`cluster_layout`)."""
    return {
        "data_dir": str(data_dir),
        "layout": layout or _default_layout,
        "storage": {**(storage or _default_storage), "encrypt_at_rest": encrypt},
        "services": {
            "login": {"instances": 1, "http_port": 0, "client_port": 0, "internal_port": 0, **(login or {})},
            "msg": {"instances": 2, "client_port": 0, "retransmit_timeout": 0.3, "max_attempts": 4, **msg},
            "router": {"instances": 2, **(router or {})},
            "biz": {
                "instances": 1,
                # Every test client logs in from 127.0.0.1: one address is not one flooder here.
                "auth": {
                    **AUTH,
                    "pair_free_failures": 5,
                    "address_free_failures": 12,
                    "base_delay": 30,
                    "max_pending_per_address": 1000,
                },
                **(biz or {}),
            },
            "file": {"instances": 0},
            "storage": {"instances": 0},
            "gateway": {"instances": 0},
        },
        "drain_timeout": 2.0,
        **({"discovery": discovery} if discovery else {}),
    }


def cluster_storage(data_dir: Path, storage: dict[str, Any] | None = None, encrypt: bool = True) -> Storage:
    """An unopened store on the cluster's database, as its biz would open it."""
    return storage_from_config({**(storage or _default_storage), "encrypt_at_rest": encrypt}, data_dir)


async def seed_users(
    data_dir: Path, names: list[str], encrypt: bool = True, storage_cfg: dict[str, Any] | None = None
) -> dict[str, int]:
    """Create users (login name = nick) before the cluster starts; returns name -> id."""
    hasher = PasswordHasher(**AUTH)
    digest = hasher.hash_wire(md5hex(PASSWORD))
    storage = cluster_storage(data_dir, storage_cfg, encrypt)
    await storage.open()
    try:
        ids = {}
        for name in names:
            existing = await storage.get_user_by_login(name)
            if existing is None:
                existing = await storage.create_user(
                    NewUser(login_name=name, nick=name, password_hash=digest)
                )
            ids[name] = existing.id
        return ids
    finally:
        await storage.close()


class Client:
    """A logged-in test client over runtime.client.ClientCore, collecting pushes by command name."""

    def __init__(self, core: ClientCore, user_id: int, name: str) -> None:
        self.core, self.user_id, self.name = core, user_id, name
        self.pushes: list[tuple[str, Any]] = []
        self.arrived: list[float] = []  # time.monotonic() of each push, parallel to `pushes`
        self._changed = asyncio.Condition()
        self.auto_ack = True
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for info, msg in self.core.pushes():
            if info.name in ("CID_MSG_DATA", "CID_EXT_MSG_BURN") and self.auto_ack:
                ack = REGISTRY.by_name("CID_MSG_DATA_ACK").message_class(
                    user_id=self.user_id,
                    msg_id=msg.msg_id,
                    session_type=2 if msg.msg_type & 0x10 else 1,
                    session_id=msg.to_session_id
                    if msg.msg_type & 0x10 or msg.from_user_id == self.user_id
                    else msg.from_user_id,
                )
                with contextlib.suppress(Exception):
                    await self.core.send("CID_MSG_DATA_ACK", ack)
            async with self._changed:
                self.pushes.append((info.name, msg))
                self.arrived.append(time.monotonic())
                self._changed.notify_all()

    def received(self, command: str, pred: Callable[[Any], bool] = lambda m: True) -> list[Any]:
        """Pushes of that command matching pred, in arrival order."""
        return [m for name, m in self.pushes if name == command and pred(m)]

    async def wait_for(
        self,
        command: str,
        pred: Callable[[Any], bool] = lambda m: True,
        *,
        count: int = 1,
        timeout: float = 5.0,
    ) -> list[Any]:
        """Wait until at least `count` matching pushes arrived (TimeoutError otherwise)."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: len(self.received(command, pred)) >= count), timeout
            )
        return self.received(command, pred)

    def presence(self, user_id: int | None = None) -> list[tuple[int, int]]:
        """Presence pushes as (user id, status) in arrival order, from both forms of a flush: one
        IMUserStatNotify per user, or one IMUsersStatRsp push (seq 0) with the list (`user_id`: that user's
        only)."""
        out: list[tuple[int, int]] = []
        for name, m in self.pushes:
            if name == "CID_BUDDY_LIST_STATUS_NOTIFY":
                out.append((m.user_stat.user_id, m.user_stat.status))
            elif name == "CID_BUDDY_LIST_USERS_STATUS_RESPONSE":
                out.extend((s.user_id, s.status) for s in m.user_stat_list)
        return out if user_id is None else [p for p in out if p[0] == user_id]

    def presence_frames(self) -> list[float]:
        """Arrival times of the presence pushes (frames)."""
        names = ("CID_BUDDY_LIST_STATUS_NOTIFY", "CID_BUDDY_LIST_USERS_STATUS_RESPONSE")
        return [t for (name, _), t in zip(self.pushes, self.arrived, strict=True) if name in names]

    def presence_view(self) -> dict[int, int]:
        """The latest status of every user this client was told about."""
        return dict(self.presence())

    async def wait_view(self, expected: dict[int, int], timeout: float = 5.0) -> None:
        """Until the presence pushes say exactly `expected` for those users (TimeoutError otherwise)."""

        def done() -> bool:
            view = self.presence_view()
            return all(view.get(uid) == status for uid, status in expected.items())

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(done), timeout)

    async def wait_presence(self, user_id: int, status: int, timeout: float = 5.0) -> None:
        """Until a presence push said `user_id` has `status` (TimeoutError otherwise)."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: (user_id, status) in self.presence(user_id)), timeout
            )

    async def call(self, command: str, **fields: Any) -> Any:
        """Send a request and return its reply."""
        msg = REGISTRY.by_name(command).message_class(**fields)
        return await self.core.call(command, msg)

    async def send(self, command: str, **fields: Any) -> None:
        """Send a command that has no reply."""
        await self.core.send(command, REGISTRY.by_name(command).message_class(**fields))

    async def history(self, session_id: int, session_type: int = 1, count: int = 100) -> list[Any]:
        """The newest `count` messages of a session (IMMsgListReq from the start), newest first."""
        page = await self.call(
            "CID_MSG_LIST_REQUEST",
            user_id=0,
            session_type=session_type,
            session_id=session_id,
            msg_id_begin=0,
            msg_cnt=count,
        )
        return list(page.msg_list)

    async def text(self, to: int, data: bytes, *, group: bool = False, client_msg_id: int = 0) -> Any:
        """Send a chat message; returns the IMMsgDataAck."""
        return await self.call(
            "CID_MSG_DATA",
            from_user_id=self.user_id,
            to_session_id=to,
            msg_id=client_msg_id,
            create_time=0,
            msg_type=0x11 if group else 0x01,
            msg_data=data,
        )

    async def close(self) -> None:
        """Disconnect."""
        await self.core.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class LostAfterCommit:
    """Makes a biz instance die between its commit and its answer: the stored message's id is recorded, the
    answer is never sent, the in-memory token window goes with the "process", and the instance is stopped.
    `await lost.stopped()` waits for the stop."""

    def __init__(self, cluster: TestCluster, victim: Any) -> None:
        self.committed: list[int] = []
        self._stopping: list[asyncio.Task[None]] = []

        def crash(reply: Any) -> None:
            from runtime.services.biz.handlers_msg import new_store_tokens

            self.committed.append(reply.msg_id)  # committed; the answer is never sent
            victim._store_tokens = new_store_tokens()  # the memory goes with the process
            stop = cluster.stop_instance("biz", victim.ctx.instance)
            self._stopping.append(asyncio.get_running_loop().create_task(stop))

        store = victim.store  # biz's one store path, for link requests and direct calls alike

        def store_then_crash(user_id: int, msg: Any, burn: bool, done: Any) -> None:
            def answer(reply: Any) -> None:
                if reply is None or not reply.msg_id:
                    done(reply)  # not stored: answered as usual
                else:
                    crash(reply)

            store(user_id, msg, burn, answer)

        victim.store = store_then_crash

    async def stopped(self) -> None:
        await asyncio.gather(*self._stopping)


async def wait_biz_links(msg: Any, count: int, timeout: float = 2.0) -> None:
    """Until a msg server has a live link to `count` biz instances."""
    deadline = time.monotonic() + timeout
    while sum(d.link is not None for d in msg.biz) < count:
        assert time.monotonic() < deadline, f"msg has {len(msg.biz)} biz dialers, not {count} links"
        await asyncio.sleep(0.01)


class TestCluster:
    """A running cluster plus helpers to log clients in on a chosen msg server."""

    __test__ = False

    def __init__(
        self,
        data_dir: Path,
        users: dict[str, int],
        overrides: dict[str, Any] | None = None,
        registry: Registry | None = None,
    ) -> None:
        self.data_dir, self.users = data_dir, users
        self.overrides = overrides or {}
        self.registry = registry or REGISTRY  # the cluster's; clients always speak the bundled one
        self.runner: ClusterRunner | None = None
        self.clients: list[Client] = []

    async def start(self) -> None:
        """Start every service in this process."""
        config = parse_config(cluster_config(self.data_dir, **self.overrides))
        self.runner = ClusterRunner(config, self.registry, tt_servers, console=lambda _s: None)
        await self.runner.start()
        await self.wait_ready()

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Until every msg server has biz, a router, and login registration."""
        deadline = time.monotonic() + timeout
        while True:
            ok = all(s.health()["status"] == "ok" for s in self.services("msg"))
            login = self.services("login")
            if ok and login and len(login[0].servers) == len(self.services("msg")):
                return
            if time.monotonic() > deadline:
                raise TimeoutError("cluster not ready")
            await asyncio.sleep(0.02)

    @property
    def storage_cfg(self) -> dict[str, Any]:
        """The storage section of this cluster's config (backend, dsn)."""
        return dict(self.overrides.get("storage") or _default_storage)

    async def digest(self) -> str:
        """SHA-256 over every row of every table of the cluster's database (one snapshot)."""
        if self.storage_cfg.get("backend") == "postgres":
            from runtime.storage.postgres import database_digest as pg_digest

            return await pg_digest(self.storage_cfg["dsn"])
        return database_digest(self.data_dir / "ttgen.db")

    def services(self, name: str) -> list[Any]:
        """In-process instances of a service."""
        assert self.runner is not None
        return list(self.runner.local.get(name, []))

    def msg_port(self, index: int) -> int:
        """Client port of msg server `index`."""
        return int(self.services("msg")[index].endpoints()[0].port)

    async def connect(self, index: int) -> ClientCore:
        """A raw connection to msg server `index` (not logged in)."""
        core = ClientCore(
            REGISTRY, host="127.0.0.1", port=self.msg_port(index), reconnect=False, encryption="off"
        )
        await core.connect()
        return core

    async def handshake(self, core: ClientCore) -> None:
        """The IM.Ext handshake (docs/teamtalk-extensions.md): sealed frames from now on, and the connection
        is extension-capable (it receives IM.Ext pushes)."""
        import os

        from runtime.stages.crypto import KeyExchange, derive_session_keys

        kx, nonce = KeyExchange(), os.urandom(16)
        req = REGISTRY.by_name("CID_EXT_HANDSHAKE_REQ").message_class(
            client_public_key=kx.public_bytes, client_nonce=nonce, suites=[1]
        )
        rsp: Any = await core.call("CID_EXT_HANDSHAKE_REQ", req)
        assert rsp.result_code == 0, rsp
        keys = derive_session_keys(kx, rsp.server_public_key, nonce, rsp.server_nonce, initiator=True)
        core.enable_encryption(keys, "aes-256-gcm")

    async def login(
        self, name: str, index: int = 0, client_type: int = WINDOWS, *, ext: bool = False
    ) -> Client:
        """Connect to msg server `index` and log in as `name` (`ext`: an extension-capable client, which
        shakes hands first; otherwise an original TeamTalk client)."""
        core = await self.connect(index)
        if ext:
            await self.handshake(core)
        res: Any = await core.call(
            "CID_LOGIN_REQ_USERLOGIN",
            REGISTRY.by_name("CID_LOGIN_REQ_USERLOGIN").message_class(
                user_name=name, password=md5hex(PASSWORD), online_status=1, client_type=client_type
            ),
        )
        assert res.result_code == 0, res
        client = Client(core, res.user_info.user_id, name)
        self.clients.append(client)
        return client

    async def stop_instance(self, service: str, index: int) -> None:
        """Stop one service instance (its links close; peers see it go away)."""
        assert self.runner is not None
        for hosted in list(self.runner.instances):
            if hosted.service.ctx.name == service and hosted.service.ctx.instance == index:
                await hosted.stop(0.5)
                self.runner.instances.remove(hosted)
                self.runner.local[service].remove(hosted.service)
                return
        raise LookupError(f"{service}.{index} is not running")

    async def restart(self) -> None:
        """Stop everything (clients too) and start a new cluster over the same data dir."""
        await self.stop()
        await self.start()

    async def stop(self) -> None:
        """Close clients and stop the cluster."""
        for c in self.clients:
            with contextlib.suppress(Exception):
                await c.close()
        self.clients.clear()
        if self.runner is not None:
            await self.runner.stop()
            self.runner = None


NAMES = [f"user{i:02d}" for i in range(60)]


Body = Callable[[TestCluster], Awaitable[None]]


def run_in_cluster(data_dir: Path, body: Body, **overrides: Any) -> None:
    """Seed users, start a cluster, run `body(cluster)`, stop the cluster (in a fresh event loop)."""

    async def main() -> None:
        users = await seed_users(data_dir, NAMES, overrides.get("encrypt", True), overrides.get("storage"))
        c = TestCluster(data_dir, users, overrides)
        await c.start()
        try:
            await body(c)
        finally:
            await c.stop()

    asyncio.run(main())


class WithCluster:
    """`with_cluster(body, **overrides)` runs `async body(cluster)` against a fresh cluster on the test's
    storage backend; `storage(encrypt)` opens that cluster's database afterwards."""

    def __init__(self, data_dir: Path, storage: dict[str, Any]) -> None:
        self.data_dir, self.storage_cfg = data_dir, storage

    def __call__(self, body: Body, **overrides: Any) -> None:
        run_in_cluster(self.data_dir, body, storage=self.storage_cfg, **overrides)

    def storage(self, encrypt: bool = True) -> Storage:
        """An unopened store on the database the cluster used."""
        return cluster_storage(self.data_dir, self.storage_cfg, encrypt)


def backend_section(backend: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """The `storage:` section for a backend: SQLite in the data dir, or a fresh PostgreSQL database."""
    if backend == "sqlite":
        return {"backend": "sqlite"}
    return {"backend": "postgres", "dsn": request.getfixturevalue("pg_databases").create()}


# Tests the cluster layout cannot affect: they build no msg, biz or router, or never use the layout the
# `cluster_layout` fixture sets. They run once, in the default layout; `pytest --all-layouts` runs them in
# both. Keyed by module file name, `file::test function`, or `file::function[ids]` for one parametrization
# (its ids without the layout's).
ONE_LAYOUT: dict[str, str] = {
    "test_runtime_loopback.py": "a generated server and its clients over loopback, no cluster",
    "test_perimeter_sockets.py": "the transport's limits on a bare dispatcher, no cluster",
    "test_cluster_cli_monitor.py": "the monitor server and the runner on probe services only",
    "test_bench_web_smoke.py": "bench/bench_web.py starts its own cluster in its own default layout",
    "test_chaos.py::test_the_checker_reports_each_broken_promise": "the checker over hand-made records",
    # Refusals made by the msg server's input stage, the file service or the gateway's HTTP layer, before
    # anything crosses a msg-biz-router link (the part the layout changes); both backends still run.
    "test_input_constraints.py": "constraints checked by the msg server's input stage, and the registry",
    "test_messaging_bad_input.py::test_commands_before_login_are_refused": "msg refuses before any link",
    "test_messaging_bad_input.py::test_invalid_utf8_in_a_string_field_is_refused_like_any_bad_body": (
        "msg's input stage refuses the body"
    ),
    "test_files_refusals.py": "refusals of the file service, which no layout moves",
    "test_gateway.py::test_client_api_refuses_bad_input_with_clear_codes": "the gateway's HTTP layer refuses",
    "test_gateway.py::test_requests_above_the_per_address_rate_get_429_and_change_nothing": (
        "the gateway's per-address rate limit"
    ),
    "test_admin_users.py::test_the_key_is_checked_first_and_every_action_is_audited": "the admin API's key",
    "test_admin_users.py::test_import_over_http_is_one_transaction_with_per_row_errors": (
        "the admin API on the database"
    ),
    "test_cluster_cli_im.py::test_admin_before_start": "`ttgen admin` on a database, no cluster running",
    "test_cluster_cli_im.py::test_admin_hashes_with_the_cluster_policy_and_passwd_replaces_the_hash": (
        "`ttgen admin` on a database, no cluster running"
    ),
}

# The command-line tools' own tests (`ttgen bench` modes, `ttgen chat` and `ttgen admin` against a running
# cluster, `ttgen up --demo`): each runs once, in the layout named here, alternated so that the tools meet
# both layouts. What the layout does change (delivery, restarts, kills, both backends) is checked in both
# layouts by the messaging, delivery, chaos, process and restart tests, which are not listed.
TOOL_LAYOUT: dict[str, str] = {
    "test_bench_smoke.py::test_connections_2000_smoke": "sharded",
    "test_bench_smoke.py::test_login_storm_smoke": "split",
    "test_bench_smoke.py::test_restart_storm_smoke": "sharded",
    "test_bench_smoke.py::test_restart_storm_with_resumption_tickets_smoke": "split",
    "test_bench_smoke.py::test_target_a_running_cluster_and_report_refused_logins": "split",
    "test_cluster_cli_im.py::test_demo_runs_to_completion[one-process]": "split",  # what ./dev demo runs
    "test_cluster_cli_im.py::test_demo_runs_to_completion[processes]": "sharded",
    "test_cluster_cli_im.py::test_chat_through_pipes": "sharded",
    "test_cluster_cli_im.py::test_chat_bad_password_exits_1": "sharded",
    "test_cluster_cli_im.py::test_chat_straight_to_a_msg_server": "sharded",
    "test_cluster_cli_im.py::test_admin_while_running": "sharded",
    "test_cluster_cli_im.py::test_admin_member_change_reaches_a_running_biz": "sharded",
}


def kept_layout(item: pytest.Item, layout: str) -> str | None:
    """The one layout `item` runs in by default (ONE_LAYOUT, TOOL_LAYOUT), or None: both."""
    file = item.path.name
    function = getattr(item, "originalname", item.name)
    callspec = getattr(item, "callspec", None)
    ids = callspec.id.split("-") if callspec is not None else []
    if layout in ids:
        ids.remove(layout)
    keys = (file, f"{file}::{function}", f"{file}::{function}[{'-'.join(ids)}]")
    if any(key in ONE_LAYOUT for key in keys):
        return DEFAULT_LAYOUT
    return next((TOOL_LAYOUT[key] for key in keys if key in TOOL_LAYOUT), None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselects the other-layout copy of the tests that run in one layout (unless --all-layouts)."""
    if config.getoption("--all-layouts"):
        return
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        layout = callspec.params.get("cluster_layout") if callspec is not None else None
        kept = kept_layout(item, layout) if layout is not None else None
        if kept is not None and layout != kept:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(autouse=True, params=["sharded", "split"])
def cluster_layout(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs every integration test once per layout: msg, biz and router of a shard linked in-process, or
    every link over TCP (runtime.cluster.layout)."""
    global _default_layout
    _default_layout = str(request.param)
    try:
        yield _default_layout
    finally:
        _default_layout = DEFAULT_LAYOUT


@pytest.fixture
def backend_storage(storage_backend: str, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Runs the test once per backend: clusters and seeding without an explicit storage section use it."""
    global _default_storage
    section = backend_section(storage_backend, request)
    _default_storage = section
    try:
        yield section
    finally:
        _default_storage = {"backend": "sqlite"}


@pytest.fixture
def with_cluster(tmp_path: Path, storage_backend: str, request: pytest.FixtureRequest) -> WithCluster:
    """Runs `async body(cluster)` against a fresh cluster, once per storage backend."""
    return WithCluster(tmp_path, backend_section(storage_backend, request))
