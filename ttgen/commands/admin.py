"""CLI layer: `ttgen admin`, which manages users, departments and groups in the cluster's database.

It opens the same database the biz service uses (SQLite in WAL mode or PostgreSQL, so it works while the
cluster runs); each change is one transaction. Group member changes bump the group's version, which is how a
running biz notices them. Passwords are stored as argon2id over MD5hex(plaintext), the value TeamTalk clients
send. The user lifecycle verbs (disable, enable, delete, passwd, import) are runtime.admin's, shared with the
gateway's admin HTTP API; every change is written to the admin audit log. Disable and delete end the user's
sessions at once through a running gateway (`POST /admin/users/kick`, found in the run dir).
"""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from runtime.admin import AdminError, AuditLog, UserAdmin, audit_path, parse_users_csv
from runtime.auth import PasswordHasher, PolicyError, cluster_hash_policy
from runtime.cluster.config import ClusterConfig, ConfigError, load_config
from runtime.cluster.discovery import RunDirDiscovery
from runtime.httpkit import MalformedRequest, fetch
from runtime.registry import Registry
from runtime.services.base import ServiceContext
from runtime.storage import Conflict, Group, GroupModify, GroupType, NewUser, Storage, StorageError, User

T = TypeVar("T")


async def open_cluster_storage(config: ClusterConfig) -> Storage:
    """The cluster's storage, opened exactly the way the biz service opens it."""
    from runtime.services.biz.storage_open import open_storage

    ctx = ServiceContext(
        name="admin",
        instance=0,
        registry=Registry("none", "0", []),
        config={},
        cluster_config=config.as_dict(),
        data_dir=config.data_dir,
        discovery=RunDirDiscovery(config.run_dir),
        host=config.host,
    )
    return await open_storage(ctx)


def _config(obj: dict[str, Any]) -> ClusterConfig:
    overrides = {"data_dir": str(obj["data_dir"])} if obj.get("data_dir") else {}
    try:
        return load_config(obj.get("config"), overrides)
    except ConfigError as exc:
        raise click.ClickException(f"config error: {exc}") from None


def cluster_hasher(ctx: click.Context) -> PasswordHasher:
    """A hasher with the cluster's configured policy (`services.biz.auth`): what admin tools store is what
    biz expects, so the first login does not re-hash it."""
    try:
        return PasswordHasher(policy=cluster_hash_policy(_config(ctx.obj).as_dict()))
    except PolicyError as exc:
        raise click.ClickException(f"config error: services.biz.auth: {exc}") from None


def run_with_storage(ctx: click.Context, work: Callable[[Storage], Awaitable[T]]) -> T:
    """Open storage, run one admin operation, close; storage errors become a clear CLI error (exit 1)."""
    config = _config(ctx.obj)

    async def go() -> T:
        storage = await open_cluster_storage(config)
        try:
            return await work(storage)
        finally:
            await storage.close()

    try:
        return asyncio.run(go())
    except StorageError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None


def audit_log(ctx: click.Context) -> AuditLog:
    """The cluster's admin audit log (config `admin.audit_log`, default admin-audit.log in the data dir)."""
    config = _config(ctx.obj)
    return AuditLog(audit_path(config.as_dict(), config.data_dir))


