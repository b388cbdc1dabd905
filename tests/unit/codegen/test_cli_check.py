"""CLI tests for `ttgen check` and `ttgen schema`: output formats, summary line, exit codes 0/1/2, and the
committed JSON Schema staying fresh and in step with the loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from codegen.load import MANIFEST_KEYS
from codegen.load.extras import PRESENCE_KEYS
from codegen.load.modules import FIELD_KEYS, MODULE_KEYS
from codegen.schema import SCHEMA_FILE, schema_text, spec_schema
from codegen.stages_schema import STAGE_KEYS
from ttgen.cli import main

ERRORS = Path(__file__).resolve().parents[2] / "errors"
VALID = {
    "ttgen.yaml": "spec: t\nversion: 1.0.0\nmodules: [m.yaml]\ncluster: {services: {s: {hosts: [CID_P]}}}\n",
    "m.yaml": "module: T.M\nservice: {name: S, id: 1}\nmessages:\n  P: {fields: {}}\n"
    "commands:\n  CID_P: {id: 0x0101, message: P, direction: c2s}\n",
}


@pytest.fixture
def valid(tmp_path: Path) -> Path:
    for name, text in VALID.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_ok_spec_exits_0_with_summary(valid: Path) -> None:
    code, out = run("check", str(valid))
    assert code == 0
    assert out.strip().splitlines()[-1] == f"{valid}: ok (t 1.0.0: 1 module, 1 message, 1 command)"


def test_errors_exit_1_with_compiler_lines() -> None:
    case = ERRORS / "TT203_unknown_type"
    code, out = run("check", str(case))
    assert code == 1
    lines = out.strip().splitlines()
    assert any(
        line.endswith("error[TT203]: unknown type 'Mini.Base.Statuz' (did you mean 'Mini.Base.Status'?)")
        and ":10:33:" in line
        for line in lines
    )
    assert lines[-1] == f"{case}: 1 error"


def test_json_format() -> None:
    code, out = run("check", str(ERRORS / "TT307_command_id_collision"), "--format", "json")
    assert code == 1
    doc = json.loads(out)
    assert (doc["ok"], doc["errors"], doc["warnings"]) == (False, 1, 0)
    [diag] = doc["diagnostics"]
    assert (diag["code"], diag["severity"], diag["line"], diag["col"]) == ("TT307", "error", 13, 22)
    assert diag["file"].endswith("chat.yaml")


def test_json_format_ok(valid: Path) -> None:
    code, out = run("check", str(valid), "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["ok"] is True and doc["summary"]["commands"] == 1 and doc["diagnostics"] == []


def test_warnings_pass_unless_warnings_as_errors() -> None:
    case = str(ERRORS / "TT206_python_keyword_warning")
    code, out = run("check", case)
    assert code == 0 and "warning[TT206]" in out and out.strip().endswith("; 1 warning)")
    code, out = run("check", case, "--warnings-as-errors")
    assert code == 1 and out.strip().endswith(": 0 errors, 1 warning")


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run("check")[0] == 2
    assert run("check", str(tmp_path / "nope"))[0] == 2
    assert run("check", str(tmp_path), "--format", "xml")[0] == 2


def test_help_has_examples() -> None:
    for command in ("check", "schema"):
        code, out = run(command, "--help")
        assert code == 0 and "Examples:" in out


def test_schema_command_prints_draft_2020_12() -> None:
    code, out = run("schema")
    assert code == 0
    doc = json.loads(out)
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert {ref["$ref"] for ref in doc["anyOf"]} == {
        f"#/$defs/{k}" for k in ("manifest", "module", "cluster", "stages", "presence", "web", "plugin")
    }
    code, out = run("schema", "--kind", "module")
    assert code == 0 and json.loads(out)["$ref"] == "#/$defs/module"


def test_schema_matches_loader_keys() -> None:
    defs = spec_schema()["$defs"]
    assert set(defs["manifest"]["properties"]) == set(MANIFEST_KEYS)
    assert set(defs["module"]["properties"]) == set(MODULE_KEYS)
    assert set(defs["field"]["properties"]) == set(FIELD_KEYS)
    assert set(defs["presence_policy"]["properties"]) == set(PRESENCE_KEYS)
    for stage, keys in STAGE_KEYS.items():
        assert set(defs["stage_policy"]["properties"][stage]["properties"]) == set(keys)


def test_schema_file_is_fresh() -> None:
    """Regenerate with: python -c 'from codegen.schema import write_schema_file; write_schema_file()'."""
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text()
