"""`ttgen up` / `ttgen status` as real subprocesses, on the built-in probe service (no IM services needed).

Covers both supervisors (one process, `--processes`), the endpoint table, discovery files, `ttgen status` over
real `/health` + `/metrics`, per-instance JSON logs, start failures, and a clean exit 0 on SIGTERM/SIGINT.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

OFF = {name: {"instances": 0} for name in ("login", "msg", "router", "biz", "file", "storage", "gateway")}
CLI = [sys.executable, "-c", "from ttgen.cli import main; main()"]


@pytest.fixture(autouse=True)
def cluster_layout() -> str:
    """Probe services only (no msg, biz or router to share a process): one layout is enough here."""
    return "split"


def write_config(tmp_path: Path, **probe: object) -> Path:
    services = {**OFF, "probe": {"instances": 2, "class": "runtime.cluster.probe:ProbeService", **probe}}
    path = tmp_path / "ttgen.yaml"
    path.write_text(json.dumps({"spec": "", "drain_timeout": 2, "start_timeout": 20, "services": services}))
    return path


class Up:
    """A running `ttgen up` with its stdout read line by line on a thread (so waits have deadlines)."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            [*CLI, "up", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
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
                raise AssertionError(f"exited before {text!r}; output:\n" + "\n".join(self.lines))
            self.lines.append(line)
            if text in line:
                return line

    def finish(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._thread.join(10)
        while not self._q.empty():
            line = self._q.get_nowait()
            if line is not None:
                self.lines.append(line)
        return code

    def kill(self) -> None:
        """Kill if still running and release the pipe (always called, in `finally`)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._thread.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def status(data_dir: Path) -> tuple[int, dict[str, object]]:
    done = subprocess.run(
        [*CLI, "status", "--data-dir", str(data_dir), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.returncode, json.loads(done.stdout)


def echo(port: int, text: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(text.encode() + b"\n")
        return sock.makefile().readline().strip()


@pytest.mark.parametrize("mode", [[], ["--processes"]], ids=["one-process", "processes"])
def test_up_status_and_sigterm(tmp_path: Path, mode: list[str]) -> None:
    data = tmp_path / "data"
    up = Up(["--config", str(write_config(tmp_path)), "--data-dir", str(data), *mode])
    try:
        up.wait_for("cluster is up")
        up.wait_for("press Ctrl-C")
        table = "\n".join(up.lines)
        assert "probe-0" in table and "probe-1" in table and "metrics" in table
        run_files = sorted(p.name for p in (data / "run").glob("*.json"))
        assert run_files == [
            "probe-0-client.json",
            "probe-0-metrics.json",
            "probe-1-client.json",
            "probe-1-metrics.json",
        ]
        port = json.loads((data / "run" / "probe-1-client.json").read_text())["port"]
        assert echo(port, "hello") == "hello"

        code, doc = status(data)
        assert code == 0
        rows = {f"{r['service']}-{r['instance']}": r for r in doc["instances"]}  # type: ignore[union-attr]
        assert set(rows) == {"probe-0", "probe-1"}
        assert all(r["status"] == "ok" for r in rows.values())
        assert rows["probe-1"]["load"]["msgs_in"] == 1
        assert rows["probe-0"]["load"]["msgs_in"] == 0
        assert rows["probe-1"]["load"]["p50"] is not None
        pids = {r["pid"] for r in rows.values()}
        if mode:
            assert len(pids) == 2 and up.proc.pid not in pids  # one worker process per instance
        else:
            assert pids == {up.proc.pid}
        human = subprocess.run(
            [*CLI, "status", "--data-dir", str(data)], capture_output=True, text=True, timeout=30
        )
        assert human.returncode == 0 and "probe-1" in human.stdout and "msgs_in" in human.stdout

        assert up.finish(signal.SIGTERM) == 0
    finally:
        up.kill()
    assert "ttgen: stopped" in up.lines
    assert list((data / "run").glob("*.json")) == []
    assert not (data / "run" / "cluster.state").exists()
    for i in (0, 1):
        records = [json.loads(line) for line in (data / "logs" / f"probe-{i}.log").read_text().splitlines()]
        assert [r["msg"] for r in records] == ["starting", "listening", "stopped"]
        assert all(r["logger"] == f"ttgen.probe.{i}" for r in records)
    code, doc = status(data)
    assert code == 1 and doc["instances"] == []


def test_sigint_in_processes_mode_stops_workers(tmp_path: Path) -> None:
    data = tmp_path / "data"
    up = Up(["--config", str(write_config(tmp_path)), "--data-dir", str(data), "--processes"])
    try:
        up.wait_for("press Ctrl-C")
        state = json.loads((data / "run" / "cluster.state").read_text())
        workers = list(state["workers"].values())
        assert len(workers) == 2
        assert up.finish(signal.SIGINT) == 0
    finally:
        up.kill()
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_worker_death_is_reported_not_restarted(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = str(write_config(tmp_path))
    up = Up(["--config", config, "--data-dir", str(data), "--processes", "--restart", "never"])
    try:
        up.wait_for("press Ctrl-C")
        pid = json.loads((data / "run" / "probe-0-metrics.json").read_text())["pid"]
        os.kill(pid, signal.SIGKILL)
        line = up.wait_for("exited with code")
        assert "probe-0" in line and "NOT restarted" in line
        code, doc = status(data)
        assert code == 1  # not every instance is ok
        rows = {f"{r['service']}-{r['instance']}": r["status"] for r in doc["instances"]}  # type: ignore[union-attr]
        assert rows == {"probe-1": "ok", "probe-0": "down"}
        assert up.finish() == 0
    finally:
        up.kill()


@pytest.mark.parametrize("mode", [[], ["--processes"]], ids=["one-process", "processes"])
def test_start_failure_exits_1_and_names_the_service(tmp_path: Path, mode: list[str]) -> None:
    data = tmp_path / "data"
    up = Up(["--config", str(write_config(tmp_path, fail_start=True)), "--data-dir", str(data), *mode])
    try:
        assert up.proc.wait(60) == 1
    finally:
        up.kill()
    up.finish()
    out = "\n".join(up.lines)
    assert "probe" in out and "failed to start" in out and "configured to fail" in out
    assert list((data / "run").glob("*.json")) == []


def test_second_cluster_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cfg = write_config(tmp_path)
    first = Up(["--config", str(cfg), "--data-dir", str(data)])
    try:
        first.wait_for("press Ctrl-C")
        second = Up(["--config", str(cfg), "--data-dir", str(data)])
        try:
            assert second.proc.wait(60) == 1
        finally:
            second.kill()
        second.finish()
        assert any("already running" in line for line in second.lines)
        assert first.finish() == 0
    finally:
        first.kill()


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("services:\n  msg: {instances: lots}\n")
    done = subprocess.run(
        [*CLI, "up", "--config", str(cfg), "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert "services.msg.instances" in done.stderr and str(cfg) in done.stderr


def test_missing_service_module_is_skipped_with_a_warning(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    doc = json.loads(cfg.read_text())
    doc["services"]["later"] = {"class": "runtime.services.not_written_yet:LaterService"}
    cfg.write_text(json.dumps(doc))
    up = Up(["--config", str(cfg), "--data-dir", str(tmp_path / "d")])
    try:
        line = up.wait_for("skipping service 'later'")
        assert "runtime.services.not_written_yet" in line
        up.wait_for("press Ctrl-C")
        assert up.finish() == 0
    finally:
        up.kill()
