"""Runtime services layer (biz): message handlers: store, read acks, unread, history, get-by-id, recall,
edit."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from runtime.dispatch import Context
from runtime.link_dispatch import answer_later
from runtime.monitor.metrics import Counter
from runtime.services.biz.convert import fill_latest, fill_msg, result_of
from runtime.services.contracts import (
    ResultCode,
    is_resend,
    pack_store_reply,
    request_token,
    unpack_version,
)
from runtime.services.links import Proto
from runtime.services.protocol import enums_of
from runtime.stages.transport import DedupWindow
from runtime.storage import errors as se
from runtime.storage.base import Storage
from runtime.storage.models import GroupVersion, SessionType

log = logging.getLogger("ttgen.biz")


_STORED = pack_store_reply(ResultCode.OK, 0, False)  # the reply envelope of a stored 1:1 message
_STORED_DUPLICATE = pack_store_reply(ResultCode.OK, 0, True)


# Store requests without a client msg id carry a token from msg (convert.pack_store_request); the ids stored
# for them are remembered this long, so a request msg sends again after its link to biz dropped is answered
# with the id already stored instead of being stored twice. This memory covers a lost link; a lost biz (one
# that crashed between its commit and its answer) is covered by the token stored with the message: a resend
# (flagged by msg) that this memory does not know is looked up in storage (Storage.send_single(resend=True)).
STORE_TOKEN_WINDOW = 120.0
STORE_TOKEN_LIMIT = 400_000


def _stored_id(msg_id: int, created: int) -> int:
    """(msg id, created) as one int: up to 400,000 of these are kept, and an int is smaller than a tuple and
    never visited by the cycle collector."""
    return (msg_id << 32) | (created & 0xFFFFFFFF)


def _dedup_key(kind: int, session_id: int, client_msg_id: int, msg_type: int, content: bytes) -> bytes:
    """What makes a resent message the same request: the conversation, the client's msg id and the content.
    A client msg id alone is not enough: a second device, or a client whose counter restarted, reuses it for
    other text, which must be stored and delivered, not answered with the first message's id."""
    digest = hashlib.blake2b(content, digest_size=16, person=msg_type.to_bytes(4, "little")).digest()
    return f"{kind}:{session_id}:{client_msg_id}:".encode() + digest


def new_store_tokens() -> DedupWindow:
    """The memory of recent store request tokens (sender, token) -> (msg id, created)."""
    return DedupWindow(STORE_TOKEN_WINDOW, STORE_TOKEN_LIMIT)


def _single_stored(
    msg: Any,
    done: Callable[[Any], None],
    tokens: DedupWindow | None,
    sender: int,
    token: int,
    res: Any,
    error: BaseException | None,
) -> None:
    """The storage callback of `store_single_nowait`: fill in the reply as `store_message` would."""
    if error is None:
        msg.msg_id = res.msg_id
        msg.create_time = res.created
        msg.attach_data = _STORED_DUPLICATE if res.duplicate else _STORED
        if tokens is not None and token:
            tokens.remember(sender, token, _stored_id(res.msg_id, res.created), time.monotonic())
    elif isinstance(error, se.StorageError):
        msg.msg_id = 0
        msg.attach_data = pack_store_reply(result_of(error))
    else:
        log.error("biz: storing a message failed", exc_info=error)
        done(None)
        return
    done(msg)


