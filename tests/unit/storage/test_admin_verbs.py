"""runtime.admin's user verbs over real storage (both backends): all-or-nothing imports with per-row errors,
the disable/enable/delete rules, kicks, and storage's one-transaction create_users."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from runtime.admin import AdminError, AuditLog, UserAdmin, parse_users_csv
from runtime.admin.users import DELETED_HASH
from runtime.auth import PasswordHasher
from runtime.storage import NewUser, Storage
from runtime.storage.models import UserStatus
from runtime.storage.sqlite import SqliteStorage

CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def opened(store: Storage) -> Storage:
    await store.open()
    return store


def test_verbs_follow_the_lifecycle_and_kick(make_store: Callable[..., Storage], tmp_path: Path) -> None:
    async def body() -> None:
        store = await opened(make_store())
        kicked: list[int] = []

        async def kick(ids: list[int]) -> None:
            kicked.extend(ids)

        admin = UserAdmin(store, AuditLog(tmp_path / "a.log"), "test", hasher=CHEAP, kick=kick)
        try:
            alice = await store.create_user(NewUser("alice", password_hash=CHEAP.hash_plaintext("pw")))
            await store.create_user(NewUser("12", password_hash="h"))
            with pytest.raises(AdminError, match="unknown user 'nobody'") as missing:
                await admin.disable("nobody")
            assert missing.value.kind == "not_found"
            assert (await admin.find(f"#{alice.id}")).login_name == "alice"
            assert (await admin.find("12")).login_name == "12"  # a login name wins over an id
            assert (await admin.disable("alice")).status == UserStatus.LEFT
            assert kicked == [alice.id]
            assert (await admin.enable("alice")).status == UserStatus.NORMAL
            with pytest.raises(AdminError, match="not disabled"):
                await admin.enable("alice")
            await admin.passwd("alice", "new")
            creds = await store.get_credentials_by_id(alice.id)
            assert creds is not None and CHEAP.verify_wire(creds.password_hash, _md5("new"))
            await store.set_device_token(alice.id, "tok", 17)
            await admin.delete("alice")
            creds = await store.get_credentials_by_id(alice.id)
            assert (
                creds is not None and creds.password_hash == DELETED_HASH and creds.status == UserStatus.LEFT
            )
            assert await store.get_device_tokens([alice.id]) == []
            assert kicked == [alice.id, alice.id]
            for verb, args in (("enable", ()), ("disable", ()), ("delete", ()), ("passwd", ("x",))):
                with pytest.raises(AdminError, match="deleted") as refused:
                    await getattr(admin, verb)("alice", *args)
                assert refused.value.kind == "conflict"
            outcomes = [(r["action"], r["outcome"].split(":")[0]) for r in admin.audit.read()]
            assert outcomes[0] == ("user.disable", "refused") and outcomes.count(("user.delete", "ok")) == 1
        finally:
            await store.close()

    run(body())


def test_import_is_all_or_nothing_unless_partial(make_store: Callable[..., Storage], tmp_path: Path) -> None:
    async def body() -> None:
        store = await opened(make_store())
        admin = UserAdmin(store, AuditLog(tmp_path / "a.log"), "test", hasher=CHEAP)
        try:
            await store.create_user(NewUser("taken"))
            dept = await store.create_department("Eng")
            rows, errors = parse_users_csv(
                "name,password,department\n"
                + "".join(f"u{i},p{i},Eng\n" for i in range(300))
                + "taken,p,\nx,p,Nowhere\n,p,\n"
            )
            report = await admin.import_users(rows, errors)
            assert [(e.line, e.message) for e in report.errors] == [
                (302, "the name is taken"),
                (303, "unknown department 'Nowhere'"),
                (304, "empty name"),
            ]
            assert report.created == [] and await store.get_user_by_login("u0") is None
            report = await admin.import_users(rows, errors, partial=True)
            assert len(report.created) == 300 and report.rows == 303
            u7 = await store.get_user_by_login("u7")
            assert u7 is not None and u7.department_id == dept.id and u7.nick == "u7"
            creds = await store.get_credentials("u7")
            assert creds is not None and CHEAP.verify_wire(creds.password_hash, _md5("p7"))
            # A name taken between the check and the write: the storage transaction writes none of the rows.
            rows, _ = parse_users_csv("name,password\nfresh1,p\nfresh2,p\n")
            await store.create_user(NewUser("fresh2"))
            admin_blind = UserAdmin(store, admin.audit, "test", hasher=CHEAP)
            real_get = store.get_user_by_login

            async def blind(name: str) -> object:
                return None if name.startswith("fresh") else await real_get(name)

            store.get_user_by_login = blind  # type: ignore[method-assign]
            with pytest.raises(AdminError, match="nothing written"):
                await admin_blind.import_users(rows)
            store.get_user_by_login = real_get  # type: ignore[method-assign]
            assert await store.get_user_by_login("fresh1") is None
        finally:
            await store.close()

    run(body())


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def test_create_users_refuses_the_batch_on_one_bad_user(
    make_sqlite_store: Callable[..., SqliteStorage],
) -> None:
    async def body() -> None:
        store = await opened(make_sqlite_store())
        try:
            with pytest.raises(Exception, match="taken"):
                await store.create_users([NewUser("a"), NewUser("b"), NewUser("a")])
            assert await store.list_users_since(0) == []
            made = await store.create_users([NewUser("a"), NewUser("b")])
            assert [u.login_name for u in made] == ["a", "b"]
        finally:
            await store.close()

    run(body())
