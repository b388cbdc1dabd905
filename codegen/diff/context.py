"""Codegen diff layer: the shared state of one diff run (both specs, element pairings, collected findings)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from codegen.diff.catalog import rule
from codegen.diff.findings import Category, Finding, Severity
from codegen.model import Enum, Loc, Message, Spec

T = TypeVar("T")


@dataclass
class Pairing(Generic[T]):
    """Old and new elements matched up; `how` says what matched: `name`, `hint` (renamed_from), `number`."""

    pairs: list[tuple[T, T, str]] = field(default_factory=list)
    removed: list[T] = field(default_factory=list)
    added: list[T] = field(default_factory=list)


def pair_elements(
    old: Sequence[T],
    new: Sequence[T],
    *,
    name: Callable[[T], str],
    hint: Callable[[T], str | None],
    number: Callable[[T], int] | None = None,
    old_name: Callable[[T], str] | None = None,
) -> Pairing[T]:
    """Match elements by rename hint first, then by name, then (if given) by number.

    `old_name` maps an old element's name into the new spec's namespace (e.g. across a package change).
    """
    key_old = old_name or name
    result: Pairing[T] = Pairing()
    left = list(old)
    right = list(new)

    def take(match: Callable[[T, T], bool], how: str) -> None:
        for n in list(right):
            for o in left:
                if match(o, n):
                    result.pairs.append((o, n, how))
                    left.remove(o)
                    right.remove(n)
                    break

    take(lambda o, n: hint(n) is not None and hint(n) in (name(o), key_old(o)), "hint")
    take(lambda o, n: key_old(o) == name(n), "name")
    if number is not None:
        num = number
        take(lambda o, n: num(o) == num(n), "number")
    result.removed = left
    result.added = right
    return result


class DiffContext:
    """What the checks share: the two specs, cross-version name maps, and the findings collected so far."""

    def __init__(self, old: Spec, new: Spec) -> None:
        self.old = old
        self.new = new
        # Names are part of the wire only where a side says peers exchange the JSON form (`wire: json`).
        self.wire_json = "json" in (old.wire, new.wire)
        self.findings: list[Finding] = []
        # old package -> new package, for module files whose package changed
        self.package_map: dict[str, str] = {}
        # old qualified name -> new qualified name, for paired messages and enums (renames included)
        self.message_map: dict[str, str] = {}
        self.enum_map: dict[str, str] = {}
        # old command name -> new command name
        self.command_map: dict[str, str] = {}
        self.message_pairing: Pairing[Message] = Pairing()
        self.enum_pairing: Pairing[Enum] = Pairing()

    def report(
        self,
        rule_id: str,
        loc: Loc,
        message: str,
        subject: str = "",
        *,
        category: Category | None = None,
        severity: Severity | None = None,
        direction: str | None = None,
    ) -> None:
        """Record a finding; category and severity default to the rule's catalog entry (for this wire)."""
        default_category, default_severity = rule(rule_id).effective(self.wire_json)
        self.findings.append(
            Finding(
                rule=rule_id,
                category=category or default_category,
                severity=severity or default_severity,
                message=message,
                loc=loc,
                subject=subject,
                direction=direction,
            )
        )

    def translate_package(self, package: str) -> str:
        """Where an old package's elements live in the new spec (itself unless its module changed package)."""
        return self.package_map.get(package, package)

    def translate_type(self, type_name: str) -> str:
        """An old field type expressed in the new spec's names (renamed/moved messages and enums followed)."""
        if type_name in self.message_map:
            return self.message_map[type_name]
        if type_name in self.enum_map:
            return self.enum_map[type_name]
        return type_name

    def resolve_hint(self, hint: str | None, package: str, candidates: set[str]) -> str | None:
        """A `renamed_from` hint as an old qualified name: qualified if it names one, else in `package`."""
        if hint is None:
            return None
        if hint in candidates:
            return hint
        return f"{package}.{hint}"
