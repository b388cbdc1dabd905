"""Runtime services layer (msg): per-connection client state and delivery with retransmit until acked.

Every chat message pushed to a client is remembered under the key the client's IMMsgDataAck names
(session type, session id from the receiver's side, msg id) and sent again with doubling timeouts until the
ack arrives or `max_attempts` sends were made (then it is left to the client's pull on its next login). A
connection also remembers the keys it was already given, so a message that reaches this server twice (a router
retry, a retried send) is shown once.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from runtime.monitor.metrics import Metrics

if TYPE_CHECKING:
    from generated.teamtalk import IM_Message_pb2 as message
    from generated.teamtalk.registry import Enums

SEEN_LIMIT = 4096  # delivered keys remembered per connection

DeliveryKey = tuple[int, int, int]  # (session type, session id as the receiver sees it, msg id)


class ChatKinds(NamedTuple):
    """The spec's values a delivery key is made of, as plain ints (they are on every delivery's path)."""

    group_bit: int  # MsgType bit GROUP
    single: int  # SessionType SESSION_TYPE_SINGLE
    group: int  # SessionType SESSION_TYPE_GROUP

    @classmethod
    def of(cls, enums: type[Enums]) -> ChatKinds:
        sessions = enums.SessionType
        return cls(
            enums.MsgTypeBits.GROUP, int(sessions.SESSION_TYPE_SINGLE), int(sessions.SESSION_TYPE_GROUP)
        )


def same_class(a: int, b: int) -> bool:
    """TeamTalk's rule: two clients are of the same class when (a XOR b) >> 4 == 0."""
    return ((a ^ b) >> 4) == 0


def delivery_key(receiver: int, msg: message.IMMsgData, kinds: ChatKinds) -> DeliveryKey:
    """The ack key of an IMMsgData for one receiving user."""
    if msg.msg_type & kinds.group_bit:
        return (kinds.group, msg.to_session_id, msg.msg_id)
    peer = msg.to_session_id if msg.from_user_id == receiver else msg.from_user_id
    return (kinds.single, peer, msg.msg_id)


class ClientState:
    """What msg keeps about one authenticated client connection."""

    __slots__ = (
        "auth_time",
        "client_type",
        "envelope",
        "link",
        "logged_in",
        "mobile",
        "seen",
        "seen_old",
        "ticket_session",
        "unacked",
        "user_id",
    )

    def __init__(self, link: Any) -> None:
        self.link = link
        self.user_id = 0
        self.envelope = b""  # relay envelope head naming user_id (runtime.connection.relay_head), made once
        self.client_type = 0
        self.mobile = (
            False  # whether the client is a mobile device (the spec's ClientType bit MOBILE), at login
        )
        self.logged_in = False
        self.auth_time = 0  # unix seconds of the password login this session descends from
        self.ticket_session = b""  # session id of the last resumption ticket handed to this connection
        self.unacked: dict[DeliveryKey, tuple[str, Any, int]] = {}  # key -> (command, message, attempt)
        # Keys delivered on this connection, in two generations of SEEN_LIMIT / 2 (a set probe each, where an
        # ordered map cost a linked-list update per delivery): between SEEN_LIMIT / 2 and SEEN_LIMIT recent
        # keys are remembered. Made at the first delivery: an idle connection keeps two empty sets' 430 bytes.
        self.seen: set[DeliveryKey] | None = None
        self.seen_old: set[DeliveryKey] | None = None

    def mark_seen(self, key: DeliveryKey) -> bool:
        """Remember a delivered key; False if it was delivered before (a duplicate)."""
        seen = self.seen
        if seen is None:
            self.seen = {key}
            return True
        if key in seen or (self.seen_old is not None and key in self.seen_old):
            return False
        seen.add(key)
        if len(seen) >= SEEN_LIMIT // 2:
            self.seen_old, self.seen = seen, set()
        return True


class DeliveryTracker:
    """Pushes chat messages to connections and retransmits the ones not acked in time."""

    def __init__(
        self,
        send: Callable[[Any, str, Any, bytes | None], bool],
        metrics: Metrics,
        *,
        timeout: float = 5.0,
        max_attempts: int = 5,
        clock: Callable[[], float],
    ) -> None:
        self._send = send
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        self._clock = clock
        self._heap: list[tuple[float, int, ClientState, DeliveryKey, int]] = []
        # First sends all wait the same timeout, so they expire in the order they were made: a FIFO holds
        # them (O(1) per message, where a heap cost O(log n) twice); only retransmits, with doubling timeouts,
        # go to the heap. Both hold stale entries for acked deliveries, skipped when they come due.
        self._first: deque[tuple[float, ClientState, DeliveryKey]] = deque()
        self._counter = itertools.count()
        self.m_delivered = metrics.counter("msg_delivered_total", "chat messages pushed to clients")
        self.m_retransmits = metrics.counter(
            "msg_retransmits_total", "chat messages sent again for want of an ack"
        )
        self.m_acked = metrics.counter("msg_client_acks_total", "client receipts (IMMsgDataAck)")
        self.m_gave_up = metrics.counter(
            "msg_delivery_abandoned_total", "deliveries never acked after max attempts"
        )
        self.m_dups = metrics.counter("msg_dedup_hits_total", "duplicate deliveries suppressed")

    def deliver(
        self, state: ClientState, command: str, msg: Any, key: DeliveryKey, body: bytes | None = None
    ) -> bool:
        """Push once per connection (duplicates suppressed) and track it until the client acks. `body` is
        `msg` serialized, if the caller has it."""
        if not state.mark_seen(key):
            self.m_dups.inc()
            return False
        if not self._send(state.link, command, msg, body):
            return False
        self.m_delivered.value += 1  # in place, no call (once per delivery)
        state.unacked[key] = (command, msg, 1)
        self._first.append((self._clock() + self.timeout, state, key))
        return True

    def ack(self, state: ClientState, key: DeliveryKey) -> bool:
        """The client confirmed receipt."""
        if state.unacked.pop(key, None) is None:
            return False
        self.m_acked.value += 1
        return True

    @property
    def pending(self) -> int:
        """Deliveries waiting for an ack (including stale entries of acked ones)."""
        return len(self._first) + len(self._heap)

    def tick(self) -> None:
        """Retransmit every delivery whose ack is overdue."""
        now = self._clock()
        first = self._first
        while first and first[0][0] <= now:
            _, state, key = first.popleft()
            entry = state.unacked.get(key)
            if entry is not None and entry[2] == 1:
                self._retry(now, state, key, entry)
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, state, key, attempt = heapq.heappop(heap)
            entry = state.unacked.get(key)
            if entry is not None and entry[2] == attempt:
                self._retry(now, state, key, entry)

    def _retry(self, now: float, state: ClientState, key: DeliveryKey, entry: tuple[str, Any, int]) -> None:
        """A delivery's ack is overdue: send it again, or give up after `max_attempts` sends."""
        command, msg, attempt = entry
        if attempt >= self.max_attempts or not state.logged_in:
            del state.unacked[key]
            self.m_gave_up.inc()
            return
        if not self._send(state.link, command, msg, None):
            del state.unacked[key]
            return
        self.m_retransmits.inc()
        state.unacked[key] = (command, msg, attempt + 1)
        heapq.heappush(
            self._heap, (now + self.timeout * (2**attempt), next(self._counter), state, key, attempt + 1)
        )
