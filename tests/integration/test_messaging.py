"""Integration: 1:1 messaging across msg servers on a real cluster (loopback, SQLite)."""

from __future__ import annotations

import pytest

from tests.integration.conftest import ANDROID, IOS, MAC, WINDOWS, TestCluster, WithCluster

pytestmark = pytest.mark.integration


def test_one_to_one_across_servers_both_ways(with_cluster: WithCluster) -> None:
    async def body(c: TestCluster) -> None:
        a = await c.login("user00", 0)
        b = await c.login("user01", 1)
        acks = [await a.text(b.user_id, f"a->b {i}".encode()) for i in range(5)]
        acks += [await b.text(a.user_id, f"b->a {i}".encode()) for i in range(5)]
        ids = [ack.msg_id for ack in acks]
        assert all(i > 0 for i in ids)
        assert ids == sorted(ids) and len(set(ids)) == 10  # one counter per pair, shared both ways
        got_b = await b.wait_for("CID_MSG_DATA", lambda m: m.from_user_id == a.user_id, count=5)
        got_a = await a.wait_for("CID_MSG_DATA", lambda m: m.from_user_id == b.user_id, count=5)
        assert [m.msg_data for m in got_b] == [f"a->b {i}".encode() for i in range(5)]
        assert [m.msg_id for m in got_b] == ids[:5]
        assert [m.msg_data for m in got_a] == [f"b->a {i}".encode() for i in range(5)]

    with_cluster(body)


def test_offline_recipient_unread_then_read_sync(with_cluster: WithCluster) -> None:
    async def body(c: TestCluster) -> None:
        a = await c.login("user00", 0)
        b_id = c.users["user01"]
        sent = [await a.text(b_id, f"offline {i}".encode()) for i in range(3)]
        assert all(ack.msg_id for ack in sent)
        b_pc = await c.login("user01", 1, WINDOWS)
        b_phone = await c.login("user01", 0, ANDROID)
        unread = await b_pc.call("CID_MSG_UNREAD_CNT_REQUEST", user_id=0)
        assert unread.total_cnt == 3
        (item,) = [u for u in unread.unreadinfo_list if u.session_id == a.user_id]
        assert item.unread_cnt == 3 and item.latest_msg_data == b"offline 2"
        page = await b_pc.call(
            "CID_MSG_LIST_REQUEST",
            user_id=0,
            session_type=1,
            session_id=a.user_id,
            msg_id_begin=0,
            msg_cnt=10,
        )
        assert [m.msg_data for m in page.msg_list] == [b"offline 2", b"offline 1", b"offline 0"]
        await b_pc.send(
            "CID_MSG_READ_ACK", user_id=0, session_id=a.user_id, msg_id=sent[-1].msg_id, session_type=1
        )
        (note,) = await b_phone.wait_for("CID_MSG_READ_NOTIFY")
        assert (note.user_id, note.session_id, note.msg_id) == (b_id, a.user_id, sent[-1].msg_id)
        assert not b_pc.received("CID_MSG_READ_NOTIFY")  # not echoed to the device that read
        unread = await b_phone.call("CID_MSG_UNREAD_CNT_REQUEST", user_id=0)
        assert unread.total_cnt == 0

    with_cluster(body)


def test_sender_other_devices_receive_sent_messages(with_cluster: WithCluster) -> None:
    async def body(c: TestCluster) -> None:
        a_pc = await c.login("user00", 0, WINDOWS)
        a_phone = await c.login("user00", 1, IOS)
        b = await c.login("user01", 1)
        ack = await a_pc.text(b.user_id, b"hello")
        (copy,) = await a_phone.wait_for("CID_MSG_DATA")
        assert (copy.msg_id, copy.from_user_id, copy.to_session_id) == (ack.msg_id, a_pc.user_id, b.user_id)
        await b.wait_for("CID_MSG_DATA")
        assert not a_pc.received("CID_MSG_DATA")

    with_cluster(body)


