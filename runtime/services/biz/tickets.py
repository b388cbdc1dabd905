"""Runtime services layer (biz): resumption tickets: issue, verify-and-consume, revoke (runtime.auth.tickets).

Config (`services.biz.tickets`): `enabled` (default true), `ttl` (seconds a ticket lives, default 900),
`max_age` (seconds after the password login beyond which no ticket is renewed, default 7 days), `key_file`
(default `ticket.key` beside the database; every biz instance must use the same file).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runtime.auth.tickets import TicketError, TicketKey, TicketRefused, load_or_create_key
from runtime.dispatch import Context
from runtime.monitor.metrics import Counter, Metrics
from runtime.services.biz.convert import fill_user
from runtime.services.links import Proto
from runtime.storage.base import Storage
from runtime.storage.models import UserStatus

log = logging.getLogger("ttgen.biz.tickets")

DEFAULT_TTL = 900
DEFAULT_MAX_AGE = 7 * 24 * 3600
# runtime.auth.tickets.TicketError -> IM.Ext.TicketResult value name
_RESULT_NAMES = {
    TicketError.MALFORMED: "TICKET_MALFORMED",
    TicketError.FORGED: "TICKET_FORGED",
    TicketError.EXPIRED: "TICKET_EXPIRED",
    TicketError.WRONG_DEVICE: "TICKET_WRONG_DEVICE",
    TicketError.REVOKED: "TICKET_REVOKED",
    TicketError.PASSWORD_CHANGED: "TICKET_PASSWORD_CHANGED",
    TicketError.DISABLED: "TICKET_ACCOUNT_DISABLED",
}


class TicketService:
    """The ticket key, the policy and the storage checks; one per biz instance."""

    def __init__(
        self, storage: Storage, config: Mapping[str, Any], data_dir: Path, metrics: Metrics, proto: Proto
    ) -> None:
        self.storage = storage
        self.enabled = bool(config.get("enabled", True))
        self.ttl = max(10, int(config.get("ttl", DEFAULT_TTL)))
        self.max_age = max(self.ttl, int(config.get("max_age", DEFAULT_MAX_AGE)))
        key_file = Path(config["key_file"]) if config.get("key_file") else data_dir / "ticket.key"
        self.key = TicketKey(load_or_create_key(key_file)) if self.enabled else None
        self.codes = proto.enum("CID_EXT_TICKET_VERIFY_RSP", "result_code")
        self.m_issued = metrics.counter("biz_tickets_issued_total", "resumption tickets issued")
        self.m_accepted = metrics.counter("biz_ticket_logins_total", "ticket logins accepted")
        self.m_refused: dict[TicketError, Counter] = {
            reason: metrics.counter(
                f"biz_ticket_refused_{reason.name.lower()}_total", f"tickets refused: {reason.value}"
            )
            for reason in TicketError
        }
        self.m_revoked = metrics.counter("biz_ticket_revocations_total", "ticket sessions revoked")

    @staticmethod
    def now() -> int:
        """Unix seconds."""
        return int(time.time())

    def code(self, reason: TicketError | None) -> int:
        """The IM.Ext.TicketResult number of a refusal (None: TICKET_OK)."""
        return self.codes["TICKET_OK" if reason is None else _RESULT_NAMES[reason]]

    async def issue(
        self,
        user_id: int,
        client_type: int,
        auth_time: int,
        device_id: bytes,
        previous: bytes,
        password_hash: str | None = None,
    ) -> tuple[bytes, int, bytes]:
        """(ticket, expires, session id) for a logged-in connection; `previous` (the connection's earlier
        ticket session) is retired. TicketRefused if the account cannot log in or the chain is too old.
        `password_hash`: the user's stored hash if the caller just read it (saves a read)."""
        assert self.key is not None
        now = self.now()
        if password_hash is None:
            creds = await self.storage.get_credentials_by_id(user_id)
            if creds is None or creds.status != int(UserStatus.NORMAL):
                raise TicketRefused(TicketError.DISABLED)
            password_hash = creds.password_hash
        auth_time = min(auth_time or now, now)
        if now >= auth_time + self.max_age:
            raise TicketRefused(TicketError.EXPIRED)
        data, claims = self.key.issue(
            user_id=user_id,
            client_type=client_type,
            now=now,
            ttl=self.ttl,
            auth_time=auth_time,
            max_age=self.max_age,
            password_hash=password_hash,
            device_id=device_id,
        )
        if previous:
            await self.revoke(previous, user_id)
        self.m_issued.inc()
        return data, claims.expires, claims.session_id

    async def verify(self, data: bytes, client_type: int, device_id: bytes) -> tuple[int, int, str]:
        """(user id, auth time, stored password hash) of a presented ticket, consuming it; TicketRefused
        with the reason."""
        assert self.key is not None
        now = self.now()
        try:
            claims = self.key.check(data, client_type=client_type, device_id=device_id, now=now)
            # The current policy bounds every ticket too: after `ttl` or `max_age` was lowered, older tickets
            # expire by it, and a revocation record (kept `ttl` from its revocation) outlives any ticket.
            if now >= claims.issued + self.ttl or now >= claims.auth_time + self.max_age:
                raise TicketRefused(TicketError.EXPIRED)
            creds = await self.storage.get_credentials_by_id(claims.user_id)
            if creds is None or creds.status != int(UserStatus.NORMAL):
                raise TicketRefused(TicketError.DISABLED)
            if self.key.password_fp(creds.password_hash) != claims.password_fp:
                raise TicketRefused(TicketError.PASSWORD_CHANGED)
            if not await self.storage.consume_ticket_session(
                claims.session_id, claims.user_id, claims.expires, now
            ):
                raise TicketRefused(TicketError.REVOKED)
        except TicketRefused as exc:
            self.m_refused[exc.reason].inc()
            raise
        self.m_accepted.inc()
        return claims.user_id, claims.auth_time, creds.password_hash

    async def revoke(self, session_id: bytes, user_id: int) -> None:
        """Mark a session's ticket dead until it would have expired anyway (at most `ttl` from now)."""
        now = self.now()
        if await self.storage.consume_ticket_session(session_id, user_id, now + self.ttl, now):
            self.m_revoked.inc()


