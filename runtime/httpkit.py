"""Runtime HTTP layer: the runtime's HTTP servers and clients, on aiohttp.

aiohttp speaks HTTP/1.1 and WebSocket (parsing, keep-alive, chunked bodies, multipart); this module holds what
the runtime adds around it, the same for every listener (gateway, blob store, login lookup, monitor):

- `HttpServer`: one aiohttp application on a port with the runtime's limits: request line and each header line
  at most `max_line` bytes and at most `max_headers` header lines (a longer head is answered 400 and the
  connection closed), a connection that sends no complete head within `idle_timeout` is closed, and so is an
  idle keep-alive connection; `stop` gives running requests a drain time, then cancels them.
- `read_body`: a request body read with a size cap decided before any byte is buffered (`TooLarge`) and a time
  limit (`SlowBody`); bodies are never read by aiohttp on its own.
- `Request` / `Response` / `json_response`: a small, fully read request and a buffered answer, for handlers
  that need no streaming (the JSON APIs); `serve_simple` adapts such a handler to aiohttp, answering an
  exception in the handler with 500 (logged) without affecting other connections.
- `fetch`, `http_get`: a client request bounded in time and in the size of the answer it buffers.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

log = logging.getLogger("ttgen.http")

MAX_LINE = 8190
MAX_HEADERS = 32
MAX_HEAD = 8192
IDLE_TIMEOUT = 30.0
BODY_TIMEOUT = 30.0
MAX_BODY = 1 << 20
MAX_RESPONSE = 64 << 20  # what the client buffers at most
LINGER = 2.0  # after refusing a body: how long its rest is read and dropped before the connection closes

# aiohttp logs every refused request head (a malformed or oversized one) with a traceback; that is noise a
# hostile client could turn into log volume: refusals are counted by the listeners, not logged one by one.
logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)


class MalformedRequest(ValueError):
    """A request (or a part of its body) that cannot be parsed."""


class TooLarge(MalformedRequest):
    """A body above its limit (`length` is the declared or the read size)."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"body of {length} bytes exceeds {limit}")
        self.length, self.limit = length, limit


class SlowBody(MalformedRequest):
    """A body that did not arrive within its time limit."""


@dataclass
class Request:
    """One fully read HTTP request."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    peer: str  # "host:port"

    def json(self) -> Any:
        """The body as JSON (MalformedRequest if it is not)."""
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise MalformedRequest(f"body is not JSON: {type(exc).__name__}: {exc}"[:200]) from None


@dataclass
class Response:
    """A buffered answer."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    close: bool = False  # close the connection after this answer
    doc: Any = None  # a json_response's document: the body is made from it when it is sent over HTTP (a
    # WebSocket reply serializes the document into its own frame instead)

    def to_aiohttp(self) -> web.Response:
        """The aiohttp answer."""
        ctype, _, params = self.content_type.partition(";")
        charset = None
        if "charset=" in params:
            charset = params.split("charset=", 1)[1].strip()
        body = self.body if self.doc is None or self.body else json_bytes(self.doc)
        rsp = web.Response(
            status=self.status,
            body=body,
            content_type=ctype.strip(),
            charset=charset,
            headers=self.headers,
        )
        if self.close:
            rsp.force_close()
        return rsp


def json_bytes(doc: Any) -> bytes:
    """Compact, key-sorted JSON."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def json_response(doc: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON answer (serialized when it is sent)."""
    return Response(status, b"", "application/json; charset=utf-8", dict(headers or {}), doc=doc)


def peer_of(request: web.BaseRequest) -> str:
    """`host:port` of the client."""
    transport = request.transport
    info = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(info, tuple) and len(info) >= 2:
        return f"{info[0]}:{info[1]}"
    return "?:0"


async def read_body(request: web.BaseRequest, limit: int, timeout: float | None = None) -> bytes:
    """The whole body, refused above `limit` bytes (TooLarge: from the declared length before reading, or as
    soon as more arrived) or when it does not arrive within `timeout` (SlowBody)."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise TooLarge(declared, limit)
    if not request.body_exists:
        return b""
    out = bytearray()
    timeout = BODY_TIMEOUT if timeout is None else timeout
    try:
        async with asyncio.timeout(timeout):  # no task per request, unlike wait_for
            while chunk := await request.content.readany():
                out.extend(chunk)
                if len(out) > limit:
                    raise TooLarge(len(out), limit)
    except TimeoutError:
        raise SlowBody(f"the body did not arrive within {timeout:g} s") from None
    except aiohttp.ClientPayloadError as exc:  # chunked encoding broken, connection lost mid-body
        raise MalformedRequest(f"bad body: {exc}") from None
    return bytes(out)


Handler = Callable[[Request], Awaitable[Response]]
Refusal = Callable[[int, str], Response]


def head_size(request: web.BaseRequest) -> int:
    """The size of the request's head as received (request line and header lines, with their line ends)."""
    line = len(request.method) + len(request.raw_path) + 12
    return line + sum(len(k) + len(v) + 4 for k, v in request.raw_headers) + 2


