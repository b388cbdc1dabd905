"""Codegen validate layer: TT2xx names and references (identifiers, keywords, scopes, types, oneofs)."""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterator

from codegen.diagnostics import Diagnostics, did_you_mean
from codegen.model import SCALAR_TYPES, Enum, Loc, Message, Module, Spec, loc_at

IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SPEC_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
SEMVER_RE = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)
# Words of the .proto language; using one as a name breaks or confuses the emitted file.
PROTO_KEYWORDS: frozenset[str] = (
    frozenset(
        {
            "syntax",
            "edition",
            "import",
            "weak",
            "public",
            "package",
            "option",
            "message",
            "enum",
            "service",
            "rpc",
            "returns",
            "stream",
            "extend",
            "extensions",
            "reserved",
            "to",
            "max",
            "oneof",
            "map",
            "optional",
            "required",
            "repeated",
            "group",
            "true",
            "false",
            "inf",
            "nan",
        }
    )
    | SCALAR_TYPES
)


def all_enums(spec: Spec) -> Iterator[tuple[Enum, str]]:
    """Every enum with the scope its values live in (package, or the containing message's qualname)."""
    for mod in spec.modules:
        for e in mod.enums:
            yield e, e.package
        for m in mod.messages:
            for e in m.nested_enums:
                yield e, m.qualname


def all_messages(spec: Spec) -> Iterator[Message]:
    for mod in spec.modules:
        yield from mod.messages


def check_identifiers(spec: Spec, diags: Diagnostics) -> None:
    """TT204: every name is an identifier (packages and nested names are dotted identifiers)."""

    def need(name: str, what: str, loc: Loc, dotted: bool = False) -> None:
        parts = name.split(".") if dotted else [name]
        if not all(IDENT_RE.match(p) for p in parts):
            diags.error("TT204", f"invalid {what} name '{name}'", loc, hint="use letters, digits and '_'")

    if not SPEC_NAME_RE.match(spec.name):
        diags.error(
            "TT204", f"invalid spec name '{spec.name}' (a lowercase identifier)", loc_at(spec, "spec")
        )
    for mod in spec.modules:
        need(mod.package, "package", mod.loc, dotted=True)
        if mod.service:
            need(mod.service.name, "service", loc_at(mod.service, "name"))
        for c in mod.commands:
            need(c.name, "command", c.loc)
    for e, _ in all_enums(spec):
        need(e.name, "enum", e.loc, dotted=True)
        for v in e.values:
            need(v.name, "enum value", v.loc)
    for m in all_messages(spec):
        need(m.name, "message", m.loc, dotted=True)
        for f in m.fields:
            need(f.name, "field", f.loc)
        for o in m.oneofs:
            need(o, "oneof", loc_at(m, "oneofs"))
    for s in spec.cluster:
        need(s.name, "cluster service", s.loc)
    for p in spec.plugins:
        need(p.name, "plugin", p.loc)


def check_keywords(spec: Spec, diags: Diagnostics) -> None:
    """TT205 (error): .proto keywords as names. TT206 (warning): Python keywords as field names."""
    for m in all_messages(spec):
        for part in m.name.split("."):
            if part in PROTO_KEYWORDS:
                diags.error("TT205", f"message name '{m.name}' uses the protobuf keyword '{part}'", m.loc)
        for f in m.fields:
            if f.name in PROTO_KEYWORDS:
                diags.error("TT205", f"field name '{f.name}' is a protobuf keyword", f.loc)
            elif keyword.iskeyword(f.name):
                diags.warning(
                    "TT206",
                    f"field name '{f.name}' is a Python keyword",
                    f.loc,
                    hint="generated Python code must use getattr() to reach it",
                )
    for e, _ in all_enums(spec):
        if e.name.rsplit(".", 1)[-1] in PROTO_KEYWORDS:
            diags.error("TT205", f"enum name '{e.name}' is a protobuf keyword", e.loc)
        for v in e.values:
            if v.name in PROTO_KEYWORDS:
                diags.error("TT205", f"enum value '{v.name}' is a protobuf keyword", v.loc)


