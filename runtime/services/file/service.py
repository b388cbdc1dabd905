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

from runtime.auth.grants import GrantSigner, resource_of
from runtime.auth.secret_files import load_or_create_key
from runtime.dispatch import Dispatcher
from runtime.framing import Frame
from runtime.monitor.metrics import Metrics
from runtime.services.base import (
    Endpoint,
    Service,
    ServiceContext,
    cancel_task,
    config_port,
    generated_handlers,
    listener_port,
    publish_endpoints,
    withdraw_endpoints,
)
from runtime.services.biz.storage_open import open_storage
from runtime.services.file import tasks as t
from runtime.services.file.handlers import FileHandlers, close_quietly
from runtime.services.file.offline_store import (
    OfflineCipher,
    OfflineFileError,
    delete_offline,
    read_header,
)
from runtime.services.links import FLAG_RELAY, Link, Proto, serve_links, unpack_relay
from runtime.storage import errors as se
from runtime.storage.base import Storage
from runtime.storage.models import OfflineFile
from runtime.transport import ConnectionCaps, Server, serve

MAX_FILE_BYTES = 512 * 1024 * 1024
MAX_NAME_BYTES = 255


class FileService(Service):
    """TeamTalk's file_server: task creation, online relay, offline store."""

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        cfg = ctx.config
        self.metrics = Metrics(labels={"service": "file", "instance": str(ctx.instance)})
        self.proto = Proto(ctx.registry)
        self.max_file = int(cfg.get("max_file_bytes", MAX_FILE_BYTES))
        self.pull_timeout = float(cfg.get("pull_timeout", 30.0))
        self.tasks = t.TaskTable(float(cfg.get("task_timeout", 60.0)))
        # Offline files are downloaded with a grant (runtime.auth.grants) made for their receiver, never with
        # the bare task id: the id alone (in a log, or known to the sender) downloads nothing.
        self.grants = GrantSigner(
            load_or_create_key(ctx.data_dir / str(cfg.get("grant_key_file", "file_grant.key"))),
            "offline-file",
        )
        self.grant_ttl = float(cfg.get("download_grant_ttl", 24 * 3600))
        self.offline_cipher = OfflineCipher.for_data_dir(ctx.data_dir)  # offline files sealed at rest
        self.storage: Storage | None = None
        cls = generated_handlers(ctx, FileHandlers, "FileServiceBase")
        self.handlers = cls(self)
        if cls is FileHandlers:
            self.handlers.__mapping__ = {  # type: ignore[attr-defined]
                info.command_id: "on_" + info.name.lower()
                for info in ctx.registry.hosted_by("file")
                if hasattr(self.handlers, "on_" + info.name.lower())
            }
        self.dispatcher = Dispatcher(ctx.registry, self.handlers)
        self._client: Server | None = None
        self._internal: asyncio.Server | None = None
        self._links: set[Link] = set()
        self._jobs: set[asyncio.Task[None]] = set()  # offline-record requests in flight (kept referenced)
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
            host,
            config_port(cfg, "client_port"),
            self.dispatcher.handler_factory,
            registry=self.ctx.registry,
            caps=ConnectionCaps.from_config(cfg),
        )
        self._internal = await serve_links(
            self.ctx.internal_host,
            config_port(cfg, "internal_port"),
            self._on_link,
            "file",
            auth=self.ctx.link_auth,
        )
        self._endpoints = publish_endpoints(
            self.ctx, {"client": self._client.port, "internal": listener_port(self._internal)}
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
        if self._internal is not None:
            self._internal.close()
        for link in list(self._links):
            link.close()
        await self.dispatcher.drain(min(drain_timeout, 1.0))
        if self._jobs:
            await asyncio.wait(list(self._jobs), timeout=min(drain_timeout, 1.0))
        if self.storage is not None:
            await self.storage.close()

    def endpoints(self) -> list[Endpoint]:
        """Client and internal listeners."""
        return list(self._endpoints)

    def health(self) -> dict[str, Any]:
        """Live tasks and msg links."""
        return {"status": "ok", "tasks": len(self.tasks.tasks), "links": len(self._links)}

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
        return [(self.ctx.host, self._client.port)] if self._client is not None else []

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
            for link in list(self._links):
                link.tick(now)

    # internal link ---------------------------------------------------------------------------------------
    def _on_link(self, link: Link) -> None:
        link.name = "file<-msg"
        link.on_frame = self._on_frame
        link.on_lost.append(self._links.discard)
        self._links.add(link)

    def _on_frame(self, link: Link, frame: Frame) -> None:
        user_id = 0
        body: bytes | memoryview = frame.body
        try:
            if frame.flag & FLAG_RELAY:
                targets, body = unpack_relay(body)
                user_id = targets[0] if targets else 0
            name = self.proto.registry.by_id(frame.command_id).name
            msg: Any = self.proto.parse(frame.command_id, body)
        except Exception as exc:  # a bad frame is refused, the link survives
            self.log.warning("file: bad 0x%04x from %s: %s", frame.command_id, link.name, exc)
            link.reply(frame, frame.command_id)
            return
        if name == "CID_OTHER_FILE_TRANSFER_REQ":
            rsp = self.create_task(msg)
            link.reply(frame, self.proto.cid("CID_OTHER_FILE_TRANSFER_RSP"), rsp.SerializeToString())
        elif name == "CID_OTHER_FILE_SERVER_IP_REQ":
            ips: Any = self.proto.new("CID_OTHER_FILE_SERVER_IP_RSP")
            for ip, port in self.client_addresses():
                a = ips.ip_addr_list.add()
                a.ip, a.port = ip, port
            link.reply(frame, self.proto.cid("CID_OTHER_FILE_SERVER_IP_RSP"), ips.SerializeToString())
        elif name in ("CID_FILE_HAS_OFFLINE_REQ", "CID_FILE_ADD_OFFLINE_REQ", "CID_FILE_DEL_OFFLINE_REQ"):
            job = asyncio.get_running_loop().create_task(self._offline(link, frame, name, user_id, msg))
            self._jobs.add(job)
            job.add_done_callback(self._jobs.discard)
        else:
            link.reply(frame, frame.command_id)

    def create_task(self, msg: Any) -> Any:
        """IMFileTransferReq -> a task (or a refusal with a FileServerError code)."""
        rsp: Any = self.proto.new(
            "CID_OTHER_FILE_TRANSFER_RSP",
            result_code=t.OK,
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
        elif msg.trans_mode not in (t.ONLINE, t.OFFLINE) or msg.from_user_id == msg.to_user_id:
            problem = "bad transfer request"
        if problem is not None:
            self.log.info("file task refused: %s", problem)
            self.m_refused.inc()
            rsp.result_code = t.CREATE_TASK_ERROR
            return rsp
        task = self.tasks.create(
            msg.from_user_id, msg.to_user_id, msg.file_name, msg.file_size, msg.trans_mode
        )
        self.m_tasks.inc()
        rsp.task_id = task.task_id
        return rsp

    async def _offline(self, link: Link, frame: Frame, name: str, user_id: int, msg: Any) -> None:
        """Offline-file records, for the user the msg server authenticated (the relay target)."""
        reply: Any = None
        try:
            if name == "CID_FILE_HAS_OFFLINE_REQ":
                reply = await self._has_offline(user_id)
            elif name == "CID_FILE_ADD_OFFLINE_REQ":
                reply = await self._add_offline(user_id, msg)
            else:
                reply = await self._del_offline(user_id, msg)
        except Exception:
            self.log.exception("file: %s failed", name)
        cid = (
            self.proto.cid("CID_FILE_HAS_OFFLINE_RES")
            if name == "CID_FILE_HAS_OFFLINE_REQ"
            else frame.command_id
        )
        link.reply(frame, cid, b"" if reply is None else reply.SerializeToString())

    async def _has_offline(self, user_id: int) -> Any:
        assert self.storage is not None
        rsp: Any = self.proto.new("CID_FILE_HAS_OFFLINE_RES", user_id=user_id)
        for rec in await self.storage.list_offline_files(user_id):
            info = rsp.offline_file_list.add()
            info.from_user_id = rec.from_user_id
            info.task_id = self.grants.sign(rec.task_id, user_id, self.grant_ttl)
            info.file_name, info.file_size = rec.file_name, rec.size
        for ip, port in self.client_addresses():
            a = rsp.ip_addr_list.add()
            a.ip, a.port = ip, port
        return rsp

    async def _add_offline(self, user_id: int, msg: Any) -> Any:
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
        msg.task_id = self.grants.sign(msg.task_id, header.to_user_id, self.grant_ttl)  # for the receiver
        return msg

    async def _del_offline(self, user_id: int, msg: Any) -> Any:
        """Delete the record (its sender or receiver only) and the stored file."""
        assert self.storage is not None
        msg.task_id = resource_of(msg.task_id)  # a grant or the bare id: storage checks the user is a party
        try:
            await self.storage.delete_offline_file(user_id, msg.task_id)
        except se.StorageError as exc:
            self.log.info("offline delete refused: %s", exc)
            self.m_offline_refused.inc()
            return None
        with contextlib.suppress(OfflineFileError, OSError):
            await asyncio.to_thread(delete_offline, self.ctx.data_dir, msg.task_id)
        return msg
