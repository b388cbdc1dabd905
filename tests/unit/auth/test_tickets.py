"""Resumption tickets: the codec (layout, HMAC, expiry, device binding) and the key file."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from runtime.auth.tickets import (
    TICKET_BYTES,
    KeyFileError,
    TicketError,
    TicketKey,
    TicketRefused,
    load_or_create_key,
    session_id_of,
)

KEY = TicketKey(bytes(range(32)))
NOW = 1_700_000_000


def issue(key: TicketKey = KEY, **overrides: object) -> tuple[bytes, object]:
    args: dict[str, object] = dict(
        user_id=42,
        client_type=1,
        now=NOW,
        ttl=900,
        auth_time=NOW,
        max_age=7 * 86400,
        password_hash="$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
        device_id=b"",
    )
    args.update(overrides)
    return key.issue(**args)  # type: ignore[arg-type]


def refusal(data: bytes, *, client_type: int = 1, device_id: bytes = b"", now: int = NOW + 1) -> TicketError:
    with pytest.raises(TicketRefused) as info:
        KEY.check(data, client_type=client_type, device_id=device_id, now=now)
    return info.value.reason


def test_round_trip_claims_and_layout() -> None:
    data, claims = issue()
    assert len(data) == TICKET_BYTES == 69 and data[0] == 1
    got = KEY.check(data, client_type=1, device_id=b"", now=NOW + 899)
    assert got == claims
    assert (got.user_id, got.client_type, got.issued, got.expires, got.auth_time) == (
        42,
        1,
        NOW,
        NOW + 900,
        NOW,
    )
    assert got.password_fp == KEY.password_fp("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA")
    assert session_id_of(data) == got.session_id and len(got.session_id) == 16
    other, again = issue()
    assert other != data and again.session_id != got.session_id  # fresh session id each time  # type: ignore[attr-defined]


def test_expiry_is_capped_by_the_age_of_the_password_login() -> None:
    _, claims = issue(now=NOW + 1000, auth_time=NOW, max_age=1200)
    assert claims.expires == NOW + 1200  # type: ignore[attr-defined]
    data, _ = issue(ttl=60)
    assert refusal(data, now=NOW + 60) is TicketError.EXPIRED
    assert KEY.check(data, client_type=1, device_id=b"", now=NOW + 59).user_id == 42


def test_every_altered_byte_is_forged_or_malformed() -> None:
    data, _ = issue()
    for i in range(len(data)):
        altered = data[:i] + bytes([data[i] ^ 0x40]) + data[i + 1 :]
        expected = TicketError.MALFORMED if i == 0 else TicketError.FORGED
        assert refusal(altered) is expected, i
    assert refusal(data[:-1]) is TicketError.MALFORMED
    assert refusal(data + b"\0") is TicketError.MALFORMED
    assert refusal(b"") is TicketError.MALFORMED


def test_another_key_cannot_mint_tickets() -> None:
    data, _ = issue(TicketKey(os.urandom(32)))
    assert refusal(data) is TicketError.FORGED


def test_bound_to_client_type_and_device_id() -> None:
    data, _ = issue()
    assert refusal(data, client_type=0x11) is TicketError.WRONG_DEVICE
    assert refusal(data, device_id=b"phone") is TicketError.WRONG_DEVICE
    bound, _ = issue(device_id=b"laptop-1")
    assert refusal(bound) is TicketError.WRONG_DEVICE
    assert refusal(bound, device_id=b"laptop-2") is TicketError.WRONG_DEVICE
    assert KEY.check(bound, client_type=1, device_id=b"laptop-1", now=NOW).user_id == 42


def test_password_fingerprint_changes_with_the_hash() -> None:
    assert KEY.password_fp("a") != KEY.password_fp("b")
    assert TicketKey(os.urandom(32)).password_fp("a") != KEY.password_fp("a")  # keyed


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "ticket.key"
    key = load_or_create_key(path)
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key
    assert not [p for p in path.parent.iterdir() if p.name != "ticket.key"]  # no temporary left behind


def test_concurrent_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "ticket.key"
    keys: list[bytes] = []
    threads = [threading.Thread(target=lambda: keys.append(load_or_create_key(path))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 8 and len(set(keys)) == 1 and path.read_bytes() == keys[0]


def test_key_file_readable_by_others_or_wrong_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ticket.key"
    load_or_create_key(path)
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_or_create_key(path)
    path.chmod(0o600)
    path.write_bytes(b"short")
    with pytest.raises(KeyFileError, match="32-byte"):
        load_or_create_key(path)
