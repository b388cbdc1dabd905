"""Integration: what counts as a retransmit. Two devices of one user, and a client after a reconnect, repeat
seq numbers, client msg ids and even text; each such message is new and must be stored and delivered once."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.integration.conftest import ANDROID, WINDOWS, Client, TestCluster

pytestmark = pytest.mark.integration


def _same_next_seq(*clients: Client) -> None:
    """Make the clients' next request use one seq, as two fresh TeamTalk clients' first messages do."""
    top = max(c.core._seq for c in clients)
    for c in clients:
        c.core._seq = top


def test_two_devices_sending_the_same_text_with_the_same_seq_are_two_messages(
    with_cluster: Callable[..., None],
) -> None:
    async def body(c: TestCluster) -> None:
        pc = await c.login("user00", 0, WINDOWS)
        phone = await c.login("user00", 0, ANDROID)
        bob = await c.login("user01", 1)
        _same_next_seq(pc, phone)
        first = await pc.text(bob.user_id, b"ok")
        second = await phone.text(bob.user_id, b"ok")
        assert first.msg_id and second.msg_id and first.msg_id != second.msg_id
        got = await bob.wait_for("CID_MSG_DATA", lambda m: m.msg_data == b"ok", count=2)
        assert sorted(m.msg_id for m in got) == sorted([first.msg_id, second.msg_id])
        assert [m.msg_data for m in await bob.history(pc.user_id)] == [b"ok", b"ok"]

    with_cluster(body)


def test_a_reused_client_msg_id_with_other_text_is_stored_not_answered_as_a_duplicate(
    with_cluster: Callable[..., None],
) -> None:
    async def body(c: TestCluster) -> None:
        pc = await c.login("user00", 0, WINDOWS)
        phone = await c.login("user00", 1, ANDROID)
        bob = await c.login("user01", 1)
        first = await pc.text(bob.user_id, b"from the desk", client_msg_id=7)
        second = await phone.text(bob.user_id, b"from the phone", client_msg_id=7)
        assert first.msg_id and second.msg_id and first.msg_id != second.msg_id
        texts = [m.msg_data for m in await bob.history(pc.user_id)]
        assert texts == [b"from the phone", b"from the desk"]
        # A real resend (same client msg id, same text) is still one message.
        again = await pc.text(bob.user_id, b"from the desk", client_msg_id=7)
        assert again.msg_id == first.msg_id
        assert len(await bob.history(pc.user_id)) == 2

    with_cluster(body)


def test_a_reconnected_client_whose_seq_restarts_gets_fresh_acks(with_cluster: Callable[..., None]) -> None:
    async def body(c: TestCluster) -> None:
        bob = await c.login("user01", 1)
        before = await c.login("user00", 0)
        acks = [await before.text(bob.user_id, f"n{i}".encode()) for i in range(3)]
        await before.close()
        after = await c.login("user00", 0)  # a new connection: its seq starts again from 1
        after.core._seq = before.core._seq - 3  # the same seqs the three messages above went out with
        again = [await after.text(bob.user_id, f"n{i}".encode()) for i in range(3)]
        assert not {a.msg_id for a in acks} & {a.msg_id for a in again}
        assert len(await bob.history(after.user_id)) == 6
        await bob.wait_for("CID_MSG_DATA", count=6)

    with_cluster(body)
