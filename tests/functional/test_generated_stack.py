"""Functional tests: generate a stack from inline YAML, import it, use its messages, servers and clients."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import pytest

MANIFEST = """
spec: func_chat
version: 0.2.0
syntax: proto3
modules: [chat.yaml]
cluster:
  services:
    msg: {role: msg, hosts: [CID_SEND, CID_SEND_ACK, CID_PING]}
    archive: {role: storage, hosts: [CID_ARCHIVE]}
"""

MODULE = """
module: Func.Chat
service: {name: CHAT, id: 3}
messages:
  Send:
    fields:
      to_user: {number: 1, type: uint32}
      text: {number: 2, type: string, max_len: 100}
      tags: {number: 3, type: "map<string, uint32>"}
      image: {number: 4, type: bytes, oneof: extra}
      link: {number: 5, type: Send.Link, oneof: extra}
    oneofs: [extra]
  Send.Link:
    fields:
      url: {number: 1, type: string}
  SendAck:
    fields:
      msg_id: {number: 1, type: uint64}
  Ping:
    fields: {}
commands:
  CID_SEND: {id: 0x0301, message: Send, direction: c2s, reply: CID_SEND_ACK}
  CID_SEND_ACK: {id: 0x0302, message: SendAck, direction: both}
  CID_PING: {id: 0x0303, message: Ping, direction: both}
  CID_ARCHIVE: {id: 0x0304, message: Send, direction: s2s}
  CID_PUSH: {id: 0x0305, message: Send, direction: s2c}
stages:
  Send:
    input: {max_bytes: 2048}
  CID_SEND:
    input: {max_bytes: 1024}
    transport: {timeout: 5s, retransmit: until_ack}
"""


@pytest.fixture
def stack(build_stack: Callable[[dict[str, str]], Any]) -> Any:
    return build_stack({"ttgen.yaml": MANIFEST, "chat.yaml": MODULE})


def test_messages_round_trip_through_protobuf(stack: Any) -> None:
    pb = stack.module("Func_Chat_pb2")
    msg = pb.Send(to_user=7, text="hi", tags={"a": 1, "b": 2}, link=pb.Send.Link(url="https://x"))
    back = pb.Send.FromString(msg.SerializeToString())
    assert back == msg
    assert back.WhichOneof("extra") == "link"
    assert dict(back.tags) == {"a": 1, "b": 2}


def test_registry_carries_commands_and_merged_stages(stack: Any) -> None:
    registry = stack.module("registry")
    pb = stack.module("Func_Chat_pb2")
    reg = registry.REGISTRY
    assert [c.command_id for c in reg] == [0x0301, 0x0302, 0x0303, 0x0304, 0x0305]
    send = reg.by_name("CID_SEND")
    assert send.message_class is pb.Send
    assert send.service_id == 3 and send.reply == "CID_SEND_ACK" and send.hosted_by == ("msg",)
    # The command's own policy overrides its message's key by key; the message's field constraints ride along
    # in the input policy, where the runtime's input stage enforces them.
    assert send.stages == {
        "input": {"fields": {"text": {"max_len": 100}}, "max_bytes": 1024},
        "transport": {"retransmit": "until_ack", "timeout": "5s"},
    }
    archive_input = {"fields": {"text": {"max_len": 100}}, "max_bytes": 2048}
    assert reg.by_name("CID_ARCHIVE").stages == {"input": archive_input}
    assert registry.CommandId.CID_PING == 0x0303 and registry.SERVICE_IDS == {"CHAT": 3}


def test_server_base_subclass_routes_by_mapping(stack: Any) -> None:
    servers = stack.module("servers")
    pb = stack.module("Func_Chat_pb2")
    base = servers.MsgServiceBase
    assert base.__mapping__ == {0x0301: "on_cid_send", 0x0302: "on_cid_send_ack", 0x0303: "on_cid_ping"}
    assert all(inspect.iscoroutinefunction(getattr(base, m)) for m in base.__mapping__.values())
    with pytest.raises(TypeError):
        base()  # abstract: every handler must be implemented

    class Msg(base):  # type: ignore[misc, valid-type]
        async def on_cid_send(self, ctx: Any, msg: Any) -> Any:
            return pb.SendAck(msg_id=msg.to_user * 10)

        async def on_cid_send_ack(self, ctx: Any, msg: Any) -> None:
            return None

        async def on_cid_ping(self, ctx: Any, msg: Any) -> None:
            return None

    service = Msg()
    reply = asyncio.run(getattr(service, Msg.__mapping__[0x0301])(None, pb.Send(to_user=4)))
    assert reply == pb.SendAck(msg_id=40)
    assert {"archive": servers.ArchiveServiceBase, "msg": base} == servers.SERVICE_BASES


class FakeCore:
    def __init__(self, reply: Any) -> None:
        self.reply = reply
        self.log: list[tuple[str, str, Any]] = []

    async def call(self, command: str, message: Any, *, timeout: float | None = None) -> Any:
        self.log.append(("call", command, timeout))
        return self.reply

    async def send(self, command: str, message: Any) -> None:
        self.log.append(("send", command, None))

    def pushes(self) -> Any:
        return iter(())


def test_client_methods_use_call_for_replies_and_send_otherwise(stack: Any) -> None:
    clients = stack.module("clients")
    pb = stack.module("Func_Chat_pb2")
    core = FakeCore(pb.SendAck(msg_id=1))
    client = clients.FuncChatClient(core)
    ack = asyncio.run(client.send(pb.Send(to_user=1), timeout=2.0))
    asyncio.run(client.ping(pb.Ping()))
    assert ack.msg_id == 1
    assert core.log == [("call", "CID_SEND", 2.0), ("send", "CID_PING", None)]
    # Only client-sendable commands get a method: s2s and s2c commands do not.
    assert not hasattr(client, "archive") and not hasattr(client, "push")
    core.reply = pb.Ping()
    with pytest.raises(clients.UnexpectedReply):
        asyncio.run(client.send(pb.Send()))


def test_stack_folder_is_relocatable(stack: Any, tmp_path: Any) -> None:
    """Only relative imports between the stack's modules: no module names the folder it was generated in."""
    for path in stack.root.glob("*.py"):
        text = path.read_text()
        assert "import Func_Chat_pb2" not in text.replace("from . import Func_Chat_pb2", ""), path.name
        assert str(tmp_path) not in text
