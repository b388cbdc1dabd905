"""Codegen diff layer: categories, severities and the located `Finding` every evolution rule produces."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Literal

from codegen.model import Loc

Severity = Literal["high", "medium", "low", "info"]
Ruleset = Literal["WIRE", "WIRE_JSON", "SOURCE", "TT"]


class Category(StrEnum):
    """What a change breaks. Ordered by `rank`: a `--fail-on` threshold fails on its rank and above."""

    COMPATIBLE = "compatible"
    SEMANTIC = "semantic"
    LIFECYCLE = "lifecycle"
    SOURCE_BREAKING = "source-breaking"
    LOSSY = "lossy"
    WIRE_BREAKING = "wire-breaking"

    @property
    def rank(self) -> int:
        """compatible < semantic = lifecycle < source-breaking < lossy < wire-breaking."""
        return _RANK[self]

    @property
    def is_breaking(self) -> bool:
        """Breaking changes demand a major version bump."""
        return self.rank >= _RANK[Category.SOURCE_BREAKING]

    @classmethod
    def parse(cls, text: str) -> Category:
        """The category named `text` (its value, e.g. `wire-breaking`); ValueError otherwise."""
        for cat in cls:
            if cat.value == text:
                return cat
        raise ValueError(f"unknown category {text!r} (expected one of {', '.join(c.value for c in cls)})")


_RANK: dict[Category, int] = {
    Category.COMPATIBLE: 0,
    Category.SEMANTIC: 1,
    Category.LIFECYCLE: 1,
    Category.SOURCE_BREAKING: 2,
    Category.LOSSY: 3,
    Category.WIRE_BREAKING: 4,
}

SEVERITY_ORDER: tuple[Severity, ...] = ("info", "low", "medium", "high")


@dataclass(frozen=True)
class Finding:
    """One classified change between two spec versions.

    `loc` points into the NEW spec, or into the OLD spec for deletions. `subject` names the changed element
    (e.g. `IM.Login.IMLoginReq.user_name`); `direction` is `tightened` or `relaxed` for policy and constraint
    changes whose strictness can be ordered.
    """

    rule: str
    category: Category
    severity: Severity
    message: str
    loc: Loc
    subject: str = ""
    direction: str | None = None

    def format(self) -> str:
        """`file:line:col: category[RULE]: message` (the compiler-style line of `ttgen diff`)."""
        return f"{self.loc}: {self.category.value}[{self.rule}]: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form, used by `ttgen diff --format json`."""
        return {
            "rule": self.rule,
            "category": self.category.value,
            "severity": self.severity,
            "message": self.message,
            "subject": self.subject,
            "direction": self.direction,
            "file": self.loc.file,
            "line": self.loc.line,
            "col": self.loc.col,
        }

    def sort_key(self) -> tuple[str, int, int, str, str]:
        return (self.loc.file, self.loc.line, self.loc.col, self.rule, self.subject)

    def with_loc(self, loc: Loc) -> Finding:
        """The same finding pointing elsewhere (used to map temp-dir paths of git revisions back)."""
        return replace(self, loc=loc)

    def __str__(self) -> str:
        return self.format()


def at_or_above(findings: list[Finding], threshold: Category) -> list[Finding]:
    """The findings whose category ranks at or above `threshold` (what `--fail-on` fails on)."""
    return [f for f in findings if f.category.rank >= threshold.rank]
