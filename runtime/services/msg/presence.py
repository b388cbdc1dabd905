"""Runtime services layer (msg): presence pushes to this server's clients, as the spec's presence policy says.

Routers relay every presence change (coalesced) to every msg server; this server picks the recipients among
its own connections and coalesces again per recipient (runtime.services.presence):
- `company`: every connection of the policy's client class (one shared recipient, so a flush is built once);
- `contacts`: connections whose recent-session lists (IMRecentContactSessionRsp, as the client fetched them;
  TeamTalk clients fetch them incrementally) held a one-to-one session with the user;
- `subscribers`: connections that asked for the user's status (IMUsersStatReq).
Interest is remembered per connection (at most `MAX_WATCHED` users each) and forgotten when it closes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from runtime.monitor.metrics import Metrics
from runtime.registry import Registry
from runtime.services.msg.common import LocalSessions, Push
from runtime.services.msg.delivery import ClientState
from runtime.services.presence import (
    EVERYONE,
    Everyone,
    Flusher,
    PresenceCodec,
    PresencePolicy,
    States,
)
from runtime.services.protocol import enums_of

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from generated.teamtalk import IM_Buddy_pb2 as buddy

MAX_WATCHED = 65536  # users one connection can be told about individually

Recipient = ClientState | Everyone


class LocalPresence:
    """Recipients, coalescing and pushes of presence changes on one msg server."""

    def __init__(self, registry: Registry, metrics: Metrics, sessions: LocalSessions, push: Push) -> None:
        self.sessions = sessions
        self.push = push
        self.policy = PresencePolicy.from_registry(registry)
        self.codec = PresenceCodec(self.policy, registry)
        self.flusher: Flusher[Recipient] = Flusher(self.policy.interval, self._flush)
        self._watchers: dict[int, set[ClientState]] = {}  # user id -> connections interested in the user
        self._watching: dict[ClientState, set[int]] = {}
        self.m_flushes = metrics.counter("msg_presence_flushes_total", "presence flushes to recipients")
        self.m_frames = metrics.counter("msg_presence_frames_total", "presence frames pushed to clients")
        self.m_relays_in = metrics.counter(
            "msg_presence_relays_in_total", "presence relays received from routers"
        )
        self._single_session = int(enums_of(registry).SessionType.SESSION_TYPE_SINGLE)

    def close(self) -> None:
        """Stop flushing."""
        self.flusher.close()

    # changes from routers ----------------------------------------------------------------------------------
    def on_relay(self, command: str, msg: Message) -> bool:
        """Take a router's presence relay (notify or batch); False for any other command."""
        if command not in self.codec.commands:
            return False
        self.m_relays_in.inc()
        states = self.codec.states_of(command, msg)
        if states:
            self.changed(states)
        return True

    def changed(self, states: States) -> None:
        """Users' new states: queue them for every interested recipient here."""
        if self.policy.company:
            self.flusher.put_many(EVERYONE, states)
            return
        watchers = self._watchers
        for user_id, status in states.items():
            for st in watchers.get(user_id, ()):
                self.flusher.put(st, user_id, status)

    # interest --------------------------------------------------------------------------------------------
    def subscribed(self, st: ClientState, user_ids: Iterable[int]) -> None:
        """A connection asked for these users' status (audience `subscribers`)."""
        if "subscribers" in self.policy.audience:
            self._watch(st, user_ids)

    def contacts(self, st: ClientState, rsp: buddy.IMRecentContactSessionRsp) -> None:
        """A connection fetched its recent sessions (audience `contacts`): watch its one-to-one peers."""
        if "contacts" not in self.policy.audience:
            return
        single = self._single_session
        self._watch(st, (s.session_id for s in rsp.contact_session_list if s.session_type == single))

    def _watch(self, st: ClientState, user_ids: Iterable[int]) -> None:
        if self.policy.company or not st.logged_in or not self.policy.wants(st.mobile):
            return  # company-wide: everyone of the class gets everything anyway
        mine = self._watching.setdefault(st, set())
        for user_id in user_ids:
            if len(mine) >= MAX_WATCHED:
                break
            if user_id not in mine:
                mine.add(user_id)
                self._watchers.setdefault(user_id, set()).add(st)

    def forget(self, st: ClientState) -> None:
        """A connection closed: drop its interest and anything pending for it."""
        self.flusher.drop(st)
        for user_id in self._watching.pop(st, ()):
            watchers = self._watchers.get(user_id)
            if watchers is not None:
                watchers.discard(st)
                if not watchers:
                    del self._watchers[user_id]

    # flushes ---------------------------------------------------------------------------------------------
    def _recipients(self, recipient: Recipient) -> list[ClientState]:
        if isinstance(recipient, ClientState):
            return [recipient] if recipient.logged_in else []
        wants = self.policy.wants
        return [st for states in self.sessions.by_user.values() for st in states if wants(st.mobile)]

    def _flush(self, recipient: Recipient, states: States) -> None:
        targets = self._recipients(recipient)
        if not targets:
            return
        pushes = self.codec.pushes(states)
        push = self.push
        sent = 0
        for st in targets:
            for p in pushes:
                msg, body = p.for_recipient(st.user_id)
                if push(st.link, p.command, msg, body):
                    sent += 1
        self.m_flushes.inc(len(targets))
        self.m_frames.inc(sent)
