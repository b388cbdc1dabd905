"""Integration: the server's legacy text codec (`services.msg.legacy_key`). An original TeamTalk client's text
is decoded on input (stored, and sealed at rest, as the text itself), encoded again for original clients on
output (deliveries, history, recent sessions), and passed as stored to extension-capable clients (the shipped
client, which negotiates the secure session)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from generated.teamtalk.registry import REGISTRY
from runtime.client import ClientCore
from runtime.stages.legacy_codec import TEAMTALK_DEFAULT_KEY, decrypt_text, encrypt_text
from runtime.storage import SessionType
from tests.integration.conftest import ANDROID, PASSWORD, TestCluster, WithCluster, run_in_cluster
from ttgen.commands.chat import ChatSession
from ttgen.stack import load_stack

pytestmark = pytest.mark.integration
KEY = TEAMTALK_DEFAULT_KEY


def test_original_clients_text_is_decoded_stored_clear_and_encoded_for_them(
    with_cluster: WithCluster, tmp_path: Path
) -> None:
    async def body(c: TestCluster) -> None:
        old_alice = await c.login("user00", 0)  # original TeamTalk clients: no handshake, legacy text
        old_bob = await c.login("user01", 1, ANDROID)  # bob's phone; his PC runs the new client
        lines: list[str] = []
        new_bob = ChatSession(
            load_stack("teamtalk"),
            ClientCore(REGISTRY, host="127.0.0.1", port=c.msg_port(0), reconnect=False),
            lines.append,
        )
        await new_bob.login("user01", PASSWORD)
        assert new_bob.core.encrypted
        ack = await old_alice.text(old_bob.user_id, encrypt_text("héllo".encode(), KEY))
        assert ack.msg_id
        # The new client reads the text; the original one gets it encoded under the shared key.
        assert (await new_bob.wait_received("héllo"))[2] == ack.msg_id
        (got,) = await old_bob.wait_for("CID_MSG_DATA")
        assert got.msg_data != "héllo".encode() and decrypt_text(got.msg_data, KEY) == "héllo".encode()
        # History and the recent sessions, likewise.
        (info,) = await old_bob.history(old_alice.user_id)
        assert decrypt_text(info.msg_data, KEY) == "héllo".encode()
        assert [t for _, _, t in await new_bob.history(new_bob.target("user00"))] == ["héllo"]
        recent = await old_bob.call(
            "CID_BUDDY_LIST_RECENT_CONTACT_SESSION_REQUEST", user_id=0, latest_update_time=0
        )
        (session,) = [s for s in recent.contact_session_list if s.session_id == old_alice.user_id]
        assert decrypt_text(session.latest_msg_data, KEY) == "héllo".encode()
        # A new client's text reaches an original client encoded.
        await new_bob.send(new_bob.target("user00"), "from the new client")
        (back,) = await old_alice.wait_for("CID_MSG_DATA")
        assert decrypt_text(back.msg_data, KEY) == b"from the new client"
        # Text that does not decode under the key is stored as it came, and counted.
        await old_alice.text(old_bob.user_id, b"not base64 at all")
        assert "not base64 at all" in [t for _, _, t in await new_bob.history(new_bob.target("user00"))]
        assert sum(m.legacy.m_undecodable.value for m in c.services("msg")) == 1
        await new_bob.close()

    run_in_cluster(tmp_path, body, storage=with_cluster.storage_cfg, legacy_key=KEY.decode())

    async def stored() -> tuple[list[bytes], list[str]]:
        store = with_cluster.storage(True)
        await store.open()
        try:
            bob, alice = await store.get_user_by_login("user01"), await store.get_user_by_login("user00")
            assert bob is not None and alice is not None
            rows = await store.get_history(bob.id, SessionType.SINGLE, alice.id, 0, 10)
            return [m.content for m in rows], await store.find_bytes("héllo".encode())
        finally:
            await store.close()

    contents, raw_hits = asyncio.run(stored())
    assert "héllo".encode() in contents  # the database holds the text, not the legacy form...
    assert raw_hits == []  # ...sealed at rest


def test_a_legacy_key_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="exactly 32 bytes"):
        run_in_cluster(tmp_path, lambda c: None, legacy_key="short")  # type: ignore[arg-type,return-value]
