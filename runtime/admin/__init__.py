"""Runtime admin layer: operator actions on people (user lifecycle, bulk import) with an audit log.

The logic lives here so the CLI (`ttgen admin`) and the gateway's admin HTTP API share it and stay thin.
"""

from runtime.admin.audit import AuditLog, audit_path
from runtime.admin.users import (
    AdminError,
    ImportReport,
    RowError,
    UserAdmin,
    parse_users_csv,
)

__all__ = [
    "AdminError",
    "AuditLog",
    "ImportReport",
    "RowError",
    "UserAdmin",
    "audit_path",
    "parse_users_csv",
]
