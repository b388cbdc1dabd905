"""Functional tests of `ttgen generate` and `ttgen init` through the click entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from ttgen.cli import main

MANIFEST = """
spec: cli_demo
version: 1.0.0
syntax: proto3
modules: [m.yaml]
cluster: {services: {msg: {role: msg, hosts: [CID_HELLO]}}}
"""
MODULE = """
module: Cli.Demo
service: {name: DEMO, id: 1}
messages:
  Hello:
    fields:
      name: {number: 1, type: string}
commands:
  CID_HELLO: {id: 0x0101, message: Hello, direction: c2s}
"""


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        (folder / rel).write_text(textwrap.dedent(text).lstrip())
    return folder


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "demo" / "spec", {"ttgen.yaml": MANIFEST, "m.yaml": MODULE})
    return tmp_path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_generate_writes_beside_the_spec_folder_then_check_is_fresh(project: Path) -> None:
    code, out = run("generate", "demo/spec")
    assert code == 0, out
    stack = project / "demo" / "generated" / "cli_demo"
    assert (stack / "Cli_Demo.proto").is_file() and (stack / "Cli_Demo_pb2.py").is_file()
    written = sum(1 for p in stack.rglob("*") if p.is_file())
    assert f"demo/generated/cli_demo: {written} written, 0 unchanged" in out
    code, out = run("generate", "demo/spec", "--check")
    assert code == 0 and "up to date" in out


def test_check_lists_drift_exits_1_and_writes_nothing(project: Path) -> None:
    assert run("generate", "demo/spec")[0] == 0
    stack = project / "demo" / "generated" / "cli_demo"
    (stack / "servers.py").write_text("edited\n")
    (stack / "clients.py").unlink()
    code, out = run("generate", "demo/spec", "--check")
    assert code == 1
    assert "stale: demo/generated/cli_demo/servers.py" in out
    assert "missing: demo/generated/cli_demo/clients.py" in out
    assert (stack / "servers.py").read_text() == "edited\n" and not (stack / "clients.py").exists()
    code, out = run("generate", "demo/spec", "--check", "--format", "json")
    report = json.loads(out[: out.rindex("}") + 1])
    assert code == 1 and report["outputs"][0]["stale"] == ["servers.py"]


def test_out_and_docs_dir_options(project: Path) -> None:
    code, out = run("generate", "demo/spec", "-o", "elsewhere", "--docs-dir", "docs/protocol")
    assert code == 0, out
    assert (project / "elsewhere" / "cli_demo" / "registry.py").is_file()
    docs = (project / "docs" / "protocol" / "PROTOCOL.md").read_text()
    assert docs == (project / "elsewhere" / "cli_demo" / "PROTOCOL.md").read_text()
    assert "| 0x0101 | CID_HELLO | c2s |" in docs


def test_manifest_output_keys_choose_the_folders(project: Path) -> None:
    write(project / "demo" / "spec", {"ttgen.yaml": MANIFEST + "output: ../../out\ndocs_output: ../../d\n"})
    assert run("generate", "demo/spec")[0] == 0
    assert (project / "out" / "cli_demo" / "clients.py").is_file()
    assert (project / "d" / "PROTOCOL.md").is_file()


def test_spec_errors_exit_1_with_located_diagnostics(project: Path) -> None:
    write(project / "demo" / "spec", {"m.yaml": MODULE.replace("message: Hello", "message: Helo")})
    code, out = run("generate", "demo/spec")
    assert code == 1
    assert "m.yaml:" in out and "error[TT" in out
    assert not (project / "demo" / "generated").exists()
    code, out = run("generate", "demo/spec", "--format", "json")
    doc = json.loads(out)
    assert code == 1 and doc["ok"] is False and doc["diagnostics"][0]["file"].endswith("m.yaml")


def test_usage_errors_exit_2(project: Path) -> None:
    assert run("generate", "no/such/spec")[0] == 2
    assert run("generate", "demo/spec", "--format", "xml")[0] == 2
    code, out = run("generate", "--help")
    assert code == 0 and "Examples:" in out and "--check" in out


def test_init_scaffold_generates_and_its_tests_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = run("init", "My-Chat", "--generate")
    assert code == 0, out
    project = tmp_path / "My-Chat"
    assert (project / "README.md").is_file() and (project / "spec" / "ttgen.yaml").is_file()
    assert (project / "generated" / "my_chat" / "MyChat_Chat_pb2.py").is_file()
    assert run("generate", "My-Chat/spec", "--check")[0] == 0
    # The scaffold's own tests, in their own process (their stack has its own protobuf package).
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "failed" not in result.stdout and " passed" in result.stdout  # its own tests and the fuzz suites


@pytest.mark.parametrize("syntax", ["proto2", "proto3"])
def test_init_both_syntaxes_generate_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, syntax: str
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run("init", "proj", "--syntax", syntax)[0] == 0
    code, out = run("generate", "proj/spec")
    assert code == 0, out
    proto = (tmp_path / "proj" / "generated" / "proj" / "Proj_Chat.proto").read_text()
    assert f'syntax = "{syntax}";' in proto
    assert ("required string user_name = 1;" in proto) == (syntax == "proto2")


def test_init_refuses_a_non_empty_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    result = CliRunner().invoke(main, ["init", "taken"])
    assert result.exit_code == 1
    assert "already exists and is not empty" in result.output
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == ["keep.txt"]
    (tmp_path / "empty").mkdir()
    assert run("init", "empty")[0] == 0
