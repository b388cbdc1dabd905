"""Codegen emit layer: `PROTOCOL.md`, the Markdown protocol reference of a stack."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from codegen.emit import EmitOptions, FileMap
from codegen.emit.common import header_line, hex_id, lookups, one_line, render
from codegen.emit.python import commands_sorted, hosts_of
from codegen.model import Constraints, Enum, Field, Message, Spec, WebField

_CONSTRAINT_TEXT = {
    "max_len": "max_len {}", "min_len": "min_len {}", "min": "min {}", "max": "max {}",
    "max_items": "max_items {}", "pattern": "pattern `{}`",
}


def emit_docs(spec: Spec, options: EmitOptions, files: Mapping[str, str | bytes]) -> FileMap:
    """Emitter: `PROTOCOL.md` (skipped when the options turn docs off)."""
    if not options.docs:
        return {}
    return {"PROTOCOL.md": protocol_markdown(spec, options)}


def cell(text: Any) -> str:
    """Text safe inside a Markdown table cell."""
    return one_line(str(text)).replace("|", "\\|") if text not in (None, "") else ""


def protocol_markdown(spec: Spec, options: EmitOptions) -> str:
    """The whole reference: overview, services, cluster, then one section per module."""
    hosts = hosts_of(spec)
    names = lookups(spec)
    services = names.services
    module_of_service = {m.service.name: m.package for m in spec.modules if m.service is not None}
    modules = []
    for mod in spec.modules:
        commands = sorted(mod.commands, key=lambda c: c.id)
        modules.append(
            {
                "package": mod.package,
                "anchor": anchor(mod.package),
                "proto_file": mod.proto_file,
                "plugin": mod.plugin,
                "doc": one_line(mod.doc),
                "service": mod.service,
                "service_id": hex_id(mod.service.id) if mod.service else "",
                "commands": [
                    {
                        "id": hex_id(c.id), "name": c.name, "direction": c.direction,
                        "message": c.message, "message_anchor": anchor(c.message),
                        "reply": c.reply or "", "hosted_by": ", ".join(hosts.get(c.name, [])),
                        "doc": cell(c.doc), "deprecated": c.deprecated,
                    }
                    for c in commands
                ],
                "enums": [enum_view(e) for e in mod.enums]
                + [enum_view(e) for m in mod.messages for e in m.nested_enums],
                "messages": [message_view(spec, m) for m in mod.messages],
            }
        )
    stage_rows = []
    for c in commands_sorted(spec):
        for stage, policy in spec.effective_stages(c).items():
            stage_rows.append({"command": c.name, "stage": stage, "policy": cell(policy_text(policy))})
    return render(
        "protocol.md.j2",
        header=header_line(spec, options.spec_label, "<!--"),
        spec=spec,
        doc=one_line(spec.doc),
        options=[f"{k} = {v}" for k, v in sorted(dict(spec.options).items())],
        services=[
            {"name": s.name, "id": hex_id(s.id), "range": f"{hex_id(s.range[0])}..{hex_id(s.range[1])}",
             "module": module_of_service.get(s.name, ""), "anchor": anchor(module_of_service.get(s.name, "")),
             "doc": cell(s.doc)}
            for s in sorted(services.values(), key=lambda s: s.id)
        ],
        cluster=[
            {"name": s.name, "role": s.role, "listen": s.listen or "-",
             "port": s.default_port if s.default_port is not None else "-",
             "links": ", ".join(sorted(s.links)) or "-",
             "hosts": ", ".join(sorted(s.hosts)) or "-", "receives": ", ".join(sorted(s.receives)) or "-",
             "doc": cell(s.doc), "plugin": s.plugin or ""}
            for s in sorted(spec.cluster, key=lambda s: s.name)
        ],
        plugins=[{"name": p.name, "requires": p.requires, "doc": cell(p.doc)}
                 for p in sorted(spec.plugins, key=lambda p: p.name)],
        modules=modules,
        stage_rows=stage_rows,
        presence=presence_view(spec),
        web=web_view(spec),
    )


def presence_view(spec: Spec) -> dict[str, Any] | None:
    """The presence policy for the reference (None: the spec declares none)."""
    p = spec.presence
    if p is None:
        return None
    batch = f"`{p.batch}` from {p.batch_from} users on" if p.batch else "none (a notify per user)"
    return {
        "doc": one_line(p.doc), "audience": ", ".join(p.audience), "clients": p.clients,
        "coalesce": p.coalesce, "notify": p.notify, "batch": batch, "online": p.online, "offline": p.offline,
    }


def web_view(spec: Spec) -> dict[str, Any] | None:
    """The browser API (the manifest's `web:`) for the reference (None: the spec declares none)."""
    web = spec.web
    if web is None:
        return None
    names = lookups(spec)

    def fields(items: tuple[WebField, ...]) -> str:
        def kind(f: WebField) -> str:
            known = f.type in names.messages or f.type in names.enums
            base = f"[`{f.type}`](#{anchor(f.type)})" if known else f"`{f.type}`"
            return base + ("[]" if f.list else "") + ("?" if f.optional else "")

        return cell(", ".join(f"{f.name}: {kind(f)}" for f in items))

    return {
        "doc": one_line(web.doc), "http": web.http, "websocket": web.websocket,
        "commands": [
            {"name": c.name, "http": f"`{c.method} {c.path}`" if c.method else "-",
             "ws": "yes" if c.ws else "no", "auth": "yes" if c.auth else "no",
             "request": ("multipart: " if c.body == "multipart" else "") + fields(c.request),
             "reply": fields(c.reply), "doc": cell(c.doc)}
            for c in web.commands
        ],
        "events": [
            {"name": e.name, "doc": cell(e.doc),
             "fields": cell(", ".join(x for x in (
                 fields(e.fields), f"data: `{e.data}` ([`{names.commands[e.data].message}`]"
                 f"(#{anchor(names.commands[e.data].message)}))"
                 if e.data and e.data in names.commands else (f"data: `{e.data}`" if e.data else ""),
             ) if x))}
            for e in web.events
        ],
        "types": [{"name": t.name, "fields": fields(t.fields), "doc": cell(t.doc)} for t in web.types],
    }


def anchor(name: str) -> str:
    """The GitHub-style anchor of a heading that is exactly `name` (dots and spaces dropped or dashed)."""
    return "".join(ch for ch in name.lower().replace(" ", "-") if ch.isalnum() or ch in "-_")


def policy_text(policy: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}: {json.dumps(v, sort_keys=True, default=str)}" for k, v in sorted(policy.items()))


def enum_view(enum: Enum) -> dict[str, Any]:
    return {
        "name": enum.qualname, "anchor": anchor(enum.qualname), "doc": one_line(enum.doc),
        "members": [{"name": v.name, "value": v.value, "doc": cell(v.doc)} for v in enum.values],
        "reserved": reserved_text(enum.reserved.numbers, enum.reserved.names),
    }


def message_view(spec: Spec, message: Message) -> dict[str, Any]:
    oneof_note = {name: f"oneof `{name}`" for name in message.oneofs}
    return {
        "name": message.qualname, "anchor": anchor(message.qualname), "doc": one_line(message.doc),
        "fields": [
            {
                "number": f.number, "name": f.name, "label": label_text(spec, f), "type": type_text(spec, f),
                "default": "" if f.default is None else f"`{json.dumps(f.default, default=str)}`",
                "constraints": cell(constraints_text(f.constraints)),
                "doc": cell(" ".join(x for x in (oneof_note.get(f.oneof or "", ""), f.doc,
                                                 "(deprecated)" if f.deprecated else "") if x)),
            }
            for f in sorted(message.fields, key=lambda f: f.number)
        ],
        "reserved": reserved_text(message.reserved.numbers, message.reserved.names),
    }


def label_text(spec: Spec, f: Field) -> str:
    if f.is_map:
        return "map"
    if f.oneof is not None:
        return "oneof"
    if spec.syntax == "proto3" and f.label == "optional":
        return "singular"
    return f.label


def type_text(spec: Spec, f: Field) -> str:
    names = lookups(spec)
    def link(t: str) -> str:
        known = t in names.messages or t in names.enums
        return f"[`{t}`](#{anchor(t)})" if known else f"`{t}`"

    return f"map `{f.map_key}` -> {link(f.type)}" if f.map_key else link(f.type)


def constraints_text(c: Constraints) -> str:
    parts = [fmt.format(getattr(c, k)) for k, fmt in _CONSTRAINT_TEXT.items() if getattr(c, k) is not None]
    if c.non_empty:
        parts.insert(0, "non-empty")
    return ", ".join(parts)


def reserved_text(numbers: tuple[tuple[int, int], ...], names: tuple[str, ...]) -> str:
    parts = [str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in numbers] + [f"`{n}`" for n in names]
    return ", ".join(parts)
