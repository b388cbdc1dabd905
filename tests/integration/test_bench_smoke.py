"""`ttgen bench` smoke modes (issue 13): a real multi-process cluster and real load processes on loopback.

Each run is small (seconds) and asserts the figures, not just the exit code: every user logged in, every
heartbeat answered, every message acknowledged and delivered once, from several source addresses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration import conftest

pytest.importorskip("generated.teamtalk.registry")
pytestmark = pytest.mark.integration

CLI = [sys.executable, "-c", "from ttgen.cli import main; main()"]  # in the running test's layout (conftest)


def layout() -> str:
    """The running test's layout (the conftest's `cluster_layout` fixture sets it)."""
    return conftest._default_layout


def bench(tmp_path: Path, *args: str, timeout: float = 150.0) -> tuple[subprocess.CompletedProcess[str], Any]:
    out = tmp_path / "report.json"
    md = tmp_path / "report.md"
    proc = subprocess.run(
        [*CLI, "bench", *args, "--layout", layout(), "--json", str(out), "--markdown", str(md)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    report = json.loads(out.read_text()) if out.exists() else None
    assert report is not None, proc.stdout + proc.stderr
    assert md.read_text().startswith("| figure | value |")
    return proc, report


def test_connections_2000_smoke(tmp_path: Path) -> None:
    proc, r = bench(tmp_path, "connections", "--users", "2000", "--smoke")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    c = r["counters"]
    assert r["users"] == 2000 and (r["pc"], r["mobile"]) == (600, 1400)
    assert c["login_ok"] == 2000 and c["online"] == 2000  # all logged in, all still online at the end
    assert c["connect_failed"] == c["login_refused"] == c["login_timeout"] == c["lost"] == 0
    # 1 s heartbeats over a 3 s hold: several per connection, every one echoed
    assert c["hb_sent"] >= 2 * 2000 and c["hb_answered"] == c["hb_sent"] and c["hb_late"] == 0
    assert r["latency_ms"]["heartbeat"]["count"] == c["hb_sent"]
    assert r["source_addresses"] >= 2 and r["load_processes"] >= 2 and r["msg_servers"] == 2
    m = r["memory"]
    assert m["connections"] == 2000 and m["cluster_rss_mb"] > m["cluster_rss_idle_mb"] > 0
    assert r["ok"] and r["problems"] == []
    assert "progress" not in proc.stdout and "online 2000/2000" in proc.stderr  # progress lines on stderr


def test_login_storm_smoke(tmp_path: Path) -> None:
    proc, r = bench(tmp_path, "login-storm", "--smoke")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    c = r["counters"]
    storm, probes = 300, 2 * 20
    assert c["login_ok"] == storm + probes and r["logins"]["storm_seconds"] > 0
    assert r["latency_ms"]["login"]["count"] == storm + probes
    # the probe pairs' messages during the storm: all acked and delivered exactly once
    assert (
        c["sent"] >= 20 * 10 * 2
    )  # 20 senders x 10/s for at least 2 of the 3 s (the schedule's whole count)
    assert c["acked"] == c["sent"] and c["delivered"] == c["sent"] and c["duplicates"] == 0
    assert r["latency_ms"]["e2e"]["count"] == c["delivered"]
    assert c["hb_answered"] == c["hb_sent"] > 0
    assert r["ok"]


def test_restart_storm_smoke(tmp_path: Path) -> None:
    """--restart: every logged-in user comes back (password logins) after the cluster restarts."""
    proc, r = bench(tmp_path, "connections", "--users", "300", "--smoke", "--restart", "--hold", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    c, restart = r["counters"], r["restart"]
    assert c["login_ok"] == 300 and c["lost"] == 300 and c["relogins"] == 300 and c["online"] == 300
    assert restart["online_before"] == 300 and restart["all_back_after_up_seconds"] > 0
    assert r["latency_ms"]["relogin"]["count"] == 300
    assert c["hb_answered"] + c["hb_cut"] == c["hb_sent"]
    assert "from the connection's loss" in (tmp_path / "report.md").read_text()


def test_restart_storm_with_resumption_tickets_smoke(tmp_path: Path) -> None:
    """--reconnect ticket: every user asked for a ticket after its password login and comes back with it (no
    password check in the storm), and the report says so."""
    args = ["--users", "300", "--smoke", "--restart", "--reconnect", "ticket", "--hold", "1"]
    proc, r = bench(tmp_path, "connections", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    c = r["counters"]
    assert c["login_ok"] == 300 and c["relogins"] == 300 and c["online"] == 300
    assert c["ticket_logins"] == 300 and c["ticket_refused"] == 0
    assert r["restart"]["reconnect"] == "ticket"
    assert "logins with a ticket / tickets refused | 300 / 0" in (tmp_path / "report.md").read_text()


def test_target_a_running_cluster_and_report_refused_logins(tmp_path: Path) -> None:
    """`--target` benches a cluster started by `ttgen up`; a msg server that is full refuses logins, and the
    run says so and exits 1."""
    data = tmp_path / "data"
    config = tmp_path / "ttgen.yaml"
    config.write_text(
        "drain_timeout: 2\n"
        "services:\n"
        "  msg: {instances: 1, max_conn: 30}\n"
        "  router: {instances: 1}\n"
        "  biz: {auth: {time_cost: 1, memory_cost: 1024, parallelism: 1}}\n"
        "  login: {instances: 1, http_port: 0}\n"
        "  storage: {instances: 0}\n"
        "  file: {instances: 0}\n"
        "  gateway: {instances: 0}\n"
    )
    up = subprocess.Popen(
        [*CLI, "up", "--processes", "--config", str(config), "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert up.stdout is not None
        for line in up.stdout:  # bounded by the cluster's start timeout: it prints either way
            if "cluster is up" in line or "error" in line:
                break
        assert "cluster is up" in line, line
        proc, r = bench(
            tmp_path,
            "connections",
            "--users",
            "50",
            "--smoke",
            "--hold",
            "1",
            "--target",
            str(data),
            "--config",
            str(config),
            "--msg-servers",
            "1",
        )
    finally:
        up.send_signal(2)
        up.wait(30)
        if up.stdout is not None:
            up.stdout.close()
    assert proc.returncode == 1
    c = r["counters"]
    assert c["login_ok"] == 30 and c["login_refused"] == 20
    assert any("did not log in" in p for p in r["problems"])
    assert any("login_refused: 20" in p for p in r["problems"])
