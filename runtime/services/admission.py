"""Runtime services layer (login): the admission gate: least-loaded msg server, at the cluster's login pace.

The gate admits a login only while fewer than a *window* of admitted logins are still unfinished. A login is
finished when its msg server reports the user online (IMUserCntUpdate +1), so the rate at which logins finish
is the rate the cluster can verify them: argon2id at biz for passwords, an HMAC for resumption tickets. The
window is that measured rate times `target_seconds` (never below `window_min`), so admission follows the
verify capacity: a password storm is admitted at a few dozen per second on two cores, ticket reconnects at
thousands. An admitted client that never logs in frees its slot after ASSIGN_MEMORY seconds.

Everyone else waits in a FIFO queue and is told its 1-based position, when to ask again and the expected
wait (position / measured rate). Asking again with the queue ticket keeps the place; a place is kept for
`ticket_ttl` seconds beyond the time the client was told to come back (FIRST_GRACE until the client has come
back once: TeamTalk clients never do), so a client that gave up does not block those behind it for long.
Nobody is refused for being behind: the queue is bounded only per client address
(`max_queued_per_address`), against one address flooding it. `rate` / `burst` remain a hard cap.
"""

from __future__ import annotations

import heapq
import random
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from runtime.services.links import ResultCode

ASSIGN_MEMORY = 10.0  # seconds an assignment counts as unfinished (and toward a server's load) at most
RATE_WINDOW = 5.0  # seconds of finished logins the measured rate looks at
# A queued client asks again after half its expected wait (so it notices a faster pace in time), within
# these bounds: near the head it asks often, far back rarely, so a long queue costs about pace x ln(length)
# lookups per second rather than length / MIN_RETRY_AFTER.
MIN_RETRY_AFTER, MAX_RETRY_AFTER = 0.1, 30.0
# A new place is kept only this long past its retry-after until its client comes back with the ticket: a
# TeamTalk client (which never presents one) leaves no place behind to hold up queue-aware clients for long.
FIRST_GRACE = 2.0
NONE, NO_MSG_SERVER, MSG_SERVER_FULL = ResultCode.OK, ResultCode.NO_MSG_SERVER, ResultCode.MSG_SERVER_FULL


@dataclass
class MsgServer:
    """A registered msg server and its load."""

    ip1: str
    ip2: str
    port: int
    max_conn: int
    cur_conn: int
    host_name: str
    recent: deque[float] = field(default_factory=deque)

    def load(self, now: float) -> int:
        """Connections plus assignments not yet reflected in the counter."""
        while self.recent and now - self.recent[0] > ASSIGN_MEMORY:
            self.recent.popleft()
        return self.cur_conn + len(self.recent)


@dataclass(frozen=True)
class Decision:
    """The outcome of one lookup: a server, or a queue place, or nothing registered."""

    code: int
    server: MsgServer | None = None
    position: int = 0
    retry_after_ms: int = 0
    ticket: str = ""
    expected_wait_ms: int = 0
    text: str = ""


@dataclass
class _Place:
    address: str
    deadline: float
    seq: int = 0


class _Places:
    """The FIFO of queue places: the rank of a place (live places ahead of it) in O(log n) through a Fenwick
    tree over arrival numbers, and lapsed places found through a heap of deadlines, so a lookup costs
    O(log n) even with a hundred thousand clients waiting."""

    def __init__(self) -> None:
        self.by_ticket: dict[str, _Place] = {}  # insertion order is arrival order
        self._size = 1024
        self._tree = [0] * (self._size + 1)
        self._next = 1
        self._deadlines: list[tuple[float, int, str]] = []

    def __len__(self) -> int:
        return len(self.by_ticket)

    def __contains__(self, ticket: object) -> bool:
        return ticket in self.by_ticket

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_ticket)

    def _add(self, i: int, delta: int) -> None:
        while i <= self._size:
            self._tree[i] += delta
            i += i & -i

    def _before(self, i: int) -> int:
        total, i = 0, i - 1
        while i > 0:
            total += self._tree[i]
            i -= i & -i
        return total

    def rank(self, ticket: str) -> int:
        """Live places ahead of the ticket's (0 for the head)."""
        return self._before(self.by_ticket[ticket].seq)

    def put(self, ticket: str, place: _Place) -> None:
        """Add a place at the back, or move an existing place's deadline (it keeps its rank)."""
        old = self.by_ticket.get(ticket)
        if old is not None:
            old.deadline = place.deadline
        else:
            if self._next > self._size:
                self._renumber()
            place.seq = self._next
            self._next += 1
            self.by_ticket[ticket] = place
            self._add(place.seq, 1)
            old = place
        heapq.heappush(self._deadlines, (old.deadline, old.seq, ticket))

    def pop(self, ticket: str) -> _Place | None:
        place = self.by_ticket.pop(ticket, None)
        if place is not None:
            self._add(place.seq, -1)
        return place

    def lapsed(self, now: float) -> list[str]:
        """Tickets whose deadline passed (each once)."""
        out = []
        while self._deadlines and self._deadlines[0][0] < now:
            deadline, seq, ticket = heapq.heappop(self._deadlines)
            place = self.by_ticket.get(ticket)
            if place is not None and place.seq == seq and place.deadline == deadline:
                out.append(ticket)
        return out

    def _renumber(self) -> None:
        """Arrival numbers ran out: number the live places 1..n again (amortized O(1) per place)."""
        self._size = max(1024, 2 * len(self.by_ticket))
        self._tree = [0] * (self._size + 1)
        self._deadlines = []
        for n, (ticket, place) in enumerate(self.by_ticket.items(), start=1):
            place.seq = n
            self._add(n, 1)
            self._deadlines.append((place.deadline, n, ticket))
        heapq.heapify(self._deadlines)
        self._next = len(self.by_ticket) + 1


