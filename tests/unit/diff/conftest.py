"""Fixtures for the diff rule tests: small base specs, edited into OLD and NEW versions under tmp_path."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from codegen.api import check_spec
from codegen.model import Spec

BASE: dict[str, str] = {
    "ttgen.yaml": """\
spec: chat
version: 1.0.0
syntax: proto2
frame: {kind: teamtalk16, max_frame_bytes: 65536}
options: {java_package: com.example.chat}
modules:
  - base.yaml
  - chat.yaml
cluster: cluster.yaml
""",
    "base.yaml": """\
module: Chat.Base
enums:
  Mood:
    values:
      MOOD_NONE: 0
      MOOD_HAPPY: 1
      MOOD_SAD: 2
    reserved: {numbers: [9], names: [MOOD_OLD]}
  Color:
    values:
      COLOR_RED: 0
      COLOR_BLUE: 1
messages:
  Point:
    fields:
      x: {number: 1, type: int32, label: optional}
  Shape:
    fields:
      y: {number: 1, type: int32, label: optional}
""",
    "chat.yaml": """\
module: Chat.Msg
service: {name: CHAT, id: 2}
messages:
  Note:
    fields:
      user_id: {number: 1, type: uint32, label: required}
      count: {number: 2, type: int32, label: optional}
      text: {number: 3, type: string, label: optional, max_len: 100}
      mood: {number: 4, type: Chat.Base.Mood, label: optional}
      where: {number: 5, type: Chat.Base.Point, label: optional}
      tags: {number: 6, type: string, label: repeated}
      nums: {number: 7, type: int32, label: repeated}
      props: {number: 8, type: "map<string, uint32>"}
      by_name: {number: 10, type: string, oneof: target}
      by_id: {number: 11, type: uint32, oneof: target}
      flag: {number: 12, type: bool, label: optional, default: false}
      stamp: {number: 13, type: fixed32, label: optional}
      blob: {number: 14, type: bytes, label: optional}
      level: {number: 15, type: sint32, label: optional}
      ratio: {number: 16, type: float, label: optional}
    oneofs: [target]
    reserved: {numbers: [9, 20-22], names: [old_field]}
  NoteAck:
    fields:
      user_id: {number: 1, type: uint32, label: required}
  Ping:
    fields:
      seq: {number: 1, type: uint32, label: optional}
commands:
  CID_NOTE: {id: 0x0201, message: Note, direction: c2s, reply: CID_NOTE_ACK}
  CID_NOTE_ACK: {id: 0x0202, message: NoteAck, direction: s2c}
  CID_PING: {id: 0x0203, message: Ping, direction: both}
  CID_PONG: {id: 0x0204, message: Ping, direction: s2c}
stages:
  Note:
    input: {rate: 20/s, max_bytes: 4096, require_auth: true, reject: [self_message]}
    pack: {encrypt: session_aead, compress: none}
    transport: {ack: CID_NOTE_ACK, retransmit: until_ack, max_attempts: 5, timeout: 5s, dedup: per_sender}
    unpack: {verify: true, replay: reject}
    store: {persist: true, at_rest: encrypted, retention: 30d}
    present: {preview_bytes: 37, burn_on_read: false}
""",
    "cluster.yaml": """\
services:
  msg:
    role: msg
    listen: tcp
    hosts: [CID_NOTE, CID_PING]
    links: [biz]
  biz:
    role: biz
    hosts: []
""",
}

# A proto3 spec without required fields or defaults, for syntax and packed-encoding rules.
MINI3: dict[str, str] = {
    "ttgen.yaml": "spec: mini\nversion: 1.0.0\nsyntax: proto3\nmodules: [mini.yaml]\n",
    "mini.yaml": """\
module: Mini
messages:
  Sample:
    fields:
      value: {number: 1, type: int32, label: optional}
      items: {number: 2, type: int32, label: repeated}
""",
}


def write_tree(root: Path, files: Mapping[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


# A presence policy over a user-stat notify and batch.
PRESENCE: dict[str, str] = {
    "ttgen.yaml": "spec: pres\nversion: 1.0.0\nmodules: [buddy.yaml]\npresence: presence.yaml\n",
    "buddy.yaml": """\
module: Pres
service: {name: BUDDY, id: 2}
enums:
  StatType:
    values: {STAT_ONLINE: 1, STAT_OFFLINE: 2}
messages:
  UserStat:
    fields:
      user_id: {number: 1, type: uint32, label: required}
      status: {number: 2, type: StatType, label: required}
  StatNotify:
    fields:
      stat: {number: 1, type: UserStat, label: required}
  StatList:
    fields:
      stats: {number: 1, type: UserStat, label: repeated}
commands:
  CID_STAT_NOTIFY: {id: 0x0201, message: StatNotify, direction: s2c}
  CID_STAT_LIST: {id: 0x0202, message: StatList, direction: s2c}
""",
    "presence.yaml": """\
presence:
  audience: [company]
  coalesce: 2s
  notify: CID_STAT_NOTIFY
  batch: CID_STAT_LIST
  online: STAT_ONLINE
  offline: STAT_OFFLINE
""",
}

# The chat spec with a browser API (the manifest's `web:`) over its messages and enums.
WEB: dict[str, str] = {
    **BASE,
    "ttgen.yaml": BASE["ttgen.yaml"] + "web: web.yaml\n",
    "web.yaml": """\
web:
  http: /api
  websocket: /api/ws
  enums: [Chat.Base.Mood]
  types:
    Line:
      fields:
        id: int
        text: string?
        mood: Chat.Base.Mood
  commands:
    send:
      http: POST /api/send
      request:
        to: int
        text: string
        mood: Chat.Base.Mood?
      reply:
        msg_id: int
        note: Chat.Msg.Note?
    history:
      http: GET /api/history
      ws: false
      reply:
        lines: Line[]
  events:
    msg:
      fields:
        from: int
        line: Line
        seen: int?
    note:
      data: CID_PONG
""",
}

BASES: dict[str, dict[str, str]] = {"chat": BASE, "mini3": MINI3, "presence": PRESENCE, "web": WEB}


@pytest.fixture
def bases() -> dict[str, dict[str, str]]:
    """The base specs cases edit: `chat` (proto2, two modules, cluster, stages), `mini3` (proto3),
    `presence` (a presence policy) and `web` (chat with a browser API)."""
    return {name: dict(files) for name, files in BASES.items()}


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[[str, Mapping[str, str]], Path]:
    """Write a spec's files into tmp_path/<name> and return the folder."""

    def _write(name: str, files: Mapping[str, str]) -> Path:
        return write_tree(tmp_path / name, files)

    return _write


@pytest.fixture
def load() -> Callable[[Path], Spec]:
    """Load and validate a spec folder (the fixture keeps test modules free of codegen.api details)."""

    def _load(path: Path) -> Spec:
        spec, _ = check_spec(path)
        return spec

    return _load
