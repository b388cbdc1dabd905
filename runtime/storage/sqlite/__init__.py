"""Storage layer (SQLite): the embedded default backend."""

from runtime.storage.sqlite.backend import DB_FILE_NAME, SqliteStorage
from runtime.storage.sqlite.schema import MIGRATIONS, Migration

__all__ = ["DB_FILE_NAME", "MIGRATIONS", "Migration", "SqliteStorage"]