class TicketHandlers:
    """The three internal ticket commands. Mixed into BizService."""

    storage: Storage
    proto: Proto
    tickets: TicketService | None

    def _ticket_codes(self) -> dict[str, int]:
        return self.proto.enum("CID_EXT_TICKET_VERIFY_RSP", "result_code")

    async def on_cid_ext_ticket_issue_req(self, ctx: Context, msg: Any) -> Any:
        """A ticket for a logged-in connection of `msg.user_id` (the relay envelope's user must match)."""
        user_id = ctx.user_id
        rsp: Any = self.proto.new("CID_EXT_TICKET_ISSUE_RSP")
        svc = self.tickets
        if svc is None or svc.key is None or msg.user_id != user_id:
            rsp.result_code = self._ticket_codes()["TICKET_UNAVAILABLE"]
            return rsp
        try:
            ticket, expires, session_id = await svc.issue(
                user_id, msg.client_type, msg.auth_time, msg.device_id, msg.previous_session
            )
        except TicketRefused as exc:
            rsp.result_code = svc.code(exc.reason)
            return rsp
        rsp.result_code, rsp.ticket, rsp.expire_time = svc.code(None), ticket, expires
        rsp.session_id = session_id
        return rsp

    async def on_cid_ext_ticket_verify_req(self, ctx: Context, msg: Any) -> Any:
        """Check and consume a ticket; on success the profile and the successor ticket."""
        rsp: Any = self.proto.new("CID_EXT_TICKET_VERIFY_RSP")
        svc = self.tickets
        if svc is None or svc.key is None:
            rsp.result_code = self._ticket_codes()["TICKET_UNAVAILABLE"]
            rsp.result_string = "tickets are switched off"
            return rsp
        try:
            uid, auth_time, password_hash = await svc.verify(msg.ticket, msg.client_type, msg.device_id)
            users = await self.storage.get_users([uid])
            if not users:
                raise TicketRefused(TicketError.DISABLED)
            ticket, expires, session_id = await svc.issue(
                uid, msg.client_type, auth_time, msg.device_id, b"", password_hash
            )
        except TicketRefused as exc:
            rsp.result_code, rsp.result_string = svc.code(exc.reason), exc.reason.value
            return rsp
        rsp.result_code = svc.code(None)
        fill_user(rsp.user_info, users[0])
        rsp.ticket, rsp.expire_time, rsp.session_id, rsp.auth_time = ticket, expires, session_id, auth_time
        return rsp

    async def on_cid_ext_ticket_revoke_req(self, ctx: Context, msg: Any) -> Any:
        """Record a logged-out or kicked session's ticket as dead."""
        rsp: Any = self.proto.new("CID_EXT_TICKET_REVOKE_RSP")
        svc = self.tickets
        if svc is None or not msg.session_id:
            rsp.result_code = self._ticket_codes()["TICKET_UNAVAILABLE"]
            return rsp
        await svc.revoke(msg.session_id, msg.user_id)
        rsp.result_code = svc.code(None)
        return rsp
