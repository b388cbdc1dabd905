"""Runtime services layer (file): the file service's lifecycle, its internal listener and offline records.

Two listeners: `client` (TeamTalk frames from file clients: login, pulls, state; see handlers.py) and
`internal` (msg servers over links: task creation 0x0731, client addresses 0x0733, and the offline-file
commands 0x0509/0x050b/0x050c forwarded with the authenticated user in a relay envelope). Offline records live
in the cluster's storage (`add_offline_file`, the IMTransmitFile table TeamTalk lacked), opened as a library.

Config keys (`services.file`): `client_port`, `internal_port` (0 = any), `max_file_bytes` (default 512 MiB;
larger requests are refused with FILE_SERVER_ERRNO_CREATE_TASK_ERROR), `task_timeout` (s, default 60),
`pull_timeout` (s a sender may take per chunk, default 30), `client_addresses` (`[{ip, port}]` handed to
clients; default the bound client address).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from runtime.dispatch import Dispatcher
from runtime.monitor.metrics import Metrics
from runtime.services.base import (
    Endpoint,
    Service,
    ServiceContext,
    cancel_task,
    config_port,
    generated_handlers,
    hosted_mapping,
    publish_endpoints,
    withdraw_endpoints,
)
from runtime.services.biz import open_storage
from runtime.services.file import tasks as t
from runtime.services.file.handlers import FileHandlers, close_quietly
from runtime.services.file.offline_store import OfflineFileError, delete_offline, read_header
from runtime.services.links import Proto
from runtime.services.protocol import enums_of
from runtime.storage import errors as se
from runtime.storage.base import Storage
from runtime.storage.models import OfflineFile
from runtime.transport import Server, serve, serve_links

MAX_FILE_BYTES = 512 * 1024 * 1024
MAX_NAME_BYTES = 255


class FileService(Service):
    """TeamTalk's file_server: task creation, online relay, offline store."""

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        cfg = ctx.config
        self.metrics = Metrics(labels={"service": "file", "instance": str(ctx.instance)})
        self.proto = Proto(ctx.registry)
        self.e = enums_of(ctx.registry)
        self.max_file = int(cfg.get("max_file_bytes", MAX_FILE_BYTES))
        self.pull_timeout = float(cfg.get("pull_timeout", 30.0))
        self.tasks = t.TaskTable(float(cfg.get("task_timeout", 60.0)))
        self.storage: Storage | None = None
        cls = generated_handlers(ctx, FileHandlers, "FileServiceBase")
        self.handlers = cls(self)
        if cls is FileHandlers:
            self.handlers.__mapping__ = hosted_mapping(self.handlers, ctx, "file")  # type: ignore[attr-defined]
        # One dispatcher for both listeners: file clients, and msg servers on the internal one.
        self.dispatcher = Dispatcher(ctx.registry, self.handlers)
        self._client: Server | None = None
        self._internal: Server | None = None
        self._endpoints: list[Endpoint] = []
        self._ticker: asyncio.Task[None] | None = None
        self.m_tasks = self.metrics.counter("file_tasks_total", "transfer tasks created")
        self.m_refused = self.metrics.counter("file_refused_total", "task requests and logins refused")
        self.m_bytes = self.metrics.counter("file_bytes_total", "file bytes relayed, stored or served")
        self.m_uploads = self.metrics.counter("file_offline_uploads_total", "offline uploads completed")
        self.m_expired = self.metrics.counter("file_tasks_expired_total", "tasks ended by the idle timeout")
        self.m_offline_refused = self.metrics.counter(
            "file_offline_refused_total", "offline-file record changes refused"
        )
        self.g_tasks = self.metrics.gauge("file_tasks", "live tasks")

    # lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open storage, bind both listeners, publish them."""
        self.storage = await open_storage(self.ctx)
        host, cfg = self.ctx.host, self.ctx.config
        self._client = await serve(
            host, config_port(cfg, "client_port"), self.dispatcher.handler_factory, registry=self.ctx.registry
        )
        self._internal = await serve_links(
            self.ctx.internal_host,
            config_port(cfg, "internal_port"),
            self.dispatcher.handler_factory,
            registry=self.ctx.registry,
            auth=self.ctx.link_auth,
            name="file<-msg",
        )
        self._endpoints = publish_endpoints(
            self.ctx, {"client": self._client.port, "internal": self._internal.port}
        )
        self._ticker = asyncio.get_running_loop().create_task(self._tick_loop(), name="file-tick")

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Withdraw, end every task, close connections, links and storage."""
        withdraw_endpoints(self.ctx, self._endpoints)
        await cancel_task(self._ticker)
        for task in list(self.tasks.tasks.values()):
            if task.pump is not None:
                task.pump.cancel()
            self.tasks.remove(task.task_id)
        if self._client is not None:
            await self._client.shutdown(min(drain_timeout, 1.0))
        await self.dispatcher.drain(min(drain_timeout, 1.0))
        if self._internal is not None:
            await self._internal.shutdown(1.0)
        if self.storage is not None:
            await self.storage.close()

    def endpoints(self) -> list[Endpoint]:
        """Client and internal listeners."""
        return list(self._endpoints)

    def health(self) -> dict[str, Any]:
        """Live tasks and msg links."""
        links = len(self._internal.links) if self._internal is not None else 0
        return {"status": "ok", "tasks": len(self.tasks.tasks), "links": links}

    @staticmethod
    def now() -> int:
        """Unix seconds."""
        return int(time.time())

    def push(self, link: Any, command: str, msg: Any) -> bool:
        """A server-initiated frame (seq 0) to a client connection."""
        try:
            return self.dispatcher.send(link, command, msg, 0)
        except Exception:
            self.log.exception("push %s failed", command)
            return False

    def client_addresses(self) -> list[tuple[str, int]]:
        """The addresses clients should connect to."""
        configured = self.ctx.config.get("client_addresses")
        if configured:
            return [(str(a["ip"]), int(a["port"])) for a in configured]
        return [(self.ctx.advertised(), self._client.port)] if self._client is not None else []

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for task in self.tasks.expired(now):
                self.m_expired.inc()
                if task.pump is not None:
                    task.pump.cancel()
                for link in (task.sender, task.receiver):
                    if link is not None:
                        close_quietly(link, "file task timed out")
            self.g_tasks.set(len(self.tasks.tasks))

    # internal requests (runtime.services.file.handlers routes them here) ---------------------------------
    def create_task(self, msg: Any) -> Any:
        """IMFileTransferReq -> a task (or a refusal with a FileServerError code)."""
        rsp: Any = self.proto.new(
            "CID_OTHER_FILE_TRANSFER_RSP",
            result_code=self.e.FileServerError.FILE_SERVER_ERRNO_OK,
            from_user_id=msg.from_user_id,
            to_user_id=msg.to_user_id,
            file_name=msg.file_name,
            file_size=msg.file_size,
            trans_mode=msg.trans_mode,
        )
        if msg.HasField("attach_data"):
            rsp.attach_data = msg.attach_data
        name_bytes = msg.file_name.encode("utf-8")
        problem = None
        if msg.file_size > self.max_file:
            problem = f"file of {msg.file_size} bytes exceeds the limit of {self.max_file}"
        elif not name_bytes or len(name_bytes) > MAX_NAME_BYTES or "\0" in msg.file_name:
            problem = "bad file name"
        elif (
            msg.trans_mode
            not in (self.e.TransferFileType.FILE_TYPE_ONLINE, self.e.TransferFileType.FILE_TYPE_OFFLINE)
            or msg.from_user_id == msg.to_user_id
        ):
            problem = "bad transfer request"
        if problem is not None:
            self.log.info("file task refused: %s", problem)
            self.m_refused.inc()
            rsp.result_code = self.e.FileServerError.FILE_SERVER_ERRNO_CREATE_TASK_ERROR
            return rsp
        task = self.tasks.create(
            msg.from_user_id, msg.to_user_id, msg.file_name, msg.file_size, msg.trans_mode
        )
        self.m_tasks.inc()
        rsp.task_id = task.task_id
        return rsp

    async def has_offline(self, user_id: int) -> Any:
        """The user's offline files, with the addresses to fetch them from."""
        assert self.storage is not None
        rsp: Any = self.proto.new("CID_FILE_HAS_OFFLINE_RES", user_id=user_id)
        for rec in await self.storage.list_offline_files(user_id):
            info = rsp.offline_file_list.add()
            info.from_user_id, info.task_id = rec.from_user_id, rec.task_id
            info.file_name, info.file_size = rec.file_name, rec.size
        for ip, port in self.client_addresses():
            a = rsp.ip_addr_list.add()
            a.ip, a.port = ip, port
        return rsp

    async def add_offline(self, user_id: int, msg: Any) -> Any:
        """Record a finished upload: only its uploader may, and only for the file actually stored."""
        assert self.storage is not None
        try:
            header = await asyncio.to_thread(read_header, self.ctx.data_dir, msg.task_id)
        except (OfflineFileError, OSError):
            self.m_offline_refused.inc()
            return None
        if header.from_user_id != user_id or header.to_user_id != msg.to_user_id:
            self.m_offline_refused.inc()
            return None
        record = OfflineFile(msg.task_id, user_id, header.to_user_id, header.file_name, header.size)
        try:
            await self.storage.add_offline_file(record)
        except se.Conflict:
            pass  # recorded before: adding again is harmless
        except se.StorageError as exc:
            self.log.info("offline record refused: %s", exc)
            return None
        msg.from_user_id, msg.file_name, msg.file_size = user_id, header.file_name, header.size
        return msg

    async def del_offline(self, user_id: int, msg: Any) -> Any:
        """Delete the record (its sender or receiver only) and the stored file."""
        assert self.storage is not None
        try:
            await self.storage.delete_offline_file(user_id, msg.task_id)
        except se.StorageError as exc:
            self.log.info("offline delete refused: %s", exc)
            self.m_offline_refused.inc()
            return None
        with contextlib.suppress(OfflineFileError, OSError):
            await asyncio.to_thread(delete_offline, self.ctx.data_dir, msg.task_id)
        return msg
