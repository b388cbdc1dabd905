"""Storage layer (PostgreSQL): the scale-out backend (asyncpg) behind the same Storage interface
as SQLite."""

from runtime.storage.postgres.backend import PostgresStorage, database_digest, load_or_create_cluster_id
from runtime.storage.postgres.schema import MIGRATIONS

__all__ = ["MIGRATIONS", "PostgresStorage", "database_digest", "load_or_create_cluster_id"]
