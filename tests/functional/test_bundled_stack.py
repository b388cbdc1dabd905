"""The committed stack of the bundled spec: fresh (byte-identical to a new generation) and importable."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from codegen.api import check_spec
from codegen.emit import emit_stack
from codegen.writer import sync_tree

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "spec" / "teamtalk"

pytestmark = pytest.mark.skipif(not (SPEC / "ttgen.yaml").is_file(), reason="bundled spec not present")


@pytest.fixture(scope="module")
def files() -> dict[str, str | bytes]:
    spec, _ = check_spec(SPEC)
    return emit_stack(spec)


def test_generated_teamtalk_is_fresh(files: dict[str, str | bytes]) -> None:
    report = sync_tree(files, ROOT / "generated" / "teamtalk", check=True)
    assert report.problems() == [], "run `ttgen generate spec/teamtalk`"


def test_protocol_docs_mirror_is_fresh(files: dict[str, str | bytes]) -> None:
    assert (ROOT / "docs" / "protocol" / "PROTOCOL.md").read_text(encoding="utf-8") == files["PROTOCOL.md"]


def test_imports_as_generated_teamtalk() -> None:
    spec, _ = check_spec(SPEC)
    registry = importlib.import_module("generated.teamtalk.registry")
    servers = importlib.import_module("generated.teamtalk.servers")
    importlib.import_module("generated.teamtalk.clients")
    assert len(registry.REGISTRY) == len(spec.commands())
    assert set(servers.SERVICE_BASES) == {s.name for s in spec.cluster}
    login = registry.REGISTRY.by_id(0x0103)
    assert login.name == "CID_LOGIN_REQ_USERLOGIN"
    assert login.message_class.DESCRIPTOR.full_name == "IM.Login.IMLoginReq"


@pytest.mark.slow
def test_generated_teamtalk_type_checks(tmp_path: Path) -> None:
    """mypy --strict on the committed stack (protoc's `.pyi` files exempt from `type-arg` only)."""
    import os
    import shutil
    import subprocess
    import sys

    stack = ROOT / "generated" / "teamtalk"
    shutil.copytree(stack, tmp_path / "teamtalk", ignore=shutil.ignore_patterns("__pycache__", ".hypothesis"))
    pb2 = ",".join(f"teamtalk.{p.stem}" for p in sorted(stack.glob("*_pb2.pyi")))
    (tmp_path / "mypy.ini").write_text(
        f"[mypy]\nstrict = True\nfollow_imports = silent\n[mypy-{pb2}]\ndisable_error_code = type-arg\n"
        "[mypy-teamtalk.tests.*]\nignore_errors = True\n"  # generated fuzz suites: run, not imported
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            "mypy.ini",
            "--no-error-summary",
            "--cache-dir",
            str(ROOT / ".mypy_cache" / "bundled"),
            "-p",
            "teamtalk",
        ],
        cwd=tmp_path,
        env=dict(os.environ, MYPYPATH=str(ROOT)),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
