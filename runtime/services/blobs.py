"""Runtime services layer (storage): the msfs-compatible HTTP blob store over `runtime.storage.BlobStore`.

`POST` (any path) with a `multipart/form-data` body stores each file part and answers TeamTalk's JSON
`{error_code, error_msg, path, url}` (for several files, `files: [...]` as well). `GET /g0/<2 hex>/<64
hex>[.ext]` returns the bytes, with an image content type for jpg/png/gif; 404 if absent. Unlike msfs, uploads
need a credential (`Authorization: Bearer <token>` or an `X-Upload-Token`/`X-Api-Key` header, or `?token=`):

- an upload token `v1.<user id>.<expiry unix>.<hex HMAC-SHA256>` signed with `<data_dir>/blob.secret` (created
  0600 on first start); the gateway issues one to each logged-in user (`issue_upload_token`);
- the cluster's API key (`<data_dir>/admin.key`, the gateway's admin key), for servers and admin tools.

Downloads stay open, as in msfs: paths are SHA-256 names, so only someone who was given a URL can fetch it.
Config keys (`services.storage`): `http_port`, `max_post_bytes` (10 MiB), `max_file_bytes` (5 MiB),
`public_url` (base of returned URLs), `secret_file`, `api_key_file`, `root` (blob folder, default
`<data_dir>/blobs`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import time
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from runtime.auth.secret_files import read_or_create_secret
from runtime.httpkit import BODY_TIMEOUT, HttpServer, Response, json_response
from runtime.monitor.metrics import Metrics
from runtime.services.base import (
    Endpoint,
    Service,
    ServiceContext,
    config_port,
    publish_endpoints,
    withdraw_endpoints,
)
from runtime.storage.blobs import MAX_FILE_BYTES, MAX_UPLOAD_BYTES, BlobStore
from runtime.storage.errors import NotFound, StorageError, ValueTooLarge

# msfs-style error codes (0 OK); HTTP status in parentheses.
OK = 0
UNAUTHORIZED = 1  # (401) no or bad upload token / API key
NOT_MULTIPART = 2  # (400) body is not multipart/form-data, or is malformed
NO_FILE = 4  # (400) no file part in the upload
FILE_TOO_LARGE = 5  # (413) one file above max_file_bytes
UPLOAD_TOO_LARGE = 6  # (413) request body above max_post_bytes
BAD_NAME = 7  # (400) file name with an unusable extension
STORE_FAILED = 8  # (500) the disk refused the write
METHOD = 9  # (405) neither GET nor POST

CONTENT_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif"}
_EXT = re.compile(r"^[a-z0-9]{1,8}$")
_GET = re.compile(r"^/g0/([0-9a-f]{2})/([0-9a-f]{64})(?:\.([a-z0-9]{1,8}))?$")
TOKEN_TTL = 24 * 3600
MAX_PARTS = 16


def _sign(secret: str, user_id: int, expiry: int) -> str:
    return hmac.new(secret.encode(), f"blob-upload|{user_id}|{expiry}".encode(), hashlib.sha256).hexdigest()


def issue_upload_token(secret: str, user_id: int, ttl: int = TOKEN_TTL, now: float | None = None) -> str:
    """An upload token for a logged-in user."""
    expiry = int((time.time() if now is None else now) + ttl)
    return f"v1.{user_id}.{expiry}.{_sign(secret, user_id, expiry)}"


def verify_upload_token(secret: str, token: str, now: float | None = None) -> int | None:
    """The user id of a valid, unexpired token; None otherwise."""
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != "v1" or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    user_id, expiry = int(parts[1]), int(parts[2])
    if expiry < (time.time() if now is None else now):
        return None
    if not hmac.compare_digest(parts[3], _sign(secret, user_id, expiry)):
        return None
    return user_id


def blob_error(code: int, message: str, status: int) -> Response:
    """An msfs-shaped error answer."""
    return json_response({"error_code": code, "error_msg": message, "path": "", "url": ""}, status)


class BlobService(Service):
    """The `storage` cluster service's HTTP face: msfs uploads and downloads."""

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        cfg = ctx.config
        self.metrics = Metrics(labels={"service": ctx.name, "instance": str(ctx.instance)})
        self.max_post = int(cfg.get("max_post_bytes", MAX_UPLOAD_BYTES))
        self.max_file = int(cfg.get("max_file_bytes", MAX_FILE_BYTES))
        root = Path(str(cfg.get("root") or ctx.data_dir / "blobs"))
        self.store = BlobStore(root, max_file=self.max_file, max_upload=self.max_post)
        self.secret = read_or_create_secret(ctx.data_dir / str(cfg.get("secret_file", "blob.secret")))
        self.api_key = read_or_create_secret(ctx.data_dir / str(cfg.get("api_key_file", "admin.key")))
        app = web.Application(client_max_size=self.max_post)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.http = HttpServer(app, host=ctx.host, port=config_port(cfg, "http_port"), name="blobs")
        self._endpoints: list[Endpoint] = []
        self.m_uploads = self.metrics.counter("blob_uploads_total", "files stored")
        self.m_downloads = self.metrics.counter("blob_downloads_total", "files served")
        self.m_refused = self.metrics.counter("blob_refused_total", "uploads refused")

    async def start(self) -> None:
        """Bind the HTTP listener and publish it."""
        await self.http.start()
        self._endpoints = publish_endpoints(self.ctx, {"http": self.http.port})

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Withdraw and close."""
        withdraw_endpoints(self.ctx, self._endpoints)
        await self.http.stop(min(drain_timeout, 1.0))

    def endpoints(self) -> list[Endpoint]:
        """The HTTP listener."""
        return list(self._endpoints)

    def base_url(self) -> str:
        """Where returned URLs point."""
        url = self.ctx.config.get("public_url")
        if url:
            return str(url).rstrip("/")
        return f"http://{self.ctx.advertised()}:{self.http.port}"

    # requests --------------------------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Route one request."""
        if request.method in ("GET", "HEAD"):
            return (await self._get(request)).to_aiohttp()
        if request.method == "POST":
            response = await self._post(request)
            if response.status != 200:
                self.m_refused.inc()
                response.close = True  # the rest of a refused body is not read
            return response.to_aiohttp()
        return blob_error(METHOD, "only GET and POST", 405).to_aiohttp()

    async def _get(self, request: web.Request) -> Response:
        m = _GET.match(request.path)
        if m is None or m.group(2)[:2] != m.group(1):
            return Response(404, b"not found\n")
        try:
            data = await asyncio.to_thread(self.store.get, m.group(2))
        except NotFound:
            return Response(404, b"not found\n")
        self.m_downloads.inc()
        ctype = CONTENT_TYPES.get(m.group(3) or "", "application/octet-stream")
        body = b"" if request.method == "HEAD" else data
        return Response(200, body, ctype, {"Cache-Control": "public, max-age=31536000, immutable"})

    def authorized(self, request: web.Request) -> bool:
        """An upload token or the API key, in a header or the query."""
        auth = request.headers.get("authorization", "")
        candidates = [
            auth[7:].strip() if auth.lower().startswith("bearer ") else "",
            request.headers.get("x-upload-token", ""),
            request.query.get("token", ""),
        ]
        key = request.headers.get("x-api-key", "")
        if key and hmac.compare_digest(key.encode(), self.api_key.encode()):
            return True
        return any(c and verify_upload_token(self.secret, c) is not None for c in candidates)

    async def _post(self, request: web.Request) -> Response:
        declared = request.content_length
        if declared is not None and declared > self.max_post:
            return blob_error(UPLOAD_TOO_LARGE, f"upload of {declared} bytes exceeds {self.max_post}", 413)
        if not self.authorized(request):
            return blob_error(UNAUTHORIZED, "an upload token or API key is required", 401)
        try:
            files = await asyncio.wait_for(self._read_files(request), BODY_TIMEOUT)
        except TimeoutError:
            return blob_error(NOT_MULTIPART, "the upload did not arrive in time", 400)
        except _Refused as exc:
            return exc.response
        if not files:
            return blob_error(NO_FILE, "no file part in the upload", 400)
        exts = []
        for filename, _data in files:
            ext = _extension(filename)
            if ext is None:
                return blob_error(BAD_NAME, f"unusable file name {filename!r}", 400)
            exts.append(ext)
        try:
            digests = await asyncio.to_thread(self.store.put_upload, [data for _n, data in files])
        except ValueTooLarge as exc:
            code = FILE_TOO_LARGE if exc.field == "blob" else UPLOAD_TOO_LARGE
            return blob_error(code, str(exc), 413)
        except (StorageError, OSError) as exc:
            self.log.error("blob store write failed: %s", exc)
            return blob_error(STORE_FAILED, "could not store the file", 500)
        self.m_uploads.inc(len(digests))
        out = []
        for digest, ext in zip(digests, exts, strict=True):
            path = f"g0/{digest[:2]}/{digest}" + (f".{ext}" if ext else "")
            out.append({"path": path, "url": f"{self.base_url()}/{path}"})
        doc: dict[str, Any] = {"error_code": OK, "error_msg": "", **out[0]}
        if len(out) > 1:
            doc["files"] = out
        return json_response(doc)

    async def _read_files(self, request: web.Request) -> list[tuple[str, bytes]]:
        """(file name, bytes) of each file part, streamed with aiohttp's multipart reader; every size is
        capped while reading (a file above max_file_bytes, or the whole body above max_post_bytes)."""
        if not request.content_type.startswith("multipart/form-data"):
            raise _Refused(blob_error(NOT_MULTIPART, "malformed upload: expected multipart/form-data", 400))
        files: list[tuple[str, bytes]] = []
        total = parts = 0
        try:
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                parts += 1
                if parts > MAX_PARTS or not isinstance(part, BodyPartReader):
                    raise _Refused(
                        blob_error(NOT_MULTIPART, f"malformed upload: more than {MAX_PARTS} parts", 400)
                    )
                if part.name is None:
                    raise ValueError("a part without a name")
                data = bytearray()
                while chunk := await part.read_chunk(65536):
                    data += chunk
                    total += len(chunk)
                    if len(data) > self.max_file:
                        raise _Refused(blob_error(FILE_TOO_LARGE, f"a file above {self.max_file} bytes", 413))
                    if total > self.max_post:
                        raise _Refused(
                            blob_error(UPLOAD_TOO_LARGE, f"upload above {self.max_post} bytes", 413)
                        )
                if part.filename is not None:
                    files.append((part.filename, bytes(data)))
        except _Refused:
            raise
        except (ValueError, AssertionError, LookupError, UnicodeError, web.HTTPException) as exc:
            raise _Refused(
                blob_error(NOT_MULTIPART, f"malformed upload: {exc or type(exc).__name__}", 400)
            ) from None
        except Exception as exc:  # aiohttp's payload errors: a body that ends early or breaks its encoding
            raise _Refused(
                blob_error(NOT_MULTIPART, f"malformed upload: {type(exc).__name__}", 400)
            ) from None
        return files


class _Refused(Exception):
    """An upload refused while reading it."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def _extension(filename: str) -> str | None:
    """The lower-case extension ("" for none); None if it is not a short alphanumeric word."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    if "." not in base:
        return ""
    ext = base.rsplit(".", 1)[1].lower()
    return ext if _EXT.match(ext) else None
