"""Codegen diagnostics layer: located, coded spec problems and the one boundary exception that carries them.

A `Diagnostic` reads like a compiler message:
`path:line:col: error[TT203]: unknown message 'X' (did you mean 'Y'?)`.
Codes are stable (tests and users match on them); the prose may improve. See docs/errors.md for the table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from codegen.model import Loc

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Diagnostic:
    """One problem in a spec: a stable code, a severity, a message and where it is."""

    code: str
    severity: Severity
    message: str
    loc: Loc
    hint: str = ""

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def format(self) -> str:
        """The one-line compiler-style rendering, with the hint (if any) on an indented second line."""
        text = f"{self.loc}: {self.severity}[{self.code}]: {self.message}"
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form, used by `ttgen check --format json`."""
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "file": self.loc.file,
            "line": self.loc.line,
            "col": self.loc.col,
            "hint": self.hint,
        }

    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.loc.file, self.loc.line, self.loc.col, self.code)

    def __str__(self) -> str:
        return self.format()


class SpecError(Exception):
    """The boundary exception: carries every diagnostic of a failed load or check to the CLI (exit 1)."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics: list[Diagnostic] = sorted(diagnostics, key=Diagnostic.sort_key)
        errors = [d for d in self.diagnostics if d.is_error]
        first = errors[0].format() if errors else "spec error"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(first + more)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]


class Diagnostics:
    """A collector: checks and the loader append to it; nothing stops at the first problem."""

    def __init__(self) -> None:
        self.items: list[Diagnostic] = []

    def error(self, code: str, message: str, loc: Loc, hint: str = "") -> None:
        self.items.append(Diagnostic(code, "error", message, loc, hint))

    def warning(self, code: str, message: str, loc: Loc, hint: str = "") -> None:
        self.items.append(Diagnostic(code, "warning", message, loc, hint))

    @property
    def has_errors(self) -> bool:
        return any(d.is_error for d in self.items)

    def sorted(self) -> list[Diagnostic]:
        return sorted(self.items, key=Diagnostic.sort_key)


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A ` (did you mean 'X'?)` suffix for the closest candidate, or '' when nothing is close."""
    pool = sorted(set(candidates))
    if not pool:
        return ""
    import difflib  # only a spec with errors gets here: kept off the start-up path of a clean run

    best = difflib.get_close_matches(name, pool, n=1, cutoff=0.6)
    if not best:
        # A qualified candidate whose last component matches (e.g. 'UserInfo' -> 'IM.BaseDefine.UserInfo').
        tail = name.rsplit(".", 1)[-1]
        tails = {c.rsplit(".", 1)[-1]: c for c in pool}
        close = difflib.get_close_matches(tail, sorted(tails), n=1, cutoff=0.75)
        if not close:
            return ""
        best = [tails[close[0]]]
    return f" (did you mean '{best[0]}'?)"


