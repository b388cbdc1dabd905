"""Runtime services layer (file): the msg server's half of file transfer (IMFileReq, offline-file commands).

A mixin for the msg service's handlers (`MsgHandlers`), so the file protocol lives beside the file service:
IMFileReq picks the mode (ONLINE downgrades to OFFLINE when the receiver has no PC presence anywhere), asks a
random file service for a task (0x0731) and its client addresses (0x0733), answers the sender with IMFileRsp
and offers an online transfer to the receiver with IMFileNotify. The offline-file commands go to a file
service with the authenticated user in a relay envelope; a recorded upload notifies the receiver
(`offline_ready=1`). File requests are rare, so each one uses a short-lived link instead of a standing pool.
"""

from __future__ import annotations

import asyncio
import random
from functools import partial
from typing import Any

from runtime.dispatch import Context
from runtime.framing import Frame
from runtime.services.links import FLAG_RELAY, Link, NoRequests, pack_relay
from runtime.services.msg.common import HandlerBase

ONLINE, OFFLINE = 1, 2
MOBILE_BIT = 0x10
FILE_TIMEOUT = 10.0
NO_FILE_SERVER = 2  # FILE_SERVER_ERRNO_CREATE_TASK_ERROR, also when no file service answers


class FileRequestHandlers(HandlerBase):
    """IMFileReq and the offline-file commands (mixed into the msg service's handlers)."""

    async def _file_call(self, calls: list[tuple[str, bytes, int]]) -> list[Frame] | None:
        """Send requests to one random live file service over one fresh link; None if none answers."""
        endpoints = self.svc.ctx.discovery.endpoints("file", "internal")
        random.shuffle(endpoints)
        loop = asyncio.get_running_loop()
        auth = self.svc.ctx.link_auth
        for ep in endpoints:
            try:
                _tr, link = await loop.create_connection(
                    partial(
                        Link, self.svc.ctx.registry, NoRequests(), name="msg->file", auth=auth, dialer=True
                    ),
                    ep.host,
                    ep.port,
                )
            except OSError:
                continue
            if not await link.authenticated:
                self.svc.log.warning("file service %s:%d refused this msg server's link", ep.host, ep.port)
                continue
            try:
                return [
                    await link.call(self.proto.cid(c), body, FILE_TIMEOUT, flag=f) for c, body, f in calls
                ]
            except Exception as exc:  # try the next file service
                self.svc.log.warning("file service %s:%d failed: %s", ep.host, ep.port, exc)
            finally:
                link.close()
        return None

    def _ip_list(self, frame: Frame) -> list[Any]:
        if not frame.body:
            return []
        rsp: Any = self.proto.parse(frame.command_id, frame.body)
        return list(rsp.ip_addr_list)

    async def _receiver_online(self, user_id: int) -> bool:
        if any(not st.client_type & MOBILE_BIT for st in self.svc.states_of(user_id)):
            return True
        req = self.proto.new("CID_BUDDY_LIST_USERS_STATUS_REQUEST", user_id=0, user_id_list=[user_id])
        try:
            frame = await self.svc.routers.call(
                self.proto.cid("CID_BUDDY_LIST_USERS_STATUS_REQUEST"), req.SerializeToString()
            )
        except Exception:  # no router: treat the receiver as offline
            return False
        rsp: Any = self.proto.parse(frame.command_id, frame.body)
        return any(s.user_id == user_id and s.status == 1 for s in rsp.user_stat_list)

    async def on_cid_file_request(self, ctx: Context, msg: Any) -> Any:
        """Create a transfer task; tell the sender where to log in and offer an online transfer."""
        user = ctx.user_id
        mode = msg.trans_mode
        if mode == ONLINE and not await self._receiver_online(msg.to_user_id):
            mode = OFFLINE
        rsp: Any = self.proto.new(
            "CID_FILE_RESPONSE",
            result_code=NO_FILE_SERVER,
            from_user_id=user,
            to_user_id=msg.to_user_id,
            file_name=msg.file_name,
            task_id="",
            trans_mode=mode,
        )
        req = self.proto.new(
            "CID_OTHER_FILE_TRANSFER_REQ",
            from_user_id=user,
            to_user_id=msg.to_user_id,
            file_name=msg.file_name,
            file_size=msg.file_size,
            trans_mode=mode,
        )
        ip_req = self.proto.new("CID_OTHER_FILE_SERVER_IP_REQ").SerializeToString()
        frames = await self._file_call(
            [
                ("CID_OTHER_FILE_TRANSFER_REQ", req.SerializeToString(), 0),
                ("CID_OTHER_FILE_SERVER_IP_REQ", ip_req, 0),
            ]
        )
        if frames is None or not frames[0].body:
            return rsp
        task: Any = self.proto.parse(frames[0].command_id, frames[0].body)
        rsp.result_code = task.result_code
        if task.result_code != 0:
            return rsp
        ips = self._ip_list(frames[1])
        rsp.task_id = task.task_id
        rsp.ip_addr_list.extend(ips)
        if mode == ONLINE:
            note = self.proto.new(
                "CID_FILE_NOTIFY",
                from_user_id=user,
                to_user_id=msg.to_user_id,
                file_name=msg.file_name,
                file_size=msg.file_size,
                task_id=task.task_id,
                ip_addr_list=ips,
                trans_mode=ONLINE,
                offline_ready=0,
            )
            self.notify("CID_FILE_NOTIFY", note, [msg.to_user_id])
        return rsp

    async def on_cid_file_has_offline_req(self, ctx: Context, msg: Any) -> Any:
        """Offline files waiting for the user, with the file service addresses."""
        msg.user_id = ctx.user_id
        msg.ClearField("attach_data")
        body = pack_relay([ctx.user_id], msg.SerializeToString())
        frames = await self._file_call([("CID_FILE_HAS_OFFLINE_REQ", body, FLAG_RELAY)])
        if frames is None or not frames[0].body:
            return self.proto.new("CID_FILE_HAS_OFFLINE_RES", user_id=ctx.user_id)
        rsp: Any = self.proto.parse(frames[0].command_id, frames[0].body)
        rsp.ClearField("attach_data")
        return rsp

    async def on_cid_file_add_offline_req(self, ctx: Context, msg: Any) -> None:
        """The uploader finished: record the file and tell the receiver it is ready."""
        msg.from_user_id = ctx.user_id
        body = pack_relay([ctx.user_id], msg.SerializeToString())
        ip_req = self.proto.new("CID_OTHER_FILE_SERVER_IP_REQ").SerializeToString()
        frames = await self._file_call(
            [("CID_FILE_ADD_OFFLINE_REQ", body, FLAG_RELAY), ("CID_OTHER_FILE_SERVER_IP_REQ", ip_req, 0)]
        )
        if frames is None or not frames[0].body:
            return None
        added: Any = self.proto.parse(frames[0].command_id, frames[0].body)
        note = self.proto.new(
            "CID_FILE_NOTIFY",
            from_user_id=ctx.user_id,
            to_user_id=added.to_user_id,
            file_name=added.file_name,
            file_size=added.file_size,
            task_id=added.task_id,
            ip_addr_list=self._ip_list(frames[1]),
            trans_mode=OFFLINE,
            offline_ready=1,
        )
        self.notify("CID_FILE_NOTIFY", note, [added.to_user_id])
        return None

    async def on_cid_file_del_offline_req(self, ctx: Context, msg: Any) -> None:
        """The receiver (or sender) is done: delete the record and the stored file."""
        body = pack_relay([ctx.user_id], msg.SerializeToString())
        await self._file_call([("CID_FILE_DEL_OFFLINE_REQ", body, FLAG_RELAY)])
        return None
