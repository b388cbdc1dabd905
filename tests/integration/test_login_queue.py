"""Integration: the login queue paced by measured login throughput, and the bounded password-verify pool: a
crowd of shipped clients (through the login service) is queued with positions and expected waits, and every
one of them gets in; a saturated verify pool answers "busy" and the clients come back until they are in."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from generated.teamtalk.registry import REGISTRY
from runtime.auth import PasswordHasher
from runtime.client import ClientCore
from runtime.client_login import SessionLogin
from tests.integration.conftest import IOS, NAMES, PASSWORD, TestCluster, md5hex

pytestmark = pytest.mark.integration


def login_url(c: TestCluster) -> str:
    (login,) = c.services("login")
    (ep,) = [e for e in login.endpoints() if e.kind == "http"]
    return f"http://{ep.host}:{ep.port}/msg_server"


async def crowd(
    c: TestCluster, names: list[str], places: dict[str, list[tuple[int, float]]]
) -> list[tuple[ClientCore, SessionLogin]]:
    """Every user logs in at once through the login service; `places` collects each one's queue places."""

    async def one(name: str) -> tuple[ClientCore, SessionLogin]:
        seen = places.setdefault(name, [])
        core = ClientCore(
            REGISTRY,
            login_url=login_url(c),
            reconnect=False,
            on_queue=lambda position, wait: seen.append((position, wait)),
            queue_timeout=60,
        )
        session = SessionLogin(core, name, PASSWORD, use_tickets=False, busy_timeout=60)
        await session.login()
        return core, session

    return list(await asyncio.wait_for(asyncio.gather(*(one(n) for n in names)), 90))


def test_queue_tells_position_and_admits_everyone(with_cluster: Callable[..., None]) -> None:
    async def body(c: TestCluster) -> None:
        names = NAMES[:16]
        places: dict[str, list[tuple[int, float]]] = {}
        (login,) = c.services("login")
        logged_in = await crowd(c, names, places)
        assert [s.user_id for _, s in logged_in] == [c.users[n] for n in names]  # nobody dropped
        queued = {n: p for n, p in places.items() if p}
        # At most 2 unfinished admissions at a time: the rest of the 16 waited in line.
        assert len(queued) >= 8, places
        assert max(pos for p in queued.values() for pos, _ in p) >= 5
        for name, seen in queued.items():
            positions = [pos for pos, _ in seen]
            assert all(pos >= 1 for pos in positions), (name, seen)
            assert positions == sorted(positions, reverse=True), (name, seen)  # a place only improves
            assert all(wait > 0 for _, wait in seen), (name, seen)
        assert not login.admission.queue  # everyone left the queue by getting in
        assert login.m_queued.value >= len(queued)
        for core, session in logged_in:
            session.close()
            await core.close()

    with_cluster(body, login={"admission_window_min": 2, "admission_target": 0.01})


def test_saturated_verify_pool_answers_busy_and_clients_get_in(with_cluster: Callable[..., None]) -> None:
    async def body(c: TestCluster) -> None:
        (biz,) = c.services("biz")
        names = NAMES[20:32]
        cores: list[ClientCore] = []
        sessions: list[SessionLogin] = []
        notes: list[str] = []
        for name in names:
            core = ClientCore(REGISTRY, host="127.0.0.1", port=c.msg_port(0), reconnect=False)
            cores.append(core)
            sessions.append(SessionLogin(core, name, PASSWORD, use_tickets=False, on_status=notes.append))
        infos: list[Any] = await asyncio.wait_for(asyncio.gather(*(s.login() for s in sessions)), 90)
        assert [i.user_id for i in infos] == [c.users[n] for n in names]
        busy = biz.metrics.snapshot()["ttgen_biz_logins_busy_total"]
        assert busy >= 1 and biz.auth.pool.refused >= 1  # one worker, no queue: 12 at once cannot all fit
        assert sum("busy" in n for n in notes) >= 1
        assert biz.auth.pool.pending == 0 and biz.health()["verify"]["workers"] == 1
        for s, core in zip(sessions, cores, strict=True):
            s.close()
            await core.close()

    auth = {"verify_workers": 1, "verify_queue": 0, "time_cost": 1, "memory_cost": 1024}
    with_cluster(body, biz={"auth": auth})


