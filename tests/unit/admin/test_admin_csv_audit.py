"""runtime.admin: the CSV parser's per-row errors and the audit log (0600, no secrets, rotation). The verbs
over real storage are in tests/unit/storage/test_admin_verbs.py."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from runtime.admin import AuditLog, parse_users_csv
from runtime.auth import PasswordHasher

CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def test_csv_rows_and_their_errors() -> None:
    text = (
        "Name,password,nick,email\n"
        "alice,pw,Alice,a@x\n"
        "\n"
        "bob,,Bob,\n"
        ",pw,,\n"
        "carol,pw,\n"
        "alice,pw,again,\n"
        'dave,"p,w",Dave,\n'
        "eve\x01,pw,,\n"
    )
    rows, errors = parse_users_csv(text)
    assert [(r.line, r.name, r.password, r.nick) for r in rows] == [
        (2, "alice", "pw", "Alice"),
        (8, "dave", "p,w", "Dave"),
    ]
    assert [(e.line, e.name, e.message) for e in errors] == [
        (4, "bob", "empty password"),
        (5, "", "empty name"),
        (6, "carol", "3 fields, not 4"),
        (7, "alice", "the name is also on line 2"),
        (9, "eve\x01", "the name must have at most 256 characters and no control characters"),
    ]
    assert str(errors[0]) == "line 4 (bob): empty password"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("name,nick\nx,y\n", "missing column(s) password"),
        ("name,password,shoe\n", "unknown column(s) shoe"),
        ("name,password,name\n", "a column appears twice"),
    ],
)
def test_a_bad_header_refuses_the_whole_file(text: str, message: str) -> None:
    rows, errors = parse_users_csv(text)
    assert rows == [] and len(errors) == 1 and message in errors[0].message


def test_the_row_limit_is_an_error_not_a_truncation() -> None:
    rows, errors = parse_users_csv("name,password\n" + "".join(f"u{i},p\n" for i in range(12)), max_rows=10)
    assert len(rows) == 10 and [e.message for e in errors] == ["more than 10 rows"]


def test_audit_log_is_private_drops_secrets_and_rotates(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "sub" / "audit.log", max_bytes=600, clock=lambda: 1.5)
    doc = log.record("cli:root", "user.passwd", "alice", "ok", password="hunter2", user_id=7)
    assert doc == {
        "time": 1.5,
        "actor": "cli:root",
        "action": "user.passwd",
        "target": "alice",
        "outcome": "ok",
        "user_id": 7,
    }
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600
    assert "hunter2" not in log.path.read_text()
    huge = log.record("a", "b", "c", "d", members=["x" * 100] * 100)
    assert huge.get("truncated") is True and "members" not in huge
    for i in range(10):
        log.record("a", "b", f"t{i}", "ok")
    assert log.path.with_name("audit.log.1").exists()
    assert log.path.stat().st_size <= 600
    assert [r["target"] for r in log.read()][-1] == "t9"
    log.path.write_text(log.path.read_text() + "not json\n[1]\n")
    assert all(isinstance(r, dict) for r in log.read())
