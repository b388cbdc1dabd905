"""Account security layer: signed, expiring grants that bind a resource to the one user allowed to fetch it.

A grant is `<resource>~<expiry unix seconds>~<hex tag>`, the tag an HMAC-SHA256 under a service's key of
(purpose, user id, resource, expiry). The service that holds the key hands grants only to the authenticated
party of a resource (the receiver of an offline file, the uploader of a blob or the members it shares it
with); whoever presents a grant must present it *as that user* (the file login's user id, the blob request's
session), so a leaked or guessed resource name (a task id, a content hash) is useless alone, and a grant
expires. `~` never occurs in the resources used here (UUIDs, hex digests, paths of them).

Independent of any transport or HTTP library: the file service and the blob store both call it.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SEP = "~"
MAX_GRANT_CHARS = 512


class GrantSigner:
    """Signs and verifies grants for one purpose (e.g. "offline-file", "blob") under one key."""

    def __init__(self, key: bytes, purpose: str) -> None:
        if len(key) < 16:
            raise ValueError("a grant key needs at least 16 bytes")
        self._key = key
        self._purpose = purpose.encode()

    def _tag(self, user_id: int, resource: str, expiry: int) -> str:
        msg = b"\0".join((self._purpose, str(user_id).encode(), resource.encode(), str(expiry).encode()))
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()[:32]

    def sign(self, resource: str, user_id: int, ttl: float, now: float | None = None) -> str:
        """A grant of `resource` to `user_id`, valid for `ttl` seconds."""
        if SEP in resource:
            raise ValueError(f"a granted resource may not contain {SEP!r}")
        expiry = int((time.time() if now is None else now) + ttl)
        return f"{resource}{SEP}{expiry}{SEP}{self._tag(user_id, resource, expiry)}"

    def verify(self, grant: str, user_id: int, now: float | None = None) -> str | None:
        """The resource of a valid, unexpired grant made for `user_id`; None otherwise."""
        if len(grant) > MAX_GRANT_CHARS:
            return None
        parts = grant.split(SEP)
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        resource, expiry = parts[0], int(parts[1])
        if expiry < (time.time() if now is None else now):
            return None
        if not hmac.compare_digest(parts[2], self._tag(user_id, resource, expiry)):
            return None
        return resource


def resource_of(grant: str) -> str:
    """The resource a grant names, unverified (to address a record the caller authorizes otherwise)."""
    return grant.split(SEP, 1)[0]
