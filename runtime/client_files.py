"""Runtime client layer: sending and receiving files through the file service, as a shipped client does.

Speaks the bundled protocol's file commands by name through the registry. A file is always sent the offline
way (TeamTalk's FILE_TYPE_OFFLINE), which works whether or not the receiver is online: `CID_FILE_REQUEST` on
the msg connection gives a task id and the file service's addresses; a second connection logs in to the file
service as the uploader and answers the service's pulls (`CID_FILE_PULL_DATA_REQ`) from the bytes until the
service reports the transfer done; `CID_FILE_ADD_OFFLINE_REQ` then records it for the receiver, who is told
with a `CID_FILE_NOTIFY` (offline_ready) if online. The receiver lists its waiting files
(`CID_FILE_HAS_OFFLINE_REQ`), downloads one in chunks as `CLIENT_OFFLINE_DOWNLOAD`, and deletes the record
(`CID_FILE_DEL_OFFLINE_REQ`). File connections negotiate the secure session like the msg connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from runtime.client import ClientCore
from runtime.errors import CallTimeout, ConnectionClosed

CHUNK = 64 * 1024
MAX_FILE = 0xFFFF_FFFF  # IMFileReq.file_size is a uint32


class FileTransferError(RuntimeError):
    """A file request, upload or download was refused or did not finish."""


@dataclass(frozen=True)
class OfflineFile:
    """A file waiting on the file service for this user."""

    task_id: str
    from_user_id: int
    name: str
    size: int


class FileTransfers:
    """File operations for one logged-in msg connection (`core`) of `user_id`."""

    def __init__(self, core: ClientCore, *, timeout: float = 60.0) -> None:
        self.core = core
        self.registry = core.registry
        self.timeout = timeout
        role = self._enum("CID_FILE_LOGIN_REQ", "file_role")
        mode = self._enum("CID_FILE_REQUEST", "trans_mode")
        state = self._enum("CID_FILE_STATE", "state")
        self.upload, self.download = role["CLIENT_OFFLINE_UPLOAD"], role["CLIENT_OFFLINE_DOWNLOAD"]
        self.offline = mode["FILE_TYPE_OFFLINE"]
        self.done, self.cancelled = state["CLIENT_FILE_DONE"], state["CLIENT_FILE_CANCEL"]

    def _enum(self, command: str, field: str) -> dict[str, int]:
        descriptor = self.registry.by_name(command).message_class.DESCRIPTOR
        enum_type = descriptor.fields_by_name[field].enum_type
        assert enum_type is not None
        return {name: value.number for name, value in enum_type.values_by_name.items()}

    def _new(self, command: str, **fields: Any) -> Any:
        return self.registry.by_name(command).message_class(**fields)

    async def _file_core(self, addresses: Any) -> ClientCore:
        """A connection to the first reachable file service address."""
        last: Exception | None = None
        for addr in addresses:
            core = ClientCore(
                self.registry,
                host=addr.ip,
                port=addr.port,
                reconnect=False,
                encryption=self.core.encryption,
                default_timeout=self.timeout,
            )
            try:
                await core.connect()
                return core
            except OSError as exc:
                last = exc
        raise FileTransferError(f"no file service reachable: {last or 'no address given'}")

    async def _login(self, core: ClientCore, user_id: int, task_id: str, role: int) -> None:
        rsp: Any = await core.call(
            "CID_FILE_LOGIN_REQ",
            self._new("CID_FILE_LOGIN_REQ", user_id=user_id, task_id=task_id, file_role=role),
        )
        if rsp.result_code != 0:
            raise FileTransferError(f"file service refused the login (code {rsp.result_code})")

    # -- sending ---------------------------------------------------------------------------------------------
    async def send(self, user_id: int, to_user_id: int, name: str, data: bytes) -> str:
        """Upload `data` as an offline file for `to_user_id`; returns the task id once it is recorded."""
        if not name or len(name) > 1024:
            raise FileTransferError("a file name must have 1 to 1024 characters")
        if len(data) > MAX_FILE:
            raise FileTransferError(f"a file may have at most {MAX_FILE} bytes")
        rsp: Any = await self.core.call(
            "CID_FILE_REQUEST",
            self._new(
                "CID_FILE_REQUEST",
                from_user_id=user_id,
                to_user_id=to_user_id,
                file_name=name,
                file_size=len(data),
                trans_mode=self.offline,
            ),
        )
        if rsp.result_code != 0:
            raise FileTransferError(f"file request refused (code {rsp.result_code})")
        core = await self._file_core(rsp.ip_addr_list)
        try:
            finished = asyncio.get_running_loop().create_future()
            serve = asyncio.get_running_loop().create_task(self._serve_pulls(core, user_id, data, finished))
            try:
                await self._login(core, user_id, rsp.task_id, self.upload)
                state = await asyncio.wait_for(asyncio.shield(finished), self.timeout)
            except TimeoutError:
                raise FileTransferError(
                    f"upload of {name} did not finish within {self.timeout:g} s"
                ) from None
            finally:
                serve.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await serve
            if state != self.done:
                raise FileTransferError(f"upload of {name} ended in state {state}")
        finally:
            await core.close()
        await self.core.send(
            "CID_FILE_ADD_OFFLINE_REQ",
            self._new(
                "CID_FILE_ADD_OFFLINE_REQ",
                from_user_id=user_id,
                to_user_id=to_user_id,
                task_id=rsp.task_id,
                file_name=name,
                file_size=len(data),
            ),
        )
        return str(rsp.task_id)

    async def _serve_pulls(
        self, core: ClientCore, user_id: int, data: bytes, finished: asyncio.Future[int]
    ) -> None:
        """Answer the file service's pulls from `data` until it reports a final state."""
        async for info, pushed in core.pushes():
            msg: Any = pushed
            if info.name == "CID_FILE_PULL_DATA_REQ":
                size = min(int(msg.data_size), CHUNK * 16)
                reply = self._new(
                    "CID_FILE_PULL_DATA_RSP",
                    result_code=0,
                    task_id=msg.task_id,
                    user_id=user_id,
                    offset=msg.offset,
                    file_data=data[msg.offset : msg.offset + size],
                )
                with contextlib.suppress(ConnectionClosed):
                    await core.send("CID_FILE_PULL_DATA_RSP", reply)
            elif info.name == "CID_FILE_STATE" and msg.state in (self.done, self.cancelled):
                if not finished.done():
                    finished.set_result(int(msg.state))
                return
        if not finished.done():
            finished.set_exception(FileTransferError("the file service closed the upload connection"))

    # -- receiving -------------------------------------------------------------------------------------------
    async def waiting(self) -> tuple[list[OfflineFile], Any]:
        """Offline files waiting for this user, and the file service addresses to fetch them from."""
        rsp: Any = await self.core.call(
            "CID_FILE_HAS_OFFLINE_REQ", self._new("CID_FILE_HAS_OFFLINE_REQ", user_id=0)
        )
        files = [
            OfflineFile(f.task_id, int(f.from_user_id), f.file_name, int(f.file_size))
            for f in rsp.offline_file_list
        ]
        return files, list(rsp.ip_addr_list)

    async def fetch(self, user_id: int, item: OfflineFile, addresses: Any, *, delete: bool = True) -> bytes:
        """Download one offline file (in order, chunk by chunk); `delete` drops its record afterwards."""
        core = await self._file_core(addresses)
        out = bytearray()
        try:
            await self._login(core, user_id, item.task_id, self.download)
            while len(out) < item.size:
                try:
                    rsp: Any = await core.call(
                        "CID_FILE_PULL_DATA_REQ",
                        self._new(
                            "CID_FILE_PULL_DATA_REQ",
                            task_id=item.task_id,
                            user_id=user_id,
                            trans_mode=self.offline,
                            offset=len(out),
                            data_size=min(CHUNK, item.size - len(out)),
                        ),
                    )
                except CallTimeout:
                    raise FileTransferError(f"download of {item.name} stalled at {len(out)} bytes") from None
                if rsp.result_code != 0 or not rsp.file_data:
                    raise FileTransferError(
                        f"download of {item.name} refused at {len(out)} bytes (code {rsp.result_code})"
                    )
                out += rsp.file_data
        finally:
            await core.close()
        if len(out) != item.size:
            raise FileTransferError(f"download of {item.name} gave {len(out)} bytes, not {item.size}")
        if delete:
            await self.core.send(
                "CID_FILE_DEL_OFFLINE_REQ",
                self._new(
                    "CID_FILE_DEL_OFFLINE_REQ",
                    from_user_id=item.from_user_id,
                    to_user_id=user_id,
                    task_id=item.task_id,
                ),
            )
        return bytes(out)
