"""Integration helpers for gateway tests: a cluster with the gateway, and a small long-poll HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import aiohttp

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


class WsClient:
    """A WebSocket client of the gateway (`GET /api/ws`): replies matched by id, events collected."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session, self.ws = session, ws
        self.events: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.last_seq = 0
        self._replies: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self._next = 0
        self._changed = asyncio.Event()
        self.closed = asyncio.get_running_loop().create_future()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(
        cls, addr: tuple[str, int], token: str, *, since: int = 0, in_query: bool = False
    ) -> WsClient:
        """Connect and authenticate (first frame, or `?token=` with `in_query`); asserts success."""
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        query = f"?token={token}&since={since}" if in_query else ""
        ws = await session.ws_connect(f"http://{addr[0]}:{addr[1]}/api/ws{query}", autoping=True)
        client = cls(session, ws)
        if in_query:
            return client
        reply = await client.request("auth", token=token, since=since)
        assert reply["error_code"] == 0, reply
        return client

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                doc = json.loads(msg.data)
                if doc.get("op") == "events":
                    self.events.extend(doc["events"])
                    self.last_seq = doc["last_seq"]
                elif doc.get("op") == "reply" and doc.get("id") in self._replies:
                    self._replies.pop(doc["id"]).set_result(doc)
                elif doc.get("op") == "error":
                    self.errors.append(doc)
                self._changed.set()
        finally:
            if not self.closed.done():
                self.closed.set_result(self.ws.close_code)
            self._changed.set()

    async def request(self, op: str, timeout: float = 8.0, **fields: Any) -> dict[str, Any]:
        """A command; its reply."""
        self._next += 1
        rid = f"r{self._next}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[rid] = future
        await self.ws.send_str(json.dumps({"op": op, "id": rid, **fields}))
        return await asyncio.wait_for(future, timeout)

    async def wait_for(self, pred: Any, timeout: float = 8.0) -> dict[str, Any]:
        """Until an event matching pred arrived."""
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events:
                if pred(ev):
                    return ev
            left = deadline - time.monotonic()
            if left <= 0 or self.closed.done():
                raise TimeoutError(f"no matching event; got {self.events}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def close_code(self, timeout: float = 8.0) -> int | None:
        """Wait until the server closed the socket; its close code."""
        code: int | None = await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        return code

    async def close(self) -> None:
        """Close the socket and the client session."""
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader
        await self.session.close()
