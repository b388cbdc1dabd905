"""Runtime cluster layer: structured logs, one JSON-lines file per service instance, plus short console lines.

Service loggers are `ttgen.<service>.<instance>` (see `Service.__init__`); a handler on that logger writes
`<data_dir>/logs/<service>-<instance>.log`. The console gets one short human line per warning (or per info
line with `verbose`), prefixed with the instance name.

Files are rotated by size (`MAX_LOG_BYTES`, keeping `LOG_BACKUPS` older files: a bounded total, whatever a
flood of bad input makes the services log) and readable by their owner alone (0600 in a 0700 folder). Every
handler writing one path shares one open file, so a rotation is seen by all of them.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

MAX_LOG_BYTES = 16 << 20  # a log file is rotated when it would grow past this
LOG_BACKUPS = 4  # rotated files kept (<name>.log.1 .. .4): at most 80 MiB per instance

_INSTANCE_LOGGER = re.compile(r"^ttgen\.[^.]+\.\d+(\.|$)")
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonLineFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, any `extra=` fields, and the exception text."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                doc[key] = value if isinstance(value, str | int | float | bool | type(None)) else repr(value)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
    """`12:00:01 msg-0 warning: text` (the logger `ttgen.msg.0` shown as `msg-0`).

    A worker process passes its instance name as `process`, so lines of its library loggers say where they
    come from: `12:00:01 [msg-0] ttgen.links warning: ...`.
    """

    def __init__(self, process: str = "") -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        parts = record.name.split(".")
        if _INSTANCE_LOGGER.match(record.name):
            who = f"{parts[1]}-{parts[2]}"
        else:
            who = f"[{self.process}] {record.name}" if self.process else record.name
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        line = f"{stamp} {who} {level}{record.getMessage()}"
        if record.exc_info and record.levelno >= logging.ERROR:
            line += "\n" + self.formatException(record.exc_info)
        return line


def instance_logger_name(service: str, instance: int) -> str:
    return f"ttgen.{service}.{instance}"


def log_path(log_dir: Path, service: str, instance: int) -> Path:
    return log_dir / f"{service}-{instance}.log"


class _PrivateRotatingFile(logging.handlers.RotatingFileHandler):
    """A size-rotated JSON-lines file, created (and re-created at each rotation) with mode 0600."""

    def _open(self):  # type: ignore[no-untyped-def]  # the base class leaves it untyped
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


_files: dict[Path, list[Any]] = {}  # path -> [shared handler, users]
_files_lock = threading.Lock()


def _open_shared(path: Path) -> logging.Handler:
    with _files_lock:
        entry = _files.get(path)
        if entry is None:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            handler = _PrivateRotatingFile(
                path, maxBytes=MAX_LOG_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
            )
            handler.setFormatter(JsonLineFormatter())
            entry = _files[path] = [handler, 0]
        entry[1] += 1
        shared: logging.Handler = entry[0]
        return shared


def _release(path: Path) -> None:
    with _files_lock:
        entry = _files.get(path)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del _files[path]
            entry[0].close()


class _FileTap(logging.Handler):
    """A handler with its own level and filters that writes through the one shared file of its path."""

    def __init__(self, path: Path, level: int) -> None:
        super().__init__(level)
        self.path = path
        self.target = _open_shared(path)

    def emit(self, record: logging.LogRecord) -> None:
        self.target.handle(record)

    def close(self) -> None:
        _release(self.path)
        super().close()


def attach_instance_log(log_dir: Path, service: str, instance: int) -> logging.Handler:
    """Route `ttgen.<service>.<instance>` (and its children) to its JSON-lines file; returns the handler."""
    handler = _FileTap(log_path(log_dir, service, instance), logging.DEBUG)
    logger = logging.getLogger(instance_logger_name(service, instance))
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    return handler


def detach(handler: logging.Handler, service: str, instance: int) -> None:
    """Remove and close a handler made by `attach_instance_log`."""
    logging.getLogger(instance_logger_name(service, instance)).removeHandler(handler)
    handler.close()


class NotInstanceRecords(logging.Filter):
    """Passes records that no instance log file gets (loggers outside `ttgen.<service>.<instance>`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _INSTANCE_LOGGER.match(record.name) is None


def attach_process_log(path: Path) -> logging.Handler:
    """JSON lines for the records of this process that no instance file takes (runtime libraries, the
    supervisor). A worker points this at its instance's file, which then holds everything it logged."""
    handler = _FileTap(path, logging.INFO)
    handler.addFilter(NotInstanceRecords())
    root = logging.getLogger()
    root.setLevel(min(root.level or logging.INFO, logging.INFO))
    root.addHandler(handler)
    return handler


def setup_console(verbose: bool = False, stream: TextIO | None = None, process: str = "") -> logging.Handler:
    """Short human lines on stderr for every logger (warnings, or everything with verbose)."""
    root = logging.getLogger()
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    for old in list(root.handlers):
        if getattr(old, "_ttgen_console", False):
            root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(ConsoleFormatter(process))
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    handler._ttgen_console = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    return handler
