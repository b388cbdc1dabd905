"""Runtime cluster layer: structured logs, one JSON-lines file per service instance, plus short console lines.

Service loggers are `ttgen.<service>.<instance>` (see `Service.__init__`); a handler on that logger writes
`<data_dir>/logs/<service>-<instance>.log`. The console gets one short human line per warning (or per info
line with `verbose`), prefixed with the instance name.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any, TextIO

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


def attach_instance_log(log_dir: Path, service: str, instance: int) -> logging.Handler:
    """Route `ttgen.<service>.<instance>` (and its children) to its JSON-lines file; returns the handler."""
    log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_path(log_dir, service, instance), encoding="utf-8")
    handler.setFormatter(JsonLineFormatter())
    handler.setLevel(logging.DEBUG)
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
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonLineFormatter())
    handler.setLevel(logging.INFO)
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
