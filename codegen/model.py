"""Codegen model layer: the frozen, located intermediate representation of a ttgen spec.

The loader (`codegen.load`) builds these objects from YAML; the validator (`codegen.validate`) checks them;
emitters (`codegen.emit`) and the differ (`codegen.diff`) read them. Every node carries the `Loc` of the YAML
node it came from so that any diagnostic can point at `file:line:col`.

Names: messages and enums are referred to by *qualified* name `<package>.<Name>` once resolved
(e.g. `IM.BaseDefine.UserInfo`). Commands, cluster services and plugins have spec-wide unique plain names.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Literal

Label = Literal["required", "optional", "repeated"]
Syntax = Literal["proto2", "proto3"]
# How message bodies travel between peers: `binary` (protobuf binary only, as TeamTalk frames carry them)
# or `json` (some peers also exchange the protobuf JSON form, so field and enum value names are on the wire).
Wire = Literal["binary", "json"]
WIRE_FORMATS: tuple[str, ...] = ("binary", "json")
# c2s: client -> server request; s2c: server -> client (response or push); both: either way (e.g. IMMsgData);
# s2s: between cluster services only, never accepted from a client connection.
Direction = Literal["c2s", "s2c", "both", "s2s"]

SCALAR_TYPES: frozenset[str] = frozenset(
    {
        "double", "float", "int32", "int64", "uint32", "uint64", "sint32", "sint64",
        "fixed32", "fixed64", "sfixed32", "sfixed64", "bool", "string", "bytes",
    }
)
# Types allowed as map keys (protobuf rule).
MAP_KEY_TYPES: frozenset[str] = SCALAR_TYPES - {"double", "float", "bytes"}
STAGES: tuple[str, ...] = ("input", "pack", "transport", "unpack", "store", "present")
# Who receives a user's presence changes: every client of the company (TeamTalk), the clients whose recent
# one-to-one sessions include the user, or the clients that asked for the user's status.
PRESENCE_AUDIENCES: tuple[str, ...] = ("company", "contacts", "subscribers")
PRESENCE_CLIENTS: tuple[str, ...] = ("pc", "mobile", "all")  # which connections of a recipient get them


@dataclass(frozen=True, order=True)
class Loc:
    """A position in a spec file: 1-based line and column. `Loc.none()` for synthesized nodes."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}" if self.line else self.file

    @staticmethod
    def none() -> Loc:
        return Loc("<builtin>")


_new_object = object.__new__


def make_loc(file: str, line: int, col: int) -> Loc:
    """`Loc(file, line, col)` without the frozen-dataclass `__init__` (3-4x faster): the YAML reader makes one
    per node. The result is an ordinary, equal and equally hashed `Loc`."""
    loc: Loc = _new_object(Loc)
    attrs = loc.__dict__
    attrs["file"] = file
    attrs["line"] = line
    attrs["col"] = col
    return loc


@dataclass(frozen=True)
class Constraints:
    """Value constraints on a field, enforced by the runtime's input stage and used by fuzz strategies."""

    max_len: int | None = None  # string/bytes length in bytes; repeated: max items
    min_len: int | None = None
    non_empty: bool = False
    min: int | float | None = None  # numeric range, inclusive
    max: int | float | None = None
    max_items: int | None = None  # repeated fields
    pattern: str | None = None  # regular expression for strings


@dataclass(frozen=True)
class Field:
    name: str
    number: int
    type: str  # scalar name, or a message/enum reference (qualified after resolution)
    label: Label
    loc: Loc
    doc: str = ""
    default: Any = None  # proto2 default (scalar literal or enum value name)
    constraints: Constraints = Constraints()
    map_key: str | None = None  # set for map fields: map<map_key, type>
    oneof: str | None = None  # name of the containing oneof
    renamed_from: str | None = None  # evolution hint for `ttgen diff`
    deprecated: bool = False
    # False when the spec omitted the label (proto3 singular, map, oneof member): emitters then print none.
    explicit_label: bool = True
    key_locs: dict[str, Loc] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def is_map(self) -> bool:
        return self.map_key is not None

    @property
    def is_scalar(self) -> bool:
        return self.type in SCALAR_TYPES


