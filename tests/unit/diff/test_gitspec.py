"""`ttgen diff` with git revisions (`REV:path`), run inside a throwaway repository and a fresh clone of it."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest
from click.testing import CliRunner

from codegen.gitspec import GitSpecError, SpecSource, materialize, parse_source
from ttgen.cli import main

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(repo: Path, *args: str) -> str:
    env_args = [
        "-c",
        "user.name=ttgen tests",
        "-c",
        "user.email=tests@example.invalid",
        "-c",
        "init.defaultBranch=main",
    ]
    proc = subprocess.run(["git", *env_args, *args], cwd=repo, capture_output=True, text=True, check=True)
    return proc.stdout


def commit_spec(repo: Path, files: Mapping[str, str], message: str) -> None:
    for name, text in files.items():
        path = repo / "spec" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


@pytest.fixture
def repo(tmp_path: Path, bases: dict[str, dict[str, str]]) -> Path:
    """A repository with two commits of `spec/`: v1 (the base), v2 (count widened to int64, version 2.0.0)."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    v1 = bases["chat"]
    commit_spec(root, v1, "spec v1")
    v2 = dict(v1)
    v2["chat.yaml"] = v1["chat.yaml"].replace(
        "count: {number: 2, type: int32", "count: {number: 2, type: int64"
    )
    v2["ttgen.yaml"] = v1["ttgen.yaml"].replace("version: 1.0.0", "version: 2.0.0")
    commit_spec(root, v2, "spec v2")
    return root


def line_of(text: str, snippet: str) -> int:
    return text[: text.index(snippet)].count("\n") + 1


def run_diff(cwd: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    monkeypatch.chdir(cwd)
    result = CliRunner().invoke(main, ["diff", *args])
    return result.exit_code, result.output


def test_revision_vs_revision(
    repo: Path, monkeypatch: pytest.MonkeyPatch, bases: dict[str, dict[str, str]]
) -> None:
    code, out = run_diff(repo, monkeypatch, "HEAD~1:spec", "HEAD:spec", "--fail-on", "lossy")
    line = line_of(bases["chat"]["chat.yaml"], "count:")
    assert f"spec/chat.yaml:{line}:7: lossy[FIELD_TYPE_WIDENED]: " in out
    assert code == 1
    assert "VERSION_MAJOR_BUMP_MISSING" not in out  # 1.0.0 -> 2.0.0 is a major bump


def test_revision_vs_working_tree_in_a_fresh_clone(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True, capture_output=True)
    code, out = run_diff(clone, monkeypatch, "HEAD~1:spec", "spec", "--format", "json")
    doc = json.loads(out)
    assert code == 1  # lossy fails the default threshold
    widened = [f for f in doc["findings"] if f["rule"] == "FIELD_TYPE_WIDENED"]
    assert [(f["category"], f["file"]) for f in widened] == [("lossy", "spec/chat.yaml")]
    # A branch name works as the revision too.
    code, out = run_diff(clone, monkeypatch, "main:spec", "spec")
    assert code == 0 and out.strip() == "no changes"


def test_revision_relative_to_current_directory(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = run_diff(repo / "spec", monkeypatch, "HEAD~1:./", ".", "--fail-on", "wire-breaking")
    assert code == 0
    assert "chat.yaml:" in out and "FIELD_TYPE_WIDENED" in out


def test_deletions_point_into_the_old_revision(
    repo: Path, monkeypatch: pytest.MonkeyPatch, bases: dict[str, dict[str, str]]
) -> None:
    text = (repo / "spec" / "chat.yaml").read_text()
    (repo / "spec" / "chat.yaml").write_text(
        text.replace("  CID_PONG: {id: 0x0204, message: Ping, direction: s2c}\n", "")
    )
    code, out = run_diff(repo, monkeypatch, "HEAD~1:spec", "spec")
    line = line_of(bases["chat"]["chat.yaml"], "CID_PONG:")
    assert (
        f"spec/chat.yaml:{line}:3: wire-breaking[COMMAND_REMOVED]: command CID_PONG (0x0204) removed" in out
    )
    assert code == 1


@pytest.mark.parametrize(
    ("side", "message"),
    [("NOPE~3:spec", "NOPE~3"), ("HEAD:missing", "does not exist"), ("no-such-path", "no such spec path")],
)
def test_bad_sides_are_usage_errors(
    repo: Path, monkeypatch: pytest.MonkeyPatch, side: str, message: str
) -> None:
    code, out = run_diff(repo, monkeypatch, side, "spec")
    assert code == 2
    assert message in out


def test_parse_source(tmp_path: Path) -> None:
    (tmp_path / "spec").mkdir()
    assert parse_source("spec", cwd=str(tmp_path)) == SpecSource("spec", None, "spec")
    assert parse_source("main:spec/teamtalk", cwd=str(tmp_path)) == SpecSource(
        "main:spec/teamtalk", "main", "spec/teamtalk"
    )
    with pytest.raises(GitSpecError):
        parse_source("nothing-here", cwd=str(tmp_path))


def test_materialized_revision_is_removed_afterwards(repo: Path) -> None:
    with materialize("HEAD:spec", cwd=str(repo)) as side:
        extracted = Path(side.path)
        assert (extracted / "ttgen.yaml").is_file()
    assert not extracted.exists()
