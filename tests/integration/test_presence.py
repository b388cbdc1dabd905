"""Presence with bounded fan-out, on a real cluster (2 msg servers, 2 routers, biz, SQLite) over loopback:
a storm of status changes reaches PC clients as the latest state per user, coalesced per interval; the frames
N logins cost are bounded by recipients x flushes; the audience follows the spec's policy; status queries stay
exact."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from generated.teamtalk.registry import REGISTRY
from runtime.registry import Registry
from tests.integration.conftest import (
    ANDROID,
    NAMES,
    WINDOWS,
    Client,
    TestCluster,
    seed_users,
)
from tests.integration.file_support import FileCluster, run_file_cluster
from tests.integration.gateway_support import GATEWAY, WebClient, wait_gateway

POLICY: Any = REGISTRY.presence
INTERVAL = POLICY["coalesce_ms"] / 1000.0
ONLINE, OFFLINE = POLICY["online"], POLICY["offline"]


def test_storm_arrives_as_latest_state_per_user_coalesced(with_cluster: Callable[..., None]) -> None:
    async def body(c: TestCluster) -> None:
        watchers = [await c.login(NAMES[i], i % 2, WINDOWS) for i in range(4)]
        phone = await c.login(NAMES[4], 0, ANDROID)
        for w in watchers:
            await w.wait_presence(watchers[-1].user_id, ONLINE)
        seen_before = {w.name: len(w.presence_frames()) for w in watchers}
        storm = NAMES[10:22]
        start = time.monotonic()
        # Three rounds within a few intervals: all log in, all log out, the even ones log in again.
        first = await asyncio.gather(*(c.login(n, i % 2, WINDOWS) for i, n in enumerate(storm)))
        for client in first:
            await client.close()
        again = await asyncio.gather(*(c.login(n, i % 2, WINDOWS) for i, n in enumerate(storm) if i % 2 == 0))
        ended = time.monotonic()
        changes = len(first) * 2 + len(again)
        final = {c.users[n]: ONLINE if i % 2 == 0 else OFFLINE for i, n in enumerate(storm)}

        # Status queries are answered from the router's table at once, not held like pushes.
        stat = await watchers[0].call(
            "CID_BUDDY_LIST_USERS_STATUS_REQUEST", user_id=0, user_id_list=sorted(final)
        )
        queried = {s.user_id: s.status for s in stat.user_stat_list}
        offline_seen = {uid for uid, status in queried.items() if status == OFFLINE}
        assert {uid for uid, s in final.items() if s == ONLINE} <= {
            uid for uid, status in queried.items() if status == ONLINE
        }
        assert offline_seen <= {uid for uid, s in final.items() if s == OFFLINE}

        # The latest state of every storm user, within the router's and the msg server's intervals.
        await asyncio.gather(*(w.wait_view(final, timeout=2 * INTERVAL + 5.0) for w in watchers))
        converged = time.monotonic() - ended
        print(f"storm converged {converged:.3f} s after the last change")
        assert converged <= 2 * INTERVAL + 1.0, converged
        for w in watchers:
            frames = w.presence_frames()[seen_before[w.name] :]
            span = frames[-1] - start
            # At most one flush per interval (one frame each: a batch from two users on), far fewer than the
            # changes a per-change broadcast would push.
            assert len(frames) <= span / INTERVAL + 2, (w.name, len(frames), span)
            assert len(frames) < changes / 2, (w.name, len(frames), changes)
            gaps = [b - a for a, b in itertools.pairwise(frames)]
            assert all(g >= INTERVAL - 0.2 for g in gaps), gaps
        assert phone.presence() == []  # the bundled policy: PC clients only

    with_cluster(body)


async def _wait_quiet(c: TestCluster, clients: list[Client], online: set[int], timeout: float = 20.0) -> None:
    """Until every router knows all `online` users, nothing is held by any coalescer, every presence relay a
    router sent reached its msg server, and every presence frame a msg server pushed reached its client."""
    routers, msgs = c.services("router"), c.services("msg")
    deadline = time.monotonic() + timeout

    def quiet() -> bool:
        if not all(all(r.table.pc_online(uid) for uid in online) for r in routers):
            return False
        if any(len(r._presence_out.coalescer) for r in routers):
            return False
        if any(len(m.presence.flusher.coalescer) for m in msgs):
            return False
        sent = sum(r.m_presence_frames.value for r in routers)
        if sent != sum(m.presence.m_relays_in.value for m in msgs):
            return False
        pushed = sum(m.presence.m_frames.value for m in msgs)
        return pushed == sum(len(cl.presence_frames()) for cl in clients)

    while not quiet():
        assert time.monotonic() < deadline, "presence did not settle"
        await asyncio.sleep(0.02)


def _login_storm(data_dir: Path, n: int) -> tuple[int, float, list[int]]:
    """n PC logins at once over two msg servers; (frames all clients received, seconds from the first login
    to the last frame, frames per client)."""

    async def main() -> tuple[int, float, list[int]]:
        users = await seed_users(data_dir, NAMES[:n])
        c = TestCluster(data_dir, users)
        await c.start()
        try:
            start = time.monotonic()
            clients = list(
                await asyncio.gather(*(c.login(name, i % 2, WINDOWS) for i, name in enumerate(NAMES[:n])))
            )
            await _wait_quiet(c, clients, set(users.values()))
            per_client = [len(cl.presence_frames()) for cl in clients]
            last = max(t for cl in clients for t in cl.presence_frames())
            return sum(per_client), last - start, per_client
        finally:
            await c.stop()

    return asyncio.run(main())


def test_frames_for_n_logins_are_bounded_by_recipients_times_flushes(tmp_path: Path) -> None:
    results = {}
    for n in (20, 40):
        frames, span, per_client = _login_storm(tmp_path / f"n{n}", n)
        flushes = math.floor(span / INTERVAL) + 1  # flushes one recipient can get in that span
        assert max(per_client) <= flushes + 1, (n, per_client, span)
        assert frames <= n * (flushes + 1), (n, frames, span)
        results[n] = (frames, span)
    # A broadcast per login would push every online PC one frame per login: n (n + 1) / 2 frames.
    frames_2n = results[40][0]
    assert frames_2n < 40 * 41 / 2 / 2, results
    print(f"presence frames: {results}")


def _registry(**policy: Any) -> Registry:
    """The bundled registry under another presence policy (the keys given replace the bundled ones)."""
    presence = {**POLICY, **policy}
    return REGISTRY.derive(presence=presence)


def test_subscribers_audience_comes_from_the_spec_policy(tmp_path: Path) -> None:
    """The same cluster under a policy with audience `subscribers`: a client hears only of the users whose
    status it asked for."""
    registry = _registry(audience=("subscribers",), coalesce_ms=200)

    async def main() -> None:
        users = await seed_users(tmp_path, NAMES[:6])
        c = TestCluster(tmp_path, users, registry=registry)
        await c.start()
        try:
            watcher = await c.login(NAMES[0], 0, WINDOWS)
            other = await c.login(NAMES[1], 1, WINDOWS)  # asks about nobody
            b, x = users[NAMES[2]], users[NAMES[3]]
            stat = await watcher.call("CID_BUDDY_LIST_USERS_STATUS_REQUEST", user_id=0, user_id_list=[b])
            assert [(s.user_id, s.status) for s in stat.user_stat_list] == [(b, OFFLINE)]
            await c.login(NAMES[3], 0, WINDOWS)  # x: nobody subscribed
            await c.login(NAMES[2], 0, WINDOWS)  # b: the watcher subscribed
            await watcher.wait_presence(b, ONLINE)
            assert watcher.presence(x) == [] and watcher.presence(other.user_id) == []
            assert other.presence() == []
        finally:
            await c.stop()

    asyncio.run(main())



def test_contacts_audience_follows_the_recent_sessions(tmp_path: Path) -> None:
    """Audience `contacts`: a client hears of the peers of the one-to-one sessions in the recent-session list
    it fetched, of nobody else."""
    registry = _registry(audience=("contacts",), coalesce_ms=200)

    async def main() -> None:
        users = await seed_users(tmp_path, NAMES[:6])
        c = TestCluster(tmp_path, users, registry=registry)
        await c.start()
        try:
            watcher = await c.login(NAMES[0], 0, WINDOWS)
            peer, stranger = users[NAMES[2]], users[NAMES[3]]
            ack = await watcher.text(peer, b"hello")  # a one-to-one session with the peer, stored
            assert ack.msg_id > 0
            recent = await watcher.call(
                "CID_BUDDY_LIST_RECENT_CONTACT_SESSION_REQUEST", user_id=0, latest_update_time=0
            )
            assert peer in {s.session_id for s in recent.contact_session_list}
            await c.login(NAMES[3], 1, WINDOWS)  # the stranger: no session with the watcher
            await c.login(NAMES[2], 1, WINDOWS)  # the peer
            await watcher.wait_presence(peer, ONLINE)
            assert watcher.presence(stranger) == []
        finally:
            await c.stop()

    asyncio.run(main())

def _web_presence(web: WebClient) -> list[tuple[int, str, dict[str, Any]]]:
    """(index, type, data) of the presence events a long-poll client got."""
    kinds = ("CID_BUDDY_LIST_STATUS_NOTIFY", "CID_BUDDY_LIST_USERS_STATUS_RESPONSE")
    return [(i, e["type"], e["data"]) for i, e in enumerate(web.events) if e["type"] in kinds]


def _web_view(web: WebClient) -> dict[int, str]:
    view: dict[int, str] = {}
    for _, kind, data in _web_presence(web):
        stats = [data["user_stat"]] if kind == "CID_BUDDY_LIST_STATUS_NOTIFY" else data["user_stat_list"]
        view.update({int(s["user_id"]): s["status"] for s in stats})
    return view


def test_gateway_sessions_get_the_storm_coalesced(tmp_path: Path) -> None:
    async def body(c: FileCluster) -> None:
        addr = await wait_gateway(c)
        web = await WebClient.login(addr, NAMES[30])
        start = time.monotonic()
        storm = await asyncio.gather(*(c.login(n, i % 2, WINDOWS) for i, n in enumerate(NAMES[31:43])))
        wanted = {cl.user_id for cl in storm}
        deadline = time.monotonic() + 2 * INTERVAL + 8.0
        while not all(_web_view(web).get(uid) == "USER_STATUS_ONLINE" for uid in wanted):
            assert time.monotonic() < deadline, _web_view(web)
            await web.poll(timeout=1.0)
        events = _web_presence(web)
        assert len(events) <= (time.monotonic() - start) / INTERVAL + 2, events
        assert len(events) < len(wanted)  # coalesced: fewer events than changes
        for _, kind, data in events:
            if kind == "CID_BUDDY_LIST_USERS_STATUS_RESPONSE":
                assert data["user_id"] == web.user_id  # a batch names its recipient

    asyncio.run(run_file_cluster(tmp_path, body, services=dict(GATEWAY)))
