"""Runtime cluster layer: service discovery through `<data_dir>/run/*.json` files (one host) or static config.

Each bound endpoint is one file `<service>-<instance>-<kind>.json` holding
`{service, instance, kind, host, port, pid, started}`. Files are written atomically (temp file + rename), so a
reader never sees half a record; records of processes that no longer exist are ignored (and swept at start).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.services.base import Discovery, Endpoint

CLUSTER_FILE = "cluster.state"  # the supervisor's own record; not an endpoint


@dataclass(frozen=True)
class Published:
    """An endpoint record as read from the run dir."""

    endpoint: Endpoint
    pid: int
    started: float
    path: Path | None = None

    @property
    def alive(self) -> bool:
        return pid_alive(self.pid)


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists (on this host)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def endpoint_filename(endpoint: Endpoint) -> str:
    return f"{endpoint.service}-{endpoint.instance}-{endpoint.kind}.json"


def _parse_record(doc: Any, path: Path | None) -> Published | None:
    if not isinstance(doc, Mapping):
        return None
    try:
        endpoint = Endpoint(
            service=str(doc["service"]),
            instance=int(doc["instance"]),
            kind=str(doc["kind"]),
            host=str(doc["host"]),
            port=int(doc["port"]),
        )
        return Published(endpoint, int(doc.get("pid", 0)), float(doc.get("started", 0.0)), path)
    except (KeyError, TypeError, ValueError):
        return None


def write_json_atomic(path: Path, doc: Mapping[str, Any]) -> None:
    """Write JSON so that readers see either the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # run files are for this user alone
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(doc, sort_keys=True) + "\n")
    os.replace(tmp, path)


class RunDirDiscovery:
    """The `Discovery` of one host: endpoint files in a shared run dir."""

    def __init__(self, run_dir: Path, *, pid: int | None = None) -> None:
        self.run_dir = run_dir
        self.pid = pid if pid is not None else os.getpid()

    def publish(self, endpoint: Endpoint) -> None:
        """Announce an endpoint of this process after it is bound."""
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.run_dir / endpoint_filename(endpoint)
        previous = self._read(path)
        started = time.time()
        if previous is not None and previous.pid == self.pid and previous.endpoint == endpoint:
            started = previous.started  # re-publishing must not change the registration order
        write_json_atomic(
            path,
            {
                "service": endpoint.service,
                "instance": endpoint.instance,
                "kind": endpoint.kind,
                "host": endpoint.host,
                "port": endpoint.port,
                "pid": self.pid,
                "started": started,
            },
        )

    def withdraw(self, endpoint: Endpoint) -> None:
        """Remove an endpoint this process published (a file rewritten by another process is left alone)."""
        path = self.run_dir / endpoint_filename(endpoint)
        record = self._read(path)
        if record is not None and record.pid == self.pid:
            path.unlink(missing_ok=True)

    def records(self, *, live_only: bool = True) -> list[Published]:
        """Every endpoint record, oldest registration first."""
        if not self.run_dir.is_dir():
            return []
        found = [r for p in sorted(self.run_dir.glob("*.json")) if (r := self._read(p)) is not None]
        if live_only:
            found = [r for r in found if r.alive]
        return sorted(found, key=lambda r: (r.started, r.endpoint.service, r.endpoint.instance))

    def endpoints(self, service: str, kind: str) -> list[Endpoint]:
        """Every known live endpoint of `service` of that kind, oldest registration first."""
        wanted = (service, kind)
        return [r.endpoint for r in self.records() if (r.endpoint.service, r.endpoint.kind) == wanted]

    def sweep_stale(self) -> list[Path]:
        """Delete records of processes that no longer exist; returns what was removed."""
        removed = []
        for record in self.records(live_only=False):
            if not record.alive and record.path is not None:
                record.path.unlink(missing_ok=True)
                removed.append(record.path)
        return removed

    @staticmethod
    def _read(path: Path) -> Published | None:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return _parse_record(doc, path)


class StaticDiscovery:
    """Endpoints listed in the config (`endpoints:`), for services on other hosts; publishing is a no-op."""

    def __init__(self, entries: Iterable[Mapping[str, Any]]) -> None:
        self._records = [
            r
            for i, e in enumerate(entries)
            if (r := _parse_record({"instance": 0, **e, "started": float(i)}, None)) is not None
        ]

    def publish(self, endpoint: Endpoint) -> None:
        """Static endpoints are configured, not published."""

    def withdraw(self, endpoint: Endpoint) -> None:
        """Static endpoints are configured, not withdrawn."""

    def endpoints(self, service: str, kind: str) -> list[Endpoint]:
        return [r.endpoint for r in self._records if (r.endpoint.service, r.endpoint.kind) == (service, kind)]


class CombinedDiscovery:
    """Local run-dir (or database lease) endpoints first, then static ones from the config."""

    def __init__(self, local: RunDirDiscovery | Discovery, static: StaticDiscovery) -> None:
        self.local, self.static = local, static

    def publish(self, endpoint: Endpoint) -> None:
        self.local.publish(endpoint)

    def withdraw(self, endpoint: Endpoint) -> None:
        self.local.withdraw(endpoint)

    def endpoints(self, service: str, kind: str) -> list[Endpoint]:
        seen = self.local.endpoints(service, kind)
        return seen + [e for e in self.static.endpoints(service, kind) if e not in seen]
