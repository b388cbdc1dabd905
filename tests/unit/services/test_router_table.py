"""runtime.services.router.UserTable: connection counts per user, msg server and client type."""

from __future__ import annotations

from generated.teamtalk.registry import REGISTRY
from runtime.services.router import UserTable

PC, MAC, ANDROID = 0x01, 0x02, 0x12


class L:  # a stand-in for a msg server link: identity and hashing are all the table uses
    pass


def test_counts_presence_and_cleanup() -> None:
    t = UserTable(REGISTRY.enums.ClientTypeBits.MOBILE)
    a, b = L(), L()
    t.update(a, 7, ANDROID, 1)
    assert not t.pc_online(7) and t.links_for([7]) == {a}
    t.update(b, 7, PC, 1)
    t.update(b, 7, PC, 1)  # two PC connections on b
    assert t.pc_online(7)
    assert t.entries(7) == {a: {ANDROID: 1}, b: {PC: 2}}
    t.update(b, 7, PC, -1)
    assert t.pc_online(7)
    t.update(b, 7, PC, -1)
    assert not t.pc_online(7) and t.entries(7) == {a: {ANDROID: 1}}
    t.update(a, 7, ANDROID, -1)
    assert 7 not in t.users and t.links_for([7]) == set()
    t.update(a, 8, MAC, -1)  # a stray offline for an unknown user changes nothing
    assert t.users == {}


def test_drop_link_forgets_only_that_servers_entries() -> None:
    t = UserTable(REGISTRY.enums.ClientTypeBits.MOBILE)
    a, b = L(), L()
    for uid in range(5):
        t.update(a, uid, PC, 1)
    t.update(b, 3, ANDROID, 1)
    assert sorted(t.drop_link(a)) == [0, 1, 2, 3, 4]
    assert list(t.users) == [3] and t.entries(3) == {b: {ANDROID: 1}}
    assert t.links_for(range(10)) == {b}
