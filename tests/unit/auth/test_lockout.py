"""Lockout: more than N failures within the window, per user and per address, and success clears the user."""

from __future__ import annotations

from runtime.auth import Lock, LockoutPolicy, LoginLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_user_locked_after_more_than_ten_failures_in_thirty_minutes() -> None:
    clock = Clock()
    limiter = LoginLimiter(clock=clock)
    for i in range(11):
        assert limiter.check("alice", f"10.0.0.{i}") is None
        limiter.record_failure("alice", f"10.0.0.{i}")
    assert limiter.check("alice", "10.9.9.9") is Lock.USER  # from any address
    assert limiter.check("bob", "10.9.9.9") is None
    clock.now += 30 * 60  # the oldest failures age out of the window
    assert limiter.check("alice", "10.9.9.9") is None


def test_ten_failures_are_still_allowed() -> None:
    limiter = LoginLimiter(clock=Clock())
    for _ in range(10):
        limiter.record_failure("alice", "1.1.1.1")
    assert limiter.check("alice", "1.1.1.1") is None
    assert limiter.failures("alice") == 10


def test_success_clears_the_user_counter() -> None:
    limiter = LoginLimiter(clock=Clock())
    for _ in range(11):
        limiter.record_failure("alice", "1.1.1.1")
    limiter.record_success("alice")
    assert limiter.failures("alice") == 0
    assert limiter.check("alice", "2.2.2.2") is None


def test_address_limit_is_separate() -> None:
    clock = Clock()
    limiter = LoginLimiter(LockoutPolicy(max_user_failures=10, max_address_failures=5), clock=clock)
    for i in range(6):  # six different users, one address: no user is locked, the address is
        limiter.record_failure(f"user{i}", "6.6.6.6")
    assert limiter.check("someone-else", "6.6.6.6") is Lock.ADDRESS
    assert limiter.check("someone-else", "7.7.7.7") is None
    limiter.record_success("user0")
    assert limiter.check("user0", "6.6.6.6") is Lock.ADDRESS  # success does not unlock the address


def test_tracking_is_bounded() -> None:
    limiter = LoginLimiter(LockoutPolicy(max_tracked=3), clock=Clock())
    for i in range(10):
        limiter.record_failure(f"u{i}", f"a{i}")
    assert limiter.failures("u0") == 0 and limiter.failures("u9") == 1
