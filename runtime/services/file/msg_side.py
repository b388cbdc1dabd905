"""Runtime services layer (file): the msg server's half of file transfer (IMFileReq, offline-file commands).

A component of the msg service's handlers (`MsgHandlers`), so the file protocol lives beside the file service:
IMFileReq picks the mode (ONLINE downgrades to OFFLINE when the receiver has no PC presence anywhere), asks a
random file service for a task (0x0731) and its client addresses (0x0733), answers the sender with IMFileRsp
and offers an online transfer to the receiver with IMFileNotify. The offline-file commands go to a file
service with the authenticated user in a relay envelope; a recorded upload notifies the receiver
(`offline_ready=1`). File requests are rare, so each one uses a short-lived link instead of a standing pool.
"""

from __future__ import annotations

import asyncio
import logging
import random
from functools import partial
from typing import TYPE_CHECKING, cast

from google.protobuf.message import Message

from runtime.dispatch import Context
from runtime.framing import Frame
from runtime.services.base import Discovery
from runtime.services.links import FLAG_RELAY, Link, LinkAuth, NoRequests, Proto, pack_relay
from runtime.services.protocol import command_ids_of, enums_of

if TYPE_CHECKING:
    from generated.teamtalk import IM_Buddy_pb2 as buddy
    from generated.teamtalk import IM_File_pb2 as file
    from generated.teamtalk import IM_Server_pb2 as server
    from runtime.services.msg import Fanout, LocalSessions, RouterPool

log = logging.getLogger("ttgen.msg.file")

FILE_TIMEOUT = 10.0


