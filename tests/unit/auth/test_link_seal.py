"""Unit: sealed internal-link records (runtime.auth.link_seal) and the handshake's request to seal."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from generated.teamtalk.registry import REGISTRY
from runtime.auth.link_handshake import LinkAuthError, LinkHandshake
from runtime.auth.link_seal import LinkSealer, SealError

SECRET = b"s" * 32
KEY = bytes(range(32))


def pair(d_seal: bool, l_seal: bool) -> tuple[LinkHandshake, LinkHandshake]:
    dialer = LinkHandshake(SECRET, dialer=True, seal=d_seal)
    listener = LinkHandshake(SECRET, dialer=False, seal=l_seal)
    d_proof = dialer.on_hello(listener.hello())
    l_proof = listener.on_hello(dialer.hello())
    dialer.on_proof(l_proof)
    listener.on_proof(d_proof)
    return dialer, listener


@pytest.mark.parametrize(
    ("d", "l", "sealed"), [(False, False, False), (True, False, True), (False, True, True)]
)
def test_either_end_asking_seals_the_link(d: bool, l: bool, sealed: bool) -> None:  # noqa: E741
    dialer, listener = pair(d, l)
    assert dialer.sealed is listener.sealed is sealed
    assert dialer.link_key() == listener.link_key()


def test_stripping_the_request_to_seal_fails_the_proof() -> None:
    dialer = LinkHandshake(SECRET, dialer=True, seal=True)
    listener = LinkHandshake(SECRET, dialer=False)
    stripped = dialer.hello()[:-1] + b"\0"  # a man in the middle clears the flag
    l_proof = listener.on_hello(stripped)
    dialer.on_hello(listener.hello())
    with pytest.raises(LinkAuthError):
        dialer.on_proof(l_proof)
    with pytest.raises(LinkAuthError, match="unknown flags"):
        LinkHandshake(SECRET, dialer=False).on_hello(dialer.hello()[:-1] + b"\x80")


def test_records_round_trip_in_any_split_and_hide_the_bytes() -> None:
    d, l = LinkSealer(KEY, dialer=True), LinkSealer(KEY, dialer=False)  # noqa: E741
    messages = [b"frame %d " % i * (i + 1) for i in range(50)]
    wire = b"".join(d.seal(m) for m in messages)
    assert b"frame 7" not in wire and d.seal(b"") == b""
    rng = random.Random(3)
    got = bytearray()
    pos = 0
    while pos < len(wire):
        n = rng.randint(1, 300)
        got += l.open(wire[pos : pos + n])
        pos += n
    assert bytes(got) == b"".join(messages) and l.buffered == 0
    assert d.open(l.seal(b"answer")) == b"answer"  # the other direction, its own key and counter


@pytest.mark.parametrize("attack", ["flip", "replay", "reorder", "reflect", "oversize", "wrong key"])
def test_forged_replayed_reordered_reflected_or_oversized_records_are_refused(attack: str) -> None:
    d, l = LinkSealer(KEY, dialer=True), LinkSealer(KEY, dialer=False, max_record=1000)  # noqa: E741
    one, two = d.seal(b"first"), d.seal(b"second")
    if attack == "flip":
        wire = one[:-1] + bytes([one[-1] ^ 1])
    elif attack == "replay":
        wire = one + one
    elif attack == "reorder":
        wire = two + one
    elif attack == "reflect":
        wire = l.seal(b"mine")  # the listener's own record sent back to it
    elif attack == "oversize":
        wire = (5000).to_bytes(4, "big") + b"x" * 10
    else:
        wire = LinkSealer(bytes(32), dialer=True).seal(b"first")
    with pytest.raises(SealError):
        l.open(wire)


def test_a_link_between_hosts_is_sealed_after_the_handshake_and_one_on_loopback_is_not() -> None:
    from runtime.connection import (
        FLAG_RELAY,
        LinkAuth,
        LinkConnection,
        State,
        pack_relay,
        unpack_relay,
        wants_seal,
    )

    cid = REGISTRY.by_name("CID_MSG_DATA").command_id
    assert not wants_seal("between_hosts", "127.0.0.1:5") and not wants_seal("between_hosts", "[::1]:5")
    assert wants_seal("between_hosts", "10.1.2.3:5") and wants_seal("always", "127.0.0.1:5")
    assert not wants_seal("never", "10.1.2.3:5")
    for d_peer, l_peer, sealed in (
        ("10.0.0.2:7000", "10.0.0.1:40000", True),
        ("127.0.0.1:1", "127.0.0.1:2", False),
    ):
        d = LinkConnection(REGISTRY, 0.0, peer=d_peer, auth=LinkAuth(SECRET), dialer=True)
        lst = LinkConnection(REGISTRY, 0.0, peer=l_peer, auth=LinkAuth(SECRET))
        body = pack_relay([7], b"the secret plans")
        d.send_link(cid, body, 0.0, flag=FLAG_RELAY)  # queued before the handshake: released sealed
        got = []
        wire = b""
        for _ in range(6):
            for src, dst in ((d, lst), (lst, d)):
                data = src.data_to_send()
                wire += data
                got += [f for f, _i in dst.receive_data(data, 0.0)]
        assert d.state is State.AUTHENTICATED and lst.state is State.AUTHENTICATED
        assert [unpack_relay(f.body) for f in got] == [((7,), b"the secret plans")]
        assert (b"the secret plans" in wire) is not sealed
        # after the handshake, a flipped byte on a sealed link closes it; the plain one just sees bytes
        d.send_link(cid, body, 0.0, flag=FLAG_RELAY)
        data = bytearray(d.data_to_send())
        data[-1] ^= 1
        list(lst.receive_data(bytes(data), 0.0))
        assert lst.is_open is not sealed


def _link_pair(d_policy: str, l_policy: str, d_peer: str, l_peer: str) -> tuple[bool, bool]:
    """Handshake two link ends with the given seal policies; (wire showed the body, listener open after a
    flipped byte)."""
    from runtime.connection import FLAG_RELAY, LinkAuth, LinkConnection, State, pack_relay

    cid = REGISTRY.by_name("CID_MSG_DATA").command_id
    d = LinkConnection(REGISTRY, 0.0, peer=d_peer, auth=LinkAuth(SECRET, d_policy), dialer=True)
    lst = LinkConnection(REGISTRY, 0.0, peer=l_peer, auth=LinkAuth(SECRET, l_policy))
    d.send_link(cid, pack_relay([7], b"the secret plans"), 0.0, flag=FLAG_RELAY)
    wire = b""
    for _ in range(6):
        for src, dst in ((d, lst), (lst, d)):
            data = src.data_to_send()
            wire += data
            list(dst.receive_data(data, 0.0))
    assert d.state is State.AUTHENTICATED and lst.state is State.AUTHENTICATED
    return b"the secret plans" in wire, lst.is_open


@pytest.mark.parametrize(
    ("d_policy", "l_policy", "between_hosts", "sealed"),
    [
        ("always", "always", False, True),  # always: even a loopback link
        ("always", "never", False, True),  # either end asking seals
        ("never", "never", True, False),  # never: not even between hosts (still authenticated)
        ("never", "between_hosts", True, True),  # the other end's default still asks between hosts
        ("between_hosts", "between_hosts", False, False),
        ("between_hosts", "between_hosts", True, True),
    ],
)
def test_each_link_seal_policy_seals_what_it_says(
    d_policy: str, l_policy: str, between_hosts: bool, sealed: bool
) -> None:
    peers = ("10.0.0.2:7000", "10.0.0.1:40000") if between_hosts else ("127.0.0.1:1", "127.0.0.1:2")
    in_clear, _open = _link_pair(d_policy, l_policy, *peers)
    assert in_clear is not sealed


def test_the_link_seal_config_key_is_validated_and_reaches_the_links(tmp_path: Path) -> None:
    from runtime.cluster.config import ConfigError, parse_config
    from runtime.cluster.instance import make_context
    from runtime.connection import LinkAuth

    assert parse_config({"data_dir": str(tmp_path)}).link_seal == "between_hosts"
    config = parse_config({"data_dir": str(tmp_path), "link_seal": "always"})
    assert config.link_seal == "always"
    assert parse_config(config.as_dict()).link_seal == "always"  # survives the trip to worker processes
    for bad in ("sometimes", True, None, ["always"]):
        with pytest.raises(ConfigError) as err:
            parse_config({"data_dir": str(tmp_path), "link_seal": bad})
        assert "link_seal" in str(err.value) and "always, between_hosts, never" in str(err.value)
    with pytest.raises(ValueError, match="link seal must be one of"):
        LinkAuth(SECRET, "sometimes")
    svc = config.services["biz"]
    ctx = make_context(
        config,
        svc,
        0,
        registry=REGISTRY,
        servers=None,
        discovery=None,
        local={},  # type: ignore[arg-type]
    )
    assert ctx.link_auth is not None and ctx.link_auth.seal == "always"
