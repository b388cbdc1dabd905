"""TT102 hints: a tab used for indentation, or a line indented unlike its siblings, is named as the cause."""

from __future__ import annotations

from pathlib import Path

import pytest

from codegen.diagnostics import SpecError
from codegen.load import load_spec
from codegen.load.yamlhints import yaml_hint

MANIFEST = "spec: hints\nversion: 1.0.0\nmodules: [chat.yaml]\n"
GOOD = """\
module: Hints.Chat
messages:
  Note:
    fields:
      a: {number: 1, type: uint32, label: optional}
      b: {number: 2, type: uint32, label: optional}
"""
B_LINE = "      b: {number: 2, type: uint32, label: optional}\n"


def _tt102(tmp_path: Path, chat: str) -> tuple[int, int, str]:
    (tmp_path / "ttgen.yaml").write_text(MANIFEST)
    (tmp_path / "chat.yaml").write_text(chat)
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path)
    (diag,) = info.value.diagnostics
    assert diag.code == "TT102"
    assert diag.loc.file.endswith("chat.yaml")
    return diag.loc.line, diag.loc.col, diag.hint


def test_the_good_module_loads(tmp_path: Path) -> None:
    (tmp_path / "ttgen.yaml").write_text(MANIFEST)
    (tmp_path / "chat.yaml").write_text(GOOD)
    assert [f.name for f in load_spec(tmp_path).messages()["Hints.Chat.Note"].fields] == ["a", "b"]


def test_tab_indentation(tmp_path: Path) -> None:
    line, col, hint = _tt102(tmp_path, GOOD.replace(B_LINE, "\t" + B_LINE.lstrip(" ")))
    assert (line, col) == (6, 1)
    assert "line 6 is indented with a tab" in hint


def test_tab_after_spaces(tmp_path: Path) -> None:
    line, _, hint = _tt102(tmp_path, GOOD.replace(B_LINE, "    \t  " + B_LINE.lstrip(" ")))
    assert line == 6
    assert "line 6 is indented with a tab" in hint


def test_line_indented_between_levels(tmp_path: Path) -> None:
    line, col, hint = _tt102(tmp_path, GOOD.replace(B_LINE, B_LINE[1:]))
    assert (line, col) == (6, 6)
    assert "line 6 is indented 5 spaces, which lines up with no entry above it" in hint
    assert "6 (line 5)" in hint and "4 (line 4)" in hint


def test_line_indented_deeper_than_a_finished_entry(tmp_path: Path) -> None:
    line, _, hint = _tt102(tmp_path, GOOD.replace(B_LINE, "  " + B_LINE))
    assert line == 6
    assert "line 6 is indented deeper (8 spaces) than line 5 (6)" in hint
    assert "indent it 6 spaces" in hint


def test_key_indented_under_a_scalar(tmp_path: Path) -> None:
    line, _, hint = _tt102(tmp_path, GOOD.replace("messages:\n", "  messages:\n", 1))
    assert line == 2
    assert "line 2 is indented deeper (2 spaces) than line 1 (0)" in hint


def test_unquoted_colon_in_a_value(tmp_path: Path) -> None:
    line, col, hint = _tt102(tmp_path, "doc: a: b\n" + GOOD)
    assert (line, col) == (1, 7)
    assert "must be quoted" in hint


def test_other_syntax_errors_get_no_indentation_hint(tmp_path: Path) -> None:
    _, _, hint = _tt102(tmp_path, GOOD.replace("label: optional}\n      b", "label: optional\n      b"))
    assert "indented" not in hint and "tab" not in hint


@pytest.mark.parametrize(
    "problem",
    ["did not find expected key", "expected <block end>, but found '<block mapping start>'"],
    ids=["libyaml", "pyyaml"],
)
def test_both_parsers_wordings(problem: str) -> None:
    text = GOOD.replace(B_LINE, B_LINE[1:])
    assert "indented 5 spaces" in yaml_hint(text, problem, 6, 6)
    tabbed = GOOD.replace(B_LINE, "\t" + B_LINE.lstrip(" "))
    assert "tab" in yaml_hint(tabbed, "found character '\\t' that cannot start any token", 6, 1)
