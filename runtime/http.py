"""Runtime HTTP layer: the one asyncio HTTP/1.1 server and client of the runtime.

Used by the blob store, the gateway and the monitor endpoint (`runtime.monitor.http`), and by every HTTP
client in the runtime (`ttgen status`, the client library's login lookup). Deliberately small: requests carry
a `Content-Length` body (chunked uploads are refused with 411), the head and the body have hard limits (431 /
413 before any body byte is buffered), every read has a timeout, and connections are kept alive between
requests unless the server is one-shot. A handler returns a `Response`; an exception in a handler is logged
and answered with 500, and never affects other connections. The client caps the response it buffers and
decodes chunked bodies. `parse_multipart` decodes `multipart/form-data` bodies (the msfs upload format).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger("ttgen.http")

MAX_HEAD = 8192
MAX_BODY = 1 << 20
IDLE_TIMEOUT = 30.0
BODY_TIMEOUT = 30.0
MAX_RESPONSE = 64 << 20  # what the client buffers at most

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class MalformedRequest(ValueError):
    """A request (or a part of its body) that cannot be parsed."""


@dataclass
class Request:
    """One parsed HTTP request."""

    method: str
    target: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    peer: str

    def json(self) -> Any:
        """The body as JSON (MalformedRequest if it is not)."""
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise MalformedRequest(f"body is not JSON: {exc}") from None


@dataclass
class Response:
    """What a handler answers."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    close: bool = False  # close the connection after this answer, even if the client would keep it


def json_response(doc: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON response."""
    body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return Response(status, body, "application/json; charset=utf-8", dict(headers or {}))


Handler = Callable[[Request], Awaitable[Response]]
# (status, reason) -> the answer to a request refused before its handler runs
Refusal = Callable[[int, str], Response]


class HttpServer:
    """Serves one handler on a port (0: any free port).

    `refusal` shapes the answers to requests refused before the handler runs (400, 408, 411, 413, 431; plain
    text by default), `too_large` the 413 alone. With `keep_alive=False` every connection carries one request
    and is closed after the answer; a request that times out (408) or ends early (400) is then answered too,
    since no idle keep-alive wait can be mistaken for it.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_head: int = MAX_HEAD,
        max_body: int = MAX_BODY,
        idle_timeout: float = IDLE_TIMEOUT,
        name: str = "http",
        too_large: Callable[[int, int], Response] | None = None,
        refusal: Refusal | None = None,
        keep_alive: bool = True,
    ) -> None:
        self.handler = handler
        self.host, self._wanted_port = host, port
        self.max_head, self.max_body, self.idle_timeout = max_head, max_body, idle_timeout
        self.name = name
        self.too_large = too_large  # (declared length, limit) -> the 413 answer; a generic one by default
        self.refusal: Refusal = refusal or _plain
        self._shaped_refusals = refusal is not None
        self.keep_alive = keep_alive
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.requests = 0
        self.errors = 0

    @property
    def port(self) -> int:
        """The bound port."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError(f"{self.name} is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and start accepting."""
        self._server = await asyncio.start_server(
            self._connection, self.host, self._wanted_port, limit=self.max_head + 1024
        )

    async def stop(self, drain_timeout: float = 1.0) -> None:
        """Stop accepting; give running requests `drain_timeout`, then cancel them."""
        if self._server is not None:
            self._server.close()
        if self._tasks:
            _done, pending = await asyncio.wait(list(self._tasks), timeout=drain_timeout)
            for task in pending:
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        peer_info = writer.get_extra_info("peername")
        peer = f"{peer_info[0]}:{peer_info[1]}" if isinstance(peer_info, tuple) else "?"
        try:
            while True:
                request, error = await self._read(reader, peer)
                if request is None:
                    if error is not None:
                        await _write(writer, error, close=True)
                    return
                self.requests += 1
                try:
                    response = await self.handler(request)
                except MalformedRequest as exc:
                    response = json_response({"error_code": 1, "error_msg": str(exc)}, 400)
                except Exception:
                    self.errors += 1
                    log.exception("%s: handler failed for %s %s", self.name, request.method, request.path)
                    response = json_response({"error_code": 99, "error_msg": "internal error"}, 500)
                close = (
                    not self.keep_alive
                    or response.close
                    or request.headers.get("connection", "").lower() == "close"
                )
                if not await _write(writer, response, close=close) or close:
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    async def _read(self, reader: asyncio.StreamReader, peer: str) -> tuple[Request | None, Response | None]:
        refuse = self.refusal
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.idle_timeout)
        except asyncio.LimitOverrunError:
            return None, refuse(431, "request head too large")
        except TimeoutError:
            return None, None if self.keep_alive else refuse(408, "request timeout")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None, None if self.keep_alive else refuse(400, "incomplete request")
        if len(head) > self.max_head:
            return None, refuse(431, "request head too large")
        try:
            method, target, headers = _parse_head(head)
        except MalformedRequest as exc:
            return None, refuse(400, str(exc))
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return None, refuse(411, "a Content-Length is required")
        length_text = headers.get("content-length", "0").strip() or "0"
        if not length_text.isdigit():
            return None, refuse(400, "bad Content-Length")
        length = int(length_text)
        if length > self.max_body:
            if self.too_large is not None:
                return None, self.too_large(length, self.max_body)
            reason = f"body of {length} bytes exceeds {self.max_body}"
            if self._shaped_refusals:
                return None, refuse(413, reason)
            return None, json_response({"error_code": 413, "error_msg": reason}, 413)
        try:
            body = await asyncio.wait_for(reader.readexactly(length), BODY_TIMEOUT) if length else b""
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            return None, None
        url = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        return Request(method, target, unquote(url.path), query, headers, body, peer), None


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise MalformedRequest("undecodable head") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0].isalpha():
        raise MalformedRequest("malformed request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise MalformedRequest("malformed header line")
        headers[name.lower()] = value.strip()
    return parts[0].upper(), parts[1], headers


def _plain(status: int, text: str) -> Response:
    return Response(status, (text + "\n").encode("utf-8"))


async def _write(writer: asyncio.StreamWriter, response: Response, *, close: bool) -> bool:
    lines = [
        f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Error')}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        f"Connection: {'close' if close else 'keep-alive'}",
    ]
    lines += [f"{k}: {v}" for k, v in response.headers.items()]
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body)
        await writer.drain()
    except (ConnectionError, OSError):
        return False
    return True


