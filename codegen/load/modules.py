"""Codegen load layer: build `Module` model nodes (enums, messages, fields, commands) from module YAML."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from codegen.load.reader import Reader
from codegen.load.scope import TypeTable
from codegen.load.yamlpos import Y
from codegen.model import (
    Command,
    Constraints,
    Enum,
    EnumValue,
    Field,
    Label,
    Loc,
    Message,
    Module,
    ProtoService,
    Reserved,
)

MODULE_KEYS = ("module", "doc", "options", "service", "enums", "messages", "commands", "stages")
SERVICE_KEYS = ("name", "id", "id_enum", "command_enum", "range", "doc")
ENUM_KEYS = ("values", "doc", "reserved", "allow_alias", "renamed_from", "bits")
ENUM_VALUE_KEYS = ("value", "doc", "renamed_from")
MESSAGE_KEYS = ("fields", "doc", "oneofs", "reserved", "renamed_from")
FIELD_KEYS = (
    "number",
    "type",
    "label",
    "default",
    "doc",
    "max_len",
    "min_len",
    "non_empty",
    "min",
    "max",
    "max_items",
    "pattern",
    "oneof",
    "renamed_from",
    "deprecated",
)
COMMAND_KEYS = ("id", "message", "direction", "reply", "doc", "renamed_from", "deprecated")
DIRECTIONS = ("c2s", "s2c", "both", "s2s")
LABELS = ("required", "optional", "repeated")
FIELD_MAX = (1 << 29) - 1
ENUM_MAX = (1 << 31) - 1
BIT_MAX = (1 << 32) - 1  # a named bit masks an enum value, which is at most 32 bits wide
_MAP_RE = re.compile(r"^map\s*<\s*([\w.]+)\s*,\s*([\w.]+)\s*>$")
_RANGE_RE = re.compile(r"^\s*(-?\d+)\s*(?:-|to)\s*(-?\d+|max)\s*$")


@dataclass
class ModuleSource:
    """A module's YAML before it is built: where it came from and which plugin (if any) brought it."""

    y: dict[str, Y]
    node: Y
    display: str  # path as shown in diagnostics
    rel: str  # spec-relative path
    plugin: str | None = None
    package: str = ""
    stage_entries: list[tuple[str, Y, Loc]] = field(default_factory=list)  # (target, policies, key loc)


def declare_types(src: ModuleSource, table: TypeTable) -> None:
    """First pass: put the module's message and enum names into the spec-wide type table."""
    for section, kind in (("messages", "message"), ("enums", "enum")):
        y = src.y.get(section)
        if y is not None and y.kind == "map" and src.package:
            for name in y.value:
                table.add(f"{src.package}.{name}", kind)


