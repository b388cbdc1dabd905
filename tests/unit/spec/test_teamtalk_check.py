"""`ttgen check` accepts the bundled TeamTalk spec cleanly and pins command-id mistakes to file and line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from ttgen.cli import main


def run_check(path: Path, *extra: str) -> tuple[int, dict]:
    result = CliRunner().invoke(main, ["check", str(path), "--format", "json", *extra])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.stdout)


def test_bundled_spec_has_no_errors_or_warnings(spec_dir):
    code, report = run_check(spec_dir, "--warnings-as-errors")
    assert report["diagnostics"] == []
    assert (code, report["ok"], report["errors"], report["warnings"]) == (0, True, 0, 0)
    assert report["summary"]["name"] == "teamtalk"
    assert report["summary"]["cluster_services"] == 8


def test_bundled_spec_text_report_says_ok(spec_dir):
    result = CliRunner().invoke(main, ["check", str(spec_dir)])
    assert result.exit_code == 0, result.output
    assert "ok (teamtalk" in result.output
    assert "error" not in result.output and "warning" not in result.output


@pytest.fixture
def spec_copy(tmp_path, spec_dir) -> Path:
    dest = tmp_path / "teamtalk"
    shutil.copytree(spec_dir, dest)
    return dest


def edit_line(path: Path, old: str, new: str) -> int:
    """Replace `old` by `new` on the single line that holds it; return that 1-based line number."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if old in line]
    assert len(hits) == 1, f"{old!r} occurs on lines {[i + 1 for i in hits]} of {path.name}"
    lines[hits[0]] = lines[hits[0]].replace(old, new)
    path.write_text("".join(lines), encoding="utf-8")
    return hits[0] + 1


def errors_with(report: dict, code: str) -> list[dict]:
    return [d for d in report["diagnostics"] if d["code"] == code and d["severity"] == "error"]


def test_out_of_range_command_id_is_reported_at_its_line(spec_copy):
    # 0x0405 lies in GROUP's range, not MSG's (0x0300..0x03ff).
    line = edit_line(
        spec_copy / "message.yaml", "CID_MSG_TIME_REQUEST: {id: 0x0305", "CID_MSG_TIME_REQUEST: {id: 0x0405"
    )

    code, report = run_check(spec_copy)

    assert code == 1 and not report["ok"]
    (diag,) = errors_with(report, "TT309")
    assert Path(diag["file"]).name == "message.yaml"
    assert diag["line"] == line
    assert "CID_MSG_TIME_REQUEST" in diag["message"]
    # IM.BaseDefine.MessageCmdID still says 0x0305, so the command_enum cross-check fires on the same line.
    (mismatch,) = errors_with(report, "TT506")
    assert (Path(mismatch["file"]).name, mismatch["line"]) == ("message.yaml", line)


def test_duplicate_command_id_is_reported_at_the_second_declaration(spec_copy):
    line = edit_line(
        spec_copy / "message.yaml", "CID_MSG_TIME_RESPONSE: {id: 0x0306", "CID_MSG_TIME_RESPONSE: {id: 0x0305"
    )

    code, report = run_check(spec_copy)

    assert code == 1 and not report["ok"]
    (diag,) = errors_with(report, "TT307")
    assert Path(diag["file"]).name == "message.yaml"
    assert diag["line"] == line
    assert "0x0305" in diag["message"] and "CID_MSG_TIME_REQUEST" in diag["message"]


def test_duplicate_id_across_modules_names_both_files(spec_copy):
    # An extension command that takes a TeamTalk id: caught although it sits in another module.
    line = edit_line(spec_copy / "ext.yaml", "CID_EXT_TYPING: {id: 0x100b", "CID_EXT_TYPING: {id: 0x0301")

    code, report = run_check(spec_copy)

    assert code == 1
    (diag,) = errors_with(report, "TT307")
    assert (Path(diag["file"]).name, diag["line"]) == ("ext.yaml", line)
    assert "message.yaml" in (diag["hint"] or "")
