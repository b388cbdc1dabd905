"""Integration: the layout decides which internal links are in-process (runtime.cluster.layout); messages
cross shards either way."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.services.local_links import LocalLink
from tests.integration.conftest import TestCluster, run_in_cluster

pytestmark = pytest.mark.integration


def test_roles_of_one_shard_link_in_process_and_shards_link_over_tcp(
    tmp_path: Path, cluster_layout: str
) -> None:
    async def body(c: TestCluster) -> None:
        msg0, msg1 = c.services("msg")
        sharded = cluster_layout == "sharded"
        # msg 0 shares shard 0 with biz 0 and router 0; msg 1 (shard 1) reaches biz 0 over TCP
        assert isinstance(msg0.biz_link(), LocalLink) is sharded
        assert not isinstance(msg1.biz_link(), LocalLink)
        # each msg server relays through the router of its own shard
        assert isinstance(msg0.routers.master, LocalLink) is sharded
        assert isinstance(msg1.routers.master, LocalLink) is sharded
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
