"""Cross-version runs over real frames: lossy changes fail the matrix, additions interoperate."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from codegen.api import check_spec
from codegen.diff import Category, diff_specs
from codegen.model import Spec
from ttgen.cli import main
from ttgen.compat import NEW_CLIENT, OLD_CLIENT, run_compat

MANIFEST = "spec: probe\nversion: {version}\nsyntax: proto2\nmodules: [{modules}]\ncluster: cluster.yaml\n"
BASE = """\
module: Probe.Base
service: {{name: PROBE, id: 2}}
messages:
  Sample:
    fields:
      user_id: {{number: 1, type: uint32, label: required}}
      {count}
      text: {{number: 3, type: string, label: optional}}
      tags: {{number: 4, type: string, label: repeated}}
      {extra}
  SampleAck:
    fields:
      user_id: {{number: 1, type: uint32, label: required}}
commands:
  CID_SAMPLE: {{id: 0x0201, message: Sample, direction: c2s, reply: CID_SAMPLE_ACK}}
  CID_SAMPLE_ACK: {{id: 0x0202, message: SampleAck, direction: s2c}}
"""
EXT = """\
module: Probe.Ext
service: {name: PROBE_EXT, id: 0x10}
messages:
  Wave:
    fields:
      user_id: {number: 1, type: uint32, label: required}
      strength: {number: 2, type: int64, label: optional}
commands:
  CID_EXT_WAVE: {id: 0x1001, message: Wave, direction: c2s}
  CID_EXT_WAVED: {id: 0x1002, message: Wave, direction: s2c}
