"""Storage layer (SQLite): the whole-database digest that "refused input changed nothing" checks rely on."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from runtime.storage.sqlite.readers import database_digest


def make_db(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
        db.execute("INSERT INTO t (v) VALUES (?), (?)", (b"a", b"b"))
    db.close()


def test_digest_is_stable_and_sees_every_change(tmp_path: Path) -> None:
    path = tmp_path / "ttgen.db"
    make_db(path)
    first = database_digest(path)
    assert database_digest(path) == first  # reading does not change it
    with sqlite3.connect(path) as db:
        db.execute("UPDATE t SET v = ? WHERE id = 2", (b"c",))
    db.close()
    changed = database_digest(path)
    assert changed != first
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE empty (x)")  # a new, empty table counts too
    db.close()
    assert database_digest(path) != changed
