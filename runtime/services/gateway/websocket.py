"""Runtime services layer (gateway): the WebSocket endpoint `GET /api/ws` (docs/web-api.md, "WebSocket").

One socket per session reads the session's event queue (the one `/api/poll` reads) and carries the client
API's commands as JSON frames `{op, id, ...}`, answered `{op: "reply", id, error_code, error_msg, ...}` by
the same routes as HTTP (`ClientApi.dispatch`) in arrival order while the socket keeps being read: text sends
are pipelined (their store requests go to biz in order, each answered when biz answers it, at most
MAX_IN_FLIGHT at once), any other command waits for them and runs alone. Events are sent once per socket and
stay queued until the client acks them, so a client that reconnects with `since` gets everything it missed
(resume).

Limits: a frame above `ws_max_frame` closes the socket (1009, aiohttp), binary frames close it (1003), no
authentication within AUTH_TIMEOUT closes it (4001), malformed frames are answered with error 1 and counted
(MAX_BAD closes with 4029), frames count against the client address's rate like HTTP requests, at most
MAX_QUEUED commands wait, and a socket that stops reading (a send blocked for SEND_TIMEOUT) is dropped (4008).
aiohttp pings every HEARTBEAT seconds and closes a socket that does not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from runtime.httpkit import json_bytes, peer_of
from runtime.services.gateway.client_api import WS_OPS, error
from runtime.services.gateway.codes import BAD_REQUEST, INTERNAL, NOT_LOGGED_IN, RATE_LIMITED
from runtime.services.gateway.sessions import Session

if TYPE_CHECKING:
    from runtime.services.gateway.service import GatewayService

log = logging.getLogger("ttgen.gateway")

AUTH_TIMEOUT = 10.0
SEND_TIMEOUT = 10.0
HEARTBEAT = 20.0
MAX_BAD = 20
MAX_QUEUED = 64
MAX_ID = 64
MAX_BATCH = 100  # events per frame
MAX_IN_FLIGHT = 32  # pipelined sends per socket
DRAIN_TIMEOUT = 15.0  # at most this long for a closed socket's queued commands

CLOSE_LOGOUT, CLOSE_AUTH, CLOSE_ENDED, CLOSE_REPLACED, CLOSE_SLOW, CLOSE_ABUSE = (
    1000,
    4001,
    4002,
    4003,
    4008,
    4029,
)
_OPS = frozenset(WS_OPS)


class _Bad(ValueError):
    """A frame that is not a command (answered with error 1)."""

    def __init__(self, message: str, frame_id: Any = None) -> None:
        super().__init__(message)
        self.frame_id = frame_id


def parse_frame(text: str) -> tuple[Any, str, dict[str, Any]]:
    """(id, op, fields) of a command frame; _Bad if it is not one."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise _Bad("the frame is not JSON") from None
    if not isinstance(doc, dict):
        raise _Bad("the frame must be a JSON object")
    frame_id = doc.pop("id", None)
    if frame_id is not None and (
        isinstance(frame_id, bool)
        or not isinstance(frame_id, (int, str))
        or (isinstance(frame_id, str) and len(frame_id) > MAX_ID)
        or (isinstance(frame_id, int) and not -(2**53) < frame_id < 2**53)
    ):
        raise _Bad(f"id must be a string of at most {MAX_ID} characters or an integer")
    op = doc.pop("op", None)
    if not isinstance(op, str):
        raise _Bad("op is required", frame_id)
    return frame_id, op, doc


