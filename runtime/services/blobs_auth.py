"""Runtime services layer (storage): who may upload and download blobs, independent of the HTTP library.

- **Upload tokens** (`v2.<user id>.<session hex>.<expiry>.<tag>`, HMAC-SHA256 under `<data_dir>/blob.secret`)
  are issued by the gateway to one logged-in session and name it. When the session ends (logout, kick, idle
  expiry) the gateway records its id as revoked in storage (the `ticket_sessions` table, under the prefix
  `upload:`), and the blob store refuses every token of it from then on: an upload token dies with its
  session. (v1 tokens, without a session, are refused.)
- **Downloads** need a credential too: a live upload token of any session (an authenticated cluster user),
  or a signed, expiring URL (`?e=<expiry>&s=<tag>`, made by the blob store for the uploader, who shares it
  in a message). Blob names are keyed (an HMAC of the content's SHA-256 under the store's key,
  runtime.storage.blobs), so nobody can confirm that a guessed file is stored by computing its name.
- The cluster's API key (`admin.key`) may do both, for servers and admin tools.

`BlobAuth` takes plain values (header values, query values) and answers decisions; the HTTP handlers only
pick those values out of their requests.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

UPLOAD_TTL = 24 * 3600  # an upload token's lifetime (it also dies with its session)
URL_TTL = 30 * 24 * 3600  # a signed download URL's lifetime
REVOKED_PREFIX = b"upload:"
SESSION_BYTES = 16


class RevocationStore(Protocol):
    """Where ended sessions are recorded (runtime.storage.Storage satisfies it)."""

    async def consume_ticket_session(
        self, session_id: bytes, user_id: int, expires: int, now: int
    ) -> bool: ...

    async def ticket_session_used(self, session_id: bytes, now: int) -> bool: ...


@dataclass(frozen=True)
class UploadGrant:
    """What a valid upload token names."""

    user_id: int
    session: bytes
    expiry: int


def _tag(secret: str, *parts: object) -> str:
    msg = "|".join(str(p) for p in parts).encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def issue_upload_token(
    secret: str, user_id: int, session: bytes, ttl: int = UPLOAD_TTL, now: float | None = None
) -> str:
    """An upload token for one logged-in session (`session`: its 16-byte id)."""
    if len(session) != SESSION_BYTES:
        raise ValueError(f"an upload session id has {SESSION_BYTES} bytes")
    expiry = int((time.time() if now is None else now) + ttl)
    sid = session.hex()
    return f"v2.{user_id}.{sid}.{expiry}.{_tag(secret, 'blob-upload', user_id, sid, expiry)}"


def parse_upload_token(secret: str, token: str, now: float | None = None) -> UploadGrant | None:
    """The grant of a well-signed, unexpired token (not yet checked for revocation); None otherwise."""
    parts = token.split(".")
    if len(token) > 256 or len(parts) != 5 or parts[0] != "v2":
        return None
    user, sid, expiry = parts[1], parts[2], parts[3]
    if not user.isdigit() or not expiry.isdigit() or len(sid) != 2 * SESSION_BYTES:
        return None
    try:
        session = bytes.fromhex(sid)
    except ValueError:
        return None
    if int(expiry) < (time.time() if now is None else now):
        return None
    if not hmac.compare_digest(parts[4], _tag(secret, "blob-upload", int(user), sid, int(expiry))):
        return None
    return UploadGrant(int(user), session, int(expiry))


def revocation_key(session: bytes) -> bytes:
    """The `ticket_sessions` id that marks an upload session as ended."""
    return REVOKED_PREFIX + session


async def revoke_session(
    store: RevocationStore, user_id: int, session: bytes, now: float | None = None
) -> None:
    """Record that a session ended: its upload tokens are refused from now until they would have expired."""
    t = int(time.time() if now is None else now)
    await store.consume_ticket_session(revocation_key(session), user_id, t + UPLOAD_TTL, t)


class BlobAuth:
    """The decisions of the blob store: may this request upload, may it download this path."""

    def __init__(self, secret: str, api_key: str, revoked: RevocationStore | None) -> None:
        self._secret = secret
        self._api_key = api_key
        self._revoked = revoked

    def is_admin(self, api_key: str) -> bool:
        """Whether the value is the cluster's API key."""
        return bool(api_key) and hmac.compare_digest(api_key.encode(), self._api_key.encode())

    async def uploader(self, tokens: list[str], api_key: str = "") -> int | None:
        """The user a request uploads as (0 for the API key), None if no credential holds: the first token
        that is well signed, unexpired and of a session that has not ended."""
        if self.is_admin(api_key):
            return 0
        for token in tokens:
            grant = parse_upload_token(self._secret, token) if token else None
            if grant is None:
                continue
            if self._revoked is not None and await self._revoked.ticket_session_used(
                revocation_key(grant.session), int(time.time())
            ):
                continue
            return grant.user_id
        return None

    def sign_url(self, path: str, ttl: int = URL_TTL, now: float | None = None) -> str:
        """The query string (`e=...&s=...`) that lets anyone holding it download `path` until it expires."""
        expiry = int((time.time() if now is None else now) + ttl)
        return f"e={expiry}&s={_tag(self._secret, 'blob-get', path.lstrip('/'), expiry)[:32]}"

    def url_valid(self, path: str, query: Mapping[str, str], now: float | None = None) -> bool:
        """Whether the query carries a valid, unexpired signature of `path`."""
        expiry, tag = query.get("e", ""), query.get("s", "")
        if not expiry.isdigit() or len(expiry) > 12 or len(tag) != 32:
            return False
        if int(expiry) < (time.time() if now is None else now):
            return False
        expected = _tag(self._secret, "blob-get", path.lstrip("/"), int(expiry))[:32]
        return hmac.compare_digest(tag, expected)

    async def may_download(
        self, path: str, query: Mapping[str, str], tokens: list[str], api_key: str = ""
    ) -> bool:
        """A signed URL of this path, or a live upload token, or the API key."""
        if self.url_valid(path, query):
            return True
        return await self.uploader(tokens, api_key) is not None


def bearer_tokens(authorization: str, upload_header: str, query_token: str) -> list[str]:
    """The candidate tokens of a request: `Authorization: Bearer`, `X-Upload-Token`, `?token=`."""
    bearer = authorization[7:].strip() if authorization.lower().startswith("bearer ") else ""
    return [t for t in (bearer, upload_header.strip(), query_token) if t]
