"""CLI layer: `ttgen status`, which reads the run dir and every instance's `/health` and `/metrics`."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click

from runtime.cluster.discovery import Published, RunDirDiscovery
from runtime.cluster.runner import read_cluster_state
from runtime.monitor.http import http_get, parse_prometheus
from runtime.services.base import Endpoint

# column -> substrings of metric names summed into it (names are `ttgen_<what>...`: runtime.monitor.metrics).
LOAD_COLUMNS: dict[str, tuple[str, ...]] = {
    "conns": ("connections", "conns", "_sessions"),
    "msgs_in": ("msgs_in", "messages_in", "frames_in"),
    "msgs_out": ("msgs_out", "messages_out", "frames_out", "_delivered"),
    "acks": ("acks",),
    "retrans": ("retransmit",),
    "dedup": ("dedup",),
    "queue": ("queue", "outbox"),
}


def load_of(samples: dict[str, float], snapshot: dict[str, Any]) -> dict[str, float | None]:
    """The load columns of one instance from its parsed /metrics and its /health metrics snapshot."""
    out: dict[str, float | None] = {}
    plain = {k: v for k, v in samples.items() if not k.endswith(("_bucket", "_sum", "_count", "_created"))}
    for column, needles in LOAD_COLUMNS.items():
        out[column] = sum(v for k, v in plain.items() if any(n in k for n in needles))
    for q in ("p50", "p99"):
        values = [float(v) for k, v in snapshot.items() if k.endswith(f"_{q}") and isinstance(v, int | float)]
        out[q] = max(values) if values else None
    return out


async def probe_instance(metrics: Endpoint, timeout: float) -> dict[str, Any]:
    """Health and load of one instance, or an `unreachable` record."""
    try:
        h_code, h_body = await http_get(metrics.host, metrics.port, "/health", timeout=timeout)
        m_code, m_body = await http_get(metrics.host, metrics.port, "/metrics", timeout=timeout)
        if h_code != 200 or m_code != 200:
            raise ValueError(f"HTTP {h_code}/{m_code}")
        health = json.loads(h_body)
        samples = parse_prometheus(m_body.decode("utf-8", "replace"))
    except (OSError, TimeoutError, ValueError) as exc:
        return {"status": "unreachable", "error": f"{type(exc).__name__}: {exc}"}
    snapshot = health.get("metrics", {}) if isinstance(health, dict) else {}
    return {
        "status": str(health.get("status", "unknown")),
        "health": health,
        "load": load_of(samples, snapshot if isinstance(snapshot, dict) else {}),
        "metrics": samples,
    }


async def gather_status(data_dir: Path, timeout: float = 3.0) -> dict[str, Any]:
    """Everything `ttgen status` shows, as one JSON-safe document."""
    discovery = RunDirDiscovery(data_dir / "run")
    records = discovery.records()
    state = read_cluster_state(data_dir / "run")
    instances: dict[tuple[str, int], list[Published]] = {}
    for record in records:
        instances.setdefault((record.endpoint.service, record.endpoint.instance), []).append(record)
    keys = list(instances)
    probes = await asyncio.gather(
        *(
            probe_instance(next(r.endpoint for r in instances[k] if r.endpoint.kind == "metrics"), timeout)
            if any(r.endpoint.kind == "metrics" for r in instances[k])
            else _no_metrics()
            for k in keys
        )
    )
    rows = []
    for (service, instance), probe in zip(keys, probes, strict=True):
        recs = instances[(service, instance)]
        rows.append(
            {
                "service": service,
                "instance": instance,
                "pid": recs[0].pid,
                "endpoints": {r.endpoint.kind: f"{r.endpoint.host}:{r.endpoint.port}" for r in recs},
                **probe,
            }
        )
    listed = {(r["service"], r["instance"]) for r in rows}
    for name, pid in sorted(((state or {}).get("workers") or {}).items()):
        worker_service, _, number = str(name).rpartition("-")
        if number.isdigit() and (worker_service, int(number)) not in listed:  # a worker that died
            rows.append(
                {
                    "service": worker_service,
                    "instance": int(number),
                    "pid": pid,
                    "endpoints": {},
                    "status": "down",
                    "error": "worker process is gone (not restarted)",
                }
            )
    return {"data_dir": str(data_dir), "cluster": state, "instances": rows}


async def _no_metrics() -> dict[str, Any]:
    return {"status": "unknown", "error": "no metrics endpoint published"}


def _fmt(value: float | None, seconds: bool = False) -> str:
    if value is None:
        return "-"
    if seconds:
        return f"{value * 1000:.1f}ms"
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def render_table(doc: dict[str, Any]) -> str:
    """The human view: one line per instance with its health and load."""
    state = doc.get("cluster") or {}
    lines = [
        f"cluster: pid {state.get('pid', '?')}, {state.get('mode', '?')}, {state.get('state', '?')}, "
        f"spec {state.get('spec') or '-'}, data {doc['data_dir']}"
    ]
    header = ["INSTANCE", "STATUS", "PID", *LOAD_COLUMNS, "p50", "p99", "ENDPOINTS"]
    rows = [header]
    for inst in doc["instances"]:
        load = inst.get("load") or {}
        endpoints = " ".join(f"{k}={v}" for k, v in sorted(inst["endpoints"].items()))
        rows.append(
            [
                f"{inst['service']}-{inst['instance']}",
                inst["status"],
                str(inst["pid"]),
                *(_fmt(load.get(c)) for c in LOAD_COLUMNS),
                _fmt(load.get("p50"), True),
                _fmt(load.get("p99"), True),
                endpoints,
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    for row in rows:
        cells = "  ".join(f"{c:<{w}}" for c, w in zip(row, widths, strict=False))
        lines.append(f"  {cells}  {row[-1]}")
    return "\n".join(lines)


@click.command("status")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("ttgen-data"),
    show_default=True,
    help="The data dir of the running cluster.",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 60),
    default=3.0,
    show_default=True,
    help="Seconds to wait for each instance's monitor endpoint.",
)
def status(data_dir: Path, fmt: str, timeout: float) -> None:
    """Show each running service instance's health and load (exit 1 if none runs or any is not ok).

    \b
    Examples:
      ttgen status
      ttgen status --data-dir /srv/ttgen --format json
    """
    doc = asyncio.run(gather_status(data_dir.resolve(), timeout))
    if fmt == "json":
        click.echo(json.dumps(doc, sort_keys=True, indent=2))
    elif not doc["instances"]:
        click.echo(f"no running cluster in {data_dir.resolve()} (start one with `ttgen up`)")
    else:
        click.echo(render_table(doc))
    healthy = bool(doc["instances"]) and all(i["status"] == "ok" for i in doc["instances"])
    sys.exit(0 if healthy else 1)
