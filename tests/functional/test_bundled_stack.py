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
