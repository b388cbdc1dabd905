"""Account security layer: login failure counting that slows attackers without locking the owner out.

Three counters, each with exponential back-off once its free failures are spent (no hard lock anywhere):

- per (login name, address): an attacker guessing one account from one place (`pair_free`, default 5);
- per address: one place spraying many accounts (`address_free`, default 50: an office behind one NAT);
- per login name from addresses it never logged in from: many places guessing one account (`user_free`, 20).

After `n` failures beyond a counter's free ones, attempts are refused until `base_delay * 2**(n-1)` seconds
(capped at `max_delay`) after the last failure; a counter forgets after `window` seconds without failures.

A *known device* is a (login name, address) pair that logged in successfully within `known_for` seconds (or a
client holding a resumption ticket, which never reaches this check): it is exempt from the per-address and
per-login counters, so a stranger's failures elsewhere, or behind the same NAT on other accounts, never stop
the owner; only its own (login, address) counter applies. A success clears the pair's counter.

Counters live in a `FailureStore`: the cluster's storage (persisted across restarts, shared by every biz
instance: tables `login_failures` and `known_logins`) or, for tests and tools, `MemoryFailureStore`. Keys are
SHA-256 digests, so neither login names nor addresses of failed attempts are stored in clear.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

KNOWN_REFRESH = 24 * 3600  # a known device's last-seen time is rewritten at most this often


class Lock(Enum):
    """Why a login attempt is refused before any password check."""

    USER = "user"  # the (login, address) pair, or the login from unknown addresses, is backing off
    ADDRESS = "address"


@dataclass(frozen=True)
class LockoutPolicy:
    """Free failures per counter, the back-off after them, and how long counters and known devices last."""

    pair_free: int = 5
    address_free: int = 50
    user_free: int = 20
    base_delay: float = 1.0
    max_delay: float = 15 * 60
    window: float = 30 * 60
    known_for: float = 90 * 24 * 3600
    max_tracked: int = 100_000  # keys a MemoryFailureStore keeps; the oldest are evicted beyond this

    def delay(self, failures: int, free: int) -> float:
        """Seconds after the last failure during which attempts are refused."""
        over = failures - free
        if over <= 0:
            return 0.0
        return min(self.max_delay, self.base_delay * 2.0 ** min(over - 1, 40))


@dataclass(frozen=True)
class Refusal:
    """A refused attempt: which counter, and how many seconds until the next attempt may be checked."""

    lock: Lock
    retry_after: float


class FailureStore(Protocol):
    """Where the counters live (runtime.storage.Storage satisfies it)."""

    async def login_failures(self, keys: Sequence[str], since: float) -> dict[str, tuple[int, float]]: ...

    async def add_login_failure(self, keys: Sequence[str], now: float, window: float) -> None: ...

    async def clear_login_failures(self, keys: Sequence[str]) -> None: ...

    async def note_known_login(self, key: str, now: float, keep: float) -> None: ...

    async def is_known_login(self, key: str, since: float) -> bool: ...


def key(kind: str, *parts: str) -> str:
    """A counter's key: the kind, then a digest of its parts (no login name or address in clear)."""
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return f"{kind}:{digest}"


