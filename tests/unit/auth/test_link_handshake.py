"""Unit: the internal-link handshake (sans-IO) and the secret files it reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.auth.link_handshake import LinkAuthError, LinkHandshake
from runtime.auth.secret_files import SecretFileError, cluster_secret, read_or_create_secret

SECRET = b"s" * 32


def _run(dialer: LinkHandshake, listener: LinkHandshake) -> None:
    """Both HELLOs cross, then both PROOFs, as on a real connection."""
    d_proof = dialer.on_hello(listener.hello())
    l_proof = listener.on_hello(dialer.hello())
    listener.on_proof(d_proof)
    dialer.on_proof(l_proof)


def test_two_holders_of_the_secret_verify_each_other_and_agree_on_a_link_key() -> None:
    dialer, listener = LinkHandshake(SECRET, dialer=True), LinkHandshake(SECRET, dialer=False)
    _run(dialer, listener)
    assert dialer.done and listener.done
    assert dialer.link_key() == listener.link_key()
    other = LinkHandshake(SECRET, dialer=True), LinkHandshake(SECRET, dialer=False)
    _run(*other)
    assert other[0].link_key() != dialer.link_key()  # fresh nonces: a key per link


def test_a_peer_without_the_secret_is_refused_by_both_ends() -> None:
    dialer, stranger = LinkHandshake(SECRET, dialer=True), LinkHandshake(b"x" * 32, dialer=False)
    d_proof = dialer.on_hello(stranger.hello())
    s_proof = stranger.on_hello(dialer.hello())
    with pytest.raises(LinkAuthError, match="does not hold"):
        stranger.on_proof(d_proof)
    with pytest.raises(LinkAuthError, match="does not hold"):
        dialer.on_proof(s_proof)
    assert not dialer.done


def test_a_recorded_proof_does_not_open_another_link() -> None:
    dialer, listener = LinkHandshake(SECRET, dialer=True), LinkHandshake(SECRET, dialer=False)
    d_proof = dialer.on_hello(listener.hello())
    listener.on_hello(dialer.hello())
    listener.on_proof(d_proof)
    # An eavesdropper replays the dialer's HELLO and PROOF to a new listener (with a fresh nonce).
    fresh = LinkHandshake(SECRET, dialer=False)
    fresh.on_hello(dialer.hello())
    with pytest.raises(LinkAuthError):
        fresh.on_proof(d_proof)


def test_a_listener_proof_reflected_back_is_not_a_dialer_proof() -> None:
    """An attacker who connects to a server twice cannot make it prove for him: proofs name their role."""
    victim_a = LinkHandshake(SECRET, dialer=False)  # the attacker's first connection (the victim listens)
    victim_b = LinkHandshake(SECRET, dialer=False)  # the second connection
    # The attacker sends a's HELLO as his own on connection b, and b's HELLO as his own on a: b's proof is
    # then over the same two nonces that a checks, and differs only in the role it names.
    reflected = victim_b.on_hello(victim_a.hello())
    victim_a.on_hello(victim_b.hello())
    with pytest.raises(LinkAuthError):
        victim_a.on_proof(reflected)


@pytest.mark.parametrize(
    ("hello", "reason"),
    [(b"", "malformed"), (b"XXXX" + b"n" * 16, "malformed"), (b"TTL1" + b"n" * 15, "malformed")],
)
def test_malformed_hellos_are_refused(hello: bytes, reason: str) -> None:
    with pytest.raises(LinkAuthError, match=reason):
        LinkHandshake(SECRET, dialer=False).on_hello(hello)


def test_out_of_order_and_repeated_frames_are_refused() -> None:
    hs = LinkHandshake(SECRET, dialer=False)
    with pytest.raises(LinkAuthError, match="before HELLO"):
        hs.on_proof(b"p" * 32)
    hs.on_hello(LinkHandshake(SECRET, dialer=True).hello())
    with pytest.raises(LinkAuthError, match="second HELLO"):
        hs.on_hello(LinkHandshake(SECRET, dialer=True).hello())
    echo = LinkHandshake(SECRET, dialer=False)
    with pytest.raises(LinkAuthError, match="own nonce"):
        echo.on_hello(echo.hello())


def test_the_secret_file_is_created_private_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "run" / "cluster.key"
    key = cluster_secret(path)
    assert len(key) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert cluster_secret(path) == key
    assert read_or_create_secret(path) == key.hex()


def test_a_secret_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cluster.key"
    cluster_secret(path)
    path.chmod(0o644)
    with pytest.raises(SecretFileError, match="chmod 600"):
        cluster_secret(path)


def test_a_file_that_is_not_a_secret_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cluster.key"
    path.write_text("hello\n")
    path.chmod(0o600)
    with pytest.raises(SecretFileError, match="not a cluster secret"):
        cluster_secret(path)
    path.write_text("")
    with pytest.raises(SecretFileError, match="empty"):
        cluster_secret(path)
