"""Storage layer: the login lockout's statements (runtime.auth.lockout), written once for both backends.

Tables `login_failures (key, failures, last_failure)` and `known_logins (key, last_seen)` (schema 4 on both
backends). The backends differ only in how a statement names its parameters (`?` or `$n`) and how it takes a
list of keys (one placeholder a key, or one array parameter): a `Dialect` says which, and each function here
returns the statement and its arguments, always parameterized. Keys are checked (count and length) before any
statement is made, so a bad key changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from runtime.storage.errors import InvalidArgument

MAX_KEYS = 8  # keys one operation may name (the limiter uses three)
MAX_KEY_LEN = 80

Query = tuple[str, tuple[Any, ...]]


def check_keys(keys: Sequence[str]) -> list[str]:
    """The distinct keys, in order; InvalidArgument when there are too many or one is empty or too long."""
    if len(keys) > MAX_KEYS or any(not isinstance(k, str) or not k or len(k) > MAX_KEY_LEN for k in keys):
        raise InvalidArgument(f"at most {MAX_KEYS} lockout keys of 1..{MAX_KEY_LEN} characters")
    return list(dict.fromkeys(keys))


def check_key(key: str) -> str:
    """One checked key."""
    (name,) = check_keys([key])
    return name


@dataclass(frozen=True)
class Dialect:
    """How a backend writes parameters: numbered (`$1`, PostgreSQL; a key list is one `text[]` parameter) or
    positional (`?`, SQLite; a key list is one placeholder a key)."""

    numbered: bool

    def p(self, n: int) -> str:
        """The n-th parameter (1-based)."""
        return f"${n}" if self.numbered else "?"

    def keys_in(self, names: Sequence[str]) -> tuple[str, tuple[Any, ...]]:
        """`key` matches one of `names` (parameters from 1): the condition and its arguments."""
        if self.numbered:
            return "key = ANY($1::text[])", (list(names),)
        return f"key IN ({', '.join('?' for _ in names)})", tuple(names)


SQLITE = Dialect(numbered=False)
POSTGRES = Dialect(numbered=True)


def select_failures(d: Dialect, names: Sequence[str], since: float) -> Query:
    """(key, failures, last_failure) of the keys whose last failure is at or after `since`."""
    cond, args = d.keys_in(names)
    since_at = 2 if d.numbered else len(names) + 1
    sql = "SELECT key, failures, last_failure FROM login_failures WHERE "
    return f"{sql}{cond} AND last_failure >= {d.p(since_at)}", (*args, since)


def prune_failures(d: Dialect, now: float, window: float) -> Query:
    """Forget counters idle for longer than the window."""
    return f"DELETE FROM login_failures WHERE last_failure < {d.p(1)}", (now - window,)


def add_failure(d: Dialect) -> str:
    """Count one failure against a key (arguments: key, now, now - window); a counter whose last failure is
    older than the window restarts at 1."""
    return (
        f"INSERT INTO login_failures (key, failures, last_failure) VALUES ({d.p(1)}, 1, {d.p(2)}) "
        f"ON CONFLICT (key) DO UPDATE SET failures = CASE WHEN login_failures.last_failure < {d.p(3)} THEN 1 "
        "ELSE login_failures.failures + 1 END, last_failure = excluded.last_failure"
    )


def clear_failures(d: Dialect, names: Sequence[str]) -> Query:
    """Forget the keys' counters."""
    cond, args = d.keys_in(names)
    return f"DELETE FROM login_failures WHERE {cond}", args


def prune_known(d: Dialect, now: float, keep: float) -> Query:
    """Forget known logins not seen for `keep` seconds."""
    return f"DELETE FROM known_logins WHERE last_seen < {d.p(1)}", (now - keep,)


def note_known(d: Dialect, name: str, now: float) -> Query:
    """Remember a successful login's key, seen now."""
    return (
        f"INSERT INTO known_logins (key, last_seen) VALUES ({d.p(1)}, {d.p(2)}) "
        "ON CONFLICT (key) DO UPDATE SET last_seen = excluded.last_seen",
        (name, now),
    )


def is_known(d: Dialect, name: str, since: float) -> Query:
    """A row when the key logged in successfully at or after `since`."""
    return f"SELECT 1 FROM known_logins WHERE key = {d.p(1)} AND last_seen >= {d.p(2)}", (name, since)
