"""The chat page's static files (runtime/web/static/), read without a browser: no HTML sinks in its script,
nothing inline that the gateway's Content-Security-Policy would block, every element the script looks up
exists, and the script takes its message code from the generated client only."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

STATIC = Path(__file__).resolve().parents[2] / "runtime" / "web" / "static"


class _Scan(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if names.get("id"):
            self.ids.add(str(names["id"]))
        if "style" in names or any(key.startswith("on") for key in names):
            self.inline.append(f"<{tag}> {sorted(names)}")
        if tag == "script" and "src" not in names:
            self.inline.append("<script> without src")


def test_the_page_has_nothing_inline_and_every_looked_up_element() -> None:
    scan = _Scan()
    scan.feed((STATIC / "index.html").read_text(encoding="utf-8"))
    assert scan.inline == []
    script = (STATIC / "app.js").read_text(encoding="utf-8")
    looked_up = set(re.findall(r'\$\("([A-Za-z0-9_-]+)"\)', script))
    assert looked_up, "app.js looks elements up with $(id)"
    assert looked_up <= scan.ids, sorted(looked_up - scan.ids)


def test_the_script_writes_no_html_and_imports_only_the_generated_client() -> None:
    script = (STATIC / "app.js").read_text(encoding="utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink
    imports = re.findall(r'^import .* from "([^"]+)";$', script, flags=re.MULTILINE)
    assert sorted(imports) == ["/gen/client.js", "/gen/protocol.js"]
    # All traffic goes through the generated client.
    assert re.search(r"\bfetch\(|new WebSocket|XMLHttpRequest", script) is None
