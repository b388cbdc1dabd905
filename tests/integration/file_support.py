"""Integration helpers for file transfer tests: a cluster with the file service, and file-service clients."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from generated.teamtalk import servers as tt_servers
from generated.teamtalk.registry import REGISTRY
from runtime.client import ClientCore
from runtime.cluster.config import parse_config
from runtime.cluster.runner import ClusterRunner
from tests.integration.conftest import NAMES, TestCluster, cluster_config, seed_users

SENDER, RECVER, UPLOAD, DOWNLOAD = 1, 2, 3, 4
ONLINE, OFFLINE = 1, 2


class FileCluster(TestCluster):
    """The messaging cluster plus file (and optionally storage and gateway) services."""

    __test__ = False

    def __init__(self, data_dir: Path, users: dict[str, int], extra: dict[str, Any]) -> None:
        super().__init__(data_dir, users)
        self.extra = extra

    async def start(self) -> None:
        raw = cluster_config(self.data_dir, storage=self.extra.get("storage"))
        for name, section in self.extra.get("services", {}).items():
            raw["services"][name] = section
        for key in ("plugins",):
            if key in self.extra:
                raw[key] = self.extra[key]
        self.runner = ClusterRunner(parse_config(raw), REGISTRY, tt_servers, console=lambda _s: None)
        await self.runner.start()
        await self.wait_ready()


async def run_file_cluster(data_dir: Path, body: Any, **extra: Any) -> None:
    """Seed users, start a cluster with the given extra services, run `body(cluster)`, stop."""
    users = await seed_users(data_dir, NAMES, True, extra.get("storage"))
    extra.setdefault("services", {}).setdefault("file", {"instances": 1})
    c = FileCluster(data_dir, users, extra)
    await c.start()
    try:
        await body(c)
    finally:
        await c.stop()


def msg(command: str, **fields: Any) -> Any:
    """A message of the command's type."""
    return REGISTRY.by_name(command).message_class(**fields)


class FileClient:
    """A connection to the file service, logged in for one task; serves pulls from `data` if it sends."""

    def __init__(self, core: ClientCore, user_id: int, task_id: str, data: bytes = b"") -> None:
        self.core, self.user_id, self.task_id, self.data = core, user_id, task_id, data
        self.states: list[int] = []
        self.state_changed = asyncio.Event()
        self.pulls_served = 0
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def login(
        cls, addr: Any, user_id: int, task_id: str, role: int, data: bytes = b""
    ) -> tuple[FileClient, Any]:
        """Connect to the address from IMFileRsp/IMFileNotify and log in; returns (client, login reply)."""
        core = ClientCore(REGISTRY, host=addr.ip, port=addr.port, reconnect=False)
        await core.connect()
        client = cls(core, user_id, task_id, data)
        rsp = await core.call(
            "CID_FILE_LOGIN_REQ", msg("CID_FILE_LOGIN_REQ", user_id=user_id, task_id=task_id, file_role=role)
        )
        return client, rsp

    async def _read(self) -> None:
        async for info, m in self.core.pushes():
            if info.name == "CID_FILE_PULL_DATA_REQ":
                chunk = self.data[m.offset : m.offset + m.data_size]
                rsp = msg(
                    "CID_FILE_PULL_DATA_RSP",
                    result_code=0,
                    task_id=m.task_id,
                    user_id=self.user_id,
                    offset=m.offset,
                    file_data=chunk,
                )
                self.pulls_served += 1
                with contextlib.suppress(Exception):
                    await self.core.send("CID_FILE_PULL_DATA_RSP", rsp)
            elif info.name == "CID_FILE_STATE":
                self.states.append(m.state)
                self.state_changed.set()

    async def wait_state(self, state: int, timeout: float = 10.0) -> None:
        """Until a CID_FILE_STATE with that state arrived."""

        async def until() -> None:
            while state not in self.states:
                self.state_changed.clear()
                await self.state_changed.wait()

        await asyncio.wait_for(until(), timeout)

    async def pull_all(self, size: int, chunk: int = 64 * 1024, *, mode: int = ONLINE) -> bytes:
        """Pull the whole file in chunks, in order."""
        out = bytearray()
        while len(out) < size:
            rsp = await self.core.call(
                "CID_FILE_PULL_DATA_REQ",
                msg(
                    "CID_FILE_PULL_DATA_REQ",
                    task_id=self.task_id,
                    user_id=self.user_id,
                    trans_mode=mode,
                    offset=len(out),
                    data_size=chunk,
                ),
            )
            assert rsp.result_code == 0, rsp
            assert rsp.file_data, "empty chunk before the end"
            out += rsp.file_data
        return bytes(out)

    async def close(self) -> None:
        """Disconnect."""
        await self.core.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
