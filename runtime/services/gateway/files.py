"""Runtime services layer (gateway): files and images for web clients, through the blob store.

- `POST /api/upload` (session token; `multipart/form-data` with one part `file`): the bytes go to the blob
  store (runtime.services.blobs) under the cluster's key; the answer is `{file: {path, name, size, mime}}`.
- `/api/send` with `file: {...}` stores a message whose text is `ttfile:` + that object as compact JSON
  (`file_text`); events and history pages of such messages carry `file` with a download `url` (`file_event`).
- `GET /api/blob/<path>?msg_id=&from=&to=&session_type=`: the gateway asks biz for that message as the
  requesting user (biz only answers parties: the two users, or the group's members), checks that it carries
  the path, then fetches the bytes from the blob store and answers them (images inline, anything else as an
  attachment, never sniffed, sandboxed).

The browser never talks to the blob store, so its uploads and downloads are authorized by the session alone.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import BodyPartReader, web

from runtime.httpkit import (
    BODY_TIMEOUT,
    MalformedRequest,
    Response,
    fetch,
    json_response,
    peer_of,
)
from runtime.services.blobs import _extension
from runtime.services.gateway.codes import (
    ACCESS_DENIED,
    BAD_REQUEST,
    NOT_FOUND,
    NOT_LOGGED_IN,
    TOO_LARGE,
    UNAVAILABLE,
)

if TYPE_CHECKING:
    from runtime.services.gateway.service import GatewayService

MARKER = "ttfile:"
MAX_NAME = 255
MAX_FILE = 5 * 1024 * 1024
PATH = re.compile(r"^g0/([0-9a-f]{2})/([0-9a-f]{64})(?:\.([a-z0-9]{1,8}))?$")
MIME = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
}
OCTETS = "application/octet-stream"
BLOB_TIMEOUT = 15.0


def mime_of(path_or_name: str) -> str:
    """The type served for a file, from its extension (images only; everything else is opaque bytes)."""
    ext = path_or_name.rsplit(".", 1)[1].lower() if "." in path_or_name.rsplit("/", 1)[-1] else ""
    return MIME.get(ext, OCTETS)


def _error(code: int, message: str, status: int) -> Response:
    return json_response({"error_code": code, "error_msg": message}, status)


def parse_file(value: Any) -> dict[str, Any] | None:
    """A valid `{path, name, size, mime}` object (mime as the gateway derives it), or None."""
    if not isinstance(value, dict) or set(value) - {"path", "name", "size", "mime", "url"}:
        return None
    path, name, size = value.get("path"), value.get("name"), value.get("size")
    if not isinstance(path, str) or PATH.match(path) is None:
        return None
    m = PATH.match(path)
    if m is None or m.group(1) != m.group(2)[:2]:
        return None
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_FILE:
        return None
    return {"path": path, "name": name, "size": size, "mime": mime_of(path)}


def file_event(event: dict[str, Any]) -> dict[str, Any]:
    """A `msg` event (or history message) with `file` added when its text is a file marker."""
    text = event.get("text")
    if not isinstance(text, str) or not text.startswith(MARKER):
        return event
    try:
        found = parse_file(json.loads(text[len(MARKER) :]))
    except ValueError:
        found = None
    if found is None:
        return event
    query = urlencode(
        {
            "msg_id": event["msg_id"],
            "from": event["from"],
            "to": event["to"],
            "session_type": event["session_type"],
        }
    )
    return {**event, "file": {**found, "url": f"/api/blob/{found['path']}?{query}"}}


async def file_text(svc: GatewayService, value: Any) -> tuple[str, Response | None]:
    """The message text for a `/api/send` `file` (checked: well formed, and stored in the blob store)."""
    found = parse_file(value)
    if found is None:
        raise ValueError(
            "file must be {path, name, size, mime} as /api/upload answered (a name of 1 to 255 characters)"
        )
    addr = svc.files.blob_address()
    if addr is None:
        return "", _error(UNAVAILABLE, "the blob store is unavailable", 503)
    try:
        rsp = await fetch(
            *addr, "HEAD", "/" + found["path"], headers={"X-Api-Key": svc.admin_key}, timeout=BLOB_TIMEOUT
        )
    except (OSError, TimeoutError, MalformedRequest):
        return "", _error(UNAVAILABLE, "the blob store did not answer", 503)
    if rsp.status == 404:
        return "", _error(NOT_FOUND, "no such file: upload it first", 404)
    if rsp.status != 200:
        return "", _error(UNAVAILABLE, f"the blob store answered {rsp.status}", 503)
    return MARKER + json.dumps(found, sort_keys=True, separators=(",", ":")), None


class Files:
    """`/api/upload` and `/api/blob/...`."""

    def __init__(self, svc: GatewayService, max_upload: int) -> None:
        self.svc = svc
        self.max_upload = max_upload
        self.m_uploads = svc.metrics.counter("gateway_uploads_total", "files uploaded through the gateway")
        self.m_downloads = svc.metrics.counter(
            "gateway_downloads_total", "files downloaded through the gateway"
        )

    def blob_address(self) -> tuple[str, int] | None:
        """The blob store's HTTP address, if one runs."""
        eps = self.svc.ctx.discovery.endpoints("storage", "http")
        return eps[0].address if eps else None

    def _session(self, request: web.Request) -> Any:
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else request.query.get("token", "")
        return self.svc.sessions.get(token) if token else None

    async def upload(self, request: web.Request) -> web.StreamResponse:
        """Store one file in the blob store for a logged-in user."""
        return (await self._upload(request)).to_aiohttp()

    async def _upload(self, request: web.Request) -> Response:
        from runtime.services.gateway.service import rate_limited

        if not self.svc.rate_ok(peer_of(request)):
            return rate_limited()
        session = self._session(request)
        if session is None:
            return _closing(_error(NOT_LOGGED_IN, "not logged in (missing, unknown or expired token)", 401))
        declared = request.content_length
        if declared is not None and declared > self.max_upload:
            return _closing(_error(TOO_LARGE, f"upload of {declared} bytes exceeds {self.max_upload}", 413))
        try:
            name, data = await _read_file(request, self.max_upload)
        except _Refused as exc:
            return _closing(exc.response)
        ext = _extension(name)
        if ext is None:
            return _error(BAD_REQUEST, "the file name's extension must be 1 to 8 letters or digits", 400)
        addr = self.blob_address()
        if addr is None:
            return _error(UNAVAILABLE, "the blob store is unavailable", 503)
        boundary = "ttgen-" + secrets.token_hex(12)
        body = (
            (
                f"--{boundary}\r\n"
                f'Content-Disposition: form-data; name="file"; filename="upload.{ext or "bin"}"\r\n'
                f"Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        headers = {
            "X-Api-Key": self.svc.admin_key,
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        }
        try:
            rsp = await fetch(*addr, "POST", "/", body, headers, timeout=BLOB_TIMEOUT, max_response=64 * 1024)
            doc = rsp.json()
        except (OSError, TimeoutError, MalformedRequest, ValueError):
            return _error(UNAVAILABLE, "the blob store did not answer", 503)
        if rsp.status == 413:
            return _error(TOO_LARGE, str(doc.get("error_msg", "file too large")), 413)
        if rsp.status != 200 or not isinstance(doc.get("path"), str):
            return _error(
                UNAVAILABLE, f"the blob store refused the file: {doc.get('error_msg', rsp.status)}", 503
            )
        self.m_uploads.inc()
        path = doc["path"].split("?", 1)[0]  # the gateway fetches with the API key, not the signed URL
        return json_response(
            {
                "error_code": 0,
                "error_msg": "",
                "file": {"path": path, "name": name, "size": len(data), "mime": mime_of(path)},
            }
        )

    async def download(self, request: web.Request) -> web.StreamResponse:
        """A file of a message the user may read."""
        from runtime.services.gateway.chat_api import arg_session_type, arg_uint
        from runtime.services.gateway.service import rate_limited

        if not self.svc.rate_ok(peer_of(request)):
            return rate_limited().to_aiohttp()
        session = self._session(request)
        if session is None:
            return _error(
                NOT_LOGGED_IN, "not logged in (missing, unknown or expired token)", 401
            ).to_aiohttp()
        path = request.match_info["path"]
        if PATH.match(path) is None:
            return _error(NOT_FOUND, "no such file", 404).to_aiohttp()
        try:
            query = dict(request.query)
            msg_id = arg_uint(query, "msg_id", positive=True)
            sender = arg_uint(query, "from", positive=True)
            to = arg_uint(query, "to", positive=True)
            enums = self.svc.client_api.enums
            session_type = arg_session_type(query, enums, required=True)
        except ValueError as exc:
            return _error(BAD_REQUEST, str(exc), 400).to_aiohttp()
        user = session.user_id
        if session_type == enums.SessionType.SESSION_TYPE_GROUP:
            session_id = to
        elif user in (sender, to):
            session_id = to if user == sender else sender
        else:
            return _error(ACCESS_DENIED, "not a party to that message", 403).to_aiohttp()
        req = self.svc.proto.new(
            "CID_MSG_GET_BY_MSG_ID_REQ",
            user_id=user,
            session_type=session_type,
            session_id=session_id,
            msg_id_list=[msg_id],
        )
        rsp = await self.svc.client_api._biz("CID_MSG_GET_BY_MSG_ID_REQ", user, req)
        if rsp is None:
            return _error(UNAVAILABLE, "biz did not answer", 503).to_aiohttp()
        carried = None
        for m in getattr(rsp, "msg_list", []):
            if m.msg_id == msg_id and m.from_session_id == sender:
                event = {"text": bytes(m.msg_data).decode("utf-8", "replace"), "msg_id": msg_id}
                event.update({"from": sender, "to": to, "session_type": session_type})
                carried = file_event(event).get("file")
        if carried is None or carried["path"] != path:
            return _error(
                22, "that message is not readable by this user or does not carry this file", 403
            ).to_aiohttp()
        addr = self.blob_address()
        if addr is None:
            return _error(UNAVAILABLE, "the blob store is unavailable", 503).to_aiohttp()
        try:
            got = await fetch(
                *addr, "GET", "/" + path, headers={"X-Api-Key": self.svc.admin_key}, timeout=BLOB_TIMEOUT
            )
        except (OSError, TimeoutError, MalformedRequest):
            return _error(UNAVAILABLE, "the blob store did not answer", 503).to_aiohttp()
        if got.status == 404:
            return _error(NOT_FOUND, "the file is gone", 404).to_aiohttp()
        if got.status != 200:
            return _error(UNAVAILABLE, f"the blob store answered {got.status}", 503).to_aiohttp()
        self.m_downloads.inc()
        mime = carried["mime"]
        headers = {
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox",
            "Cache-Control": "private, max-age=3600",
        }
        if mime == OCTETS:
            headers["Content-Disposition"] = "attachment"
        return web.Response(body=got.body, content_type=mime, headers=headers)


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def _closing(response: Response) -> Response:
    response.close = True  # the rest of a refused body is not read
    return response


async def _read_file(request: web.Request, limit: int) -> tuple[str, bytes]:
    """(file name, bytes) of the one part `file`, read with the size capped while reading."""
    import asyncio

    if not request.content_type.startswith("multipart/form-data"):
        raise _Refused(_error(BAD_REQUEST, "expected multipart/form-data with a part named file", 400))

    async def go() -> tuple[str, bytes]:
        reader = await request.multipart()
        found: tuple[str, bytes] | None = None
        parts = 0
        while (part := await reader.next()) is not None:
            parts += 1
            if parts > 4 or not isinstance(part, BodyPartReader):
                raise ValueError("too many parts")
            data = bytearray()
            while chunk := await part.read_chunk(65536):
                data += chunk
                if len(data) > MAX_FILE:
                    raise _Refused(_error(TOO_LARGE, f"a file above {MAX_FILE} bytes", 413))
            if part.name == "file" and part.filename is not None and found is None:
                found = (part.filename, bytes(data))
        if found is None:
            raise _Refused(_error(BAD_REQUEST, "no part named file with a file name", 400))
        if not 0 < len(found[0]) <= MAX_NAME:
            raise _Refused(_error(BAD_REQUEST, f"the file name must be 1 to {MAX_NAME} characters", 400))
        return found

    try:
        return await asyncio.wait_for(go(), BODY_TIMEOUT)
    except _Refused:
        raise
    except TimeoutError:
        raise _Refused(_error(BAD_REQUEST, "the upload did not arrive in time", 400)) from None
    except Exception as exc:  # aiohttp's multipart and payload errors: malformed or truncated bodies
        raise _Refused(_error(BAD_REQUEST, f"malformed upload: {type(exc).__name__}", 400)) from None