def serve_simple(
    handler: Handler,
    *,
    max_body: int,
    name: str,
    refusal: Refusal | None = None,
    max_head: int | None = None,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An aiohttp handler that reads the body (`max_body` cap, refused with `refusal(413, ...)`, a JSON
    `{error_code: 413}` by default), builds a `Request` and answers the handler's `Response`. With
    `max_head`, a head above that size (which aiohttp's per-line limits let through) is refused with
    `refusal(431, ...)`."""

    async def handle(request: web.Request) -> web.StreamResponse:
        if max_head is not None and head_size(request) > max_head:
            rsp = (refusal or _json_refusal)(431, "request head too large")
            rsp.close = True
            return rsp.to_aiohttp()
        try:
            body = await read_body(request, max_body)
        except TooLarge as exc:
            rsp = (refusal or _json_refusal)(413, str(exc))
            rsp.close = True
            return rsp.to_aiohttp()
        except MalformedRequest as exc:
            rsp = (refusal or _json_refusal)(400 if not isinstance(exc, SlowBody) else 408, str(exc))
            rsp.close = True
            return rsp.to_aiohttp()
        req = Request(
            request.method,
            request.path,
            {k: request.query[k] for k in request.query},
            {k.lower(): v for k, v in request.headers.items()},
            body,
            peer_of(request),
        )
        try:
            rsp = await handler(req)
        except MalformedRequest as exc:
            rsp = json_response({"error_code": 1, "error_msg": str(exc)}, 400)
        except Exception:
            log.exception("%s: handler failed for %s %s", name, request.method, request.path)
            rsp = json_response({"error_code": 99, "error_msg": "internal error"}, 500)
        return rsp.to_aiohttp()

    return handle


def _json_refusal(status: int, reason: str) -> Response:
    return json_response({"error_code": status, "error_msg": reason}, status)


def _head_limit(max_head: int) -> Any:
    """A middleware refusing a request whose whole head is above `max_head` bytes (431, connection closed)."""

    @web.middleware
    async def limit(request: web.Request, handler: Any) -> web.StreamResponse:
        if head_size(request) > max_head:
            rsp = json_response({"error_code": 1, "error_msg": "request head too large"}, 431)
            rsp.close = True
            return rsp.to_aiohttp()
        response: web.StreamResponse = await handler(request)
        return response

    return limit


class HttpServer:
    """An aiohttp application on one port (0: any free port) with the runtime's limits: `max_line` per line,
    `max_headers` lines and `max_head` bytes for the whole head (None: the per-line limits alone)."""

    def __init__(
        self,
        app: web.Application,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_line: int = MAX_LINE,
        max_headers: int = MAX_HEADERS,
        idle_timeout: float = IDLE_TIMEOUT,
        name: str = "http",
        max_head: int | None = MAX_HEAD,
    ) -> None:
        if max_head is not None:
            app.middlewares.append(_head_limit(max_head))
        self.app = app
        self.host, self._wanted_port = host, port
        self.max_line, self.max_headers, self.idle_timeout = max_line, max_headers, idle_timeout
        self.name = name
        self._runner: web.AppRunner | None = None
        self._port = 0

    @property
    def port(self) -> int:
        """The bound port."""
        if self._runner is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._port

    async def start(self) -> None:
        """Bind and start accepting."""
        runner = web.AppRunner(
            self.app,
            handle_signals=False,
            access_log=None,
            keepalive_timeout=self.idle_timeout,
            max_line_size=self.max_line,
            max_field_size=self.max_line,
            max_headers=self.max_headers,
            lingering_time=LINGER,
            shutdown_timeout=1.0,
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._wanted_port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        addresses = runner.addresses
        self._port = int(addresses[0][1]) if addresses else self._wanted_port

    async def stop(self, drain_timeout: float = 1.0) -> None:
        """Stop accepting; give running requests `drain_timeout`, then cancel them."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(runner.cleanup(), drain_timeout + 2.0)


# client ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClientResponse:
    """What `fetch` returns."""

    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body.decode("utf-8"))


async def fetch(
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    *,
    timeout: float = 10.0,
    max_response: int = MAX_RESPONSE,
) -> ClientResponse:
    """One HTTP/1.1 request on a fresh connection.

    The whole exchange is bounded by `timeout` (TimeoutError); connection failures raise OSError; an answer
    that is not HTTP, or longer than `max_response` bytes, raises MalformedRequest.
    """
    url = f"http://{host}:{port}{path}"
    # aiohttp streams a large body from a file-like object rather than holding the loop on one write.
    data: bytes | io.BytesIO | None = io.BytesIO(body) if len(body) > 256 * 1024 else body
    if not body and method not in ("POST", "PUT"):
        data = None
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    try:
        async with (
            aiohttp.ClientSession(timeout=client_timeout, auto_decompress=False) as session,
            session.request(
                method,
                url,
                data=data,
                headers=dict(headers or {}),
                allow_redirects=False,
                skip_auto_headers=("Content-Type",),
            ) as rsp,
        ):
            out = bytearray()
            while chunk := await rsp.content.read(65536):
                out += chunk
                if len(out) > max_response:
                    raise MalformedRequest(f"response from {host}:{port} exceeds {max_response} bytes")
            return ClientResponse(rsp.status, {k.lower(): v for k, v in rsp.headers.items()}, bytes(out))
    except TimeoutError:
        raise
    except aiohttp.ClientConnectorError as exc:
        raise ConnectionRefusedError(str(exc)) from None
    except (aiohttp.ClientResponseError, aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
        raise MalformedRequest(f"bad answer from {host}:{port}: {exc}") from None
    except aiohttp.ClientError as exc:
        raise OSError(f"{host}:{port}: {exc}") from None


async def http_get(host: str, port: int, path: str, *, timeout: float = 3.0) -> tuple[int, bytes]:
    """A GET (`ttgen status`, tests): (status code, body); MalformedRequest if the answer is not HTTP."""
    response = await fetch(host, port, "GET", path, timeout=timeout)
    return response.status, response.body