@dataclass(frozen=True)
class Reserved:
    numbers: tuple[tuple[int, int], ...] = ()  # inclusive ranges
    names: tuple[str, ...] = ()
    loc: Loc = Loc.none()  # noqa: RUF009  (a Loc is immutable, so one shared default is safe)


@dataclass(frozen=True)
class EnumValue:
    name: str
    value: int
    loc: Loc
    doc: str = ""
    renamed_from: str | None = None


@dataclass(frozen=True)
class Enum:
    name: str  # simple name
    package: str
    values: tuple[EnumValue, ...]
    loc: Loc
    doc: str = ""
    reserved: Reserved = Reserved()
    allow_alias: bool = False
    renamed_from: str | None = None
    key_locs: dict[str, Loc] = field(default_factory=dict, compare=False, hash=False, repr=False)
    # Named bits of the values (e.g. TeamTalk's MsgType: bit 0x10 marks a group message): (name, mask) in spec
    # order. Not on the wire; emitted into the registry beside the enum, so services test bits by name.
    bits: tuple[tuple[str, int], ...] = ()

    @property
    def qualname(self) -> str:
        return f"{self.package}.{self.name}"


@dataclass(frozen=True)
class Message:
    name: str  # simple name (nested messages: `Outer.Inner`)
    package: str
    fields: tuple[Field, ...]
    loc: Loc
    doc: str = ""
    oneofs: tuple[str, ...] = ()
    reserved: Reserved = Reserved()
    nested_enums: tuple[Enum, ...] = ()
    renamed_from: str | None = None
    key_locs: dict[str, Loc] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def qualname(self) -> str:
        return f"{self.package}.{self.name}"


@dataclass(frozen=True)
class ProtoService:
    """A protocol service: a numeric id grouping commands (TeamTalk's ServiceID)."""

    name: str
    id: int
    loc: Loc
    doc: str = ""
    # Optional links to wire-contract enums that must agree with the spec (validated):
    id_enum_value: str | None = None  # e.g. IM.BaseDefine.ServiceID.SID_LOGIN
    command_enum: str | None = None  # e.g. IM.BaseDefine.LoginCmdID; every command name must be a value of it
    command_range: tuple[int, int] | None = None  # default: (id << 8, (id << 8) | 0xff)
    key_locs: dict[str, Loc] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def range(self) -> tuple[int, int]:
        return self.command_range or (self.id << 8, (self.id << 8) | 0xFF)


@dataclass(frozen=True)
class Command:
    name: str  # e.g. CID_MSG_DATA
    id: int
    message: str  # qualified message name
    direction: Direction
    service: str  # ProtoService name
    loc: Loc
    doc: str = ""
    reply: str | None = None  # name of the command that answers this one
    module: str = ""  # package of the module that declares it
    renamed_from: str | None = None
    deprecated: bool = False
    key_locs: dict[str, Loc] = field(default_factory=dict, compare=False, hash=False, repr=False)


@dataclass(frozen=True)
class Module:
    """One YAML module file: one protobuf package, one `.proto` file."""

    package: str  # e.g. IM.Login
    file: str  # spec-relative path of the YAML file
    loc: Loc
    doc: str = ""
    enums: tuple[Enum, ...] = ()
    messages: tuple[Message, ...] = ()
    commands: tuple[Command, ...] = ()
    service: ProtoService | None = None
    options: tuple[tuple[str, str], ...] = ()  # file options, e.g. (("optimize_for", "LITE_RUNTIME"),)
    plugin: str | None = None  # set when the module comes from a plugin fragment

    @property
    def proto_file(self) -> str:
        """The emitted .proto file name: package with dots as underscores (location independent)."""
        return self.package.replace(".", "_") + ".proto"


@dataclass(frozen=True)
class StagePolicy:
    """The policies of the six lifecycle stages for one message or command.

    Each stage is a plain mapping of policy keys to values, validated against the stage schema
    (`codegen.stages_schema`) and carried verbatim into the generated registry, where the runtime's stage
    units interpret it. A command's policy overrides its message's policy key by key.
    """

    target: str  # qualified message name or command name
    loc: Loc
    input: dict[str, Any] = field(default_factory=dict)
    pack: dict[str, Any] = field(default_factory=dict)
    transport: dict[str, Any] = field(default_factory=dict)
    unpack: dict[str, Any] = field(default_factory=dict)
    store: dict[str, Any] = field(default_factory=dict)
    present: dict[str, Any] = field(default_factory=dict)
    key_locs: dict[str, Loc] = field(default_factory=dict)  # "<stage>.<key>" -> location, for diagnostics

    def stage(self, name: str) -> dict[str, Any]:
        return dict(getattr(self, name))

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {s: dict(getattr(self, s)) for s in STAGES if getattr(self, s)}


