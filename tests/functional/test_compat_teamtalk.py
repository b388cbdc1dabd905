"""The bundled spec: TeamTalk's base modules only vs the full spec with the IM.Ext extensions module."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from codegen.api import check_spec
from codegen.diff import Category, diff_specs
from ttgen.cli import main
from ttgen.compat import NEW_CLIENT, OLD_CLIENT, run_compat

SPEC = Path(__file__).resolve().parents[2] / "spec" / "teamtalk"
EXT_MODULE = "ext.yaml"

pytestmark = pytest.mark.skipif(
    not (SPEC / EXT_MODULE).is_file(), reason="spec/teamtalk with ext.yaml not present"
)


def _is_ext(name: str) -> bool:
    return name.startswith(("CID_EXT_", "IM.Ext."))


def base_only(target: Path) -> Path:
    """A copy of spec/teamtalk without its extensions module and everything that names it."""
    shutil.copytree(SPEC, target)
    manifest_path = target / "ttgen.yaml"
    manifest: dict[str, Any] = yaml.safe_load(manifest_path.read_text())
    manifest["modules"] = [m for m in manifest["modules"] if m != EXT_MODULE]
    manifest.pop("web", None)  # the browser API is built on the extensions (typing, recall, burn, tickets)
    manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    (target / EXT_MODULE).unlink()
    if isinstance(manifest.get("cluster"), str):
        cluster_path = target / manifest["cluster"]
        cluster: dict[str, Any] = yaml.safe_load(cluster_path.read_text())
        for service in cluster["services"].values():
            service["hosts"] = [h for h in service.get("hosts", []) if not _is_ext(h)]
            if "receives" in service:
                service["receives"] = [h for h in service["receives"] if not _is_ext(h)]
        cluster_path.write_text(yaml.safe_dump(cluster, sort_keys=False))
    if isinstance(manifest.get("stages"), str):
        stages_path = target / manifest["stages"]
        stages: dict[str, Any] = yaml.safe_load(stages_path.read_text())
        stages["stages"] = {k: v for k, v in stages["stages"].items() if not _is_ext(k)}
        stages_path.write_text(yaml.safe_dump(stages, sort_keys=False))
    return target


def test_teamtalk_extensions_are_compatible_and_base_clients_interoperate(tmp_path: Path) -> None:
    base, _ = check_spec(base_only(tmp_path / "teamtalk-base"))
    full, _ = check_spec(SPEC)

    findings = diff_specs(base, full, check_version_bump=False)
    assert findings, "adding the extensions module must be reported"
    not_compatible = [f.format() for f in findings if f.category is not Category.COMPATIBLE]
    assert not_compatible == []
    assert "MODULE_ADDED" in {f.rule for f in findings}

    report = run_compat(base, full, timeout=5)
    old_client = [e for e in report.exchanges if e.pairing == OLD_CLIENT]
    assert len(old_client) >= len([c for c in base.commands().values() if c.direction != "s2s"]) - 1
    assert [e.format() for e in old_client if e.failed] == []
    # Base commands also work from a full client against a base-only server.
    base_names = set(base.commands())
    new_client_base = [e for e in report.exchanges if e.pairing == NEW_CLIENT and e.command in base_names]
    assert [e.format() for e in new_client_base if e.failed] == []


def test_bundled_spec_against_itself_has_no_findings() -> None:
    spec, _ = check_spec(SPEC)
    report = run_compat(spec, spec, timeout=5)
    assert [e.format() for e in report.exchanges if e.verdict not in ("ok", "skipped")] == []
    # Extension pushes are delivered (the probe opts in as an extension-aware client does), not skipped.
    ext_pushes = [e for e in report.exchanges if e.leg == "push" and e.command.startswith("CID_EXT_")]
    assert len(ext_pushes) >= 2 and all(e.verdict == "ok" for e in ext_pushes)
    # Every command a client sends, and every command a server pushes, is probed in both pairings.
    from_client = [c for c in spec.commands().values() if c.direction in ("c2s", "both")]
    to_client = [c for c in spec.commands().values() if c.direction in ("s2c", "both")]
    assert len(report.exchanges) == 2 * (len(from_client) + len(to_client))
    assert not report.failures()


def test_bundled_spec_compat_cli_exits_0() -> None:
    result = CliRunner().invoke(main, ["compat", str(SPEC), str(SPEC)])
    assert result.exit_code == 0, result.output
    summary = result.output.splitlines()[-1]
    assert re.search(r"exchanges: \d+ ok(, \d+ skipped)?$", summary), summary
