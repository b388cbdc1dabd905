"""The real IM cluster through the CLI: `ttgen up --demo-once`, `ttgen admin` before and while the cluster
runs, and `ttgen chat` driven through pipes. Real processes, sockets and SQLite on 127.0.0.1."""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result

pytest.importorskip("generated.teamtalk.registry")
pytestmark = pytest.mark.integration

CLI = [sys.executable, "-c", "from ttgen.cli import main; main()"]
# No blob store, file or gateway service: they are not what these tests exercise (and start faster without).
CONFIG = {
    "drain_timeout": 2,
    "services": {
        "storage": {"instances": 0},
        "file": {"instances": 0},
        "gateway": {"instances": 0},
        "login": {"instances": 1, "http_port": 0},
    },
}


class Proc:
    """A CLI subprocess whose stdout is read on a thread, so every wait has a deadline."""

    def __init__(self, args: list[str], *, stdin: bool = False) -> None:
        self.proc = subprocess.Popen(
            [*CLI, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._q.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                seen = "\n".join(self.lines)
                raise AssertionError(f"{text!r} not seen in {timeout}s; output:\n{seen}") from None
            if line is None:
                seen = "\n".join(self.lines)
                raise AssertionError(f"exited before {text!r}; output:\n{seen}")
            self.lines.append(line)
            if text in line:
                return line

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 30.0, sig: int | None = None) -> int:
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        code = self.proc.wait(timeout)
        self._thread.join(10)
        while not self._q.empty():
            if (line := self._q.get_nowait()) is not None:
                self.lines.append(line)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._thread.join(10)
        for stream in (self.proc.stdout, self.proc.stdin):
            if stream is not None and not stream.closed:
                stream.close()


def run(args: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def admin(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(["admin", "--data-dir", str(data), *args])


@pytest.fixture(scope="module", params=["sharded", "split"])
def cluster_layout(request: pytest.FixtureRequest) -> str:
    """This module's tests run once per layout (runtime.cluster.layout), its shared cluster too."""
    return str(request.param)


@pytest.fixture
def config_file(tmp_path: Path, cluster_layout: str) -> Path:
    path = tmp_path / "ttgen.yaml"
    path.write_text(json.dumps({**CONFIG, "layout": cluster_layout}))
    return path


@pytest.mark.parametrize("mode", [[], ["--processes"]], ids=["one-process", "processes"])
def test_demo_runs_to_completion(tmp_path: Path, config_file: Path, mode: list[str]) -> None:
    data = tmp_path / "data"
    first = run(["up", "--config", str(config_file), "--data-dir", str(data), "--demo-once", *mode], 120)
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    assert "created department Engineering, users alice, bob, carol (password 'demo')" in out
    assert 'alice -> bob: "Hi Bob! Is the new cluster up?"   acked by the server: stored as msg 1' in out
    assert "bob received it from alice (msg 1) and acked it" in out
    assert "alice received it from bob (msg 2) and acked it" in out
    assert "alice received it from carol (msg 1)" in out and "bob received it from carol (msg 1)" in out
    assert "msg 2: bob: Yes: two msg servers, two routers, SQLite." in out
    assert "demo: conversation complete" in out and out.rstrip().endswith("ttgen: stopped")
    if mode:
        return
    # `--demo` (what ./dev demo runs) keeps running after the conversation and says how to join; SIGTERM
    # stops it cleanly.
    again = Proc(["up", "--config", str(config_file), "--data-dir", str(data), "--demo"])
    try:
        assert "stored as msg 3" in again.wait_for("acked by the server", 90)  # the conversation continues
        again.wait_for("join the chat from another terminal")
        hint = again.wait_for("chat --user alice --password demo")
        assert f"--data-dir {data}" in hint
        again.wait_for("press Ctrl-C")
        assert again.finish(30, signal.SIGTERM) == 0
    finally:
        again.close()
    assert not any("created department" in line for line in again.lines)  # demo data: first run only
    assert again.lines[-1] == "ttgen: stopped"


def test_admin_before_start(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from ttgen.cli import main

    data = tmp_path / "data"
    runner = CliRunner()

    def adm(*args: str) -> Result:
        return runner.invoke(main, ["admin", "--data-dir", str(data), *args])

    assert adm("dept", "add", "Sales").exit_code == 0
    done = adm("user", "add", "erin", "--password", "pw", "--nick", "Erin", "--department", "Sales")
    assert done.exit_code == 0 and "created user erin" in done.output
    assert adm("user", "add", "frank", "--password", "pw").exit_code == 0
    dup = adm("user", "add", "erin", "--password", "x")
    assert dup.exit_code == 1 and "already exists" in dup.output
    bad_dept = adm("user", "add", "gina", "--password", "x", "--department", "Nowhere")
    assert bad_dept.exit_code == 1 and "unknown department 'Nowhere'" in bad_dept.output
    users = json.loads(adm("user", "list", "--format", "json").output)
    assert [(u["name"], u["nick"]) for u in users] == [("erin", "Erin"), ("frank", "frank")]
    assert users[0]["department_id"] == 1
    made = adm("group", "create", "deals", "--members", "erin,frank")
    assert made.exit_code == 0 and "2 members" in made.output
    missing = adm("group", "create", "x", "--members", "erin,nobody")
    assert missing.exit_code == 1 and "unknown user(s): nobody" in missing.output
    assert "deals  (normal, version 1): erin, frank" in adm("group", "list").output
    removed = adm("group", "members", "del", "deals", "--members", "frank")
    assert removed.exit_code == 0 and "now version 2" in removed.output
    assert "deals  (normal, version 2): erin\n" in adm("group", "list").output
    assert (data / "ttgen.db").is_file()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, cluster_layout: str) -> Iterator[Path]:
    """One running one-process cluster for this module's chat and admin tests, with users alice and bob
    (password pw) and group team; each test adds the users and groups it changes."""
    tmp_path = tmp_path_factory.mktemp("cluster")
    config_file = tmp_path / "ttgen.yaml"
    config_file.write_text(json.dumps({**CONFIG, "layout": cluster_layout}))
    data = tmp_path / "data"
    for name in ("alice", "bob"):
        assert admin(data, "user", "add", name, "--password", "pw").returncode == 0
    assert admin(data, "group", "create", "team", "--members", "alice,bob").returncode == 0
    up = Proc(["up", "--config", str(config_file), "--data-dir", str(data)])
    try:
        up.wait_for("press Ctrl-C", 60)
        yield data
        assert up.finish(30, signal.SIGTERM) == 0
    finally:
        up.close()


def chat(data: Path, user: str) -> Proc:
    proc = Proc(["chat", "--data-dir", str(data), "--user", user, "--password", "pw"], stdin=True)
    proc.wait_for(f"logged in as {user}")
    return proc


def test_chat_through_pipes(cluster: Path) -> None:
    alice, bob = chat(cluster, "alice"), chat(cluster, "bob")
    try:
        alice.send("/msg bob hello bob")
        acked = alice.wait_for("-> bob: hello bob")
        msg_id = re.search(r"\(acked, msg (\d+)\)", acked)
        assert msg_id is not None
        got = bob.wait_for("alice -> you: hello bob")
        assert got.endswith(f"(msg {msg_id.group(1)})")  # the durable id of the sender's ack
        # `ttgen status` sees the two clients and the delivery through the real services' metrics.
        status = run(["status", "--data-dir", str(cluster), "--format", "json"])
        assert status.returncode == 0, status.stdout
        rows = json.loads(status.stdout)["instances"]
        assert {r["service"] for r in rows} >= {"login", "msg", "router", "biz"}
        msg_rows = [r for r in rows if r["service"] == "msg"]
        assert sum(r["load"]["conns"] for r in msg_rows) == 2
        assert sum(r["load"]["msgs_out"] for r in msg_rows) >= 1  # pushed to bob before bob printed it
        bob.send("and hello to you")  # no command: goes to... nobody yet, bob has no last target
        bob.wait_for("use /msg USER text or /group NAME text first")
        bob.send("/group team hi team")
        assert "(acked, msg " in bob.wait_for("-> #team: hi team")
        alice.wait_for("bob -> #team: hi team")
        alice.send("/history bob")
        alice.wait_for("history of bob (")
        assert f"{msg_id.group(1)}  alice: hello bob" in alice.wait_for("hello bob")
        bob.send("/who")
        presence = bob.wait_for("presence:")
        assert "alice online" in presence and "bob online" in presence
        alice.send("/unread")
        alice.wait_for("unread:")
        alice.send("/msg nobody hi")
        alice.wait_for("! unknown user 'nobody'")
        alice.send("/quit")
        assert alice.finish() == 0 and "bye" in alice.lines
        bob.send("/who")
        assert "alice offline" in bob.wait_for("presence:")
        assert bob.finish() == 0  # stdin closed: EOF quits
    finally:
        alice.close()
        bob.close()


def test_chat_bad_password_exits_1(cluster: Path) -> None:
    done = run(["chat", "--data-dir", str(cluster), "--user", "alice", "--password", "wrong"])
    assert done.returncode == 1
    assert "cannot log in" in done.stdout


def test_chat_straight_to_a_msg_server(cluster: Path) -> None:
    port = json.loads((cluster / "run" / "msg-1-client.json").read_text())["port"]
    args = ["chat", "--server", f"127.0.0.1:{port}", "--user", "bob", "--password", "pw"]
    done = subprocess.run([*CLI, *args], input="/users\n/quit\n", capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "logged in as bob" in done.stdout and "users: " in done.stdout and "alice" in done.stdout
    bad = run(["chat", "--server", "no-port", "--user", "bob", "--password", "pw"])
    assert bad.returncode == 2 and "expected host:port" in bad.stderr


def test_admin_while_running(cluster: Path) -> None:
    made = admin(cluster, "user", "add", "carol", "--password", "pw")
    assert made.returncode == 0
    carol = chat(cluster, "carol")  # a user created while the cluster runs can log in at once
    alice = chat(cluster, "alice")
    try:
        assert admin(cluster, "group", "create", "ops", "--members", "alice,carol").returncode == 0
        carol.send("/groups")
        assert "#ops" in carol.wait_for("groups:")
        carol.send("/group ops ready")
        alice.wait_for("carol -> #ops: ready")
    finally:
        carol.close()
        alice.close()


def test_admin_member_change_reaches_a_running_biz(cluster: Path) -> None:
    """A member change made by `ttgen admin` bumps the group version; the running biz sees it even for a
    group whose members it already loaded."""
    assert admin(cluster, "user", "add", "dave", "--password", "pw").returncode == 0
    assert admin(cluster, "group", "create", "crew", "--members", "alice,bob").returncode == 0
    dave = chat(cluster, "dave")
    alice = chat(cluster, "alice")
    try:
        alice.send("/group crew before dave joins")  # the running biz now knows crew's members
        alice.wait_for("-> #crew: before dave joins")
        added = admin(cluster, "group", "members", "add", "crew", "--members", "dave")
        assert added.returncode == 0 and "now version 2" in added.stdout
        alice.send("/group crew after dave joined")
        alice.wait_for("-> #crew: after dave joined")
        dave.wait_for("alice -> #crew: after dave joined", timeout=10)
    finally:
        dave.close()
        alice.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_chat_waits_out_a_restart_and_resumes_with_its_ticket(tmp_path: Path, cluster_layout: str) -> None:
    """`ttgen up` restarts under a connected `ttgen chat`: the chat reconnects through the login service and
    logs in with its resumption ticket (no password hashing), then keeps chatting."""
    config = {
        **CONFIG,
        "layout": cluster_layout,
        "services": {
            **CONFIG["services"],  # type: ignore[dict-item]
            # The chat finds the restarted msg servers through the login service: only its port is fixed.
            "login": {"instances": 1, "http_port": _free_port()},
        },
    }
    config_file = tmp_path / "ttgen.yaml"
    config_file.write_text(json.dumps(config))
    data = tmp_path / "data"
    for name in ("alice", "bob"):
        assert admin(data, "user", "add", name, "--password", "pw").returncode == 0
    up = Proc(["up", "--config", str(config_file), "--data-dir", str(data)])
    alice = bob = None
    try:
        up.wait_for("press Ctrl-C", 60)
        alice = chat(data, "alice")
        assert up.finish(30, signal.SIGTERM) == 0
        up.close()
        up = Proc(["up", "--config", str(config_file), "--data-dir", str(data)])
        up.wait_for("press Ctrl-C", 60)
        alice.wait_for("* reconnected (ticket)", 60)
        bob = chat(data, "bob")
        alice.send("/msg bob still here")
        alice.wait_for("-> bob: still here")
        bob.wait_for("alice -> you: still here")
        alice.send("/quit")
        assert alice.finish() == 0
        bob.send("/quit")
        assert bob.finish() == 0
        assert up.finish(30, signal.SIGTERM) == 0
    finally:
        for proc in (alice, bob, up):
            if proc is not None:
                proc.close()


def test_admin_hashes_with_the_cluster_policy_and_passwd_replaces_the_hash(tmp_path: Path) -> None:
    """`ttgen admin` stores hashes with `services.biz.auth`'s policy (so biz never re-hashes them at the first
    login, the cause of the re-hash-per-login the load tests saw); `user passwd` replaces the hash."""
    import asyncio

    from argon2 import extract_parameters
    from click.testing import CliRunner

    from runtime.auth import PasswordHasher, wire_password
    from runtime.storage.sqlite import SqliteStorage
    from ttgen.cli import main

    data = tmp_path / "data"
    config_file = tmp_path / "ttgen.yaml"
    auth = {"time_cost": 1, "memory_cost": 2048, "parallelism": 1}
    config_file.write_text(json.dumps({"services": {"biz": {"auth": auth}}}))
    runner = CliRunner()

    def adm(*args: str) -> Result:
        return runner.invoke(main, ["admin", "--config", str(config_file), "--data-dir", str(data), *args])

    assert adm("user", "add", "hana", "--password", "first").exit_code == 0

    async def stored() -> str:
        storage = SqliteStorage(data)
        await storage.open()
        try:
            creds = await storage.get_credentials("hana")
            assert creds is not None
            return creds.password_hash
        finally:
            await storage.close()

    first = asyncio.run(stored())
    params = extract_parameters(first)
    assert (params.time_cost, params.memory_cost, params.parallelism) == (1, 2048, 1)
    hasher = PasswordHasher(**auth)
    assert not hasher.needs_rehash(first) and hasher.verify_wire(first, wire_password("first"))
    done = adm("user", "passwd", "hana", "--password", "second")
    assert done.exit_code == 0 and "resumption tickets are void" in done.output
    second = asyncio.run(stored())
    assert hasher.verify_wire(second, wire_password("second")) and not hasher.verify_wire(
        second, wire_password("first")
    )
    assert adm("user", "passwd", "nobody", "--password", "x").exit_code == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({"services": {"biz": {"auth": {"memory_cost": 10}}}}))
    refused = runner.invoke(
        main, ["admin", "--config", str(bad), "--data-dir", str(data), "user", "add", "x", "--password", "y"]
    )
    assert refused.exit_code == 1 and "memory_cost" in refused.output
