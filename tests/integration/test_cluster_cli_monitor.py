"""In-process pieces behind `ttgen up`: the monitor HTTP server against bad requests, and the one-process
runner (start, publish, drain, withdraw; start failure cleans up). Real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from runtime.cluster.config import parse_config
from runtime.cluster.discovery import RunDirDiscovery
from runtime.cluster.instance import empty_registry
from runtime.cluster.runner import ClusterRunner, ClusterStartError
from runtime.monitor.http import MonitorServer, http_get

pytestmark = pytest.mark.integration
OFF = {name: {"instances": 0} for name in ("login", "msg", "router", "biz", "file", "storage", "gateway")}


async def raw(port: int, data: bytes, *, half_close: bool = False) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        if half_close:
            writer.write_eof()
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        await writer.wait_closed()


def test_monitor_server_answers_and_survives_bad_input() -> None:
    calls = {"n": 0}

    def health() -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("broken health callback")
        return {"status": "ok"}

    async def go() -> None:
        server = MonitorServer(lambda: "ttgen_x 1\n", health)
        await server.start()
        try:
            port = server.port
            assert await http_get("127.0.0.1", port, "/metrics") == (200, b"ttgen_x 1\n")
            code, body = await http_get("127.0.0.1", port, "/health?verbose=1")
            assert code == 200 and json.loads(body) == {"status": "ok"}
            assert (await http_get("127.0.0.1", port, "/health"))[0] == 500  # callback raised
            assert (await http_get("127.0.0.1", port, "/nope"))[0] == 404
            assert (await raw(port, b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n"))[9:12] == b"405"
            assert (await raw(port, b"\x00\xff garbage\r\n\r\n"))[9:12] == b"400"
            huge_head = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n"
            assert (await raw(port, huge_head))[9:12] == b"400"
            assert await raw(port, b"GET /metr", half_close=True) == b""  # incomplete: closed unanswered
            assert (await http_get("127.0.0.1", port, "/health"))[0] == 200  # still serving
        finally:
            await server.stop()

    asyncio.run(go())


def probe_config(tmp_path: Path, **probe: Any) -> Any:
    return parse_config(
        {
            "data_dir": str(tmp_path),
            "spec": "",
            "drain_timeout": 1,
            "services": {
                **OFF,
                "probe": {"instances": 2, "class": "runtime.cluster.probe:ProbeService", **probe},
            },
        }
    )


def test_runner_starts_publishes_and_withdraws(tmp_path: Path) -> None:
    config = probe_config(tmp_path)
    said: list[str] = []

    async def go() -> None:
        runner = ClusterRunner(config, empty_registry(), console=said.append)
        await runner.start()
        kinds = sorted((e.service, e.instance, e.kind) for e in runner.endpoints())
        assert kinds == [
            ("probe", 0, "client"),
            ("probe", 0, "metrics"),
            ("probe", 1, "client"),
            ("probe", 1, "metrics"),
        ]
        discovery = RunDirDiscovery(config.run_dir)
        assert discovery.endpoints("probe", "client") == [e for e in runner.endpoints() if e.kind == "client"]
        assert [type(s).__name__ for s in runner.local["probe"]] == ["ProbeService", "ProbeService"]
        client = discovery.endpoints("probe", "client")[0]
        reader, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(b"ping\n")
        assert await reader.readline() == b"ping\n"
        metrics = discovery.endpoints("probe", "metrics")[0]
        health = json.loads((await http_get(metrics.host, metrics.port, "/health"))[1])
        assert health["status"] == "ok" and health["connections"] == 1
        assert health["metrics"]["ttgen_msgs_in_total"] == 1
        runner.request_stop()
        await runner.run_until_stopped(install_signals=False)  # drains: the open connection is cut
        assert await reader.read() == b""
        writer.close()
        assert discovery.records(live_only=False) == []

    asyncio.run(go())
    assert said == []
    assert not (config.run_dir / "cluster.state").exists()


def test_runner_start_failure_cleans_up(tmp_path: Path) -> None:
    config = probe_config(tmp_path, fail_start=True)

    async def go() -> None:
        runner = ClusterRunner(config, empty_registry(), console=lambda _: None)
        with pytest.raises(ClusterStartError, match="'probe' failed to start: ProbeStartFailed"):
            await runner.start()
        assert runner.instances == []

    asyncio.run(go())
    assert list(config.run_dir.glob("*.json")) == []
    assert not (config.run_dir / "cluster.state").exists()
    assert "start failed" in (config.log_dir / "probe-0.log").read_text()
