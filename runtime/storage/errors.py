"""Storage layer: the typed errors every backend raises, so services map them to protocol results."""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every error the storage layer raises on purpose."""


class InvalidArgument(StorageError):
    """A value is out of range or malformed (e.g. a message to oneself, an unknown enum value)."""


class ValueTooLarge(InvalidArgument):
    """A string or byte value exceeds its column limit; nothing was written."""

    def __init__(self, field: str, size: int, limit: int) -> None:
        super().__init__(f"{field}: {size} exceeds the limit of {limit}")
        self.field = field
        self.size = size
        self.limit = limit


class NotFound(StorageError):
    """The referenced user, group, message or record does not exist."""


class Conflict(StorageError):
    """A uniqueness rule would be broken (e.g. a login name already taken)."""


class AccessDenied(StorageError):
    """The caller may not read or change this session, group or record."""


class RecallWindowExpired(AccessDenied):
    """The sender tried to recall a message after the configured recall window."""


class EditWindowExpired(AccessDenied):
    """The sender tried to edit a message after the configured edit window."""


class SchemaTooNew(StorageError):
    """The database was written by newer code (its schema version is above the one this code knows)."""

    def __init__(self, found: int, supported: int) -> None:
        super().__init__(
            f"database schema version {found} is newer than this code supports ({supported}); upgrade ttgen"
        )
        self.found = found
        self.supported = supported


class KeyMismatch(StorageError):
    """Encrypted content exists but the at-rest key is missing or is not the key it was written with."""


class StorageClosed(StorageError):
    """The backend was used before open() or after close()."""


class StorageUnavailable(StorageError):
    """The database server cannot be reached (down, restarting, connection lost): nothing was stored, and
    the caller may try again; the backend reconnects by itself once the server is back."""


class ClusterMismatch(StorageError):
    """The database belongs to another cluster (a second cluster pointed at it by mistake): refused."""
