"""Validator tests: the rule helpers (versions, stage values, name resolution, suggestions) and rules whose
interesting cases the one-spec-per-code error suite does not reach."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from codegen.checks import ALL_CHECKS
from codegen.checks.plugins import requirement_problem
from codegen.diagnostics import CODES, Diagnostic, SpecError, did_you_mean
from codegen.load import load_spec
from codegen.load.scope import TypeTable
from codegen.stages_schema import STAGE_KEYS, duration_ms, value_problem
from codegen.validate import validate

HERE = Path(__file__).resolve().parent


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).write_text(text, encoding="utf-8")
    return root


def codes_of(root: Path) -> list[str]:
    try:
        return [d.code for d in validate(load_spec(root))]
    except SpecError as exc:
        return [d.code for d in exc.diagnostics]


MANIFEST = "spec: t\nversion: 1.0.0\nsyntax: {syntax}\nmodules: [m.yaml]\n"


def module_spec(tmp_path: Path, body: str, syntax: str = "proto2") -> list[str]:
    write(tmp_path, {"ttgen.yaml": MANIFEST.format(syntax=syntax), "m.yaml": "module: T.M\n" + body})
    return codes_of(tmp_path)


@pytest.mark.parametrize(
    ("requires", "expected"),
    [
        ("t>=1.0", None),
        ("t>=1.0,<2", None),
        ("t==1.0.0", None),
        ("t", None),
        ("t>1.0.0", "TT703"),
        ("t<1", "TT703"),
        ("t!=1.0.0", "TT703"),
        ("other>=1.0", "TT703"),
        ("t~1", "TT704"),
        ("T>=1", "TT704"),
        (">=1.0", "TT704"),
    ],
)
def test_plugin_requirements(requires: str, expected: str | None) -> None:
    problem = requirement_problem(requires, "t", "1.0.0")
    assert (problem[0] if problem else None) == expected


@pytest.mark.parametrize(
    ("key", "value", "ok"),
    [
        (("transport", "timeout"), "5s", True),
        (("transport", "timeout"), "250ms", True),
        (("transport", "timeout"), "5 s", False),
        (("transport", "timeout"), 5, False),
        (("input", "rate"), "20/s", True),
        (("input", "rate"), "0/s", False),
        (("input", "rate"), "20/h", False),
        (("store", "retention"), "forever", True),
        (("store", "retention"), "30d", True),
        (("store", "retention"), "always", False),
        (("input", "max_bytes"), 10, True),
        (("input", "max_bytes"), -1, False),
        (("input", "max_bytes"), True, False),
        (("input", "reject"), ["self_message"], True),
        (("input", "reject"), ["no_such_rule"], False),
        (("pack", "compress"), "zlib", True),
        (("pack", "compress"), "gzip", False),
        (("present", "redact"), ["a", "b"], True),
        (("present", "redact"), "a", False),
        (("transport", "ephemeral"), "yes", False),
    ],
)
def test_stage_values(key: tuple[str, str], value: object, ok: bool) -> None:
    assert (value_problem(STAGE_KEYS[key[0]][key[1]], value) is None) == ok


def test_duration_units() -> None:
    assert [duration_ms(t) for t in ("1ms", "2s", "3m", "1h", "1d", "1w")] == [
        1,
        2000,
        180_000,
        3_600_000,
        86_400_000,
        None,
    ]


def test_type_resolution_prefers_inner_scopes() -> None:
    table = TypeTable()
    for name in ("A.B.X", "A.X", "A.B.M", "A.B.M.X", "C.Y"):
        table.add(name, "message")
    assert table.resolve("X", "A.B.M") == "A.B.M.X"
    assert table.resolve("X", "A.B.Other") == "A.B.X"
    assert table.resolve("B.X", "A.Z") == "A.B.X"
    assert table.resolve(".A.X", "A.B.M") == "A.X"
    assert table.resolve("Y", "A.B") is None
    assert table.resolve("C.Y", "A.B") == "C.Y"
    assert table.resolve("uint32", "A") == "uint32"


def test_did_you_mean() -> None:
    assert did_you_mean("IMMsgDat", ["IMMsgData", "IMMsgDataAck"]) == " (did you mean 'IMMsgData'?)"
    assert did_you_mean("UserInfo", ["IM.BaseDefine.UserInfo"]) == " (did you mean 'IM.BaseDefine.UserInfo'?)"
    assert did_you_mean("zzz", ["IMMsgData"]) == ""


def test_nested_enum_values_share_the_message_scope(tmp_path: Path) -> None:
    body = (
        "enums:\n  Msg.Kind:\n    values: {NAME: 0}\n"
        "messages:\n  Msg:\n    fields:\n      NAME: {number: 1, type: string, label: optional}\n"
    )
    assert "TT202" in module_spec(tmp_path, body)


def test_values_of_enums_in_different_messages_do_not_collide(tmp_path: Path) -> None:
    body = (
        "enums:\n  A.Kind:\n    values: {NONE: 0}\n  B.Kind:\n    values: {NONE: 0}\n"
        "messages:\n  A: {fields: {}}\n  B: {fields: {}}\n"
    )
    assert module_spec(tmp_path, body) == []


def test_proto3_singular_fields_need_no_label(tmp_path: Path) -> None:
    body = (
        "messages:\n  M:\n    fields:\n      a: {number: 1, type: uint32}\n"
        "      b: {number: 2, type: string, label: optional}\n"
    )
    assert module_spec(tmp_path, body, syntax="proto3") == []
    assert module_spec(tmp_path, body, syntax="proto2") == ["TT404"]


def test_default_types(tmp_path: Path) -> None:
    fields = {
        "a": "{number: 1, type: int32, label: optional, default: -5}",
        "b": "{number: 2, type: uint32, label: optional, default: -5}",
        "c": "{number: 3, type: double, label: optional, default: inf}",
        "d": "{number: 4, type: bool, label: optional, default: false}",
        "e": "{number: 5, type: bool, label: optional, default: 1}",
        "f": "{number: 6, type: float, label: optional, default: 1.5}",
    }
    body = "messages:\n  M:\n    fields:\n" + "".join(f"      {k}: {v}\n" for k, v in fields.items())
    write(tmp_path, {"ttgen.yaml": MANIFEST.format(syntax="proto2"), "m.yaml": "module: T.M\n" + body})
    found = validate(load_spec(tmp_path))
    assert [(d.code, d.loc.line) for d in found] == [("TT408", 6), ("TT408", 9)]


def test_enum_alias_allowed(tmp_path: Path) -> None:
    body = "enums:\n  E:\n    allow_alias: true\n    values: {A: 0, B: 0}\n"
    assert module_spec(tmp_path, body) == []


def test_service_shared_by_two_modules(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "ttgen.yaml": "spec: t\nversion: 1.0.0\nmodules: [a.yaml, b.yaml]\n",
            "a.yaml": "module: T.A\nservice: {name: S, id: 7}\nmessages: {P: {fields: {}}}\n"
            "commands: {CID_P: {id: 0x0701, message: P, direction: both}}\n",
            "b.yaml": "module: T.B\nservice: {name: S, id: 7}\nmessages: {Q: {fields: {}}}\n"
            "commands: {CID_Q: {id: 0x0702, message: Q, direction: s2s}}\n",
        },
    )
    assert codes_of(tmp_path) == []


def test_diagnostics_are_sorted_and_formatted(tmp_path: Path) -> None:
    body = (
        "messages:\n  M:\n    fields:\n      b: {number: 1, type: Nope, label: optional}\n"
        "      a: {number: 1, type: uint32, label: optional}\n"
    )
    write(tmp_path, {"ttgen.yaml": MANIFEST.format(syntax="proto2"), "m.yaml": "module: T.M\n" + body})
    found = validate(load_spec(tmp_path))
    assert found == sorted(found, key=Diagnostic.sort_key)
    assert re.match(r"^.*m\.yaml:5:\d+: error\[TT203\]: unknown type 'Nope'$", found[0].format())


def test_every_check_names_its_codes() -> None:
    """Each rule's docstring names the codes it can emit, and those codes are registered."""
    for check in ALL_CHECKS:
        assert check.__name__.startswith("check_")
        doc = inspect.getdoc(check) or ""
        named = set(re.findall(r"TT\d{3}", doc))
        assert named, check.__name__
        assert named <= set(CODES), (check.__name__, named - set(CODES))
