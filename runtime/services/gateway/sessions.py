"""Runtime services layer (gateway): long-poll sessions: a token per HTTP user, an event queue, one poll.

Every push for a session gets the next sequence number and stays queued until the client acknowledges it
(`poll?since=N` or `POST /api/ack` drops everything up to N), so a poll lost on the way to the client is
answered again by the next one. The queue is bounded: when a client stops polling, the oldest events go and
the next poll says `gap: true` (the client then re-reads unread counts and history, as after a reconnect).
A session is read either by polls or by one WebSocket (`socket`); while a socket is attached the session is
not idle.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

MAX_QUEUE = 2000
SEEN_LIMIT = 4096


@dataclass
class TokenBucket:
    """`rate` events per second, bursts up to `burst`."""

    rate: float
    burst: float
    tokens: float = -1.0
    stamp: float = field(default_factory=time.monotonic)

    def take(self, now: float | None = None) -> bool:
        """Spend one token; False when empty."""
        now = time.monotonic() if now is None else now
        if self.tokens < 0:
            self.tokens = self.burst
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Session:
    """One logged-in HTTP user (one device)."""

    def __init__(self, user_id: int, client_type: int, token: str) -> None:
        self.user_id = user_id
        self.client_type = client_type
        self.token = token
        self.events: deque[tuple[int, dict[str, Any]]] = deque()
        self.next_seq = 1
        self.gap = False
        self.closed = False
        self.last_seen = time.monotonic()
        self.seen: OrderedDict[tuple[int, int, int], None] = OrderedDict()  # delivered chat keys
        self.sends = TokenBucket(20.0, 20.0)
        self.auth_time = int(time.time())  # the password login this session descends from
        self.ticket_session = b""  # session id of the resumption ticket handed to this session
        self.typing = TokenBucket(5.0, 5.0)
        self.socket: Any = None  # the attached WebSocket connection (runtime.services.gateway.websocket)
        self._changed = asyncio.Event()
        self._poll_generation = 0

    def push(self, event: dict[str, Any]) -> int:
        """Queue an event; returns its sequence number."""
        seq = self.next_seq
        self.next_seq += 1
        self.events.append((seq, {**event, "seq": seq}))
        while len(self.events) > MAX_QUEUE:
            self.events.popleft()
            self.gap = True
        self._changed.set()
        return seq

    def first_delivery(self, key: tuple[int, int, int]) -> bool:
        """False if a chat message with this key was already queued (a router retry, a duplicate relay)."""
        if key in self.seen:
            return False
        self.seen[key] = None
        while len(self.seen) > SEEN_LIMIT:
            self.seen.popitem(last=False)
        return True

    def ack(self, upto: int) -> None:
        """Drop events up to and including `upto`."""
        while self.events and self.events[0][0] <= upto:
            self.events.popleft()

    def pending(self, since: int) -> list[dict[str, Any]]:
        """Queued events after `since`."""
        return [ev for seq, ev in self.events if seq > since]

    async def wait(self, since: int, timeout: float) -> tuple[list[dict[str, Any]], bool]:
        """Events after `since`, waiting up to `timeout` for some; a newer poll ends an older one early."""
        self.last_seen = time.monotonic()
        self.ack(since)
        self._poll_generation += 1
        mine = self._poll_generation
        self._changed.set()  # wake an older poll of this session
        await asyncio.sleep(0)
        deadline = time.monotonic() + timeout
        while not self.closed and mine == self._poll_generation:
            events = self.pending(since)
            if events:
                break
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):  # no task per wait, unlike wait_for
                    await self._changed.wait()
            except TimeoutError:
                break
        self.last_seen = time.monotonic()
        gap, self.gap = self.gap, False
        return self.pending(since), gap

    async def next_events(self, after: int) -> list[dict[str, Any]]:
        """Queued events after `after`, waiting until there is one or the session closes (for a socket; it
        acknowledges nothing and does not end waiting polls)."""
        while True:
            events = self.pending(after)
            if events or self.closed:
                return events
            self._changed.clear()
            await self._changed.wait()

    def take_gap(self) -> bool:
        """Whether events were dropped since the last delivery (and forget it)."""
        gap, self.gap = self.gap, False
        return gap

    def close(self) -> None:
        """End the session (a waiting poll returns at once)."""
        self.closed = True
        self._changed.set()


class SessionTable:
    """Sessions by token and by user."""

    def __init__(self, idle_timeout: float) -> None:
        self.idle_timeout = idle_timeout
        self.by_token: dict[str, Session] = {}
        self.by_user: dict[int, list[Session]] = {}

    def create(self, user_id: int, client_type: int) -> Session:
        """A new session with an unguessable token."""
        session = Session(user_id, client_type, secrets.token_urlsafe(32))
        self.by_token[session.token] = session
        self.by_user.setdefault(user_id, []).append(session)
        return session

    def get(self, token: str) -> Session | None:
        """The live session of a token."""
        session = self.by_token.get(token)
        return None if session is None or session.closed else session

    def of(self, user_id: int) -> list[Session]:
        """Live sessions of a user."""
        return self.by_user.get(user_id, [])

    def remove(self, session: Session) -> bool:
        """Forget a session; True if it was live."""
        if self.by_token.pop(session.token, None) is None:
            return False
        sessions = self.by_user.get(session.user_id, [])
        if session in sessions:
            sessions.remove(session)
        if not sessions:
            self.by_user.pop(session.user_id, None)
        session.close()
        return True

    def idle(self, now: float) -> list[Session]:
        """Sessions whose client stopped polling (and has no socket open)."""
        return [
            s for s in self.by_token.values() if s.socket is None and now - s.last_seen > self.idle_timeout
        ]

    def __len__(self) -> int:
        return len(self.by_token)
