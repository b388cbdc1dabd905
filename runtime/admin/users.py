"""Runtime admin layer: the user lifecycle verbs shared by `ttgen admin user ...` and the admin HTTP API.

- disable: status LEFT, TeamTalk's "departed" (hidden from the directory; password and ticket logins are
  refused); the password is kept;
- enable: a disabled user back to NORMAL (a deleted user cannot be enabled);
- delete: disabled, and the password hash replaced by a value no password matches (every resumption ticket
  is void with it) and the device tokens dropped; its messages stay in the peers' history;
- passwd: a new password (resumption tickets are bound to the stored hash and stop working);
- import: many users from CSV in one transaction; every bad row is reported with its line, and nothing is
  written unless every row is good (or `partial`, where the good rows are written, still in one transaction).

Disable and delete end the user's sessions at once through the `kick` callback the caller gives (the gateway
relays `CID_OTHER_SERVER_KICK_USER` with reason SERVER_KICK_ACCOUNT to every msg server through the routers).
Every verb, granted or refused, is written to the audit log with its actor.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from runtime.admin.audit import AuditLog
from runtime.auth.passwords import PasswordHasher
from runtime.storage import errors as se
from runtime.storage.base import Storage
from runtime.storage.models import NewUser, User, UserPatch, UserStatus

DELETED_HASH = "!deleted"  # not an argon2 hash: no password verifies against it
MAX_IMPORT_ROWS = 100_000
MAX_IMPORT_BYTES = 32 * 1024 * 1024
MAX_PASSWORD = 1024
HASH_WORKERS = 4  # argon2 releases the GIL: a few threads hash an import in parallel
COLUMNS = ("name", "password", "nick", "department", "email")

Kick = Callable[[list[int]], Awaitable[None]]


class AdminError(Exception):
    """An admin action was refused: `kind` is not_found, bad_request or conflict."""

    def __init__(self, message: str, kind: str = "bad_request") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class ImportRow:
    """One parsed CSV row (line numbers count the header as line 1)."""

    line: int
    name: str
    password: str
    nick: str = ""
    department: str = ""
    email: str = ""


@dataclass(frozen=True)
class RowError:
    """Why one CSV row cannot be imported."""

    line: int
    name: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line} ({self.name or '-'}): {self.message}"


@dataclass
class ImportReport:
    """The outcome of an import: the users created and the rows refused."""

    rows: int
    created: list[User] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


def parse_users_csv(text: str, max_rows: int = MAX_IMPORT_ROWS) -> tuple[list[ImportRow], list[RowError]]:
    """Rows of a users CSV with a header naming some of `name,password,nick,department,email` (name and
    password required, any order); malformed rows become RowErrors, never exceptions."""
    if len(text.encode()) > MAX_IMPORT_BYTES:
        return [], [RowError(0, "", f"the file has more than {MAX_IMPORT_BYTES} bytes")]
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        return [], [RowError(1, "", "the file is empty (expected a header: name,password,...)")]
    except csv.Error as exc:
        return [], [RowError(1, "", f"unreadable header: {exc}")]
    unknown = [h for h in header if h not in COLUMNS]
    missing = [h for h in ("name", "password") if h not in header]
    if unknown or missing or len(set(header)) != len(header):
        why = "; ".join(
            part
            for part in (
                f"unknown column(s) {', '.join(unknown)}" if unknown else "",
                f"missing column(s) {', '.join(missing)}" if missing else "",
                "a column appears twice" if len(set(header)) != len(header) else "",
            )
            if part
        )
        return [], [RowError(1, "", f"bad header ({why}); columns: {','.join(COLUMNS)}")]
    rows: list[ImportRow] = []
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    try:
        for values in reader:
            line = reader.line_num
            if not any(v.strip() for v in values):
                continue
            if len(rows) + len(errors) >= max_rows:
                errors.append(RowError(line, "", f"more than {max_rows} rows"))
                break
            if len(values) != len(header):
                errors.append(
                    RowError(line, values[0] if values else "", f"{len(values)} fields, not {len(header)}")
                )
                continue
            doc = {h: v.strip() if h != "password" else v for h, v in zip(header, values, strict=True)}
            name = doc["name"]
            problem = _row_problem(doc)
            if not problem and name in seen:
                problem = f"the name is also on line {seen[name]}"
            if problem:
                errors.append(RowError(line, name, problem))
                continue
            seen[name] = line
            rows.append(
                ImportRow(
                    line,
                    name,
                    doc["password"],
                    doc.get("nick", ""),
                    doc.get("department", ""),
                    doc.get("email", ""),
                )
            )
    except csv.Error as exc:
        errors.append(RowError(reader.line_num, "", f"unreadable CSV: {exc}"))
    return rows, errors


def _row_problem(doc: dict[str, str]) -> str:
    name, password = doc["name"], doc["password"]
    if not name:
        return "empty name"
    if len(name) > 256 or any(ord(ch) < 32 for ch in name):
        return "the name must have at most 256 characters and no control characters"
    if not password:
        return "empty password"
    if len(password) > MAX_PASSWORD:
        return f"the password has more than {MAX_PASSWORD} characters"
    return ""


class UserAdmin:
    """The verbs, over one open storage, writing every action to the audit log as `actor`."""

    def __init__(
        self,
        storage: Storage,
        audit: AuditLog,
        actor: str,
        *,
        hasher: PasswordHasher | None = None,
        kick: Kick | None = None,
    ) -> None:
        self.storage, self.audit, self.actor = storage, audit, actor
        self.hasher, self.kicker = hasher, kick

    async def find(self, name: str) -> User:
        """A user by login name; `#ID` is a user id, and so is a number no login name matches."""
        by_id = name.startswith("#")
        digits = name[1:] if by_id else name
        user = None if by_id else await self.storage.get_user_by_login(name)
        if user is None and digits.isdigit() and 0 < int(digits) <= 0xFFFFFFFF:
            found = await self.storage.get_users([int(digits)])
            user = found[0] if found else None
        if user is None:
            raise AdminError(f"unknown user {name!r}", "not_found")
        return user

    async def _act(
        self, action: str, name: str, work: Callable[[], Awaitable[User]], **details: object
    ) -> User:
        try:
            user = await work()
        except AdminError as exc:
            self.audit.record(self.actor, action, name, f"refused: {exc}", **details)
            raise
        except se.StorageError as exc:
            self.audit.record(self.actor, action, name, f"failed: {type(exc).__name__}: {exc}", **details)
            raise AdminError(f"{type(exc).__name__}: {exc}", "conflict") from None
        kicked = action in ("user.disable", "user.delete", "user.kick") and self.kicker is not None
        if kicked and self.kicker is not None:
            await self.kicker([user.id])
        self.audit.record(self.actor, action, name, "ok", user_id=user.id, kicked=kicked, **details)
        return user

    async def _deleted(self, user: User) -> bool:
        creds = await self.storage.get_credentials_by_id(user.id)
        return creds is None or creds.password_hash == DELETED_HASH

    async def disable(self, name: str) -> User:
        """Switch an account off: it may not log in, its sessions end (disabling twice is harmless)."""

        async def work() -> User:
            user = await self.find(name)
            if await self._deleted(user):
                raise AdminError(f"user {name!r} is deleted", "conflict")
            return await self.storage.update_user(user.id, UserPatch(status=int(UserStatus.LEFT)))

        return await self._act("user.disable", name, work)

    async def enable(self, name: str) -> User:
        """Switch a disabled account back on (status NORMAL)."""

        async def work() -> User:
            user = await self.find(name)
            if await self._deleted(user):
                raise AdminError(f"user {name!r} is deleted and cannot be enabled", "conflict")
            if user.status != UserStatus.LEFT:
                raise AdminError(f"user {name!r} is not disabled", "conflict")
            return await self.storage.update_user(user.id, UserPatch(status=int(UserStatus.NORMAL)))

        return await self._act("user.enable", name, work)

    async def delete(self, name: str) -> User:
        """Delete an account: hidden, unusable, its sessions ended; its messages stay in peers' history."""

        async def work() -> User:
            user = await self.find(name)
            if await self._deleted(user):
                raise AdminError(f"user {name!r} is already deleted", "conflict")
            await self.storage.set_password_hash(user.id, DELETED_HASH)
            await self.storage.clear_device_token(user.id)
            return await self.storage.update_user(user.id, UserPatch(status=int(UserStatus.LEFT)))

        return await self._act("user.delete", name, work)

    async def kick(self, name: str) -> User:
        """End every session of a user now (what disable and delete do after their change)."""
        return await self._act("user.kick", name, lambda: self.find(name))

    async def passwd(self, name: str, password: str) -> User:
        """Set a new password; the user's resumption tickets stop working."""

        async def work() -> User:
            if not password or len(password) > MAX_PASSWORD:
                raise AdminError(f"the password must have 1 to {MAX_PASSWORD} characters")
            user = await self.find(name)
            if await self._deleted(user):
                raise AdminError(f"user {name!r} is deleted", "conflict")
            hashed = await asyncio.to_thread(self._hasher().hash_plaintext, password)
            await self.storage.set_password_hash(user.id, hashed)
            return user

        return await self._act("user.passwd", name, work)

    def _hasher(self) -> PasswordHasher:
        if self.hasher is None:
            raise AdminError("no password hasher configured")
        return self.hasher

    async def import_users(
        self, rows: Sequence[ImportRow], errors: Sequence[RowError] = (), *, partial: bool = False
    ) -> ImportReport:
        """Create the rows' users in one transaction. Rows are checked against the directory first (taken
        names, unknown departments); with any error nothing is written unless `partial`."""
        report = ImportReport(rows=len(rows) + len(errors), errors=list(errors))
        departments = {d.name: d.id for d in await self.storage.list_departments_since(0)}
        departments.update({str(i): i for i in departments.values()})
        good: list[ImportRow] = []
        for row in rows:
            problem = ""
            if row.department and row.department not in departments:
                problem = f"unknown department {row.department!r}"
            elif await self.storage.get_user_by_login(row.name) is not None:
                problem = "the name is taken"
            if problem:
                report.errors.append(RowError(row.line, row.name, problem))
            else:
                good.append(row)
        report.errors.sort(key=lambda e: e.line)
        if (report.errors and not partial) or not good:
            outcome = f"refused: {len(report.errors)} bad row(s)" if report.errors else "nothing to import"
            self.audit.record(self.actor, "user.import", f"{report.rows} rows", outcome, created=0)
            return report
        hashes = await self._hash_all([r.password for r in good])
        users = [
            NewUser(
                login_name=r.name,
                nick=r.nick or r.name,
                real_name=r.nick or r.name,
                domain=r.name,
                department_id=departments.get(r.department, 0),
                email=r.email,
                password_hash=h,
            )
            for r, h in zip(good, hashes, strict=True)
        ]
        try:
            report.created = await self.storage.create_users(users)
        except se.StorageError as exc:  # e.g. a name taken between the check and the write: nothing written
            self.audit.record(self.actor, "user.import", f"{report.rows} rows", f"failed: {exc}", created=0)
            raise AdminError(
                f"import failed, nothing written: {type(exc).__name__}: {exc}", "conflict"
            ) from None
        self.audit.record(
            self.actor,
            "user.import",
            f"{report.rows} rows",
            "ok" if not report.errors else f"partial: {len(report.errors)} bad row(s) skipped",
            created=len(report.created),
        )
        return report

    async def _hash_all(self, passwords: list[str]) -> list[str]:
        hasher = self._hasher()
        gate = asyncio.Semaphore(HASH_WORKERS)

        async def one(password: str) -> str:
            async with gate:
                return await asyncio.to_thread(hasher.hash_plaintext, password)

        return list(await asyncio.gather(*(one(p) for p in passwords)))
