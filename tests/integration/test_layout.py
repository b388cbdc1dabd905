"""Integration: the layout decides which internal links are in-process (runtime.cluster.layout); messages
cross shards either way."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from runtime.inprocess import is_in_process
from tests.integration.conftest import TestCluster, run_in_cluster

pytestmark = pytest.mark.integration


def test_roles_of_one_shard_link_in_process_and_shards_link_over_tcp(
    tmp_path: Path, cluster_layout: str
) -> None:
    async def body(c: TestCluster) -> None:
        msg0, msg1 = c.services("msg")
        sharded = cluster_layout == "sharded"
        # msg 0 shares shard 0 with biz 0 and router 0; msg 1 (shard 1) reaches biz 0 over TCP
        assert is_in_process(msg0.biz_link()) is sharded
        assert not is_in_process(msg1.biz_link())
        # each msg server relays through the router of its own shard
        assert is_in_process(msg0.routers.master) is sharded
        assert is_in_process(msg1.routers.master) is sharded
        assert len(msg0.routers.live_links()) == 2
        a, b = await c.login("user00", 0), await c.login("user01", 1)
        for i in range(5):  # both ways across the shards
            assert (await a.text(b.user_id, b"to b %d" % i)).msg_id > 0
            assert (await b.text(a.user_id, b"to a %d" % i)).msg_id > 0
        got_b = await b.wait_for("CID_MSG_DATA", count=5)
        got_a = await a.wait_for("CID_MSG_DATA", count=5)
        assert [m.msg_data for m in got_b] == [b"to b %d" % i for i in range(5)]
        assert [m.msg_data for m in got_a] == [b"to a %d" % i for i in range(5)]

    run_in_cluster(tmp_path, body)


def test_a_sharded_process_cluster_runs_one_worker_per_shard(tmp_path: Path, cluster_layout: str) -> None:
    from runtime.cluster.config import parse_config
    from runtime.cluster.discovery import RunDirDiscovery
    from runtime.cluster.processes import ProcessSupervisor
    from tests.integration.conftest import NAMES, cluster_config, seed_users
    from tests.integration.test_messaging_processes import login
    from ttgen.commands.status import gather_status

    async def main() -> None:
        await seed_users(tmp_path, NAMES[:2])
        config = parse_config(cluster_config(tmp_path))
        sup = ProcessSupervisor(config, "generated.teamtalk", console=lambda _s: None)
        await sup.start()
        try:
            names = [w.name for w in sup.workers]
            if cluster_layout == "sharded":
                assert names == ["login-0", "shard-0", "shard-1"]
            else:
                assert names == ["biz-0", "router-0", "router-1", "login-0", "msg-0", "msg-1"]
            eps = RunDirDiscovery(config.run_dir)
            pid = {(r.endpoint.service, r.endpoint.instance): r.pid for r in eps.records()}
            together = pid[("msg", 0)] == pid[("biz", 0)] == pid[("router", 0)]
            assert together is (cluster_layout == "sharded")
            assert pid[("msg", 0)] != pid[("msg", 1)]
            status = await gather_status(tmp_path)
            assert not [r for r in status["instances"] if r.get("status") == "down"], status
            msg_eps = sorted(eps.endpoints("msg", "client"), key=lambda e: e.instance)
            a, b = await login(msg_eps, 0, "user00"), await login(msg_eps, 1, "user01")
            try:
                ack = await a.text(b.user_id, b"across")
                assert ack.msg_id > 0
                (got,) = await b.wait_for("CID_MSG_DATA", timeout=10)
                assert got.msg_id == ack.msg_id
            finally:
                await a.close()
                await b.close()
        finally:
            await sup.stop()

    asyncio.run(main())


def test_a_msg_server_stores_and_relays_through_its_shards_roles_by_direct_calls(
    tmp_path: Path, cluster_layout: str
) -> None:
    async def body(c: TestCluster) -> None:
        msg0, msg1 = c.services("msg")
        (biz0,) = c.services("biz")
        sharded = cluster_layout == "sharded"
        # the in-process link to biz carries biz itself for direct calls; a TCP link never does
        assert (msg0.biz_link().local_peer is biz0) is sharded
        assert msg1.biz_link().local_peer is None
        a, b = await c.login("user00", 0), await c.login("user01", 1)
        before = biz0._m_requests.value
        first = await a.text(b.user_id, b"direct", client_msg_id=7)
        again = await a.text(b.user_id, b"direct", client_msg_id=7)  # a retransmit: stored once
        other = await a.text(b.user_id, b"direct too")
        assert first.msg_id > 0 and again.msg_id == first.msg_id and other.msg_id > first.msg_id
        # msg 0's stores reached biz without a frame on the link only in the sharded layout
        assert (biz0._m_requests.value == before) is sharded
        from_b = await b.text(a.user_id, b"over tcp")  # msg 1 (shard 1) stores over its TCP link
        assert from_b.msg_id > other.msg_id
        assert biz0._m_requests.value > before
        got = await b.wait_for("CID_MSG_DATA", count=2)
        expected = [(first.msg_id, b"direct"), (other.msg_id, b"direct too")]
        assert [(m.msg_id, m.msg_data) for m in got] == expected
        assert all(m.from_user_id == a.user_id for m in got)
        (got_a,) = await a.wait_for("CID_MSG_DATA", count=1)
        assert (got_a.msg_id, got_a.msg_data) == (from_b.msg_id, b"over tcp")
        # relays to the shard's own router are direct calls too, confirmed like frames
        router0 = next(r for r in c.services("router") if r.ctx.instance == 0)
        assert (msg0.routers.master.local_peer is router0) is sharded
        for _ in range(50):
            if not msg0.routers._outbox:
                break
            await asyncio.sleep(0.02)
        assert not msg0.routers._outbox and not msg0.routers._in_flight

    run_in_cluster(tmp_path, body)
