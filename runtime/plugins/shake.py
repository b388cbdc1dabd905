"""Runtime plugins layer (shake): users who shake within the same two seconds are matched and told so.

The handler of `spec/teamtalk/plugins/shake.yaml`, hosted by the msg service. A shake is answered at once with
the users who shook in the two seconds before it; those users get an IMShakeMatchNotify about the newcomer.
Matching is cluster-wide: every shake is broadcast to the other msg servers through the routers
(CID_SHAKE_SHARE), and each server tells its own users of shakes within two seconds of theirs, whichever side
the share reached first. Nothing is stored. Config (`services.msg`): `shake_window_ms` (default 2000).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from runtime.plugins import PluginHandler

COMMANDS = ("CID_SHAKE_REQ", "CID_SHAKE_SHARE")  # hosted by msg (see spec/teamtalk/plugins/shake.yaml)
WINDOW_MS = 2000
MAX_RECENT = 10000  # shakes remembered (per msg server) inside one window; older ones are pruned first
MAX_MATCHES = 100


class ShakePlugin:
    """Per msg server: the recent shakes of the whole cluster, and who to tell."""

    name = "shake"

    def __init__(self, svc: Any) -> None:
        self.svc = svc
        self.proto = svc.proto
        self.window_ms = int(svc.ctx.config.get("shake_window_ms", WINDOW_MS))
        self.recent: deque[tuple[int, int, Any]] = deque()  # (time ms, user id, message with lat/lng)
        self._cid_share = self.proto.cid("CID_SHAKE_SHARE")

    def handlers(self) -> dict[str, PluginHandler]:
        """The commands this plugin serves on the msg service."""
        return {"CID_SHAKE_REQ": self.on_shake}

    @staticmethod
    def now_ms() -> int:
        """Server time in unix milliseconds."""
        return int(time.time() * 1000)

    def _prune(self, now: int) -> None:
        while self.recent and (now - self.recent[0][0] > 2 * self.window_ms or len(self.recent) > MAX_RECENT):
            self.recent.popleft()

    def _tell(self, user_id: int, matched: int, where: Any) -> None:
        note: Any = self.proto.new("CID_SHAKE_MATCH_NOTIFY", user_id=user_id, matched_user_id=matched)
        for key in ("lat", "lng"):
            if where.HasField(key):
                setattr(note, key, getattr(where, key))
        for st in self.svc.states_of(user_id):
            self.svc.push(st.link, "CID_SHAKE_MATCH_NOTIFY", note)

    async def on_shake(self, ctx: Any, msg: Any) -> Any:
        """Match against the window, tell the earlier shakers here, share the shake with the cluster."""
        user = ctx.user_id
        now = self.now_ms()
        self._prune(now)
        matched: list[int] = []
        for t, other, _where in self.recent:
            if other != user and 0 <= now - t <= self.window_ms and other not in matched:
                matched.append(other)
        share: Any = self.proto.new("CID_SHAKE_SHARE", user_id=user, shake_time=now)
        for key in ("lat", "lng"):
            if msg.HasField(key):
                setattr(share, key, getattr(msg, key))
        self.recent.append((now, user, share))
        for other in matched:
            self._tell(other, user, share)
        self.svc.routers.relay(self._cid_share, share.SerializeToString(), None)
        return self.proto.new(
            "CID_SHAKE_RSP",
            result_code=0,
            user_id=user,
            matched_user_ids=matched[:MAX_MATCHES],
            shake_time=now,
        )

    def on_relay(self, name: str, msg: Any, targets: tuple[int, ...] | None) -> bool:
        """A shake taken by another msg server: tell local users who shook within the window of it."""
        if name != "CID_SHAKE_SHARE":
            return False
        t = int(msg.shake_time)
        self._prune(max(t, self.now_ms()))
        if any(rt == t and ru == msg.user_id for rt, ru, _w in self.recent):
            return True  # a relay retried through another router
        told: set[int] = set()
        for rt, ru, _w in self.recent:
            if (
                ru != msg.user_id
                and ru not in told
                and abs(t - rt) <= self.window_ms
                and self.svc.states_of(ru)
            ):
                told.add(ru)
                self._tell(ru, msg.user_id, msg)
        self.recent.append((t, msg.user_id, msg))
        return True


def create(service: Any) -> ShakePlugin | None:
    """The plugin for a msg service (other services do not host shake commands)."""
    if service.ctx.name != "msg":
        return None
    return ShakePlugin(service)
