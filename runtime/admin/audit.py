"""Runtime admin layer: the audit log, one JSON object per line for every admin action, granted or refused.

`<data_dir>/admin-audit.log` by default (config `admin.audit_log`), created 0600 and appended with O_APPEND,
so the CLI and the gateway may write to the same file (each record is one write of at most MAX_RECORD bytes).
A record: `{"time", "actor", "action", "target", "outcome", ...details}`; no password appears. When the file
passes `max_bytes` it is renamed to `.1` (the one before that is dropped) and a new one is started.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MAX_RECORD = 4096
MAX_BYTES = 64 * 1024 * 1024
SECRET_KEYS = frozenset({"password", "app_key", "key"})


def audit_path(cluster_config: Mapping[str, Any], data_dir: Path) -> Path:
    """Where the cluster's audit log is: `admin.audit_log` (relative paths are under the data dir)."""
    section = cluster_config.get("admin") or {}
    configured = section.get("audit_log") if isinstance(section, dict) else None
    path = Path(str(configured)) if configured else Path("admin-audit.log")
    return path if path.is_absolute() else data_dir / path


class AuditLog:
    """Appends audit records to a file."""

    def __init__(self, path: Path, *, max_bytes: int = MAX_BYTES, clock: Any = time.time) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._clock = clock

    def record(self, actor: str, action: str, target: str, outcome: str, **details: Any) -> dict[str, Any]:
        """Append one record (secrets dropped, long values cut) and return it."""
        doc: dict[str, Any] = {
            "time": round(self._clock(), 3),
            "actor": actor[:200],
            "action": action[:100],
            "target": target[:300],
            "outcome": outcome[:500],
        }
        for key, value in details.items():
            if key not in SECRET_KEYS:
                doc[key] = value
        line = json.dumps(doc, ensure_ascii=False, default=str)
        if len(line.encode()) > MAX_RECORD:
            doc = {k: doc[k] for k in ("time", "actor", "action", "target", "outcome")}
            doc["truncated"] = True
            line = json.dumps(doc, ensure_ascii=False)[:MAX_RECORD]
        self._append(line + "\n")
        return doc

    def _append(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if self.path.stat().st_size + len(line) > self.max_bytes:
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        except FileNotFoundError:
            pass
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def read(self, limit: int = 1000) -> list[dict[str, Any]]:
        """The last `limit` records (unreadable lines skipped)."""
        try:
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines[-limit:]:
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict):
                out.append(doc)
        return out
