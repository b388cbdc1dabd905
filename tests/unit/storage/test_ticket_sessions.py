"""Storage: resumption-ticket sessions are consumed once, on both backends, and the records of expired
tickets are pruned; credentials by user id."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from runtime.storage import NewUser
from runtime.storage.errors import InvalidArgument


def test_a_ticket_session_is_consumed_once_and_pruned_after_expiry(make_store: Callable[..., Any]) -> None:
    async def body() -> None:
        async with make_store() as s:
            assert await s.consume_ticket_session(b"s1", 7, 1_000, 500) is True
            assert await s.consume_ticket_session(b"s1", 7, 1_000, 600) is False  # used: refused
            assert await s.consume_ticket_session(b"s2", 7, 1_000, 600) is True
            # After s1's ticket expired its record is pruned; the ticket itself is refused as expired first.
            assert await s.consume_ticket_session(b"s1", 7, 3_000, 2_000) is True
            racers = await asyncio.gather(
                *(s.consume_ticket_session(b"s3", 7, 9_000, 2_000) for _ in range(8))
            )
            assert sorted(racers) == [False] * 7 + [True]
            for bad in (b"", b"x" * 65):
                with pytest.raises(InvalidArgument):
                    await s.consume_ticket_session(bad, 7, 1_000, 500)

    asyncio.run(body())


def test_credentials_by_id(make_store: Callable[..., Any]) -> None:
    async def body() -> None:
        async with make_store() as s:
            user = await s.create_user(NewUser("alice", password_hash="h1"))
            creds = await s.get_credentials_by_id(user.id)
            assert creds is not None and (creds.user_id, creds.password_hash) == (user.id, "h1")
            assert await s.get_credentials_by_id(user.id + 1000) is None

    asyncio.run(body())
