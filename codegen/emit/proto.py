"""Codegen emit layer: `.proto` files (one per module) and their protoc-compiled Python modules."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from codegen import protoc
from codegen.emit import EmitOptions, FileMap
from codegen.emit.common import doc_lines, header_line, lookups, render, split_qualname
from codegen.model import SCALAR_TYPES, Enum, Field, Message, Module, Reserved, Spec

# Comment paragraphs are wrapped so that `.proto` lines stay readable (nesting indents come on top).
DOC_WIDTH = 100

# File options whose values are identifiers or booleans; every other option value is a quoted string.
_ENUM_OPTIONS = frozenset({"optimize_for"})
_BOOL_OPTIONS = frozenset(
    {
        "java_multiple_files", "java_generic_services", "py_generic_services", "cc_generic_services",
        "cc_enable_arenas", "deprecated", "java_string_check_utf8",
    }
)
# Well-known types a spec may reference, and the file that declares each.
WELL_KNOWN: dict[str, str] = {
    "google.protobuf.Any": "google/protobuf/any.proto",
    "google.protobuf.Duration": "google/protobuf/duration.proto",
    "google.protobuf.Empty": "google/protobuf/empty.proto",
    "google.protobuf.FieldMask": "google/protobuf/field_mask.proto",
    "google.protobuf.Struct": "google/protobuf/struct.proto",
    "google.protobuf.Value": "google/protobuf/struct.proto",
    "google.protobuf.ListValue": "google/protobuf/struct.proto",
    "google.protobuf.Timestamp": "google/protobuf/timestamp.proto",
    **{
        f"google.protobuf.{w}": "google/protobuf/wrappers.proto"
        for w in ("DoubleValue", "FloatValue", "Int64Value", "UInt64Value", "Int32Value", "UInt32Value",
                  "BoolValue", "StringValue", "BytesValue")
    },
}


@dataclass
class MessageView:
    """Layout of one message block: comment lines, body items (fields and oneof groups), nested blocks."""

    name: str
    doc: list[str]
    items: list[dict[str, Any]] = field(default_factory=list)
    reserved: list[str] = field(default_factory=list)
    enums: list[dict[str, Any]] = field(default_factory=list)
    messages: list[MessageView] = field(default_factory=list)


def emit_protos(spec: Spec, options: EmitOptions, files: Mapping[str, str | bytes]) -> FileMap:
    """Emitter: one `<Package_Name>.proto` per module."""
    return {mod.proto_file: proto_text(spec, mod, options) for mod in spec.modules}


def emit_compiled(spec: Spec, options: EmitOptions, files: Mapping[str, str | bytes]) -> FileMap:
    """Emitter: compile the emitted `.proto` files: `_pb2.py`, `_pb2.pyi` and `descriptor_set.bin`."""
    if not options.compile:
        return {}
    protos = {mod.proto_file: str(files[mod.proto_file]) for mod in spec.modules}
    result = protoc.compile_protos(protos, spec=spec)
    out: FileMap = {}
    for name, text in result.modules.items():
        out[name] = header_line(spec, options.spec_label, "#") + "\n" + text
    out["descriptor_set.bin"] = result.descriptor_set
    return out


def proto_text(spec: Spec, module: Module, options: EmitOptions) -> str:
    """The `.proto` source of one module."""
    return render(
        "proto.j2",
        header=header_line(spec, options.spec_label, "//"),
        syntax=spec.syntax,
        doc=doc_lines(module.doc, DOC_WIDTH),
        package=module.package,
        imports=imports_of(spec, module),
        options=file_options(spec, module),
        enums=[enum_view(e) for e in module.enums],
        messages=message_views(spec, module),
    )


def imports_of(spec: Spec, module: Module) -> list[str]:
    """The `.proto` files this module's fields reference, sorted."""
    owner = lookups(spec).proto_file_of
    needed: set[str] = set()
    for message in module.messages:
        for f in message.fields:
            target = WELL_KNOWN.get(f.type) or owner.get(f.type)
            if target and target != module.proto_file:
                needed.add(target)
    return sorted(needed)


def file_options(spec: Spec, module: Module) -> list[str]:
    """`name = value` of every file option: the manifest's, overridden by the module's, sorted by name."""
    merged = dict(spec.options)
    merged.update(dict(module.options))
    out = []
    for name, value in sorted(merged.items()):
        text = str(value)
        if name in _BOOL_OPTIONS:
            text = "true" if text.lower() in ("true", "1", "yes") else "false"
        elif name not in _ENUM_OPTIONS:
            text = json.dumps(text)
        out.append(f"{name} = {text}")
    return out


