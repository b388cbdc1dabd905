"""CLI layer: `ttgen admin`, which manages users, departments and groups in the cluster's database.

It opens the same SQLite database the biz service uses (WAL, so it works while the cluster runs); each change
is one transaction. Group member changes bump the group's version, which is how a running biz notices them.
Passwords are stored as argon2id over MD5hex(plaintext), the value TeamTalk clients send.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from runtime.auth import PasswordHasher, PolicyError, cluster_hash_policy
from runtime.cluster.config import ClusterConfig, ConfigError, load_config
from runtime.cluster.discovery import RunDirDiscovery
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
    """Create users, departments and groups (works before and while the cluster runs).

    \b
    Examples:
      ttgen admin user add alice --password secret --nick Alice --department Engineering
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
    hasher = cluster_hasher(ctx)

    async def work(storage: Storage) -> int:
        (user_id,) = await user_ids(storage, [name])
        await storage.set_password_hash(user_id, await asyncio.to_thread(hasher.hash_plaintext, password))
        return user_id

    user_id = run_with_storage(ctx, work)
    click.echo(f"password of {name} (id {user_id}) changed; its resumption tickets are void")


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

    click.echo(f"created department {name} (id {run_with_storage(ctx, work)})")


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
    verb = "added" if action == "add" else "removed"
    click.echo(f"{verb} {changed} member(s) of group {target.name} (now version {version})")