class Conn:
    """One authenticated socket."""

    def __init__(
        self, ws: web.WebSocketResponse, session: Session, since: int, peer: str, transport: Any
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.session = session
        self.sent = since
        self.peer = peer
        self.lock = asyncio.Lock()
        self.queue: asyncio.Queue[tuple[Any, str, dict[str, Any]]] = asyncio.Queue(MAX_QUEUED)
        self.bad = 0
        self.busy = False  # a command other than a send is being carried out
        self.sends: set[asyncio.Task[None]] = set()  # pipelined sends in flight
        self.window = asyncio.Semaphore(MAX_IN_FLIGHT)

    def send_done(self, task: asyncio.Task[None]) -> None:
        """A pipelined send finished."""
        self.sends.discard(task)
        self.window.release()
        self.close_code = CLOSE_ENDED

    async def send(self, doc: dict[str, Any]) -> bool:
        """One frame; False (and the socket dropped) if the client does not read it in time."""
        text = json.dumps(doc, separators=(",", ":"))
        if self.ws.closed:
            return False
        try:
            async with self.lock, asyncio.timeout(SEND_TIMEOUT):
                await self.ws.send_str(text)
        except TimeoutError:
            self.drop()
            return False
        except (ConnectionError, RuntimeError):
            return False
        return True

    def drop(self) -> None:
        """A client that stopped reading: no close frame can reach it, so the connection is cut (what the
        kernel and aiohttp buffered for it is freed with it)."""
        self.close_code = CLOSE_SLOW
        if self.transport is not None:
            self.transport.abort()

    async def close(self, code: int, message: str = "") -> None:
        """Close with a code (at most 1 s for the handshake, then the connection is cut)."""
        ws = self.ws
        if ws.closed:
            return
        try:
            await asyncio.wait_for(ws.close(code=code, message=message.encode()), 1.0)
        except (TimeoutError, ConnectionError, RuntimeError):
            if self.transport is not None:
                self.transport.abort()


class WebSockets:
    """`GET /api/ws`."""

    def __init__(self, svc: GatewayService, max_frame: int) -> None:
        self.svc = svc
        self.max_frame = max_frame
        self.conns: set[Conn] = set()
        self._sockets: set[web.WebSocketResponse] = set()
        self.g_sockets = svc.metrics.gauge("gateway_websockets", "open WebSocket connections")
        self.m_bad = svc.metrics.counter("gateway_ws_bad_frames_total", "WebSocket frames refused")

    async def close_all(self) -> None:
        """At stop: close every socket."""
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(code=1001, message=b"gateway stopping"), 1.0)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Upgrade, authenticate, then serve the socket until it closes."""
        from runtime.services.gateway.service import rate_limited

        peer = peer_of(request)
        if not self.svc.rate_ok(peer):
            return rate_limited().to_aiohttp()
        ws = web.WebSocketResponse(
            heartbeat=HEARTBEAT, max_msg_size=self.max_frame, autoping=True, compress=False, timeout=1.0
        )
        if not ws.can_prepare(request).ok:
            return error(BAD_REQUEST, "a WebSocket upgrade request is expected", 400).to_aiohttp()
        await ws.prepare(request)
        self._sockets.add(ws)
        self.g_sockets.set(len(self._sockets))
        try:
            await self._serve(ws, request, peer)
        finally:
            self._sockets.discard(ws)
            self.g_sockets.set(len(self._sockets))
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 1.0)
        return ws

    async def _authenticate(
        self, ws: web.WebSocketResponse, request: web.Request
    ) -> tuple[Session | None, int, Any]:
        """(session, since, auth frame id) from the upgrade request or the first frame."""
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else request.query.get("token", "")
        since_text = request.query.get("since", "0")
        frame_id: Any = None
        if not token:
            try:
                msg = await ws.receive(timeout=AUTH_TIMEOUT)
            except TimeoutError:
                await ws.close(code=CLOSE_AUTH, message=b"no auth frame")
                return None, 0, None
            if msg.type != WSMsgType.TEXT:
                return None, 0, None
            try:
                frame_id, op, doc = parse_frame(msg.data)
            except _Bad as exc:
                frame_id, op, doc = exc.frame_id, "", {}
            if op != "auth" or not isinstance(doc.get("token"), str):
                first = 'the first frame must be {"op": "auth", "token": ...}'
                await self._refuse(ws, frame_id, BAD_REQUEST, first)
                return None, 0, None
            token = doc["token"]
            since_text = str(doc.get("since", 0))
        if not (since_text.isascii() and since_text.isdigit() and len(since_text) <= 15):
            await self._refuse(ws, frame_id, BAD_REQUEST, "since must be a sequence number")
            return None, 0, None
        session = self.svc.sessions.get(token[:256])
        if session is None:
            why = "not logged in (missing, unknown or expired token)"
            await self._refuse(ws, frame_id, NOT_LOGGED_IN, why)
            return None, 0, None
        return session, int(since_text), frame_id

    async def _refuse(self, ws: web.WebSocketResponse, frame_id: Any, code: int, message: str) -> None:
        with contextlib.suppress(Exception):
            doc = {"op": "reply", "id": frame_id, "error_code": code, "error_msg": message}
            await asyncio.wait_for(ws.send_str(json_bytes(doc).decode()), 1.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(code=CLOSE_AUTH, message=b"authentication failed"), 1.0)

    async def _serve(self, ws: web.WebSocketResponse, request: web.Request, peer: str) -> None:
        session, since, auth_id = await self._authenticate(ws, request)
        if session is None:
            return
        conn = Conn(ws, session, since, peer, request.transport)
        old = session.socket
        session.socket = conn
        if isinstance(old, Conn):
            old.close_code = CLOSE_REPLACED
            asyncio.get_running_loop().create_task(old.close(CLOSE_REPLACED, "replaced by a newer socket"))
        session.ack(since)
        self.conns.add(conn)
        loop = asyncio.get_running_loop()
        sender = loop.create_task(self._sender(conn), name="ws-sender")
        worker = loop.create_task(self._worker(conn), name="ws-worker")
        try:
            ok = await conn.send(
                {
                    "op": "reply",
                    "id": auth_id,
                    "error_code": 0,
                    "error_msg": "",
                    "user_id": session.user_id,
                    "last_seq": since,
                }
            )
            if ok:
                await self._reader(conn)
        finally:
            sender.cancel()
            # Commands the client sent before it went away are carried out (a send is stored and delivered
            # to its recipients, as an HTTP request is after its client disconnects); their replies are lost.
            if conn.busy or conn.sends or not conn.queue.empty():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._drained(conn), DRAIN_TIMEOUT)
            worker.cancel()
            for task in list(conn.sends):
                task.cancel()
            for task in (sender, worker, *conn.sends):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self.conns.discard(conn)
            if session.socket is conn:
                session.socket = None
                session.last_seen = time.monotonic()

    async def _reader(self, conn: Conn) -> None:
        ws, session = conn.ws, conn.session
        while not ws.closed:
            msg = await ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            if msg.type == WSMsgType.BINARY:
                self.m_bad.inc()
                await conn.close(1003, "text frames only")
                return
            if msg.type != WSMsgType.TEXT:
                continue
            session.last_seen = time.monotonic()
            if not self.svc.rate_ok(conn.peer):
                if not await self._bad(conn, None, 429, "too many requests"):
                    return
                continue
            try:
                frame_id, op, doc = parse_frame(msg.data)
                if op not in _OPS:
                    raise _Bad(f"unknown op {op[:64]!r}", frame_id)
            except _Bad as exc:
                if not await self._bad(conn, exc.frame_id, BAD_REQUEST, str(exc)):
                    return
                continue
            if op == "ack":  # cheap and order-free: answered here
                seq = doc.get("seq")
                if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= 2**53:
                    if not await self._bad(conn, frame_id, 1, "seq must be a sequence number"):
                        return
                    continue
                session.ack(seq)
                if frame_id is not None:
                    await conn.send({"op": "reply", "id": frame_id, "error_code": 0, "error_msg": ""})
                continue
            try:
                conn.queue.put_nowait((frame_id, op, doc))
            except asyncio.QueueFull:
                await conn.send(
                    {
                        "op": "reply",
                        "id": frame_id,
                        "error_code": RATE_LIMITED,
                        "error_msg": f"more than {MAX_QUEUED} commands waiting",
                    }
                )

    async def _bad(self, conn: Conn, frame_id: Any, code: int, message: str) -> bool:
        """Answer a refused frame; False once the socket has had too many (it is closed)."""
        self.m_bad.inc()
        conn.bad += 1
        if conn.bad > MAX_BAD:
            await conn.close(CLOSE_ABUSE, "too many bad frames")
            return False
        return await conn.send({"op": "error", "id": frame_id, "error_code": code, "error_msg": message})

    async def _drained(self, conn: Conn) -> None:
        while conn.busy or conn.sends or not conn.queue.empty():
            await asyncio.sleep(0.01)

    async def _worker(self, conn: Conn) -> None:
        """Commands in arrival order. Text sends are pipelined: each one's store request is written to biz
        before the next command starts (so they are stored in order) but its answer is not awaited, as msg
        does for a TCP client; any other command first waits for the sends before it."""
        loop = asyncio.get_running_loop()
        while True:
            frame_id, op, doc = await conn.queue.get()
            if conn.session.closed:
                continue
            if op == "send" and "file" not in doc:
                await conn.window.acquire()
                task = loop.create_task(self._run(conn, frame_id, op, doc))
                conn.sends.add(task)
                task.add_done_callback(conn.send_done)
                await asyncio.sleep(0)  # the task writes its store request now, before the next command
                continue
            if conn.sends:
                await asyncio.wait(list(conn.sends))
            conn.busy = True
            try:
                await self._run(conn, frame_id, op, doc)
            finally:
                conn.busy = False

    async def _run(self, conn: Conn, frame_id: Any, op: str, doc: dict[str, Any]) -> None:
        """One command and its reply."""
        try:
            response = await self.svc.client_api.dispatch(op, doc, conn.session, conn.peer)
        except Exception:  # a bug in one command must not stop the socket's others
            log.exception("gateway: WebSocket command %s failed", op)
            response = error(INTERNAL, "internal error", 500)
        answer = response.doc if isinstance(response.doc, dict) else {"error_code": INTERNAL, "error_msg": ""}
        await conn.send({**answer, "op": "reply", "id": frame_id})
        if op == "logout" and answer.get("error_code") == 0:
            conn.close_code = CLOSE_LOGOUT

    async def _sender(self, conn: Conn) -> None:
        """The session's events, each once, until the session ends (then the socket is closed)."""
        session = conn.session
        while True:
            events = (await session.next_events(conn.sent))[:MAX_BATCH]
            if events:
                last = events[-1]["seq"]
                gap = session.take_gap()
                if not await conn.send({"op": "events", "events": events, "last_seq": last, "gap": gap}):
                    return
                conn.sent = last
                continue
            if session.closed:
                await asyncio.sleep(0.05)  # let the reply of a logout go first
                await conn.close(conn.close_code, "session ended")
                return
