"""PostgreSQL backend: migrations, the owning cluster, several writers on one database, and a server that goes
away mid-run (real servers: the session's, and for the outage a throwaway one of the test's own)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.storage import (
    ClusterMismatch,
    GroupType,
    NewUser,
    NotFound,
    SchemaTooNew,
    SessionType,
    StorageUnavailable,
    User,
)
from runtime.storage.postgres import MIGRATIONS, PostgresStorage, load_or_create_cluster_id
from runtime.storage.postgres.local_server import LocalServer
from tests.pg_support import PgDatabases, started
from tests.unit.storage.conftest import Clock
from tests.unit.storage.raw import query, tables

S = SessionType.SINGLE
MkUsers = Callable[..., Awaitable[list[User]]]
TOKEN = 0x0102_0304_0506_0708


def store_on(dsn: str, data_dir: Path, clock: Clock, **kwargs: Any) -> PostgresStorage:
    kwargs.setdefault("cluster_id", "cluster-a")
    return PostgresStorage(dsn, data_dir, clock=clock, **kwargs)


def test_empty_database_is_migrated_once_even_by_concurrent_openers(
    pg_databases: PgDatabases, tmp_path: Path, clock: Clock
) -> None:
    dsn = pg_databases.create(empty=True)
    stores = [store_on(dsn, tmp_path, clock) for _ in range(3)]

    async def body() -> None:
        await asyncio.gather(*[s.open() for s in stores])  # three biz processes starting together
        try:
            assert {s.schema_version for s in stores} == {len(MIGRATIONS)}
            a, b = [await stores[0].create_user(NewUser(n)) for n in ("a", "b")]
            sent = await stores[1].send_single(a.id, b.id, 1, b"hi")
            assert sent.msg_id == 1
        finally:
            await asyncio.gather(*[s.close() for s in stores])
        async with store_on(dsn, tmp_path, clock) as again:  # reopening applies nothing
            assert again.schema_version == len(MIGRATIONS)

    asyncio.run(body())
    assert {"users", "pairs", "messages", "group_messages", "sessions", "dedup", "meta"} <= tables(stores[0])
    assert query(stores[0], "SELECT version FROM schema_version") == [(len(MIGRATIONS),)]


def test_newer_schema_and_older_code_are_refused_clearly(
    pg_databases: PgDatabases, tmp_path: Path, clock: Clock
) -> None:
    dsn = pg_databases.create()

    async def body() -> None:
        with pytest.raises(SchemaTooNew, match="newer than this code supports"):
            await store_on(dsn, tmp_path, clock, migrations=MIGRATIONS[:1]).open()

    asyncio.run(body())


def test_a_second_cluster_on_the_same_database_is_refused(
    pg_databases: PgDatabases, tmp_path: Path, clock: Clock
) -> None:
    dsn = pg_databases.create()
    mine, other = tmp_path / "mine", tmp_path / "other"

    async def body() -> None:
        async with PostgresStorage(dsn, mine, clock=clock) as first:
            await first.create_user(NewUser("a"))
            async with PostgresStorage(dsn, mine, clock=clock):  # the same cluster (its data dir): welcome
                pass
            with pytest.raises(ClusterMismatch, match="belongs to cluster") as info:
                await PostgresStorage(dsn, other, clock=clock).open()
            assert load_or_create_cluster_id(mine) in str(info.value)
            # an explicit cluster id (several hosts of one cluster) names the same owner
            owner = load_or_create_cluster_id(mine)
            async with PostgresStorage(dsn, other, clock=clock, cluster_id=owner) as same:
                assert [u.login_name for u in await same.list_users_since(0)] == ["a"]

    asyncio.run(body())
    assert load_or_create_cluster_id(mine) != load_or_create_cluster_id(other)


def test_two_writers_in_one_conversation_get_unique_gap_free_ids(
    pg_databases: PgDatabases, tmp_path: Path, clock: Clock
) -> None:
    """Two storage instances (two biz processes) storing into the same conversations at once."""
    dsn = pg_databases.create()

    async def body() -> None:
        async with store_on(dsn, tmp_path, clock) as one, store_on(dsn, tmp_path, clock) as two:
            a, b, c = [await one.create_user(NewUser(n)) for n in ("a", "b", "c")]
            group = await one.create_group(a.id, "g", GroupType.TMP, [b.id, c.id])
            sends = []
            for i in range(150):
                store = one if i % 2 else two
                sender, peer = (a, b) if i % 3 else (b, a)
                sends.append(store.send_single(sender.id, peer.id, 1, b"m%d" % i))
                sends.append(store.send_single(a.id, c.id, 1, b"c%d" % i))
                sends.append(store.send_group(sender.id, group.id, 0x11, b"g%d" % i))
            results = await asyncio.gather(*sends)
            ab = sorted(r.msg_id for r in results[0::3])
            ac = sorted(r.msg_id for r in results[1::3])
            grp = sorted(r.msg_id for r in results[2::3])
            assert ab == ac == grp == list(range(1, 151))
            assert one.writer.batches + two.writer.batches < 450  # commits were shared
            history = await two.get_history(b.id, S, a.id, 0, 100)
            assert [m.msg_id for m in history] == list(range(150, 50, -1))

    asyncio.run(body())


def test_a_late_first_copy_meets_its_resend_stored_by_another_writer(
    pg_databases: PgDatabases, tmp_path: Path, clock: Clock
) -> None:
    """The race docs/cluster.md lists for SQLite: biz B stores a resend (the link to biz A dropped), then A
    commits the first copy it still had queued. Here the token is unique per conversation and sender, so the
    late copy is answered with the stored message, and it is stored once."""
    dsn = pg_databases.create()

    async def body() -> None:
        async with store_on(dsn, tmp_path, clock) as a_biz, store_on(dsn, tmp_path, clock) as b_biz:
            a, b = [await a_biz.create_user(NewUser(n)) for n in ("a", "b")]
            resent = await b_biz.send_single(a.id, b.id, 1, b"hello", token=TOKEN, resend=True)
            late = await a_biz.send_single(a.id, b.id, 1, b"hello", token=TOKEN)
            assert (late.msg_id, late.duplicate) == (resent.msg_id, True)
            # the same on the callback path biz uses for first sends
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            a_biz.send_single_nowait(
                a.id, b.id, 1, b"hello", lambda r, e: done.set_result((r, e)), token=TOKEN
            )
            result, error = await done
            assert error is None and (result.msg_id, result.duplicate) == (resent.msg_id, True)
            # both writers racing with the same token: one row
            racing = await asyncio.gather(
                a_biz.send_single(b.id, a.id, 1, b"x", token=TOKEN + 1),
                b_biz.send_single(b.id, a.id, 1, b"x", token=TOKEN + 1, resend=True),
            )
            assert racing[0].msg_id == racing[1].msg_id and [r.duplicate for r in racing].count(True) == 1
            # a client msg id (dedup key) sent through both writers at once: stored once
            keyed = await asyncio.gather(
                *[s.send_single(a.id, b.id, 1, b"k", dedup_key=b"1:2:77") for s in (a_biz, b_biz) * 3]
            )
            assert len({r.msg_id for r in keyed}) == 1

    asyncio.run(body())
    rows = query(store_on(dsn, tmp_path, clock), "SELECT content, token FROM messages ORDER BY msg_id")
    assert [(bytes(c), t) for c, t in rows] == [(b"hello", TOKEN), (b"x", TOKEN + 1), (b"k", 0)]


def test_a_token_seen_only_outside_the_window_is_a_new_message(
    pg_databases: PgDatabases, tmp_path: Path, clock: Clock
) -> None:
    dsn = pg_databases.create()

    async def body() -> None:
        async with store_on(dsn, tmp_path, clock, dedup_window=600) as s:
            a, b = [await s.create_user(NewUser(n)) for n in ("a", "b")]
            old = await s.send_single(a.id, b.id, 1, b"old", token=TOKEN)
            assert (await s.send_single(a.id, b.id, 1, b"old", token=TOKEN)).duplicate  # within: the same
            clock.now += 601
            again = await s.send_single(a.id, b.id, 1, b"new", token=TOKEN)
            resent = await s.send_single(a.id, b.id, 1, b"newer", token=TOKEN, resend=True)
            assert not again.duplicate and not resent.duplicate
            got = await s.get_history(b.id, S, a.id, 0, 10)
            assert [m.content for m in got] == [b"newer", b"new", b"old"] and got[-1].msg_id == old.msg_id

    asyncio.run(body())


def test_an_unknown_user_fails_alone_in_a_bulk_batch(
    pg_databases: PgDatabases, tmp_path: Path, clock: Clock
) -> None:
    dsn = pg_databases.create()

    async def body() -> None:
        async with store_on(dsn, tmp_path, clock) as s:
            a, b = [await s.create_user(NewUser(n)) for n in ("a", "b")]
            results = await asyncio.gather(
                s.send_single(a.id, b.id, 1, b"one"),
                s.send_single(a.id, 999_999, 1, b"nobody"),
                s.send_single(b.id, a.id, 1, b"two"),
                return_exceptions=True,
            )
            assert isinstance(results[1], NotFound)
            assert [r.msg_id for r in (results[0], results[2])] == [1, 2]  # type: ignore[union-attr]

    asyncio.run(body())


@pytest.fixture
def own_server() -> Iterator[LocalServer]:
    """A PostgreSQL server of this test's own (it is stopped and started mid-test), with fsync on."""
    server = started(LocalServer(fsync=True, max_connections=20))
    yield server
    server.stop()


