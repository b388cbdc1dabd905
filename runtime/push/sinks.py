"""Runtime push layer: where notifications go. A sink sends one notification or raises PushError
(`retry=False` for an answer that will not change, e.g. HTTP 400: the dispatcher then drops it)."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp

MAX_PREVIEW = 100  # characters of text in a notification


@dataclass(frozen=True)
class Notification:
    """One push to one device. `preview` is None when the content must not leave the server (burn)."""

    user_id: int
    token: str
    client_type: int
    from_user_id: int
    session_type: int  # 1 single, 2 group
    session_id: int  # the peer (single, as the recipient sees it) or the group
    msg_id: int
    preview: str | None
    burn: bool = False

    def doc(self) -> dict[str, Any]:
        """The JSON document sinks send."""
        return asdict(self)


class PushError(Exception):
    """A notification was not delivered to the sink."""

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


class Sink(Protocol):
    """Where notifications go."""

    name: str

    async def send(self, note: Notification) -> None:
        """Deliver one notification, or raise PushError."""

    async def close(self) -> None:
        """Release connections."""


class WebhookSink:
    """POSTs each notification as JSON to a URL (an APNs/FCM relay, a push service of one's own). 2xx is
    delivered; 429, 5xx and network errors are retried; any other status is dropped."""

    name = "webhook"

    def __init__(self, url: str, *, timeout: float = 5.0, headers: dict[str, str] | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"push webhook url must be http(s)://..., not {url!r}")
        self.url = url
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self._session: aiohttp.ClientSession | None = None

    async def send(self, note: Notification) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        try:
            async with self._session.post(self.url, data=json.dumps(note.doc()), headers=self.headers) as rsp:
                await rsp.read()
                if 200 <= rsp.status < 300:
                    return
                raise PushError(
                    f"webhook answered HTTP {rsp.status}", retry=rsp.status == 429 or rsp.status >= 500
                )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise PushError(f"webhook unreachable: {type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class LocalSink:
    """Appends each notification as a JSON line to a file (mode 0600) and keeps the last ones in memory:
    for tests and development, where no push service is at hand."""

    name = "local"

    def __init__(self, path: Path | None = None, *, keep: int = 10_000) -> None:
        self.path = path
        self.keep = keep
        self.sent: list[Notification] = []

    async def send(self, note: Notification) -> None:
        self.sent.append(note)
        del self.sent[: -self.keep]
        if self.path is not None:
            line = (json.dumps(note.doc(), ensure_ascii=False) + "\n").encode()
            try:
                await asyncio.to_thread(self._append, line)
            except OSError as exc:
                raise PushError(f"cannot write {self.path}: {exc}") from None

    def _append(self, line: bytes) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    async def close(self) -> None:
        return None
