"""PROTOCOL.md documents the browser API (the manifest's `web:`): commands with their routes and shapes,
events with their fields or carried command, and the JSON types; a spec without `web:` gets none."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from codegen.api import check_spec
from codegen.emit import EmitOptions
from codegen.emit.docs import protocol_markdown

SPEC = Path(__file__).resolve().parents[2] / "golden" / "web_client" / "spec"


def section(text: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index("## Browser API")
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("## "))
    return lines[start:end]


def test_the_browser_api_section_lists_commands_events_and_types() -> None:
    spec, _ = check_spec(SPEC)
    lines = section(protocol_markdown(spec, EmitOptions()))
    assert "Chat for browsers." in lines
    history = "| history | `GET /v1/history` | yes | yes | before: `int`? | lines: `Line`[], more: `bool` |"
    assert f"{history} Older lines. |" in lines
    assert "| put_file | `POST /v1/files` | no | yes | multipart: file: `json` | name: `string` |  |" in lines
    assert "| ping | - | yes | yes |  |  | WebSocket only. |" in lines
    assert "| line | line: `Line`, from: `int` | A new line. |" in lines
    assert "| CID_TYPING | data: `CID_TYPING` ([`Gold.Chat.Typing`](#goldchattyping)) |  |" in lines
    (line_type,) = [row for row in lines if row.startswith("| Line |")]
    assert "kind: [`Gold.Chat.SessionKind`](#goldchatsessionkind)" in line_type
    assert "author: [`Gold.Chat.Profile`](#goldchatprofile)?" in line_type


def test_no_web_section_without_a_browser_api() -> None:
    spec, _ = check_spec(SPEC)
    assert "## Browser API" not in protocol_markdown(replace(spec, web=None), EmitOptions())
