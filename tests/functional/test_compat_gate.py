"""`ttgen compat` as a merge gate: identical specs pass, and every kind of wire break fails the right pairing.

Each case edits a small spec (a base module with a command, its reply, a push and an enum, and an extensions
module whose push only reaches clients that opted in) into a NEW version and probes it against the OLD one
over real frames on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner

from codegen.api import check_spec
from codegen.diff import Category, diff_specs
from codegen.model import Spec
from ttgen.cli import main
from ttgen.compat import NEW_CLIENT, OLD_CLIENT, CompatReport, run_compat

FILES: dict[str, str] = {
    "ttgen.yaml": "spec: gate\nversion: 1.0.0\nsyntax: proto2\nmodules: [base.yaml, ext.yaml]\n"
    "cluster: cluster.yaml\n",
    "base.yaml": """\
module: Gate.Base
service: {name: GATE, id: 2, range: [0x0200, 0x02ff]}
enums:
  Mood:
    values:
      MOOD_NONE: 0
      MOOD_HAPPY: 1
      MOOD_SAD: 2
      MOOD_ANGRY: 3
messages:
  Note:
    fields:
      user_id: {number: 1, type: uint32, label: required}
      count: {number: 2, type: uint32, label: optional}
      mood: {number: 3, type: Mood, label: optional}
      text: {number: 4, type: string, label: optional}
  NoteAck:
    fields:
      user_id: {number: 1, type: uint32, label: required}
  Alert:
    fields:
      level: {number: 1, type: uint32, label: optional}
      mood: {number: 2, type: Mood, label: optional}
commands:
  CID_NOTE: {id: 0x0201, message: Note, direction: c2s, reply: CID_NOTE_ACK}
  CID_NOTE_ACK: {id: 0x0202, message: NoteAck, direction: s2c}
  CID_ALERT: {id: 0x0203, message: Alert, direction: s2c}
""",
    "ext.yaml": """\
module: Gate.Ext
service: {name: EXT, id: 0x10}
messages:
  Hello:
    fields:
      client: {number: 1, type: string, label: optional}
  Wave:
    fields:
      user_id: {number: 1, type: uint32, label: optional}
commands:
  CID_EXT_HELLO: {id: 0x1001, message: Hello, direction: c2s}
  CID_EXT_WAVE: {id: 0x1002, message: Wave, direction: s2c}
