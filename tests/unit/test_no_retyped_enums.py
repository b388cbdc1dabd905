"""The spec's enum values are not typed again by hand in runtime/services: a field whose protobuf type is an
enum (msg_type, session_type, client_type, ...) is never compared with, assigned, masked by or passed as an
integer literal other than 0; the code names the value through the registry's enums (`enums_of`) or storage's
enums that a test pins to the spec. A spec edit then fails a check instead of production.

Checked on the syntax tree of every module, with the enum-typed field names taken from the bundled stack's
message descriptors, so a new enum field in the spec is covered without editing this test."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from google.protobuf.descriptor import FieldDescriptor

from generated.teamtalk.registry import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "runtime" / "services"


def enum_fields() -> frozenset[str]:
    """The names of every enum-typed field of every message the bundled stack carries (nested ones too)."""
    names: set[str] = set()
    seen: set[str] = set()

    def visit(desc: object) -> None:
        full = desc.full_name  # type: ignore[attr-defined]
        if full in seen:
            return
        seen.add(full)
        for field in desc.fields:  # type: ignore[attr-defined]
            if field.type == FieldDescriptor.TYPE_ENUM:
                names.add(field.name)
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                visit(field.message_type)

    for info in REGISTRY:
        visit(info.message_class.DESCRIPTOR)
    return frozenset(names)


# Enum fields whose names are also everyday words of the code (an HTTP response's `status`, a local `kind`):
# too generic to judge by name alone, so not checked.
GENERIC = frozenset({"status", "state", "kind"})
FIELDS = enum_fields() - GENERIC


def _field(node: ast.expr) -> str | None:
    """The enum field an expression reads: `x.msg_type`, `msg_type`, `d["msg_type"]`, `d.get("msg_type")`."""
    if isinstance(node, ast.Attribute) and node.attr in FIELDS:
        return node.attr
    if isinstance(node, ast.Name) and node.id in FIELDS:
        return node.id
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        key = node.slice.value
        return key if isinstance(key, str) and key in FIELDS else None
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and node.args[0].value in FIELDS
    ):
        return str(node.args[0].value)
    return None


def _literals(node: ast.expr) -> list[int]:
    """Integer literals other than 0 (and not bools) in an expression: a constant, a tuple/list/set of them,
    or the two arms of a conditional expression."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return [node.value] if node.value != 0 else []
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [v for elt in node.elts for v in _literals(elt)]
    if isinstance(node, ast.IfExp):
        return _literals(node.body) + _literals(node.orelse)
    return []


def retyped(source: str, filename: str = "<source>") -> Iterator[tuple[int, str, int]]:
    """(line, field, literal) for every enum value typed by hand in `source`."""
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            for side in sides:
                field = _field(side)
                if field:
                    for other in sides:
                        for value in _literals(other):
                            yield node.lineno, field, value
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            value = node.value
            if value is None:
                continue
            for target in targets:
                field = _field(target)
                if field:
                    for literal in _literals(value):
                        yield node.lineno, field, literal
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitAnd | ast.BitOr | ast.BitXor):
            for a, b in ((node.left, node.right), (node.right, node.left)):
                field = _field(a)
                if field:
                    for literal in _literals(b):
                        yield node.lineno, field, literal
        elif isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg in FIELDS:
                    for literal in _literals(kw.value):
                        yield node.lineno, kw.arg, literal
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value in FIELDS:
                    for literal in _literals(value):
                        yield node.lineno, str(key.value), literal


def test_the_bundled_spec_has_the_enum_fields_this_test_is_about() -> None:
    assert {"msg_type", "session_type", "client_type", "group_type", "change_type", "dept_status"} <= FIELDS


def test_no_enum_value_is_typed_again_in_runtime_services() -> None:
    found = []
    for path in sorted(SERVICES.rglob("*.py")):
        for line, field, value in retyped(path.read_text(encoding="utf-8"), str(path)):
            found.append(f"{path.relative_to(ROOT)}:{line}: {field} and the literal {value:#x}")
    assert found == []


def test_the_checker_sees_every_kind_of_retyped_value() -> None:
    planted = [
        "if msg.msg_type == 0x11: pass",
        "ok = doc.get('group_type') in (1, 2)",
        "info.session_type = 2",
        "group = msg.msg_type & 0x10",
        "proto.new('X', msg_type=0x11 if group else 0x01)",
        "event = {'client_type': 17}",
        "if doc['change_type'] not in {1, 2}: pass",
        "info.dept_status = 1 if deleted else 0",
    ]
    for source in planted:
        assert list(retyped(source)), source
    clean = [
        "if msg.msg_type == enums.MsgType.MSG_TYPE_GROUP_TEXT: pass",
        "info.session_type = 0",
        "n = len(x) + 1",
        "proto.new('X', user_id=7)",
        "ok = flag is True",
    ]
    for source in clean:
        assert not list(retyped(source)), source
