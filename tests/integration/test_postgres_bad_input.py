"""A cluster on PostgreSQL meeting a bad database: a server that goes away mid-run (writes are refused with a
clear error and never acked, nothing acked is lost, service resumes when it is back) and a second cluster
pointed at the same database by mistake (refused at start)."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from generated.teamtalk import servers as tt_servers
from generated.teamtalk.registry import REGISTRY
from runtime.cluster.config import parse_config
from runtime.cluster.runner import ClusterRunner, ClusterStartError
from runtime.services.links import ResultCode
from runtime.storage.postgres.local_server import LocalServer
from tests.integration.conftest import NAMES, TestCluster, cluster_config, run_in_cluster, seed_users
from tests.pg_support import PgDatabases, started

pytestmark = pytest.mark.integration


@pytest.fixture
def own_server() -> Iterator[LocalServer]:
    """A PostgreSQL server of this test's own (stopped and started mid-test), with fsync on."""
    server = started(LocalServer(fsync=True, max_connections=40))
    yield server
    server.stop()


def test_database_outage_refuses_sends_loses_no_acked_message_and_recovers(
    own_server: LocalServer, tmp_path: Path
) -> None:
    storage = {"backend": "postgres", "dsn": own_server.dsn(), "connect_timeout": 2, "command_timeout": 5}

    async def body(c: TestCluster) -> None:
        a = await c.login("user00", 0)
        b = await c.login("user01", 1)
        acked: list[bytes] = []
        for i in range(3):
            ack = await a.text(b.user_id, b"before %d" % i)
            assert ack.msg_id > 0
            acked.append(b"before %d" % i)
        await b.wait_for("CID_MSG_DATA", count=3)

        own_server.halt("immediate")
        ack = await asyncio.wait_for(a.text(b.user_id, b"during"), 15)
        assert ack.msg_id == 0  # not acked: the sender knows it was not stored
        assert not b.received("CID_MSG_DATA", lambda m: m.msg_data == b"during")

        await asyncio.to_thread(own_server.restart_stopped)
        deadline = time.monotonic() + 20
        while True:  # the first write after the restart may still meet a connection that died idle
            ack = await a.text(b.user_id, b"after")
            if ack.msg_id or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert ack.msg_id > 0, "the cluster did not resume after the database came back"
        acked.append(b"after")
        await b.wait_for("CID_MSG_DATA", lambda m: m.msg_data == b"after")
        history = await b.history(a.user_id)
        assert [m.msg_data for m in reversed(history)] == acked

    run_in_cluster(tmp_path, body, storage=storage)


def test_biz_answers_no_db_server_while_the_database_is_down(own_server: LocalServer, tmp_path: Path) -> None:
    """The store reply biz gives msg carries the reason (docs/cluster.md: the reply envelope's result)."""
    storage = {"backend": "postgres", "dsn": own_server.dsn(), "connect_timeout": 2, "command_timeout": 5}

    async def body(c: TestCluster) -> None:
        biz = c.services("biz")[0]
        own_server.halt("immediate")
        msg = REGISTRY.by_name("CID_MSG_DATA").message_class(
            from_user_id=c.users["user00"],
            to_session_id=c.users["user01"],
            msg_id=0,
            create_time=0,
            msg_type=0x01,
            msg_data=b"x",
        )
        reply: Any = await asyncio.wait_for(biz.store_message(c.users["user00"], msg), 15)
        assert reply.msg_id == 0
        (result,) = struct.unpack_from(">I", reply.attach_data)  # the reply envelope opens with the result
        assert result == ResultCode.NO_DB_SERVER
        await asyncio.to_thread(own_server.restart_stopped)

    run_in_cluster(tmp_path, body, storage=storage)


def test_a_second_cluster_on_the_same_database_is_refused(pg_databases: PgDatabases, tmp_path: Path) -> None:
    storage = {"backend": "postgres", "dsn": pg_databases.create()}
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"

    async def body(c: TestCluster) -> None:
        a = await c.login("user00", 0)
        assert (await a.text(c.users["user01"], b"mine")).msg_id == 1
        config = parse_config(cluster_config(second_dir, storage=storage))
        other = ClusterRunner(config, REGISTRY, tt_servers, console=lambda _s: None)
        with pytest.raises(ClusterStartError, match="belongs to cluster"):
            await other.start()
        # the first cluster never noticed
        assert (await a.text(c.users["user01"], b"still mine")).msg_id == 2

    first_dir.mkdir()
    run_in_cluster(first_dir, body, storage=storage)

    async def seed_into_second() -> None:
        await seed_users(second_dir, NAMES[:1], True, storage)

    with pytest.raises(Exception, match="belongs to cluster"):
        asyncio.run(seed_into_second())


def test_gateway_answers_503_while_the_database_is_down(own_server: LocalServer, tmp_path: Path) -> None:
    from tests.integration.file_support import FileCluster, run_file_cluster
    from tests.integration.gateway_support import GATEWAY, WebClient, wait_gateway

    storage = {"backend": "postgres", "dsn": own_server.dsn(), "connect_timeout": 2, "command_timeout": 5}

    async def body(c: FileCluster) -> None:
        addr = await wait_gateway(c)
        web = await WebClient.login(addr, "user20")
        to = c.users["user21"]
        assert (await web.send(to, "before"))["error_code"] == 0
        own_server.halt("immediate")
        rsp = await web.post("/api/send", {"to": to, "text": "during"})
        assert rsp.status == 503 and rsp.json()["error_code"] == 3, rsp.json()
        assert "database" in rsp.json()["error_msg"]
        await asyncio.to_thread(own_server.restart_stopped)
        deadline = time.monotonic() + 20
        while (doc := await web.send(to, "after"))["error_code"] != 0:
            assert time.monotonic() < deadline, doc
            await asyncio.sleep(0.2)

    asyncio.run(run_file_cluster(tmp_path, body, services=dict(GATEWAY), storage=storage))
