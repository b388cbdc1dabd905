"""Integration: the login service: HTTP /msg_server, the legacy TCP lookup, least-loaded choice, queueing."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from generated.teamtalk.registry import REGISTRY
from runtime.client import ClientCore
from tests.integration.conftest import TestCluster, WithCluster

pytestmark = pytest.mark.integration


def endpoint(c: TestCluster, kind: str) -> tuple[str, int]:
    (login,) = c.services("login")
    (ep,) = [e for e in login.endpoints() if e.kind == kind]
    return ep.host, ep.port


async def http_get(
    c: TestCluster, target: str, extra: bytes = b"", *, raw: bool = False
) -> tuple[int, dict[str, str], Any]:
    """One HTTP/1.1 request; (status, headers, JSON body, or the raw body with `raw`)."""
    reader, writer = await asyncio.open_connection(*endpoint(c, "http"))
    writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\n".encode() + extra + b"Connection: close\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body if raw else json.loads(body) if body else None


def test_http_lookup_least_loaded_and_limits(with_cluster: WithCluster) -> None:
    async def body(c: TestCluster) -> None:
        status, _, doc = await http_get(c, "/msg_server")
        assert status == 200 and doc["code"] == 0
        assert set(doc) >= {
            "code",
            "msg",
            "priorIP",
            "backupIP",
            "port",
            "msfsPrior",
            "msfsBackup",
            "discovery",
        }
        assert isinstance(doc["port"], str)
        ports = {c.msg_port(0), c.msg_port(1)}
        assert int(doc["port"]) in ports
        # Load msg server 0 with three users: the least-loaded choice is then msg server 1.
        for name in ("user00", "user01", "user02"):
            await c.login(name, 0)
        (login,) = c.services("login")
        for _ in range(200):
            if sorted(s.cur_conn for s in login.servers.values()) == [0, 3]:
                break
            await asyncio.sleep(0.01)
        login.admission.tokens = login.admission.burst  # forget the assignments made by earlier lookups
        for s in login.servers.values():
            s.recent.clear()
        _, _, doc = await http_get(c, "/msg_server")
        assert int(doc["port"]) == c.msg_port(1)
        status, _, doc = await http_get(c, "/nope")
        assert status == 404 and doc["code"] == -1
        status, _, doc = await http_get(c, "/msg_server", extra=b"X-Pad: " + b"a" * 1000 + b"\r\n")
        assert status == 431 and doc == {"code": -1, "msg": "request too large"}
        # One header line over the limit is refused by the HTTP parser itself, before any handler.
        status, _, _ = await http_get(c, "/msg_server", extra=b"X-Pad: " + b"a" * 2000 + b"\r\n", raw=True)
        assert status == 400

    with_cluster(body)


def test_http_lookup_runs_on_the_shared_http_server_with_logins_limits(
    with_cluster: WithCluster,
) -> None:
    async def body(c: TestCluster) -> None:
        (login,) = c.services("login")
        assert (login.http.max_line, login.http.max_headers, login.http.idle_timeout) == (1024, 16, 60.0)
        # A head just over 1 KiB is refused (JSON, like every refusal); one under it is answered.
        status, _, doc = await http_get(c, "/msg_server", extra=b"X-Pad: " + b"a" * 1000 + b"\r\n")
        assert status == 431 and doc["code"] == -1
        status, _, doc = await http_get(c, "/msg_server", extra=b"X-Pad: " + b"a" * 900 + b"\r\n")
        assert status == 200 and doc["code"] == 0
        reader, writer = await asyncio.open_connection(*endpoint(c, "http"))
        writer.write(b"POST /msg_server HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        raw = await asyncio.wait_for(reader.read(), 5)  # refused, then closed
        writer.close()
        head, _, payload = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 405") and json.loads(payload)["code"] == -1

    with_cluster(body)


def test_legacy_tcp_lookup_answers_and_closes(with_cluster: WithCluster) -> None:
    async def body(c: TestCluster) -> None:
        host, port = endpoint(c, "client")
        core = ClientCore(REGISTRY, host=host, port=port, reconnect=False)
        await core.connect()
        rsp: Any = await core.call(
            "CID_LOGIN_REQ_MSGSERVER", REGISTRY.by_name("CID_LOGIN_REQ_MSGSERVER").message_class()
        )
        assert rsp.result_code == 0 and rsp.port in {c.msg_port(0), c.msg_port(1)}
        await asyncio.wait_for(asyncio.shield(core.link.closed), 5)  # type: ignore[union-attr]
        await core.close()

    with_cluster(body)


def test_login_storm_is_queued_with_position_and_retry_after(with_cluster: WithCluster) -> None:
    async def body(c: TestCluster) -> None:
        granted = [await http_get(c, "/msg_server") for _ in range(2)]
        assert all(doc["code"] == 0 for _, _, doc in granted)
        _, headers, first = await http_get(c, "/msg_server")
        _, _, second = await http_get(c, "/msg_server")
        assert first["code"] == 2 and first["queuePosition"] == 1 and first["retryAfterMs"] > 0
        assert second["expectedWaitMs"] > first["expectedWaitMs"] > 0
        assert second["queuePosition"] == 2 and int(headers["Retry-After"]) >= 1
        (login,) = c.services("login")
        login.admission.tokens = 1.0  # one admission becomes available: it goes to the head of the queue
        _, _, jumped = await http_get(c, "/msg_server")
        assert jumped["code"] == 2  # a newcomer does not jump the queue
        _, _, head = await http_get(c, f"/msg_server?ticket={first['queueTicket']}")
        assert head["code"] == 0 and int(head["port"]) in {c.msg_port(0), c.msg_port(1)}
        # The extension command answers the same way over TCP.
        host, port = endpoint(c, "client")
        core = ClientCore(REGISTRY, host=host, port=port, reconnect=False)
        await core.connect()
        rsp: Any = await core.call(
            "CID_EXT_LOGIN_QUEUE_REQ",
            REGISTRY.by_name("CID_EXT_LOGIN_QUEUE_REQ").message_class(client_type=1),
        )
        assert (
            rsp.result_code == 2 and rsp.queue_position >= 1 and rsp.retry_after_ms > 0 and rsp.queue_ticket
        )
        assert rsp.expected_wait_ms > 0
        await core.close()

    with_cluster(body, login={"admission_rate": 0.01, "admission_burst": 2})


def test_a_lost_msg_server_is_no_longer_handed_out(with_cluster: WithCluster) -> None:
    async def body(c: TestCluster) -> None:
        survivor = c.msg_port(0)
        await c.stop_instance("msg", 1)
        (login,) = c.services("login")
        for _ in range(300):
            if len(login.servers) == 1:
                break
            await asyncio.sleep(0.01)
        assert [s.port for s in login.servers.values()] == [survivor]
        ports = {int((await http_get(c, "/msg_server"))[2]["port"]) for _ in range(5)}
        assert ports == {survivor}

    with_cluster(body)