def cli_actor() -> str:
    """Who acts, as the audit log names a CLI user."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:?"


def gateway_kicker(ctx: click.Context, notes: list[str]) -> Callable[[list[int]], Awaitable[None]]:
    """Ends users' sessions through a running gateway's admin API; without one, says what that means."""
    config = _config(ctx.obj)

    async def kick(user_ids: list[int]) -> None:
        eps = RunDirDiscovery(config.run_dir).endpoints("gateway", "http")
        gateway = config.as_dict().get("services", {}).get("gateway", {})
        key_file = config.data_dir / str(gateway.get("admin_api_key_file", "admin.key"))
        if not eps or not key_file.exists():
            notes.append("no running gateway found: connected sessions end at their next reconnect (no login")
            notes.append("of this user is accepted any more)")
            return
        key = key_file.read_text().strip()
        for uid in user_ids:
            try:
                rsp = await fetch(
                    eps[0].host,
                    eps[0].port,
                    "POST",
                    "/admin/users/kick",
                    json.dumps({"user_id": uid}).encode(),
                    {"X-Api-Key": key, "Content-Type": "application/json"},
                    timeout=10.0,
                )
            except (OSError, TimeoutError, MalformedRequest) as exc:
                notes.append(f"could not reach the gateway to end the sessions: {exc}")
                return
            if rsp.status != 200:
                notes.append(f"the gateway did not end the sessions: HTTP {rsp.status} {rsp.body[:200]!r}")
                return
        notes.append("sessions ended")

    return kick


def run_admin(ctx: click.Context, verb: str, name: str, *args: str) -> tuple[User, list[str]]:
    """One user lifecycle verb through runtime.admin (audited); AdminError becomes a CLI error."""
    notes: list[str] = []
    hasher = cluster_hasher(ctx) if verb == "passwd" else None
    audit = audit_log(ctx)

    async def work(storage: Storage) -> User:
        admin = UserAdmin(storage, audit, cli_actor(), hasher=hasher, kick=gateway_kicker(ctx, notes))
        user: User = await getattr(admin, verb)(name, *args)
        return user

    try:
        return run_with_storage(ctx, work), notes
    except AdminError as exc:
        raise click.ClickException(str(exc)) from None


async def user_ids(storage: Storage, names: list[str]) -> list[int]:
    """Login names (or numeric ids) to user ids; unknown names are an error naming them."""
    ids, missing = [], []
    for name in names:
        user = await storage.get_user_by_login(name)
        if user is not None:
            ids.append(user.id)
        elif name.isdigit() and await storage.get_users([int(name)]):
            ids.append(int(name))
        else:
            missing.append(name)
    if missing:
        raise click.ClickException(f"unknown user(s): {', '.join(missing)}")
    return ids


async def department_id(storage: Storage, name_or_id: str | None) -> int:
    """A department name (or id) to its id; 0 for none."""
    if not name_or_id:
        return 0
    for dept in await storage.list_departments_since(0):
        if dept.name == name_or_id or str(dept.id) == name_or_id:
            return dept.id
    raise click.ClickException(f"unknown department {name_or_id!r} (create it with `ttgen admin dept add`)")


async def all_groups(storage: Storage) -> list[Group]:
    """Every group with a member (the storage interface lists groups per member)."""
    from runtime.storage import GroupVersion

    found: dict[int, Group] = {}
    for user in await storage.list_users_since(0):
        mine = await storage.list_user_groups(user.id)
        unknown = [GroupVersion(g.group_id, 0) for g in mine if g.group_id not in found]
        for start in range(0, len(unknown), 100):
            for group in await storage.get_groups_info(user.id, unknown[start : start + 100]):
                found[group.id] = group
    return sorted(found.values(), key=lambda g: g.id)


async def find_group(storage: Storage, name_or_id: str) -> Group:
    """A group by name (or numeric id)."""
    matches = [g for g in await all_groups(storage) if g.name == name_or_id or str(g.id) == name_or_id]
    if not matches:
        raise click.ClickException(f"unknown group {name_or_id!r}")
    if len(matches) > 1:
        raise click.ClickException(
            f"several groups are named {name_or_id!r}; use the id: " + ", ".join(str(g.id) for g in matches)
        )
    return matches[0]


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _user_doc(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "name": user.login_name,
        "nick": user.nick,
        "department_id": user.department_id,
        "status": user.status,
    }


@click.group("admin")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="The cluster's data dir (default ./ttgen-data, or the config's).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The cluster config, to find the database.",
)
@click.pass_context
def admin(ctx: click.Context, data_dir: Path | None, config_file: Path | None) -> None:
    """Create users, departments and groups; disable, enable, delete and import users; rotate at-rest keys
    (works before and while the cluster runs; every change is audited).

    \b
    Examples:
      ttgen admin user add alice --password secret --nick Alice --department Engineering
      ttgen admin user disable alice
      ttgen admin import users.csv
      ttgen admin keys rotate
      ttgen admin user list
      ttgen admin dept add Engineering
      ttgen admin group create team --members alice,bob,carol
      ttgen admin group members add team --members dave
    """
    ctx.obj = {"data_dir": data_dir, "config": config_file}


@admin.group("user")
def user_group() -> None:
    """Users."""


@user_group.command("add")
@click.argument("name")
@click.option("--password", required=True, help="Plain-text password (stored as argon2id of its MD5 hex).")
@click.option("--nick", default="", help="Display name (default: the login name).")
@click.option("--department", help="Department name or id.")
@click.option("--email", default="")
@click.pass_context
def user_add(
    ctx: click.Context, name: str, password: str, nick: str, department: str | None, email: str
) -> None:
    """Create a user NAME."""
    if not name.strip() or not password:
        raise click.BadParameter("name and password must not be empty")

    hasher = cluster_hasher(ctx)

    async def work(storage: Storage) -> User:
        dept = await department_id(storage, department)
        hashed = await asyncio.to_thread(hasher.hash_plaintext, password)
        try:
            # `domain` (TeamTalk's pinyin search key) carries the login name, so clients can address users
            # by it: UserInfo has no login-name field.
            return await storage.create_user(
                NewUser(
                    login_name=name,
                    nick=nick or name,
                    real_name=nick or name,
                    domain=name,
                    department_id=dept,
                    email=email,
                    password_hash=hashed,
                )
            )
        except Conflict:
            raise click.ClickException(f"user {name!r} already exists") from None

    user = run_with_storage(ctx, work)
    audit_log(ctx).record(cli_actor(), "user.add", name, "ok", user_id=user.id)
    click.echo(f"created user {user.login_name} (id {user.id})")


@user_group.command("passwd")
@click.argument("name")
@click.option("--password", required=True, help="The new plain-text password.")
@click.pass_context
def user_passwd(ctx: click.Context, name: str, password: str) -> None:
    """Set the password of user NAME. Every resumption ticket of the user stops working at once (tickets
    are bound to the stored hash); connected sessions stay until they log out or reconnect."""
    if not password:
        raise click.BadParameter("must not be empty", param_hint="--password")
    user, _ = run_admin(ctx, "passwd", name, password)
    click.echo(f"password of {name} (id {user.id}) changed; its resumption tickets are void")


@user_group.command("disable")
@click.argument("name")
@click.pass_context
def user_disable(ctx: click.Context, name: str) -> None:
    """Disable user NAME: no login is accepted, its sessions end now (`enable` undoes it)."""
    user, notes = run_admin(ctx, "disable", name)
    click.echo(f"disabled {name} (id {user.id}); " + " ".join(notes))


@user_group.command("enable")
@click.argument("name")
@click.pass_context
def user_enable(ctx: click.Context, name: str) -> None:
    """Enable a disabled user NAME again."""
    user, _ = run_admin(ctx, "enable", name)
    click.echo(f"enabled {name} (id {user.id})")


@user_group.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def user_delete(ctx: click.Context, name: str, yes: bool) -> None:
    """Delete user NAME: hidden from the directory, its password and device tokens void, its sessions ended.
    Its messages stay in its peers' history; the login name stays taken. This cannot be undone."""
    if not yes:
        click.confirm(f"delete user {name} for good?", abort=True)
    user, notes = run_admin(ctx, "delete", name)
    click.echo(f"deleted {name} (id {user.id}); " + " ".join(notes))


