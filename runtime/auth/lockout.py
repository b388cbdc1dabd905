"""Account security layer: login failure counting with separate per-user and per-address limits."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class Lock(Enum):
    """Why a login attempt is refused before any password check."""

    USER = "user"
    ADDRESS = "address"


@dataclass(frozen=True)
class LockoutPolicy:
    """Locked when failures within `window` seconds exceed the limit (TeamTalk: more than 10 in 30 min)."""

    max_user_failures: int = 10
    max_address_failures: int = 50
    window: float = 30 * 60
    max_tracked: int = 100_000  # keys kept per table; the oldest are evicted beyond this


class _FailureTable:
    """Recent failure times per key, bounded in keys and in times per key."""

    def __init__(self, limit: int, window: float, max_keys: int) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._times: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._times.get(key)
        if times is None:
            return None
        while times and now - times[0] >= self.window:
            times.popleft()
        if not times:
            del self._times[key]
            return None
        return times

    def locked(self, key: str, now: float) -> bool:
        times = self._recent(key, now)
        return times is not None and len(times) > self.limit

    def add(self, key: str, now: float) -> None:
        times = self._recent(key, now)
        if times is None:
            times = self._times[key] = deque(maxlen=self.limit + 1)
        times.append(now)
        self._times.move_to_end(key)
        while len(self._times) > self.max_keys:
            self._times.popitem(last=False)

    def clear(self, key: str) -> None:
        self._times.pop(key, None)

    def count(self, key: str, now: float) -> int:
        times = self._recent(key, now)
        return 0 if times is None else len(times)


class LoginLimiter:
    """In-memory brute-force guard: one table keyed by login name, one keyed by client address."""

    def __init__(
        self, policy: LockoutPolicy | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy or LockoutPolicy()
        self._clock = clock
        p = self.policy
        self._users = _FailureTable(p.max_user_failures, p.window, p.max_tracked)
        self._addresses = _FailureTable(p.max_address_failures, p.window, p.max_tracked)

    def check(self, login_name: str, address: str) -> Lock | None:
        """The lock that refuses this attempt, or None if it may proceed."""
        now = self._clock()
        if self._addresses.locked(address, now):
            return Lock.ADDRESS
        if self._users.locked(login_name, now):
            return Lock.USER
        return None

    def record_failure(self, login_name: str, address: str) -> None:
        """Count a failed attempt against both the login name and the address."""
        now = self._clock()
        self._users.add(login_name, now)
        self._addresses.add(address, now)

    def record_success(self, login_name: str) -> None:
        """A successful login clears the user's counter (the address counter ages out on its own)."""
        self._users.clear(login_name)

    def failures(self, login_name: str) -> int:
        """Failures of the login name still inside the window."""
        return self._users.count(login_name, self._clock())
