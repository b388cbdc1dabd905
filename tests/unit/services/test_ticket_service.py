"""biz's ticket service over real SQLite (no sockets): issue, verify-and-consume, revoke, and the current
policy bounding tickets issued under an older one."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from generated.teamtalk.registry import REGISTRY
from runtime.auth import PasswordHasher
from runtime.auth.tickets import TicketError, TicketRefused
from runtime.monitor.metrics import Metrics
from runtime.services.biz.tickets import TicketService
from runtime.services.links import Proto
from runtime.storage import NewUser
from runtime.storage.sqlite import SqliteStorage

FAST = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000

    def __call__(self) -> int:
        return self.now


def run(body: Any, tmp_path: Path) -> None:
    async def main() -> None:
        storage = SqliteStorage(tmp_path)
        await storage.open()
        try:
            user = await storage.create_user(
                NewUser("kim", password_hash=PasswordHasher(**FAST).hash_plaintext("pw"))
            )
            await body(storage, user.id)
        finally:
            await storage.close()

    asyncio.run(main())


def service(storage: SqliteStorage, tmp_path: Path, clock: Clock, **config: Any) -> TicketService:
    svc = TicketService(storage, config, tmp_path, Metrics(), Proto(REGISTRY))
    svc.now = clock  # type: ignore[method-assign]
    return svc


def test_issue_verify_consume_and_revoke(tmp_path: Path) -> None:
    async def body(storage: SqliteStorage, uid: int) -> None:
        clock = Clock()
        svc = service(storage, tmp_path, clock)
        ticket, expires, sid = await svc.issue(uid, 1, clock.now, b"", b"")
        assert expires == clock.now + 900 and len(sid) == 16
        assert (tmp_path / "ticket.key").stat().st_mode & 0o777 == 0o600
        assert (await svc.verify(ticket, 1, b""))[:2] == (uid, clock.now)
        with pytest.raises(TicketRefused) as used:
            await svc.verify(ticket, 1, b"")
        assert used.value.reason is TicketError.REVOKED
        # Renewing from a connection retires the connection's previous ticket.
        first, _, first_sid = await svc.issue(uid, 1, clock.now, b"", b"")
        second, _, _ = await svc.issue(uid, 1, clock.now, b"", first_sid)
        with pytest.raises(TicketRefused) as retired:
            await svc.verify(first, 1, b"")
        assert retired.value.reason is TicketError.REVOKED
        assert (await svc.verify(second, 1, b""))[0] == uid
        counts = svc.m_refused[TicketError.REVOKED].value
        assert counts == 2 and svc.m_issued.value == 3 and svc.m_accepted.value == 2

    run(body, tmp_path)


def test_current_policy_bounds_tickets_issued_under_an_older_one(tmp_path: Path) -> None:
    async def body(storage: SqliteStorage, uid: int) -> None:
        clock = Clock()
        generous = service(storage, tmp_path, clock, ttl=3600, max_age=86400)
        fresh, _, _ = await generous.issue(uid, 1, clock.now, b"", b"")
        fresh2, _, _ = await generous.issue(uid, 1, clock.now, b"", b"")
        old_login, _, _ = await generous.issue(uid, 1, clock.now - 80_000, b"", b"")
        clock.now += 120
        # Restarted with a lower max_age: a ticket from a password login older than it is expired ...
        lower_age = service(storage, tmp_path, clock, ttl=3600, max_age=3600)
        with pytest.raises(TicketRefused) as too_old:
            await lower_age.verify(old_login, 1, b"")
        assert too_old.value.reason is TicketError.EXPIRED
        assert (await lower_age.verify(fresh, 1, b""))[0] == uid  # ... a recent one is not
        # Restarted with a lower ttl: tickets older than it are expired although they carry a later expiry.
        lower_ttl = service(storage, tmp_path, clock, ttl=60, max_age=86400)
        with pytest.raises(TicketRefused) as stale:
            await lower_ttl.verify(fresh2, 1, b"")
        assert stale.value.reason is TicketError.EXPIRED
        # The chain ends max_age after the password login: no renewal beyond it.
        with pytest.raises(TicketRefused) as no_renewal:
            await lower_age.issue(uid, 1, clock.now - 4000, b"", b"")
        assert no_renewal.value.reason is TicketError.EXPIRED

    run(body, tmp_path)


def test_disabled_accounts_and_changed_passwords(tmp_path: Path) -> None:
    async def body(storage: SqliteStorage, uid: int) -> None:
        clock = Clock()
        svc = service(storage, tmp_path, clock)
        ticket, _, _ = await svc.issue(uid, 1, clock.now, b"", b"")
        await storage.set_password_hash(uid, PasswordHasher(**FAST).hash_plaintext("new"))
        with pytest.raises(TicketRefused) as changed:
            await svc.verify(ticket, 1, b"")
        assert changed.value.reason is TicketError.PASSWORD_CHANGED
        with pytest.raises(TicketRefused) as unknown:
            await svc.issue(uid + 1000, 1, clock.now, b"", b"")
        assert unknown.value.reason is TicketError.DISABLED
        off = service(storage, tmp_path / "off", clock, enabled=False)
        assert off.key is None and not (tmp_path / "off" / "ticket.key").exists()

    run(body, tmp_path)