class FileRequestHandlers:
    """IMFileReq and the offline-file commands (a component of the msg service's handlers)."""

    def __init__(
        self,
        proto: Proto,
        *,
        sessions: LocalSessions,
        routers: RouterPool,
        fanout: Fanout,
        discovery: Discovery,
        link_auth: LinkAuth | None,
    ) -> None:
        self.proto = proto
        self.sessions = sessions
        self.routers = routers
        self.fanout = fanout
        self.discovery = discovery
        self.link_auth = link_auth
        self.cmd = command_ids_of(proto.registry)
        enums = enums_of(proto.registry)
        self.online_mode = int(enums.TransferFileType.FILE_TYPE_ONLINE)
        self.offline_mode = int(enums.TransferFileType.FILE_TYPE_OFFLINE)
        self.mobile_bit = enums.ClientTypeBits.MOBILE
        self.online = int(enums.UserStatType.USER_STATUS_ONLINE)
        # Also the answer when no file service answers.
        self.no_file_server = enums.FileServerError.FILE_SERVER_ERRNO_CREATE_TASK_ERROR

    async def _file_call(self, calls: list[tuple[int, bytes, int]]) -> list[Frame] | None:
        """Send requests to one random live file service over one fresh link; None if none answers."""
        endpoints = self.discovery.endpoints("file", "internal")
        random.shuffle(endpoints)
        loop = asyncio.get_running_loop()
        for ep in endpoints:
            try:
                _tr, link = await loop.create_connection(
                    partial(
                        Link,
                        self.proto.registry,
                        NoRequests(),
                        name="msg->file",
                        auth=self.link_auth,
                        dialer=True,
                    ),
                    ep.host,
                    ep.port,
                )
            except OSError:
                continue
            if not await link.authenticated:
                log.warning("file service %s:%d refused this msg server's link", ep.host, ep.port)
                continue
            try:
                return [await link.call(cid, body, FILE_TIMEOUT, flag=f) for cid, body, f in calls]
            except Exception as exc:  # try the next file service
                log.warning("file service %s:%d failed: %s", ep.host, ep.port, exc)
            finally:
                link.close()
        return None

    def _ip_list(self, frame: Frame) -> list[Message]:
        if not frame.body:
            return []
        rsp = cast("server.IMFileServerIPRsp", self.proto.parse(frame.command_id, frame.body))
        return list(rsp.ip_addr_list)

    async def _receiver_online(self, user_id: int) -> bool:
        if any(not st.client_type & self.mobile_bit for st in self.sessions.of(user_id)):
            return True
        cmd = self.cmd.CID_BUDDY_LIST_USERS_STATUS_REQUEST
        req = self.proto.new(cmd, user_id=0, user_id_list=[user_id])
        try:
            frame = await self.routers.call(cmd, req.SerializeToString())
        except Exception:  # no router: treat the receiver as offline
            return False
        rsp = cast("buddy.IMUsersStatRsp", self.proto.parse(frame.command_id, frame.body))
        return any(s.user_id == user_id and int(s.status) == self.online for s in rsp.user_stat_list)

    async def request(self, ctx: Context, msg: file.IMFileReq) -> Message:
        """Create a transfer task; tell the sender where to log in and offer an online transfer."""
        user = ctx.user_id
        cmd = self.cmd
        mode = int(msg.trans_mode)
        if mode == self.online_mode and not await self._receiver_online(msg.to_user_id):
            mode = self.offline_mode
        rsp = cast(
            "file.IMFileRsp",
            self.proto.new(
                cmd.CID_FILE_RESPONSE,
                result_code=self.no_file_server,
                from_user_id=user,
                to_user_id=msg.to_user_id,
                file_name=msg.file_name,
                task_id="",
                trans_mode=mode,
            ),
        )
        req = self.proto.new(
            cmd.CID_OTHER_FILE_TRANSFER_REQ,
            from_user_id=user,
            to_user_id=msg.to_user_id,
            file_name=msg.file_name,
            file_size=msg.file_size,
            trans_mode=mode,
        )
        ip_req = self.proto.new(cmd.CID_OTHER_FILE_SERVER_IP_REQ).SerializeToString()
        frames = await self._file_call(
            [
                (cmd.CID_OTHER_FILE_TRANSFER_REQ, req.SerializeToString(), 0),
                (cmd.CID_OTHER_FILE_SERVER_IP_REQ, ip_req, 0),
            ]
        )
        if frames is None or not frames[0].body:
            return rsp
        task = cast("server.IMFileTransferRsp", self.proto.parse(frames[0].command_id, frames[0].body))
        rsp.result_code = task.result_code
        if task.result_code != 0:
            return rsp
        ips = self._ip_list(frames[1])
        rsp.task_id = task.task_id
        rsp.ip_addr_list.extend(ips)  # type: ignore[arg-type]
        if mode == self.online_mode:
            note = self.proto.new(
                cmd.CID_FILE_NOTIFY,
                from_user_id=user,
                to_user_id=msg.to_user_id,
                file_name=msg.file_name,
                file_size=msg.file_size,
                task_id=task.task_id,
                ip_addr_list=ips,
                trans_mode=self.online_mode,
                offline_ready=0,
            )
            self.fanout.notify(cmd.CID_FILE_NOTIFY.name, note, [msg.to_user_id])
        return rsp

    async def has_offline(self, ctx: Context, msg: file.IMFileHasOfflineReq) -> Message:
        """Offline files waiting for the user, with the file service addresses."""
        cmd = self.cmd
        msg.user_id = ctx.user_id
        msg.ClearField("attach_data")
        body = pack_relay([ctx.user_id], msg.SerializeToString())
        frames = await self._file_call([(cmd.CID_FILE_HAS_OFFLINE_REQ, body, FLAG_RELAY)])
        if frames is None or not frames[0].body:
            return self.proto.new(cmd.CID_FILE_HAS_OFFLINE_RES, user_id=ctx.user_id)
        rsp = cast("file.IMFileHasOfflineRsp", self.proto.parse(frames[0].command_id, frames[0].body))
        rsp.ClearField("attach_data")
        return rsp

    async def add_offline(self, ctx: Context, msg: file.IMFileAddOfflineReq) -> None:
        """The uploader finished: record the file and tell the receiver it is ready."""
        cmd = self.cmd
        msg.from_user_id = ctx.user_id
        body = pack_relay([ctx.user_id], msg.SerializeToString())
        ip_req = self.proto.new(cmd.CID_OTHER_FILE_SERVER_IP_REQ).SerializeToString()
        frames = await self._file_call(
            [(cmd.CID_FILE_ADD_OFFLINE_REQ, body, FLAG_RELAY), (cmd.CID_OTHER_FILE_SERVER_IP_REQ, ip_req, 0)]
        )
        if frames is None or not frames[0].body:
            return None
        added = cast("file.IMFileAddOfflineReq", self.proto.parse(frames[0].command_id, frames[0].body))
        note = self.proto.new(
            cmd.CID_FILE_NOTIFY,
            from_user_id=ctx.user_id,
            to_user_id=added.to_user_id,
            file_name=added.file_name,
            file_size=added.file_size,
            task_id=added.task_id,
            ip_addr_list=self._ip_list(frames[1]),
            trans_mode=self.offline_mode,
            offline_ready=1,
        )
        self.fanout.notify(cmd.CID_FILE_NOTIFY.name, note, [added.to_user_id])
        return None

    async def del_offline(self, ctx: Context, msg: file.IMFileDelOfflineReq) -> None:
        """The receiver (or sender) is done: delete the record and the stored file."""
        body = pack_relay([ctx.user_id], msg.SerializeToString())
        await self._file_call([(self.cmd.CID_FILE_DEL_OFFLINE_REQ, body, FLAG_RELAY)])
        return None
