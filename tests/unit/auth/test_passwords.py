"""Password hashing: argon2id over the MD5 wire value; no MD5 equivalent is stored."""

from __future__ import annotations

import hashlib

import pytest

from runtime.auth import PasswordHasher, normalize_wire, wire_password

FAST = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}


def test_wire_password_is_teamtalk_md5() -> None:
    assert wire_password("123456") == "e10adc3949ba59abbe56e057f20f883e"
    assert normalize_wire("E10ADC3949BA59ABBE56E057F20F883E") == "e10adc3949ba59abbe56e057f20f883e"
    assert normalize_wire("not-md5") == "not-md5"


def test_hash_verifies_legacy_wire_value_and_stores_no_md5() -> None:
    hasher = PasswordHasher(**FAST)
    stored = hasher.hash_plaintext("s3cret")
    wire = wire_password("s3cret")
    assert stored.startswith("$argon2id$")
    assert wire not in stored and hashlib.md5(wire.encode()).hexdigest() not in stored
    assert hasher.verify_wire(stored, wire)
    assert hasher.verify_wire(stored, wire.upper())  # clients differ in hex case
    assert not hasher.verify_wire(stored, wire_password("S3cret"))
    assert not hasher.verify_wire(stored, "s3cret")  # the plaintext itself is not the wire value
    assert hasher.hash_wire(wire) != hasher.hash_wire(wire)  # salted


def test_malformed_inputs_are_mismatches() -> None:
    hasher = PasswordHasher(**FAST)
    assert not hasher.verify_wire("", wire_password("x"))
    assert not hasher.verify_wire("$argon2id$garbage", wire_password("x"))
    assert not hasher.verify_wire(hasher.hash_plaintext("x"), "y" * 5000)
    with pytest.raises(ValueError):
        hasher.hash_wire("y" * 5000)


def test_needs_rehash_on_parameter_change() -> None:
    old = PasswordHasher(**FAST)
    new = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    stored = old.hash_plaintext("pw")
    assert not old.needs_rehash(stored)
    assert new.needs_rehash(stored)
    assert new.needs_rehash("not a hash")
