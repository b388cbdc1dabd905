"""CLI compat layer: build probing sample messages from descriptors and compare messages field by field.

Every message is probed with several samples (`variants`):

* `full`: every field set, with values chosen to expose lossy changes: integers beyond 32 bits or with the
  sign bit set, negative numbers, non-ASCII strings, bytes that are not UTF-8, two elements in every repeated
  field and map, the first member of each oneof, the second value of each enum;
* `minimal`: required fields only, every optional left unset and every repeated field empty (what a writer
  that no longer sets a field sends; a reader that still requires it refuses the body);
* `enum#i`: every field set, each enum field holding its i-th value, so that every value of every enum
  crosses the wire once.

Comparison matches fields by name *and* number and enum values by name and number: a field or value the
receiver declares under another number is broken (it lands elsewhere), a value that did not survive is lost,
and a field or enum value the receiver does not declare at all is carried (protobuf keeps it as an unknown
field, so an echo brings it back). Text is normalized to bytes, so a rename or a string/bytes switch with
valid text survives while truncation, sign flips and drops do not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
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
FULL_ENUM_INDEX = 1  # the full sample's enum value: not the default, and present when values are appended


def _is_map(fd: FieldDescriptor) -> bool:
    return fd.message_type is not None and fd.message_type.GetOptions().map_entry


def _is_message(fd: FieldDescriptor) -> bool:
    return fd.type in (F.TYPE_MESSAGE, F.TYPE_GROUP)


def _scalar(fd: FieldDescriptor, salt: int, enum_index: int) -> Any:
    if fd.type == F.TYPE_ENUM and fd.enum_type is not None:
        values = fd.enum_type.values
        return values[enum_index % len(values)].number
    return _INT_SAMPLES[fd.type](salt)


def fill_sample(
    msg: Message, depth: int = 0, *, enum_index: int = FULL_ENUM_INDEX, minimal: bool = False
) -> Message:
    """Set the fields of `msg` to probing values, nesting up to MAX_DEPTH (required messages always).

    `minimal` sets required fields only; `enum_index` picks each enum field's value (modulo its count).
    """
    desc: Descriptor = msg.DESCRIPTOR  # type: ignore[assignment]  # upb's Descriptor is the same API
    for fd in desc.fields:
        if minimal and not fd.is_required:
            continue
        oneof = fd.containing_oneof
        if oneof is not None and not getattr(oneof, "is_synthetic", False) and oneof.fields[0] != fd:
            continue  # only the first member of a real oneof
        is_message = _is_message(fd)
        if is_message and depth >= MAX_DEPTH and not fd.is_required:
            continue
        nested = {"enum_index": enum_index, "minimal": minimal}
        if _is_map(fd) and fd.message_type is not None:
            entry = fd.message_type.fields_by_name
            key_f, value_f = entry["key"], entry["value"]
            container = getattr(msg, fd.name)
            for i in range(2):
                key = _scalar(key_f, fd.number + i, enum_index + i)
                if _is_message(value_f):
                    fill_sample(container[key], depth + 1, **nested)  # type: ignore[arg-type]
                else:
                    container[key] = _scalar(value_f, fd.number + i, enum_index + i)
        elif fd.is_repeated:
            container = getattr(msg, fd.name)
            for i in range(2):
                if is_message:
                    fill_sample(container.add(), depth + 1, **nested)  # type: ignore[arg-type]
                else:
                    container.append(_scalar(fd, fd.number + i, enum_index + i))
        elif is_message:
            fill_sample(getattr(msg, fd.name), depth + 1, **nested)  # type: ignore[arg-type]
        else:
            setattr(msg, fd.name, _scalar(fd, fd.number, enum_index))
    return msg


def sample(cls: type[Message]) -> Message:
    """A new message of `cls` with every field set to a probing value (the `full` variant)."""
    return fill_sample(cls())


def _enum_sizes(desc: Descriptor, depth: int, out: set[int]) -> None:
    for fd in desc.fields:
        if fd.enum_type is not None:
            out.add(len(fd.enum_type.values))
        if fd.message_type is not None and depth < MAX_DEPTH:
            _enum_sizes(fd.message_type, depth + 1, out)


def variants(cls: type[Message]) -> list[tuple[str, Message]]:
    """The samples a probe sends, named: `full`, `minimal`, then `enum#i` until every enum value was used."""
    out = [("full", sample(cls)), ("minimal", fill_sample(cls(), minimal=True))]
    sizes: set[int] = set()
    _enum_sizes(cls.DESCRIPTOR, 0, sizes)  # type: ignore[arg-type]
    for i in range(max(sizes, default=0)):
        if i != FULL_ENUM_INDEX:
            out.append((f"enum#{i}", fill_sample(cls(), enum_index=i)))
    return out


@dataclass
class Comparison:
    """What became of a sent message at the receiver.

    `broken`: values that land somewhere else (a field or enum value the receiver declares under another
    number); `lost`: values that changed or vanished; `carried`: fields and enum values the receiver does not
    declare, kept as unknown fields.
    """

    broken: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    carried: list[str] = field(default_factory=list)

    def merge(self, other: Comparison) -> None:
        self.broken.extend(other.broken)
        self.lost.extend(other.lost)
        self.carried.extend(other.carried)


def _norm(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return value


def compare(sent: Message, got: Message, path: str = "") -> Comparison:
    """Compare two messages (possibly of different versions), matching fields by name and number."""
    result = Comparison()
    got_desc: Descriptor = got.DESCRIPTOR  # type: ignore[assignment]  # upb's Descriptor is the same API
    got_by_number = {f.number: f for f in got_desc.fields}
    got_by_name = {f.name: f for f in got_desc.fields}
    got_values = {f.number: v for f, v in got.ListFields()}
    for fd, value in sorted(sent.ListFields(), key=lambda fv: fv[0].number):
        where = f"{path}{fd.name}"
        namesake = got_by_name.get(fd.name)
        if namesake is not None and namesake.number != fd.number:
            result.broken.append(
                f"{where}: sent as field {fd.number}, but the receiver declares {fd.name} = {namesake.number}"
            )
            continue
        got_fd = got_by_number.get(fd.number)
        if got_fd is None:
            result.carried.append(where)
            continue
        if fd.number not in got_values:
            if fd.is_repeated and not _is_map(fd):
                _compare_lists(where, fd, got_fd, list(value), [], result)
            elif not _unknown_enum_value(where, fd, got_fd, value, result):
                result.lost.append(f"{where}: sent {_show(value)}, receiver has it unset")
            continue
        got_value = got_values[fd.number]
        if got_fd.type == F.TYPE_STRING and _holds_bytes(got_value):
            # upb hands out proto2 strings that are not valid UTF-8 as bytes: the reader gets no text.
            result.lost.append(f"{where}: received bytes that are not valid UTF-8 in a string field")
            continue
        if _is_map(fd) or _is_map(got_fd):
            if _is_map(fd) != _is_map(got_fd):
                result.lost.append(f"{where}: map on one side only")
            else:
                _compare_maps(where, value, got_value, result)
        elif fd.is_repeated or got_fd.is_repeated:
            a = list(value) if fd.is_repeated else [value]
            b = list(got_value) if got_fd.is_repeated else [got_value]
            _compare_lists(where, fd, got_fd, a, b, result)
        else:
            _compare_values(where, fd, got_fd, value, got_value, result)
    return result


def _enum_pair(fd: FieldDescriptor, got_fd: FieldDescriptor) -> tuple[EnumDescriptor, EnumDescriptor] | None:
    if fd.type == F.TYPE_ENUM and got_fd.type == F.TYPE_ENUM and fd.enum_type and got_fd.enum_type:
        return fd.enum_type, got_fd.enum_type
    return None


def _unknown_enum_value(
    where: str, fd: FieldDescriptor, got_fd: FieldDescriptor, number: Any, result: Comparison
) -> bool:
    """A sent enum number the receiver does not declare: broken if it knows the name under another number,
    else carried (a closed enum keeps it as an unknown field). False when `number` is not such a value."""
    enums = _enum_pair(fd, got_fd)
    if enums is None or number in enums[1].values_by_number:
        return False
    sent_value = enums[0].values_by_number.get(number)
    name = sent_value.name if sent_value is not None else str(number)
    elsewhere = enums[1].values_by_name.get(name)
    if elsewhere is not None:
        result.broken.append(
            f"{where}: sent {name} = {number}, but the receiver declares {name} = {elsewhere.number}"
        )
    else:
        result.carried.append(f"{where}={name}")
    return True


def _holds_bytes(value: Any) -> bool:
    if isinstance(value, bytes):
        return True
    if isinstance(value, str | Message) or not hasattr(value, "__iter__"):
        return False
    return any(isinstance(v, bytes) for v in value)


def _compare_values(
    where: str, fd: FieldDescriptor, got_fd: FieldDescriptor, a: Any, b: Any, result: Comparison
) -> None:
    if isinstance(a, Message) and isinstance(b, Message):
        result.merge(compare(a, b, f"{where}."))
    elif isinstance(a, Message) or isinstance(b, Message):
        result.lost.append(f"{where}: message on one side, {type(b).__name__} on the other")
    elif _norm(a) != _norm(b):
        result.lost.append(f"{where}: sent {_show(a)}, received {_show(b)}")
    else:
        enums = _enum_pair(fd, got_fd)
        if enums is None:
            return
        sent_value, got_value = enums[0].values_by_number.get(a), enums[1].values_by_number.get(b)
        if got_value is None:  # an open (proto3) enum keeps a number it does not declare
            _unknown_enum_value(where, fd, got_fd, a, result)
        elif sent_value is not None and sent_value.name != got_value.name:
            elsewhere = enums[1].values_by_name.get(sent_value.name)
            if elsewhere is not None:  # a rename keeps the number; a renumbering moves the name
                result.broken.append(
                    f"{where}: sent {sent_value.name} = {a}, the receiver reads {got_value.name} "
                    f"(it declares {sent_value.name} = {elsewhere.number})"
                )


def _compare_lists(
    where: str, fd: FieldDescriptor, got_fd: FieldDescriptor, a: list[Any], b: list[Any], result: Comparison
) -> None:
    enums = _enum_pair(fd, got_fd)
    if enums is not None:
        # A closed enum moves numbers it does not declare out of the list into unknown fields.
        unknown = [v for v in a if v not in enums[1].values_by_number]
        if len(b) == len(a) - len(unknown):
            for v in unknown:
                _unknown_enum_value(where, fd, got_fd, v, result)
            a = [v for v in a if v in enums[1].values_by_number]
    if len(a) != len(b):
        result.lost.append(f"{where}: sent {len(a)} value(s), received {len(b)}")
        return
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        _compare_values(f"{where}[{i}]", fd, got_fd, x, y, result)


def _compare_maps(where: str, a: Any, b: Any, result: Comparison) -> None:
    a_keys = {_norm(k): k for k in a}
    b_keys = {_norm(k): k for k in b}
    if set(a_keys) != set(b_keys):
        result.lost.append(f"{where}: keys {sorted(map(repr, a_keys))} became {sorted(map(repr, b_keys))}")
        return
    for nk, k in sorted(a_keys.items()):
        x, y = a[k], b[b_keys[nk]]
        if isinstance(x, Message) and isinstance(y, Message):
            result.merge(compare(x, y, f"{where}[{k!r}]."))
        elif _norm(x) != _norm(y):
            result.lost.append(f"{where}[{k!r}]: sent {_show(x)}, received {_show(y)}")


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, Message) else f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."
