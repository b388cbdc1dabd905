"""Runtime fuzz layer: hypothesis strategies for spec messages: a registry from field type to strategy.

`StrategyRegistry(messages, enums, syntax)` is what a generated `strategies.py` instantiates with the tables
`codegen.emit.fuzz` computed from the spec. It offers, per message (qualified name):

- `valid(name)`: every required field set (proto2), optional ones sometimes, repeated/map sizes within
  `max_items`, at most one member per oneof, enums from their declared values, the spec's constraints
  honoured;
- `invalid(name)`: a valid message with one constrained field pushed just outside its constraint;
- `unknown_enum(name)`: serialized bytes of a valid message plus an enum field holding an undeclared value;
- `missing_required(name)`: serialized bytes of a valid message with one required field left out.

Nested and recursive messages go through `st.deferred`, so a message may refer to itself.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable
from typing import Any, Literal

from google.protobuf.message import Message
from hypothesis import strategies as st

from runtime.fuzz.spec import ENUM, MESSAGE, FieldSpec, MessageSpec

# Exact protobuf ranges per integer type.
INT_RANGES: dict[str, tuple[int, int]] = {
    "int32": (-(2**31), 2**31 - 1),
    "sint32": (-(2**31), 2**31 - 1),
    "sfixed32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "fixed32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "sint64": (-(2**63), 2**63 - 1),
    "sfixed64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
    "fixed64": (0, 2**64 - 1),
}
# Repeated fields and maps stay small unless the spec asks for fewer: fuzzing wants many small examples.
DEFAULT_MAX_ITEMS = 4
# Strings and bytes without max_len stay within this many characters/bytes.
DEFAULT_MAX_SIZE = 64

Strat = st.SearchStrategy[Any]


def integers(kind: str, lo: int | float | None = None, hi: int | float | None = None) -> Strat:
    """Integers of a protobuf type within optional spec bounds, with the bounds themselves drawn often."""
    tlo, thi = INT_RANGES[kind]
    low = max(tlo, math.ceil(lo)) if lo is not None else tlo
    high = min(thi, math.floor(hi)) if hi is not None else thi
    if low > high:
        return st.nothing()
    edges = sorted({v for v in (low, low + 1, -1, 0, 1, high - 1, high) if low <= v <= high})
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def floats(kind: str, lo: int | float | None = None, hi: int | float | None = None) -> Strat:
    """Floats (width 32 for `float`); NaN and infinities only when the spec gives no bounds."""
    width: Literal[32, 64] = 32 if kind == "float" else 64
    bounded = lo is not None or hi is not None
    if width == 32:  # bounds must be exactly representable in float32: round them inwards
        lo = _f32(lo, up=True) if lo is not None else None
        hi = _f32(hi, up=False) if hi is not None else None
    return st.floats(
        min_value=lo, max_value=hi, width=width, allow_nan=not bounded, allow_infinity=not bounded
    )


def _f32(value: float, *, up: bool) -> float:
    """`value` rounded to a float32 that stays inside the bound (up: >= value; else <= value)."""
    (bits,) = struct.unpack(">i", struct.pack(">f", value))
    rounded: float = struct.unpack(">f", struct.pack(">i", bits))[0]
    if (up and rounded < value) or (not up and rounded > value):
        # step one float32 ulp towards the inside of the range (bit patterns order like the magnitudes)
        toward_larger = up == (rounded >= 0)
        bits += 1 if toward_larger else -1
        rounded = struct.unpack(">f", struct.pack(">i", bits))[0]
    return float(rounded)


def utf8_prefix(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` whose UTF-8 encoding fits in `max_bytes`."""
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode(errors="ignore")


def strings(f: FieldSpec) -> Strat:
    """Valid unicode within the field's byte limits, matching its pattern when it has one."""
    max_bytes = f.max_len if f.max_len is not None else DEFAULT_MAX_SIZE
    min_bytes = max(f.min_len or 0, 1 if f.non_empty else 0)

    def fits(s: str) -> bool:
        return min_bytes <= len(s.encode()) <= max_bytes

    if f.pattern:
        return st.from_regex(f.pattern, fullmatch=True).filter(fits)
    base = st.text(min_size=min_bytes, max_size=max_bytes).map(lambda s: utf8_prefix(s, max_bytes))
    return base.filter(fits) if min_bytes else base


def binaries(f: FieldSpec) -> Strat:
    """Bytes within the field's limits."""
    max_bytes = f.max_len if f.max_len is not None else DEFAULT_MAX_SIZE
    min_bytes = max(f.min_len or 0, 1 if f.non_empty else 0)
    return st.binary(min_size=min_bytes, max_size=max(max_bytes, min_bytes))


def _scalar_table() -> dict[str, Callable[[FieldSpec], Strat]]:
    def ints(kind: str) -> Callable[[FieldSpec], Strat]:
        return lambda f: integers(kind, f.min, f.max)

    table: dict[str, Callable[[FieldSpec], Strat]] = {kind: ints(kind) for kind in INT_RANGES}
    table["float"] = lambda f: floats("float", f.min, f.max)
    table["double"] = lambda f: floats("double", f.min, f.max)
    table["bool"] = lambda f: st.booleans()
    table["string"] = strings
    table["bytes"] = binaries
    return table