def check_scope_collisions(spec: Spec, diags: Diagnostics) -> None:
    """TT201: two types (or a type and a field/oneof) share a name in one scope.
    TT202: an enum value collides: values are siblings of their enum (C++ scoping), not children of it."""
    symbols: dict[tuple[str, str], tuple[str, Loc]] = {}

    def declare(scope: str, name: str, kind: str, loc: Loc) -> None:
        key = (scope, name)
        if key not in symbols:
            symbols[key] = (kind, loc)
            return
        other_kind, other_loc = symbols[key]
        code = "TT202" if "enum value" in (kind, other_kind) else "TT201"
        where = f"{scope}" if scope else "the root scope"
        diags.error(
            code,
            f"{kind} '{name}' collides with {other_kind} '{name}' in {where}",
            loc,
            hint=f"the {other_kind} is declared at {other_loc}"
            + ("; enum values live in their enum's enclosing scope (C++ rules)" if code == "TT202" else ""),
        )

    # Declarations in file order, so the later of two colliding names is the one reported.
    decls: list[tuple[int, Loc, str, str, str]] = []
    base_packages = {mod.package for mod in spec.modules if mod.plugin is None}
    for i, mod in enumerate(spec.modules):
        if mod.plugin and mod.package in base_packages:
            continue  # a plugin redeclaring base types: TT702 says so once
        for m in mod.messages:
            outer, _, simple = m.qualname.rpartition(".")
            decls.append((i, m.loc, outer, simple, "message"))
            decls.extend((i, f.loc, m.qualname, f.name, "field") for f in m.fields)
            decls.extend((i, loc_at(m, "oneofs"), m.qualname, o, "oneof") for o in m.oneofs)
            for e in m.nested_enums:
                decls.append((i, e.loc, m.qualname, e.name.rsplit(".", 1)[-1], "enum"))
                decls.extend((i, v.loc, m.qualname, v.name, "enum value") for v in e.values)
        for e in mod.enums:
            decls.append((i, e.loc, e.package, e.name, "enum"))
            decls.extend((i, v.loc, e.package, v.name, "enum value") for v in e.values)
    for _, loc, scope, name, kind in sorted(decls, key=lambda d: (d[0], d[1].line, d[1].col)):
        declare(scope, name, kind, loc)


def check_type_refs(spec: Spec, diags: Diagnostics) -> None:
    """TT203: a field type names no declared message or enum (with a did-you-mean)."""
    known = set(spec.messages()) | set(spec.enums())
    for m in all_messages(spec):
        for f in m.fields:
            if f.type in SCALAR_TYPES or f.type in known:
                continue
            hint = did_you_mean(f.type, sorted(known) + [q.rsplit(".", 1)[-1] for q in known])
            diags.error("TT203", f"unknown type '{f.type}'{hint}", loc_at(f, "type"))


def check_oneofs(spec: Spec, diags: Diagnostics) -> None:
    """TT208: a field names an undeclared oneof. TT209: a declared oneof has no member."""
    for m in all_messages(spec):
        used = {f.oneof for f in m.fields if f.oneof}
        for f in m.fields:
            if f.oneof and f.oneof not in m.oneofs:
                hint = did_you_mean(f.oneof, m.oneofs)
                diags.error(
                    "TT208", f"field '{f.name}' names unknown oneof '{f.oneof}'{hint}", loc_at(f, "oneof")
                )
        for o in m.oneofs:
            if o not in used:
                diags.error("TT209", f"oneof '{o}' of '{m.name}' has no fields", loc_at(m, "oneofs"))


def check_nested_parents(spec: Spec, diags: Diagnostics) -> None:
    """TT210: a nested message `Outer.Inner` whose `Outer` is not declared in the same module."""
    for mod in spec.modules:
        names = {m.name for m in mod.messages}
        for m in mod.messages:
            if "." in m.name and m.name.rsplit(".", 1)[0] not in names:
                outer = m.name.rsplit(".", 1)[0]
                diags.error("TT210", f"message '{m.name}' is nested in unknown message '{outer}'", m.loc)


def check_packages(spec: Spec, diags: Diagnostics) -> None:
    """TT211: two modules declare one package (each package is one .proto file).

    A plugin module reusing a base package is TT702 instead (reported by the plugin rules).
    """
    seen: dict[str, Module] = {}
    for mod in spec.modules:
        first = seen.setdefault(mod.package, mod)
        if first is mod or (mod.plugin and first.plugin is None):
            continue
        diags.error(
            "TT211",
            f"package '{mod.package}' is already declared by another module",
            mod.loc,
            hint=f"first declared at {first.loc}",
        )


def check_reserved_names(spec: Spec, diags: Diagnostics) -> None:
    """TT212: a field or enum value uses a name its message or enum reserves."""
    for m in all_messages(spec):
        for f in m.fields:
            if f.name in m.reserved.names:
                diags.error("TT212", f"field name '{f.name}' is reserved in '{m.name}'", f.loc)
    for e, _ in all_enums(spec):
        for v in e.values:
            if v.name in e.reserved.names:
                diags.error("TT212", f"enum value name '{v.name}' is reserved in '{e.name}'", v.loc)


CHECKS = [
    check_identifiers,
    check_keywords,
    check_scope_collisions,
    check_type_refs,
    check_oneofs,
    check_nested_parents,
    check_packages,
    check_reserved_names,
]
