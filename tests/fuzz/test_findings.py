"""Defects the fuzzers found in the cluster, kept as tests until fixed (xfail strict: a fix shows up)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runtime.framing import encode_frame
from runtime.fuzz.cluster import ClusterTarget
from runtime.fuzz.live import send_checked
from runtime.fuzz.stack import FuzzStack
from runtime.fuzz.wire import NoAnswer
from runtime.plugins import plugins_for


@pytest.fixture(scope="module")
def cluster(tt_stack: FuzzStack) -> Iterator[ClusterTarget]:
    target = ClusterTarget(tt_stack)
    try:
        yield target
    finally:
        target.close()


def test_a_repeated_msg_data_is_acked_again(cluster: ClusterTarget, tt_stack: FuzzStack) -> None:
    info = tt_stack.command("CID_MSG_DATA")
    ack = tt_stack.command("CID_MSG_DATA_ACK")
    body = info.message_class(
        from_user_id=cluster.fuzz_user_id,
        to_session_id=cluster.users["peer"],
        msg_id=0,
        create_time=0,
        msg_type=1,
        msg_data=b"same words",
    ).SerializeToString()
    frame = encode_frame(info.service_id, info.command_id, 4242, body)
    for attempt in ("first", "retransmit after reconnect"):
        with cluster.connect(login=True) as conn:
            conn.send_raw(frame)
            try:
                conn.wait_for(lambda f: f.command_id == ack.command_id and f.seq == 4242)
            except NoAnswer:
                raise AssertionError(f"{attempt}: MSG_DATA never acked") from None


def test_the_stacks_plugin_commands_are_served_and_answered(
    cluster: ClusterTarget, tt_stack: FuzzStack
) -> None:
    # A finding of `ttgen fuzz --time 90s`: valid CID_SHAKE_REQ frames went unanswered because the fuzz
    # cluster ran without the plugin that serves them. It now enables the stack's plugins, which get fuzzed.
    info = tt_stack.command("CID_SHAKE_REQ")
    before = cluster.unanswered
    outcome = send_checked(cluster, info, info.message_class(user_id=0, lat=1.5, lng=2.5).SerializeToString())
    assert outcome == "accept"
    assert cluster.unanswered == before


def test_plugins_for_names_the_plugins_whose_commands_a_stack_has(tt_stack: FuzzStack) -> None:
    names = [info.name for info in tt_stack.registry]
    assert plugins_for(names) == ["shake"]
    assert plugins_for(n for n in names if n != "CID_SHAKE_SHARE") == []  # all of a plugin's commands
