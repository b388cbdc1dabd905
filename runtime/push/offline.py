"""Runtime push layer: who gets a notification for a relayed chat message.

The router hands every relayed `CID_MSG_DATA` / `CID_EXT_MSG_BURN` to `OfflinePush.on_chat` with the
relay's targets. A target other than the sender that has no mobile connection anywhere in the cluster (the
router's table) is looked up in storage: each mobile device token it registered gets one notification
unless the user shielded pushes (`CID_LOGIN_REQ_PUSH_SHIELD`). A burn-after-reading message carries no
preview. Lookups run off the relay path, at most `max_pending` at once (more are dropped and counted).

Config (`services.router.push`): `sink: webhook` with `url` (and `timeout`, `headers`), or `sink: local` with
`path` (relative to the data dir); `max_queue`, `max_attempts`, `backoff` for the dispatcher.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.monitor.metrics import Metrics
from runtime.push.dispatcher import PushDispatcher
from runtime.push.sinks import MAX_PREVIEW, LocalSink, Notification, Sink, WebhookSink
from runtime.storage.base import Storage
from runtime.storage.errors import StorageError

if TYPE_CHECKING:
    from generated.teamtalk.registry import Enums

log = logging.getLogger("ttgen.push")
PLACEHOLDER = "[voice]"


def sink_from_config(cfg: Mapping[str, Any], data_dir: Path) -> Sink:
    """The sink a `push:` section names (ValueError with the reason if it is malformed)."""
    kind = cfg.get("sink")
    if kind == "webhook":
        url = cfg.get("url")
        if not isinstance(url, str):
            raise ValueError("push.url: the webhook URL is required (sink: webhook)")
        headers = cfg.get("headers") or {}
        if not isinstance(headers, Mapping):
            raise ValueError("push.headers must be a mapping")
        return WebhookSink(
            url, timeout=float(cfg.get("timeout", 5.0)), headers={str(k): str(v) for k, v in headers.items()}
        )
    if kind == "local":
        path = cfg.get("path")
        return LocalSink(data_dir / str(path) if path else None)
    raise ValueError(f"push.sink must be webhook or local, not {kind!r}")


def push_from_config(cfg: Any, data_dir: Path, metrics: Metrics) -> PushDispatcher | None:
    """A dispatcher for a `push:` section, or None when there is none (pushes off)."""
    if not cfg:
        return None
    if not isinstance(cfg, Mapping):
        raise ValueError("push must be a mapping (sink: webhook|local, ...)")
    return PushDispatcher(
        sink_from_config(cfg, data_dir),
        metrics,
        max_queue=int(cfg.get("max_queue", 10_000)),
        max_attempts=int(cfg.get("max_attempts", 5)),
        backoff=float(cfg.get("backoff", 0.5)),
    )


class OfflinePush:
    """Turns relayed chat messages into notifications for users whose mobiles are offline."""

    def __init__(
        self,
        dispatcher: PushDispatcher,
        storage: Storage,
        mobile_online: Callable[[int], bool],
        parse: Callable[[int, bytes], Any],
        chat_ids: Mapping[int, bool],  # command id -> burn
        metrics: Metrics,
        enums: type[Enums],  # the spec's enums and bits (runtime.services.protocol.enums_of)
        *,
        max_pending: int = 1000,
    ) -> None:
        self.dispatcher, self.storage = dispatcher, storage
        self.mobile_bit = int(enums.ClientTypeBits.MOBILE)
        self.group_bit = int(enums.MsgTypeBits.GROUP)
        self.single_session = int(enums.SessionType.SESSION_TYPE_SINGLE)
        self.group_session = int(enums.SessionType.SESSION_TYPE_GROUP)
        types = enums.MsgType
        self.text_types = frozenset({int(types.MSG_TYPE_SINGLE_TEXT), int(types.MSG_TYPE_GROUP_TEXT)})
        self.mobile_online, self.parse, self.chat_ids = mobile_online, parse, chat_ids
        self.max_pending = max_pending
        self._tasks: set[asyncio.Task[None]] = set()
        self.m_lookups = metrics.counter("push_lookups_total", "relayed messages with offline mobile targets")
        self.m_shielded = metrics.counter("push_shielded_total", "notifications not sent: push shield on")
        self.m_lookup_dropped = metrics.counter(
            "push_lookups_dropped_total", "lookups dropped: too many pending"
        )
        self.m_lookup_failed = metrics.counter("push_lookups_failed_total", "lookups failed: storage error")

    def on_chat(self, command_id: int, body: bytes, targets: Sequence[int]) -> None:
        """A relayed chat message (its body, without the relay envelope) for `targets`."""
        burn = self.chat_ids.get(command_id)
        if burn is None:
            return
        try:
            msg = self.parse(command_id, body)
        except Exception:
            return  # not ours to judge: the msg servers refuse what they cannot read
        offline = [t for t in targets if t != msg.from_user_id and not self.mobile_online(t)]
        if not offline:
            return
        if len(self._tasks) >= self.max_pending:
            self.m_lookup_dropped.inc()
            return
        self.m_lookups.inc()
        task = asyncio.get_running_loop().create_task(self._lookup(msg, offline, burn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _lookup(self, msg: Any, users: list[int], burn: bool) -> None:
        try:
            tokens = await self.storage.get_device_tokens(users[:2000])
            mobile = [t for t in tokens if t.token and t.client_type & self.mobile_bit]
            shielded = {t.user_id for t in mobile if await self.storage.get_push_shield(t.user_id)}
        except StorageError as exc:
            self.m_lookup_failed.inc()
            log.warning("push lookup failed: %s", exc)
            return
        group = bool(msg.msg_type & self.group_bit)
        preview = None if burn else _preview(msg, self.text_types)
        for tok in mobile:
            if tok.user_id in shielded:
                self.m_shielded.inc()
                continue
            self.dispatcher.submit(
                Notification(
                    user_id=tok.user_id,
                    token=tok.token,
                    client_type=tok.client_type,
                    from_user_id=msg.from_user_id,
                    session_type=self.group_session if group else self.single_session,
                    session_id=msg.to_session_id if group else msg.from_user_id,
                    msg_id=msg.msg_id,
                    preview=preview,
                    burn=burn,
                )
            )

    async def close(self) -> None:
        """Cancel pending lookups."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _preview(msg: Any, text_types: frozenset[int]) -> str:
    if msg.msg_type not in text_types:
        return PLACEHOLDER
    return bytes(msg.msg_data).decode("utf-8", "replace")[:MAX_PREVIEW]
