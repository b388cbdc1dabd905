"""The registry carries the spec's enums (one IntEnum each, nested and clashing names made unique) and their
named bits, and the stack's CommandId: what services read instead of numbers typed again by hand."""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import pytest

MANIFEST = """
spec: func_enums
version: 0.1.0
syntax: proto2
modules: [base.yaml, chat.yaml]
cluster:
  services:
    msg: {role: msg, hosts: [CID_SEND]}
"""

BASE = """
module: TtEnums.Base
enums:
  Kind:
    doc: Kind of message; bit 0x10 marks a group one.
    values: {KIND_TEXT: 1, KIND_GROUP_TEXT: 17}
    bits: {GROUP: 0x10, URGENT: 0x100}
  Status:
    values: {STATUS_OK: 0, None: 1}
messages:
  Stat:
    fields:
      status: {number: 1, type: Status, label: required}
"""

CHAT = """
module: TtEnums.Chat
service: {name: CHAT, id: 3}
enums:
  Kind:
    values: {CHAT_KIND_A: 0}
  Send.Mode:
    values: {MODE_A: 0, MODE_B: 2}
messages:
  Send:
    fields:
      kind: {number: 1, type: TtEnums.Base.Kind, label: required}
      mode: {number: 2, type: Send.Mode, label: optional}
commands:
  CID_SEND: {id: 0x0301, message: Send, direction: c2s}
"""


@pytest.fixture
def registry(build_stack: Callable[[dict[str, str]], Any]) -> Any:
    stack = build_stack({"ttgen.yaml": MANIFEST, "base.yaml": BASE, "chat.yaml": CHAT})
    return stack.module("registry").REGISTRY


def test_enums_and_bits_reach_the_registry(registry: Any) -> None:
    enums = registry.enums
    # Two packages declare `Kind`: both get package-qualified names; the others keep their simple names.
    kind = enums.TtEnums_Base_Kind
    assert issubclass(kind, enum.IntEnum)
    assert {m.name: int(m) for m in kind} == {"KIND_TEXT": 1, "KIND_GROUP_TEXT": 17}
    assert [m.name for m in enums.TtEnums_Chat_Kind] == ["CHAT_KIND_A"]
    assert enums.TtEnums_Base_KindBits.GROUP == 0x10 and enums.TtEnums_Base_KindBits.URGENT == 0x100
    assert kind.KIND_GROUP_TEXT & enums.TtEnums_Base_KindBits.GROUP
    # A nested enum is named with `_`; a value named by a Python keyword gets a trailing `_`.
    assert int(enums.Send_Mode.MODE_B) == 2
    assert int(enums.Status.None_) == 1
    assert not hasattr(enums, "StatusBits")


def test_registry_carries_the_command_ids(registry: Any) -> None:
    assert int(registry.command_ids.CID_SEND) == registry.by_name("CID_SEND").command_id == 0x0301


def test_runtime_reads_the_bundled_specs_bits() -> None:
    """The input stage's group bit and a connection's mobile class come from the spec's named bits."""
    from generated.teamtalk.registry import REGISTRY
    from runtime.connection import Connection, Kind
    from runtime.stages import build_stages

    assert REGISTRY.bits("MsgType") == {"GROUP": 0x10} == REGISTRY.bits("IM.BaseDefine.MsgType")
    assert REGISTRY.bits("SessionType") == {}
    stages = build_stages(REGISTRY)
    assert stages[REGISTRY.by_name("CID_MSG_DATA").command_id].input.group_bit == 0x10
    assert stages[REGISTRY.by_name("CID_MSG_TIME_REQUEST").command_id].input.group_bit == 0
    conn = Connection(REGISTRY, Kind.CLIENT_SESSION, 0.0)
    conn.authenticate(7, int(REGISTRY.enums.ClientType.CLIENT_TYPE_IOS))
    assert conn.is_mobile
    conn = Connection(REGISTRY, Kind.CLIENT_SESSION, 0.0)
    conn.authenticate(7, int(REGISTRY.enums.ClientType.CLIENT_TYPE_WINDOWS))
    assert not conn.is_mobile


def test_a_derived_registry_keeps_the_enums() -> None:
    from generated.teamtalk.registry import REGISTRY

    derived = REGISTRY.derive(presence={**(REGISTRY.presence or {}), "coalesce_ms": 100})
    assert derived.enums is REGISTRY.enums and derived.command_ids is REGISTRY.command_ids
    assert derived.bits("MsgType") == {"GROUP": 0x10} and derived.presence is not None
    assert derived.presence["coalesce_ms"] == 100 and len(derived) == len(REGISTRY)