# The registry from field type to strategy; `register_scalar` lets a project add or override an entry.
SCALARS: dict[str, Callable[[FieldSpec], Strat]] = _scalar_table()


def register_scalar(kind: str, factory: Callable[[FieldSpec], Strat]) -> None:
    """Use `factory(field)` for every field of scalar type `kind`."""
    SCALARS[kind] = factory


def encode_varint(value: int) -> bytes:
    """Protobuf base-128 varint (negative values as their 64-bit two's complement)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def varint_field(number: int, value: int) -> bytes:
    """One varint field on the wire (tag, wire type 0, value)."""
    return encode_varint(number << 3) + encode_varint(value)


class StrategyRegistry:
    """Strategies for every message of one stack, built on first use and cached."""

    def __init__(self, messages: dict[str, MessageSpec], enums: dict[str, tuple[int, ...]]) -> None:
        self.messages = messages
        self.enums = enums
        self._valid: dict[str, Strat] = {}

    # -- values ---------------------------------------------------------------------------------------------
    def value(self, f: FieldSpec, kind: str | None = None) -> Strat:
        """A strategy for one (non-repeated) value of the field's type."""
        kind = kind or f.kind
        if kind == ENUM:
            values = self.enums.get(f.ref, ())
            return st.sampled_from(values) if values else st.nothing()
        if kind == MESSAGE:
            return self.valid(f.ref)
        return SCALARS[kind](f)

    def field_value(self, f: FieldSpec) -> Strat:
        """A strategy for what the message constructor takes for this field (list, dict or value)."""
        cap = min(f.max_items, DEFAULT_MAX_ITEMS) if f.max_items is not None else DEFAULT_MAX_ITEMS
        if f.label == "repeated":
            return st.lists(self.value(f), max_size=cap)
        if f.label == "map":
            key = FieldSpec(f.name, f.number, f.map_key, "optional")
            return st.dictionaries(SCALARS[f.map_key](key), self.value(f), max_size=cap)
        return self.value(f)

    # -- messages -------------------------------------------------------------------------------------------
    def valid(self, name: str) -> Strat:
        """Valid instances of message `name` (deferred, so recursive messages work)."""
        cached = self._valid.get(name)
        if cached is None:
            cached = self._valid[name] = st.deferred(lambda: self._build(name))
        return cached

    def _build(self, name: str) -> Strat:
        spec = self.messages[name]
        parts: dict[str, Strat] = {}
        oneofs: dict[str, list[FieldSpec]] = {}
        for f in spec.fields:
            if f.oneof:
                oneofs.setdefault(f.oneof, []).append(f)
                continue
            value = self.field_value(f)
            if f.label in ("required", "implicit"):
                parts[f.name] = value
            else:  # optional, repeated and map fields are sometimes absent
                parts[f.name] = st.one_of(st.none(), value)
        for group, members in sorted(oneofs.items()):
            choices = [st.tuples(st.just(m.name), self.field_value(m)) for m in members]
            parts["\0" + group] = st.one_of(st.none(), *choices)
        return st.fixed_dictionaries(parts).map(lambda kw: construct(spec.cls, kw))

    def invalid(self, name: str) -> Strat:
        """Valid messages with exactly one constrained field set just outside its constraint."""
        spec = self.messages[name]
        variants = [
            st.tuples(self.valid(name), st.just(f), bad)
            for f in spec.fields
            if not f.oneof and (bad := violations(f)) is not None
        ]
        if not variants:
            return st.nothing()
        return st.one_of(*variants).map(lambda t: with_field(t[0], t[1], t[2]))

    def unknown_enum(self, name: str) -> Strat:
        """Wire bytes: a valid message with one enum field carrying an undeclared value appended."""
        spec = self.messages[name]
        fields = [f for f in spec.fields if f.kind == ENUM and f.label != "map"]
        if not fields:
            return st.nothing()

        def undeclared(f: FieldSpec) -> Strat:
            declared = set(self.enums.get(f.ref, ()))
            return st.integers(-(2**31), 2**31 - 1).filter(lambda v: v not in declared)

        return st.tuples(self.valid(name), st.sampled_from(fields)).flatmap(
            lambda t: undeclared(t[1]).map(
                lambda v: t[0].SerializePartialToString() + varint_field(t[1].number, v)
            )
        )

    def missing_required(self, name: str) -> Strat:
        """Wire bytes: a valid message with one required field cleared (empty if it has none)."""
        spec = self.messages[name]
        required = [f.name for f in spec.fields if f.label == "required"]
        if not required:
            return st.nothing()

        def clear(msg: Message, field: str) -> bytes:
            copy = type(msg)()
            copy.CopyFrom(msg)
            copy.ClearField(field)
            return copy.SerializePartialToString()

        return st.tuples(self.valid(name), st.sampled_from(required)).map(lambda t: clear(*t))