class MessageHandlers:
    """IMMsgData storage and the message read paths. Mixed into BizService."""

    storage: Storage
    proto: Proto
    _group_cache: dict[int, tuple[int, list[int]]]
    _store_tokens: DedupWindow  # made by the service: new_store_tokens()
    _group_bit: int  # the stack's MsgTypeBits.GROUP, read from the registry once by the service
    _store_tasks: set[asyncio.Task[None]]  # stores that could not take the callback path, in flight
    _m_requests: Counter
    _m_direct_stores: Counter

    def _token_hit(self, user_id: int, msg: Any) -> tuple[int, tuple[int, int] | None, bool]:
        """(the request token, 0 if none; the (msg id, created) remembered for it, or None; whether the
        request is a resend the memory does not know, which storage is then asked about)."""
        if msg.msg_id or not msg.HasField("attach_data"):
            return 0, None, False
        data = msg.attach_data
        token = request_token(data)
        if not token:
            return 0, None, False
        hit = self._store_tokens.get(user_id, token, time.monotonic())
        if hit is None:  # a first send (12 bytes) is never a resend: no call for it
            return token, None, len(data) > 12 and is_resend(data)
        return token, (hit >> 32, hit & 0xFFFFFFFF), False

    async def group_state(self, group_id: int, member_id: int) -> tuple[int, list[int]]:
        """(version, member ids) of a group. The cache is checked against the stored version on every call (a
        read that returns nothing while the version is unchanged), so changes made by other writers, e.g.
        `ttgen admin`, are seen at once."""
        cached = self._group_cache.get(group_id)
        known = cached[0] if cached is not None else 0
        groups = await self.storage.get_groups_info(member_id, [GroupVersion(group_id, known)])
        if not groups:
            if cached is not None:
                return cached
            raise se.NotFound(f"group {group_id}")
        g = groups[0]
        state = (g.version, sorted(m.user_id for m in g.members))
        self._group_cache[group_id] = state
        return state

    def store_single_nowait(self, user_id: int, msg: Any, burn: bool, done: Callable[[Any], None]) -> bool:
        """`store_message` for a 1:1 message without a task or a future: the storage calls back after the
        commit and `done(reply)` gets what `store_message` would return (None if storing failed
        unexpectedly). False (nothing done) for a group message, a storage without commit callbacks, or a
        resend whose token the memory does not know (rare: `store_message` asks storage whether its first
        copy was stored)."""
        storage = self.storage
        if not storage.commit_callbacks or msg.msg_type & self._group_bit:
            return False
        msg.from_user_id = user_id
        client_msg_id = msg.msg_id
        to = msg.to_session_id
        dedup = _dedup_key(1, to, client_msg_id, msg.msg_type, msg.msg_data) if client_msg_id else None
        token, hit, resend = self._token_hit(user_id, msg)
        if hit is not None:  # msg sent this request again: it was stored, its answer lost with the link
            msg.msg_id, msg.create_time = hit
            msg.attach_data = _STORED_DUPLICATE
            done(msg)
            return True
        if resend:
            return False
        # A partial, not a closure: cheaper per message.
        stored = partial(_single_stored, msg, done, self._store_tokens, user_id, token)
        try:
            storage.send_single_nowait(
                user_id, to, msg.msg_type, msg.msg_data, stored, dedup_key=dedup, burn=burn, token=token
            )
        except se.StorageError as exc:  # closed
            stored(None, exc)
        return True

    def on_cid_msg_data(self, ctx: Context, msg: Any) -> Any:
        """Store a message and answer with the durable id (the stored IMMsgData, its attach_data the store
        reply envelope). A plain function on the hot path: a 1:1 message is answered from the storage's
        commit callback (no task, no future); anything else continues in `store_message`."""
        self.store(ctx.user_id, msg, False, answer_later(ctx))
        return None

    def on_cid_ext_msg_burn(self, ctx: Context, msg: Any) -> Any:
        """Store a burn-after-reading 1:1 message (CID_EXT_MSG_BURN)."""
        self.store(ctx.user_id, msg, True, answer_later(ctx))
        return None

    def store_direct(self, user_id: int, msg: Any, burn: bool, done: Callable[[Any], None]) -> None:
        """A store called by a msg server of this shard (runtime.services.contracts.DirectStore), counted as a
        request like one from a link, and in `biz_direct_stores_total`."""
        self._m_requests.inc()
        self._m_direct_stores.inc()
        self.store(user_id, msg, burn, done)

    def store(self, user_id: int, msg: Any, burn: bool, done: Callable[[Any], None]) -> None:
        """The one store path: store `msg` for `user_id` and call `done(reply)` after the commit (None: it
        failed unexpectedly). Requests from links (the handlers above) and direct calls from a msg server of
        this shard (`store_direct`) both come here: a 1:1 message through the storage's commit callback,
        anything else in a task running `store_message`."""
        answer = partial(self._stored, done)
        if self.store_single_nowait(user_id, msg, burn, answer):
            return
        task = asyncio.get_running_loop().create_task(self._store_async(user_id, msg, burn, answer))
        self._store_tasks.add(task)
        task.add_done_callback(self._store_tasks.discard)

    def _stored(self, answer: Callable[[Any], None], reply: Any) -> None:
        """A store finished (committed, or failed: `reply` None): answer whoever asked, a link's request or a
        direct call. One place between the commit and the answer for both (the tests stop biz here)."""
        answer(reply)

    async def _store_async(self, user_id: int, msg: Any, burn: bool, answer: Callable[[Any], None]) -> None:
        try:
            reply = await self.store_message(user_id, msg, burn)
        except Exception:
            log.exception("storing a message failed")
            reply = None
        answer(reply)

    async def store_message(self, user_id: int, msg: Any, burn: bool = False) -> Any:
        """Store a message (msg id allocated in the same transaction) and answer with the durable id."""
        msg.from_user_id = user_id
        client_msg_id = msg.msg_id
        cached_version = unpack_version(msg.attach_data) if msg.HasField("attach_data") else 0
        is_group = bool(msg.msg_type & self._group_bit)
        # A resend the token memory does not know (biz restarted since its first copy?) is looked up by
        # storage in the same write as the store: found, it answers with that message (duplicate) as below.
        token, hit, resend = self._token_hit(user_id, msg)
        if hit is not None:  # a retried request whose first copy was stored (see STORE_TOKEN_WINDOW)
            msg.msg_id, msg.create_time = hit
            if is_group:
                version, members = await self.group_state(msg.to_session_id, user_id)
                msg.attach_data = pack_store_reply(ResultCode.OK, version, True, members)
            else:
                msg.attach_data = _STORED_DUPLICATE
            return msg
        dedup = None
        if client_msg_id:
            kind = 2 if is_group else 1
            dedup = _dedup_key(kind, msg.to_session_id, client_msg_id, msg.msg_type, msg.msg_data)
        try:
            if is_group:
                if burn:
                    raise se.InvalidArgument("burn-after-reading is for 1:1 messages")
                res = await self.storage.send_group(
                    user_id,
                    msg.to_session_id,
                    msg.msg_type,
                    msg.msg_data,
                    dedup_key=dedup,
                    token=token,
                    resend=resend,
                )
                version, members = await self.group_state(msg.to_session_id, user_id)
                attach = pack_store_reply(
                    ResultCode.OK,
                    version,
                    res.duplicate,
                    members if cached_version == 0 or version != cached_version else None,
                )
            else:
                res = await self.storage.send_single(
                    user_id,
                    msg.to_session_id,
                    msg.msg_type,
                    msg.msg_data,
                    dedup_key=dedup,
                    burn=burn,
                    token=token,
                    resend=resend,
                )
                attach = pack_store_reply(ResultCode.OK, 0, res.duplicate)
        except se.StorageError as exc:
            msg.msg_id = 0
            msg.attach_data = pack_store_reply(result_of(exc))
            return msg
        msg.msg_id = res.msg_id
        msg.create_time = res.created
        msg.attach_data = attach
        if token:
            self._store_tokens.remember(user_id, token, _stored_id(res.msg_id, res.created), time.monotonic())
        return msg

    async def on_cid_msg_read_ack(self, ctx: Context, msg: Any) -> Any:
        """Clear unread up to the msg id; the reply lists burned msg ids in attach-free form (see msg)."""
        return await self.read_ack(ctx.user_id, msg)

    async def on_cid_ext_msg_burn_read(self, ctx: Context, msg: Any) -> Any:
        """The recipient opened a burn-after-reading message: a read ack that destroys what it covers."""
        return await self.read_ack(ctx.user_id, msg)

    async def read_ack(self, user_id: int, msg: Any) -> Any:
        """Clear unread up to the msg id; the reply lists burned msg ids in attach-free form (see msg)."""
        msg.user_id = user_id
        try:
            res = await self.storage.mark_read(
                user_id, SessionType(msg.session_type), msg.session_id, msg.msg_id
            )
        except (se.StorageError, ValueError) as exc:
            log.info("read ack refused: %s", exc)
            msg.msg_id = 0
            return msg
        reply: Any = self.proto.new(
            "CID_MSG_GET_BY_MSG_ID_RES",
            user_id=user_id,
            session_type=msg.session_type,
            session_id=msg.session_id,
        )
        # The burned ids travel back as an id-only msg list: msg needs them to tell every device.
        for mid in res.burned:
            info = reply.msg_list.add()
            info.msg_id, info.from_session_id, info.create_time, info.msg_type = mid, 0, 0, 1
            info.msg_data = b""
        return reply

    async def on_cid_msg_unread_cnt_request(self, ctx: Context, msg: Any) -> Any:
        """Unread count per session with its latest message, and the total."""
        user_id = ctx.user_id
        summary = await self.storage.unread_summary(user_id)
        rsp: Any = self.proto.new("CID_MSG_UNREAD_CNT_RESPONSE", user_id=user_id, total_cnt=summary.total)
        for item in summary.items:
            info = rsp.unreadinfo_list.add()
            info.session_id = item.session_id
            info.session_type = int(item.session_type)
            info.unread_cnt = item.unread
            fill_latest(info, item.latest)
        return rsp

    async def on_cid_msg_list_request(self, ctx: Context, msg: Any) -> Any:
        """History page, newest first; refused sessions answer with an empty list."""
        user_id = ctx.user_id
        rsp: Any = self.proto.new(
            "CID_MSG_LIST_RESPONSE",
            user_id=user_id,
            session_type=msg.session_type,
            session_id=msg.session_id,
            msg_id_begin=msg.msg_id_begin,
        )
        try:
            msgs = await self.storage.get_history(
                user_id, SessionType(msg.session_type), msg.session_id, msg.msg_id_begin, max(0, msg.msg_cnt)
            )
        except (se.StorageError, ValueError) as exc:
            log.info("history refused: %s", exc)
            return rsp
        for m in msgs:
            fill_msg(rsp.msg_list.add(), m)
        return rsp

    async def on_cid_msg_get_latest_msg_id_req(self, ctx: Context, msg: Any) -> Any:
        """The session's latest msg id (0 when refused or empty)."""
        user_id = ctx.user_id
        try:
            latest = await self.storage.latest_msg_id(user_id, SessionType(msg.session_type), msg.session_id)
        except (se.StorageError, ValueError):
            latest = 0
        return self.proto.new(
            "CID_MSG_GET_LATEST_MSG_ID_RSP",
            user_id=user_id,
            session_type=msg.session_type,
            session_id=msg.session_id,
            latest_msg_id=latest,
        )

    async def on_cid_msg_get_by_msg_id_req(self, ctx: Context, msg: Any) -> Any:
        """Specific messages by id (visible ones only)."""
        user_id = ctx.user_id
        rsp: Any = self.proto.new(
            "CID_MSG_GET_BY_MSG_ID_RES",
            user_id=user_id,
            session_type=msg.session_type,
            session_id=msg.session_id,
        )
        try:
            msgs = await self.storage.get_messages_by_ids(
                user_id, SessionType(msg.session_type), msg.session_id, list(msg.msg_id_list)
            )
        except (se.StorageError, ValueError) as exc:
            log.info("get-by-id refused: %s", exc)
            return rsp
        for m in msgs:
            fill_msg(rsp.msg_list.add(), m)
        return rsp

    async def on_cid_ext_msg_recall_req(self, ctx: Context, msg: Any) -> Any:
        """The sender withdraws a message within the recall window; no copy of the content remains."""
        user_id = ctx.user_id
        rsp: Any = self.proto.new(
            "CID_EXT_MSG_RECALL_RSP",
            user_id=user_id,
            session_type=msg.session_type,
            session_id=msg.session_id,
            msg_id=msg.msg_id,
        )
        result = enums_of(self.proto.registry).RecallResult
        try:
            await self.storage.recall(user_id, SessionType(msg.session_type), msg.session_id, msg.msg_id)
            rsp.result_code = result.RECALL_OK
        except se.RecallWindowExpired:
            rsp.result_code = result.RECALL_TIME_LIMIT
        except se.AccessDenied:
            rsp.result_code = result.RECALL_NOT_SENDER
        except (se.StorageError, ValueError):
            rsp.result_code = result.RECALL_NOT_FOUND
        return rsp

    async def on_cid_ext_msg_edit_req(self, ctx: Context, msg: Any) -> Any:
        """The sender replaces the text of a message within the edit window; history shows the new text."""
        user_id = ctx.user_id
        rsp: Any = self.proto.new(
            "CID_EXT_MSG_EDIT_RSP",
            user_id=user_id,
            session_type=msg.session_type,
            session_id=msg.session_id,
            msg_id=msg.msg_id,
            edit_time=0,
        )
        result = enums_of(self.proto.registry).EditResult
        try:
            rsp.edit_time = await self.storage.edit_message(
                user_id, SessionType(msg.session_type), msg.session_id, msg.msg_id, bytes(msg.msg_data)
            )
            rsp.result_code = result.EDIT_OK
        except se.EditWindowExpired:
            rsp.result_code = result.EDIT_TIME_LIMIT
        except se.AccessDenied:
            rsp.result_code = result.EDIT_NOT_SENDER
        except (se.InvalidArgument, se.ValueTooLarge):
            rsp.result_code = result.EDIT_NOT_TEXT
        except (se.StorageError, ValueError):
            rsp.result_code = result.EDIT_NOT_FOUND
        return rsp