@admin.command("import")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--partial", is_flag=True, help="Import the good rows even if some rows are bad.")
@click.pass_context
def import_users(ctx: click.Context, csv_file: Path, partial: bool) -> None:
    """Create users from a CSV file with a header of name,password[,nick,department,email], all in one
    transaction. Every bad row is reported with its line; unless --partial, nothing is written then.

    \b
    Example users.csv:
      name,password,nick,department
      alice,secret1,Alice,Engineering
      bob,secret2,Bob,
    """
    try:
        text = csv_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read {csv_file}: {exc}") from None
    rows, errors = parse_users_csv(text)
    hasher = cluster_hasher(ctx)
    audit = audit_log(ctx)

    async def work(storage: Storage) -> Any:
        admin = UserAdmin(storage, audit, cli_actor(), hasher=hasher)
        return await admin.import_users(rows, errors, partial=partial)

    try:
        report = run_with_storage(ctx, work)
    except AdminError as exc:
        raise click.ClickException(str(exc)) from None
    for error in report.errors:
        click.echo(f"! {error}", err=True)
    if not report.created:
        raise click.ClickException(
            f"nothing imported: {len(report.errors)} bad row(s) of {report.rows}"
            + ("" if partial or not rows else " (fix them, or pass --partial)")
        )
    skipped = f", {len(report.errors)} bad row(s) skipped" if report.errors else ""
    click.echo(f"imported {len(report.created)} user(s) of {report.rows} row(s) in one transaction{skipped}")


@admin.command("audit")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def audit_show(ctx: click.Context, limit: int, fmt: str) -> None:
    """Show the last admin actions (CLI and HTTP API), oldest first."""
    records = audit_log(ctx).read(limit)
    if fmt == "json":
        click.echo(json.dumps(records, indent=2))
        return
    for r in records:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(r.get("time", 0))))
        click.echo(
            f"{when}Z  {r.get('actor', '?'):<22} {r.get('action', '?'):<22} {r.get('target', '')}: "
            f"{r.get('outcome', '')}"
        )


