"""One bad spec per error code: each case folder's `expected.txt` says `CODE file:line:col`, and loading plus
checking that spec must report exactly that code there (as an error, or a warning for warning codes), through
`SpecError` or the returned warnings, never through any other exception."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from codegen.api import check_spec
from codegen.diagnostics import CODES, Diagnostic, SpecError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CASES = sorted(p for p in HERE.iterdir() if p.is_dir() and re.match(r"^TT\d{3}_", p.name))
INTERNAL = {code for code in CODES if code.startswith("TT9")}  # protoc failures: ttgen bugs, no bad spec


def diagnostics_of(case: Path) -> list[Diagnostic]:
    try:
        _, warnings = check_spec(case)
    except SpecError as exc:
        return exc.diagnostics
    return warnings


@pytest.mark.parametrize("case", CASES, ids=[p.name for p in CASES])
def test_bad_spec_reports_code_at_location(case: Path) -> None:
    code, where = (case / "expected.txt").read_text(encoding="utf-8").split()
    file, line, col = where.rsplit(":", 2)
    assert case.name.startswith(code + "_")
    found = [
        (d.code, Path(d.loc.file).resolve(), d.loc.line, d.loc.col, d.severity) for d in diagnostics_of(case)
    ]
    expected = (code, (case / file).resolve(), int(line), int(col), CODES[code][0])
    assert expected in found, f"{case.name}: expected {where}, got {found}"


def test_every_code_has_a_case() -> None:
    covered = {p.name.split("_", 1)[0] for p in CASES}
    assert covered == set(CODES) - INTERNAL


def test_every_emitted_code_is_registered() -> None:
    emitted: set[str] = set()
    for path in [*(ROOT / "codegen" / "load").glob("*.py"), *(ROOT / "codegen" / "checks").glob("*.py")]:
        emitted |= set(re.findall(r'"(TT\d{3})"', path.read_text(encoding="utf-8")))
    assert emitted == set(CODES) - INTERNAL


def test_errors_doc_lists_every_code() -> None:
    doc = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `?(TT\d{3})`? \|", doc, flags=re.MULTILINE))
    assert listed == set(CODES)


def test_at_least_25_distinct_checks() -> None:
    assert len(set(CODES) - INTERNAL) >= 25