class MemoryFailureStore:
    """A process-local `FailureStore` (bounded: the least recently touched keys go first)."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._known: OrderedDict[str, float] = OrderedDict()

    async def login_failures(self, keys: Sequence[str], since: float) -> dict[str, tuple[int, float]]:
        found = {k: self._failures[k] for k in keys if k in self._failures}
        return {k: v for k, v in found.items() if v[1] >= since}

    async def add_login_failure(self, keys: Sequence[str], now: float, window: float) -> None:
        for k in dict.fromkeys(keys):
            n, last = self._failures.pop(k, (0, now))
            self._failures[k] = (1 if last < now - window else n + 1, now)
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)

    async def clear_login_failures(self, keys: Sequence[str]) -> None:
        for k in keys:
            self._failures.pop(k, None)

    async def note_known_login(self, key: str, now: float, keep: float) -> None:
        self._known.pop(key, None)
        self._known[key] = now
        while len(self._known) > self.max_keys:
            self._known.popitem(last=False)

    async def is_known_login(self, key: str, since: float) -> bool:
        seen = self._known.get(key)
        return seen is not None and seen >= since


class LoginLimiter:
    """The three counters over a `FailureStore` (default: in memory); the clock is wall time (persisted)."""

    def __init__(
        self,
        policy: LockoutPolicy | None = None,
        store: FailureStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy or LockoutPolicy()
        self.store: FailureStore = store or MemoryFailureStore(self.policy.max_tracked)
        self._clock = clock
        # Attempts on a login from unknown addresses being verified right now (this process): counted with
        # the login's failures, so guesses sent all at once from many addresses meet the limit too.
        self._inflight: dict[str, int] = {}

    @staticmethod
    def _keys(login_name: str, address: str) -> tuple[str, str, str]:
        return key("p", login_name, address), key("a", address), key("u", login_name)

    async def known(self, login_name: str, address: str) -> bool:
        """Whether this login succeeded from this address within `known_for`."""
        since = self._clock() - self.policy.known_for
        return await self.store.is_known_login(key("k", login_name, address), since)

    async def check(self, login_name: str, address: str) -> Refusal | None:
        """The refusal of this attempt, or None if its password may be checked."""
        p = self.policy
        now = self._clock()
        pair, addr, user = self._keys(login_name, address)
        known = await self.known(login_name, address)
        wanted = [pair] if known else [pair, addr, user]
        counts = await self.store.login_failures(wanted, now - p.window)
        worst: Refusal | None = None
        if not known:
            racing = max(0, self._inflight.get(user, 0) - 1)  # other attempts being checked right now
            failures = counts.get(user, (0, now))[0] + racing
            if racing and failures > p.user_free:
                worst = Refusal(Lock.USER, p.delay(failures, p.user_free))
        for k, free, lock in ((pair, p.pair_free, Lock.USER), (addr, p.address_free, Lock.ADDRESS)) + (
            ((user, p.user_free, Lock.USER),) if not known else ()
        ):
            if k not in counts:
                continue
            failures, last = counts[k]
            wait = last + p.delay(failures, free) - now
            if wait > 0 and (worst is None or wait > worst.retry_after):
                worst = Refusal(lock, wait)
        return worst

    def enter(self, login_name: str) -> None:
        """An attempt on the login starts (before `check`); `leave` once its outcome is recorded. Attempts in
        between count with the login's failures, so guesses sent all at once from many addresses meet the
        per-login limit too (in this process)."""
        user = key("u", login_name)
        self._inflight[user] = self._inflight.get(user, 0) + 1

    def leave(self, login_name: str) -> None:
        """The attempt `enter` noted is over."""
        user = key("u", login_name)
        left = self._inflight.get(user, 0) - 1
        if left > 0:
            self._inflight[user] = left
        else:
            self._inflight.pop(user, None)

    async def record_failure(self, login_name: str, address: str) -> None:
        """Count a failed attempt (the login's counter only when the address is not one it is known from)."""
        pair, addr, user = self._keys(login_name, address)
        known = await self.known(login_name, address)
        keys = [pair] if known else [pair, addr, user]
        await self.store.add_login_failure(keys, self._clock(), self.policy.window)

    async def record_success(self, login_name: str, address: str) -> None:
        """A successful login clears its pair's counter and makes the address a known device (the login's
        counter is left to age: strangers guessing elsewhere keep backing off after the owner logged in)."""
        pair, known = key("p", login_name, address), key("k", login_name, address)
        now = self._clock()
        # Writes only when something changes: most logins come from a device seen within the day and with no
        # failures to forget, and then cost two reads, not a write (a login storm is not a write storm).
        if await self.store.login_failures([pair], now - self.policy.window):
            await self.store.clear_login_failures([pair])
        if not await self.store.is_known_login(known, now - KNOWN_REFRESH):
            await self.store.note_known_login(known, now, self.policy.known_for)

    async def failures(self, login_name: str, address: str) -> dict[str, int]:
        """Failures inside the window of the attempt's counters: `pair`, `address`, `user`."""
        pair, addr, user = self._keys(login_name, address)
        counts = await self.store.login_failures([pair, addr, user], self._clock() - self.policy.window)
        return {
            name: counts.get(k, (0, 0.0))[0]
            for name, k in (("pair", pair), ("address", addr), ("user", user))
        }
