"""Integration: the process supervisor's `restart: on-failure` policy (real worker processes, SIGKILL)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

import runtime.cluster.processes as processes
from runtime.cluster.config import ConfigError, parse_config
from runtime.cluster.processes import ProcessSupervisor, Worker
from tests.integration.conftest import NAMES, cluster_config, seed_users
from tests.integration.test_messaging_processes import login
from ttgen.cli import main

pytestmark = pytest.mark.integration


def worker(sup: ProcessSupervisor, service: str, instance: int = 0) -> Worker:
    (found,) = [w for w in sup.workers if w.hosts(service, instance)]  # sharded: its shard's worker
    return found


async def until(pred: Callable[[], bool], timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_on_failure_restarts_a_killed_worker_and_stops_after_a_crash_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(processes, "RESTART_BACKOFF", (0.1, 0.2))
    monkeypatch.setattr(processes, "RESTART_LIMIT", 2)
    lines: list[str] = []

    async def main() -> None:
        await seed_users(tmp_path, NAMES[:2])
        config = parse_config({**cluster_config(tmp_path), "restart": "on-failure"})
        sup = ProcessSupervisor(config, "generated.teamtalk", console=lines.append)
        await sup.start()
        try:
            pids = []
            for _ in range(2):  # killed twice: restarted twice (the limit)
                victim = worker(sup, "msg", 1)
                pids.append(victim.process.pid)
                os.kill(victim.process.pid, signal.SIGKILL)
                await until(lambda v=victim: worker(sup, "msg", 1) is not v)
            back = worker(sup, "msg", 1)
            assert back.process.returncode is None and back.process.pid not in pids
            assert sum("restarting it in" in line for line in lines) == 2
            # The restarted server works: a user logs in on it.
            eps = sorted(
                (e for e in sup.endpoints() if e.kind == "client" and e.service == "msg"),
                key=lambda e: e.instance,
            )
            client = await login(eps, 1, NAMES[0])
            await client.close()
            os.kill(back.process.pid, signal.SIGKILL)  # a third death within the period: a crash loop
            await until(lambda: any("NOT restarted again" in line for line in lines))
            assert worker(sup, "msg", 1) is back and back.process.returncode == -signal.SIGKILL
            assert worker(sup, "msg", 0).process.returncode is None  # the rest keeps running
        finally:
            await sup.stop()

    asyncio.run(main())


def test_restart_policy_is_checked() -> None:
    with pytest.raises(ConfigError, match="restart: must be one of never, on-failure"):
        parse_config({"data_dir": "/tmp/x", "restart": "always"})
    assert parse_config({"data_dir": "/tmp/x"}).restart == "on-failure"  # a dead worker comes back


def test_up_refuses_restart_without_processes(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["up", "--restart", "on-failure", "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 2
    assert "--restart applies to --processes only" in result.output
    assert not (tmp_path / "d").exists()  # refused before anything was created
