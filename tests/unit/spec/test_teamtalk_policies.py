"""The bundled spec's cluster layout and stage policies say what ARCHITECTURE.md and PROTOCOL.md require.

Read from the generated registry, i.e. exactly what the runtime will enforce.
"""

from __future__ import annotations

import importlib

import pytest

# Commands a connection may send before it has logged in: the msg-server lookups (legacy and queued), the
# logins (msg server with a password or a resumption ticket, and file service), the heartbeat and the
# encryption handshake that precedes login.
PRE_AUTH = {
    "CID_LOGIN_REQ_MSGSERVER",
    "CID_LOGIN_REQ_USERLOGIN",
    "CID_EXT_TICKET_LOGIN_REQ",
    "CID_EXT_PASSWORD_LOGIN_REQ",
    "CID_OTHER_HEARTBEAT",
    "CID_FILE_LOGIN_REQ",
    "CID_EXT_HANDSHAKE_REQ",
    "CID_EXT_LOGIN_QUEUE_REQ",
}


@pytest.fixture(scope="module")
def reg_module():
    return importlib.import_module("generated.teamtalk.registry")


@pytest.fixture(scope="module")
def registry(reg_module):
    return reg_module.REGISTRY


def test_every_command_has_a_stage_policy(registry):
    bare = [info.name for info in registry if not info.stages]
    assert bare == []


def test_only_login_heartbeat_and_lookups_skip_authentication(registry):
    open_commands = {
        info.name
        for info in registry
        if info.from_client and info.policy("input").get("require_auth", True) is False
    }
    assert open_commands == PRE_AUTH
    server_only = [
        info.name for info in registry if info.direction == "s2s" and "require_auth" in info.policy("input")
    ]
    assert server_only == []


def test_msg_data_keeps_teamtalk_limits_and_adds_reliable_delivery(registry):
    info = registry.by_name("CID_MSG_DATA")
    assert info.policy("input")["rate"] == "20/s"
    assert set(info.policy("input")["reject"]) == {"self_message", "empty_body"}
    msg_data = info.message_class.DESCRIPTOR.fields_by_name["msg_data"]
    assert msg_data.number == 6
    assert info.policy("pack") == {
        "encrypt": "session_aead",
        "legacy_codec": "teamtalk_aes_ecb",
        "codec_fields": ["msg_data"],
    }
    transport = info.policy("transport")
    assert (transport["ack"], transport["retransmit"], transport["dedup"]) == (
        "CID_MSG_DATA_ACK",
        "until_ack",
        "per_connection",
    )
    assert info.policy("store")["persist"] is True and info.policy("store")["at_rest"] == "encrypted"
    assert info.policy("present")["preview_bytes"] == 37
    assert info.reply == "CID_MSG_DATA_ACK"


def test_burn_after_reading_is_msg_data_with_a_burning_store_policy(registry):
    burn = registry.by_name("CID_EXT_MSG_BURN")
    assert burn.message_class is registry.by_name("CID_MSG_DATA").message_class
    assert burn.policy("store")["burn_after_reading"] is True
    assert burn.policy("present")["burn_on_read"] is True
    assert burn.policy("present")["preview_bytes"] == 0
    assert burn.policy("transport")["ack"] == "CID_MSG_DATA_ACK"  # inherited from IMMsgData


def test_ephemeral_signals_are_never_stored(registry):
    ephemeral = {info.name for info in registry if info.policy("transport").get("ephemeral")}
    assert {"CID_EXT_TYPING", "CID_EXT_SIGNAL", "CID_SWITCH_P2P_CMD", "CID_OTHER_HEARTBEAT"} <= ephemeral
    for name in ephemeral:
        assert registry.by_name(name).policy("store").get("persist") is False, name


def test_requests_time_out(registry):
    for info in registry:
        if info.reply is not None:
            assert "timeout" in info.policy("transport"), info.name


@pytest.mark.parametrize(
    ("service", "commands"),
    [
        ("login", {0x0101, 0x0709, 0x070B, 0x1003}),
        ("msg", {0x0103, 0x0301, 0x0302, 0x0303, 0x0601, 0x0701, 0x1001, 0x1005, 0x1008, 0x100B}),
        ("router", {0x020A, 0x0707, 0x0708, 0x070A, 0x070D, 0x0301, 0x0601}),
        ("biz", {0x0703, 0x0705, 0x0711, 0x0301, 0x0303, 0x1006, 0x1008}),
        ("file", {0x0501, 0x0503, 0x0504, 0x0505, 0x0731, 0x0733}),
    ],
)
def test_services_host_what_their_teamtalk_counterparts_handle(registry, service, commands):
    hosted = {info.command_id for info in registry.hosted_by(service)}
    missing = sorted(f"0x{cid:04x}" for cid in commands - hosted)
    assert missing == []


def test_server_commands_travel_under_other_and_are_never_client_facing(registry):
    server = [info for info in registry if info.message_class.DESCRIPTOR.file.package == "IM.Server"]
    assert len(server) == 20
    for info in server:
        assert info.service_id == 7 and info.direction == "s2s", info.name


def test_cluster_links(reg_module):
    links = {name: set(svc["links"]) for name, svc in reg_module.CLUSTER_SERVICES.items()}
    assert set(links) == {"login", "msg", "router", "biz", "storage", "file", "gateway", "monitor"}
    assert links["msg"] == {"login", "router", "biz", "file"}
    assert links["gateway"] == {"biz", "router"}
    assert links["biz"] == {"storage"}
    assert links["monitor"] == set(links) - {"monitor"}