class Admission:
    """Least-loaded choice under max_conn, paced by the measured login completion rate; a FIFO otherwise."""

    def __init__(
        self,
        rate: float,
        burst: float,
        ticket_ttl: float,
        *,
        window_min: int = 16,
        window_max: int = 100_000,
        target_seconds: float = 2.0,
        max_queued_per_address: int = 5000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate, self.burst, self.ticket_ttl = max(rate, 0.001), max(burst, 1.0), ticket_ttl
        self.window_min, self.window_max = max(1, window_min), max(window_min, window_max)
        self.target_seconds = target_seconds
        self.max_queued_per_address = max(1, max_queued_per_address)
        self._clock = clock
        self.tokens = self.burst
        self.stamp = clock()
        self.queue = _Places()
        self._per_address: dict[str, int] = {}
        self.unfinished: deque[float] = deque()  # admission times of logins not yet reported online
        self.finished: deque[float] = deque()  # completion times within RATE_WINDOW
        self._first_finish = 0.0

    # measurements ----------------------------------------------------------------------------------------
    def completed(self, now: float | None = None) -> None:
        """A msg server reported a login: one unfinished admission (if any) is done."""
        now = self._clock() if now is None else now
        if self.unfinished:
            self.unfinished.popleft()
        if not self.finished and not self._first_finish:
            self._first_finish = now
        self.finished.append(now)

    def measured_rate(self, now: float) -> float:
        """Logins finished per second over the last RATE_WINDOW seconds (0 before the first)."""
        while self.finished and now - self.finished[0] > RATE_WINDOW:
            self.finished.popleft()
        if not self.finished:
            return 0.0
        span = min(RATE_WINDOW, max(0.5, now - self._first_finish))
        return len(self.finished) / span

    def window(self, now: float) -> int:
        """How many admitted logins may be unfinished at once."""
        want = int(self.measured_rate(now) * self.target_seconds)
        return min(self.window_max, max(self.window_min, want))

    # decisions -------------------------------------------------------------------------------------------
    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        while self.unfinished and now - self.unfinished[0] > ASSIGN_MEMORY:
            self.unfinished.popleft()
        for ticket in self.queue.lapsed(now):
            self._leave(ticket)

    def _leave(self, ticket: str) -> None:
        place = self.queue.pop(ticket)
        if place is None:
            return
        left = self._per_address.get(place.address, 1) - 1
        if left > 0:
            self._per_address[place.address] = left
        else:
            self._per_address.pop(place.address, None)

    def release(self, ticket: str) -> bool:
        """A queued client gave up: its place goes now (not `ticket_ttl` later), so those behind it move up.
        True if the ticket held a place."""
        known = ticket in self.queue
        self._leave(ticket)
        return known

    def decide(
        self, servers: list[MsgServer], ticket: str = "", address: str = "", *, enqueue: bool = True
    ) -> Decision:
        """Assign a server, or queue the caller (keeping its place if it shows its ticket). `enqueue=False`
        (a lookup that cannot come back with a ticket, like TeamTalk's TCP lookup) answers "full" without
        taking a place."""
        now = self._clock()
        self._refill(now)
        if not servers:
            return Decision(NO_MSG_SERVER)
        open_ = [s for s in servers if s.load(now) < s.max_conn]
        known = ticket in self.queue
        ahead = self.queue.rank(ticket) if known else len(self.queue)
        room = sum(s.max_conn - s.load(now) for s in open_)
        slots = min(int(self.tokens), room, self.window(now) - len(self.unfinished))
        if open_ and ahead < slots:
            best = min(open_, key=lambda s: s.load(now))
            best.recent.append(now)
            self.unfinished.append(now)
            self.tokens -= 1
            self._leave(ticket)
            return Decision(NONE, best)
        if not enqueue:
            return Decision(MSG_SERVER_FULL, text="all msg servers are busy; try again later")
        if not known:
            if self._per_address.get(address, 0) >= self.max_queued_per_address:
                return Decision(MSG_SERVER_FULL, text="too many queued logins from this address")
            ticket = secrets.token_hex(16)
            self._per_address[address] = self._per_address.get(address, 0) + 1
        position = ahead + 1
        pace = max(self.measured_rate(now), min(self.rate, self.window_min / self.target_seconds))
        expected = position / pace
        if not open_:
            expected = max(expected, 1.0)
        jitter = random.uniform(0.8, 1.0)
        retry_after = min(max(expected / 2, MIN_RETRY_AFTER), MAX_RETRY_AFTER) * jitter + 0.05
        grace = self.ticket_ttl if known else min(self.ticket_ttl, FIRST_GRACE)
        self.queue.put(ticket, _Place(address, now + retry_after + grace))
        return Decision(
            MSG_SERVER_FULL,
            position=position,
            retry_after_ms=int(retry_after * 1000),
            ticket=ticket,
            expected_wait_ms=int(expected * 1000),
            text="all msg servers are busy; queued",
        )
