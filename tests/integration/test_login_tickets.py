"""Integration: resumption tickets on a real cluster: ticket login, every refusal kind (with its result code
and its counter), revocation on logout, kick and password change, and survival across a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from generated.teamtalk.registry import REGISTRY
from runtime.auth import PasswordHasher
from runtime.auth.tickets import TicketError, TicketKey, TicketRefused
from runtime.client import ClientCore
from runtime.client_login import SessionLogin
from tests.integration.conftest import ANDROID, AUTH, IOS, PASSWORD, WINDOWS, TestCluster, md5hex

pytestmark = pytest.mark.integration

CODES = {
    v.name: v.number
    for v in REGISTRY.by_name("CID_EXT_TICKET_LOGIN_RSP")
    .message_class.DESCRIPTOR.fields_by_name["result_code"]
    .enum_type.values
}


def new(command: str, **fields: Any) -> Any:
    return REGISTRY.by_name(command).message_class(**fields)


async def password_login(c: TestCluster, name: str, client_type: int = WINDOWS, index: int = 0) -> ClientCore:
    core = await c.connect(index)
    res: Any = await core.call(
        "CID_LOGIN_REQ_USERLOGIN",
        new(
            "CID_LOGIN_REQ_USERLOGIN",
            user_name=name,
            password=md5hex(PASSWORD),
            online_status=1,
            client_type=client_type,
        ),
    )
    assert res.result_code == 0, res
    return core


async def get_ticket(core: ClientCore, device_id: bytes = b"") -> Any:
    req = new("CID_EXT_RESUME_TICKET_REQ", device_id=device_id)
    rsp: Any = await core.call("CID_EXT_RESUME_TICKET_REQ", req)
    assert rsp.result_code == CODES["TICKET_OK"] and len(rsp.ticket) == 69, rsp
    assert rsp.expire_time > time.time()
    return rsp


async def ticket_login(
    c: TestCluster, ticket: bytes, client_type: int = WINDOWS, index: int = 1, device_id: bytes = b""
) -> tuple[ClientCore, Any]:
    core = await c.connect(index)
    res: Any = await core.call(
        "CID_EXT_TICKET_LOGIN_REQ",
        new(
            "CID_EXT_TICKET_LOGIN_REQ",
            ticket=ticket,
            online_status=1,
            client_type=client_type,
            device_id=device_id,
        ),
    )
    return core, res


def biz_counter(c: TestCluster, name: str) -> float:
    (biz,) = c.services("biz")
    return float(biz.metrics.snapshot().get(f"ttgen_{name}", 0.0))


async def until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for a condition the cluster reaches asynchronously (polled; TimeoutError if it never holds)."""
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.01)


