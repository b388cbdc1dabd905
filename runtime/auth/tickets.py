"""Account security layer: resumption tickets: short-lived, server-signed proof of an earlier password login.

A ticket is 69 bytes, big-endian, authenticated with HMAC-SHA256 (tag truncated to 128 bits) under the
cluster's ticket key:

    version u8 | user_id u32 | client_type u32 | issued u32 | expires u32 | auth_time u32
    | session_id 16 | password_fp 8 | device_fp 8 | tag 16

`session_id` names one use of the ticket: presenting it consumes the id (biz records it in storage, where
logout and kick also record the id of a connection's ticket), so a ticket logs in at most once and is dead
after its session logs out or is kicked, on every biz instance and after restarts. `password_fp` is a keyed
fingerprint of the stored password hash, so changing the password (by any tool) voids every ticket.
`auth_time` is when the password was last checked: renewed tickets keep it, and `max_age` after it the chain
ends and the user types the password again. Checking a ticket is one HMAC: microseconds.

The key is 32 random bytes created at first start (mode 0600) and shared by every biz instance.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path

from runtime.auth import secret_files
from runtime.auth.secret_files import SecretFileError

VERSION = 1
KEY_BYTES = 32
TAG_BYTES = 16
SESSION_BYTES = 16
FP_BYTES = 8
_HEAD = struct.Struct(">BIIIII")
BODY_BYTES = _HEAD.size + SESSION_BYTES + 2 * FP_BYTES
TICKET_BYTES = BODY_BYTES + TAG_BYTES
NO_DEVICE = bytes(FP_BYTES)
# Seconds between attempts to store a revocation (logout, kick) that biz did not answer: about 16 minutes in
# all, longer than a ticket lives by default, after which the ticket is dead anyway.
REVOKE_RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 240.0, 480.0)


class TicketError(enum.Enum):
    """Why a ticket is refused (biz maps these to IM.Ext.TicketResult)."""

    MALFORMED = "malformed ticket"
    FORGED = "ticket signature does not verify"
    EXPIRED = "ticket expired"
    WRONG_DEVICE = "ticket was issued to another device"
    REVOKED = "ticket already used, or its session logged out or was kicked"
    PASSWORD_CHANGED = "password changed since the ticket was issued"
    DISABLED = "account may not log in"


class TicketRefused(Exception):
    """A presented ticket is not acceptable; `.reason` says why."""

    def __init__(self, reason: TicketError) -> None:
        super().__init__(reason.value)
        self.reason = reason


@dataclass(frozen=True)
class Ticket:
    """The claims a ticket carries."""

    user_id: int
    client_type: int
    issued: int
    expires: int
    auth_time: int
    session_id: bytes
    password_fp: bytes
    device_fp: bytes


class TicketKey:
    """Signs and checks tickets with one 32-byte key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a ticket key is {KEY_BYTES} bytes")
        self._key = key
        self._fp_key = hmac.new(key, b"ttgen ticket fingerprints", hashlib.sha256).digest()

    def _tag(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:TAG_BYTES]

    def fingerprint(self, kind: bytes, value: bytes) -> bytes:
        """A keyed 8-byte fingerprint (of a password hash or a device id); reveals nothing without the key."""
        return hmac.new(self._fp_key, kind + b"\0" + value, hashlib.sha256).digest()[:FP_BYTES]

    def password_fp(self, password_hash: str) -> bytes:
        """Fingerprint of a stored password hash."""
        return self.fingerprint(b"password", password_hash.encode())

    def device_fp(self, device_id: bytes) -> bytes:
        """Fingerprint of a client-chosen device id; all zeros when the client gave none."""
        return self.fingerprint(b"device", device_id) if device_id else NO_DEVICE

    def issue(
        self,
        *,
        user_id: int,
        client_type: int,
        now: int,
        ttl: int,
        auth_time: int,
        max_age: int,
        password_hash: str,
        device_id: bytes = b"",
    ) -> tuple[bytes, Ticket]:
        """A new ticket with a fresh session id, expiring after `ttl`, never after `auth_time + max_age`."""
        expires = min(now + ttl, auth_time + max_age)
        claims = Ticket(
            user_id,
            client_type,
            now,
            expires,
            auth_time,
            secrets.token_bytes(SESSION_BYTES),
            self.password_fp(password_hash),
            self.device_fp(device_id),
        )
        return self.encode(claims), claims

    def encode(self, t: Ticket) -> bytes:
        """The signed bytes of a ticket."""
        body = (
            _HEAD.pack(VERSION, t.user_id, t.client_type, t.issued, t.expires, t.auth_time)
            + t.session_id
            + t.password_fp
            + t.device_fp
        )
        return body + self._tag(body)

    def check(self, data: bytes, *, client_type: int, device_id: bytes, now: int) -> Ticket:
        """The claims of a genuine, unexpired ticket presented by the device it was issued to; otherwise
        `TicketRefused` (MALFORMED, FORGED, EXPIRED or WRONG_DEVICE). The tag comparison is constant-time
        and comes before any claim is believed."""
        if len(data) != TICKET_BYTES or data[0] != VERSION:
            raise TicketRefused(TicketError.MALFORMED)
        body, tag = data[:BODY_BYTES], data[BODY_BYTES:]
        if not hmac.compare_digest(self._tag(body), tag):
            raise TicketRefused(TicketError.FORGED)
        _v, user_id, ctype, issued, expires, auth_time = _HEAD.unpack_from(body)
        at = _HEAD.size
        ticket = Ticket(
            user_id,
            ctype,
            issued,
            expires,
            auth_time,
            body[at : at + SESSION_BYTES],
            body[at + SESSION_BYTES : at + SESSION_BYTES + FP_BYTES],
            body[at + SESSION_BYTES + FP_BYTES :],
        )
        if now >= expires:
            raise TicketRefused(TicketError.EXPIRED)
        if ctype != client_type or not hmac.compare_digest(ticket.device_fp, self.device_fp(device_id)):
            raise TicketRefused(TicketError.WRONG_DEVICE)
        return ticket


def session_id_of(data: bytes) -> bytes:
    """The session id inside a ticket's bytes (unauthenticated: only for logs and bookkeeping)."""
    return data[_HEAD.size : _HEAD.size + SESSION_BYTES] if len(data) == TICKET_BYTES else b""


KeyFileError = SecretFileError  # the ticket key file is unusable (wrong size, readable by others)


def load_or_create_key(path: Path) -> bytes:
    """The ticket key at `path`, created (32 random bytes, mode 0600) if absent; several biz instances may
    start at once and agree on one key. A key file that others may read is refused: whoever reads it can mint
    tickets for any user."""
    return secret_files.load_or_create_key(path, KEY_BYTES)
