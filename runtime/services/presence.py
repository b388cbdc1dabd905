"""Runtime services layer (shared): the spec's presence policy, a sans-IO coalescer and its asyncio driver.

Presence is pushed as the spec's `presence:` policy says (docs/spec-language.md, 'Presence'): to which clients
(audience and client class), and coalesced per recipient: only the latest state of each user is kept and a
recipient is flushed at most once per interval. The first change after a quiet interval goes out at once;
changes arriving while a recipient is held wait for its next flush. A flush of fewer than `batch_from` users
is one `notify` push per user; a larger one is a single `batch` push carrying the list. So a storm of N
changes costs recipients x flushes frames, not N x recipients.

Routers coalesce what they send to msg servers and gateways (one relay per server per interval); msg servers
and gateways coalesce again per client (several routers may speak for different servers). Status queries are
answered from the router's table and never wait for a flush.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf.descriptor import FieldDescriptor

from runtime.registry import Registry

log = logging.getLogger("ttgen.presence")

# Users per batch push: a larger flush (a msg server lost with all its users, say) is split, so that a frame
# stays far below the frame limit (a user stat is about 10 bytes; TeamTalk's Android client caps frames at
# 400 KiB).
MAX_BATCH = 8192

K = TypeVar("K")
States = dict[int, int]  # user id -> status value


class Everyone:
    """The recipient key of a company-wide audience: every local client of the policy's class."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "EVERYONE"


EVERYONE = Everyone()


@dataclass(frozen=True)
class PresencePolicy:
    """The spec's presence policy as the generated registry carries it (`Registry.presence`)."""

    audience: frozenset[str]
    clients: str  # pc | mobile | all
    interval: float  # seconds; 0: flushed as soon as the event loop gets to it
    notify: str
    notify_field: str
    online: int
    offline: int
    batch: str | None = None
    batch_field: str | None = None
    batch_owner_field: str | None = None
    batch_from: int = 2

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> PresencePolicy:
        """Build from the registry's `PRESENCE` mapping."""
        return cls(
            audience=frozenset(data["audience"]),
            clients=str(data["clients"]),
            interval=int(data["coalesce_ms"]) / 1000.0,
            notify=str(data["notify"]),
            notify_field=str(data["notify_field"]),
            online=int(data["online"]),
            offline=int(data["offline"]),
            batch=data.get("batch"),
            batch_field=data.get("batch_field"),
            batch_owner_field=data.get("batch_owner_field"),
            batch_from=int(data.get("batch_from", 2)),
        )

    @classmethod
    def from_registry(cls, registry: Registry) -> PresencePolicy:
        """The registry's policy; a spec that runs routers and msg servers must declare one."""
        if registry.presence is None:
            raise ValueError(
                f"spec {registry.spec_name} declares no presence policy (`presence:` in ttgen.yaml), which "
                "routers, msg servers and gateways need"
            )
        return cls.from_mapping(registry.presence)

    @property
    def company(self) -> bool:
        """Every client of the class receives every change (TeamTalk)."""
        return "company" in self.audience

    def wants(self, mobile: bool) -> bool:
        """Whether a connection of this class receives presence pushes."""
        return self.clients == "all" or (self.clients == "mobile") == mobile

    def status(self, online: bool) -> int:
        """The status value of online or offline."""
        return self.online if online else self.offline


class Coalescer(Generic[K]):
    """Sans-IO: per recipient, the latest status of each changed user; a recipient becomes due at most once
    per `interval` (at once after a quiet interval). The caller passes the clock's `now` to every call."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._pending: dict[K, tuple[float, States]] = {}  # recipient -> (due, states)
        self._last: dict[K, float] = {}  # recipient -> time of its last flush
        self._heap: list[tuple[float, int, K]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        """Recipients with something pending."""
        return len(self._pending)

    def put(self, recipient: K, user_id: int, status: int, now: float) -> None:
        """Record a user's latest status for a recipient."""
        entry = self._pending.get(recipient)
        if entry is None:
            last = self._last.get(recipient)
            due = now if last is None else max(now, last + self.interval)
            entry = (due, {})
            self._pending[recipient] = entry
            heapq.heappush(self._heap, (due, next(self._order), recipient))
        entry[1][user_id] = status

    def next_due(self) -> float | None:
        """When the earliest pending recipient is due (None: nothing pending)."""
        heap = self._heap
        while heap:
            due, _, recipient = heap[0]
            entry = self._pending.get(recipient)
            if entry is not None and entry[0] == due:
                return due
            heapq.heappop(heap)  # a dropped recipient's entry
        return None

    def pop_due(self, now: float) -> list[tuple[K, States]]:
        """Every recipient due at `now` with its states, in due order; each counts as flushed at `now`."""
        out: list[tuple[K, States]] = []
        heap, pending = self._heap, self._pending
        while heap and heap[0][0] <= now:
            due, _, recipient = heapq.heappop(heap)
            entry = pending.get(recipient)
            if entry is None or entry[0] != due:
                continue
            del pending[recipient]
            self._last[recipient] = now
            out.append((recipient, entry[1]))
        if len(self._last) > 2 * len(pending) + 256:
            self._forget_quiet(now)
        return out

    def drop(self, recipient: K) -> None:
        """Forget a recipient (a closed connection): its pending states are discarded."""
        self._pending.pop(recipient, None)
        self._last.pop(recipient, None)

    def _forget_quiet(self, now: float) -> None:
        # A recipient flushed an interval ago or earlier is due at once again: the same as never flushed.
        quiet = [r for r, t in self._last.items() if t + self.interval <= now and r not in self._pending]
        for r in quiet:
            del self._last[r]


