"""The rule catalog is complete, consistent, and documented row for row in docs/evolution.md."""

from __future__ import annotations

import re
from pathlib import Path

from codegen.diff import RULES
from codegen.diff.findings import Category

DOC = Path(__file__).resolve().parents[3] / "docs" / "evolution.md"
ROW = re.compile(r"^\| `(?P<id>[A-Z0-9_]+)` \| (?P<cat>[^|]+) \| (?P<sev>[a-z]+) \| (?P<ruleset>[A-Z_]+) \|")


def documented() -> dict[str, tuple[str, str, str]]:
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = ROW.match(line)
        if m:
            rows[m["id"]] = (m["cat"].strip(), m["sev"], m["ruleset"])
    return rows


def test_every_rule_is_documented_with_its_category_and_severity() -> None:
    rows = documented()
    assert set(rows) == set(RULES)
    for rule_id, info in RULES.items():
        category, severity, ruleset = rows[rule_id]
        expected = "as the worst change" if rule_id == "VERSION_MAJOR_BUMP_MISSING" else info.category.value
        if info.json is not None:
            expected += f" (json: {info.json[0].value})"
        assert (category, severity, ruleset) == (expected, info.severity, info.ruleset), rule_id


def test_only_json_rules_change_with_the_wire() -> None:
    # A rule whose category depends on `wire:` is a JSON-wire rule, and on a JSON wire it is at least as bad.
    for rule_id, info in RULES.items():
        binary = info.effective(wire_json=False)
        json = info.effective(wire_json=True)
        if info.json is None:
            assert binary == json, rule_id
        else:
            assert info.ruleset == "WIRE_JSON", rule_id
            assert json[0].rank > binary[0].rank, rule_id
    assert sum(info.json is not None for info in RULES.values()) >= 6


def test_catalog_entries_are_well_formed() -> None:
    assert len(RULES) >= 90
    for rule_id, info in RULES.items():
        assert rule_id == info.id and re.fullmatch(r"[A-Z][A-Z0-9_]+", rule_id)
        assert isinstance(info.category, Category)
        assert info.trigger and info.why
    # buf's WIRE and WIRE_JSON concerns are all represented.
    for needed in (
        "FIELD_DELETED_NUMBER_NOT_RESERVED",
        "FIELD_DELETED_NAME_NOT_RESERVED",
        "FIELD_TYPE_INCOMPATIBLE",
        "FIELD_CARDINALITY_CHANGED",
        "FIELD_ONEOF_CHANGED",
        "FIELD_NAME_CHANGED",
        "FIELD_DEFAULT_CHANGED",
        "ENUM_VALUE_DELETED_NUMBER_NOT_RESERVED",
        "ENUM_VALUE_NAME_CHANGED",
        "MESSAGE_RESERVED_NUMBER_REMOVED",
        "ENUM_RESERVED_NUMBER_REMOVED",
        "MESSAGE_DELETED",
        "PACKAGE_CHANGED",
        "SYNTAX_CHANGED",
    ):
        assert needed in RULES