# multipart/form-data ---------------------------------------------------------------------------------------
_BOUNDARY = re.compile(r'boundary=(?:"([^"]{1,70})"|([^;\s]{1,70}))', re.IGNORECASE)
_DISPOSITION = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Part:
    """One part of a multipart body."""

    name: str
    filename: str | None
    content_type: str
    data: bytes


def parse_multipart(content_type: str, body: bytes, max_parts: int = 16) -> list[Part]:
    """Decode a `multipart/form-data` body; MalformedRequest on any structural problem."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise MalformedRequest("expected multipart/form-data")
    m = _BOUNDARY.search(content_type)
    if m is None:
        raise MalformedRequest("multipart body without a boundary")
    delimiter = b"--" + (m.group(1) or m.group(2)).encode("latin-1")
    if not body.startswith(delimiter):
        raise MalformedRequest("multipart body does not start with its boundary")
    parts: list[Part] = []
    pos = len(delimiter)
    while True:
        if body[pos : pos + 2] == b"--":
            return parts
        if body[pos : pos + 2] != b"\r\n":
            raise MalformedRequest("malformed multipart boundary line")
        head_end = body.find(b"\r\n\r\n", pos + 2)
        if head_end < 0:
            raise MalformedRequest("multipart part without a header end")
        headers = _part_headers(body[pos + 2 : head_end])
        end = body.find(b"\r\n" + delimiter, head_end + 4)
        if end < 0:
            raise MalformedRequest("multipart part without a closing boundary")
        disposition = dict(_DISPOSITION.findall(headers.get("content-disposition", "")))
        if "name" not in disposition:
            raise MalformedRequest("multipart part without a name")
        parts.append(
            Part(
                disposition["name"],
                disposition.get("filename"),
                headers.get("content-type", "application/octet-stream"),
                body[head_end + 4 : end],
            )
        )
        if len(parts) > max_parts:
            raise MalformedRequest(f"more than {max_parts} parts")
        pos = end + 2 + len(delimiter)


def _part_headers(raw: bytes) -> dict[str, str]:
    out = {}
    for line in raw.decode("utf-8", "replace").split("\r\n"):
        name, sep, value = line.partition(":")
        if not sep:
            raise MalformedRequest("malformed multipart header")
        out[name.strip().lower()] = value.strip()
    return out


def encode_multipart(
    files: list[tuple[str, str, bytes]], boundary: str = "ttgen-boundary-7d1f"
) -> tuple[str, bytes]:
    """(content type, body) of a multipart upload of (field name, file name, bytes) entries."""
    out = bytearray()
    for name, filename, data in files:
        out += f"--{boundary}\r\n".encode()
        out += f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'.encode()
        out += b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", bytes(out)


# client ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClientResponse:
    """What `http_request` returns."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body.decode("utf-8"))


async def http_request(
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
    """One HTTP/1.1 request on a fresh connection (`Connection: close`).

    The whole exchange is bounded by `timeout` (TimeoutError); connection failures raise OSError; an answer
    that is not HTTP, or longer than `max_response` bytes, raises MalformedRequest. Chunked bodies are
    decoded.
    """

    async def go() -> ClientResponse:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
            hdrs = dict(headers or {})
            if body or method in ("POST", "PUT"):
                hdrs.setdefault("Content-Length", str(len(body)))
            lines += [f"{k}: {v}" for k, v in hdrs.items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            raw = await reader.read(max_response + 1)
            while len(raw) <= max_response and (more := await reader.read(max_response + 1 - len(raw))):
                raw += more
        finally:
            writer.close()
        if len(raw) > max_response:
            raise MalformedRequest(f"response from {host}:{port} exceeds {max_response} bytes")
        head, _, payload = raw.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = status_line.split(" ")
        if len(parts) < 2 or not parts[1].isdigit():
            raise MalformedRequest(f"not an HTTP response from {host}:{port}")
        out_headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            out_headers[name.strip().lower()] = value.strip()
        if "chunked" in out_headers.get("transfer-encoding", "").lower():
            payload = _dechunk(payload)
        return ClientResponse(int(parts[1]), out_headers, payload)

    return await asyncio.wait_for(go(), timeout)


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0] or b"0", 16)
        except ValueError:
            raise MalformedRequest("malformed chunked body") from None
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)


async def http_get(host: str, port: int, path: str, *, timeout: float = 3.0) -> tuple[int, bytes]:
    """A GET (for `ttgen status` and tests): (status code, body); ValueError if the answer is not HTTP."""
    response = await http_request(host, port, "GET", path, timeout=timeout)
    return response.status, response.body


def post_json(
    host: str,
    port: int,
    path: str,
    doc: Any,
    headers: Mapping[str, str] | None = None,
    *,
    timeout: float = 10.0,
) -> Awaitable[ClientResponse]:
    """POST a JSON document."""
    body = json.dumps(doc).encode("utf-8")
    hdrs = {"Content-Type": "application/json", **dict(headers or {})}
    return http_request(host, port, "POST", path, body, hdrs, timeout=timeout)
