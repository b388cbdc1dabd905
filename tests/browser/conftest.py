"""Browser fixtures: a real cluster (login, msg, router, biz, blob store, gateway) with the demo users,
started in a background thread with its own event loop; a cuttable TCP proxy in front of the gateway (to take
the page's connection away and give it back); headless Chromium from Debian's packages driven through its
chromedriver.

Outside CI the tests skip, with the reason, when chromium, chromedriver or selenium is missing; under CI
(`CI=true`, where `./dev test` installs them) they fail instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from generated.teamtalk import servers as tt_servers
from generated.teamtalk.registry import REGISTRY
from runtime.auth import HashPolicy
from runtime.client import ClientCore
from runtime.cluster.config import parse_config
from runtime.cluster.discovery import RunDirDiscovery
from runtime.cluster.runner import ClusterRunner
from runtime.services.biz.storage_open import storage_from_config
from runtime.storage import GroupType, NewUser
from ttgen.commands.chat import ChatSession
from ttgen.demo import DEMO_PASSWORD, seed_demo_data
from ttgen.stack import load_stack

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts" / "browser"
CHROMIUM = os.environ.get("TTGEN_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("TTGEN_CHROMEDRIVER", "/usr/bin/chromedriver")
AUTH = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}
T = TypeVar("T")


def _missing() -> str:
    """Why the browser tests cannot run here ("" when they can)."""
    for tool in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(tool) and os.access(tool, os.X_OK)) and shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install -y chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (./dev setup)"
    return ""


@pytest.fixture(scope="session", autouse=True)
def _browser_available() -> None:
    reason = _missing()
    if reason:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI must run the browser tests, but {reason}")
        pytest.skip(reason)


class LoopThread:
    """An asyncio loop in a thread: the cluster and the TCP client live there while selenium blocks here."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="browser-cluster", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class CutProxy:
    """A TCP proxy on 127.0.0.1 in front of the gateway: `cut()` drops every connection and refuses new ones
    (as a lost network does), `restore()` lets them through again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.open = True
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}

    async def cut(self) -> None:
        self.open = False
        for writer in list(self._writers):
            transport = writer.transport
            transport.abort()

    async def restore(self) -> None:
        self.open = True

    async def close(self) -> None:
        await self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@dataclass
class WebCluster:
    """The running cluster: the page's address (through the proxy), the gateway's, and the TCP side."""

    loop: LoopThread
    runner: ClusterRunner
    data_dir: Path
    proxy: CutProxy
    gateway: tuple[str, int]
    users: dict[str, int] = field(default_factory=dict)
    sessions: list[ChatSession] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.proxy.port}/"

    def tcp_login(self, user: str) -> ChatSession:
        """A TCP client (the generated Python client) logged in as `user`."""

        async def login() -> ChatSession:
            found = RunDirDiscovery(self.runner.config.run_dir).endpoints("login", "http")
            url = f"http://{found[0].host}:{found[0].port}/msg_server"
            core = ClientCore(REGISTRY, login_url=url)
            session = ChatSession(load_stack("teamtalk"), core, lambda _l: None)
            await session.login(user, DEMO_PASSWORD)
            return session

        session = self.loop.run(login())
        self.sessions.append(session)
        return session

    def call(self, fn: Callable[[], Awaitable[T]], timeout: float = 20.0) -> T:
        async def run() -> T:
            return await fn()

        return self.loop.run(run(), timeout)


# A department, a user and a group whose names are markup: the page must show them as text.
HOSTILE_DEPT = '<svg onload="window.__pwned=5">Sales'
HOSTILE_NICK = '<img src=x onerror="window.__pwned=3">Mallory'
HOSTILE_GROUP = "<script>window.__pwned=4</script>ops"


async def _seed(data_dir: Path, storage_cfg: dict[str, Any]) -> dict[str, int]:
    storage = storage_from_config(storage_cfg, data_dir)
    await storage.open()
    try:
        await seed_demo_data(storage, lambda _line: None, HashPolicy(**AUTH))
        ids = {}
        for name in ("alice", "bob", "carol"):
            user = await storage.get_user_by_login(name)
            assert user is not None
            ids[name] = user.id
        dept = await storage.create_department(HOSTILE_DEPT, priority=1)
        mallory = await storage.create_user(
            NewUser(login_name="mallory", nick=HOSTILE_NICK, department_id=dept.id, password_hash="x" * 16)
        )
        ids["mallory"] = mallory.id
        await storage.create_group(ids["alice"], HOSTILE_GROUP, GroupType.NORMAL, [ids["alice"], mallory.id],
                                   by_admin=True)
        return ids
    finally:
        await storage.close()


@pytest.fixture(scope="module")
def web_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebCluster]:
    data_dir = tmp_path_factory.mktemp("web-cluster")
    storage_cfg = {"backend": "sqlite", "encrypt_at_rest": True}
    raw = {
        "data_dir": str(data_dir),
        "host": "127.0.0.1",
        "storage": storage_cfg,
        "services": {
            "login": {"instances": 1, "http_port": 0, "client_port": 0, "internal_port": 0},
            "msg": {"instances": 1, "client_port": 0},
            "router": {"instances": 1},
            "biz": {"instances": 1, "auth": {**AUTH, "max_address_failures": 100}},
            "file": {"instances": 0},
            "storage": {"instances": 1},
            # Two browsers, their page loads and the test share 127.0.0.1: one address is not one flooder.
            "gateway": {"instances": 1, "http_port": 0, "ip_rate": 500, "ip_burst": 1000},
        },
        "drain_timeout": 1.0,
    }
    loop = LoopThread()
    runner = ClusterRunner(parse_config(raw), REGISTRY, tt_servers, console=lambda _s: None)
    proxy: CutProxy | None = None
    try:
        users = loop.run(_seed(data_dir, storage_cfg))
        loop.run(runner.start(), 60)
        gateway = next(
            (e.host, e.port) for e in runner.endpoints() if e.service == "gateway" and e.kind == "http"
        )
        proxy = CutProxy(gateway)
        loop.run(proxy.start())
        cluster = WebCluster(loop, runner, data_dir, proxy, gateway, users)
        _wait_http(cluster.url + "api/unread", time.monotonic() + 20)
        yield cluster
        for session in cluster.sessions:
            with contextlib.suppress(Exception):
                loop.run(session.close(), 10)
    finally:
        if proxy is not None:
            with contextlib.suppress(Exception):
                loop.run(proxy.close(), 10)
        with contextlib.suppress(Exception):
            loop.run(runner.stop(), 30)
        loop.close()


def _wait_http(url: str, deadline: float) -> None:
    """Until the gateway answers HTTP (any status: 401 is fine) and has biz and a router."""
    import urllib.error
    import urllib.request

    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()  # a loopback address of the test
            return
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                return
            last: Exception = exc
        except OSError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"the gateway did not answer at {url}: {last}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def browsers() -> Iterator[Callable[[], Any]]:
    """A factory of headless Chromium sessions, all quit at the end of the module."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    made: list[Any] = []

    def make() -> Any:
        os.environ.setdefault("SE_OFFLINE", "true")  # selenium must never fetch a browser or a driver
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which(CHROMIUM) or CHROMIUM
        for arg in (
            "--headless=new",
            "--no-sandbox",  # the tests may run as root (CI)
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,860",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--lang=en-US",
        ):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(executable_path=shutil.which(CHROMEDRIVER) or CHROMEDRIVER)
        driver = webdriver.Chrome(service=service, options=options)
        driver.set_page_load_timeout(30)
        made.append(driver)
        return driver

    yield make
    for driver in made:
        with contextlib.suppress(Exception):
            driver.quit()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    """Where screenshots go (git-ignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