class Flusher(Generic[K]):
    """Drives a `Coalescer` on the running event loop: `deliver(recipient, states)` runs when one is due."""

    def __init__(
        self,
        interval: float,
        deliver: Callable[[K, States], None],
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.coalescer: Coalescer[K] = Coalescer(interval)
        self._deliver = deliver
        self._clock = clock
        self._handle: asyncio.TimerHandle | None = None
        self._armed_for = 0.0

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def put(self, recipient: K, user_id: int, status: int) -> None:
        """Queue a user's status for a recipient."""
        self.coalescer.put(recipient, user_id, status, self._now())
        self._arm()

    def put_many(self, recipient: K, states: Mapping[int, int]) -> None:
        """Queue several users' statuses for a recipient."""
        now = self._now()
        for user_id, status in states.items():
            self.coalescer.put(recipient, user_id, status, now)
        self._arm()

    def drop(self, recipient: K) -> None:
        """Forget a recipient."""
        self.coalescer.drop(recipient)

    def close(self) -> None:
        """Stop the timer (pending states are discarded)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self) -> None:
        due = self.coalescer.next_due()
        if due is None:
            return
        if self._handle is not None:
            if self._armed_for <= due:
                return
            self._handle.cancel()
        loop = asyncio.get_running_loop()
        # The loop's clock is the coalescer's clock unless a test injected another: then fire after the delay.
        at = due if self._clock is None else loop.time() + max(0.0, due - self._now())
        self._armed_for = due
        self._handle = loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self._handle = None
        for recipient, states in self.coalescer.pop_due(self._now()):
            try:
                self._deliver(recipient, states)
            except Exception:
                log.exception("presence flush to %r failed", recipient)
        self._arm()


_VARINT_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
    }
)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


class Push:
    """One presence push of a flush: the command and, per recipient, the message and its serialized body.

    A batch message's owner field (the recipient's user id) differs per recipient; the rest of the body is
    serialized once and the owner field prefixed (protobuf fields may come in any order; the result equals
    the message's own serialization when the owner is its lowest-numbered field)."""

    __slots__ = ("_owner", "_prefix_tag", "_tail", "body", "command", "msg")

    def __init__(self, command: str, msg: Any, owner: str | None = None) -> None:
        self.command = command
        self.msg = msg
        self._owner = owner
        self._prefix_tag = b""
        self._tail = b""
        self.body: bytes | None = None
        if owner is None:
            self.body = msg.SerializeToString()
            return
        fd = msg.DESCRIPTOR.fields_by_name[owner]
        if fd.type in _VARINT_TYPES:
            msg.ClearField(owner)
            self._tail = msg.SerializePartialToString()
            self._prefix_tag = _varint(fd.number << 3)

    def for_recipient(self, user_id: int) -> tuple[Any, bytes]:
        """(message, body) addressed to a user; the message object is shared and re-addressed per call."""
        if self._owner is None:
            assert self.body is not None
            return self.msg, self.body
        setattr(self.msg, self._owner, user_id)
        if self._prefix_tag:
            return self.msg, self._prefix_tag + _varint(user_id) + self._tail
        return self.msg, self.msg.SerializeToString()


class PresenceCodec:
    """Builds and reads the policy's pushes (notify and batch messages) from the registry's classes."""

    def __init__(self, policy: PresencePolicy, registry: Registry) -> None:
        self.policy = policy
        self.notify_info = registry.by_name(policy.notify)
        self.batch_info = registry.by_name(policy.batch) if policy.batch else None
        self.commands = {self.notify_info.name} | ({self.batch_info.name} if self.batch_info else set())
        self.command_ids = {self.notify_info.command_id} | (
            {self.batch_info.command_id} if self.batch_info else set()
        )

    def pushes(self, states: Mapping[int, int]) -> list[Push]:
        """The pushes of one flush: one notify per user, or one batch from `batch_from` users on (split into
        batches of at most `MAX_BATCH` users)."""
        policy = self.policy
        if self.batch_info is not None and policy.batch_field and len(states) >= policy.batch_from:
            users = sorted(states)
            pushes = []
            for start in range(0, len(users), MAX_BATCH):
                msg = self.batch_info.message_class()
                items = getattr(msg, policy.batch_field)
                for user_id in users[start : start + MAX_BATCH]:
                    items.add(user_id=user_id, status=states[user_id])
                owner = policy.batch_owner_field
                if owner is not None:
                    setattr(msg, owner, 0)
                pushes.append(Push(self.batch_info.name, msg, owner))
            return pushes
        out = []
        for user_id in sorted(states):
            msg = self.notify_info.message_class()
            stat = getattr(msg, policy.notify_field)
            stat.user_id, stat.status = user_id, states[user_id]
            out.append(Push(self.notify_info.name, msg))
        return out

    def states_of(self, command: str, msg: Any) -> States | None:
        """The states a notify or batch message carries (None for any other command)."""
        if command == self.notify_info.name:
            stat = getattr(msg, self.policy.notify_field)
            return {stat.user_id: stat.status}
        if self.batch_info is not None and command == self.batch_info.name and self.policy.batch_field:
            return {s.user_id: s.status for s in getattr(msg, self.policy.batch_field)}
        return None