@user_group.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def user_list(ctx: click.Context, fmt: str) -> None:
    """List users."""
    users = run_with_storage(ctx, lambda s: s.list_users_since(0))
    if fmt == "json":
        click.echo(json.dumps([_user_doc(u) for u in users], indent=2))
        return
    click.echo(f"{'ID':>5}  {'NAME':<16} {'NICK':<16} DEPT")
    for u in users:
        click.echo(f"{u.id:>5}  {u.login_name:<16} {u.nick:<16} {u.department_id or '-'}")


@admin.command("tombstones")
@click.option("--since", type=click.IntRange(0), default=0, help="Removed at or after (unix seconds).")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def tombstones(ctx: click.Context, since: int, limit: int, fmt: str) -> None:
    """Recalled and burned messages: which, whose, who removed them and when (never their content)."""
    stones = run_with_storage(ctx, lambda s: s.list_tombstones(since, limit))
    if fmt == "json":
        click.echo(json.dumps([dataclasses.asdict(t) for t in stones], indent=2))
        return
    for t in stones:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t.removed))
        kind = "user" if t.session_type == 1 else "group"
        click.echo(
            f"{when}Z  {t.action:<6} msg {t.msg_id} of {kind} session {t.session_id} from user {t.from_id}, "
            f"by user {t.actor_id}"
        )


@admin.group("keys")
def keys_group() -> None:
    """At-rest encryption keys (storage.encrypt_at_rest)."""


def _unopened_storage(ctx: click.Context) -> tuple[ClusterConfig, Storage, Path]:
    from runtime.services.biz.storage_open import storage_from_config

    config = _config(ctx.obj)
    section = dict(config.as_dict().get("storage") or {})
    if not section.get("encrypt_at_rest"):
        raise click.ClickException("this cluster does not encrypt at rest (storage.encrypt_at_rest: false)")
    storage = storage_from_config(section, config.data_dir)
    key_dir = getattr(storage, "key_dir", config.data_dir)
    return config, storage, Path(key_dir)


@keys_group.command("rotate")
@click.option(
    "--batch", type=click.IntRange(1, 10_000), default=500, show_default=True, help="Rows a transaction."
)
@click.option("--no-reseal", is_flag=True, help="Only add the key; leave older rows as they are.")
@click.pass_context
def keys_rotate(ctx: click.Context, batch: int, no_reseal: bool) -> None:
    """Add a new at-rest key version for new writes (running services take it up within a second) and
    re-seal every older row under it in small transactions, while the cluster runs. Older key files stay
    (`keys status` shows when no row needs them any more)."""
    from runtime.storage.at_rest import CHECK_SECONDS, add_key_version, key_file

    _, _, key_dir = _unopened_storage(ctx)
    audit = audit_log(ctx)
    try:
        version = add_key_version(key_dir)
    except StorageError as exc:
        audit.record(cli_actor(), "keys.rotate", str(key_dir), f"refused: {exc}")
        raise click.ClickException(str(exc)) from None
    audit.record(cli_actor(), "keys.rotate", str(key_dir), "ok", version=version)
    click.echo(f"added at-rest key version {version}: {key_file(key_dir, version)} (mode 0600)")
    if no_reseal:
        return

    async def reseal(storage: Storage) -> int:
        total, quiet_passes = 0, 0
        # Writers take the new key up within CHECK_SECONDS: a row they sealed with the old one just before
        # is caught by the passes that follow, until two in a row (CHECK_SECONDS apart) find nothing.
        while quiet_passes < 2:
            done = await storage.reseal(batch)
            total += done
            if done:
                quiet_passes = 0
                click.echo(f"  re-sealed {total} row(s)")
            else:
                quiet_passes += 1
                await asyncio.sleep(CHECK_SECONDS * 1.5)
        return total

    async def work(storage: Storage) -> int:
        return await reseal(storage)

    try:
        total = run_with_storage(ctx, work)
    except click.ClickException:
        audit.record(cli_actor(), "keys.reseal", str(key_dir), "failed", version=version)
        raise
    audit.record(cli_actor(), "keys.reseal", str(key_dir), "ok", version=version, rows=total)
    click.echo(f"re-sealed {total} row(s) under key version {version}; every row now uses it")