def test_second_pc_login_kicks_first_mobile_does_not(with_cluster: WithCluster) -> None:
    async def body(c: TestCluster) -> None:
        watcher = await c.login("user05", 0, WINDOWS)
        first = await c.login("user02", 0, WINDOWS)
        await watcher.wait_presence(first.user_id, 1)
        phone = await c.login("user02", 1, ANDROID)
        second = await c.login("user02", 1, MAC)
        (kick,) = await first.wait_for("CID_LOGIN_KICK_USER")
        assert kick.kick_reason == 1 and kick.user_id == first.user_id

        assert not phone.received("CID_LOGIN_KICK_USER")
        # The phone learns that the user's PC is online again (PC login status goes to mobiles only).
        stat = await watcher.call(
            "CID_BUDDY_LIST_USERS_STATUS_REQUEST", user_id=0, user_id_list=[first.user_id]
        )
        assert [s.status for s in stat.user_stat_list] == [1]
        # A message reaches the new PC session and the phone, not the kicked one.
        peer = await c.login("user03", 0)
        await peer.text(first.user_id, b"to the new session")
        await second.wait_for("CID_MSG_DATA")
        await phone.wait_for("CID_MSG_DATA")
        assert not first.received("CID_MSG_DATA")
        # Mobile kicks PC (reason MOBILE_KICK); presence goes offline for everyone's PCs.
        rsp = await phone.call("CID_LOGIN_REQ_KICKPCCLIENT", user_id=0)
        assert rsp.result_code == 0
        (kick2,) = await second.wait_for("CID_LOGIN_KICK_USER")
        assert kick2.kick_reason == 2
        await watcher.wait_presence(first.user_id, 2)
        assert phone.presence() == []  # presence notices go to PCs only
        # The re-login on another PC did not flap presence: online once, then offline once.
        assert watcher.presence(first.user_id) == [(first.user_id, 1), (first.user_id, 2)]
        await phone.wait_for("CID_BUDDY_LIST_PC_LOGIN_STATUS_NOTIFY", lambda m: m.login_stat == 2)

    with_cluster(body)


def test_sessions_settings_and_ephemeral_signals(with_cluster: WithCluster) -> None:
    async def body(c: TestCluster) -> None:
        a_pc = await c.login(
            "user00", 0, WINDOWS, ext=True
        )  # typing is an IM.Ext push: opted-in devices only
        a_phone = await c.login("user00", 1, ANDROID)
        b = await c.login("user01", 1)
        await a_pc.text(b.user_id, b"hi")
        recent = await a_pc.call(
            "CID_BUDDY_LIST_RECENT_CONTACT_SESSION_REQUEST", user_id=0, latest_update_time=0
        )
        assert [s.session_id for s in recent.contact_session_list] == [b.user_id]
        assert recent.contact_session_list[0].latest_msg_data == b"hi"
        rm = await a_pc.call(
            "CID_BUDDY_LIST_REMOVE_SESSION_REQ", user_id=0, session_type=1, session_id=b.user_id
        )
        assert rm.result_code == 0
        (note,) = await a_phone.wait_for("CID_BUDDY_LIST_REMOVE_SESSION_NOTIFY")
        assert note.session_id == b.user_id
        shield = await a_phone.call("CID_LOGIN_REQ_PUSH_SHIELD", user_id=0, shield_status=1)
        assert shield.result_code == 0
        query = await a_pc.call("CID_LOGIN_REQ_QUERY_PUSH_SHIELD", user_id=0)
        assert query.shield_status == 1
        now = await a_pc.call("CID_MSG_TIME_REQUEST")
        assert now.server_time > 1_600_000_000
        # P2P commands reach both users' other devices; typing reaches the peer; neither is stored.
        await a_pc.send("CID_SWITCH_P2P_CMD", from_user_id=0, to_user_id=b.user_id, cmd_msg_data="shake")
        (p2p,) = await b.wait_for("CID_SWITCH_P2P_CMD")
        assert (p2p.from_user_id, p2p.cmd_msg_data) == (a_pc.user_id, "shake")
        await a_phone.wait_for("CID_SWITCH_P2P_CMD")
        await b.send("CID_EXT_TYPING", from_user_id=0, to_session_id=a_pc.user_id, session_type=1, state=1)
        (typing,) = await a_pc.wait_for("CID_EXT_TYPING")
        assert typing.from_user_id == b.user_id
        latest = await b.call(
            "CID_MSG_GET_LATEST_MSG_ID_REQ", user_id=0, session_type=1, session_id=a_pc.user_id
        )
        assert latest.latest_msg_id == 1
        by_id = await b.call(
            "CID_MSG_GET_BY_MSG_ID_REQ", user_id=0, session_type=1, session_id=a_pc.user_id, msg_id_list=[1]
        )
        assert [m.msg_data for m in by_id.msg_list] == [b"hi"]

    with_cluster(body)


