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
    """The configured backend (`storage: {backend: sqlite, ...}`), opened with migrations applied."""
    cfg: dict[str, Any] = dict(ctx.cluster_config.get("storage") or {})
    backend = cfg.get("backend", "sqlite")
    if backend != "sqlite":
        raise ValueError(f"unsupported storage backend {backend!r}")
    from runtime.storage.sqlite import SqliteStorage

    data_dir = storage_dir(ctx)
    data_dir.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {"encrypt_at_rest": bool(cfg.get("encrypt_at_rest", False))}
    for key in ("synchronous", "max_batch", "readers", "recall_window", "dedup_window"):
        if key in cfg:
            options[key] = cfg[key]
    storage = SqliteStorage(data_dir, **options)
    await storage.open()
    return storage


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
