"""Integration: `ttgen admin keys rotate` while the cluster runs and traffic flows (both backends): every
message acked before, during and after the rotation is readable in history with its text, nothing is lost,
and at the end every row is sealed with the new key version."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.integration.conftest import TestCluster, WithCluster, cluster_config, run_in_cluster
from ttgen.cli import main as cli

pytestmark = pytest.mark.integration


async def whole_history(client: Any, peer: int) -> list[Any]:
    """Every message of a 1:1 session, paging back from the newest."""
    out: list[Any] = []
    begin = 0
    while True:
        page = await client.call(
            "CID_MSG_LIST_REQUEST",
            user_id=0,
            session_type=1,
            session_id=peer,
            msg_id_begin=begin,
            msg_cnt=100,
        )
        msgs = list(page.msg_list)
        out += msgs
        low = min((m.msg_id for m in msgs), default=0)
        if low <= 1:
            return out
        begin = low - 1


def test_rotation_with_the_cluster_running_and_traffic_flowing(
    with_cluster: WithCluster, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"  # kept outside the data dir
    storage_cfg = {**with_cluster.storage_cfg, "key_dir": str(keys)}
    config = tmp_path / "ttgen.json"
    config.write_text(json.dumps(cluster_config(with_cluster.data_dir, storage=storage_cfg)))

    def rotate() -> Any:
        return CliRunner().invoke(cli, ["admin", "--config", str(config), "keys", "rotate", "--batch", "50"])

    async def body(c: TestCluster) -> None:
        senders = [await c.login(f"user{i:02d}", i % 2) for i in range(4)]
        receivers = [await c.login(f"user{i:02d}", (i + 1) % 2) for i in range(4, 8)]
        acked: dict[tuple[int, int], list[tuple[int, bytes]]] = {}
        stop = asyncio.Event()
        refused = 0

        async def traffic(k: int) -> None:
            nonlocal refused
            sender, receiver = senders[k], receivers[k]
            n = 0
            while not stop.is_set():
                text = f"m{k}-{n}".encode()
                ack = await sender.text(receiver.user_id, text)
                if ack.msg_id:
                    acked.setdefault((sender.user_id, receiver.user_id), []).append((ack.msg_id, text))
                else:
                    refused += 1
                n += 1
                await asyncio.sleep(0.005)

        tasks = [asyncio.create_task(traffic(k)) for k in range(4)]
        while sum(len(v) for v in acked.values()) < 100:  # rows sealed with the first key
            await asyncio.sleep(0.05)
        before = sum(len(v) for v in acked.values())
        out = await asyncio.to_thread(rotate)
        assert out.exit_code == 0, out.output
        for _ in range(200):  # the senders kept going through the rotation: more acks come after it
            if sum(len(v) for v in acked.values()) > before + 10:
                break
            await asyncio.sleep(0.05)
        assert "added at-rest key version 2" in out.output and "every row now uses it" in out.output
        await asyncio.sleep(0.3)  # traffic after the rotation: sealed with version 2 from the start
        stop.set()
        await asyncio.gather(*tasks)
        assert refused == 0
        total = sum(len(v) for v in acked.values())
        assert total > before + 10
        for k, sender in enumerate(senders):
            want = dict(acked[(sender.user_id, receivers[k].user_id)])
            stored = {m.msg_id: bytes(m.msg_data) for m in await whole_history(receivers[k], sender.user_id)}
            assert stored == want  # every acked message, with its text; nothing else
        status = await asyncio.to_thread(
            CliRunner().invoke, cli, ["admin", "--config", str(config), "keys", "status"]
        )
        assert status.exit_code == 0, status.output
        assert f"version 2: {total} row(s)" in status.output and "version 1: 0 row(s)" in status.output

    run_in_cluster(with_cluster.data_dir, body, storage=storage_cfg)
