"""Integration: internal listeners admit only peers that prove they hold the cluster secret."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from generated.teamtalk.registry import REGISTRY
from runtime.framing import encode_frame
from runtime.services.links import FLAG_RELAY, FLAG_REQUEST, Link, LinkAuth, NoRequests, pack_relay
from tests.integration.conftest import TestCluster
from tests.integration.file_support import run_file_cluster

pytestmark = pytest.mark.integration

INTERNAL = ("biz", "router", "login", "file")


def _internal(c: TestCluster, service: str) -> tuple[str, int]:
    (svc,) = c.services(service)[:1]
    (ep,) = [e for e in svc.endpoints() if e.kind == "internal"]
    return ep.host, ep.port


def _refused(c: TestCluster, service: str) -> float:
    svc = c.services(service)[0]
    return float(svc.metrics.snapshot().get("ttgen_link_auth_refused_total", 0))


def _forged_store(sender: int, to: int) -> bytes:
    """What a msg server sends biz to store a 1:1 message of `sender` (a request with a relay envelope)."""
    info = REGISTRY.by_name("CID_MSG_DATA")
    msg = info.message_class(
        from_user_id=sender, to_session_id=to, msg_id=0, create_time=0, msg_type=1, msg_data=b"forged"
    )
    body = pack_relay([sender], msg.SerializeToString())
    return encode_frame(info.service_id, info.command_id, 1, body, flag=FLAG_REQUEST | FLAG_RELAY)


async def _closed_without_answer(host: str, port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 10)  # until the server closes
    finally:
        writer.close()


def test_a_plain_socket_is_refused_before_any_command(tmp_path: Path) -> None:
    async def body(c: TestCluster) -> None:
        alice, bob = c.users["user00"], c.users["user01"]
        for service in INTERNAL:
            before = _refused(c, service)
            host, port = _internal(c, service)
            assert host == "127.0.0.1"
            got = await _closed_without_answer(host, port, _forged_store(alice, bob))
            # All the server ever sent was its HELLO (16-byte header + 20-byte body): no answer, no data.
            assert len(got) == 36 and got[16:20] == b"TTL1", (service, got)
            assert _refused(c, service) == before + 1, service
        # Nothing was stored "from alice".
        reader = await c.login("user01", 1)
        assert await reader.history(alice) == []
        # The secret and the run files that list the internal ports are for the cluster's user alone.
        assert (c.data_dir / "cluster.key").stat().st_mode & 0o777 == 0o600
        run_files = list((c.data_dir / "run").glob("*.json"))
        assert run_files and all(f.stat().st_mode & 0o777 == 0o600 for f in run_files)

    asyncio.run(run_file_cluster(tmp_path, body))


def test_a_peer_with_another_secret_is_refused_and_a_silent_one_times_out(
    with_cluster: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    import runtime.connection as connection

    async def body(c: TestCluster) -> None:
        host, port = _internal(c, "biz")
        loop = asyncio.get_running_loop()
        _, stranger = await loop.create_connection(
            lambda: Link(REGISTRY, NoRequests(), name="stranger", auth=LinkAuth(b"w" * 32), dialer=True),
            host,
            port,
        )
        assert await asyncio.wait_for(stranger.authenticated, 10) is False
        assert _refused(c, "biz") >= 1
        # A peer that connects and says nothing is closed at the handshake deadline.
        reader, writer = await asyncio.open_connection(host, port)
        got = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert len(got) == 36
        # The cluster's own links are unharmed: a message still goes through biz.
        a = await c.login("user00", 0)
        b = await c.login("user01", 1)
        ack: Any = await a.text(b.user_id, b"still fine")
        assert ack.msg_id > 0
        await b.wait_for("CID_MSG_DATA", lambda m: m.msg_data == b"still fine")

    monkeypatch.setattr(connection, "HANDSHAKE_TIMEOUT", 0.5)
    with_cluster(body)
