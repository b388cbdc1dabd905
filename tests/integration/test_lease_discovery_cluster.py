"""A cluster whose services find each other through the database (`discovery: {backend: database}`): in one
process and one process per instance, messages cross msg servers; a killed worker's endpoints lapse; at stop
the rows are gone."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from generated.teamtalk.registry import REGISTRY
from runtime.client import ClientCore
from runtime.cluster.config import parse_config
from runtime.cluster.lease_discovery import LeaseDiscovery
from runtime.cluster.processes import ProcessSupervisor
from runtime.storage.postgres import load_or_create_cluster_id
from tests.integration.conftest import (
    NAMES,
    PASSWORD,
    WINDOWS,
    Client,
    TestCluster,
    cluster_config,
    md5hex,
    run_in_cluster,
    seed_users,
)
from tests.pg_support import PgDatabases

pytestmark = pytest.mark.integration
DISCOVERY = {"backend": "database", "ttl": 2.0, "poll": 0.2}


async def rows(dsn: str) -> list[tuple[str, int, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        found = await conn.fetch(
            "SELECT service, instance, kind FROM endpoints "
            "WHERE expires > extract(epoch from clock_timestamp()) ORDER BY service, instance, kind"
        )
    finally:
        await conn.close()
    return [(r[0], r[1], r[2]) for r in found]


def test_one_process_cluster_registers_in_the_database(pg_databases: PgDatabases, tmp_path: Path) -> None:
    storage = {"backend": "postgres", "dsn": pg_databases.create()}

    async def body(c: TestCluster) -> None:
        wanted = {
            ("biz", 0, "internal"),
            ("msg", 1, "client"),
            ("router", 1, "internal"),
            ("login", 0, "internal"),
        }
        deadline = time.monotonic() + 5  # each row is written by the lease keeper right after its publish
        while not wanted <= set(await rows(storage["dsn"])):
            assert time.monotonic() < deadline, f"not registered: {wanted - set(await rows(storage['dsn']))}"
            await asyncio.sleep(0.05)
        a = await c.login("user00", 0)
        b = await c.login("user01", 1)
        ack = await a.text(b.user_id, b"found through the database")
        assert ack.msg_id > 0
        await b.wait_for("CID_MSG_DATA", lambda m: m.msg_data == b"found through the database")

    run_in_cluster(tmp_path, body, storage=storage, discovery=DISCOVERY)
    assert asyncio.run(rows(storage["dsn"])) == []  # withdrawn at stop


def test_worker_processes_find_each_other_and_a_killed_one_lapses(
    pg_databases: PgDatabases, tmp_path: Path
) -> None:
    storage = {"backend": "postgres", "dsn": pg_databases.create()}

    async def main() -> None:
        await seed_users(tmp_path, NAMES[:2], True, storage)
        raw = cluster_config(tmp_path, storage=storage, discovery=DISCOVERY)
        raw["services"]["router"] = {"instances": 1}
        raw["restart"] = "never"  # the killed router must stay dead for its lease to lapse
        config = parse_config(raw)
        sup = ProcessSupervisor(config, "generated.teamtalk", console=lambda _s: None)
        await sup.start()
        watcher = LeaseDiscovery(storage["dsn"], load_or_create_cluster_id(tmp_path), ttl=2.0, poll=0.2)
        await watcher.start()
        clients: list[Client] = []
        try:
            eps = sorted(watcher.endpoints("msg", "client"), key=lambda e: e.instance)
            assert [e.instance for e in eps] == [0, 1]
            for index, name in ((0, "user00"), (1, "user01")):
                core = ClientCore(REGISTRY, host=eps[index].host, port=eps[index].port, reconnect=False)
                await core.connect()
                req = REGISTRY.by_name("CID_LOGIN_REQ_USERLOGIN").message_class(
                    user_name=name, password=md5hex(PASSWORD), online_status=1, client_type=WINDOWS
                )
                res: Any = await core.call("CID_LOGIN_REQ_USERLOGIN", req)
                assert res.result_code == 0, res
                clients.append(Client(core, res.user_info.user_id, name))
            a, b = clients
            assert (await a.text(b.user_id, b"across processes")).msg_id > 0
            await b.wait_for("CID_MSG_DATA", lambda m: m.msg_data == b"across processes", timeout=10)
            (router,) = [w for w in sup.workers if w.hosts("router", 0)]  # sharded: with msg 0 and biz 0
            os.kill(router.process.pid, signal.SIGKILL)  # no withdraw: only the lease can tell
            start = time.monotonic()
            while watcher.endpoints("router", "internal"):
                assert time.monotonic() - start < 2.0 + 0.2 + 2.0, "the dead router's lease did not lapse"
                await asyncio.sleep(0.05)
            living = ("msg", "client") if router.hosts("biz", 0) else ("biz", "internal")
            assert watcher.endpoints(*living)  # the living keep renewing
        finally:
            for client in clients:
                await client.close()
            await watcher.close()
            await sup.stop()

    asyncio.run(main())