def enum_view(enum: Enum) -> dict[str, Any]:
    """Layout of one enum block."""
    return {
        "name": enum.name.rsplit(".", 1)[-1],
        "doc": doc_lines(enum.doc, DOC_WIDTH),
        "allow_alias": enum.allow_alias,
        "members": [
            {"name": v.name, "value": v.value, "doc": doc_lines(v.doc, DOC_WIDTH)} for v in enum.values
        ],
        "reserved": reserved_lines(enum.reserved, enum=True),
    }


def reserved_lines(reserved: Reserved, *, enum: bool = False) -> list[str]:
    """`reserved` statements: one for the numbers (ranges as `a to b`), one for the names."""
    out = []
    if reserved.numbers:
        parts = [str(lo) if lo == hi else f"{lo} to {hi}" for lo, hi in reserved.numbers]
        out.append(", ".join(parts))
    if reserved.names:
        out.append(", ".join(json.dumps(n) for n in reserved.names))
    return out


def message_views(spec: Spec, module: Module) -> list[MessageView]:
    """Messages of a module as a tree: `Outer.Inner` is laid out inside `Outer` (declaration order kept)."""
    views: dict[str, MessageView] = {}
    roots: list[MessageView] = []
    for message in module.messages:
        view = message_view(spec, module, message)
        views[message.name] = view
        parent_name, _, _ = message.name.rpartition(".")
        if parent_name and parent_name in views:
            views[parent_name].messages.append(view)
        else:
            roots.append(view)
    return roots


def message_view(spec: Spec, module: Module, message: Message) -> MessageView:
    view = MessageView(name=message.name.rsplit(".", 1)[-1], doc=doc_lines(message.doc, DOC_WIDTH))
    view.reserved = reserved_lines(message.reserved)
    view.enums = [enum_view(e) for e in message.nested_enums]
    groups: dict[str, dict[str, Any]] = {}
    for f in sorted(message.fields, key=lambda f: f.number):
        decl = field_decl(spec, module, message, f)
        item = {"kind": "field", "doc": doc_lines(f.doc, DOC_WIDTH), "decl": decl}
        if f.oneof is None:
            view.items.append(item)
            continue
        if f.oneof not in groups:
            groups[f.oneof] = {"kind": "oneof", "name": f.oneof, "fields": []}
            view.items.append(groups[f.oneof])
        groups[f.oneof]["fields"].append(item)
    return view


def field_decl(spec: Spec, module: Module, message: Message, f: Field) -> str:
    """One field declaration without the trailing `;`, e.g. `optional string name = 2 [default = "x"]`."""
    type_text = type_ref(spec, module, f.type)
    if f.map_key is not None:
        head = f"map<{f.map_key}, {type_text}>"
    elif f.oneof is not None:
        head = type_text
    elif f.label == "repeated":
        head = f"repeated {type_text}"
    elif spec.syntax == "proto2":
        head = f"{f.label} {type_text}"
    else:
        # proto3: `optional` (explicit presence) only when the spec wrote it; an omitted label is singular.
        head = f"optional {type_text}" if f.label == "optional" and f.explicit_label else type_text
    opts = []
    if f.default is not None and spec.syntax == "proto2":
        opts.append(f"default = {default_literal(spec, f)}")
    if f.deprecated:
        opts.append("deprecated = true")
    suffix = f" [{', '.join(opts)}]" if opts else ""
    return f"{head} {f.name} = {f.number}{suffix}"


def type_ref(spec: Spec, module: Module, type_name: str) -> str:
    """A field type as written in `module`: scalars as is, same-package types relative, others qualified."""
    if type_name in SCALAR_TYPES or type_name in WELL_KNOWN:
        return type_name
    try:
        package, local = split_qualname(spec, type_name)
    except KeyError:
        return type_name
    return local if package == module.package else type_name


def default_literal(spec: Spec, f: Field) -> str:
    """A proto2 `[default = ...]` value in protobuf text syntax."""
    value = f.default
    if isinstance(value, bool):
        return "true" if value else "false"
    if f.type in ("string", "bytes"):
        return json.dumps(str(value), ensure_ascii=False)
    if f.type in lookups(spec).enums:
        return str(value).rsplit(".", 1)[-1]
    return str(value)
