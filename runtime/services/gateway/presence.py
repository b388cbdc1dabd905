"""Runtime services layer (gateway): presence events for long-poll sessions, as the spec's policy says.

Routers relay presence changes (coalesced) to the gateway; it coalesces again for its sessions and queues one
event per push of a flush: `{"type": <notify command>, "data": {...}}` per user, or one
`{"type": <batch command>, "data": {"user_id": <the session's user>, "<list field>": [...]}}` from the
policy's `batch_from` users on. Only the `company` audience reaches HTTP sessions (they issue no status
queries and fetch no recent-session lists through the gateway, which the other audiences follow).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runtime.services.gateway.relays import generic_event
from runtime.services.presence import EVERYONE, Everyone, Flusher, PresenceCodec, PresencePolicy, States
from runtime.services.protocol import enums_of

if TYPE_CHECKING:
    from runtime.services.gateway.service import GatewayService


class GatewayPresence:
    """Coalesced presence events for the gateway's sessions."""

    def __init__(self, svc: GatewayService) -> None:
        self.svc = svc
        self.policy = PresencePolicy.from_registry(svc.ctx.registry)
        self.codec = PresenceCodec(self.policy, svc.ctx.registry)
        self.flusher: Flusher[Everyone] = Flusher(self.policy.interval, self._flush)
        self._mobile_bit = enums_of(svc.ctx.registry).ClientTypeBits.MOBILE

    def close(self) -> None:
        """Stop flushing."""
        self.flusher.close()

    def on_relay(self, command: str, msg: Any) -> bool:
        """Take a router's presence relay; False for any other command."""
        if command not in self.codec.commands:
            return False
        states = self.codec.states_of(command, msg)
        if states and self.policy.company:
            self.flusher.put_many(EVERYONE, states)
        return True

    def _flush(self, _everyone: Everyone, states: States) -> None:
        wants = self.policy.wants
        mobile = self._mobile_bit
        sessions = [s for s in self.svc.sessions.by_token.values() if wants(bool(s.client_type & mobile))]
        if not sessions:
            return
        owner = self.policy.batch_owner_field
        n = 0
        for push in self.codec.pushes(states):
            event = generic_event(push.command, push.for_recipient(0)[0])
            for session in sessions:
                if owner and push.command == self.policy.batch:
                    session.push({**event, "data": {**event["data"], owner: session.user_id}})
                else:
                    session.push(event)
                n += 1
        self.svc.m_events.inc(n)
