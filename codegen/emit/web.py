"""Codegen emit layer: the browser client (`web/`), from the spec's `web:` section.

Modern JavaScript (ES modules, no build step) with TypeScript declarations beside it:

- `web/protocol.js`: the spec's exported enums, the shape of every command's request and reply and of every
  event (JSON field kinds, checked at run time by `validate`), and the JSON form of the protobuf messages the
  API carries;
- `web/protocol.d.ts`: the same shapes as TypeScript types;
- `web/client.js` / `web/client.d.ts`: `Client`, one method per command, an event stream over the WebSocket
  with a long-poll fallback, reconnect with resume, and duplicate suppression by sequence number and msg id.

Nothing is emitted for a spec without `web:`. Output is byte-stable: every table is sorted or in spec order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from codegen.emit import EmitOptions, FileMap
from codegen.emit.common import header_line, lookups, one_line, render
from codegen.model import WEB_SCALARS, Enum, Field, Message, Spec, WebField

OPTIONAL, LIST = 1, 2  # field flags in the generated tables
# protobuf JSON (MessageToDict) kinds of the scalar types: 64-bit integers travel as strings.
_PB_KINDS = {
    "double": "number", "float": "number", "int32": "int", "uint32": "int", "sint32": "int", "fixed32": "int",
    "sfixed32": "int", "int64": "string", "uint64": "string", "sint64": "string", "fixed64": "string",
    "sfixed64": "string", "bool": "bool", "string": "string", "bytes": "string",
}
_TS_SCALARS = {"string": "string", "int": "number", "number": "number", "bool": "boolean", "json": "unknown"}
# Names the generated Client class keeps for itself: a command of such a name is reached with `call(name)`.
RESERVED = frozenset(
    {"call", "on", "off", "start", "stop", "close", "state", "token", "userId", "constructor", "emit"}
)
_TABLES = frozenset({"ENUMS", "COMMANDS", "EVENTS", "TYPES", "MESSAGES", "SPEC"})
MAX_DEPTH = 8  # how deep message references are followed in the protocol tables


def emit_web(spec: Spec, options: EmitOptions, files: Mapping[str, str | bytes]) -> FileMap:
    """Emitter: `web/protocol.js`, `web/protocol.d.ts`, `web/client.js`, `web/client.d.ts`."""
    if spec.web is None:
        return {}
    view = _View(spec)
    js_header = header_line(spec, options.spec_label, "//")
    context: dict[str, Any] = {"header": js_header, "spec": spec, "web": spec.web, **view.context()}
    return {
        "web/protocol.js": render("web/protocol.js.j2", **context),
        "web/protocol.d.ts": render("web/protocol.d.ts.j2", **context),
        "web/client.js": render("web/client.js.j2", **context),
        "web/client.d.ts": render("web/client.d.ts.j2", **context),
    }


def js(value: Any) -> str:
    """A deterministic JavaScript literal (JSON, keys in the given order)."""
    return json.dumps(value, ensure_ascii=False)


def js_name(name: str) -> str:
    """`CID_EXT_TYPING` -> `cidExtTyping`; `group_members` -> `groupMembers`; `send` -> `send`."""
    parts = [p for p in re.split(r"[^0-9A-Za-z]+", name) if p]
    if not parts:
        return "x"
    head = parts[0] if not parts[0].isupper() else parts[0].lower()
    out = head[:1].lower() + head[1:] + "".join(p[:1].upper() + p[1:].lower() if p.isupper() else
                                                 p[:1].upper() + p[1:] for p in parts[1:])
    return "x" + out if out[:1].isdigit() else out


def ts_line(name: str, type_: str, optional: bool, doc: str) -> str:
    """One member of a TypeScript interface, with its doc comment."""
    comment = f"/** {doc.replace('*/', '* /')} */ " if doc else ""
    return f"{comment}{name}{'?' if optional else ''}: {type_};"


def event_interface(name: str) -> str:
    """`msg` -> `MsgEvent`; `CID_EXT_TYPING` -> `CidExtTypingEvent`."""
    return "".join(p[:1].upper() + p[1:].lower() for p in re.split(r"[^0-9A-Za-z]+", name) if p) + "Event"


def ts_type_name(qualname: str) -> str:
    """A TypeScript name for a spec message or enum: `IM.BaseDefine.UserInfo` -> `IM_BaseDefine_UserInfo`."""
    return re.sub(r"[^0-9A-Za-z_]", "_", qualname)


class _View:
    """The view model of the four files."""

    def __init__(self, spec: Spec) -> None:
        assert spec.web is not None
        self.spec = spec
        self.web = spec.web
        names = lookups(spec)
        self.messages: dict[str, Message] = names.messages
        self.enums: dict[str, Enum] = names.enums
        self.web_types = {t.name: t for t in self.web.types}
        self.used_messages: dict[str, None] = {}  # qualnames, in first-use order, then sorted
        self.used_enums: dict[str, None] = dict.fromkeys(self.web.enums)

    # kinds ---------------------------------------------------------------------------------------------
    def web_kind(self, f: WebField) -> str:
        if f.type in WEB_SCALARS:
            return f.type
        if f.type in self.web_types:
            return "type:" + f.type
        if f.type in self.enums:
            self.used_enums.setdefault(f.type)
            return "enum:" + f.type
        self._use_message(f.type, 0)
        return "message:" + f.type

    def _use_message(self, qualname: str, depth: int) -> None:
        if qualname in self.used_messages or depth > MAX_DEPTH or qualname not in self.messages:
            return
        self.used_messages[qualname] = None
        for f in self.messages[qualname].fields:
            if f.type in self.messages:
                self._use_message(f.type, depth + 1)
            elif f.type in self.enums:
                self.used_enums.setdefault(f.type)
            if f.map_key is not None and f.type in self.messages:
                self._use_message(f.type, depth + 1)

    def pb_kind(self, f: Field) -> str:
        if f.is_map:
            return "json"
        if f.type in _PB_KINDS:
            return _PB_KINDS[f.type]
        if f.type in self.enums:
            return "enumname:" + f.type  # protobuf JSON writes enum values by name
        return "message:" + f.type

    def web_fields(self, fields: tuple[WebField, ...]) -> list[list[Any]]:
        return [
            [f.name, self.web_kind(f), (OPTIONAL if f.optional else 0) | (LIST if f.list else 0)]
            for f in fields
        ]

    def ts_member(self, f: WebField) -> str:
        return ts_line(f.name, self.ts_web(f), f.optional, one_line(f.doc))

    def ts_web(self, f: WebField) -> str:
        if f.type in _TS_SCALARS:
            base = _TS_SCALARS[f.type]
        elif f.type in self.web_types:
            base = f.type
        else:
            base = ts_type_name(f.type)
        return f"{base}[]" if f.list else base

    def ts_pb(self, f: Field) -> str:
        if f.is_map:
            base = f"Record<string, {self._ts_pb_base(f.type)}>"
            return base
        base = self._ts_pb_base(f.type)
        return f"{base}[]" if f.label == "repeated" else base

    def _ts_pb_base(self, type_: str) -> str:
        kind = _PB_KINDS.get(type_)
        if kind is not None:
            return _TS_SCALARS[kind]
        if type_ in self.enums:
            return ts_type_name(type_) + "Name"
        return ts_type_name(type_)

    # the files' context -------------------------------------------------------------------------------
    def context(self) -> dict[str, Any]:
        web = self.web
        commands = []
        for c in web.commands:
            commands.append(
                {
                    "name": c.name,
                    "method_name": js_name(c.name),
                    "reserved": js_name(c.name) in RESERVED,
                    "iface": js_name(c.name)[:1].upper() + js_name(c.name)[1:],
                    "doc": one_line(c.doc),
                    "table": js(
                        {
                            "method": c.method,
                            "path": c.path,
                            "ws": c.ws and bool(web.websocket),
                            "auth": c.auth,
                            "body": c.body,
                            "request": self.web_fields(c.request),
                            "reply": self.web_fields(c.reply),
                        }
                    ),
                    "request": [self.ts_member(f) for f in c.request],
                    "reply": [self.ts_member(f) for f in c.reply],
                }
            )
        events = []
        for e in web.events:
            data_message = None
            if e.data is not None:
                command = self.spec.commands().get(e.data)
                if command is not None:
                    data_message = command.message
                    self._use_message(command.message, 0)
            fields = self.web_fields(e.fields)
            if data_message is not None:
                fields.append(["data", "message:" + data_message, 0])
            ts_fields = [self.ts_member(f) for f in e.fields]
            if data_message is not None:
                ts_fields.append(ts_line("data", ts_type_name(data_message), False, ""))
            events.append(
                {
                    "name": e.name,
                    "iface": event_interface(e.name),
                    "doc": one_line(e.doc),
                    "table": js({"fields": fields}),
                    "fields": ts_fields,
                }
            )
        types = [
            {
                "name": t.name,
                "doc": one_line(t.doc),
                "table": js(self.web_fields(t.fields)),
                "fields": [self.ts_member(f) for f in t.fields],
            }
            for t in web.types
        ]
        messages = []
        for qualname in sorted(self.used_messages):
            message = self.messages[qualname]
            flags = []
            for f in message.fields:
                flag = 0 if f.label == "required" else OPTIONAL
                flags.append([f.name, self.pb_kind(f), flag | (LIST if f.label == "repeated" else 0)])
            messages.append(
                {
                    "qualname": qualname,
                    "ts": ts_type_name(qualname),
                    "doc": one_line(message.doc),
                    "table": js(flags),
                    "fields": [
                        ts_line(f.name, self.ts_pb(f), f.label != "required", one_line(f.doc))
                        for f in message.fields
                    ],
                }
            )
        enums: list[dict[str, Any]] = []
        for qualname in sorted(self.used_enums):
            enum = self.enums.get(qualname)
            if enum is None:
                continue
            enums.append(
                {
                    "qualname": qualname,
                    "const": enum.name,
                    "ts": ts_type_name(qualname),
                    "doc": one_line(enum.doc),
                    "members": [(v.name, v.value) for v in enum.values],
                    "table": js({v.name: v.value for v in enum.values}),
                }
            )
        # Enum constants are also exported by simple name, unless two enums share it (or it is a table's).
        simple: dict[str, int] = {}
        for item in enums:
            simple[item["const"]] = simple.get(item["const"], 0) + 1
        for item in enums:
            item["export"] = simple[item["const"]] == 1 and item["const"] not in _TABLES
        return {
            "commands": commands,
            "events": events,
            "types": types,
            "messages": messages,
            "enums": enums,
            "doc": one_line(web.doc),
            "http_prefix": js(web.http),
            "websocket": js(web.websocket),
            "spec_name": js(self.spec.name),
            "spec_version": js(self.spec.version),
            "js": js,
        }