""",
    "cluster.yaml": "services:\n  msg:\n    role: msg\n    listen: tcp\n"
    "    hosts: [CID_NOTE, CID_EXT_HELLO]\n",
}
Edit = tuple[str, str, str]  # (file, text, replacement)
TIMEOUT = 2.0


def write(root: Path, edits: Sequence[Edit] = (), files: Mapping[str, str] = FILES) -> Spec:
    root.mkdir(parents=True)
    texts = dict(files)
    for name, find, repl in edits:
        assert find in texts[name], f"edit does not apply: {find!r}"
        texts[name] = texts[name].replace(find, repl)
    for name, text in texts.items():
        (root / name).write_text(text, encoding="utf-8")
    spec, _ = check_spec(root)
    return spec


def probe(tmp_path: Path, *edits: Edit) -> tuple[CompatReport, list[str]]:
    old = write(tmp_path / "old")
    new = write(tmp_path / "new", [("ttgen.yaml", "1.0.0", "2.0.0"), *edits])
    rules = [f.rule for f in diff_specs(old, new) if f.category.rank >= Category.LOSSY.rank]
    return run_compat(old, new, timeout=TIMEOUT), rules


def test_identical_specs_pass_with_extension_pushes_delivered(tmp_path: Path) -> None:
    spec = write(tmp_path / "spec")
    report = run_compat(spec, spec, timeout=TIMEOUT)
    assert [e.format() for e in report.failures()] == []
    for pairing in (OLD_CLIENT, NEW_CLIENT):
        # The probe opted in with CID_EXT_HELLO, so the extension push really arrived.
        assert report.find("CID_EXT_WAVE", pairing, "push").verdict == "ok"
        assert report.find("CID_ALERT", pairing, "push").verdict == "ok"
        assert report.find("CID_NOTE", pairing, "request").verdict == "ok"
    cli = CliRunner().invoke(main, ["compat", str(tmp_path / "spec"), str(tmp_path / "spec")])
    assert cli.exit_code == 0, cli.output
    assert "broken" not in cli.output and "lossy" not in cli.output


def test_renumbered_field_is_broken_both_ways(tmp_path: Path) -> None:
    report, rules = probe(tmp_path, ("base.yaml", "count: {number: 2,", "count: {number: 5,"))
    assert "FIELD_NUMBER_CHANGED" in rules
    for pairing in (OLD_CLIENT, NEW_CLIENT):
        exchange = report.find("CID_NOTE", pairing, "request")
        assert exchange.verdict == "broken", exchange.format()
        assert any("count: sent as field" in d for d in exchange.detail)


def test_rename_without_hint_interoperates_on_a_binary_wire(tmp_path: Path) -> None:
    report, rules = probe(tmp_path, ("base.yaml", "count: {number: 2,", "total: {number: 2,"))
    assert rules == []  # FIELD_NAME_CHANGED is source-breaking on a binary wire
    for pairing in (OLD_CLIENT, NEW_CLIENT):
        assert report.find("CID_NOTE", pairing, "request").verdict == "ok"


def test_renumbered_enum_value_is_broken(tmp_path: Path) -> None:
    # MOOD_SAD is neither the default nor the full sample's value: only every-value samples send it.
    report, rules = probe(tmp_path, ("base.yaml", "MOOD_SAD: 2", "MOOD_SAD: 5"))
    assert "ENUM_VALUE_NUMBER_CHANGED" in rules
    for pairing in (OLD_CLIENT, NEW_CLIENT):
        exchange = report.find("CID_NOTE", pairing, "request")
        assert exchange.verdict == "broken", exchange.format()
        assert any("MOOD_SAD" in d and d.startswith("[enum#2]") for d in exchange.detail), exchange.detail
        assert report.find("CID_ALERT", pairing, "push").verdict == "broken"


def test_added_enum_value_is_carried_not_lost(tmp_path: Path) -> None:
    report, rules = probe(
        tmp_path, ("base.yaml", "      MOOD_ANGRY: 3\n", "      MOOD_ANGRY: 3\n      MOOD_CALM: 4\n")
    )
    assert rules == []
    assert report.failures() == []
    # The new client's MOOD_CALM reaches the old server as an unknown value and comes back in the echo.
    assert "mood=MOOD_CALM" in report.find("CID_NOTE", NEW_CLIENT, "request").carried


def test_optional_made_required_breaks_old_clients_that_leave_it_unset(tmp_path: Path) -> None:
    report, rules = probe(
        tmp_path,
        (
            "base.yaml",
            "count: {number: 2, type: uint32, label: optional}",
            "count: {number: 2, type: uint32, label: required}",
        ),
    )
    assert "FIELD_MADE_REQUIRED" in rules
    old_client = report.find("CID_NOTE", OLD_CLIENT, "request")
    assert old_client.verdict == "broken", old_client.format()
    assert any(d.startswith("[minimal]") and "required fields missing" in d for d in old_client.detail)
    assert report.find("CID_NOTE", NEW_CLIENT, "request").verdict == "ok"


def test_required_made_optional_breaks_old_servers(tmp_path: Path) -> None:
    report, rules = probe(
        tmp_path,
        (
            "base.yaml",
            "user_id: {number: 1, type: uint32, label: required}\n      count",
            "user_id: {number: 1, type: uint32, label: optional}\n      count",
        ),
    )
    assert "FIELD_MADE_OPTIONAL" in rules
    new_client = report.find("CID_NOTE", NEW_CLIENT, "request")
    assert new_client.verdict == "broken", new_client.format()
    assert any("user_id" in d for d in new_client.detail)
    assert report.find("CID_NOTE", OLD_CLIENT, "request").verdict == "ok"


def test_removed_push_is_broken_for_the_new_client(tmp_path: Path) -> None:
    report, rules = probe(
        tmp_path, ("base.yaml", "  CID_ALERT: {id: 0x0203, message: Alert, direction: s2c}\n", "")
    )
    assert "COMMAND_REMOVED" in rules
    exchange = report.find("CID_ALERT", NEW_CLIENT, "push")
    assert exchange.verdict == "broken"
    assert exchange.detail[0].startswith("removed:")


def test_added_push_is_ignored_by_the_old_client(tmp_path: Path) -> None:
    add = (
        "base.yaml",
        "commands:\n",
        "commands:\n  CID_ALERT2: {id: 0x0204, message: Alert, direction: s2c}\n",
    )
    report, rules = probe(tmp_path, add)
    assert rules == []
    assert report.find("CID_ALERT2", OLD_CLIENT, "push").verdict == "ignored"
    assert report.failures() == []


def test_renumbered_push_is_broken_both_ways(tmp_path: Path) -> None:
    report, rules = probe(tmp_path, ("base.yaml", "CID_ALERT: {id: 0x0203", "CID_ALERT: {id: 0x0204"))
    assert "COMMAND_ID_CHANGED" in rules
    for pairing in (OLD_CLIENT, NEW_CLIENT):
        exchange = report.find("CID_ALERT", pairing, "push")
        assert exchange.verdict == "broken"
        assert exchange.detail[0].startswith("renumbered:")


def test_moved_service_is_broken_for_requests_and_pushes(tmp_path: Path) -> None:
    # The service id changes, the command ids stay (the range keeps them): only the frame header differs.
    report, rules = probe(tmp_path, ("base.yaml", "{name: GATE, id: 2,", "{name: GATE, id: 3,"))
    assert "SERVICE_ID_CHANGED" in rules
    for pairing in (OLD_CLIENT, NEW_CLIENT):
        request = report.find("CID_NOTE", pairing, "request")
        push = report.find("CID_ALERT", pairing, "push")
        assert request.verdict == "broken" and any(d.startswith("moved:") for d in request.detail)
        assert push.verdict == "broken" and any(d.startswith("moved:") for d in push.detail)


def test_removed_reply_is_broken_for_clients_waiting_on_it(tmp_path: Path) -> None:
    report, rules = probe(tmp_path, ("base.yaml", "direction: c2s, reply: CID_NOTE_ACK}", "direction: c2s}"))
    assert "COMMAND_REPLY_REMOVED" in rules
    exchange = report.find("CID_NOTE", OLD_CLIENT, "request")
    assert exchange.verdict == "broken"
    assert any(
        "no reply CID_NOTE_ACK (0x0202) arrived: the server sends no reply" in d for d in exchange.detail
    )
    # A new client waits for nothing, so the old server's extra reply is harmless.
    assert report.find("CID_NOTE", NEW_CLIENT, "request").verdict == "ok"


def test_changed_reply_is_broken(tmp_path: Path) -> None:
    report, rules = probe(tmp_path, ("base.yaml", "reply: CID_NOTE_ACK}", "reply: CID_ALERT}"))
    assert "COMMAND_REPLY_CHANGED" in rules
    for pairing, expected, answered in (
        (OLD_CLIENT, "CID_NOTE_ACK", "CID_ALERT"),
        (NEW_CLIENT, "CID_ALERT", "CID_NOTE_ACK"),
    ):
        exchange = report.find("CID_NOTE", pairing, "request")
        assert exchange.verdict == "broken"
        assert any(f"no reply {expected}" in d and f"answers with {answered}" in d for d in exchange.detail)


def test_widened_integer_is_lossy_in_the_gate_too(tmp_path: Path) -> None:
    report, rules = probe(
        tmp_path, ("base.yaml", "count: {number: 2, type: uint32", "count: {number: 2, type: uint64")
    )
    assert rules == ["FIELD_TYPE_WIDENED"]
    assert report.find("CID_NOTE", NEW_CLIENT, "request").verdict == "lossy"
    assert report.find("CID_NOTE", OLD_CLIENT, "request").verdict == "ok"


@pytest.mark.parametrize("spec_dir", ["scaffold"])
def test_scaffold_against_itself_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec_dir: str
) -> None:
    monkeypatch.chdir(tmp_path)
    init = CliRunner().invoke(main, ["init", spec_dir])
    assert init.exit_code == 0, init.output
    spec = tmp_path / spec_dir / "spec"
    result = CliRunner().invoke(main, ["compat", str(spec), str(spec), "--format", "json", "--timeout", "2"])
    assert result.exit_code == 0, result.output
    assert '"verdict": "ok"' in result.output
    assert '"verdict": "broken"' not in result.output and '"verdict": "lossy"' not in result.output


def test_renumbered_reply_never_reaches_the_waiting_client(tmp_path: Path) -> None:
    report, rules = probe(tmp_path, ("base.yaml", "CID_NOTE_ACK: {id: 0x0202", "CID_NOTE_ACK: {id: 0x0204"))
    assert "COMMAND_ID_CHANGED" in rules
    exchange = report.find("CID_NOTE", OLD_CLIENT, "request")
    assert exchange.verdict == "broken"
    assert any(
        "no reply CID_NOTE_ACK (0x0202) arrived: the server sends CID_NOTE_ACK as 0x0204" in d
        for d in exchange.detail
    )
    assert report.find("CID_NOTE_ACK", OLD_CLIENT, "push").verdict == "broken"
