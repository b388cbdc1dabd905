"""Runtime stage layer, transport stage: ack tracking with retransmit, send-wait ordering and dedup (sans-IO).

Time is passed in (`now`); the owners (msg service delivery, `ClientCore`) drive these from their timers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from runtime.stages.policy import choice, parse_duration

P = TypeVar("P")
K = TypeVar("K", bound=Hashable)

DEFAULT_TIMEOUT = 5.0
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_DEDUP_WINDOW = 600.0


@dataclass(frozen=True)
class TransportPolicy:
    """A command's `transport` policy, parsed."""

    ack: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    retransmit: bool = False
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    dedup: bool = False
    # What a retransmit is a repeat within: one connection (its seq and content), or any connection of the
    # sender (a second device, or the same client after a reconnect, repeating seq and content matches too).
    dedup_per_connection: bool = False
    dedup_window: float = DEFAULT_DEDUP_WINDOW
    send_wait: bool = False
    ephemeral: bool = False

    @classmethod
    def from_mapping(cls, policy: Mapping[str, Any]) -> TransportPolicy:
        return cls(
            ack=policy.get("ack"),
            timeout=parse_duration(policy.get("timeout", DEFAULT_TIMEOUT)),
            retransmit=choice(policy, "retransmit", ("none", "until_ack"), "none") == "until_ack",
            max_attempts=int(policy.get("max_attempts", DEFAULT_MAX_ATTEMPTS)),
            dedup=choice(policy, "dedup", _DEDUP_SCOPES, "none") != "none",
            dedup_per_connection=policy.get("dedup") == "per_connection",
            dedup_window=parse_duration(policy.get("dedup_window", DEFAULT_DEDUP_WINDOW)),
            send_wait=choice(policy, "ordering", ("none", "send_wait"), "none") == "send_wait",
            ephemeral=bool(policy.get("ephemeral", False)),
        )


_DEDUP_SCOPES = ("none", "per_connection", "per_sender")


class _Pending(Generic[P]):
    __slots__ = ("attempts", "deadline", "payload")

    def __init__(self, payload: P, deadline: float) -> None:
        self.payload = payload
        self.deadline = deadline
        self.attempts = 1


class AckTracker(Generic[K, P]):
    """Messages sent and not yet acknowledged. `due` says which to resend and which gave up after the cap."""

    def __init__(
        self, timeout: float, *, retransmit: bool = True, max_attempts: int = DEFAULT_MAX_ATTEMPTS
    ) -> None:
        self.timeout = timeout
        self.retransmit = retransmit
        self.max_attempts = max(1, max_attempts)
        self._pending: dict[K, _Pending[P]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, key: object) -> bool:
        return key in self._pending

    def track(self, key: K, payload: P, now: float) -> None:
        """Start waiting for `key`'s ack (first attempt sent at `now`)."""
        self._pending[key] = _Pending(payload, now + self.timeout)

    def ack(self, key: K) -> P | None:
        """The ack for `key` arrived; returns the payload, or None for an unknown or duplicate ack."""
        entry = self._pending.pop(key, None)
        return entry.payload if entry is not None else None

    def due(self, now: float) -> tuple[list[tuple[K, P]], list[tuple[K, P]]]:
        """(to resend now, given up). Resent entries count an attempt and get a new deadline."""
        resend: list[tuple[K, P]] = []
        failed: list[tuple[K, P]] = []
        for key, entry in list(self._pending.items()):
            if entry.deadline > now:
                continue
            if self.retransmit and entry.attempts < self.max_attempts:
                entry.attempts += 1
                entry.deadline = now + self.timeout
                resend.append((key, entry.payload))
            else:
                del self._pending[key]
                failed.append((key, entry.payload))
        return resend, failed


class SendWait(Generic[K, P]):
    """Send-wait ordering per stream: message n+1 is released only after message n is acknowledged."""

    def __init__(self) -> None:
        self._inflight: dict[Hashable, K] = {}
        self._queued: dict[Hashable, deque[tuple[K, P]]] = {}

    def submit(self, stream: Hashable, key: K, payload: P) -> bool:
        """Offer a message; True means send it now, False means it was queued behind an unacked one."""
        if stream in self._inflight:
            self._queued.setdefault(stream, deque()).append((key, payload))
            return False
        self._inflight[stream] = key
        return True

    def ack(self, stream: Hashable, key: K) -> tuple[K, P] | None:
        """`key` was acked (or given up); returns the next message of the stream to send now, if any."""
        if self._inflight.get(stream) != key:
            return None  # stale or duplicate ack: ordering state is unchanged
        queue = self._queued.get(stream)
        if not queue:
            del self._inflight[stream]
            self._queued.pop(stream, None)
            return None
        nxt = queue.popleft()
        self._inflight[stream] = nxt[0]
        return nxt

    def inflight(self, stream: Hashable) -> K | None:
        """The key currently awaiting its ack on `stream`."""
        return self._inflight.get(stream)


_UNSET: Any = object()


class DedupWindow:
    """Remembers (sender, key) for at least `window` seconds (and less than twice that), with the reply given,
    so a retransmit is answered again without being processed (and stored) twice. Bounded by `max_entries`.

    Two generations of plain dicts: entries go into the young one; when it is `window` old (or holds half of
    `max_entries`) it becomes the old one and the previous old one is dropped whole. A lookup is one or two
    dict probes and expiry costs nothing per entry, where an ordered map with per-entry expiry cost a linked
    list update and a tuple per message on the msg server's hot path.
    """

    def __init__(self, window: float = DEFAULT_DEDUP_WINDOW, max_entries: int = 1_000_000) -> None:
        self.window = window
        self.max_entries = max_entries
        self._young: dict[Hashable, Any] = {}
        self._old: dict[Hashable, Any] = {}
        self._rotate_at = float("-inf")  # when the young generation turns old (set by the first entry)

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def get(self, sender: Hashable, key: Hashable, now: float, default: Any = None) -> Any:
        """The remembered result of (sender, key), or `default` if it was not seen (or has expired)."""
        if now >= self._rotate_at:
            self._rotate(now)
        ident = (sender, key)
        hit = self._young.get(ident, _UNSET)
        if hit is _UNSET:
            hit = self._old.get(ident, default)
        return hit

    def remember(self, sender: Hashable, key: Hashable, result: Any, now: float) -> None:
        """Record that (sender, key) was processed with `result`."""
        if now >= self._rotate_at:
            self._rotate(now)
        ident = (sender, key)
        young = self._young
        young[ident] = result
        self._old.pop(ident, None)
        if len(young) * 2 >= self.max_entries:
            self._rotate(now, full=True)

    def replace(self, sender: Hashable, key: Hashable, old: Any, new: Any) -> bool:
        """Swap the remembered result of (sender, key) from `old` to `new` (compared by identity), keeping
        its age; False if the entry is gone or holds something else."""
        ident = (sender, key)
        for gen in (self._young, self._old):
            if gen.get(ident, _UNSET) is old:
                gen[ident] = new
                return True
        return False

    def forget(self, sender: Hashable, key: Hashable) -> None:
        """Drop (sender, key): its next copy is processed as new."""
        ident = (sender, key)
        self._young.pop(ident, None)
        self._old.pop(ident, None)

    def _rotate(self, now: float, full: bool = False) -> None:
        # Every young entry was made before `_rotate_at` (any later call rotates first), so it is kept one
        # more generation unless the young generation began two windows ago (then all of it has expired).
        young_since = self._rotate_at - self.window
        self._old = self._young if full or now - young_since < 2 * self.window else {}
        self._young = {}
        self._rotate_at = now + self.window