def test_ticket_login_and_every_refusal(with_cluster: Callable[..., None], tmp_path: Path) -> None:
    async def body(c: TestCluster) -> None:
        first = await password_login(c, "user01")
        issued = await get_ticket(first)
        # A reconnect on the other msg server presents the ticket: logged in, profile and successor returned.
        second, res = await ticket_login(c, issued.ticket)
        assert res.result_code == CODES["TICKET_OK"], res
        assert res.user_info.user_id == c.users["user01"] and res.online_status == 1
        assert len(res.ticket) == 69 and res.ticket != issued.ticket and res.expire_time > time.time()
        # The ticket login is a login: the older PC session was kicked, the new one works.
        await asyncio.wait_for(asyncio.shield(first.link.closed), 5)  # type: ignore[union-attr]
        rsp: Any = await second.call("CID_MSG_TIME_REQUEST", new("CID_MSG_TIME_REQUEST"))
        assert rsp.server_time > 0
        successor = bytes(res.ticket)

        refusals: list[tuple[str, bytes, int, bytes]] = [
            ("TICKET_REVOKED", bytes(issued.ticket), WINDOWS, b""),  # replayed: a ticket logs in once
            ("TICKET_MALFORMED", b"not a ticket", WINDOWS, b""),
            ("TICKET_FORGED", successor[:5] + bytes([successor[5] ^ 1]) + successor[6:], WINDOWS, b""),
            ("TICKET_FORGED", successor[:-1] + bytes([successor[-1] ^ 1]), WINDOWS, b""),
            ("TICKET_WRONG_DEVICE", successor, ANDROID, b""),  # issued to a PC
            ("TICKET_WRONG_DEVICE", successor, WINDOWS, b"another-device"),
        ]
        # Expired: a ticket signed with the cluster's own key whose expiry has passed.
        key = TicketKey((tmp_path / "ticket.key").read_bytes())
        (biz,) = c.services("biz")
        creds = await biz.storage.get_credentials_by_id(c.users["user01"])
        stale, _ = key.issue(
            user_id=c.users["user01"],
            client_type=WINDOWS,
            now=int(time.time()) - 1000,
            ttl=100,
            auth_time=int(time.time()) - 1000,
            max_age=10_000,
            password_hash=creds.password_hash,
        )
        refusals.append(("TICKET_EXPIRED", stale, WINDOWS, b""))
        for expected, ticket, client_type, device in refusals:
            core, res = await ticket_login(c, ticket, client_type, device_id=device)
            assert res.result_code == CODES[expected], (expected, res)
            assert res.result_string and not res.HasField("user_info") and not res.ticket
            # The connection stays open for a password login.
            pw: Any = await core.call(
                "CID_LOGIN_REQ_USERLOGIN",
                new(
                    "CID_LOGIN_REQ_USERLOGIN",
                    user_name="user02",
                    password=md5hex(PASSWORD),
                    online_status=1,
                    client_type=IOS,
                ),
            )
            assert pw.result_code == 0
            await core.close()
        for reason, count in [
            ("revoked", 1),
            ("malformed", 1),
            ("forged", 2),
            ("wrong_device", 2),
            ("expired", 1),
        ]:
            assert biz_counter(c, f"biz_ticket_refused_{reason}_total") == count, reason
        assert biz_counter(c, "biz_ticket_logins_total") == 1
        (msg1,) = [m for m in c.services("msg") if m.ctx.instance == 1]
        assert msg1.m_ticket_refused.value == len(refusals) and msg1.m_ticket_logins.value == 1
        # The successor survived the refusals aimed at it (refused before it was consumed).
        third, res = await ticket_login(c, successor, index=0)
        assert res.result_code == CODES["TICKET_OK"] and res.user_info.user_id == c.users["user01"]
        for core in (second, third):
            await core.close()

    with_cluster(body)


def test_tickets_are_revoked_on_logout_kick_and_password_change(with_cluster: Callable[..., None]) -> None:
    async def body(c: TestCluster) -> None:
        # Logout: the answer comes after the revocation is stored.
        core = await password_login(c, "user03")
        ticket = (await get_ticket(core)).ticket
        rsp: Any = await core.call("CID_LOGIN_REQ_LOGINOUT", new("CID_LOGIN_REQ_LOGINOUT"))
        assert rsp.result_code == 0
        replay, res = await ticket_login(c, ticket)
        assert res.result_code == CODES["TICKET_REVOKED"]
        await replay.close()

        # Kick by a newer login of the same class, on the other msg server: the kicked session's ticket dies.
        kicked = await password_login(c, "user04", index=0)
        ticket = (await get_ticket(kicked)).ticket
        revoked_before = biz_counter(c, "biz_ticket_revocations_total")
        newer = await password_login(c, "user04", index=1)
        await asyncio.wait_for(asyncio.shield(kicked.link.closed), 5)  # type: ignore[union-attr]
        await until(lambda: biz_counter(c, "biz_ticket_revocations_total") > revoked_before)
        replay, res = await ticket_login(c, ticket, index=0)
        assert res.result_code == CODES["TICKET_REVOKED"]
        await replay.close()
        # The newer session's own ticket is unaffected.
        fresh = (await get_ticket(newer)).ticket
        # A mobile kicking the PC revokes the PC's ticket too.
        revoked_before = biz_counter(c, "biz_ticket_revocations_total")
        mobile = await password_login(c, "user04", ANDROID, index=0)
        kick: Any = await mobile.call(
            "CID_LOGIN_REQ_KICKPCCLIENT", new("CID_LOGIN_REQ_KICKPCCLIENT", user_id=0)
        )
        assert kick.result_code == 0
        await asyncio.wait_for(asyncio.shield(newer.link.closed), 5)  # type: ignore[union-attr]
        await until(lambda: biz_counter(c, "biz_ticket_revocations_total") > revoked_before)
        replay, res = await ticket_login(c, fresh)
        assert res.result_code == CODES["TICKET_REVOKED"]
        await replay.close()

        # Password change (any tool writing the hash): every outstanding ticket of the user is void.
        ticket = (await get_ticket(mobile)).ticket
        (biz,) = c.services("biz")
        await biz.storage.set_password_hash(
            c.users["user04"], PasswordHasher(**AUTH).hash_plaintext("a new password")
        )
        replay, res = await ticket_login(c, ticket, ANDROID)
        assert res.result_code == CODES["TICKET_PASSWORD_CHANGED"]
        assert biz_counter(c, "biz_ticket_refused_password_changed_total") == 1
        for core in (replay, mobile):
            await core.close()

    with_cluster(body)


