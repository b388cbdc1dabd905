"""One test per evolution rule: a base spec edited into OLD and NEW, the rule id, category and location."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from codegen.diff import RULES, Category, Finding, diff_specs
from codegen.model import Frame, Spec

Edit = tuple[str, str, str]  # (file, text to find, replacement): every occurrence is replaced
C, T, B = "chat.yaml", "ttgen.yaml", "base.yaml"
CL = "cluster.yaml"

EXTRA_MODULE = """\
module: Chat.Extra
messages:
  Extra:
    fields:
      a: {number: 1, type: int32, label: optional}
"""
EXTRA_SERVICE = """\
module: Chat.Extra
service: {name: EXTRA, id: 3}
messages:
  Extra:
    fields:
      a: {number: 1, type: int32, label: optional}
commands:
  CID_EXTRA: {id: 0x0301, message: Extra, direction: s2c}
"""
PLUGIN = """\
plugin: shake
doc: Match users who shake at the same time.
module: Chat.Shake
messages:
  Shake:
    fields:
      at: {number: 1, type: uint32, label: optional}
"""
ADD_MODULE = (T, "  - chat.yaml\n", "  - chat.yaml\n  - extra.yaml\n")
ADD_PLUGIN = (T, "cluster: cluster.yaml\n", "cluster: cluster.yaml\nplugins: [shake.yaml]\n")
REMOVE_PONG = (C, "  CID_PONG: {id: 0x0204, message: Ping, direction: s2c}\n", "")
COUNT = "count: {number: 2, type: int32, label: optional}"
RES = "reserved: {numbers: [9, 20-22], names: [old_field]}"
ENUM_RES = "reserved: {numbers: [9], names: [MOOD_OLD]}"
COLOR = "  Color:\n    values:\n      COLOR_RED: 0\n      COLOR_BLUE: 1\n"
WB = "web.yaml"
WEB_EXTRA_TYPE = (WB, "  commands:\n", "    Extra:\n      fields:\n        a: int\n  commands:\n")
WEB_TYPING = (WB, "  events:\n", "  events:\n    typing:\n      fields:\n        from: int\n")
WEB_PING = (WB, "  events:\n", "    ping:\n      doc: WebSocket only.\n  events:\n")
SHAPE = "  Shape:\n    fields:\n      y: {number: 1, type: int32, label: optional}\n"


@dataclass(frozen=True)
class Case:
    """`loc` is (side, file, snippet): the finding points at the first occurrence of snippet in that file."""

    rule: str
    category: str
    loc: tuple[str, str, str | None]
    new: Sequence[Edit] = ()
    old: Sequence[Edit] = ()
    new_files: Mapping[str, str] = field(default_factory=dict)
    old_files: Mapping[str, str] = field(default_factory=dict)
    base: str = "chat"
    absent: Sequence[str] = ()


def n(rule: str, cat: str, file: str, snippet: str | None, *edits: Edit, **kw: object) -> Case:
    """A case whose finding points into NEW."""
    return Case(rule, cat, ("new", file, snippet), new=edits, **kw)  # type: ignore[arg-type]


def o(rule: str, cat: str, file: str, snippet: str | None, *edits: Edit, **kw: object) -> Case:
    """A case whose finding points into OLD (deletions)."""
    return Case(rule, cat, ("old", file, snippet), new=edits, **kw)  # type: ignore[arg-type]


W, L, S, SEM, LIFE, OK = "wire-breaking", "lossy", "source-breaking", "semantic", "lifecycle", "compatible"

CASES: list[Case] = [
    # spec, frame, modules, packages, options, plugins, versions
    n("SPEC_NAME_CHANGED", S, T, None, (T, "spec: chat\n", "spec: talk\n")),
    n("SYNTAX_CHANGED", W, T, None, (T, "syntax: proto3", "syntax: proto2"), base="mini3"),
    n(
        "FRAME_VERSION_CHANGED",
        W,
        T,
        None,
        (T, "max_frame_bytes: 65536}", "max_frame_bytes: 65536, version: 2}"),
    ),
    n("FRAME_MAX_BYTES_LOWERED", SEM, T, None, (T, "65536", "32768")),
    n("FRAME_MAX_BYTES_RAISED", SEM, T, None, (T, "65536", "131072")),
    n("MODULE_ADDED", OK, "extra.yaml", None, ADD_MODULE, new_files={"extra.yaml": EXTRA_MODULE}),
    Case(
        "MODULE_REMOVED",
        S,
        ("old", "extra.yaml", None),
        old=[ADD_MODULE],
        old_files={"extra.yaml": EXTRA_MODULE},
    ),
    n(
        "PACKAGE_CHANGED",
        S,
        B,
        None,
        (B, "module: Chat.Base", "module: Chat.Core"),
        (C, "Chat.Base.", "Chat.Core."),
        absent=["FIELD_ENUM_TYPE_CHANGED", "FIELD_MESSAGE_TYPE_CHANGED", "MESSAGE_DELETED", "ENUM_DELETED"],
    ),
    n("FILE_OPTION_CHANGED", S, B, None, (T, "com.example.chat", "com.example.talk")),
    n("PLUGIN_ADDED", OK, "shake.yaml", "plugin:", ADD_PLUGIN, new_files={"shake.yaml": PLUGIN}),
    Case(
        "PLUGIN_REMOVED",
        S,
        ("old", "shake.yaml", "plugin:"),
        old=[ADD_PLUGIN],
        old_files={"shake.yaml": PLUGIN},
    ),
    n("VERSION_MAJOR_BUMP_MISSING", W, T, None, REMOVE_PONG),
    n(
        "VERSION_MINOR_BUMP_MISSING",
        OK,
        T,
        None,
        (C, "commands:\n", "commands:\n  CID_PONG2: {id: 0x0205, message: Ping, direction: s2c}\n"),
    ),
    n("VERSION_DECREASED", SEM, T, None, (T, "version: 1.0.0", "version: 0.9.0")),
    # messages and oneofs
    n(
        "MESSAGE_ADDED",
        OK,
        C,
        "Pong:",
        (
            C,
            "commands:\n",
            "  Pong:\n    fields:\n      seq: {number: 1, type: uint32, label: optional}\ncommands:\n",
        ),
    ),
    o("MESSAGE_DELETED", S, B, "Shape:", (B, SHAPE, "")),
    n(
        "MESSAGE_RENAMED",
        S,
        B,
        "Spot:",
        (B, "  Point:\n", "  Spot:\n    renamed_from: Point\n"),
        (C, "Chat.Base.Point", "Chat.Base.Spot"),
        absent=["FIELD_MESSAGE_TYPE_CHANGED", "MESSAGE_DELETED"],
    ),
    n(
        "MESSAGE_MOVED",
        S,
        C,
        "Shape:",
        (B, SHAPE, ""),
        (
            C,
            "  NoteAck:\n",
            "  Shape:\n    renamed_from: Chat.Base.Shape"
            "\n    fields:\n      y: {number: 1, type: int32, label: optional}\n  NoteAck:\n",
        ),
    ),
    n(
        "MESSAGE_RESERVED_NUMBER_REMOVED",
        W,
        C,
        "{numbers: [9], names",
        (C, RES, "reserved: {numbers: [9], names: [old_field]}"),
    ),
    n(
        "MESSAGE_RESERVED_NAME_REMOVED",
        SEM,
        C,
        "{numbers: [9, 20-22]}",
        (C, RES, "reserved: {numbers: [9, 20-22]}"),
    ),
    n(
        "ONEOF_ADDED",
        OK,
        C,
        "Note:",
        (C, "oneofs: [target]", "oneofs: [target, alt]"),
        (C, "      ratio:", "      alt_a: {number: 17, type: string, oneof: alt}\n      ratio:"),
    ),
    n(
        "ONEOF_DELETED",
        S,
        C,
        "Note:",
        (C, "    oneofs: [target]\n", ""),
        (C, "oneof: target", "label: optional"),
    ),
    # fields
    n(
        "FIELD_ADDED",
        OK,
        C,
        "extra:",
        (C, "      ratio:", "      extra: {number: 17, type: string, label: optional}\n      ratio:"),
    ),
    n(
        "FIELD_ADDED_REQUIRED",
        W,
        C,
        "extra:",
        (C, "      ratio:", "      extra: {number: 17, type: string, label: required}\n      ratio:"),
    ),
    o("FIELD_DELETED_NUMBER_NOT_RESERVED", W, C, "count:", (C, f"      {COUNT}\n", "")),
    o(
        "FIELD_DELETED_NAME_NOT_RESERVED",
        S,
        C,
        "count:",
        (C, f"      {COUNT}\n", ""),
        (C, "[9, 20-22]", "[2, 9, 20-22]"),
        absent=["FIELD_DELETED_NUMBER_NOT_RESERVED"],
    ),
    o(
        "FIELD_DELETED_REQUIRED",
        W,
        C,
        "user_id:",
        (C, "      user_id: {number: 1, type: uint32, label: required}\n      count", "      count"),
        (C, RES, "reserved: {numbers: [1, 9, 20-22], names: [old_field, user_id]}"),
    ),
    o(
        "FIELD_DELETED",
        S,
        C,
        "count:",
        (C, f"      {COUNT}\n", ""),
        (C, RES, "reserved: {numbers: [2, 9, 20-22], names: [old_field, count]}"),
        absent=["FIELD_DELETED_NUMBER_NOT_RESERVED", "FIELD_DELETED_NAME_NOT_RESERVED"],
    ),
    n(
        "FIELD_RENAMED",
        S,
        C,
        "total:",
        (C, "count: {number: 2,", "total: {number: 2, renamed_from: count,"),
        absent=["FIELD_NAME_CHANGED", "FIELD_ADDED"],
    ),
    n("FIELD_NAME_CHANGED", S, C, "total:", (C, "count: {number: 2,", "total: {number: 2,")),
    n("FIELD_NUMBER_CHANGED", W, C, "count:", (C, "count: {number: 2,", "count: {number: 17,")),
    n("FIELD_TYPE_INCOMPATIBLE", W, C, "stamp:", (C, "type: fixed32", "type: uint32")),
    n("FIELD_TYPE_WIDENED", L, C, "count:", (C, COUNT, COUNT.replace("int32", "int64"))),
    n("FIELD_TYPE_NARROWED", L, C, "count:", old=[(C, COUNT, COUNT.replace("int32", "int64"))]),
    n("FIELD_TYPE_SIGN_CHANGED", L, C, "count:", (C, COUNT, COUNT.replace("int32", "uint32"))),
    n(
        "FIELD_TYPE_STRING_BYTES",
        L,
        C,
        "text:",
        (C, "text: {number: 3, type: string", "text: {number: 3, type: bytes"),
    ),
    n(
        "FIELD_TYPE_BOOL_CHANGED",
        L,
        C,
        "flag:",
        (C, "type: bool, label: optional, default: false", "type: uint32, label: optional"),
    ),
    n("FIELD_TYPE_ENUM_INT_CHANGED", L, C, "mood:", (C, "type: Chat.Base.Mood", "type: int32")),
    n("FIELD_TYPE_MESSAGE_BYTES", L, C, "where:", (C, "type: Chat.Base.Point", "type: bytes")),
    n("FIELD_MESSAGE_TYPE_CHANGED", W, C, "where:", (C, "type: Chat.Base.Point", "type: Chat.Base.Shape")),
    n("FIELD_ENUM_TYPE_CHANGED", W, C, "mood:", (C, "type: Chat.Base.Mood", "type: Chat.Base.Color")),
    n(
        "FIELD_MAP_CHANGED",
        W,
        C,
        "props:",
        (C, 'type: "map<string, uint32>"', "type: string, label: repeated"),
    ),
    n(
        "FIELD_CARDINALITY_CHANGED",
        L,
        C,
        "tags:",
        (C, "type: string, label: repeated", "type: string, label: optional"),
    ),
    n(
        "FIELD_CARDINALITY_CHANGED_PACKED",
        W,
        "mini.yaml",
        "value:",
        (
            "mini.yaml",
            "value: {number: 1, type: int32, label: optional}",
            "value: {number: 1, type: int32, label: repeated}",
        ),
        base="mini3",
    ),
    n("FIELD_MADE_REQUIRED", W, C, "count:", (C, COUNT, COUNT.replace("optional", "required"))),
    n(
        "FIELD_MADE_OPTIONAL",
        W,
        C,
        "user_id:",
        (
            C,
            "user_id: {number: 1, type: uint32, label: required}",
            "user_id: {number: 1, type: uint32, label: optional}",
        ),
    ),
    n(
        "FIELD_ONEOF_CHANGED",
        L,
        C,
        "by_id:",
        (C, "type: uint32, oneof: target", "type: uint32, label: optional"),
    ),
    n("FIELD_DEFAULT_CHANGED", SEM, C, "flag:", (C, "default: false", "default: true")),
    n("FIELD_CONSTRAINT_TIGHTENED", SEM, C, "text:", (C, "max_len: 100", "max_len: 50")),
    n("FIELD_CONSTRAINT_RELAXED", SEM, C, "text:", (C, "max_len: 100", "max_len: 200")),
    n(
        "FIELD_CONSTRAINT_CHANGED",
        SEM,
        C,
        "text:",
        (C, "max_len: 100", "max_len: 100, pattern: '^b'"),
        old=[(C, "max_len: 100", "max_len: 100, pattern: '^a'")],
    ),
    n("FIELD_DEPRECATED", OK, C, "count:", (C, COUNT, COUNT[:-1] + ", deprecated: true}")),
    # enums and enum values
    n("ENUM_ADDED", OK, B, "Size:", (B, "messages:\n", "  Size:\n    values:\n      SIZE_S: 0\nmessages:\n")),
    o("ENUM_DELETED", S, B, "Color:", (B, COLOR, "")),
    n(
        "ENUM_RENAMED",
        S,
        B,
        "Hue:",
        (B, "  Color:\n", "  Hue:\n    renamed_from: Color\n"),
        absent=["ENUM_DELETED"],
    ),
    n(
        "ENUM_MOVED",
        S,
        C,
        "Color:",
        (B, COLOR, ""),
        (
            C,
            "messages:\n  Note:",
            "enums:\n  Color:\n    renamed_from: "
            "Chat.Base.Color\n    values:\n      COLOR_RED: 0\n      COLOR_BLUE: 1\nmessages:\n  Note:",
        ),
    ),
    n(
        "ENUM_VALUE_ADDED",
        OK,
        B,
        "MOOD_CALM",
        (B, "      MOOD_SAD: 2\n", "      MOOD_SAD: 2\n      MOOD_CALM: 3\n"),
    ),
    o("ENUM_VALUE_DELETED_NUMBER_NOT_RESERVED", W, B, "MOOD_SAD", (B, "      MOOD_SAD: 2\n", "")),
    o(
        "ENUM_VALUE_DELETED_NAME_NOT_RESERVED",
        S,
        B,
        "MOOD_SAD",
        (B, "      MOOD_SAD: 2\n", ""),
        (B, "numbers: [9]", "numbers: [2, 9]"),
        absent=["ENUM_VALUE_DELETED_NUMBER_NOT_RESERVED"],
    ),
    o(
        "ENUM_VALUE_DELETED",
        S,
        B,
        "MOOD_SAD",
        (B, "      MOOD_SAD: 2\n", ""),
        (B, ENUM_RES, "reserved: {numbers: [2, 9], names: [MOOD_OLD, MOOD_SAD]}"),
    ),
    n("ENUM_VALUE_NUMBER_CHANGED", W, B, "MOOD_SAD", (B, "MOOD_SAD: 2", "MOOD_SAD: 3")),
    n("ENUM_VALUE_NAME_CHANGED", S, B, "MOOD_GLUM", (B, "MOOD_SAD: 2", "MOOD_GLUM: 2")),
    n(
        "ENUM_VALUE_RENAMED",
        S,
        B,
        "MOOD_GLUM",
        (B, "MOOD_SAD: 2", "MOOD_GLUM: {value: 2, renamed_from: MOOD_SAD}"),
        absent=["ENUM_VALUE_NAME_CHANGED"],
    ),
    n(
        "ENUM_RESERVED_NUMBER_REMOVED",
        W,
        B,
        "{names: [MOOD_OLD]}",
        (B, ENUM_RES, "reserved: {names: [MOOD_OLD]}"),
    ),
    n("ENUM_RESERVED_NAME_REMOVED", SEM, B, "{numbers: [9]}", (B, ENUM_RES, "reserved: {numbers: [9]}")),
    n(
        "ENUM_DEFAULT_CHANGED",
        SEM,
        B,
        "COLOR_BLUE",
        (B, "COLOR_RED: 0\n      COLOR_BLUE: 1", "COLOR_BLUE: 1\n      COLOR_RED: 0"),
    ),
    n(
        "ENUM_ALIAS_REMOVED",
        S,
        B,
        "Color:",
        old=[
            (B, "      COLOR_BLUE: 1\n", "      COLOR_BLUE: 1\n      COLOR_ROUGE: 0\n    allow_alias: true\n")
        ],
    ),
    # protocol services and commands
    n("SERVICE_ADDED", OK, "extra.yaml", "{name: EXTRA", ADD_MODULE, new_files={"extra.yaml": EXTRA_SERVICE}),
    Case(
        "SERVICE_REMOVED",
        W,
        ("old", "extra.yaml", "{name: EXTRA"),
        old=[ADD_MODULE],
        old_files={"extra.yaml": EXTRA_SERVICE},
    ),
    n("SERVICE_ID_CHANGED", W, C, "{name: CHAT", (C, "id: 2}", "id: 3}"), (C, "id: 0x02", "id: 0x03")),
    n("SERVICE_RENAMED", S, C, "{name: TALK", (C, "name: CHAT", "name: TALK")),
    n(
        "COMMAND_ADDED",
        OK,
        C,
        "CID_PONG2:",
        (C, "commands:\n", "commands:\n  CID_PONG2: {id: 0x0205, message: Ping, direction: s2c}\n"),
    ),
    o("COMMAND_REMOVED", W, C, "CID_PONG:", REMOVE_PONG),
    n(
        "COMMAND_RENAMED",
        S,
        C,
        "CID_PONG2:",
        (C, "CID_PONG: {id: 0x0204,", "CID_PONG2: {id: 0x0204, renamed_from: CID_PONG,"),
        absent=["COMMAND_ID_REUSED", "COMMAND_REMOVED"],
    ),
    n("COMMAND_ID_CHANGED", W, C, "CID_PONG:", (C, "id: 0x0204", "id: 0x0205")),
    n("COMMAND_ID_REUSED", W, C, "CID_PANG:", (C, "CID_PONG:", "CID_PANG:")),
    n(
        "COMMAND_SERVICE_CHANGED",
        W,
        "extra.yaml",
        "CID_PONG:",
        REMOVE_PONG,
        ADD_MODULE,
        new_files={
            "extra.yaml": EXTRA_SERVICE.replace(
                "  CID_EXTRA:",
                "  CID_PONG: {id: 0x0302, message: Chat.Msg.Ping, direction: s2c}\n  CID_EXTRA:",
            )
        },
    ),
    n("COMMAND_MESSAGE_CHANGED", W, C, "CID_PONG:", (C, "0x0204, message: Ping", "0x0204, message: NoteAck")),
    n(
        "COMMAND_REPLY_CHANGED",
        W,
        C,
        "CID_PING:",
        (C, "direction: both}", "direction: both, reply: CID_NOTE_ACK}"),
        old=[(C, "direction: both}", "direction: both, reply: CID_PONG}")],
    ),
    n(
        "COMMAND_REPLY_REMOVED",
        W,
        C,
        "CID_NOTE:",
        (C, "direction: c2s, reply: CID_NOTE_ACK}", "direction: c2s}"),
    ),
    n(
        "COMMAND_REPLY_ADDED",
        LIFE,
        C,
        "CID_PING:",
        (C, "direction: both}", "direction: both, reply: CID_PONG}"),
    ),
    n(
        "COMMAND_DIRECTION_CHANGED",
        LIFE,
        C,
        "CID_PONG:",
        (C, "message: Ping, direction: s2c", "message: Ping, direction: both"),
        (CL, "hosts: [CID_NOTE, CID_PING]", "hosts: [CID_NOTE, CID_PING, CID_PONG]"),
    ),
    n(
        "COMMAND_HOSTING_CHANGED",
        LIFE,
        C,
        "CID_PING:",
        (CL, "hosts: [CID_NOTE, CID_PING]", "hosts: [CID_NOTE]"),
        (CL, "hosts: []", "hosts: [CID_PING]"),
    ),
    n(
        "COMMAND_DELIVERY_CHANGED",
        LIFE,
        C,
        "CID_PONG:",
        (CL, "links: [biz]", "links: [biz]\n    receives: [CID_PONG]"),
    ),
    n(
        "COMMAND_DEPRECATED",
        OK,
        C,
        "CID_PONG:",
        (C, "direction: s2c}\nstages", "direction: s2c, deprecated: true}\nstages"),
    ),
    n(
        "CLUSTER_SERVICE_ADDED",
        OK,
        CL,
        "log:",
        (CL, "    hosts: []\n", "    hosts: []\n  log:\n    role: log\n"),
    ),
    Case(
        "CLUSTER_SERVICE_REMOVED",
        LIFE,
        ("old", CL, "log:"),
        old=[(CL, "    hosts: []\n", "    hosts: []\n  log:\n    role: log\n")],
    ),
    n("CLUSTER_LISTEN_CHANGED", LIFE, CL, "msg:", (CL, "listen: tcp", "listen: tcp+http")),
    n("CLUSTER_LINKS_CHANGED", LIFE, CL, "msg:", (CL, "links: [biz]", "links: []")),
    # stage policies
    n("STAGE_TIGHTENED", SEM, C, "rate:", (C, "rate: 20/s", "rate: 5/s")),
    n("STAGE_RELAXED", SEM, C, "rate:", (C, "rate: 20/s", "rate: 50/s")),
    n("STAGE_CHANGED", SEM, C, "timeout:", (C, "timeout: 5s", "timeout: 10s")),
    o("STAGE_ACK_REMOVED", SEM, C, "ack: CID_NOTE_ACK, retransmit", (C, "ack: CID_NOTE_ACK, ", "")),
    n("STAGE_DELIVERY_WEAKENED", SEM, C, "retransmit:", (C, "retransmit: until_ack", "retransmit: none")),
    n("STAGE_ENCRYPTION_REMOVED", SEM, C, "encrypt:", (C, "encrypt: session_aead", "encrypt: none")),
    n("STAGE_AT_REST_WEAKENED", SEM, C, "at_rest:", (C, "at_rest: encrypted", "at_rest: plain")),
    n("STAGE_PERSIST_DISABLED", SEM, C, "persist:", (C, "persist: true", "persist: false")),
    n("STAGE_RETENTION_SHORTENED", SEM, C, "retention:", (C, "retention: 30d", "retention: 7d")),
    n("STAGE_AUTH_RELAXED", SEM, C, "require_auth:", (C, "require_auth: true", "require_auth: false")),
    n("STAGE_VERIFY_RELAXED", SEM, C, "verify:", (C, "verify: true", "verify: false")),
    # presence policy
    n(
        "PRESENCE_CHANGED",
        SEM,
        "presence.yaml",
        "5s",
        ("presence.yaml", "coalesce: 2s", "coalesce: 5s"),
        base="presence",
    ),
    # the browser API (`web:`)
    Case("WEB_API_ADDED", OK, ("new", WB, "http: /api"), old=[(T, "web: web.yaml\n", "")], base="web"),
    o("WEB_API_REMOVED", W, WB, "http: /api", (T, "web: web.yaml\n", ""), base="web"),
    n("WEB_ENDPOINT_CHANGED", W, WB, "/api/socket", (WB, "/api/ws", "/api/socket"), base="web"),
    n("WEB_TYPE_ADDED", OK, WB, "Extra:", WEB_EXTRA_TYPE, base="web"),
    Case("WEB_TYPE_DELETED", S, ("old", WB, "Extra:"), old=[WEB_EXTRA_TYPE], base="web"),
    n("WEB_EVENT_ADDED", OK, WB, "typing:", WEB_TYPING, base="web"),
    Case("WEB_EVENT_DELETED", W, ("old", WB, "typing:"), old=[WEB_TYPING], base="web"),
    n("WEB_EVENT_DATA_CHANGED", W, WB, "CID_PING", (WB, "data: CID_PONG", "data: CID_PING"), base="web"),
    n("WEB_COMMAND_ADDED", OK, WB, "ping:", WEB_PING, base="web"),
    Case("WEB_COMMAND_DELETED", W, ("old", WB, "ping:"), old=[WEB_PING], base="web"),
    n(
        "WEB_COMMAND_ROUTE_CHANGED",
        W,
        WB,
        "PUT /api/send",
        (WB, "POST /api/send", "PUT /api/send"),
        base="web",
    ),
    n(
        "WEB_COMMAND_AUTH_CHANGED",
        SEM,
        WB,
        "false\n      request",
        (WB, "POST /api/send\n", "POST /api/send\n      auth: false\n"),
        base="web",
    ),
    n(
        "WEB_FIELD_ADDED",
        OK,
        WB,
        "number",
        (WB, "seen: int?\n", "seen: int?\n        extra: number\n"),
        base="web",
    ),
    n(
        "WEB_REQUIRED_FIELD_ADDED",
        W,
        WB,
        "bool",
        (WB, "        text: string\n", "        text: string\n        subject: bool\n"),
        base="web",
    ),
    o("WEB_FIELD_DELETED", W, WB, "int\n        line:", (WB, "        from: int\n", ""), base="web"),
    n(
        "WEB_FIELD_TYPE_CHANGED",
        W,
        WB,
        "string\n        line:",
        (WB, "from: int\n", "from: string\n"),
        base="web",
    ),
    n(
        "WEB_FIELD_OPTIONALITY_CHANGED",
        W,
        WB,
        "Line?\n        seen",
        (WB, "line: Line\n", "line: Line?\n"),
        base="web",
    ),
]


def _apply(files: Mapping[str, str], edits: Sequence[Edit], extra: Mapping[str, str]) -> dict[str, str]:
    out = dict(files)
    for name, find, repl in edits:
        assert find in out[name], f"edit does not apply: {find!r} not in {name}"
        out[name] = out[name].replace(find, repl)
    out.update(extra)
    return out


def _position(text: str, snippet: str | None) -> tuple[int, int]:
    if snippet is None:
        return 1, 1
    index = text.index(snippet)
    return text.count("\n", 0, index) + 1, index - (text.rfind("\n", 0, index) + 1) + 1


Build = Callable[[Case], tuple[list[Finding], dict[str, dict[str, str]]]]


@pytest.fixture
def run_case(
    bases: dict[str, dict[str, str]],
    write_spec: Callable[[str, Mapping[str, str]], Path],
    load: Callable[[Path], Spec],
) -> Build:
    def _run(case: Case) -> tuple[list[Finding], dict[str, dict[str, str]]]:
        files = {
            "old": _apply(bases[case.base], case.old, case.old_files),
            "new": _apply(bases[case.base], case.new, case.new_files),
        }
        old, new = load(write_spec("old", files["old"])), load(write_spec("new", files["new"]))
        return diff_specs(old, new), files

    return _run


@pytest.mark.parametrize("case", CASES, ids=[c.rule for c in CASES])
def test_rule(case: Case, run_case: Build) -> None:
    findings, files = run_case(case)
    side, file, snippet = case.loc
    line, col = _position(files[side][file], snippet)
    hits = [f for f in findings if f.rule == case.rule]
    assert hits, f"{case.rule} not reported; got {[f.format() for f in findings]}"
    located = [
        f for f in hits if f.loc.file.endswith(f"{side}/{file}") and (f.loc.line, f.loc.col) == (line, col)
    ]
    assert located, f"{case.rule} expected at {side}/{file}:{line}:{col}; got {[str(f.loc) for f in hits]}"
    assert {f.category.value for f in located} == {case.category}
    assert {f.severity for f in located} <= {"high", "medium", "low", "info"}
    reported = {f.rule for f in findings}
    assert not reported & set(case.absent), f"unexpected {reported & set(case.absent)}"


def test_every_catalog_rule_has_a_case() -> None:
    covered = {c.rule for c in CASES} | {
        "FRAME_KIND_CHANGED",
        "VERSION_UNPARSEABLE",
    }  # model-level tests below
    assert covered == set(RULES)


def test_identical_specs_have_no_findings(run_case: Build) -> None:
    findings, _ = run_case(Case("none", OK, ("new", T, None)))
    assert findings == []


def test_frame_kind_changed(
    bases: dict[str, dict[str, str]],
    write_spec: Callable[[str, Mapping[str, str]], Path],
    load: Callable[[Path], Spec],
) -> None:
    # The loader only accepts teamtalk16 today, so the other side is built on the model.
    old = load(write_spec("old", bases["chat"]))
    new = replace(old, frame=Frame(kind="length32", max_frame_bytes=old.frame.max_frame_bytes))
    found = [f for f in diff_specs(old, new) if f.rule == "FRAME_KIND_CHANGED"]
    assert [f.category for f in found] == [Category.WIRE_BREAKING]
    assert found[0].loc == new.loc


def test_version_unparseable(
    bases: dict[str, dict[str, str]],
    write_spec: Callable[[str, Mapping[str, str]], Path],
    load: Callable[[Path], Spec],
) -> None:
    old = load(write_spec("old", bases["chat"]))
    new = replace(old, version="next")
    found = [f for f in diff_specs(old, new) if f.rule == "VERSION_UNPARSEABLE"]
    assert len(found) == 1 and "'next'" in found[0].message


JSON_WIRE: Edit = (T, "syntax: proto2\n", "syntax: proto2\nwire: json\n")
JSON_CASES = [c for c in CASES if RULES[c.rule].json is not None]


@pytest.mark.parametrize("case", JSON_CASES, ids=[c.rule for c in JSON_CASES])
@pytest.mark.parametrize("sides", ["both", "old", "new"])
def test_json_rule_is_wire_breaking_when_a_side_says_wire_json(
    case: Case, sides: str, run_case: Build
) -> None:
    # Names travel on the wire once either version says peers exchange the JSON form.
    json_case = replace(
        case,
        old=[*case.old, JSON_WIRE] if sides in ("both", "old") else case.old,
        new=[*case.new, JSON_WIRE] if sides in ("both", "new") else case.new,
    )
    findings, _ = run_case(json_case)
    hits = [f for f in findings if f.rule == case.rule]
    assert hits and {f.category for f in hits} == {Category.WIRE_BREAKING}


def test_rename_without_hint_is_not_wire_breaking_on_a_binary_wire(run_case: Build) -> None:
    rename = (C, "count: {number: 2,", "total: {number: 2,")
    findings, _ = run_case(Case("x", S, ("new", C, None), new=[rename]))
    assert {(f.rule, f.category) for f in findings if f.subject.endswith(".total")} == {
        ("FIELD_NAME_CHANGED", Category.SOURCE_BREAKING)
    }
    assert not [f for f in findings if f.category is Category.WIRE_BREAKING]


def test_wire_key_is_loaded_and_defaults_to_binary(
    bases: dict[str, dict[str, str]],
    write_spec: Callable[[str, Mapping[str, str]], Path],
    load: Callable[[Path], Spec],
) -> None:
    assert load(write_spec("plain", bases["chat"])).wire == "binary"
    json_files = _apply(bases["chat"], [JSON_WIRE], {})
    assert load(write_spec("json", json_files)).wire == "json"


REQUIRED_USER = "user_id: {number: 1, type: uint32, label: required}"


@pytest.mark.parametrize(
    ("old_label", "new_label", "rules"),
    [
        ("required", "optional", {"FIELD_MADE_OPTIONAL": W}),
        ("optional", "required", {"FIELD_MADE_REQUIRED": W}),
        ("required", "repeated", {"FIELD_MADE_OPTIONAL": W, "FIELD_CARDINALITY_CHANGED": L}),
        ("repeated", "required", {"FIELD_MADE_REQUIRED": W, "FIELD_CARDINALITY_CHANGED": L}),
        ("optional", "repeated", {"FIELD_CARDINALITY_CHANGED": L}),
        ("repeated", "optional", {"FIELD_CARDINALITY_CHANGED": L}),
    ],
)
def test_proto2_label_changes_by_what_the_runtime_refuses(
    old_label: str, new_label: str, rules: dict[str, str], run_case: Build
) -> None:
    case = Case(
        "x",
        W,
        ("new", C, None),
        old=[(C, REQUIRED_USER, REQUIRED_USER.replace("required", old_label))],
        new=[(C, REQUIRED_USER, REQUIRED_USER.replace("required", new_label))],
    )
    findings, _ = run_case(case)
    found = {f.rule: f.category.value for f in findings if f.subject == "Chat.Msg.Note.user_id"}
    assert found == rules


def test_presence_policy_added_and_equal_intervals(
    bases: dict[str, dict[str, str]],
    write_spec: Callable[[str, Mapping[str, str]], Path],
    load: Callable[[Path], Spec],
) -> None:
    files = bases["presence"]
    new = load(write_spec("new", files))
    old = replace(new, presence=None)
    found = [f for f in diff_specs(old, new) if f.rule == "PRESENCE_CHANGED"]
    assert [f.message for f in found] == ["presence policy added"]
    same_interval = files["presence.yaml"].replace("coalesce: 2s", "coalesce: 2000ms")
    same = dict(files, **{"presence.yaml": same_interval})
    equal = load(write_spec("old", same))
    assert [f for f in diff_specs(equal, new) if f.rule == "PRESENCE_CHANGED"] == []


@pytest.mark.parametrize(
    ("edit", "subject", "category"),
    [
        # what the browser sends: dropping a field is compatible, requiring one breaks old pages
        ((WB, "        to: int\n", ""), "web.commands.send.request.to", OK),
        ((WB, "mood: Chat.Base.Mood?\n", "mood: Chat.Base.Mood\n"), "web.commands.send.request.mood", W),
        ((WB, "        text: string\n", "        text: string?\n"), "web.commands.send.request.text", OK),
        # what the gateway sends: a `?` field may go (old pages handle its absence); required is compatible
        ((WB, "        seen: int?\n", ""), "web.events.msg.seen", SEM),
        ((WB, "seen: int?\n", "seen: int\n"), "web.events.msg.seen", OK),
        ((WB, "        msg_id: int\n", "        msg_id: int?\n"), "web.commands.send.reply.msg_id", W),
        # the shapes of `types:` are read by pages too
        ((WB, "        id: int\n", "        id: int[]\n"), "web.types.Line.id", W),
    ],
)
def test_web_field_changes_are_judged_by_who_reads_the_shape(
    edit: Edit, subject: str, category: str, run_case: Build
) -> None:
    findings, _ = run_case(Case("x", category, ("new", WB, None), new=[edit], base="web"))
    assert {f.category.value for f in findings if f.subject == subject} == {category}, [
        f.format() for f in findings
    ]


def test_web_type_rename_of_a_spec_enum_is_followed(run_case: Build) -> None:
    rename = [
        (B, "  Mood:\n", "  Feeling:\n    renamed_from: Mood\n"),
        (C, "Chat.Base.Mood", "Chat.Base.Feeling"),
        (WB, "Chat.Base.Mood", "Chat.Base.Feeling"),
    ]
    findings, _ = run_case(Case("x", S, ("new", WB, None), new=rename, base="web"))
    assert not [f for f in findings if f.rule == "WEB_FIELD_TYPE_CHANGED"], [f.format() for f in findings]