@keys_group.command("status")
@click.pass_context
def keys_status(ctx: click.Context) -> None:
    """The key versions in the key dir and how many message rows each one seals."""
    from runtime.storage.at_rest import key_file, key_versions

    _, _, key_dir = _unopened_storage(ctx)
    usage = run_with_storage(ctx, lambda s: s.key_usage())
    versions = key_versions(key_dir)
    click.echo(f"key dir {key_dir}")
    for v in sorted(set(versions) | {v for v in usage if v}):
        where = key_file(key_dir, v).name if v in versions else "MISSING"
        current = "  (current: new rows)" if versions and v == max(versions) else ""
        click.echo(f"  version {v}: {usage.get(v, 0)} row(s)  {where}{current}")
    if usage.get(0):
        click.echo(f"  in clear: {usage[0]} row(s) (written before encrypt_at_rest was on)")


@admin.group("dept")
def dept_group() -> None:
    """Departments."""


@dept_group.command("add")
@click.argument("name")
@click.option("--parent", help="Parent department name or id.")
@click.option("--priority", type=int, default=0, show_default=True)
@click.pass_context
def dept_add(ctx: click.Context, name: str, parent: str | None, priority: int) -> None:
    """Create a department NAME."""

    async def work(storage: Storage) -> int:
        parent_id = await department_id(storage, parent)
        if any(d.name == name for d in await storage.list_departments_since(0)):
            raise click.ClickException(f"department {name!r} already exists")
        return (await storage.create_department(name, priority, parent_id)).id

    dept = run_with_storage(ctx, work)
    audit_log(ctx).record(cli_actor(), "dept.add", name, "ok", department_id=dept)
    click.echo(f"created department {name} (id {dept})")


@dept_group.command("list")
@click.pass_context
def dept_list(ctx: click.Context) -> None:
    """List departments."""
    for d in run_with_storage(ctx, lambda s: s.list_departments_since(0)):
        click.echo(f"{d.id:>5}  {d.name}  (parent {d.parent_id or '-'})")


@admin.group("group")
def group_group() -> None:
    """Groups."""


@group_group.command("create")
@click.argument("name")
@click.option("--members", required=True, help="Comma-separated login names; the first is the creator.")
@click.option(
    "--type", "group_type", type=click.Choice(["normal", "tmp"]), default="normal", show_default=True
)
@click.pass_context
def group_create(ctx: click.Context, name: str, members: str, group_type: str) -> None:
    """Create a group NAME (NORMAL groups can only be made by admins)."""
    names = _csv(members)
    if not names:
        raise click.BadParameter("at least one member", param_hint="--members")

    async def work(storage: Storage) -> Group:
        ids = await user_ids(storage, names)
        kind = GroupType.NORMAL if group_type == "normal" else GroupType.TMP
        return await storage.create_group(ids[0], name, kind, ids, by_admin=True)

    group = run_with_storage(ctx, work)
    audit_log(ctx).record(cli_actor(), "group.create", name, "ok", group_id=group.id, members=names)
    click.echo(f"created group {group.name} (id {group.id}, {len(group.members)} members)")


@group_group.command("list")
@click.pass_context
def group_list(ctx: click.Context) -> None:
    """List groups with their members."""

    async def work(storage: Storage) -> list[tuple[Group, list[str]]]:
        out = []
        for g in await all_groups(storage):
            users = await storage.get_users([m.user_id for m in g.members])
            out.append((g, [u.login_name for u in users]))
        return out

    for g, member_names in run_with_storage(ctx, work):
        kind = "normal" if g.group_type == GroupType.NORMAL else "tmp"
        click.echo(f"{g.id:>5}  {g.name}  ({kind}, version {g.version}): {', '.join(member_names)}")


@group_group.command("members")
@click.argument("action", type=click.Choice(["add", "del"]))
@click.argument("group")
@click.option("--members", required=True, help="Comma-separated login names.")
@click.pass_context
def group_members(ctx: click.Context, action: str, group: str, members: str) -> None:
    """Add or remove members of GROUP (name or id); bumps the group version."""

    async def work(storage: Storage) -> tuple[Group, int, int]:
        target = await find_group(storage, group)
        ids = await user_ids(storage, _csv(members))
        modify = GroupModify.ADD if action == "add" else GroupModify.DEL
        change = await storage.change_group_members(None, target.id, modify, ids)
        return target, len(change.changed), change.version

    target, changed, version = run_with_storage(ctx, work)
    audit_log(ctx).record(
        cli_actor(), f"group.members.{action}", target.name, "ok", group_id=target.id, members=_csv(members)
    )
    verb = "added" if action == "add" else "removed"
    click.echo(f"{verb} {changed} member(s) of group {target.name} (now version {version})")
