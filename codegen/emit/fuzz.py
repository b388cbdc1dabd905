"""Codegen emit layer: hypothesis strategies (`strategies.py`) and the generated fuzz suites (`tests/`).

Every decision is computed here from the spec: which kind each field is (scalar type, enum, message), its
presence (required, optional, implicit, repeated, map, oneof member), its constraints, the declared enum
values and which messages are recursive. The templates under `codegen/templates/fuzz/` only lay those tables
out; the generated suites take their commands and messages from the stack's registry at import, and the
machinery they call lives in `runtime.fuzz`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from codegen.emit import EmitOptions, FileMap
from codegen.emit.common import header_line, lookups, py_literal, python_ref, render
from codegen.emit.python import used_pb2_modules
from codegen.model import SCALAR_TYPES, Field, Message, Spec

TEMPLATES = {
    "tests/__init__.py": "fuzz/tests_init.py.j2",
    "tests/test_fuzz_roundtrip.py": "fuzz/test_fuzz_roundtrip.py.j2",
    "tests/test_fuzz_frames.py": "fuzz/test_fuzz_frames.py.j2",
    "tests/test_fuzz_live.py": "fuzz/test_fuzz_live.py.j2",
    "tests/test_fuzz_stateful.py": "fuzz/test_fuzz_stateful.py.j2",
}


def field_kind(spec: Spec, f: Field) -> tuple[str, str]:
    """(kind, ref): a scalar type name with no ref, or `enum`/`message` with the qualified type name."""
    if f.type in SCALAR_TYPES:
        return f.type, ""
    if f.type in lookups(spec).enums:
        return "enum", f.type
    return "message", f.type


def field_label(spec: Spec, f: Field) -> str:
    """Presence as strategies see it: required, optional, implicit (proto3 singular), repeated, map, oneof."""
    if f.is_map:
        return "map"
    if f.oneof is not None:
        return "oneof"
    if f.label == "repeated":
        return "repeated"
    if spec.syntax == "proto2":
        return f.label
    return "optional" if f.label == "optional" and f.explicit_label else "implicit"


def field_call(spec: Spec, f: Field) -> str:
    """The `FieldSpec(...)` call of one field, with only the keys that differ from the defaults."""
    kind, ref = field_kind(spec, f)
    args = [py_literal(f.name), str(f.number), py_literal(kind), py_literal(field_label(spec, f))]
    extra: dict[str, Any] = {
        "ref": ref,
        "map_key": f.map_key or "",
        "oneof": f.oneof or "",
        "max_len": f.constraints.max_len,
        "min_len": f.constraints.min_len,
        "non_empty": f.constraints.non_empty,
        "min": f.constraints.min,
        "max": f.constraints.max,
        "max_items": f.constraints.max_items,
        "pattern": f.constraints.pattern,
    }
    for key, value in extra.items():
        if value not in (None, "", False):
            args.append(f"{key}={py_literal(value)}")
    return f"F({', '.join(args)})"


def message_view(spec: Spec, m: Message) -> dict[str, Any]:
    """Template view of one message: its qualified name, class expression and field calls."""
    return {
        "name": m.qualname,
        "attr": m.qualname.replace(".", "_"),
        "cls": python_ref(spec, m.qualname),
        "fields": [field_call(spec, f) for f in sorted(m.fields, key=lambda f: f.number)],
    }


def enum_values(spec: Spec) -> list[tuple[str, str]]:
    """(qualified enum name, tuple literal of its distinct declared values), sorted by name."""
    return [
        (name, py_literal(tuple(sorted({v.value for v in enum.values}))))
        for name, enum in sorted(lookups(spec).enums.items())
    ]


def emit_fuzz(spec: Spec, options: EmitOptions, files: Mapping[str, str | bytes]) -> FileMap:
    """Emitter: `strategies.py` and the `tests/` package of generated property, live and stateful suites."""
    header = header_line(spec, options.spec_label, "#")
    messages = sorted(lookups(spec).messages.values(), key=lambda m: m.qualname)
    out: FileMap = {
        "strategies.py": render(
            "fuzz/strategies.py.j2",
            header=header,
            spec=spec,
            imports=used_pb2_modules(spec, [m.qualname for m in messages]),
            messages=[message_view(spec, m) for m in messages],
            enums=enum_values(spec),
        )
    }
    # The suites read their commands and messages from the stack's registry and strategies at import, so
    # their text depends on the spec only through the header.
    for path, template in TEMPLATES.items():
        out[path] = render(template, header=header, spec=spec)
    return out
