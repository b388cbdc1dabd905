"""Test support: small HTTP client helpers on aiohttp (through runtime.httpkit.fetch) and a multipart encoder
that can also build the malformed bodies the refusal tests send."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from runtime.httpkit import ClientResponse, fetch

__all__ = ["ClientResponse", "encode_multipart", "http_request", "post_json"]


async def http_request(
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    *,
    timeout: float = 10.0,
) -> ClientResponse:
    """One request on a fresh connection; the whole exchange bounded by `timeout`."""
    return await fetch(host, port, method, path, body, headers, timeout=timeout)


async def post_json(
    host: str,
    port: int,
    path: str,
    doc: Any,
    headers: Mapping[str, str] | None = None,
    *,
    timeout: float = 10.0,
) -> ClientResponse:
    """POST a JSON document."""
    body = json.dumps(doc).encode("utf-8")
    hdrs = {"Content-Type": "application/json", **dict(headers or {})}
    return await fetch(host, port, "POST", path, body, hdrs, timeout=timeout)


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