"""
CLUSTER = "services:\n  msg:\n    role: msg\n    listen: tcp\n    hosts: [{hosts}]\n"
COUNT_INT32 = "count: {number: 2, type: int32, label: optional}"


def write(
    root: Path, *, version: str = "1.0.0", count: str = COUNT_INT32, extra: str = "", ext: bool = False
) -> Path:
    root.mkdir(parents=True)
    modules = "base.yaml, ext.yaml" if ext else "base.yaml"
    hosts = "CID_SAMPLE, CID_EXT_WAVE" if ext else "CID_SAMPLE"
    (root / "ttgen.yaml").write_text(MANIFEST.format(version=version, modules=modules))
    (root / "base.yaml").write_text(BASE.format(count=count, extra=extra))
    (root / "cluster.yaml").write_text(CLUSTER.format(hosts=hosts))
    if ext:
        (root / "ext.yaml").write_text(EXT)
    return root


def load(path: Path) -> Spec:
    spec, _ = check_spec(path)
    return spec


def test_int32_to_int64_is_lossy_in_diff_and_truncates_on_the_wire(tmp_path: Path) -> None:
    old = load(write(tmp_path / "old"))
    new = load(write(tmp_path / "new", version="2.0.0", count=COUNT_INT32.replace("int32", "int64")))

    widened = [f for f in diff_specs(old, new) if f.rule == "FIELD_TYPE_WIDENED"]
    assert [(f.category, f.subject) for f in widened] == [(Category.LOSSY, "Probe.Base.Sample.count")]

    report = run_compat(old, new, timeout=5)
    # An old client's int32 values fit the new int64 field: that direction interoperates.
    assert report.find("CID_SAMPLE", OLD_CLIENT).verdict == "ok"
    # The new client sends 2**40 + 2; the old server's int32 keeps the low 32 bits: 2.
    failing = report.find("CID_SAMPLE", NEW_CLIENT)
    assert failing.verdict == "lossy"
    assert f"server saw count: sent {2**40 + 2}, received 2" in failing.detail
    assert f"round trip: count: sent {2**40 + 2}, received 2" in failing.detail
    assert failing in report.failures()


@pytest.mark.parametrize(
    ("old_field", "new_field", "rule", "bad_pairing"),
    [
        (COUNT_INT32, COUNT_INT32.replace("int32", "uint32"), "FIELD_TYPE_SIGN_CHANGED", OLD_CLIENT),
        (COUNT_INT32.replace("int32", "int64"), COUNT_INT32, "FIELD_TYPE_NARROWED", OLD_CLIENT),
        (COUNT_INT32, COUNT_INT32.replace("optional", "repeated"), "FIELD_CARDINALITY_CHANGED", NEW_CLIENT),
        (COUNT_INT32, COUNT_INT32.replace("int32", "fixed32"), "FIELD_TYPE_INCOMPATIBLE", OLD_CLIENT),
    ],
    ids=["sign", "narrowed", "cardinality", "wire-type"],
)
def test_lossy_and_breaking_field_changes_fail_the_matrix(
    tmp_path: Path, old_field: str, new_field: str, rule: str, bad_pairing: str
) -> None:
    old = load(write(tmp_path / "old", count=old_field))
    new = load(write(tmp_path / "new", version="2.0.0", count=new_field))
    found = {f.rule: f.category for f in diff_specs(old, new)}
    assert found[rule] in (Category.LOSSY, Category.WIRE_BREAKING)

    exchange = run_compat(old, new, timeout=5).find("CID_SAMPLE", bad_pairing)
    assert exchange.failed, exchange.format()
    assert any("count" in d for d in exchange.detail)


def test_bytes_to_string_rejects_or_mangles_non_utf8(tmp_path: Path) -> None:
    old = load(write(tmp_path / "old", extra="blob: {number: 5, type: bytes, label: optional}"))
    new = load(
        write(tmp_path / "new", version="2.0.0", extra="blob: {number: 5, type: string, label: optional}")
    )
    assert {f.rule for f in diff_specs(old, new)} >= {"FIELD_TYPE_STRING_BYTES"}
    exchange = run_compat(old, new, timeout=5).find("CID_SAMPLE", OLD_CLIENT)
    assert exchange.failed, exchange.format()


def test_removed_field_is_carried_not_lost(tmp_path: Path) -> None:
    # A field the receiver does not declare travels as an unknown field and comes back in the echo.
    old = load(write(tmp_path / "old", extra="note: {number: 5, type: string, label: optional}"))
    new = load(write(tmp_path / "new", version="2.0.0"))
    exchange = run_compat(old, new, timeout=5).find("CID_SAMPLE", OLD_CLIENT)
    assert (exchange.verdict, exchange.carried) == ("ok", ("note",))


def test_extension_module_is_compatible_and_old_clients_interoperate(tmp_path: Path) -> None:
    old = load(write(tmp_path / "old"))
    new = load(write(tmp_path / "new", version="1.1.0", ext=True))

    findings = diff_specs(old, new)
    assert findings, "the extension must be reported"
    assert {f.category for f in findings} == {Category.COMPATIBLE}
    assert {"MODULE_ADDED", "SERVICE_ADDED", "COMMAND_ADDED", "MESSAGE_ADDED"} <= {f.rule for f in findings}

    report = run_compat(old, new, timeout=5)
    old_client = [e for e in report.exchanges if e.pairing == OLD_CLIENT]
    assert {e.command for e in old_client} == {"CID_SAMPLE", "CID_SAMPLE_ACK", "CID_EXT_WAVED"}
    assert all(not e.failed for e in old_client), [e.format() for e in old_client]
    # The extended server's new push is unknown to the old client: ignored, not a failure.
    assert report.find("CID_EXT_WAVED", OLD_CLIENT).verdict == "ignored"
    # A new client using the extension against an old server is refused: the matrix says so.
    assert report.find("CID_EXT_WAVE", NEW_CLIENT).verdict == "broken"
    assert report.find("CID_SAMPLE", NEW_CLIENT).verdict == "ok"


def test_compat_cli_exit_codes_and_json(tmp_path: Path) -> None:
    old = write(tmp_path / "old")
    new = write(tmp_path / "new", version="2.0.0", count=COUNT_INT32.replace("int32", "int64"))
    runner = CliRunner()
    lossy = runner.invoke(main, ["compat", str(old), str(new), "--timeout", "5"])
    assert lossy.exit_code == 1, lossy.output
    assert "new-client/old-server  request CID_SAMPLE (0x0201): lossy" in lossy.output
    relaxed = runner.invoke(main, ["compat", str(old), str(new), "--fail-on", "broken", "--format", "json"])
    assert relaxed.exit_code == 0, relaxed.output
    assert '"verdict": "lossy"' in relaxed.output
    unknown = runner.invoke(main, ["compat", str(old), str(new), "--command", "CID_NOPE"])
    assert unknown.exit_code == 2
