"""Integration: the `shake` plugin, enabled by `plugins: [shake]`: shakes within two seconds are matched."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.file_support import FileCluster, run_file_cluster

pytestmark = pytest.mark.integration


async def shake(client: Any) -> Any:
    return await client.call("CID_SHAKE_REQ", user_id=0, lat=31.2, lng=121.5)


def test_two_shakes_within_two_seconds_match_a_third_three_seconds_later_does_not(tmp_path: Path) -> None:
    async def body(c: FileCluster) -> None:
        a = await c.login("user40", 0)
        b = await c.login("user41", 1)  # another msg server: matching is cluster-wide
        late = await c.login("user42", 0)
        first = await shake(a)
        assert first.result_code == 0 and list(first.matched_user_ids) == []
        second = await shake(b)
        assert second.shake_time - first.shake_time <= 2000
        (note,) = await a.wait_for("CID_SHAKE_MATCH_NOTIFY")
        assert (note.user_id, note.matched_user_id, round(note.lat, 1)) == (a.user_id, b.user_id, 31.2)
        # b learns of a either in its reply or, if a's shake had not reached b's server yet, by a notify.
        told_b = set(second.matched_user_ids) | {
            n.matched_user_id for n in b.received("CID_SHAKE_MATCH_NOTIFY")
        }
        if a.user_id not in told_b:
            (nb,) = await b.wait_for("CID_SHAKE_MATCH_NOTIFY")
            told_b.add(nb.matched_user_id)
        assert told_b == {a.user_id}
        await asyncio.sleep(max(0.0, 3.0 - (time.time() * 1000 - second.shake_time) / 1000))
        third = await shake(late)
        assert third.shake_time - second.shake_time >= 2900
        assert list(third.matched_user_ids) == []
        # Nobody hears of the late shaker. The shake's broadcast and a later chat message travel the same
        # router link in order, so once b has the message, b's server has processed the shake too.
        await late.text(b.user_id, b"after the shake")
        await b.wait_for("CID_MSG_DATA", lambda m: m.from_user_id == late.user_id)
        for client in (a, b):
            assert late.user_id not in {n.matched_user_id for n in client.received("CID_SHAKE_MATCH_NOTIFY")}
        assert not late.received("CID_SHAKE_MATCH_NOTIFY")

    asyncio.run(run_file_cluster(tmp_path, body, plugins=["shake"], services={"file": {"instances": 0}}))


def test_without_the_plugin_enabled_a_shake_gets_no_answer(tmp_path: Path) -> None:
    async def body(c: FileCluster) -> None:
        a = await c.login("user45", 0)
        with pytest.raises(Exception):  # noqa: B017 - no plugin serves it: no reply arrives
            await a.core.call("CID_SHAKE_REQ", a_req(), timeout=0.5)
        ack = await a.text(c.users["user46"], b"still fine")  # the connection and server are unaffected
        assert ack.msg_id > 0

    asyncio.run(run_file_cluster(tmp_path, body, services={"file": {"instances": 0}}))


def a_req() -> Any:
    from generated.teamtalk.registry import REGISTRY

    return REGISTRY.by_name("CID_SHAKE_REQ").message_class(user_id=0)
