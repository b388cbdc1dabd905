"""Codegen emit layer: the Python side of a stack: package init, registry, server bases and clients."""

from __future__ import annotations

import keyword
from collections.abc import Callable, Mapping
from typing import Any

from codegen.emit import EmitOptions, FileMap
from codegen.emit.common import (
    camel,
    client_method_name,
    handler_name,
    header_line,
    hex_id,
    lookups,
    one_line,
    pb2_module,
    py_doc,
    py_literal,
    python_ref,
    render,
    split_qualname,
)
from codegen.model import Command, Constraints, Message, Spec
from codegen.presence import resolve_presence

# The constraint keys `runtime.stages.input.FieldLimits` reads from an `input.fields` table, in its order.
_LIMIT_KEYS = ("max_len", "min_len", "non_empty", "min", "max", "max_items", "pattern")


def emit_package_init(spec: Spec, options: EmitOptions, files: Mapping[str, str | bytes]) -> FileMap:
    """Emitter: `__init__.py`, so the stack is a package; it imports nothing, keeping `import stack` cheap."""
    return {"__init__.py": render("init.py.j2", header=header_line(spec, options.spec_label, "#"), spec=spec,
                                  doc=py_doc(one_line(spec.doc) or f"Generated stack of spec {spec.name}."))}


def commands_sorted(spec: Spec) -> list[Command]:
    """Every command of the spec in id order: the order of every generated table."""
    return sorted(lookups(spec).commands.values(), key=lambda c: c.id)


def hosts_of(spec: Spec) -> dict[str, list[str]]:
    """Command name -> names of the cluster services hosting it, sorted."""
    out: dict[str, list[str]] = {}
    for service in spec.cluster:
        for name in service.hosts:
            out.setdefault(name, []).append(service.name)
    return {k: sorted(v) for k, v in out.items()}


def used_pb2_modules(spec: Spec, qualnames: list[str]) -> list[str]:
    """The `_pb2` modules that define the given messages, sorted (what a generated module must import)."""
    return sorted({pb2_module(split_qualname(spec, q)[0]) for q in qualnames})


def limits_of(c: Constraints) -> dict[str, Any]:
    """A field's constraints as the input stage's `FieldLimits.from_mapping` takes them (set keys only)."""
    out: dict[str, Any] = {}
    for key in _LIMIT_KEYS:
        value = getattr(c, key)
        if value is None or value is False:
            continue
        out[key] = value
    return out


def field_limits_of(message: Message | None) -> dict[str, dict[str, Any]]:
    """Field name -> constraints for the constrained top-level fields of a command's message, sorted by name.
    The input stage checks top-level fields only (`descriptor.fields_by_name`), so nested messages' limits
    are not carried here."""
    if message is None:
        return {}
    table = {f.name: limits_of(f.constraints) for f in message.fields}
    return {name: table[name] for name in sorted(table) if table[name]}


def command_stages(spec: Spec, c: Command) -> dict[str, dict[str, Any]]:
    """A command's effective stage policies, with its message's field constraints added as the input stage's
    `fields` table, so the runtime enforces them on every server without extra wiring."""
    stages = spec.effective_stages(c)
    limits = field_limits_of(lookups(spec).messages.get(c.message))
    if limits:
        policy = dict(stages.get("input", {}))
        fields = dict(policy.get("fields", {}))
        for name, lim in limits.items():
            fields.setdefault(name, lim)
        policy["fields"] = fields
        stages = {**stages, "input": policy}
    return stages


def emit_registry(spec: Spec, options: EmitOptions, files: Mapping[str, str | bytes]) -> FileMap:
    """Emitter: `registry.py`: id enums and `REGISTRY`, the runtime's only door into the stack."""
    hosts = hosts_of(spec)
    names = lookups(spec)
    commands = [
        {
            "name": c.name,
            "service_id": names.services[c.service].id if c.service in names.services else c.id >> 8,
            "id": hex_id(c.id),
            "message": python_ref(spec, c.message),
            "direction": c.direction,
            "reply": py_literal(c.reply),
            "hosted_by": py_literal(tuple(hosts.get(c.name, ()))),
            "stages": py_literal(command_stages(spec, c)),
            "doc": py_literal(one_line(c.doc)),
        }
        for c in commands_sorted(spec)
    ]
    services = sorted(names.services.values(), key=lambda s: s.id)

    def by_id(command_names: tuple[str, ...]) -> list[str]:
        return sorted(command_names, key=lambda n: names.commands[n].id if n in names.commands else 0)

    cluster = {
        s.name: {
            "role": s.role, "listen": s.listen, "default_port": s.default_port, "links": sorted(s.links),
            "hosts": by_id(s.hosts),
            "receives": by_id(s.receives),
            "plugin": s.plugin,
        }
        for s in spec.cluster
    }
    text = render(
        "registry.py.j2",
        header=header_line(spec, options.spec_label, "#"),
        spec=spec,
        imports=used_pb2_modules(spec, [c.message for c in names.commands.values()]),
        services=[{"name": s.name, "id": hex_id(s.id), "doc": one_line(s.doc)} for s in services],
        doc=py_doc(one_line(spec.doc)),
        commands=commands,
        cluster=[(name, py_literal(cluster[name])) for name in sorted(cluster)],
        frame=py_literal({"kind": spec.frame.kind, "max_frame_bytes": spec.frame.max_frame_bytes,
                          "version": spec.frame.version}),
        presence=py_literal(presence_of(spec)),
        enums=enum_classes(spec),
        enum_bits=py_literal({e.qualname: dict(e.bits) for e in spec.enums().values() if e.bits}),
    )
    return {"registry.py": text}