# Every stable code: severity and a one-line meaning. docs/errors.md explains each with an example, and
# tests/errors/ holds one bad spec per code (tests check both stay in step with this table).
CODES: dict[str, tuple[Severity, str]] = {
    "TT101": ("error", "file not found (manifest, module, cluster, stages or plugin file)"),
    "TT102": ("error", "malformed YAML or a file that is not UTF-8"),
    "TT103": ("error", "file too large (over 4 MiB) or too many YAML nodes"),
    "TT104": ("error", "duplicate key in a mapping"),
    "TT105": ("error", "wrong YAML value type (e.g. expected a mapping, got a list)"),
    "TT106": ("error", "unknown key (with did-you-mean)"),
    "TT107": ("error", "missing required key"),
    "TT108": ("error", "circular or repeated include of a file"),
    "TT109": ("error", "too many modules or spec files"),
    "TT110": ("error", "version is not semver"),
    "TT111": ("error", "value not among the allowed choices (syntax, label, direction, ...)"),
    "TT112": ("error", "empty file"),
    "TT113": ("error", "malformed map type"),
    "TT114": ("error", "invalid frame settings"),
    "TT116": ("error", "unknown file option or invalid option value"),
    "TT201": ("error", "two types (or a type and a field/oneof) share a name in one scope"),
    "TT202": (
        "error",
        "enum value name collides in its scope (C++ scoping: values are siblings of the enum)",
    ),
    "TT203": ("error", "unknown message or enum reference (with did-you-mean)"),
    "TT204": ("error", "invalid identifier"),
    "TT205": ("error", "protobuf keyword used as a name"),
    "TT206": ("warning", "field name is a Python keyword"),
    "TT207": ("error", "duplicate field name"),
    "TT208": ("error", "field names an undeclared oneof"),
    "TT209": ("error", "oneof without fields"),
    "TT210": ("error", "nested message or enum whose outer message is not declared"),
    "TT211": ("error", "two modules declare one package"),
    "TT212": ("error", "field or enum value uses a reserved name"),
    "TT213": ("error", "modules import each other in a cycle (protoc rejects recursive imports)"),
    "TT301": ("error", "duplicate field number"),
    "TT302": ("error", "field uses a reserved number"),
    "TT303": ("error", "field number outside 1..536870911"),
    "TT304": ("error", "field number in protobuf's reserved 19000..19999"),
    "TT305": ("error", "enum value outside int32"),
    "TT306": ("error", "invalid, empty, out-of-range or overlapping reserved range"),
    "TT307": ("error", "two commands share an id"),
    "TT308": ("error", "two protocol services share an id"),
    "TT309": ("error", "command id outside its service's range (default id<<8 .. id<<8|0xff)"),
    "TT310": ("error", "service id or command range does not fit the frame header"),
    "TT311": ("error", "enum value uses a reserved number"),
    "TT312": ("error", "enum without values"),
    "TT313": ("error", "command id outside 0..65535"),
    "TT314": ("error", "enum bit mask outside 1..0xffffffff"),
    "TT401": ("error", "`required` in proto3"),
    "TT402": ("error", "default value in proto3"),
    "TT403": ("error", "proto3 enum whose first value is not 0"),
    "TT404": ("error", "proto2 field without a label"),
    "TT405": ("error", "enum values share a number without allow_alias"),
    "TT406": ("error", "map key type not allowed"),
    "TT407": ("error", "oneof member is repeated or required"),
    "TT408": ("error", "default value of the wrong type"),
    "TT409": ("error", "default names an unknown enum value"),
    "TT410": ("error", "default on a repeated or message field"),
    "TT411": ("error", "map field with a label or in a oneof"),
    "TT412": ("error", "proto3 JSON names of two fields collide"),
    "TT413": ("error", "allow_alias set on an enum without aliases"),
    "TT414": ("error", "constraint does not fit the field type or contradicts another"),
    "TT415": ("error", "pattern is not a valid regular expression"),
    "TT501": ("error", "command names an enum instead of a message"),
    "TT502": ("error", "reply names an unknown command"),
    "TT503": ("error", "c2s/both/s2s command hosted by no cluster service"),
    "TT504": ("error", "cluster `hosts` names an unknown command"),
    "TT505": ("error", "cluster `links` names an unknown service"),
    "TT506": ("error", "command disagrees with the service's command_enum"),
    "TT507": ("error", "service id disagrees with its id_enum"),
    "TT508": ("error", "module declares commands but no service"),
    "TT509": ("error", "duplicate command name"),
    "TT510": ("error", "id_enum or command_enum names an unknown enum or value"),
    "TT511": ("error", "protocol service declared again with a different id"),
    "TT512": ("error", "duplicate cluster service"),
    "TT513": ("error", "cluster default_port is not a TCP port"),
    "TT514": ("error", "cluster `receives` names an unknown command"),
    "TT515": ("error", "cluster `receives` names a c2s command (no link can deliver it)"),
    "TT516": ("warning", "cluster service receives deliveries but links to no service"),
    "TT601": ("error", "stage policy for an unknown message or command"),
    "TT602": ("error", "unknown stage name"),
    "TT603": ("error", "unknown stage policy key (with did-you-mean)"),
    "TT604": ("error", "bad stage policy value (durations, rates, choices, types)"),
    "TT605": ("error", "transport.ack names an unknown command"),
    "TT606": ("error", "present.redact names an unknown field"),
    "TT607": ("error", "two stage policies for one target"),
    "TT608": ("error", "pack.codec_fields names an unknown field"),
    "TT701": ("error", "plugin reuses a base command or service id"),
    "TT702": ("error", "plugin redeclares a base package, message, enum or command"),
    "TT703": ("error", "plugin `requires` not satisfied by the spec"),
    "TT704": ("error", "plugin `requires` malformed"),
    "TT705": ("error", "plugin enabled twice"),
    "TT801": ("error", "presence notify or batch names an unknown command"),
    "TT802": ("error", "presence command's message carries no (or an ambiguous) user-stat field"),
    "TT803": ("error", "bad presence value (coalesce interval, batch_from)"),
    "TT804": ("error", "presence command is never sent to clients (direction not s2c or both)"),
    "TT805": ("error", "presence online/offline names no value of the status enum"),
    "TT851": ("error", "web field type malformed, or naming no JSON scalar, web type, message or enum"),
    "TT852": ("error", "web route malformed, or two web commands sharing an HTTP route"),
    "TT853": ("error", "web event `data` names an unknown command or one never sent to clients"),
    "TT854": ("error", "web `enums` names no enum of the spec"),
    "TT901": ("error", "internal: protoc rejected the emitted .proto text (a ttgen bug)"),
}