def test_database_outage_refuses_writes_loses_nothing_acked_and_recovers(
    own_server: LocalServer, tmp_path: Path, clock: Clock
) -> None:
    async def body() -> None:
        store = PostgresStorage(
            own_server.dsn(),
            tmp_path,
            clock=clock,
            encrypt_at_rest=True,
            connect_timeout=2,
            command_timeout=5,
        )
        async with store as s:
            a, b = [await s.create_user(NewUser(n)) for n in ("a", "b")]
            acked = [(await s.send_single(a.id, b.id, 1, b"before %d" % i)).msg_id for i in range(5)]
            own_server.halt("immediate")  # a crash: no shutdown checkpoint
            for attempt in range(3):
                with pytest.raises(StorageUnavailable, match="database unavailable"):
                    await asyncio.wait_for(s.send_single(a.id, b.id, 1, b"during %d" % attempt), 10)
            with pytest.raises(StorageUnavailable):
                await asyncio.wait_for(s.get_history(a.id, S, b.id, 0, 10), 10)
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            s.send_single_nowait(a.id, b.id, 1, b"during cb", lambda r, e: done.set_result((r, e)))
            result, error = await asyncio.wait_for(done, 10)
            assert result is None and isinstance(error, StorageUnavailable)
            await asyncio.to_thread(own_server.restart_stopped)
            after = await s.send_single(a.id, b.id, 1, b"after")  # the writer reconnects by itself
            acked.append(after.msg_id)
            history = await s.get_history(b.id, S, a.id, 0, 50)
            assert sorted(m.msg_id for m in history) == sorted(acked)
            assert [m.content for m in history] == [b"after"] + [b"before %d" % i for i in range(4, -1, -1)]

    asyncio.run(body())


