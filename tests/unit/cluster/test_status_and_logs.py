"""Pure parts of monitoring and logging: Prometheus parsing, status load columns and table, log formats."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from runtime.cluster.logs import ConsoleFormatter, JsonLineFormatter, NotInstanceRecords
from runtime.monitor.http import parse_prometheus
from runtime.monitor.metrics import Metrics
from ttgen.commands.status import load_of, render_table


def test_parse_prometheus_round_trip() -> None:
    m = Metrics(labels={"service": "msg", "instance": "0"})
    m.gauge("msg_connections").set(3)
    m.counter("msg_client_acks_total").inc(7)
    m.histogram("lat_seconds").observe(0.004)
    samples = parse_prometheus(m.render() + "garbage line without value x\n")
    assert samples["ttgen_msg_connections"] == 3
    assert samples["ttgen_msg_client_acks_total"] == 7
    assert samples["ttgen_lat_seconds_count"] == 1
    assert samples["ttgen_lat_seconds_bucket"] > 0  # buckets summed across `le` labels


def test_load_columns_from_metric_names() -> None:
    m = Metrics()
    m.gauge("msg_connections").set(4)
    m.counter("msg_delivered_total").inc(10)
    m.counter("msg_client_acks_total").inc(9)
    m.counter("msg_retransmits_total").inc(2)
    m.counter("msg_dedup_hits_total").inc(1)
    m.gauge("msg_relay_outbox").set(5)
    m.gauge("login_queue_depth").set(1)
    h = m.histogram("req_seconds")
    for v in (0.001, 0.002, 0.1):
        h.observe(v)
    load = load_of(parse_prometheus(m.render()), m.snapshot())
    assert load == {
        "conns": 4,
        "msgs_in": 0,
        "msgs_out": 10,
        "acks": 9,
        "retrans": 2,
        "dedup": 1,
        "queue": 6,
        "p50": 0.002,
        "p99": 0.1,
    }
    assert load_of({}, {})["p50"] is None


def test_render_table() -> None:
    cluster = {"pid": 1, "mode": "processes", "state": "running", "spec": "teamtalk"}
    doc = {
        "data_dir": "/d",
        "cluster": cluster,
        "instances": [
            {
                "service": "msg",
                "instance": 0,
                "pid": 2,
                "status": "ok",
                "endpoints": {"client": "h:1"},
                "load": {
                    "conns": 4,
                    "msgs_in": 0,
                    "msgs_out": 10,
                    "acks": 9,
                    "retrans": 2,
                    "dedup": 1,
                    "queue": 0,
                    "p50": 0.0025,
                    "p99": None,
                },
            },
            {"service": "router", "instance": 1, "pid": 3, "status": "unreachable", "endpoints": {}},
        ],
    }
    text = render_table(doc)
    assert "processes, running, spec teamtalk" in text
    msg_line = next(line for line in text.splitlines() if "msg-0" in line)
    assert msg_line.split()[:9] == ["msg-0", "ok", "2", "4", "0", "10", "9", "2", "1"]
    assert "2.5ms" in msg_line and "client=h:1" in msg_line
    assert "router-1  unreachable" in text


def _record(name: str, level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord(name, level, __file__, 1, "hello %s", ("world",), None)
    record.__dict__.update(extra)
    return record


def test_json_lines() -> None:
    doc = json.loads(JsonLineFormatter().format(_record("ttgen.msg.1", endpoints="client=h:1", n=3)))
    assert doc["msg"] == "hello world" and doc["level"] == "info" and doc["logger"] == "ttgen.msg.1"
    assert doc["endpoints"] == "client=h:1" and doc["n"] == 3
    try:
        raise ValueError("boom")
    except ValueError:
        rec = _record("x", logging.ERROR)
        rec.exc_info = sys.exc_info()
    assert "ValueError: boom" in json.loads(JsonLineFormatter().format(rec))["exc"]


def test_console_lines_and_instance_filter() -> None:
    line = ConsoleFormatter().format(_record("ttgen.router.1", logging.WARNING))
    assert line.endswith("router-1 warning: hello world")
    assert ConsoleFormatter().format(_record("runtime.dispatch")).endswith(" runtime.dispatch hello world")
    in_worker = ConsoleFormatter("msg-1").format(_record("ttgen.links", logging.WARNING))
    assert in_worker.endswith(" [msg-1] ttgen.links warning: hello world")
    keep = NotInstanceRecords()
    assert not keep.filter(_record("ttgen.msg.0")) and not keep.filter(_record("ttgen.msg.0.links"))
    assert keep.filter(_record("runtime.dispatch")) and keep.filter(_record("ttgen.cluster"))


def test_log_files_rotate_by_size_stay_private_and_are_shared_per_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flood of log lines keeps at most LOG_BACKUPS + 1 files of about MAX_LOG_BYTES; the instance's and
    the process's handlers of one file rotate it together."""
    from runtime.cluster import logs

    monkeypatch.setattr(logs, "MAX_LOG_BYTES", 4096)
    log_dir = tmp_path / "logs"
    instance = logs.attach_instance_log(log_dir, "msg", 0)
    process = logs.attach_process_log(logs.log_path(log_dir, "msg", 0))
    try:
        svc, lib = logging.getLogger("ttgen.msg.0"), logging.getLogger("ttgen.links.test")
        for i in range(2000):
            svc.info("refused a bad frame %d from a hostile client", i)
            lib.warning("library line %d", i)
        files = sorted(log_dir.iterdir())
        names = [f.name for f in files]
        assert names == ["msg-0.log", *(f"msg-0.log.{n}" for n in range(1, logs.LOG_BACKUPS + 1))]
        assert all(f.stat().st_size <= 4096 + 512 for f in files)
        assert all(f.stat().st_mode & 0o777 == 0o600 for f in files)
        assert log_dir.stat().st_mode & 0o777 == 0o700
        # The newest lines of both loggers are kept: in the current file, or in the one just rotated when the
        # last rotation fell between them (line lengths vary with the timestamp and pid digits).
        text = (log_dir / "msg-0.log.1").read_text() + (log_dir / "msg-0.log").read_text()
        assert "refused a bad frame 1999" in text and "library line 1999" in text
    finally:
        logs.detach(instance, "msg", 0)
        logging.getLogger().removeHandler(process)
        process.close()
    assert not logs._files  # the shared file is closed once both handlers are
