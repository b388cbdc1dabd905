"""Unit: upload tokens, download decisions, the key file and file names used by the blob store (no sockets;
its multipart parsing is aiohttp's, tested through real uploads in tests/integration/test_files_blobs.py)."""

from __future__ import annotations

import asyncio
import stat
import time
from pathlib import Path

from runtime.services.blobs import _extension, read_or_create_secret
from runtime.services.blobs_auth import (
    BlobAuth,
    issue_upload_token,
    parse_upload_token,
    revocation_key,
    revoke_session,
)

SID = bytes(range(16))


def test_tokens_verify_only_with_the_secret_and_before_expiry() -> None:
    token = issue_upload_token("s3cret", 42, SID, ttl=60, now=1000.0)
    grant = parse_upload_token("s3cret", token, now=1059.0)
    assert grant is not None and (grant.user_id, grant.session) == (42, SID)
    assert parse_upload_token("s3cret", token, now=1061.0) is None
    assert parse_upload_token("other", token, now=1000.0) is None
    user, sid, expiry, sig = token.split(".")[1:]
    assert parse_upload_token("s3cret", f"v2.43.{sid}.{expiry}.{sig}", now=1000.0) is None  # another user
    assert parse_upload_token("s3cret", f"v2.{user}.{'00' * 16}.{expiry}.{sig}", now=1000.0) is None
    assert parse_upload_token("s3cret", f"v2.{user}.{sid}.{int(expiry) + 999}.{sig}", now=1000.0) is None
    for junk in ("", "v1", f"v1.42.1060.{sig}", f"v2.x.{sid}.1060.{sig}", f"v2.42.zz.1060.{sig}", "v2.42"):
        assert parse_upload_token("s3cret", junk, now=1000.0) is None


class Revocations:
    def __init__(self) -> None:
        self.ended: dict[bytes, int] = {}

    async def consume_ticket_session(self, session_id: bytes, user_id: int, expires: int, now: int) -> bool:
        fresh = session_id not in self.ended
        self.ended[session_id] = expires
        return fresh

    async def ticket_session_used(self, session_id: bytes, now: int) -> bool:
        return self.ended.get(session_id, -1) >= now


def test_an_upload_token_dies_with_its_session_and_downloads_need_a_credential() -> None:
    async def body() -> None:
        ended = Revocations()
        auth = BlobAuth("s3cret", "admin-key", ended)
        token = issue_upload_token("s3cret", 42, SID)
        other = issue_upload_token("s3cret", 7, bytes(16))
        assert await auth.uploader(["", "junk", token]) == 42
        assert await auth.uploader([], "admin-key") == 0 and await auth.uploader([], "wrong") is None
        path = "/g0/ab/" + "ab" * 32 + ".png"
        assert not await auth.may_download(path, {}, [])  # no credential: not even an existence check
        query = dict(kv.split("=") for kv in auth.sign_url(path).split("&"))
        assert await auth.may_download(path, query, [])
        assert not await auth.may_download(path.replace(".png", ".gif"), query, [])  # bound to the path
        assert not await auth.may_download(path, {**query, "e": str(int(time.time()) + 10**6)}, [])
        stale = dict(kv.split("=") for kv in auth.sign_url(path, ttl=-5).split("&"))
        assert not await auth.may_download(path, stale, [])
        assert await auth.may_download(path, {}, [token])
        await revoke_session(ended, 42, SID)  # logout
        assert revocation_key(SID) in ended.ended
        assert await auth.uploader([token]) is None
        assert not await auth.may_download(path, {}, [token])
        assert await auth.uploader([token, other]) == 7  # another session's token still holds

    asyncio.run(body())


def test_secret_file_is_created_0600_once(tmp_path: Path) -> None:
    path = tmp_path / "admin.key"
    first = read_or_create_secret(path)
    assert len(first) == 64 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_or_create_secret(path) == first


def test_extensions() -> None:
    assert _extension("photo_100x80.JPG") == "jpg"
    assert _extension("C:\\x\\y.gif") == "gif"
    assert _extension("noext") == ""
    assert _extension("bad.p?g") is None and _extension("x.toolongext") is None