def test_opening_while_the_database_is_down_is_a_clear_error(tmp_path: Path, clock: Clock) -> None:
    missing = f"postgresql://postgres@/ttgen?host={tmp_path}&port=1"  # no server has this socket

    async def body() -> None:
        with pytest.raises(StorageUnavailable, match="database unavailable"):
            await PostgresStorage(missing, tmp_path, clock=clock, connect_timeout=2).open()

    asyncio.run(body())


def test_users_made_by_one_writer_are_seen_by_the_other(
    pg_databases: PgDatabases, tmp_path: Path, clock: Clock, mk_users: MkUsers
) -> None:
    dsn = pg_databases.create()

    async def body() -> None:
        async with store_on(dsn, tmp_path, clock) as one, store_on(dsn, tmp_path, clock) as two:
            a, b = await mk_users(one, "a", "b")
            assert [u.id for u in await two.get_users([a.id, b.id])] == [a.id, b.id]
            await two.send_single(a.id, b.id, 1, b"x")
            assert (await one.unread_summary(b.id)).total == 1

    asyncio.run(body())


def test_the_writer_opens_its_next_transaction_ahead_and_survives_its_loss(
    pg_databases: PgDatabases, tmp_path: Path, clock: Clock
) -> None:
    """After a commit the write connections sit in an open transaction (one round trip fewer per batch); one
    whose backend was killed while it waited costs nothing: the next batch runs again on a new connection."""
    import asyncpg

    dsn = pg_databases.create()

    async def body() -> None:
        async with store_on(dsn, tmp_path, clock, commit_pipeline=1) as s:
            a, b = [await s.create_user(NewUser(n)) for n in ("a", "b")]
            assert (await s.send_single(a.id, b.id, 1, b"one")).msg_id == 1
            writer = s._writer
            assert writer is not None
            (slot,) = writer._slots
            for _ in range(100):  # the BEGIN goes out right after the COMMIT that answered us
                if slot.begun:
                    break
                await asyncio.sleep(0.01)
            assert slot.begun and slot.conn is not None and slot.conn.is_in_transaction()
            admin = await asyncpg.connect(dsn)
            try:
                idle = await admin.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND state = 'idle in transaction'"
                )
                assert idle, "no write connection waits in an open transaction"
                for row in idle:  # its server process dies while the writer waits
                    await admin.execute("SELECT pg_terminate_backend($1)", row[0])
            finally:
                await admin.close()
            assert (await s.send_single(b.id, a.id, 1, b"two")).msg_id == 2  # no error reaches the caller
            history = await s.get_history(a.id, S, b.id, 0, 10)
            assert sorted(m.content for m in history) == [b"one", b"two"]

    asyncio.run(body())