def test_tickets_and_revocations_survive_a_restart(with_cluster: Callable[..., None]) -> None:
    async def body(c: TestCluster) -> None:
        core = await password_login(c, "user05")
        kept = bytes((await get_ticket(core)).ticket)
        used = bytes((await get_ticket(core)).ticket)  # a renewal retires `kept`'s session id
        await core.close()
        await c.restart()  # same data dir: same ticket key, same revocation table
        replay, res = await ticket_login(c, kept)
        assert res.result_code == CODES["TICKET_REVOKED"]
        await replay.close()
        again, res = await ticket_login(c, used)
        assert res.result_code == CODES["TICKET_OK"] and res.user_info.user_id == c.users["user05"]
        await again.close()

    with_cluster(body)


def test_shipped_client_resumes_with_its_ticket(with_cluster: Callable[..., None]) -> None:
    async def body(c: TestCluster) -> None:
        statuses: list[str] = []
        core = ClientCore(
            REGISTRY, host="127.0.0.1", port=c.msg_port(0), backoff_initial=0.05, backoff_max=0.2
        )
        session = SessionLogin(core, "user06", PASSWORD, on_status=statuses.append)
        info = await session.login()
        assert info.user_id == c.users["user06"] and session.last_method == "password" and session.ticket
        first_ticket = session.ticket
        # The server drops the connection (msg 0 closes every client): the core reconnects, the session
        # logs in again with its ticket, not the password.
        (msg0,) = [m for m in c.services("msg") if m.ctx.instance == 0]
        logins_before = msg0.m_ticket_logins.value
        for states in list(msg0.sessions.values()):
            for st in states:
                st.link.close("test drops the connection")
        await until(lambda: msg0.m_ticket_logins.value > logins_before, timeout=10)
        await until(lambda: session.last_method == "ticket" and core.connected, timeout=10)
        assert session.ticket and session.ticket != first_ticket and not session.ticket_refusals
        rsp: Any = await core.call("CID_MSG_TIME_REQUEST", new("CID_MSG_TIME_REQUEST"))
        assert rsp.server_time > 0
        # Logout revokes the ticket the client held.
        held = session.ticket
        # The shipped client binds its tickets to a random device id of its own: a copied ticket is useless.
        assert len(session.device_id) == 16
        copied, res = await ticket_login(c, held)
        assert res.result_code == CODES["TICKET_WRONG_DEVICE"]
        await copied.close()
        await session.logout()
        replay, res = await ticket_login(c, held, device_id=session.device_id)
        assert res.result_code == CODES["TICKET_REVOKED"]
        await replay.close()
        session.close()
        await core.close()

    with_cluster(body)


