"""Runtime services layer (gateway): the client API (`/api/...`), JSON in and out (docs/web-api.md).

The same routes answer HTTP requests and WebSocket commands (`dispatch`, runtime.services.gateway.websocket);
the chat page's reads and commands are in runtime.services.gateway.chat_api. The long-poll core:

- `POST /api/login` `{user, password}` (plain) or `{user, password_md5}`, optional `client_type` (1, 2, 17,
  18) -> `{token, user_id, user, upload_token, upload_url, poll_timeout, resume_ticket, ticket_expires}`;
  or `{ticket, client_type}` with a `resume_ticket` (base64url) from an earlier login: no password hashing,
  the answer carries the next ticket (a ticket logs in once; refused tickets answer error 6 with
  `ticket_result`, the IM.Ext TicketResult name, e.g. `TICKET_REVOKED`);
- `POST /api/send` `{to, text}` or `{to, data_b64}`, `group: true` for a group, optional `client_msg_id` (a
  retry with the same id is stored once) -> `{msg_id, session_type, create_time}`;
- `GET /api/poll?since=<last seq seen>&timeout=<s, max 30>` -> `{events: [...], last_seq, gap}`;
- `POST /api/ack` `{seq}`; `POST /api/read` `{session_id, session_type, msg_id}` -> `{burned: [msg ids]}`
  (burn-after-reading messages the read destroyed); `POST /api/logout`;
- `GET /api/unread` -> `{total, sessions: [...]}`.

Every answer carries `error_code` (0 OK, 1 bad request, 2 not logged in, 3 service unavailable, 6 login
refused, 24 value too large, 27 rate limited, 28 recall window expired, other values from biz: 20 invalid, 21
not found, 22 denied) and `error_msg`. The session token goes in `Authorization: Bearer <token>` (or
`?token=`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import re
import time
from typing import TYPE_CHECKING, Any, cast

from google.protobuf.json_format import MessageToDict

from runtime.auth.passwords import md5_login_policy
from runtime.auth.tickets import REVOKE_RETRY_DELAYS
from runtime.errors import CallTimeout, ConnectionClosed
from runtime.httpkit import Request, Response, json_response
from runtime.services.blobs_auth import issue_upload_token, revoke_session
from runtime.services.contracts import ResultCode, StoreAttempt, StoreResult, StoreTokens
from runtime.services.gateway.chat_api import ChatPageApi, arg_session_type
from runtime.services.gateway.codes import (
    ACCESS_DENIED,
    BAD_REQUEST,
    LOGIN_REFUSED,
    NOT_LOGGED_IN,
    OK,
    RATE_LIMITED,
    TOO_LARGE,
    UNAVAILABLE,
    ApiError,
    refusal_codes,
)
from runtime.services.gateway.files import file_text
from runtime.services.gateway.relays import chat_key
from runtime.services.gateway.sessions import Session
from runtime.services.links import FLAG_RELAY, pack_relay
from runtime.services.protocol import enums_of

if TYPE_CHECKING:
    from generated.teamtalk.registry import Enums
    from runtime.services.gateway.service import GatewayService

MAX_MSG_BYTES = 4096
BIZ_TIMEOUT = 10.0
_MD5 = re.compile(r"^[0-9a-f]{32}$")
_B64URL = re.compile(r"^[A-Za-z0-9_-]+={0,2}$")


def error(code: int, message: str, status: int = 400) -> Response:
    """An error answer."""
    return json_response({"error_code": code, "error_msg": message}, status)


def ok(**fields: Any) -> Response:
    """A success answer."""
    return json_response({"error_code": OK, "error_msg": "", **fields})


def _uint(value: Any, name: str, *, positive: bool = True) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 0xFFFFFFFF:
        raise ValueError(f"{name} must be an unsigned 32-bit integer")
    if positive and value == 0:
        raise ValueError(f"{name} must not be 0")
    return value


Route = Any  # (Request, doc, Session | None) -> Awaitable[Response]
# WebSocket ops: the HTTP endpoints a socket may call (docs/web-api.md), by name.
WS_OPS = (
    "send",
    "ack",
    "read",
    "typing",
    "recall",
    "edit",
    "unread",
    "users",
    "departments",
    "user_info",
    "groups",
    "group",
    "recent",
    "history",
    "presence",
    "logout",
    "ping",
)


class ClientApi(ChatPageApi):
    """The `/api/` endpoints of one gateway."""

    def __init__(self, svc: GatewayService) -> None:
        self.svc = svc
        self.proto = svc.proto
        self.enums = enums_of(svc.proto.registry)
        self.refusals = refusal_codes(self.enums)
        self.tokens = StoreTokens()
        self._revocations: set[asyncio.Task[Any]] = set()
        self.routes: dict[tuple[str, str], Route] = {
            ("POST", "/api/login"): self.login,
            ("POST", "/api/logout"): self.logout,
            ("POST", "/api/send"): self.send,
            ("GET", "/api/poll"): self.poll,
            ("POST", "/api/ack"): self.ack,
            ("POST", "/api/read"): self.read,
            ("GET", "/api/unread"): self.unread,
            ("GET", "/api/users"): self.users,
            ("GET", "/api/departments"): self.departments,
            ("GET", "/api/user_info"): self.user_info,
            ("GET", "/api/groups"): self.groups,
            ("GET", "/api/group"): self.group,
            ("GET", "/api/recent"): self.recent,
            ("GET", "/api/history"): self.history,
            ("GET", "/api/presence"): self.presence,
            ("POST", "/api/typing"): self.typing,
            ("POST", "/api/recall"): self.recall,
            ("POST", "/api/edit"): self.edit,
            ("GET", "/api/ping"): self.ping,
            ("GET", "/api/discovery"): self.discovery,
        }
        self.public: tuple[Route, ...] = (self.login, self.discovery)  # answered without a session
        by_path = {path: route for (_m, path), route in self.routes.items()}
        self.ws_routes: dict[str, Route] = {op: by_path["/api/" + op] for op in WS_OPS}

    async def dispatch(self, op: str, doc: dict[str, Any], session: Session, peer: str) -> Response:
        """One WebSocket command (an op of WS_OPS, checked by the caller) for an authenticated session."""
        request = Request("WS", "/api/" + op, {}, {}, b"", peer)
        try:
            response: Response = await self.ws_routes[op](request, doc, session)
        except ApiError as exc:
            return error(exc.code, str(exc), exc.status)
        except ValueError as exc:
            return error(BAD_REQUEST, str(exc))
        return response

    async def handle(self, request: Request) -> Response:
        """Route, decode JSON bodies (GET: the query string), check the session."""
        route = self.routes.get((request.method, request.path))
        if route is None and request.method == "HEAD":
            route = self.routes.get(("GET", request.path))
        if route is None:
            if any(path == request.path for _m, path in self.routes):
                return error(BAD_REQUEST, "method not allowed", 405)
            return error(BAD_REQUEST, "no such endpoint", 404)
        doc: dict[str, Any] = {}
        if request.method == "POST" and request.body:
            try:
                parsed = request.json()
            except ValueError as exc:
                return error(BAD_REQUEST, str(exc))
            if not isinstance(parsed, dict):
                return error(BAD_REQUEST, "the body must be a JSON object")
            doc = parsed
        elif request.method != "POST":
            doc = {k: v for k, v in request.query.items() if k != "token"}
        session = None
        if route not in self.public:
            session = self._session(request)
            if session is None:
                return error(NOT_LOGGED_IN, "not logged in (missing, unknown or expired token)", 401)
        try:
            response: Response = await route(request, doc, session)
        except ApiError as exc:
            return error(exc.code, str(exc), exc.status)
        except ValueError as exc:
            return error(BAD_REQUEST, str(exc))
        return response

    def _session(self, request: Request) -> Session | None:
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else request.query.get("token", "")
        return self.svc.sessions.get(token) if token else None

    async def _biz(self, command: str, user_id: int, msg: Any) -> Any | None:
        link = self.svc.biz_link()
        if link is None:
            return None
        body = pack_relay([user_id], msg.SerializeToString())
        try:
            frame = await link.call(self.proto.cid(command), body, BIZ_TIMEOUT, flag=FLAG_RELAY)
        except (ConnectionClosed, CallTimeout):  # the caller answers 503: biz unavailable
            return None
        return self.proto.parse(frame.command_id, frame.body) if frame.body else None

    async def _store(self, cid: int, user: int, attempt: StoreAttempt) -> StoreResult | None:
        """Drive a store attempt to biz (runtime.services.contracts): if the link drops before the answer (or
        no biz is connected), send it again after the attempt's delays, flagged as a resend: biz answers a
        copy it already stored with that message, as it does for msg (docs/cluster.md). None if biz stayed
        out of reach, answered empty, or did not answer in BIZ_TIMEOUT (then nothing more is sent: a client
        retry with a `client_msg_id` is stored once)."""
        request = attempt.request
        while True:
            link = self.svc.biz_link()
            if link is not None:
                try:
                    frame = await link.call(cid, pack_relay([user], request), BIZ_TIMEOUT, flag=FLAG_RELAY)
                except ConnectionClosed:
                    pass
                except CallTimeout:
                    return None
                else:
                    return attempt.answer(frame.body)
            delay = attempt.retry_delay()
            if delay is None:
                return None
            await asyncio.sleep(delay)
            request = attempt.resend()

    # endpoints -------------------------------------------------------------------------------------------
    async def login(self, request: Request, doc: dict[str, Any], _s: Session | None) -> Response:
        """Validate through biz, open a session, announce it to the routers (and kick same-class devices)."""
        if "ticket" in doc:
            return await self._ticket_login(request, doc)
        user = doc.get("user")
        if not isinstance(user, str) or not user or len(user) > 64:
            raise ValueError("user must be a non-empty string")
        if isinstance(doc.get("password_md5"), str) and _MD5.match(doc["password_md5"]):
            if md5_login_policy(self.svc.ctx.cluster_config) != "allow":  # cannot tell a secure channel here
                return error(LOGIN_REFUSED, "MD5 logins are switched off: send the password", 401)
            password = doc["password_md5"]
        elif isinstance(doc.get("password"), str):
            password = hashlib.md5(doc["password"].encode("utf-8")).hexdigest()
        else:
            raise ValueError("password (plain) or password_md5 (32 lower-case hex) is required")
        client_type = _client_type(doc, self.enums)
        if self.svc.biz_link() is None or not self.svc.routers.available:
            return error(UNAVAILABLE, "messaging is unavailable", 503)
        req = self.proto.new(
            "CID_OTHER_VALIDATE_REQ",
            user_name=user,
            password=password,
            attach_data=request.peer.rsplit(":", 1)[0].encode(),
        )
        rsp = await self._biz("CID_OTHER_VALIDATE_REQ", 0, req)
        if rsp is None:
            return error(UNAVAILABLE, "biz did not answer", 503)
        if rsp.result_code != 0:
            return error(LOGIN_REFUSED, rsp.result_string or "login refused", 401)
        session = self._open(rsp.user_info.user_id, client_type)
        ticket, expires = await self._issue_ticket(session)
        return self._welcome(session, rsp.user_info, ticket, expires)

    async def _ticket_login(self, request: Request, doc: dict[str, Any]) -> Response:
        """`{ticket, client_type}`: biz checks and consumes the ticket; a session like a password login's."""
        raw = doc.get("ticket")
        if not isinstance(raw, str) or not 0 < len(raw) <= 256 or not _B64URL.match(raw):
            raise ValueError("ticket must be a non-empty base64url string")
        try:
            ticket = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        except (binascii.Error, ValueError):
            raise ValueError("ticket is not base64url") from None
        client_type = _client_type(doc, self.enums)
        if self.svc.biz_link() is None or not self.svc.routers.available:
            return error(UNAVAILABLE, "messaging is unavailable", 503)
        req = self.proto.new(
            "CID_EXT_TICKET_VERIFY_REQ",
            ticket=ticket[:128],
            client_type=client_type,
            attach_data=request.peer.rsplit(":", 1)[0].encode(),
        )
        rsp = await self._biz("CID_EXT_TICKET_VERIFY_REQ", 0, req)
        if rsp is None:
            return error(UNAVAILABLE, "biz did not answer", 503)
        codes = self.proto.enum("CID_EXT_TICKET_VERIFY_RSP", "result_code")
        if rsp.result_code != codes["TICKET_OK"]:
            names = {number: name for name, number in codes.items()}
            return json_response(
                {
                    "error_code": LOGIN_REFUSED,
                    "error_msg": rsp.result_string or "ticket refused",
                    "ticket_result": names.get(rsp.result_code, str(rsp.result_code)),
                },
                401,
            )
        session = self._open(rsp.user_info.user_id, client_type)
        session.auth_time, session.ticket_session = rsp.auth_time, rsp.session_id
        return self._welcome(session, rsp.user_info, rsp.ticket, rsp.expire_time)

    async def _issue_ticket(self, session: Session) -> tuple[bytes, int]:
        """A resumption ticket for a new session (empty if biz has tickets off or does not answer)."""
        if not self.proto.has("CID_EXT_TICKET_ISSUE_REQ"):
            return b"", 0
        req = self.proto.new(
            "CID_EXT_TICKET_ISSUE_REQ",
            user_id=session.user_id,
            client_type=session.client_type,
            auth_time=session.auth_time,
        )
        rsp = await self._biz("CID_EXT_TICKET_ISSUE_REQ", session.user_id, req)
        if rsp is None or rsp.result_code != 0 or not rsp.ticket:
            return b"", 0
        session.ticket_session = rsp.session_id
        return rsp.ticket, rsp.expire_time

    def revoke_ticket(self, session: Session) -> asyncio.Future[Any] | None:
        """Tell biz the session's ticket is dead (logout, kick): a future of the first attempt, so logout can
        wait for it; unanswered attempts are repeated in the background as msg does (REVOKE_RETRY_DELAYS)."""
        sid, session.ticket_session = session.ticket_session, b""
        if not sid or not self.proto.has("CID_EXT_TICKET_REVOKE_REQ"):
            return None
        req = self.proto.new("CID_EXT_TICKET_REVOKE_REQ", user_id=session.user_id, session_id=sid)
        first: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        async def send() -> None:
            for delay in (0.0, *REVOKE_RETRY_DELAYS):
                if delay:
                    await asyncio.sleep(delay)
                rsp = await self._biz("CID_EXT_TICKET_REVOKE_REQ", session.user_id, req)
                if not first.done():
                    first.set_result(rsp)
                if rsp is not None:
                    return

        task = asyncio.get_running_loop().create_task(send(), name="ticket-revoke")
        self._revocations.add(task)
        task.add_done_callback(self._revocations.discard)
        return first

    def end_uploads(self, session: Session) -> asyncio.Task[None] | None:
        """Record that the session ended, so the blob store refuses its upload tokens from now on."""
        storage = self.svc.storage
        if storage is None or session.uploads_ended:
            return None
        session.uploads_ended = True

        async def record() -> None:
            try:
                await revoke_session(storage, session.user_id, session.upload_session)
            except Exception as exc:  # storage down: the token still expires with its TTL
                self.svc.log.warning("upload session of %d not recorded as ended: %r", session.user_id, exc)

        task = asyncio.get_running_loop().create_task(record(), name="upload-revoke")
        self._revocations.add(task)
        task.add_done_callback(self._revocations.discard)
        return task

    async def stop_revocations(self, timeout: float) -> None:
        """At stop: let revocations in flight finish for up to `timeout`, then give up their retries."""
        if self._revocations:
            await asyncio.wait(list(self._revocations), timeout=timeout)
        for task in list(self._revocations):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _open(self, user_id: int, client_type: int) -> Session:
        """A new session; same-class sessions of the user here and elsewhere are kicked."""
        svc = self.svc
        for other in list(svc.sessions.of(user_id)):
            if ((other.client_type ^ client_type) >> 4) == 0:
                svc.kick(other, self.enums.KickReasonType.KICK_REASON_DUPLICATE_USER)
        session = svc.sessions.create(user_id, client_type)
        svc.g_sessions.set(len(svc.sessions))
        kick = self.proto.new(
            "CID_OTHER_SERVER_KICK_USER",
            user_id=user_id,
            client_type=client_type,
            reason=self.enums.KickReasonType.KICK_REASON_DUPLICATE_USER,
        )
        svc.routers.relay(self.proto.cid("CID_OTHER_SERVER_KICK_USER"), kick.SerializeToString(), [user_id])
        svc.status_update(session, True)
        return session

    def _welcome(self, session: Session, user_info: Any, ticket: bytes, expires: int) -> Response:
        """The login answer."""
        return ok(
            token=session.token,
            user_id=session.user_id,
            user=MessageToDict(user_info, preserving_proto_field_name=True),
            upload_token=issue_upload_token(self.svc.blob_secret, session.user_id, session.upload_session),
            upload_url=self._blob_url(),
            poll_timeout=25,
            resume_ticket=base64.urlsafe_b64encode(ticket).decode().rstrip("=") if ticket else "",
            ticket_expires=expires,
        )

    def _blob_url(self) -> str:
        """Where to POST uploads with the upload token (the blob store), "" if none runs."""
        eps = self.svc.ctx.discovery.endpoints("storage", "http")
        return f"http://{eps[0].host}:{eps[0].port}/" if eps else ""

    async def logout(self, _r: Request, _d: dict[str, Any], session: Session | None) -> Response:
        """End the session; its resumption ticket is dead once this answers."""
        assert session is not None
        revoked = self.revoke_ticket(session)
        uploads = self.end_uploads(session)  # recorded before the session ends: no upload slips between
        if uploads is not None:
            await asyncio.shield(uploads)
        self.svc.retire(session)
        if revoked is not None:
            await revoked
        return ok()

    async def send(self, _r: Request, doc: dict[str, Any], session: Session | None) -> Response:
        """Store a message through biz (store-then-ack) and deliver it everywhere."""
        assert session is not None
        if not session.sends.take():
            return error(RATE_LIMITED, "more than 20 messages per second", 429)
        to = _uint(doc.get("to"), "to")
        group = doc.get("group", False)
        if not isinstance(group, bool):
            raise ValueError("group must be true or false")
        client_msg_id = _uint(doc.get("client_msg_id", 0), "client_msg_id", positive=False)
        burn = doc.get("burn", False)
        if not isinstance(burn, bool):
            raise ValueError("burn must be true or false")
        if burn and group:
            raise ValueError("burn-after-reading is for one-to-one messages")
        if "file" in doc:
            text, refused = await file_text(self.svc, doc["file"])
            if refused is not None:
                return refused
            data = text.encode("utf-8")
        elif isinstance(doc.get("text"), str):
            try:
                data = doc["text"].encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("text is not valid Unicode (a lone surrogate)") from None
        elif isinstance(doc.get("data_b64"), str):
            try:
                data = base64.b64decode(doc["data_b64"], validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("data_b64 is not base64") from None
        else:
            raise ValueError("text (or data_b64) is required")
        if not data:
            raise ValueError("the message is empty")
        if len(data) > MAX_MSG_BYTES:
            return error(TOO_LARGE, f"message of {len(data)} bytes exceeds {MAX_MSG_BYTES}", 413)
        user = session.user_id
        if not group and to == user:
            raise ValueError("a message to oneself")
        link = self.svc.biz_link()
        if link is None:
            return error(UNAVAILABLE, "biz is unavailable", 503)
        kinds = self.enums.MsgType
        msg: Any = self.proto.new(
            "CID_MSG_DATA",
            from_user_id=user,
            to_session_id=to,
            msg_id=client_msg_id,
            create_time=0,
            msg_type=kinds.MSG_TYPE_GROUP_TEXT if group else kinds.MSG_TYPE_SINGLE_TEXT,
            msg_data=data,
        )
        cached = self.svc.group_members.get(to) if group else None
        # Without a client msg id the attempt carries a token biz deduplicates by, so a store resent after
        # the link to biz dropped is stored once.
        attempt = StoreAttempt(msg, self.tokens, group=group, version=cached[0] if cached else 0)
        cid = self.proto.cid("CID_EXT_MSG_BURN" if burn else "CID_MSG_DATA")
        answer = await self._store(cid, user, attempt)
        if answer is None:
            return error(UNAVAILABLE, "biz did not answer", 503)
        stored, result, version, members = answer.message, answer.result, answer.version, answer.members
        if stored.msg_id == 0 and result == ResultCode.NO_DB_SERVER:  # not stored: the client may retry
            return error(UNAVAILABLE, "the database is unavailable; the message was not stored", 503)
        if stored.msg_id == 0:
            return error(
                result or ResultCode.INTERNAL,
                "the message was refused",
                403 if result == ACCESS_DENIED else 400,
            )
        stored.ClearField("attach_data")
        if group:
            if members is not None:
                self.svc.group_members[to] = (version, members)
            targets = self.svc.group_members.get(to, (0, [user]))[1]
        else:
            targets = [user, to]
        session.first_delivery(chat_key(user, stored, self.enums))
        self.svc.deliver_chat(stored, targets, skip=session, burn=burn)
        self.svc.routers.relay(cid, stored.SerializeToString(), targets)
        return ok(
            msg_id=stored.msg_id,
            session_type=chat_key(user, stored, self.enums)[0],
            create_time=stored.create_time,
        )

    async def poll(self, request: Request, _d: dict[str, Any], session: Session | None) -> Response:
        """Wait for events after `since` (up to `timeout` seconds)."""
        assert session is not None
        try:
            since = int(request.query.get("since", "0"))
            timeout = float(request.query.get("timeout", "25"))
        except ValueError:
            raise ValueError("since and timeout must be numbers") from None
        if since < 0 or not 0 <= timeout <= 3600:
            raise ValueError("since and timeout must not be negative")
        events, gap = await session.wait(since, min(timeout, self.svc.poll_timeout_max))
        last = events[-1]["seq"] if events else max(since, 0)
        return ok(events=events, last_seq=last, gap=gap)

    async def ack(self, _r: Request, doc: dict[str, Any], session: Session | None) -> Response:
        """Drop delivered events."""
        assert session is not None
        session.ack(_uint(doc.get("seq"), "seq", positive=False))
        return ok()

    async def read(self, _r: Request, doc: dict[str, Any], session: Session | None) -> Response:
        """Clear unread through biz; tell the user's other devices; burned messages leave every device."""
        assert session is not None
        session_id = _uint(doc.get("session_id"), "session_id")
        session_type = arg_session_type(doc, self.enums)
        msg_id = _uint(doc.get("msg_id", 0), "msg_id", positive=False)
        user = session.user_id
        req = self.proto.new(
            "CID_MSG_READ_ACK", user_id=user, session_id=session_id, msg_id=msg_id, session_type=session_type
        )
        rsp = await self._biz("CID_MSG_READ_ACK", user, req)
        if rsp is None:
            return error(UNAVAILABLE, "biz did not answer", 503)
        # biz answers an accepted read with the ids it burned (an IMMsgGetByMsgIdRsp), a refused one (no such
        # session, not a member) with the read ack itself.
        if not isinstance(rsp, self.proto.info("CID_MSG_GET_BY_MSG_ID_RES").message_class):
            return error(ACCESS_DENIED, "read refused: no such session, or not a member of it", 403)
        note = self.proto.new(
            "CID_MSG_READ_NOTIFY",
            user_id=user,
            session_id=session_id,
            msg_id=msg_id,
            session_type=session_type,
        )
        self.svc.notify("CID_MSG_READ_NOTIFY", note, [user], skip=session)
        single = int(self.enums.SessionType.SESSION_TYPE_SINGLE)
        if session_type == single:
            # A read receipt for the peer's sessions on this gateway (docs/web-api.md: `receipt`).
            receipt = {
                "type": "receipt",
                "reader": user,
                "session_id": user,
                "session_type": single,
                "msg_id": msg_id,
            }
            self.svc.push_event([session_id], receipt)
        burned = [m.msg_id for m in cast(Any, rsp).msg_list] if session_type == single else []
        for mid in burned:
            # As msg does for TCP readers: the reader's and the sender's devices all drop the message.
            gone = self.proto.new(
                "CID_EXT_MSG_BURNED_NOTIFY",
                from_user_id=session_id,
                to_session_id=user,
                session_type=single,
                msg_id=mid,
                reader_id=user,
                burn_time=int(time.time()),
            )
            self.svc.notify("CID_EXT_MSG_BURNED_NOTIFY", gone, [user, session_id])
        return ok(burned=burned)

    async def unread(self, _r: Request, _d: dict[str, Any], session: Session | None) -> Response:
        """Unread counts per session."""
        assert session is not None
        req = self.proto.new("CID_MSG_UNREAD_CNT_REQUEST", user_id=session.user_id)
        rsp = await self._biz("CID_MSG_UNREAD_CNT_REQUEST", session.user_id, req)
        if rsp is None:
            return error(UNAVAILABLE, "biz did not answer", 503)
        doc = MessageToDict(rsp, preserving_proto_field_name=True)
        return ok(total=rsp.total_cnt, sessions=doc.get("unreadinfo_list", []))


def _client_type(doc: dict[str, Any], enums: type[Enums]) -> int:
    """The login's `client_type` (default Windows PC), one the spec's ClientType knows."""
    known = [int(t) for t in enums.ClientType]
    client_type = doc.get("client_type", int(enums.ClientType.CLIENT_TYPE_WINDOWS))
    if type(client_type) is not int or client_type not in known:
        raise ValueError(f"client_type must be one of {tuple(known)}")
    return client_type