def test_a_password_storm_does_not_stall_delivery(with_cluster: Callable[..., None]) -> None:
    """Sixteen password logins at the default argon2id policy queue up in biz's one-worker pool; a message
    sent meanwhile is stored, acknowledged and delivered while the pool is still busy with the storm."""

    async def body(c: TestCluster) -> None:
        (biz,) = c.services("biz")
        alice, bob = await c.login("user40", 0), await c.login("user41", 1)
        strong = PasswordHasher().hash_plaintext(PASSWORD)  # the default policy, as biz's: no re-hash
        names = NAMES[42:58]
        for name in names:
            await biz.storage.set_password_hash(c.users[name], strong)

        async def password_login(name: str) -> int:
            core = await c.connect(0)
            try:
                req = REGISTRY.by_name("CID_LOGIN_REQ_USERLOGIN").message_class(
                    user_name=name, password=md5hex(PASSWORD), online_status=1, client_type=IOS
                )
                res: Any = await core.call("CID_LOGIN_REQ_USERLOGIN", req, timeout=60)
                return int(res.result_code)
            finally:
                await core.close()

        storm = [asyncio.ensure_future(password_login(n)) for n in names]
        async with asyncio.timeout(10):
            while biz.auth.pool.pending < 8:
                await asyncio.sleep(0.005)
        ack = await alice.text(bob.user_id, b"during the storm")
        assert ack.msg_id > 0
        await bob.wait_for("CID_MSG_DATA", lambda m: m.msg_data == b"during the storm")
        assert biz.auth.pool.pending > 0  # delivered before the storm was verified
        assert await asyncio.wait_for(asyncio.gather(*storm), 60) == [0] * len(names)

    with_cluster(body, biz={"auth": {"verify_workers": 1, "max_pending_per_address": 100}})


def test_after_a_restart_everyone_is_back_through_the_queue_with_tickets(
    with_cluster: Callable[..., None],
) -> None:
    """A small reconnect storm: the whole cluster restarts under 24 connected shipped clients; each comes back
    through the login service (queued, at most 4 unfinished at a time) and logs in with its ticket."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def body(c: TestCluster) -> None:
        url = f"http://127.0.0.1:{port}/msg_server"
        places: list[int] = []
        cores, sessions = [], []
        for name in NAMES[:24]:
            core = ClientCore(
                REGISTRY,
                login_url=url,
                backoff_initial=0.05,
                backoff_max=0.5,
                on_queue=lambda position, _wait: places.append(position),
            )
            cores.append(core)
            sessions.append(SessionLogin(core, name, PASSWORD))
        await asyncio.wait_for(asyncio.gather(*(s.login() for s in sessions)), 60)
        assert all(s.last_method == "password" and s.ticket for s in sessions)
        places.clear()
        await c.restart()
        (biz,) = c.services("biz")

        def back() -> bool:
            return all(
                core.connected and s.last_method == "ticket" for core, s in zip(cores, sessions, strict=True)
            )

        async with asyncio.timeout(60):
            while not back():
                await asyncio.sleep(0.02)
        assert biz.metrics.snapshot()["ttgen_biz_ticket_logins_total"] == len(sessions)
        assert not any(s.ticket_refusals for s in sessions)
        assert places and max(places) >= 2  # the crowd was queued on the way back
        for s, core in zip(sessions, cores, strict=True):
            s.close()
            await core.close()

    with_cluster(body, login={"http_port": port, "admission_window_min": 4, "admission_target": 0.01})
