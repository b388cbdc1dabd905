"""Integration helpers for gateway tests: a cluster with the gateway, and a small long-poll HTTP client."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.http_support import ClientResponse, http_request, post_json
from tests.integration.conftest import PASSWORD
from tests.integration.file_support import FileCluster

GATEWAY = {"gateway": {"instances": 1}, "file": {"instances": 0}}


async def wait_gateway(c: FileCluster, timeout: float = 10.0) -> tuple[str, int]:
    """Until the gateway has biz and a router; returns its HTTP address."""
    deadline = time.monotonic() + timeout
    while True:
        (gw,) = c.services("gateway")
        if gw.health()["status"] == "ok":
            ep = gw.endpoints()[0]
            return ep.host, ep.port
        if time.monotonic() > deadline:
            raise TimeoutError(f"gateway not ready: {gw.health()}")
        await asyncio.sleep(0.02)


class WebClient:
    """A long-poll client of the gateway."""

    def __init__(self, addr: tuple[str, int], token: str, user_id: int, login: dict[str, Any]) -> None:
        self.addr, self.token, self.user_id, self.login_doc = addr, token, user_id, login
        self.since = 0
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def login(
        cls, addr: tuple[str, int], user: str, password: str = PASSWORD, **extra: Any
    ) -> WebClient:
        """POST /api/login; asserts success."""
        rsp = await post_json(*addr, "/api/login", {"user": user, "password": password, **extra})
        doc = rsp.json()
        assert rsp.status == 200 and doc["error_code"] == 0, doc
        return cls(addr, doc["token"], doc["user_id"], doc)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def post(self, path: str, doc: Any) -> ClientResponse:
        """An authenticated JSON POST."""
        return await post_json(*self.addr, path, doc, self.headers())

    async def send(self, to: int, text: str, **extra: Any) -> dict[str, Any]:
        """POST /api/send; returns the answer document."""
        rsp = await self.post("/api/send", {"to": to, "text": text, **extra})
        doc: dict[str, Any] = rsp.json()
        return doc

    async def poll(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        """One long poll from the last seen seq."""
        rsp = await http_request(
            *self.addr,
            "GET",
            f"/api/poll?since={self.since}&timeout={timeout}",
            headers=self.headers(),
            timeout=timeout + 5,
        )
        doc = rsp.json()
        assert rsp.status == 200 and doc["error_code"] == 0, doc
        self.since = doc["last_seq"]
        self.events.extend(doc["events"])
        events: list[dict[str, Any]] = doc["events"]
        return events

    async def wait_for(self, pred: Any, timeout: float = 8.0) -> dict[str, Any]:
        """Poll until an event matching pred arrived."""
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events:
                if pred(ev):
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching event; got {self.events}")
            await self.poll(min(left, 5.0))