class ModuleBuilder:
    """Second pass: build one `Module`, resolving type names against the complete `TypeTable`."""

    def __init__(self, reader: Reader, table: TypeTable) -> None:
        self.r = reader
        self.table = table

    def build(self, src: ModuleSource) -> Module:
        y, pkg = src.y, src.package
        service = self._service(y["service"], pkg) if "service" in y else None
        enums = [
            self._enum(n, v, pkg, loc) for n, v, loc in self._named(y.get("enums"), "enums", "TT201", "enum")
        ]
        nested: dict[str, list[Enum]] = {}
        top_enums: list[Enum] = []
        msg_yaml = y.get("messages")
        msg_names = set(msg_yaml.value) if msg_yaml is not None and msg_yaml.kind == "map" else set()
        for e in enums:
            if "." in e.name:
                outer = e.name.rsplit(".", 1)[0]
                if outer not in msg_names:
                    self.r.diags.error(
                        "TT210", f"enum '{e.name}' is nested in unknown message '{outer}'", e.loc
                    )
                    continue
                nested.setdefault(outer, []).append(e)
            else:
                top_enums.append(e)
        messages = [
            self._message(n, v, pkg, loc, tuple(nested.get(n, ())))
            for n, v, loc in self._named(msg_yaml, "messages", "TT201", "message")
        ]
        commands: list[Command] = []
        cmd_y = y.get("commands")
        if cmd_y is not None:
            named = self._named(cmd_y, "commands", "TT509", "command")
            if named and service is None:
                self.r.diags.error(
                    "TT508",
                    f"module '{pkg}' declares commands but no `service`",
                    cmd_y.loc,
                    hint="add `service: {name: NAME, id: N}` to the module",
                )
            for n, v, loc in named:
                cmd = self._command(n, v, pkg, loc, service.name if service else "")
                if cmd is not None:
                    commands.append(cmd)
        stages_y = y.get("stages")
        if stages_y is not None:
            for target, pol in self.r.entries(stages_y, "stages", "TT607", "stage policy for").items():
                src.stage_entries.append((target, pol, stages_y.keys[target]))
        return Module(
            package=pkg,
            file=src.rel,
            loc=src.node.keys.get("module", src.node.loc),
            doc=self.r.string(y.get("doc"), "doc") or "",
            enums=tuple(top_enums),
            messages=tuple(messages),
            commands=tuple(commands),
            service=service,
            options=self.options(y.get("options")),
            plugin=src.plugin,
        )

    def _named(self, y: Y | None, what: str, dup_code: str, dup_what: str) -> list[tuple[str, Y, Loc]]:
        if y is None:
            return []
        items = self.r.entries(y, what, dup_code, dup_what)
        return [(name, value, y.keys[name]) for name, value in items.items()]

    def options(self, y: Y | None) -> tuple[tuple[str, str], ...]:
        if y is None:
            return ()
        out: list[tuple[str, str]] = []
        for key, value in self.r.entries(y, "options", "TT104", "option").items():
            if value.kind != "scalar" or value.value is None:
                self.r.diags.error(
                    "TT105", f"option '{key}': expected a scalar, got {value.type_name()}", value.loc
                )
                continue
            text = value.raw if not isinstance(value.value, bool) else str(value.value).lower()
            out.append((key, text))
        return tuple(out)

    def _service(self, y: Y, pkg: str) -> ProtoService | None:
        m = self.r.mapping(y, "service", SERVICE_KEYS, required=("name", "id"))
        if m is None:
            return None
        name = self.r.string(m.get("name"), "service name")
        sid = self.r.integer(m.get("id"), "service id")
        if name is None or sid is None:
            return None
        id_enum = self.r.string(m.get("id_enum"), "id_enum")
        if id_enum is not None and "." in id_enum:
            enum_part, value = id_enum.rsplit(".", 1)
            resolved = self.table.resolve(enum_part, pkg)
            id_enum = f"{resolved}.{value}" if resolved else id_enum
        command_enum = self.r.string(m.get("command_enum"), "command_enum")
        if command_enum is not None:
            command_enum = self.table.resolve(command_enum, pkg) or command_enum
        rng: tuple[int, int] | None = None
        if "range" in m:
            pair = m["range"]
            ints = (
                [self.r.integer(v, "range bound") for v in pair.value]
                if self.r.expect(pair, "seq", "range")
                else []
            )
            if len(ints) == 2 and ints[0] is not None and ints[1] is not None:
                rng = (ints[0], ints[1])
            elif ints:
                self.r.diags.error("TT105", "service range: expected [first_id, last_id]", pair.loc)
        return ProtoService(
            name=name,
            id=sid,
            loc=y.loc,
            doc=self.r.string(m.get("doc"), "doc") or "",
            id_enum_value=id_enum,
            command_enum=command_enum,
            command_range=rng,
            key_locs=_locs(m),
        )

    def reserved(self, y: Y | None, limit: int) -> Reserved:
        if y is None:
            return Reserved()
        m = self.r.mapping(y, "reserved", ("numbers", "names"))
        if m is None:
            return Reserved()
        ranges: list[tuple[int, int]] = []
        nums = m.get("numbers")
        if nums is not None and nums.kind == "map":
            self.r.diags.error("TT105", "reserved numbers: expected a list, got a mapping", nums.loc)
        items = (
            ([nums] if nums.kind == "scalar" else nums.value if nums.kind == "seq" else []) if nums else []
        )
        for item in items:
            if item.kind == "scalar" and isinstance(item.value, int) and not isinstance(item.value, bool):
                ranges.append((item.value, item.value))
                continue
            match = _RANGE_RE.match(item.raw) if item.kind == "scalar" else None
            if match is None:
                self.r.diags.error(
                    "TT306",
                    f"invalid reserved range '{item.raw}'",
                    item.loc,
                    hint="write N or N-M (or N-max)",
                )
                continue
            lo, hi = int(match.group(1)), limit if match.group(2) == "max" else int(match.group(2))
            if lo > hi:
                self.r.diags.error("TT306", f"reserved range {lo}-{hi} is empty (start > end)", item.loc)
                continue
            ranges.append((lo, hi))
        names = tuple(n for n, _ in self.r.str_list(m.get("names"), "reserved names"))
        return Reserved(numbers=tuple(ranges), names=names, loc=y.loc)

    def _enum(self, name: str, y: Y, pkg: str, loc: Loc) -> Enum:
        m = self.r.mapping(y, f"enum '{name}'", ENUM_KEYS, required=("values",)) or {}
        values: list[EnumValue] = []
        for vname, vy, vloc in self._named(m.get("values"), f"enum '{name}' values", "TT202", "enum value"):
            if vy.kind == "map":
                vm = self.r.mapping(vy, f"enum value '{vname}'", ENUM_VALUE_KEYS, required=("value",)) or {}
                number = self.r.integer(vm.get("value"), f"enum value '{vname}'")
                doc = self.r.string(vm.get("doc"), "doc") or ""
                renamed = self.r.string(vm.get("renamed_from"), "renamed_from")
            else:
                number, doc, renamed = self.r.integer(vy, f"enum value '{vname}'"), "", None
            if number is not None:
                values.append(EnumValue(vname, number, vloc, doc=doc, renamed_from=renamed))
        bits: list[tuple[str, int]] = []
        for bname, by, bloc in self._named(m.get("bits"), f"enum '{name}' bits", "TT202", "bit"):
            mask = self.r.integer(by, f"enum '{name}' bit '{bname}'")
            if not bname.isidentifier() or bname.startswith("_"):
                hint = "use letters, digits and '_'"
                self.r.diags.error("TT204", f"invalid bit name '{bname}'", bloc, hint=hint)
            elif mask is not None and not 0 < mask <= BIT_MAX:
                self.r.diags.error(
                    "TT314", f"enum '{name}' bit '{bname}': mask {mask} is not in 1..0x{BIT_MAX:x}", by.loc
                )
            elif mask is not None:
                bits.append((bname, mask))
        return Enum(
            name=name,
            package=pkg,
            values=tuple(values),
            loc=loc,
            doc=self.r.string(m.get("doc"), "doc") or "",
            reserved=self.reserved(m.get("reserved"), ENUM_MAX),
            allow_alias=bool(self.r.boolean(m.get("allow_alias"), "allow_alias")),
            renamed_from=self.r.string(m.get("renamed_from"), "renamed_from"),
            key_locs=_locs(m),
            bits=tuple(bits),
        )

    def _message(self, name: str, y: Y, pkg: str, loc: Loc, nested: tuple[Enum, ...]) -> Message:
        m = self.r.mapping(y, f"message '{name}'", MESSAGE_KEYS) or {}
        scope = f"{pkg}.{name}"
        fields = [
            f
            for fname, fy, floc in self._named(m.get("fields"), f"message '{name}' fields", "TT207", "field")
            if (f := self._field(fname, fy, scope, floc)) is not None
        ]
        oneofs = tuple(n for n, _ in self.r.str_list(m.get("oneofs"), "oneofs"))
        return Message(
            name=name,
            package=pkg,
            fields=tuple(fields),
            loc=loc,
            doc=self.r.string(m.get("doc"), "doc") or "",
            oneofs=oneofs,
            reserved=self.reserved(m.get("reserved"), FIELD_MAX),
            nested_enums=nested,
            renamed_from=self.r.string(m.get("renamed_from"), "renamed_from"),
            key_locs=_locs(m),
        )

    def _field(self, name: str, y: Y, scope: str, loc: Loc) -> Field | None:
        m = self.r.mapping(y, f"field '{name}'", FIELD_KEYS, required=("number", "type"))
        if m is None:
            return None
        number = self.r.integer(m.get("number"), f"field '{name}' number")
        type_text = self.r.string(m.get("type"), f"field '{name}' type")
        if number is None or type_text is None:
            return None
        type_text = type_text.strip()
        map_key: str | None = None
        if type_text.startswith("map"):
            match = _MAP_RE.match(type_text)
            if match is None:
                self.r.diags.error(
                    "TT113",
                    f"field '{name}': malformed map type '{type_text}'",
                    m["type"].loc,
                    hint="write map<KeyType, ValueType>",
                )
                return None
            map_key, type_text = match.group(1), match.group(2)
        resolved = self.table.resolve(type_text, scope) or type_text
        label_y = m.get("label")
        label_text = self.r.choice(label_y, f"field '{name}' label", LABELS) if label_y else None
        oneof = self.r.string(m.get("oneof"), "oneof")
        label: Label
        if map_key is not None:
            label = "repeated"
        elif label_text is not None:
            label = label_text  # type: ignore[assignment]
        else:
            label = "optional"
        return Field(
            name=name,
            number=number,
            type=resolved,
            label=label,
            loc=loc,
            doc=self.r.string(m.get("doc"), "doc") or "",
            default=plain(m["default"]) if "default" in m else None,
            constraints=self._constraints(m, name),
            map_key=map_key,
            oneof=oneof,
            renamed_from=self.r.string(m.get("renamed_from"), "renamed_from"),
            deprecated=bool(self.r.boolean(m.get("deprecated"), "deprecated")),
            explicit_label=label_y is not None,
            key_locs=_locs(m),
        )

    def _constraints(self, m: dict[str, Y], name: str) -> Constraints:
        if _CONSTRAINT_KEYS.isdisjoint(m):  # most fields: no constraint to read or report on
            return _NO_CONSTRAINTS
        what = f"field '{name}'"
        return Constraints(
            max_len=self.r.integer(m.get("max_len"), f"{what} max_len"),
            min_len=self.r.integer(m.get("min_len"), f"{what} min_len"),
            non_empty=bool(self.r.boolean(m.get("non_empty"), f"{what} non_empty")),
            min=self.r.number(m.get("min"), f"{what} min"),
            max=self.r.number(m.get("max"), f"{what} max"),
            max_items=self.r.integer(m.get("max_items"), f"{what} max_items"),
            pattern=self.r.string(m.get("pattern"), f"{what} pattern"),
        )

    def _command(self, name: str, y: Y, pkg: str, loc: Loc, service: str) -> Command | None:
        m = self.r.mapping(y, f"command '{name}'", COMMAND_KEYS, required=("id", "message", "direction"))
        if m is None:
            return None
        cid = self.r.integer(m.get("id"), f"command '{name}' id")
        message = self.r.string(m.get("message"), f"command '{name}' message")
        direction = self.r.choice(m.get("direction"), f"command '{name}' direction", DIRECTIONS)
        if cid is None or message is None or direction is None:
            return None
        return Command(
            name=name,
            id=cid,
            message=self.table.resolve(message, pkg) or message,
            direction=direction,  # type: ignore[arg-type]
            service=service,
            loc=loc,
            doc=self.r.string(m.get("doc"), "doc") or "",
            reply=self.r.string(m.get("reply"), f"command '{name}' reply"),
            module=pkg,
            renamed_from=self.r.string(m.get("renamed_from"), "renamed_from"),
            deprecated=bool(self.r.boolean(m.get("deprecated"), "deprecated")),
            key_locs=_locs(m),
        )


_CONSTRAINT_KEYS = frozenset({"max_len", "min_len", "non_empty", "min", "max", "max_items", "pattern"})
_NO_CONSTRAINTS = Constraints()


def _locs(m: dict[str, Y]) -> dict[str, Loc]:
    return {k: v.loc for k, v in m.items()}


def plain(y: Y) -> Any:
    """A located YAML value as plain Python data (for defaults and stage policy values)."""
    if y.kind == "map":
        return {k: plain(v) for k, v in y.value.items()}
    if y.kind == "seq":
        return [plain(v) for v in y.value]
    return y.value
