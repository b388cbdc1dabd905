"""`ttgen diff` output formats, `--fail-on` thresholds, and the version-bump checks."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from click.testing import CliRunner

from codegen.diff import Category, Finding, at_or_above
from codegen.diff.render import render_github, summary
from codegen.model import Loc
from ttgen.cli import main

WriteSpec = Callable[[str, Mapping[str, str]], Path]
WIDEN = ("count: {number: 2, type: int32", "count: {number: 2, type: int64")


def pair(
    write_spec: WriteSpec,
    bases: dict[str, dict[str, str]],
    *edits: tuple[str, str, str],
    version: str = "1.0.0",
) -> tuple[str, str]:
    new = dict(bases["chat"])
    for file, find, repl in edits:
        assert find in new[file]
        new[file] = new[file].replace(find, repl)
    new["ttgen.yaml"] = new["ttgen.yaml"].replace("version: 1.0.0", f"version: {version}")
    return str(write_spec("old", bases["chat"])), str(write_spec("new", new))


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["diff", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("fail_on", "code"),
    [
        ("wire-breaking", 0),
        ("lossy", 1),
        ("source-breaking", 1),
        ("semantic", 1),
        ("compatible", 1),
        ("none", 0),
    ],
)
def test_fail_on_threshold(
    write_spec: WriteSpec, bases: dict[str, dict[str, str]], fail_on: str, code: int
) -> None:
    old, new = pair(write_spec, bases, ("chat.yaml", *WIDEN), version="2.0.0")  # only a lossy change
    assert invoke(old, new, "--fail-on", fail_on)[0] == code


# The lossy changes the default threshold must stop: each of them decodes, and loses data on the way.
LOSSY_EDITS = {
    "uint32->uint64": ("chat.yaml", "by_id: {number: 11, type: uint32", "by_id: {number: 11, type: uint64"),
    "uint32->int32": ("chat.yaml", "by_id: {number: 11, type: uint32", "by_id: {number: 11, type: int32"),
    "string->bytes": ("chat.yaml", "text: {number: 3, type: string", "text: {number: 3, type: bytes"),
    "repeated->singular": ("chat.yaml", "type: string, label: repeated", "type: string, label: optional"),
}


@pytest.mark.parametrize("edit", list(LOSSY_EDITS.values()), ids=list(LOSSY_EDITS))
def test_default_threshold_fails_on_lossy(
    write_spec: WriteSpec, bases: dict[str, dict[str, str]], edit: tuple[str, str, str]
) -> None:
    old, new = pair(write_spec, bases, edit, version="2.0.0")  # the bump is right: only the change counts
    code, out = invoke(old, new, "--format", "json")
    doc = json.loads(out)
    assert {f["category"] for f in doc["findings"]} == {"lossy"}, doc["findings"]
    assert (code, doc["failed"]) == (1, True)
    assert invoke(old, new, "--fail-on", "wire-breaking")[0] == 0


def test_default_threshold_passes_compatible_and_semantic_changes(
    write_spec: WriteSpec, bases: dict[str, dict[str, str]]
) -> None:
    add = ("chat.yaml", "commands:\n", "commands:\n  CID_NEW: {id: 0x0205, message: Ping, direction: s2c}\n")
    old, new = pair(write_spec, bases, add, ("chat.yaml", "rate: 20/s", "rate: 5/s"), version="1.1.0")
    code, out = invoke(old, new)
    assert "COMMAND_ADDED" in out and "STAGE_TIGHTENED" in out
    assert code == 0


def test_text_format(write_spec: WriteSpec, bases: dict[str, dict[str, str]]) -> None:
    old, new = pair(write_spec, bases, ("chat.yaml", *WIDEN))
    code, out = invoke(old, new)
    lines = out.splitlines()
    assert code == 1
    assert any(
        line.endswith(
            "chat.yaml:7:7: lossy[FIELD_TYPE_WIDENED]: field Chat.Msg.Note.count type changed: "
            "int32 -> int64: old readers truncate values above 32 bits"
        )
        for line in lines
    )
    # Widening is breaking, so 1.0.0 -> 1.0.0 is reported too, with the category of the worst change.
    assert any("lossy[VERSION_MAJOR_BUMP_MISSING]" in line for line in lines)
    assert lines[-1] == "2 findings: 2 lossy"


def test_json_format(write_spec: WriteSpec, bases: dict[str, dict[str, str]]) -> None:
    old, new = pair(
        write_spec,
        bases,
        ("chat.yaml", "  CID_PONG: {id: 0x0204, message: Ping, direction: s2c}\n", ""),
        version="2.0.0",
    )
    code, out = invoke(old, new, "--format", "json")
    doc = json.loads(out)
    assert code == 1 and doc["failed"] is True
    assert doc["counts"]["wire-breaking"] == 1
    (finding,) = doc["findings"]
    assert finding["rule"] == "COMMAND_REMOVED"
    assert finding["file"].endswith("old/chat.yaml")  # a deletion points into OLD
    assert (finding["line"], finding["col"], finding["severity"]) == (33, 3, "high")


def test_github_format(write_spec: WriteSpec, bases: dict[str, dict[str, str]]) -> None:
    old, new = pair(
        write_spec, bases, ("chat.yaml", *WIDEN), ("chat.yaml", "rate: 20/s", "rate: 5/s"), version="2.0.0"
    )
    code, out = invoke(old, new, "--format", "github")
    lines = out.splitlines()
    assert code == 1
    assert any(
        line.startswith("::error file=") and ",line=7,col=7,title=lossy[FIELD_TYPE_WIDENED]::" in line
        for line in lines
    )
    assert any(
        line.startswith("::warning file=") and "title=semantic[STAGE_TIGHTENED]::" in line for line in lines
    )


def test_github_escaping() -> None:
    f = Finding("X", Category.SEMANTIC, "low", "50%\nmore", Loc("a,b:c.yaml", 2, 3))
    assert (
        render_github([f]) == "::warning file=a%2Cb%3Ac.yaml,line=2,col=3,title=semantic[X]::50%25%0Amore\n"
    )


def test_bad_fail_on_is_a_usage_error(write_spec: WriteSpec, bases: dict[str, dict[str, str]]) -> None:
    old, new = pair(write_spec, bases)
    assert invoke(old, new, "--fail-on", "catastrophic")[0] == 2


def test_spec_errors_exit_1(write_spec: WriteSpec, bases: dict[str, dict[str, str]]) -> None:
    broken = dict(bases["chat"])
    broken["chat.yaml"] = broken["chat.yaml"].replace(
        "message: Ping, direction: s2c", "message: Pingg, direction: s2c"
    )
    old, new = str(write_spec("old", bases["chat"])), str(write_spec("new", broken))
    result = CliRunner().invoke(main, ["diff", old, new])
    assert result.exit_code == 1
    assert "error[TT" in result.output


def test_category_order_and_threshold() -> None:
    order = [
        Category.COMPATIBLE,
        Category.SEMANTIC,
        Category.SOURCE_BREAKING,
        Category.LOSSY,
        Category.WIRE_BREAKING,
    ]
    assert [c.rank for c in order] == sorted(c.rank for c in order)
    assert Category.SEMANTIC.rank == Category.LIFECYCLE.rank
    findings = [Finding("A", c, "low", "", Loc("f")) for c in Category]
    assert {f.category for f in at_or_above(findings, Category.LOSSY)} == {
        Category.LOSSY,
        Category.WIRE_BREAKING,
    }
    assert summary([]) == "no changes"


@pytest.mark.parametrize(
    ("version", "expected"),
    [("1.0.0", "VERSION_MAJOR_BUMP_MISSING"), ("1.1.0", "VERSION_MAJOR_BUMP_MISSING"), ("2.0.0", None)],
)
def test_breaking_change_needs_major_bump(
    write_spec: WriteSpec, bases: dict[str, dict[str, str]], version: str, expected: str | None
) -> None:
    old, new = pair(write_spec, bases, ("chat.yaml", "id: 0x0204", "id: 0x0205"), version=version)
    _, out = invoke(old, new, "--format", "json")
    rules = {f["rule"] for f in json.loads(out)["findings"]}
    assert ("VERSION_MAJOR_BUMP_MISSING" in rules) == (expected is not None)


def test_pre_1_0_breaking_change_needs_a_minor_bump(
    write_spec: WriteSpec, bases: dict[str, dict[str, str]]
) -> None:
    zero = {**bases["chat"], "ttgen.yaml": bases["chat"]["ttgen.yaml"].replace("1.0.0", "0.3.0")}
    new = {
        **zero,
        "chat.yaml": zero["chat.yaml"].replace("id: 0x0204", "id: 0x0205"),
        "ttgen.yaml": zero["ttgen.yaml"].replace("0.3.0", "0.4.0"),
    }
    _, out = invoke(str(write_spec("old", zero)), str(write_spec("new", new)), "--format", "json")
    assert "VERSION_MAJOR_BUMP_MISSING" not in {f["rule"] for f in json.loads(out)["findings"]}


@pytest.mark.parametrize(("version", "reported"), [("1.0.0", True), ("1.0.1", True), ("1.1.0", False)])
def test_addition_without_minor_bump_is_informational(
    write_spec: WriteSpec, bases: dict[str, dict[str, str]], version: str, reported: bool
) -> None:
    add = ("chat.yaml", "commands:\n", "commands:\n  CID_NEW: {id: 0x0205, message: Ping, direction: s2c}\n")
    old, new = pair(write_spec, bases, add, version=version)
    code, out = invoke(old, new, "--format", "json")
    found = [f for f in json.loads(out)["findings"] if f["rule"] == "VERSION_MINOR_BUMP_MISSING"]
    assert code == 0
    assert bool(found) == reported
    assert all(f["category"] == "compatible" and f["severity"] == "info" for f in found)


# Changes only ttgen sees (the .proto files stay the same): each fails the default threshold.
TT_ONLY_EDITS = {
    "command-id": ("chat.yaml", "id: 0x0204", "id: 0x0205"),
    "service-id": ("chat.yaml", "{name: CHAT, id: 2}", "{name: CHAT, id: 3}"),
    "removed-reply": ("chat.yaml", "direction: c2s, reply: CID_NOTE_ACK}", "direction: c2s}"),
    "removed-command": ("chat.yaml", "  CID_PONG: {id: 0x0204, message: Ping, direction: s2c}\n", ""),
}


@pytest.mark.parametrize("edit", list(TT_ONLY_EDITS.values()), ids=list(TT_ONLY_EDITS))
def test_changes_invisible_in_the_proto_fail_by_default(
    write_spec: WriteSpec, bases: dict[str, dict[str, str]], edit: tuple[str, str, str]
) -> None:
    if edit[1] == "{name: CHAT, id: 2}":  # the command ids move with the service
        old, new = pair(write_spec, bases, edit, ("chat.yaml", "id: 0x02", "id: 0x03"), version="2.0.0")
    else:
        old, new = pair(write_spec, bases, edit, version="2.0.0")
    code, out = invoke(old, new, "--format", "json")
    categories = {f["rule"]: f["category"] for f in json.loads(out)["findings"]}
    assert "wire-breaking" in categories.values(), categories
    assert code == 1