def construct(cls: type[Message], kwargs: dict[str, Any]) -> Message:
    """Build a message from drawn field values (None: leave unset; `\\0group`: a oneof choice)."""
    plain: dict[str, Any] = {}
    for key, value in kwargs.items():
        if value is None:
            continue
        if key.startswith("\0"):
            plain[value[0]] = value[1]
        else:
            plain[key] = value
    return cls(**plain)


def with_field(msg: Message, f: FieldSpec, value: Any) -> Message:
    """A copy of `msg` with field `f` replaced by `value`."""
    copy = type(msg)()
    copy.CopyFrom(msg)
    copy.ClearField(f.name)
    if f.label == "repeated":
        getattr(copy, f.name).extend(value)
    else:
        setattr(copy, f.name, value)
    return copy


def violations(f: FieldSpec) -> Strat | None:
    """Values just outside the field's constraints, or None if it has none that a value can break."""
    options: list[Strat] = []
    item = FieldSpec(f.name, f.number, f.kind, "optional", ref=f.ref)
    if f.label == "repeated":
        if f.max_items is not None and f.kind in SCALARS:
            options.append(
                st.lists(SCALARS[f.kind](item), min_size=f.max_items + 1, max_size=f.max_items + 3)
            )
        return st.one_of(*options) if options else None
    if f.label == "map":
        return None
    if f.kind in ("string", "bytes"):
        make: Callable[[int], Any] = (lambda n: "x" * n) if f.kind == "string" else (lambda n: b"\x00" * n)
        if f.max_len is not None:
            options.append(st.integers(f.max_len + 1, f.max_len + 64).map(make))
        if f.min_len:
            options.append(st.integers(0, f.min_len - 1).map(make))
        if f.non_empty:
            options.append(st.just(make(0)))
        if f.pattern and f.kind == "string":
            pattern = re.compile(f.pattern)
            options.append(st.text(max_size=16).filter(lambda s: pattern.fullmatch(s) is None))
    elif f.kind in INT_RANGES:
        lo, hi = INT_RANGES[f.kind]
        if f.min is not None and math.ceil(f.min) - 1 >= lo:
            options.append(st.integers(max(lo, math.ceil(f.min) - 16), math.ceil(f.min) - 1))
        if f.max is not None and math.floor(f.max) + 1 <= hi:
            options.append(st.integers(math.floor(f.max) + 1, min(hi, math.floor(f.max) + 16)))
    elif f.kind in ("float", "double"):
        if f.min is not None:
            options.append(st.just(float(f.min) - 1.0))
        if f.max is not None:
            options.append(st.just(float(f.max) + 1.0))
    return st.one_of(*options) if options else None


def minimal_message(reg: StrategyRegistry, name: str) -> Message:
    """The smallest valid instance of message `name`: required (and proto3 singular) fields at their least
    valid values, which for a proto3 field is its default unless a constraint rules that out."""
    spec = reg.messages[name]
    kwargs: dict[str, Any] = {}
    for f in spec.fields:
        if f.label not in ("required", "implicit"):
            continue
        kwargs[f.name] = minimal_value(reg, f)
    return spec.cls(**kwargs)


def minimal_value(reg: StrategyRegistry, f: FieldSpec) -> Any:
    """The least valid value of a field's type under its constraints."""
    if f.kind == ENUM:
        values = reg.enums.get(f.ref, (0,))
        return 0 if 0 in values else min(values)
    if f.kind == MESSAGE:
        return minimal_message(reg, f.ref)
    size = max(f.min_len or 0, 1 if f.non_empty else 0)
    if f.kind == "string":
        return "a" * size
    if f.kind == "bytes":
        return b"a" * size
    if f.kind == "bool":
        return False
    if f.kind in INT_RANGES:
        lo, hi = INT_RANGES[f.kind]
        low = max(lo, math.ceil(f.min)) if f.min is not None else lo
        high = min(hi, math.floor(f.max)) if f.max is not None else hi
        return min(max(0, low), high)
    low_f = float(f.min) if f.min is not None else -math.inf
    return max(0.0, low_f)


def boundary_messages(reg: StrategyRegistry, name: str) -> list[Message]:
    """Valid instances of `name` with every singular integer field at the top of its valid range, then at
    the bottom (the rest minimal): the values handlers most often mishandle, tried before random ones."""
    spec = reg.messages[name]
    ints = [
        f for f in spec.fields if f.kind in INT_RANGES and f.label in ("required", "optional", "implicit")
    ]
    out: list[Message] = []
    for end in (1, 0):
        msg = minimal_message(reg, name)
        for f in ints:
            lo, hi = INT_RANGES[f.kind]
            low = max(lo, math.ceil(f.min)) if f.min is not None else lo
            high = min(hi, math.floor(f.max)) if f.max is not None else hi
            if low <= high:
                setattr(msg, f.name, high if end else low)
        out.append(msg)
    return out if ints else []
