"""Unit: upload tokens, the key file and file names used by the blob store (no sockets; its multipart
parsing is aiohttp's, tested through real uploads in tests/integration/test_files_blobs.py)."""

from __future__ import annotations

import stat
from pathlib import Path

from runtime.services.blobs import _extension, issue_upload_token, read_or_create_secret, verify_upload_token


def test_tokens_verify_only_with_the_secret_and_before_expiry() -> None:
    token = issue_upload_token("s3cret", 42, ttl=60, now=1000.0)
    assert verify_upload_token("s3cret", token, now=1059.0) == 42
    assert verify_upload_token("s3cret", token, now=1061.0) is None
    assert verify_upload_token("other", token, now=1000.0) is None
    user, expiry, sig = token.split(".")[1:]
    assert verify_upload_token("s3cret", f"v1.43.{expiry}.{sig}", now=1000.0) is None  # another user
    assert verify_upload_token("s3cret", f"v1.{user}.{int(expiry) + 999}.{sig}", now=1000.0) is None
    for junk in ("", "v1", "v2.42.1060." + sig, "v1.x.1060." + sig, "v1.42.1060"):
        assert verify_upload_token("s3cret", junk, now=1000.0) is None


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
