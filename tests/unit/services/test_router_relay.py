"""runtime.services.router: how a relay is forwarded (the envelope read once, no copy back to its origin, the
sender confirmed once every copy is confirmed or lost), by frame and by direct call."""

from __future__ import annotations

from typing import Any

from generated.teamtalk.registry import REGISTRY
from runtime.connection import FLAG_RELAY, pack_relay, relay_targets
from runtime.monitor.metrics import Metrics
from runtime.services.router import RouterService, UserTable

PC = 0x01
CID = 0x0301  # CID_MSG_DATA


class FakeLink:
    """A msg server's link as the router uses it: `request` queues (or refuses, when closed)."""

    def __init__(self, name: str, open_: bool = True) -> None:
        self.name = name
        self.open = open_
        self.sent: list[tuple[int, bytes, int]] = []
        self.callbacks: list[Any] = []

    def request(self, command_id: int, body: bytes, callback: Any, *, flag: int = 0) -> bool:
        if not self.open:
            return False
        self.sent.append((command_id, body, flag))
        self.callbacks.append(callback)
        return True

    def __repr__(self) -> str:
        return f"<FakeLink {self.name}>"


def fakes(*names: str, closed: str = "") -> list[Any]:
    """Fake links, typed as the router's links (it uses only `request`, identity and hashing)."""
    return [FakeLink(name, open_=name != closed) for name in names]


def router(*links: Any) -> RouterService:
    """Only the state a relay touches (the service's start, listener and storage are not needed here)."""
    r = object.__new__(RouterService)
    metrics = Metrics()
    r.table = UserTable(REGISTRY.enums.ClientTypeBits.MOBILE)
    r.links = set(links)
    r.push = None
    r.m_relayed = metrics.counter("relayed", "")
    r.m_forwarded = metrics.counter("forwarded", "")
    r.m_broadcasts = metrics.counter("broadcasts", "")
    return r


def test_a_relay_goes_to_its_targets_holders_never_back_and_is_confirmed_after_every_copy() -> None:
    a, b, c = fakes("a", "b", "c")
    r = router(a, b, c)
    r.table.update(a, 7, PC, 1)  # the sender, on the origin server
    r.table.update(b, 8, PC, 1)
    r.table.update(c, 8, PC, 1)  # the receiver has a second device on c
    body = pack_relay((7, 8), b"inner message")
    done: list[int] = []
    targets, _ = relay_targets(body)
    r._forward(a, CID, body, targets, lambda: done.append(1))
    assert a.sent == []
    assert b.sent == [(CID, body, FLAG_RELAY)] and c.sent == [(CID, body, FLAG_RELAY)]  # envelope included
    b.callbacks[0](None)  # b's link dropped: counts as answered (msg re-sends through another router)
    assert done == []
    c.callbacks[0](object())
    assert done == [1]
    assert (r.m_relayed.value, r.m_forwarded.value, r.m_broadcasts.value) == (1, 2, 0)


def test_a_relay_nobody_else_holds_is_confirmed_at_once_and_a_closed_link_counts_as_answered() -> None:
    a, b = fakes("a", "b", closed="b")
    r = router(a, b)
    r.table.update(a, 7, PC, 1)
    r.table.update(b, 9, PC, 1)
    done: list[int] = []
    r.relay_from(a, CID, pack_relay((7,), b"x"), lambda: done.append(1))
    assert done == [1] and a.sent == []
    r.relay_from(a, CID, memoryview(pack_relay((9,), b"y")), lambda: done.append(2))
    assert done == [1, 2] and r.m_forwarded.value == 0  # b refused the request: nothing pending


def test_a_broadcast_goes_to_every_other_server() -> None:
    a, b, c = fakes("a", "b", "c")
    r = router(a, b, c)
    body = pack_relay(None, b"to everyone")
    done: list[int] = []
    r.relay_from(a, CID, body, lambda: done.append(1))
    assert a.sent == [] and b.sent == c.sent == [(CID, body, FLAG_RELAY)]
    b.callbacks[0](object())
    c.callbacks[0](object())
    assert done == [1] and r.m_broadcasts.value == 1