@dataclass(frozen=True)
class PresencePolicy:
    """Presence fan-out (the manifest's `presence:`): who receives a user's status changes, on which
    connections, and how they are coalesced: per recipient only the latest state of each user, flushed at
    most once per `coalesce` interval, as one `notify` push per user or, from `batch_from` users on, one
    `batch` push carrying the list. Status queries are not affected."""

    loc: Loc
    notify: str  # command pushing one user's change (its message holds one user-stat field)
    online: str  # value names of the user-stat status enum
    offline: str
    audience: tuple[str, ...] = ("company",)
    clients: str = "pc"
    coalesce: str = "0ms"  # a duration; 0ms: every change flushed at once
    batch: str | None = None  # command pushing many users' states (a repeated user-stat field)
    batch_from: int = 2
    doc: str = ""
    key_locs: dict[str, Loc] = field(default_factory=dict, compare=False, hash=False, repr=False)


@dataclass(frozen=True)
class ClusterService:
    """A cluster service (a process role): which commands it hosts (what its clients send it), which it
    receives from its links (what linked services deliver to it: relays, pushes, notices) and which services
    it links to."""

    name: str  # e.g. msg
    # login | msg | router | biz | storage | file | gateway | monitor | config | log | <plugin role>
    role: str
    loc: Loc
    doc: str = ""
    hosts: tuple[str, ...] = ()  # command names
    receives: tuple[str, ...] = ()  # command names delivered over its links
    links: tuple[str, ...] = ()  # other cluster service names
    listen: str = ""  # "tcp" | "http" | "tcp+http" | "" (none)
    default_port: int | None = None
    plugin: str | None = None
    key_locs: dict[str, Loc] = field(default_factory=dict, compare=False, hash=False, repr=False)


@dataclass(frozen=True)
class Plugin:
    name: str
    file: str
    loc: Loc
    doc: str = ""
    requires: str = ""  # spec name and version range it extends, e.g. "teamtalk>=1.0"
    key_locs: dict[str, Loc] = field(default_factory=dict, compare=False, hash=False, repr=False)


def loc_at(node: Any, key: str) -> Loc:
    """The location of `key`'s value in a model node (falls back to the node's own location)."""
    locs: dict[str, Loc] = getattr(node, "key_locs", {})
    loc: Loc = locs.get(key, node.loc)
    return loc


@dataclass(frozen=True)
class Frame:
    """The frame header layout the runtime speaks."""

    kind: str = "teamtalk16"  # the 16-byte TeamTalk header
    max_frame_bytes: int = 1 << 20
    version: int = 1