def test_encrypted_session_then_login_and_chat(with_cluster: WithCluster) -> None:
    async def body(c: TestCluster) -> None:
        import os

        from generated.teamtalk.registry import REGISTRY
        from runtime.stages.crypto import KeyExchange, derive_session_keys
        from tests.integration.conftest import PASSWORD, Client, md5hex

        core = await c.connect(0)
        kx, nonce = KeyExchange(), os.urandom(16)
        req = REGISTRY.by_name("CID_EXT_HANDSHAKE_REQ").message_class(
            client_public_key=kx.public_bytes, client_nonce=nonce, suites=[2, 1]
        )
        rsp = await core.call("CID_EXT_HANDSHAKE_REQ", req)
        assert rsp.result_code == 0 and rsp.suite == 2
        keys = derive_session_keys(kx, rsp.server_public_key, nonce, rsp.server_nonce, initiator=True)
        core.enable_encryption(keys, "chacha20-poly1305")
        login = REGISTRY.by_name("CID_LOGIN_REQ_USERLOGIN").message_class(
            user_name="user00", password=md5hex(PASSWORD), online_status=1, client_type=WINDOWS
        )
        res = await core.call("CID_LOGIN_REQ_USERLOGIN", login)
        assert res.result_code == 0
        a = Client(core, res.user_info.user_id, "user00")
        c.clients.append(a)
        b = await c.login("user01", 1)
        await b.text(a.user_id, b"sealed on the way to a")
        (got,) = await a.wait_for("CID_MSG_DATA")
        assert got.msg_data == b"sealed on the way to a"
        assert core.link is not None and core.link.data is not None and "cipher" in core.link.data

    with_cluster(body)


def test_extension_pushes_reach_only_the_devices_that_opted_in(with_cluster: WithCluster) -> None:
    async def body(c: TestCluster) -> None:
        a_new = await c.login("user00", 0, WINDOWS, ext=True)  # shook hands: extension-capable
        a_old = await c.login(
            "user00", 1, ANDROID
        )  # an original TeamTalk client: never sent an IM.Ext command
        b = await c.login("user01", 1, ext=True)
        await b.send("CID_EXT_TYPING", from_user_id=0, to_session_id=a_new.user_id, session_type=1, state=1)
        await a_new.wait_for("CID_EXT_TYPING")
        burn = await b.call(
            "CID_EXT_MSG_BURN",
            from_user_id=0,
            to_session_id=a_new.user_id,
            msg_id=0,
            create_time=0,
            msg_type=1,
            msg_data=b"burn me",
        )
        assert burn.msg_id
        await a_new.wait_for("CID_EXT_MSG_BURN")
        # A plain message sent after them reaches both devices: by then the old one would have had the rest.
        plain = await b.text(a_new.user_id, b"plain")
        for device in (a_new, a_old):
            await device.wait_for("CID_MSG_DATA", lambda m: m.msg_id == plain.msg_id)
        assert [name for name, _ in a_old.pushes if name.startswith("CID_EXT_")] == []
        # Sending any IM.Ext command opts a connection in (here a typing indicator, no handshake).
        await a_old.send("CID_EXT_TYPING", from_user_id=0, to_session_id=b.user_id, session_type=1, state=3)
        await b.wait_for("CID_EXT_TYPING")
        await b.send("CID_EXT_TYPING", from_user_id=0, to_session_id=a_old.user_id, session_type=1, state=2)
        (typing,) = await a_old.wait_for("CID_EXT_TYPING")
        assert typing.state == 2

    with_cluster(body)


def test_msgs_in_counts_client_chat_messages_for_ttgen_status(with_cluster: WithCluster) -> None:
    async def body(c: TestCluster) -> None:
        from runtime.monitor.http import parse_prometheus
        from ttgen.commands.status import load_of

        a = await c.login("user00", 0)
        b = await c.login("user01", 1)
        for i in range(3):
            await a.text(b.user_id, f"m{i}".encode())
        await b.text(a.user_id, b"back")
        sent_from = [svc.m_msgs_in.value for svc in sorted(c.services("msg"), key=lambda s: s.ctx.instance)]
        assert sent_from == [3, 1]
        samples = parse_prometheus(c.services("msg")[0].metrics.render())
        assert any("msg_msgs_in_total" in name for name in samples)
        assert load_of(samples, {})["msgs_in"] == 3

    with_cluster(body)