def test_two_biz_instances_share_the_key_and_the_revocations(with_cluster: Callable[..., None]) -> None:
    async def body(c: TestCluster) -> None:
        biz0, biz1 = sorted(c.services("biz"), key=lambda b: b.ctx.instance)
        assert biz0.tickets is not biz1.tickets
        core = await password_login(c, "user07")
        ticket = bytes((await get_ticket(core)).ticket)
        # Either instance accepts the other's tickets (one key file), and a ticket used at one is refused at
        # the other (one table of used and revoked tickets, in the shared database).
        uid, _, _ = await biz1.tickets.verify(ticket, WINDOWS, b"")
        assert uid == c.users["user07"]
        with pytest.raises(TicketRefused) as refused:
            await biz0.tickets.verify(ticket, WINDOWS, b"")
        assert refused.value.reason is TicketError.REVOKED
        # A logout handled through whichever instance revokes for both.
        fresh = bytes((await get_ticket(core)).ticket)
        rsp: Any = await core.call("CID_LOGIN_REQ_LOGINOUT", new("CID_LOGIN_REQ_LOGINOUT"))
        assert rsp.result_code == 0
        for biz in (biz0, biz1):
            with pytest.raises(TicketRefused) as refused:
                await biz.tickets.verify(fresh, WINDOWS, b"")
            assert refused.value.reason is TicketError.REVOKED
        await core.close()

    with_cluster(body, biz={"instances": 2})


def test_a_connection_flooding_ticket_logins_is_closed_and_others_log_in(
    with_cluster: Callable[..., None],
) -> None:
    async def body(c: TestCluster) -> None:
        flood = await c.connect(0)
        junk = new("CID_EXT_TICKET_LOGIN_REQ", ticket=b"x" * 69, online_status=1, client_type=WINDOWS)
        for _ in range(20):
            await flood.send("CID_EXT_TICKET_LOGIN_REQ", junk)
        await asyncio.wait_for(asyncio.shield(flood.link.closed), 5)  # type: ignore[union-attr]
        # The connection was closed at the rate limit (1/s) after at most a burst of checks, each refused
        # before any storage work; nobody else noticed.
        await until(lambda: biz_counter(c, "biz_ticket_refused_malformed_total") >= 1)
        assert biz_counter(c, "biz_ticket_refused_malformed_total") <= 2
        core = await password_login(c, "user08")
        ticket = (await get_ticket(core)).ticket
        other, res = await ticket_login(c, ticket, index=0)
        assert res.result_code == CODES["TICKET_OK"]
        for conn in (core, other, flood):
            await conn.close()

    with_cluster(body)


def test_shipped_client_falls_back_to_the_password_when_its_ticket_is_refused(
    with_cluster: Callable[..., None],
) -> None:
    async def body(c: TestCluster) -> None:
        statuses: list[str] = []
        core = ClientCore(
            REGISTRY, host="127.0.0.1", port=c.msg_port(1), backoff_initial=0.05, backoff_max=0.2
        )
        session = SessionLogin(core, "user09", PASSWORD, on_status=statuses.append)
        await session.login()
        # The ticket's session is revoked behind the client's back (as a kick elsewhere would), then the
        # connection drops: the client presents the dead ticket, is refused, and logs in with the password.
        (biz,) = c.services("biz")
        (msg1,) = [m for m in c.services("msg") if m.ctx.instance == 1]
        (st,) = msg1.sessions[c.users["user09"]]
        await biz.tickets.revoke(st.ticket_session, c.users["user09"])
        logins_before = msg1.g_conns.value
        st.link.close("test drops the connection")
        await until(lambda: session.ticket_refusals == [CODES["TICKET_REVOKED"]], timeout=10)
        await until(lambda: "reconnected (password)" in statuses and core.connected and bool(session.ticket))
        assert any("ticket refused" in line for line in statuses)
        assert msg1.g_conns.value == logins_before  # logged in again, once
        rsp: Any = await core.call("CID_MSG_TIME_REQUEST", new("CID_MSG_TIME_REQUEST"))
        assert rsp.server_time > 0
        session.close()
        await core.close()

    with_cluster(body)
