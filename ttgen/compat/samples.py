"""CLI compat layer: build probing sample messages from descriptors and compare messages field by field.

Samples carry values chosen to expose lossy changes: integers beyond 32 bits or with the sign bit set,
negative numbers, non-ASCII strings, bytes that are not UTF-8, two elements in every repeated field and map.
Comparison goes by field *number* (names may differ between versions) and normalizes text to bytes, so a
rename or a string/bytes switch with valid text counts as survived while truncation, sign flips and drops
do not.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

F = FieldDescriptor

# One probing value per scalar type; `salt` (the field number) keeps values of different fields apart.
_INT_SAMPLES: dict[int, Any] = {
    F.TYPE_INT32: lambda s: -(1000 + s),
    F.TYPE_INT64: lambda s: (1 << 40) + s,
    F.TYPE_UINT32: lambda s: (1 << 32) - 1 - s,
    F.TYPE_UINT64: lambda s: (1 << 63) + s,
    F.TYPE_SINT32: lambda s: -(2000 + s),
    F.TYPE_SINT64: lambda s: -((1 << 40) + s),
    F.TYPE_FIXED32: lambda s: (1 << 32) - 2 - s,
    F.TYPE_FIXED64: lambda s: (1 << 64) - 2 - s,
    F.TYPE_SFIXED32: lambda s: -(3000 + s),
    F.TYPE_SFIXED64: lambda s: -((1 << 41) + s),
    F.TYPE_FLOAT: lambda s: 1.5 + s,
    F.TYPE_DOUBLE: lambda s: 2.25 + s,
    F.TYPE_BOOL: lambda s: True,
    F.TYPE_STRING: lambda s: f"héllo-{s}",
    F.TYPE_BYTES: lambda s: b"\xff\xfe" + str(s).encode(),
}
MAX_DEPTH = 3


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _scalar(field: FieldDescriptor, salt: int) -> Any:
    if field.type == F.TYPE_ENUM and field.enum_type is not None:
        values = field.enum_type.values
        # The second declared value: not the default, and present in older versions when values are appended.
        return values[1].number if len(values) > 1 else values[0].number
    return _INT_SAMPLES[field.type](salt)


def fill_sample(msg: Message, depth: int = 0) -> Message:
    """Set every field of `msg` to a probing value (first member of each oneof), nesting up to MAX_DEPTH."""
    desc: Descriptor = msg.DESCRIPTOR  # type: ignore[assignment]  # upb's Descriptor is the same API
    for field in desc.fields:
        oneof = field.containing_oneof
        if oneof is not None and not getattr(oneof, "is_synthetic", False) and oneof.fields[0] != field:
            continue  # only the first member of a real oneof
        is_message = field.type in (F.TYPE_MESSAGE, F.TYPE_GROUP)
        if is_message and depth >= MAX_DEPTH and not field.is_required:
            continue
        if _is_map(field) and field.message_type is not None:
            entry = field.message_type.fields_by_name
            key_f, value_f = entry["key"], entry["value"]
            container = getattr(msg, field.name)
            for i in range(2):
                key = _scalar(key_f, field.number + i)
                if value_f.type == F.TYPE_MESSAGE:
                    fill_sample(container[key], depth + 1)
                else:
                    container[key] = _scalar(value_f, field.number + i)
        elif field.is_repeated:
            container = getattr(msg, field.name)
            for i in range(2):
                if is_message:
                    fill_sample(container.add(), depth + 1)
                else:
                    container.append(_scalar(field, field.number + i))
        elif is_message:
            fill_sample(getattr(msg, field.name), depth + 1)
        else:
            setattr(msg, field.name, _scalar(field, field.number))
    return msg


def sample(cls: type[Message]) -> Message:
    """A new message of `cls` filled with probing values."""
    return fill_sample(cls())


def _norm(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return value


def _field_values(msg: Message) -> dict[int, tuple[FieldDescriptor, Any]]:
    return {f.number: (f, v) for f, v in msg.ListFields()}


def compare(sent: Message, got: Message, path: str = "") -> tuple[list[str], list[str]]:
    """Compare two messages (possibly of different versions) by field number.

    Returns (differences, carried): differences are values that did not survive; `carried` names fields the
    receiving version does not declare (protobuf keeps them as unknown fields, so they are not lost).
    """
    diffs: list[str] = []
    carried: list[str] = []
    got_fields = {f.number: f for f in got.DESCRIPTOR.fields}
    got_values = _field_values(got)
    for number, (field, value) in sorted(_field_values(sent).items()):
        where = f"{path}{field.name}"
        if number not in got_fields:
            carried.append(where)
            continue
        if number not in got_values:
            diffs.append(f"{where}: sent {_show(value)}, receiver has it unset")
            continue
        got_field, got_value = got_values[number]
        if got_field.type == F.TYPE_STRING and _holds_bytes(got_value):
            # upb hands out proto2 strings that are not valid UTF-8 as bytes: the reader gets no text.
            diffs.append(f"{where}: received bytes that are not valid UTF-8 in a string field")
            continue
        if _is_map(field) or _is_map(got_field):
            if _is_map(field) != _is_map(got_field):
                diffs.append(f"{where}: map on one side only")
            else:
                _compare_maps(where, value, got_value, diffs, carried)
        elif field.is_repeated or got_field.is_repeated:
            a = list(value) if field.is_repeated else [value]
            b = list(got_value) if got_field.is_repeated else [got_value]
            _compare_lists(where, a, b, diffs, carried)
        else:
            _compare_values(where, value, got_value, diffs, carried)
    return diffs, carried


def _holds_bytes(value: Any) -> bool:
    if isinstance(value, bytes):
        return True
    if isinstance(value, str | Message) or not hasattr(value, "__iter__"):
        return False
    return any(isinstance(v, bytes) for v in value)


def _compare_values(where: str, a: Any, b: Any, diffs: list[str], carried: list[str]) -> None:
    if isinstance(a, Message) and isinstance(b, Message):
        d, c = compare(a, b, f"{where}.")
        diffs.extend(d)
        carried.extend(c)
    elif isinstance(a, Message) or isinstance(b, Message):
        diffs.append(f"{where}: message on one side, {type(b).__name__} on the other")
    elif _norm(a) != _norm(b):
        diffs.append(f"{where}: sent {_show(a)}, received {_show(b)}")


def _compare_lists(where: str, a: list[Any], b: list[Any], diffs: list[str], carried: list[str]) -> None:
    if len(a) != len(b):
        diffs.append(f"{where}: sent {len(a)} value(s), received {len(b)}")
        return
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        _compare_values(f"{where}[{i}]", x, y, diffs, carried)


def _compare_maps(where: str, a: Any, b: Any, diffs: list[str], carried: list[str]) -> None:
    a_keys = {_norm(k): k for k in a}
    b_keys = {_norm(k): k for k in b}
    if set(a_keys) != set(b_keys):
        diffs.append(f"{where}: keys {sorted(map(repr, a_keys))} became {sorted(map(repr, b_keys))}")
        return
    for nk, k in sorted(a_keys.items()):
        _compare_values(f"{where}[{k!r}]", a[k], b[b_keys[nk]], diffs, carried)


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, Message) else f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."
