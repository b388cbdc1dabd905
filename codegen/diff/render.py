"""Codegen diff layer: render findings as compiler-style text, JSON, or GitHub Actions annotations."""

from __future__ import annotations

import json
from collections import Counter

from codegen.diff.findings import Category, Finding

FORMATS = ("text", "json", "github")

# GitHub annotation level per category: breaking changes are errors, behaviour changes warnings.
_GITHUB_LEVEL = {
    Category.WIRE_BREAKING: "error",
    Category.LOSSY: "error",
    Category.SOURCE_BREAKING: "warning",
    Category.SEMANTIC: "warning",
    Category.LIFECYCLE: "warning",
    Category.COMPATIBLE: "notice",
}


def summary(findings: list[Finding]) -> str:
    """`3 findings: 1 wire-breaking, 2 compatible` (categories worst first)."""
    if not findings:
        return "no changes"
    counts = Counter(f.category for f in findings)
    parts = [f"{counts[c]} {c.value}" for c in sorted(counts, key=lambda c: -c.rank)]
    return f"{len(findings)} finding{'s' if len(findings) != 1 else ''}: " + ", ".join(parts)


def render_text(findings: list[Finding]) -> str:
    """One `file:line:col: category[RULE]: message` line per finding, then a summary line."""
    lines = [f.format() for f in findings]
    lines.append(summary(findings))
    return "\n".join(lines) + "\n"


def render_json(findings: list[Finding], *, old: str = "", new: str = "", failed: bool = False) -> str:
    """A JSON document: the two sides, the findings, per-category counts and whether the threshold failed."""
    counts = Counter(f.category.value for f in findings)
    doc = {
        "old": old,
        "new": new,
        "findings": [f.as_dict() for f in findings],
        "counts": {c.value: counts.get(c.value, 0) for c in Category},
        "failed": failed,
    }
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def render_github(findings: list[Finding]) -> str:
    """GitHub Actions workflow commands: `::error file=...,line=...,col=...,title=RULE::message`."""
    lines = []
    for f in findings:
        props = [f"file={_escape_property(f.loc.file)}"]
        if f.loc.line:
            props += [f"line={f.loc.line}", f"col={f.loc.col}"]
        props.append(f"title={_escape_property(f'{f.category.value}[{f.rule}]')}")
        lines.append(f"::{_GITHUB_LEVEL[f.category]} {','.join(props)}::{_escape_data(f.message)}")
    return "\n".join(lines) + ("\n" if lines else "")
