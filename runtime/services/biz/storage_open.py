"""Runtime services layer (biz): opening the storage backend and the password checker from config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runtime.monitor.metrics import Metrics
from runtime.services.base import ServiceContext
from runtime.services.links import Proto
from runtime.storage.base import Storage


def storage_dir(ctx: ServiceContext) -> Path:
    """Where the database (and by default the ticket key) lives: `storage.dir` or the data dir."""
    path = (ctx.cluster_config.get("storage") or {}).get("dir")
    return Path(path) if path else ctx.data_dir


async def open_storage(ctx: ServiceContext) -> Storage:
    """The configured backend (`storage: {backend: sqlite | postgres, ...}`), opened, migrations applied."""
    storage = storage_from_config(dict(ctx.cluster_config.get("storage") or {}), ctx.data_dir)
    await storage.open()
    return storage


def storage_from_config(cfg: dict[str, Any], data_dir: Path) -> Storage:
    """An unopened backend for a `storage:` config section; `data_dir` is the default folder of the SQLite
    database, of the at-rest key and of the cluster id."""
    backend = cfg.get("backend", "sqlite")
    path = cfg.get("dir")
    folder = Path(path) if path else data_dir
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    options: dict[str, Any] = {"encrypt_at_rest": bool(cfg.get("encrypt_at_rest", False))}
    if cfg.get("key_dir"):  # the at-rest keys' folder (default: the storage folder)
        options["key_dir"] = Path(str(cfg["key_dir"]))
    if backend == "sqlite":
        from runtime.storage.sqlite import SqliteStorage

        for key in ("synchronous", "max_batch", "readers", "recall_window", "edit_window", "dedup_window"):
            if key in cfg:
                options[key] = cfg[key]
        return SqliteStorage(folder, **options)
    if backend == "postgres":
        from runtime.storage.postgres import PostgresStorage

        keys = ("max_batch", "readers", "recall_window", "edit_window", "dedup_window", "cluster_id")
        for key in (*keys, "connect_timeout", "command_timeout", "commit_pipeline"):
            if key in cfg:
                options[key] = cfg[key]
        return PostgresStorage(str(cfg.get("dsn") or ""), folder, **options)
    raise ValueError(f"unsupported storage backend {backend!r}")


def open_auth(ctx: ServiceContext, storage: Storage) -> Any:
    """The password checker (argon2id over the MD5hex clients send, lockout per user and per address)."""
    from runtime.services.biz.validate import Validator

    return Validator(storage, dict(ctx.config.get("auth") or {}))


def open_tickets(ctx: ServiceContext, storage: Storage, metrics: Metrics, proto: Proto) -> Any:
    """The resumption-ticket service (`services.biz.tickets`), None if the protocol has no ticket commands."""
    from runtime.services.biz.tickets import TicketService

    if not proto.has("CID_EXT_TICKET_VERIFY_REQ"):
        return None
    return TicketService(storage, dict(ctx.config.get("tickets") or {}), storage_dir(ctx), metrics, proto)
