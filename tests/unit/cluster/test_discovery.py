"""Run-dir discovery: publish, read back oldest first, withdraw, ignore and sweep dead processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from runtime.cluster.discovery import CombinedDiscovery, RunDirDiscovery, StaticDiscovery
from runtime.services.base import Discovery, Endpoint


def _dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    return int(proc.stdout)


def test_publish_read_withdraw(tmp_path: Path) -> None:
    d = RunDirDiscovery(tmp_path / "run")
    assert d.endpoints("router", "internal") == []  # no run dir yet
    r0 = Endpoint("router", 0, "internal", "127.0.0.1", 1000)
    r1 = Endpoint("router", 1, "internal", "127.0.0.1", 1001)
    d.publish(r1)
    d.publish(r0)
    d.publish(Endpoint("msg", 0, "client", "127.0.0.1", 2000))
    assert d.endpoints("router", "internal") == [r1, r0]  # registration order, not instance order
    assert d.endpoints("router", "client") == []
    doc = json.loads((tmp_path / "run" / "router-0-internal.json").read_text())
    assert set(doc) == {"service", "instance", "kind", "host", "port", "pid", "started"}
    d.withdraw(r1)
    assert d.endpoints("router", "internal") == [r0]


def test_republish_keeps_registration_order(tmp_path: Path) -> None:
    d = RunDirDiscovery(tmp_path)
    a, b = (Endpoint("router", i, "internal", "h", 10 + i) for i in range(2))
    d.publish(a)
    d.publish(b)
    d.publish(a)  # the supervisor publishes again what the service already published
    assert d.endpoints("router", "internal") == [a, b]


def test_dead_processes_are_ignored_and_swept(tmp_path: Path) -> None:
    dead = RunDirDiscovery(tmp_path, pid=_dead_pid())
    ep = Endpoint("msg", 0, "client", "127.0.0.1", 3000)
    dead.publish(ep)
    live = RunDirDiscovery(tmp_path)
    assert live.endpoints("msg", "client") == []
    assert len(live.records(live_only=False)) == 1
    assert live.sweep_stale() == [tmp_path / "msg-0-client.json"]
    assert not (tmp_path / "msg-0-client.json").exists()


def test_withdraw_leaves_another_processes_record(tmp_path: Path) -> None:
    other = RunDirDiscovery(tmp_path, pid=1)  # pid 1 exists and is not us
    ep = Endpoint("msg", 0, "client", "127.0.0.1", 3000)
    other.publish(ep)
    RunDirDiscovery(tmp_path).withdraw(ep)
    assert (tmp_path / "msg-0-client.json").exists()


def test_garbage_files_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "junk.json").write_text("{not json")
    (tmp_path / "other.json").write_text(json.dumps({"service": "x"}))
    (tmp_path / "list.json").write_text("[1, 2]")
    d = RunDirDiscovery(tmp_path)
    assert d.records() == []


def test_static_and_combined(tmp_path: Path) -> None:
    static = StaticDiscovery([{"service": "router", "kind": "internal", "host": "10.0.0.5", "port": 8200}])
    local = RunDirDiscovery(tmp_path)
    mine = Endpoint("router", 0, "internal", "127.0.0.1", 9000)
    both: Discovery = CombinedDiscovery(local, static)
    both.publish(mine)
    assert both.endpoints("router", "internal") == [mine, Endpoint("router", 0, "internal", "10.0.0.5", 8200)]
    assert static.endpoints("msg", "client") == []