@dataclass(frozen=True)
class Spec:
    name: str
    version: str  # semver
    syntax: Syntax
    root: str  # directory of the manifest
    loc: Loc
    doc: str = ""
    frame: Frame = Frame()
    modules: tuple[Module, ...] = ()
    cluster: tuple[ClusterService, ...] = ()
    stages: tuple[StagePolicy, ...] = ()
    plugins: tuple[Plugin, ...] = ()
    presence: PresencePolicy | None = None
    options: tuple[tuple[str, str], ...] = ()  # file options applied to every module unless overridden
    key_locs: dict[str, Loc] = field(default_factory=dict, compare=False, hash=False, repr=False)
    # Manifest `output:` / `docs_output:`: where `ttgen generate` writes the stack's parent folder and an
    # extra copy of the protocol docs, relative to the manifest folder (None: the default
    # `<root>/../generated`, no copy).
    output: str | None = None
    docs_output: str | None = None
    # Manifest `wire:`: which encodings peers exchange bodies in (see `Wire`); `ttgen diff` judges renames and
    # name reservations by it.
    wire: Wire = "binary"
    # Manifest `web:`: the gateway's JSON API for browsers (None: no browser client is generated).
    web: WebApi | None = None

    # Convenience look-ups (computed; the model stays immutable).
    def messages(self) -> dict[str, Message]:
        return {m.qualname: m for mod in self.modules for m in mod.messages}

    def enums(self) -> dict[str, Enum]:
        out: dict[str, Enum] = {}
        for mod in self.modules:
            for e in mod.enums:
                out[e.qualname] = e
            for m in mod.messages:
                for e in m.nested_enums:
                    out[e.qualname] = e
        return out

    def commands(self) -> dict[str, Command]:
        return {c.name: c for mod in self.modules for c in mod.commands}

    def services(self) -> dict[str, ProtoService]:
        return {mod.service.name: mod.service for mod in self.modules if mod.service is not None}

    def cluster_services(self) -> dict[str, ClusterService]:
        return {s.name: s for s in self.cluster}

    def stage_policy(self, target: str) -> StagePolicy | None:
        return self._stage_policies.get(target)

    @functools.cached_property
    def _stage_policies(self) -> dict[str, StagePolicy]:
        # Target -> its first policy, built on first use (cached_property writes the instance __dict__
        # directly, so the spec stays frozen): `stage_policy` runs per command in several emitters.
        out: dict[str, StagePolicy] = {}
        for p in self.stages:
            out.setdefault(p.target, p)
        return out

    def effective_stages(self, command: Command) -> dict[str, dict[str, Any]]:
        """Stage policies of a command: its message's policy, overridden key by key by the command's own."""
        merged: dict[str, dict[str, Any]] = {}
        for target in (command.message, command.name):
            pol = self.stage_policy(target)
            if pol is None:
                continue
            for stage, values in pol.as_dict().items():
                merged.setdefault(stage, {}).update(values)
        return merged


# The browser API (the manifest's `web:` section) ---------------------------------------------------------
# A web field's type: a JSON scalar, a `types:` name, a spec message (its protobuf JSON form) or a spec enum
# (its number), optionally a list (`T[]`) and optionally absent (`T?`).
WEB_SCALARS: tuple[str, ...] = ("string", "int", "number", "bool", "json")


@dataclass(frozen=True)
class WebField:
    name: str
    type: str  # the base type: a WEB_SCALARS name, a web type name, a message or enum qualname
    loc: Loc
    list: bool = False
    optional: bool = False
    doc: str = ""


@dataclass(frozen=True)
class WebType:
    """A named JSON object shape (`web.types`)."""

    name: str
    fields: tuple[WebField, ...]
    loc: Loc
    doc: str = ""


@dataclass(frozen=True)
class WebCommand:
    """A client-to-gateway command: an HTTP route, a WebSocket op (its name), or both."""

    name: str
    loc: Loc
    doc: str = ""
    method: str = ""  # HTTP method ("" when the command is WebSocket-only)
    path: str = ""
    ws: bool = True  # also sent over the WebSocket as `{op: name, id, ...request}`
    auth: bool = True  # needs the session token
    body: str = "json"  # how a POST carries the request: "json", or "multipart" (form data, e.g. a file)
    request: tuple[WebField, ...] = ()
    reply: tuple[WebField, ...] = ()
    key_locs: dict[str, Loc] = field(default_factory=dict, compare=False, hash=False, repr=False)


@dataclass(frozen=True)
class WebEvent:
    """A gateway-to-client event `{type: name, seq, ...fields}`; `data` names the command whose message is
    carried as `data` (its protobuf JSON form)."""

    name: str
    loc: Loc
    doc: str = ""
    fields: tuple[WebField, ...] = ()
    data: str | None = None
    key_locs: dict[str, Loc] = field(default_factory=dict, compare=False, hash=False, repr=False)


@dataclass(frozen=True)
class WebApi:
    """The gateway's JSON API for browsers (the manifest's `web:`), source of the generated browser client."""

    loc: Loc
    doc: str = ""
    http: str = "/api"  # path prefix of the JSON API
    websocket: str = ""  # the WebSocket endpoint; "" for long-poll only
    enums: tuple[str, ...] = ()  # spec enums the browser client carries (qualified names)
    types: tuple[WebType, ...] = ()
    commands: tuple[WebCommand, ...] = ()
    events: tuple[WebEvent, ...] = ()
    key_locs: dict[str, Loc] = field(default_factory=dict, compare=False, hash=False, repr=False)
