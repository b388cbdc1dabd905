"""Runtime services layer (biz): opening the storage backend and the password checker from config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runtime.services.base import ServiceContext
from runtime.storage.base import Storage


async def open_storage(ctx: ServiceContext) -> Storage:
    """The configured backend (`storage: {backend: sqlite, ...}`), opened with migrations applied."""
    cfg: dict[str, Any] = dict(ctx.cluster_config.get("storage") or {})
    backend = cfg.get("backend", "sqlite")
    if backend != "sqlite":
        raise ValueError(f"unsupported storage backend {backend!r}")
    from runtime.storage.sqlite import SqliteStorage

    path = cfg.get("dir")
    data_dir = Path(path) if path else ctx.data_dir
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
