"""Integration: long-poll clients get a resumption ticket at login and log in with it; logout and kick
revoke it; refusals say which kind."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.http_support import post_json
from tests.integration.file_support import FileCluster, run_file_cluster
from tests.integration.gateway_support import GATEWAY, WebClient, wait_gateway

pytestmark = pytest.mark.integration


async def ticket_login(
    addr: tuple[str, int], ticket: str, client_type: int = 1
) -> tuple[int, dict[str, Any]]:
    rsp = await post_json(*addr, "/api/login", {"ticket": ticket, "client_type": client_type})
    doc: dict[str, Any] = rsp.json()
    return rsp.status, doc


def test_gateway_ticket_login_revocation_and_refusals(tmp_path: Path) -> None:
    async def body(c: FileCluster) -> None:
        addr = await wait_gateway(c)
        web = await WebClient.login(addr, "user30")
        ticket = web.login_doc["resume_ticket"]
        assert ticket and web.login_doc["ticket_expires"] > 0
        # Resume: a new session for the same user, and the next ticket.
        status, doc = await ticket_login(addr, ticket)
        assert status == 200 and doc["error_code"] == 0 and doc["user_id"] == web.user_id
        successor = doc["resume_ticket"]
        assert successor and successor != ticket
        # The first login's session was kicked by the resumed one (same client class); the new one works.
        (gw,) = c.services("gateway")
        assert gw.sessions.get(web.token) is None and gw.sessions.get(doc["token"]) is not None
        # Refusals: replay, wrong device, garbage, not base64.
        for presented, client_type, expected in [
            (ticket, 1, "TICKET_REVOKED"),
            (successor, 17, "TICKET_WRONG_DEVICE"),
            ("AAAA", 1, "TICKET_MALFORMED"),
            (successor[:-2] + ("A" if successor[-2] != "A" else "B") + successor[-1], 1, "TICKET_FORGED"),
        ]:
            status, doc = await ticket_login(addr, presented, client_type)
            assert status == 401 and doc["error_code"] == 6 and doc["ticket_result"] == expected, doc
        status, doc = await ticket_login(addr, "not base64 !")
        assert status == 400 and doc["error_code"] == 1
        # The successor survived the refusals aimed at it (refused before it was consumed).
        status, doc = await ticket_login(addr, successor)
        assert status == 200 and doc["error_code"] == 0 and doc["user_id"] == web.user_id

    asyncio.run(run_file_cluster(tmp_path, body, services=dict(GATEWAY)))


def test_gateway_logout_and_kick_revoke_the_ticket(tmp_path: Path) -> None:
    async def body(c: FileCluster) -> None:
        addr = await wait_gateway(c)
        web = await WebClient.login(addr, "user31")
        ticket = web.login_doc["resume_ticket"]
        assert (await web.post("/api/logout", {})).json()["error_code"] == 0
        status, doc = await ticket_login(addr, ticket)
        assert status == 401 and doc["ticket_result"] == "TICKET_REVOKED"
        # A newer password login of the same class kicks the session; the kicked session's ticket dies.
        (biz,) = c.services("biz")
        kicked = await WebClient.login(addr, "user31")
        before = biz.metrics.snapshot()["ttgen_biz_ticket_revocations_total"]
        await WebClient.login(addr, "user31")
        async with asyncio.timeout(5):
            while biz.metrics.snapshot()["ttgen_biz_ticket_revocations_total"] == before:
                await asyncio.sleep(0.01)
        status, doc = await ticket_login(addr, kicked.login_doc["resume_ticket"])
        assert status == 401 and doc["ticket_result"] == "TICKET_REVOKED"

    asyncio.run(run_file_cluster(tmp_path, body, services=dict(GATEWAY)))
