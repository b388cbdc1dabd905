"""Runtime services layer (file): client commands of the file service: login, chunk pulls, state, uploads.

A login must name a live task (or, to download, a stored offline file) *and* be made by the user that task
was issued for, in a role that fits the task: the task id is a random UUID handed only to the two parties,
and each role's slot takes one connection. Online transfers are a pure relay (the receiver pulls, the sender
answers); offline uploads are pulled by the service in 32 KiB segments and published atomically.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from runtime.dispatch import Context
from runtime.link_dispatch import LinkContext
from runtime.services.file.offline_store import (
    OfflineFileError,
    OfflineHeader,
    Upload,
    read_chunk,
    read_header,
    valid_task_id,
)
from runtime.services.file.tasks import Session, Task
from runtime.services.protocol import enums_of
from runtime.services.refusals import RejectingHandlers

if TYPE_CHECKING:
    from runtime.services.file.service import FileService

SEGMENT = 32 * 1024  # offline upload segment, as TeamTalk's file_server
MAX_CHUNK = 128 * 1024  # largest chunk a client may ask for (the reply must fit the input stage's limit)


class FileHandlers(RejectingHandlers):
    """Bound to the generated FileServiceBase by the service (one instance, shared by every connection)."""

    def __init__(self, svc: FileService) -> None:
        self.svc = svc
        self.proto = svc.proto
        self.e = enums_of(svc.proto.registry)

    # connection hooks ------------------------------------------------------------------------------------
    def on_disconnect(self, link: Any, reason: str) -> None:
        """Free the role slot; a vanished uploader ends its upload, a vanished online peer its waiters."""
        sess = (link.data or {}).get("file")
        if not isinstance(sess, Session):
            return
        task = self.svc.tasks.get(sess.task_id)
        if task is None:
            return
        if task.sender is link:
            task.sender = None
            task.fail_pending()
            if task.pump is not None and not task.pump.done():
                task.pump.cancel()
        if task.receiver is link:
            task.receiver = None

    # login -----------------------------------------------------------------------------------------------
    async def on_cid_file_login_req(self, ctx: Context, msg: Any) -> Any:
        """Log a connection in to a task in a role."""
        rsp: Any = self.proto.new(
            "CID_FILE_LOGIN_RES", result_code=self.e.FileServerError.FILE_SERVER_ERRNO_OK, task_id=msg.task_id
        )
        if "file" in ctx.link.extras():
            rsp.result_code = (
                self.e.FileServerError.FILE_SERVER_ERRNO_LOGIN_INVALID_TOKEN
            )  # one task per connection
            return rsp
        if msg.file_role == self.e.ClientFileRole.CLIENT_OFFLINE_DOWNLOAD:
            code = await self._login_download(msg)
        else:
            code = self._login_task(ctx, msg)
        rsp.result_code = code
        if code != self.e.FileServerError.FILE_SERVER_ERRNO_OK:
            self.svc.m_refused.inc()
            ctx.close(f"file login refused ({code})")
            return rsp
        ctx.link.extras()["file"] = Session(msg.file_role, msg.task_id, msg.user_id)
        ctx.authenticate(msg.user_id, self.e.ClientType.CLIENT_TYPE_WINDOWS)  # a file connection: PC class
        return rsp

    async def _login_download(self, msg: Any) -> int:
        if not valid_task_id(msg.task_id):
            return self.e.FileServerError.FILE_SERVER_ERRNO_LOGIN_INVALID_TOKEN
        try:
            header = await asyncio.to_thread(read_header, self.svc.ctx.data_dir, msg.task_id)
        except (OfflineFileError, OSError):
            return self.e.FileServerError.FILE_SERVER_ERRNO_LOGIN_INVALID_TOKEN
        return (
            self.e.FileServerError.FILE_SERVER_ERRNO_OK
            if header.to_user_id == msg.user_id
            else self.e.FileServerError.FILE_SERVER_ERRNO_INVALID_USER_FOR_TASK
        )

    def _login_task(self, ctx: Context, msg: Any) -> int:
        task = self.svc.tasks.get(msg.task_id)
        if task is None:
            return self.e.FileServerError.FILE_SERVER_ERRNO_LOGIN_INVALID_TOKEN
        role = msg.file_role
        if (
            role == self.e.ClientFileRole.CLIENT_REALTIME_SENDER
            and task.mode == self.e.TransferFileType.FILE_TYPE_ONLINE
        ):
            want, slot = task.from_user_id, "sender"
        elif (
            role == self.e.ClientFileRole.CLIENT_REALTIME_RECVER
            and task.mode == self.e.TransferFileType.FILE_TYPE_ONLINE
        ):
            want, slot = task.to_user_id, "receiver"
        elif (
            role == self.e.ClientFileRole.CLIENT_OFFLINE_UPLOAD
            and task.mode == self.e.TransferFileType.FILE_TYPE_OFFLINE
        ):
            want, slot = task.from_user_id, "sender"
        else:
            return self.e.FileServerError.FILE_SERVER_ERRNO_INVALID_USER_FOR_TASK
        if msg.user_id != want or getattr(task, slot) is not None:
            return self.e.FileServerError.FILE_SERVER_ERRNO_INVALID_USER_FOR_TASK
        setattr(task, slot, ctx.link)
        task.touch()
        if role == self.e.ClientFileRole.CLIENT_OFFLINE_UPLOAD:
            task.pump = asyncio.get_running_loop().create_task(
                self._pump(task), name=f"upload-{task.task_id}"
            )
        elif task.sender is not None and task.receiver is not None:
            for link, peer in ((task.sender, task.to_user_id), (task.receiver, task.from_user_id)):
                self._state(link, self.e.ClientFileState.CLIENT_FILE_PEER_READY, task.task_id, peer)
        return self.e.FileServerError.FILE_SERVER_ERRNO_OK

    # chunks ----------------------------------------------------------------------------------------------
    async def on_cid_file_pull_data_req(self, ctx: Context, msg: Any) -> Any:
        """A chunk: from the stored file (download) or relayed from the online sender."""
        sess = ctx.link.extras().get("file")
        rsp: Any = self.proto.new(
            "CID_FILE_PULL_DATA_RSP",
            result_code=self.e.FileServerError.FILE_SERVER_ERRNO_OK,
            task_id=msg.task_id,
            user_id=ctx.user_id,
            offset=msg.offset,
            file_data=b"",
        )
        if not isinstance(sess, Session) or sess.task_id != msg.task_id:
            rsp.result_code = self.e.FileServerError.FILE_SERVER_ERRNO_PULL_DATA_WITH_INVALID_TASK_ID
            return rsp
        size = min(msg.data_size, MAX_CHUNK)
        if sess.role == self.e.ClientFileRole.CLIENT_OFFLINE_DOWNLOAD:
            return await self._serve_stored(rsp, msg.task_id, msg.offset, size)
        task = self.svc.tasks.get(msg.task_id)
        if (
            sess.role != self.e.ClientFileRole.CLIENT_REALTIME_RECVER
            or task is None
            or task.receiver is not ctx.link
        ):
            rsp.result_code = self.e.FileServerError.FILE_SERVER_ERRNO_PULL_DATA_ILLIEAGE_USER
            return rsp
        if msg.offset >= task.size:
            rsp.result_code = self.e.FileServerError.FILE_SERVER_ERRNO_PULL_DATA_FINISHED
            return rsp
        chunk = await self._pull(
            task, msg.offset, min(size, task.size - msg.offset), self.e.TransferFileType.FILE_TYPE_ONLINE
        )
        if chunk is None:
            rsp.result_code = self.e.FileServerError.FILE_SERVER_ERRNO_PULL_DATA_ILLIEAGE_USER
            return rsp
        rsp.result_code, rsp.file_data = chunk.result_code, chunk.file_data
        self.svc.m_bytes.inc(len(chunk.file_data))
        return rsp

    async def _serve_stored(self, rsp: Any, task_id: str, offset: int, size: int) -> Any:
        data_dir = self.svc.ctx.data_dir
        try:
            header = await asyncio.to_thread(read_header, data_dir, task_id)
            if offset >= header.size:
                rsp.result_code = self.e.FileServerError.FILE_SERVER_ERRNO_PULL_DATA_FINISHED
                return rsp
            rsp.file_data = await asyncio.to_thread(read_chunk, data_dir, task_id, offset, size)
        except (OfflineFileError, OSError):
            rsp.result_code = self.e.FileServerError.FILE_SERVER_ERRNO_PULL_DATA_OPEN_FILE_ERROR
            return rsp
        self.svc.m_bytes.inc(len(rsp.file_data))
        return rsp

    async def _pull(self, task: Task, offset: int, size: int, mode: int) -> Any | None:
        """Ask the task's sender for a chunk; None if it is gone or too slow."""
        if task.sender is None or offset in task.pending:
            return None
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        task.pending[offset] = fut
        req = self.proto.new(
            "CID_FILE_PULL_DATA_REQ",
            task_id=task.task_id,
            user_id=task.from_user_id,
            trans_mode=mode,
            offset=offset,
            data_size=size,
        )
        if not self.svc.push(task.sender, "CID_FILE_PULL_DATA_REQ", req):
            task.pending.pop(offset, None)
            return None
        try:
            chunk = await asyncio.wait_for(fut, self.svc.pull_timeout)
        except TimeoutError:
            chunk = None
        finally:
            task.pending.pop(offset, None)
        if chunk is None or len(chunk.file_data) > size:
            return None
        task.touch()
        return chunk

    async def on_cid_file_pull_data_rsp(self, ctx: Context, msg: Any) -> None:
        """A chunk from a sender or uploader: hand it to whoever waits for that offset."""
        sess = ctx.link.extras().get("file")
        task = self.svc.tasks.get(msg.task_id) if isinstance(sess, Session) else None
        if task is None or task.sender is not ctx.link or sess is None or sess.task_id != task.task_id:
            return None
        fut = task.pending.get(msg.offset)
        if fut is not None and not fut.done():
            fut.set_result(msg)
        return None

    async def _pump(self, task: Task) -> None:
        """Pull an offline upload from its uploader in segments and publish it."""
        header = OfflineHeader(
            task.task_id, task.from_user_id, task.to_user_id, self.svc.now(), task.size, task.file_name
        )
        try:
            upload = await asyncio.to_thread(Upload, self.svc.ctx.data_dir, header)
        except OSError as exc:
            self.svc.log.error("cannot create offline file for %s: %s", task.task_id, exc)
            self._end(task, self.e.ClientFileState.CLIENT_FILE_CANCEL)
            return
        task.upload = upload
        try:
            while not upload.complete:
                n = min(SEGMENT, task.size - upload.received)
                chunk = await self._pull(task, upload.received, n, self.e.TransferFileType.FILE_TYPE_OFFLINE)
                if chunk is None or len(chunk.file_data) != n:
                    raise OfflineFileError("uploader did not deliver the segment")
                upload.write(upload.received, chunk.file_data)
                self.svc.m_bytes.inc(n)
            await asyncio.to_thread(upload.finish)
        except (OfflineFileError, OSError, asyncio.CancelledError) as exc:
            upload.abort()
            self.svc.log.info("offline upload %s aborted: %r", task.task_id, exc)
            self._end(task, self.e.ClientFileState.CLIENT_FILE_CANCEL)
            return
        self.svc.m_uploads.inc()
        self._end(task, self.e.ClientFileState.CLIENT_FILE_DONE)

    def _end(self, task: Task, state: int) -> None:
        """Tell the uploader how its upload ended and forget the task."""
        if task.sender is not None:
            self._state(task.sender, state, task.task_id, task.from_user_id)
        self.svc.tasks.remove(task.task_id)

    # state -----------------------------------------------------------------------------------------------
    async def on_cid_file_state(self, ctx: Context, msg: Any) -> None:
        """Relay a state change to the peer; cancel, refuse and done end an online task."""
        sess = ctx.link.extras().get("file")
        if not isinstance(sess, Session) or sess.task_id != msg.task_id:
            return None
        task = self.svc.tasks.get(msg.task_id)
        if task is None:
            return None
        task.touch()
        if task.sender is ctx.link:
            peer = task.receiver
        elif task.receiver is ctx.link:
            peer = task.sender
        else:
            return None
        if peer is not None:
            self._state(peer, msg.state, task.task_id, ctx.user_id)
        if msg.state in (
            self.e.ClientFileState.CLIENT_FILE_CANCEL,
            self.e.ClientFileState.CLIENT_FILE_REFUSE,
            self.e.ClientFileState.CLIENT_FILE_DONE,
        ):
            if task.pump is not None and not task.pump.done():
                task.pump.cancel()
            elif task.mode == self.e.TransferFileType.FILE_TYPE_ONLINE:
                self.svc.tasks.remove(task.task_id)
        return None

    def _state(self, link: Any, state: int, task_id: str, user_id: int) -> None:
        note = self.proto.new("CID_FILE_STATE", state=state, task_id=task_id, user_id=user_id)
        self.svc.push(link, "CID_FILE_STATE", note)

    # other -----------------------------------------------------------------------------------------------
    async def on_cid_other_heartbeat(self, ctx: Context, msg: Any) -> None:
        """Heartbeats are answered by the connection layer."""
        return None

    # the internal listener (msg servers) ------------------------------------------------------------------
    async def on_cid_other_file_transfer_req(self, ctx: Context, msg: Any) -> Any:
        """Create a transfer task (a msg server asks; never a client: s2s commands are refused from clients
        before they reach a handler)."""
        return self.svc.create_task(msg)

    async def on_cid_other_file_server_ip_req(self, ctx: Context, msg: Any) -> Any:
        """The addresses file clients should connect to."""
        ips: Any = self.proto.new("CID_OTHER_FILE_SERVER_IP_RSP")
        for ip, port in self.svc.client_addresses():
            a = ips.ip_addr_list.add()
            a.ip, a.port = ip, port
        return ips

    async def on_cid_file_has_offline_req(self, ctx: Context, msg: Any) -> Any:
        """The offline files waiting for the user the msg server authenticated (the relay envelope's)."""
        if not _from_msg_server(ctx):
            return None
        return await self.svc.has_offline(ctx.user_id)

    async def on_cid_file_add_offline_req(self, ctx: Context, msg: Any) -> Any:
        """Record a finished upload of the authenticated user (None, answered empty: refused)."""
        if not _from_msg_server(ctx):
            return None
        return await self.svc.add_offline(ctx.user_id, msg)

    async def on_cid_file_del_offline_req(self, ctx: Context, msg: Any) -> Any:
        """Delete an offline file of the authenticated user (its sender or receiver)."""
        if not _from_msg_server(ctx):
            return None
        return await self.svc.del_offline(ctx.user_id, msg)

    async def on_cid_ext_handshake_req(self, ctx: Context, msg: Any) -> Any:
        """Secure sessions are not offered by the file service: no common suite."""
        codes = self.proto.enum("CID_EXT_HANDSHAKE_RSP", "result_code")
        return self.proto.new("CID_EXT_HANDSHAKE_RSP", result_code=codes["HANDSHAKE_NO_COMMON_SUITE"])


def _from_msg_server(ctx: Context) -> bool:
    """Offline-file records change only through a msg server, which names the user it authenticated; a file
    client asking directly is closed."""
    if isinstance(ctx, LinkContext):
        return True
    ctx.close(f"{ctx.info.name} is for msg servers")
    return False


def close_quietly(link: Any, reason: str) -> None:
    """Close a transport link, ignoring one that is already gone."""
    with contextlib.suppress(Exception):
        link.close(reason)
