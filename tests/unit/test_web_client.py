"""The generated browser client (generated/teamtalk/web/) run in Node against a fake gateway
(tests/unit/web_client_check.mjs): request and event validation from the spec, the WebSocket protocol of
docs/web-api.md, reconnect with resume, the long-poll fallback, duplicate suppression. Skipped without Node
(CI installs it with `./dev setup`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "generated" / "teamtalk" / "web"
CHECK = Path(__file__).with_name("web_client_check.mjs")


def test_generated_client_against_a_fake_gateway(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail("node is not installed: CI must run the browser client's checks (./dev setup)")
        pytest.skip("node is not installed (apt-get install -y nodejs)")
    for name in ("client.js", "protocol.js"):
        shutil.copy(WEB / name, tmp_path / name)
    (tmp_path / "package.json").write_text('{"type": "module"}\n', encoding="utf-8")
    result = subprocess.run(
        [node, str(CHECK), str(tmp_path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok ") >= 8, result.stdout
