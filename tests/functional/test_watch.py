"""`ttgen watch` driven by real edits of a scaffolded project's spec: each save is checked, regenerated,
diffed against HEAD, the affected generated tests run and the served app restarted; a broken save is
reported and the app keeps running; stopping the watch stops the app."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from ttgen.cli import main

GIT = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def accepting(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
        return True
    except OSError:
        return False


class Log:
    """The watch's output file, read as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen = 0

    def wait_for(self, *needles: str, timeout: float = 60.0) -> str:
        """Output after the last match until every needle appeared (in any order)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.path.read_text(encoding="utf-8", errors="replace")[self.seen :]
            if all(n in text for n in needles):
                self.seen += max(text.index(n) + len(n) for n in needles)
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"no {needles} in the watch output:\n{text[-4000:]}")
            time.sleep(0.05)  # polling a growing file for the line the watch prints


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


@pytest.mark.skipif(os.name != "posix", reason="signals and git")
def test_watch_regenerates_diffs_tests_and_restarts_on_each_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(main, ["init", "w", "--generate"]).exit_code == 0
    project = tmp_path / "w"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "HYPOTHESIS"))} | GIT
    for git in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "v1"]):
        subprocess.run(git, cwd=project, env=env, check=True)
    port = free_port()
    ttgen = str(Path(sys.executable).parent / "ttgen")
    command = [ttgen, "watch", "spec", "--test", "--serve", "app/server.py", "--interval", "0.1"]
    command += ["--serve-arg", "--port", "--serve-arg", str(port)]
    log = Log(tmp_path / "watch.log")
    with log.path.open("w") as sink:
        watch = subprocess.Popen(command, cwd=project, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        first = log.wait_for("[watch] serving app/server.py", "listening on")
        assert "no changes" in first and "up to date" in first
        assert accepting(port)

        chat = project / "spec" / "chat.yaml"
        edit(chat, "      create_time:", "      reply_to:     {number: 6, type: uint32}\n      create_time:")
        second = log.wait_for("[watch] serving app/server.py", "listening on")
        assert "compatible[FIELD_ADDED]" in second and "reply_to" in second
        assert "tests: running generated tests of" in second and "CID_MSG_DATA" in second
        assert "[watch] tests passed" in second
        assert "W_Chat_pb2.py" in second
        assert "reply_to" in (project / "generated" / "w" / "W_Chat.proto").read_text()
        assert accepting(port)

        edit(
            chat,
            "      reply_to:     {number: 6, type: uint32}",
            "      reply_to:     {number: 6, type: uint32",
        )
        third = log.wait_for("fix and save again")
        assert "error[TT" in third and "chat.yaml:" in third
        assert accepting(port)  # the app keeps running the last good stack

        edit(chat, "type: uint32\n      create_time:", "type: uint32}\n      create_time:")
        fourth = log.wait_for("up to date", "FIELD_ADDED", "[watch] watching")
        # The same spec as before the broken save: nothing to regenerate, test or restart.
        assert "serving" not in fourth and "tests: running" not in fourth
    finally:
        watch.send_signal(signal.SIGTERM)
        watch.wait(20)
    assert "[watch] stopped" in log.path.read_text()
    assert not accepting(port), "stopping the watch must stop the served app"