_NOT_MEMBER_NAMES = frozenset({"mro"})  # names enum.Enum cannot take as members


def _member_name(name: str) -> str:
    """An enum value name as a Python enum member name (keywords get a trailing `_`, a leading `_` a `V`)."""
    if keyword.iskeyword(name) or name in _NOT_MEMBER_NAMES:
        return name + "_"
    return "V" + name if name.startswith("_") else name


def enum_classes(spec: Spec) -> list[dict[str, Any]]:
    """The spec's enums as the registry's `Enums` namespace emits them: one `enum.IntEnum` per enum, named by
    its simple name (dots of a nested enum as `_`; package-qualified where two packages share a name), and a
    `<Name>Bits` class of its named bits when it declares any."""
    enums = sorted(spec.enums().values(), key=lambda e: e.qualname)
    simple = [e.name.replace(".", "_") for e in enums]
    taken = {n for n in simple if simple.count(n) == 1}
    out = []
    for e, name in zip(enums, simple, strict=True):
        if name not in taken:
            name = e.qualname.replace(".", "_")
        out.append(
            {
                "name": name,
                "doc": py_doc(one_line(e.doc) or f"{e.qualname}."),
                "members": [(_member_name(v.name), v.value) for v in e.values],
                "bits": [(b, f"0x{mask:x}") for b, mask in e.bits],
            }
        )
    return out


def presence_of(spec: Spec) -> dict[str, Any] | None:
    """The resolved presence policy as the runtime's `PresencePolicy.from_mapping` takes it (None: none)."""
    if spec.presence is None:
        return None
    shape = resolve_presence(spec, spec.presence)
    return None if shape is None else dict(shape.as_dict())


def emit_servers(spec: Spec, options: EmitOptions, files: Mapping[str, str | bytes]) -> FileMap:
    """Emitter: `servers.py`: one abstract async base class per cluster service, with a `__mapping__`, and a
    deliveries base per service that `receives` commands from its links (one method per delivered command)."""
    commands = lookups(spec).commands
    bases: list[dict[str, Any]] = []
    deliveries: list[dict[str, Any]] = []
    used: list[str] = []

    def handlers(names: tuple[str, ...], summary: Callable[[Spec, Command], str]) -> list[dict[str, Any]]:
        listed = sorted((commands[n] for n in names if n in commands), key=lambda c: c.id)
        used.extend(c.message for c in listed)
        return [
            {
                "id": hex_id(c.id),
                "method": handler_name(c),
                "message": python_ref(spec, c.message),
                "summary": py_doc(summary(spec, c)),
            }
            for c in listed
        ]

    for service in sorted(spec.cluster, key=lambda s: s.name):
        bases.append(
            {
                "class_name": camel(service.name) + "ServiceBase",
                "name": service.name,
                "role": service.role,
                "doc": py_doc(one_line(service.doc) or f"The {service.name} cluster service."),
                "handlers": handlers(service.hosts, handler_summary),
            }
        )
        if service.receives:
            deliveries.append(
                {
                    "class_name": camel(service.name) + "DeliveriesBase",
                    "name": service.name,
                    "role": service.role,
                    "doc": py_doc(f"What linked services deliver to the {service.name} cluster service."),
                    "handlers": handlers(service.receives, delivery_summary),
                }
            )
    text = render(
        "servers.py.j2",
        header=header_line(spec, options.spec_label, "#"),
        spec=spec,
        imports=used_pb2_modules(spec, used),
        bases=bases,
        deliveries=deliveries,
    )
    return {"servers.py": text}


def delivery_summary(spec: Spec, c: Command) -> str:
    """The docstring of a delivery handler: command, id, direction and the spec's doc."""
    text = f"{c.name} ({hex_id(c.id)}, {c.direction}) delivered by a link; confirmed once this returns"
    doc = one_line(c.doc)
    return f"{text}. {doc}".rstrip() if doc else text + "."


def handler_summary(spec: Spec, c: Command) -> str:
    """The docstring of a handler: command, id, direction, the reply it should return, and the spec's doc."""
    text = f"{c.name} ({hex_id(c.id)}, {c.direction})"
    if c.reply:
        reply = lookups(spec).commands.get(c.reply)
        reply_msg = reply.message.rsplit(".", 1)[-1] if reply else "?"
        text += f"; return the {c.reply} reply ({reply_msg})"
    else:
        text += "; no reply (return None)"
    doc = one_line(c.doc)
    return f"{text}. {doc}".rstrip() if doc else text + "."


def emit_clients(spec: Spec, options: EmitOptions, files: Mapping[str, str | bytes]) -> FileMap:
    """Emitter: `clients.py`: a typed async client with one method per client-sendable command."""
    commands = lookups(spec).commands
    methods = []
    used: list[str] = []
    for c in commands_sorted(spec):
        if c.direction not in ("c2s", "both"):
            continue
        reply = commands.get(c.reply) if c.reply else None
        used.append(c.message)
        if reply is not None:
            used.append(reply.message)
        methods.append(
            {
                "name": client_method_name(c),
                "command": c.name,
                "message": python_ref(spec, c.message),
                "reply": python_ref(spec, reply.message) if reply else None,
                "reply_name": reply.name if reply else None,
                "summary": py_doc(f"{c.name} ({hex_id(c.id)})" + (f": {one_line(c.doc)}" if c.doc else ".")),
            }
        )
    text = render(
        "clients.py.j2",
        header=header_line(spec, options.spec_label, "#"),
        spec=spec,
        class_name=camel(spec.name) + "Client",
        imports=used_pb2_modules(spec, used),
        methods=methods,
    )
    return {"clients.py": text}
