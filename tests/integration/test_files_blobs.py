"""Integration: the msfs-compatible blob store (`storage` service): token uploads, downloads, limits."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from tests.http_support import encode_multipart, http_request
from tests.integration.file_support import FileCluster, run_file_cluster
from tests.integration.gateway_support import WebClient, wait_gateway

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("backend_storage")]
SERVICES = {"storage": {"instances": 1}, "gateway": {"instances": 1}, "file": {"instances": 0}}
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(2000)


async def raw_head_only(host: str, port: int, length: int, token: str) -> bytes:
    """Send only a request head announcing a large body; return the answer."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {length}\r\n\r\n".encode()
    )
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return data


def test_upload_with_login_token_then_download_and_limits(tmp_path: Path) -> None:
    async def body(c: FileCluster) -> None:
        gw_addr = await wait_gateway(c)
        web = await WebClient.login(gw_addr, "user30")
        token = web.login_doc["upload_token"]
        (blobs,) = c.services("storage")
        host, port = blobs.endpoints()[0].address
        assert web.login_doc["upload_url"] == f"http://{host}:{port}/"
        ctype, payload = encode_multipart([("file", "avatar_100x100.png", PNG)])
        auth = {"Authorization": f"Bearer {token}", "Content-Type": ctype}
        rsp = await http_request(host, port, "POST", "/", payload, auth)
        doc = rsp.json()
        assert rsp.status == 200 and doc["error_code"] == 0, doc
        digest = hashlib.sha256(PNG).hexdigest()
        assert doc["path"] == f"g0/{digest[:2]}/{digest}.png" and doc["url"].endswith(doc["path"])
        got = await http_request(host, port, "GET", "/" + doc["path"])
        assert got.status == 200 and got.body == PNG and got.headers["content-type"] == "image/png"
        assert (await http_request(host, port, "GET", f"/g0/{digest[:2]}/{'0' * 64}.png")).status == 404
        assert (await http_request(host, port, "GET", "/g0/../../admin.key")).status == 404
        # Refusals: no credential, forged token, malformed bodies, too large; none stores anything.
        stored_before = sorted(p.name for p in (c.data_dir / "blobs").rglob("*") if p.is_file())
        forged = token[:-1] + ("0" if token[-1] != "0" else "1")
        cases = [
            ({"Content-Type": ctype}, payload, 401, 1),
            ({"Authorization": f"Bearer {forged}", "Content-Type": ctype}, payload, 401, 1),
            ({"Authorization": f"Bearer {token}", "Content-Type": "application/json"}, b"{}", 400, 2),
            (auth, b"--ttgen-boundary-7d1f\r\nno headers end", 400, 2),
            (
                auth,
                encode_multipart([("file", "a.png", b"x")])[1].replace(b'; filename="a.png"', b""),
                400,
                4,
            ),
            (auth, encode_multipart([("file", "evil.p?g", b"x")])[1], 400, 7),
            (auth, encode_multipart([("file", "big.jpg", b"\0" * (5 * 1024 * 1024 + 1))])[1], 413, 5),
        ]
        for headers, data, status, code in cases:
            r = await http_request(host, port, "POST", "/", data, headers)
            assert (r.status, r.json()["error_code"]) == (status, code), (status, code, r.body[:200])
        answer = await raw_head_only(host, port, 11 * 1024 * 1024, token)
        assert answer.startswith(b"HTTP/1.1 413") and b'"error_code":6' in answer
        stored_after = sorted(p.name for p in (c.data_dir / "blobs").rglob("*") if p.is_file())
        assert stored_after == stored_before
        key = (c.data_dir / "admin.key").read_text().strip()
        by_key = await http_request(
            host, port, "POST", "/", payload, {"X-Api-Key": key, "Content-Type": ctype}
        )
        assert by_key.json()["path"] == doc["path"]  # same content, same name

    asyncio.run(run_file_cluster(tmp_path, body, services=dict(SERVICES)))
