"""Runtime dispatch layer: command id -> service handler, with the input/unpack/pack stages around each call.

A service object has `__mapping__: dict[int, str]` (command id -> method name) and methods
`async def on_x(self, ctx: Context, msg) -> Message | None` (or a plain `def` for a hot command that never
suspends); a returned message is sent as the command's `reply` with the request's seq. Handlers that finish
without suspending run inline, without an asyncio Task.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable
from typing import Any

from google.protobuf.message import Message

from runtime.connection import Kind
from runtime.errors import BodyError, StageError
from runtime.framing import FLAG_COMPRESSED, Frame
from runtime.refusal import error_reply
from runtime.registry import CommandInfo, Registry
from runtime.stages import CommandStages, build_stages
from runtime.stages.crypto import SessionCipher, SessionKeys
from runtime.stages.input import missing_fields
from runtime.stages.transport import DedupWindow
from runtime.stages.unpack import InflateBudget, ReplayWindow, text_check
from runtime.transport import Link

log = logging.getLogger("runtime.dispatch")

Handler = Callable[["Context", Any], Awaitable[Message | None] | Message | None]

EXTENSION_SERVICE = "EXT"  # the registry service whose commands only opted-in clients receive
EXT_OPT_IN = "ext"  # link data key: the client sent an extension command


def extension_capable(link: Link) -> bool:
    """Whether `link` may receive extension commands: every server link does; a client connection once the
    client sent one itself (an original TeamTalk client never does, and must never receive one)."""
    if link.kind is not Kind.CLIENT_SESSION:
        return True
    data = link.data
    return bool(data and data.get(EXT_OPT_IN))


_epochs = itertools.count(1)
_EPOCH = "dedup_epoch"
_INFLATE = "inflate_budget"


def _connection_epoch(link: Link) -> int:
    """A number that names this connection for as long as the process runs (an address, a port or an object
    id can be reused by a later connection; a retransmit never crosses connections)."""
    data = link.extras()
    epoch: int | None = data.get(_EPOCH)
    if epoch is None:
        epoch = data[_EPOCH] = next(_epochs)
    return epoch


class Route:
    """Everything the hot path needs for one command, computed once."""

    __slots__ = (
        "check_text",
        "client_ok",
        "dedup",
        "dedup_per_connection",
        "fast_in",
        "fast_reply",
        "handler",
        "info",
        "is_async",
        "max_body",
        "name",
        "parse",
        "reply",
        "reply_sealed",
        "stages",
        "verify",
    )

    def __init__(
        self,
        info: CommandInfo,
        handler: Handler,
        stages: CommandStages,
        reply: tuple[CommandInfo, CommandStages] | None,
    ) -> None:
        self.info = info
        self.name = info.name
        self.handler = handler
        # Handlers are `async def` as the generated bases declare them; a service may implement a hot command
        # with a plain function (it must not block), which the dispatcher then calls without a coroutine.
        self.is_async = inspect.iscoroutinefunction(handler)
        self.stages = stages
        self.reply = reply
        # No input checks, no decryption: parse the body directly.
        self.fast_in = not stages.input.active and not stages.unpack.require_encryption
        # Required fields are checked at parse time unless the unpack policy turns `verify` off (then the
        # input stage checks them, and refuses by its own rules).
        self.verify = self.fast_in or stages.unpack.verify
        self.max_body = stages.input.max_bytes if stages.input.max_bytes is not None else 1 << 62
        self.dedup = DedupWindow(stages.transport.dedup_window) if stages.transport.dedup else None
        self.dedup_per_connection = stages.transport.dedup_per_connection
        self.client_ok = info.from_client
        self.parse = info.message_class.FromString
        self.check_text = text_check(info.message_class.DESCRIPTOR)
        # (message class, service id, command id) of a plain-protobuf reply: sent without the pack stage.
        # `session_aead` replies take it too while a connection has no session keys (checked per reply).
        self.fast_reply: tuple[type[Message], int, int] | None = None
        self.reply_sealed = False
        if reply is not None and not reply[1].pack.compress and reply[1].pack.codec is None:
            self.fast_reply = (reply[0].message_class, reply[0].service_id, reply[0].command_id)
            self.reply_sealed = reply[1].pack.encrypt


class Context:
    """What a handler sees of the request: its connection, seq, command, and helpers to answer or push."""

    __slots__ = ("close_reason", "dedup_key", "dedup_slot", "dispatcher", "info", "link", "seq")

    def __init__(self, dispatcher: Dispatcher, link: Link, info: CommandInfo, seq: int) -> None:
        self.dispatcher = dispatcher
        self.link = link
        self.info = info
        self.seq = seq
        self.close_reason: str | None = None
        # The request's key in its command's dedup window (None: not deduplicated, or forgotten).
        self.dedup_key: tuple[int, ...] | None = None
        self.dedup_slot: _Waiting | None = None

    @property
    def connection(self) -> Link:
        return self.link

    @property
    def peer(self) -> str:
        return self.link.peer

    @property
    def user_id(self) -> int:
        conn = self.link.conn
        return conn.user_id if conn is not None else 0

    @property
    def client_type(self) -> int:
        conn = self.link.conn
        return conn.client_type if conn is not None else 0

    @property
    def authenticated(self) -> bool:
        conn = self.link.conn
        return conn is not None and conn.user_id != 0 and conn.is_open

    def authenticate(self, user_id: int, client_type: int) -> None:
        """Complete login on this connection: binds the user and lifts the auth gate."""
        assert self.link.conn is not None
        self.link.conn.authenticate(user_id, client_type)
        if self.link.data:
            # The rate buckets of the login exchange: an idle logged-in connection need not keep them.
            self.link.data.pop("buckets", None)

    def enable_encryption(self, keys: SessionKeys, algorithm: str = "aes-256-gcm") -> None:
        """Install the session keys agreed at login; `session_aead` commands are sealed from now on."""
        data = self.link.extras()
        data["cipher"] = SessionCipher(keys, algorithm)
        data["replay"] = ReplayWindow()

    def reply(self, msg: Message, *, remember: bool = True) -> bool:
        """Send `msg` as this command's reply with the request's seq (same as returning it).

        For a deduplicated command the reply is remembered in the dedup window (a later retransmit of the
        request is answered with it, and one that arrived while this request was pending gets it now);
        `remember=False` sends a provisional answer instead (e.g. "not stored, try again") and forgets the
        request, so a retransmit is processed afresh."""
        body = None
        if self.dedup_key is not None:
            if remember:
                body = self.dispatcher.remember_reply(self, msg)
            else:
                self.dispatcher.forget_request(self, msg)
                self.dedup_key = None
        return self.dispatcher.send(self.link, self.info.reply or self.info.name, msg, self.seq, body)

    def forget(self) -> None:
        """Drop this request from its dedup window: a retransmit will be processed again, not answered from
        the window. Requests that joined it while it was pending are answered by the next reply sent."""
        if self.dedup_key is not None:
            self.dispatcher.forget_request(self)
            self.dedup_key = None

    def send(self, command: str, msg: Message, seq: int = 0) -> bool:
        """Send `command` on this connection."""
        return self.dispatcher.send(self.link, command, msg, seq)

    def push(self, link: Link, command: str, msg: Message) -> bool:
        """Send a server-initiated `command` (seq 0) on another connection, e.g. to fan out a message."""
        return self.dispatcher.send(link, command, msg, 0)

    def close(self, reason: str) -> None:
        """Close this connection once the handler has finished and its reply is written (e.g. a failed login
        or a logout: reply, then close)."""
        self.close_reason = reason


class _Waiting:
    """A dedup window entry: the request's reply once it is known (`result`), and until then the duplicates
    that arrived meanwhile (`waiters`, bounded), which get that reply when it is sent. The entry is stored
    once; the reply is filled in place."""

    __slots__ = ("result", "waiters")
    LIMIT = 8

    def __init__(self) -> None:
        self.result: Message | None = None
        self.waiters: list[tuple[Link, int]] | None = None

    def add(self, link: Link, seq: int) -> None:
        waiters = self.waiters
        if waiters is None:
            self.waiters = [(link, seq)]
        elif len(waiters) < self.LIMIT:
            waiters.append((link, seq))


class _Resume:
    """Continue a coroutine that already ran up to its first suspension (a hand-rolled eager task start)."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self.coro
        yielded = self.first
        while True:
            try:
                value = yield yielded
            except BaseException as exc:  # cancellation and errors go into the handler, as with a plain await
                try:
                    yielded = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    yielded = coro.send(value)
                except StopIteration as stop:
                    return stop.value


class Dispatcher:
    """Routes the frames of every connection of a server to one service object's handlers."""

    def __init__(
        self,
        registry: Registry,
        service: Any,
        *,
        stages: dict[int, CommandStages] | None = None,
        legacy_key: bytes | None = None,
        close_on_handler_error: bool = False,
        extension_service: str | None = EXTENSION_SERVICE,
    ) -> None:
        self.registry = registry
        self.service = service
        self.stages = stages if stages is not None else build_stages(registry, legacy_key=legacy_key)
        self.close_on_handler_error = close_on_handler_error
        self._tasks: set[asyncio.Task[None]] = set()
        self._outbound: dict[str, tuple[CommandInfo, CommandStages]] = {
            info.name: (info, self.stages[info.command_id]) for info in registry
        }
        # Extension commands (docs/teamtalk-extensions.md): pushed to a client connection only once it opted
        # in by sending one of them (the handshake, or any other); an original TeamTalk client never gets one.
        ext_sid = registry.services.get(extension_service) if extension_service else None
        self.extension_commands: frozenset[int] = frozenset(
            info.command_id for info in registry if ext_sid is not None and info.service_id == ext_sid
        )
        self.routes: dict[int, Route] = {}
        mapping: dict[int, str] = getattr(service, "__mapping__", {})
        for cid, method in mapping.items():
            info = registry.by_id(cid)
            reply = self._outbound.get(info.reply) if info.reply else None
            if info.reply and reply is None:
                raise ValueError(f"{info.name}: reply command {info.reply!r} is not in the registry")
            self.routes[cid] = Route(info, getattr(service, method), self.stages[cid], reply)
        self._on_connect = getattr(service, "on_connect", None)
        self._on_disconnect = getattr(service, "on_disconnect", None)
        self._on_rejected = getattr(service, "on_rejected", None)

    def handler_factory(self) -> Dispatcher:
        """For `runtime.transport.serve`: the dispatcher keeps no per-connection state, so it is shared."""
        return self

    # -- FrameHandler ----------------------------------------------------------------------------------------
    def connection_made(self, link: Link) -> None:
        if self._on_connect is not None:
            self._guard(self._on_connect, link)

    def connection_lost(self, link: Link, reason: str) -> None:
        log.debug("%r closed: %s", link, reason)
        if self._on_disconnect is not None:
            self._guard(self._on_disconnect, link, reason)

    def frames_received(self, link: Link, frames: Iterable[tuple[Frame, CommandInfo]]) -> None:
        if link.kind is Kind.SERVER_LINK:
            from runtime.link_dispatch import frames_received  # imports this module

            frames_received(self, link, frames)
            return
        routes = self.routes
        conn = link.conn
        assert conn is not None
        from_client = link.kind is Kind.CLIENT_SESSION
        ext = self.extension_commands
        for frame, info in frames:
            if from_client and frame.command_id in ext:
                link.extras()[EXT_OPT_IN] = True
            route = routes.get(frame.command_id)
            if route is None or (from_client and not route.client_ok):
                if conn.note_unknown(f"command {info.name} not handled by this service"):
                    link.close(conn.close_reason or "too many unknown commands")
                    return
                continue
            if frame.service_id != info.service_id:
                log.warning(
                    "%r: %s arrived with service id %d, expected %d (dispatching on command id)",
                    link,
                    info.name,
                    frame.service_id,
                    info.service_id,
                )
            self._dispatch(link, frame, route)
            if not conn.is_open:
                return

    # -- the hot path ----------------------------------------------------------------------------------------
    def _dispatch(self, link: Link, frame: Frame, route: Route) -> None:
        info = route.info
        try:
            data = link.data
            if not frame.flag and (route.fast_in or not data or "cipher" not in data):
                # Plain protobuf (no stage flag, no session keys): size limit, parse, required fields.
                body = frame.body
                if len(body) > route.max_body:
                    route.stages.input.check_size(len(body))
                msg = route.parse(body)  # type: ignore[arg-type]
                if route.verify and not msg.IsInitialized():
                    raise BodyError(f"{info.name}: required fields missing: {', '.join(missing_fields(msg))}")
                if route.check_text is not None and (bad := route.check_text(msg)) is not None:
                    raise BodyError(f"{info.name}: field {bad} is not valid UTF-8 text")
            else:
                msg = self._unpack(link, frame, route)
        except BodyError as exc:
            log.warning("closing %r: %s on %s (seq %d)", link, exc, info.name, frame.seq)
            link.close(f"bad body: {exc}")
            return
        except StageError as exc:
            self._refused(link, frame, route, None, exc)
            return
        except Exception as exc:  # protobuf raises a few undocumented types on garbage
            log.warning("closing %r: undecodable %s body (seq %d): %s", link, info.name, frame.seq, exc)
            link.close(f"undecodable body: {exc}")
            return
        conn = link.conn
        user_id = conn.user_id if conn is not None else 0
        if not route.fast_in:
            try:
                stage = route.stages.input
                if not route.verify:
                    stage.check_required(msg)
                if stage.rate is not None:
                    stage.check_rate(link.extras().setdefault("buckets", {}), frame.command_id, link.now())
                stage.check_message(msg, user_id)
            except StageError as exc:
                self._refused(link, frame, route, msg, exc)
                return
        ctx = Context(self, link, info, frame.seq)
        key = None
        if route.dedup is not None:
            key = self._dedup_key(frame, msg)
            if route.dedup_per_connection:
                key = (_connection_epoch(link), *key)
            now = link.now()
            cached = route.dedup.get(user_id, key, now)
            if type(cached) is bytes:
                log.info(
                    "%r: duplicate %s (seq %d) answered from the dedup window", link, info.name, frame.seq
                )
                self._send_reply_body(ctx, route, cached)
                return
            if cached is not None:
                if cached.result is None:
                    # The first copy is still being processed (e.g. its reply comes from a callback): this
                    # copy gets the same reply when it is sent.
                    log.info(
                        "%r: duplicate %s (seq %d) waits for the first copy's reply",
                        link,
                        info.name,
                        frame.seq,
                    )
                    cached.add(link, frame.seq)
                else:
                    log.info(
                        "%r: duplicate %s (seq %d) answered from the dedup window", link, info.name, frame.seq
                    )
                    self._send_reply(ctx, route, cached.result)
                return
            slot = _Waiting()
            route.dedup.remember(user_id, key, slot, now)
            ctx.dedup_key = key
            ctx.dedup_slot = slot
        self._run(ctx, route, msg, key)

    def _unpack(self, link: Link, frame: Frame, route: Route) -> Message:
        route.stages.input.check_size(len(frame.body))
        data = link.data
        cipher = data.get("cipher") if data else None
        window = data.get("replay") if data else None
        budget = None
        if frame.flag & FLAG_COMPRESSED:
            data = link.extras()
            budget = data.get(_INFLATE)
            if budget is None:
                budget = data[_INFLATE] = InflateBudget(link.now)
        return route.stages.unpack.unpack(frame, route.info.message_class, cipher, window, budget)

    def _refused(self, link: Link, frame: Frame, route: Route, msg: Message | None, exc: StageError) -> None:
        """A refused request always gets an answer: `reject` an error reply where the command's reply can
        carry one (the service's `on_rejected`, else `runtime.refusal.error_reply`), otherwise the connection
        is closed with a logged reason; `close` closes. Only `drop`, a policy the spec chooses explicitly
        (rate limits by default), leaves it unanswered, and says so in the log."""
        if exc.action == "close":
            log.warning("closing %r: %s refused (%s): %s", link, route.name, exc.rule, exc)
            link.close(f"{route.name} refused: {exc}")
            return
        if exc.action != "reject":
            log.info(
                "%r: %s dropped unanswered (%s, on the spec's drop policy): %s",
                link,
                route.name,
                exc.rule,
                exc,
            )
            return
        answered: object = None
        if self._on_rejected is not None:
            log.info("%r: %s rejected (%s): %s", link, route.name, exc.rule, exc)
            try:
                answered = self._on_rejected(Context(self, link, route.info, frame.seq), msg, exc)
            except Exception:
                log.exception("service hook on_rejected failed")
                answered = False
        else:
            reply = error_reply(self.registry, route.info, msg, exc)
            if reply is not None:
                log.info("%r: %s rejected (%s), answered with an error: %s", link, route.name, exc.rule, exc)
                self.send(link, route.info.reply or route.name, reply, frame.seq)
                return
            answered = False
        if answered is False:
            log.warning(
                "closing %r: %s rejected (%s) and its reply cannot carry an error: %s",
                link,
                route.name,
                exc.rule,
                exc,
            )
            link.close(f"{route.name} refused ({exc.rule}): {exc}")

    @staticmethod
    def _dedup_key(frame: Frame, msg: Message) -> tuple[int, ...]:
        # A retransmit repeats the seq and the content. Sealed bodies differ per attempt (fresh nonce), so for
        # those the key hashes the plaintext. The key is computed once and handed to `_finish`.
        if not frame.flag:
            return frame.command_id, frame.seq, hash(bytes(frame.body))
        return frame.command_id, frame.seq, hash(msg.SerializePartialToString())

    def _run(self, ctx: Context, route: Route, msg: Message, key: tuple[int, ...] | None) -> None:
        if not route.is_async:  # a plain function: no coroutine to make and step
            try:
                result = route.handler(ctx, msg)
            except Exception as exc:
                self._handler_failed(ctx, route, exc)
                return
            self._answer(ctx, route, result, key)
            return
        try:
            coro: Any = route.handler(ctx, msg)
            first = coro.send(None)
        except StopIteration as stop:
            self._answer(ctx, route, stop.value, key)
            return
        except Exception as exc:
            self._handler_failed(ctx, route, exc)
            return
        task = asyncio.get_running_loop().create_task(self._resume(ctx, route, coro, first, key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _answer(self, ctx: Context, route: Route, result: Any, key: tuple[int, ...] | None) -> None:
        """A handler finished without suspending: send its reply (if any) now."""
        if result is None and ctx.close_reason is None and ctx.dedup_key is None:
            return  # nothing to send, remember or close (e.g. a client's IMMsgDataAck)
        fast = route.fast_reply
        link = ctx.link
        if (
            fast is not None
            and type(result) is fast[0]
            and ctx.close_reason is None
            and not (route.reply_sealed and link.data and link.data.get("cipher"))
        ):
            # The common case, kept to one serialize and one buffer append.
            try:
                body = result.SerializeToString()
            except Exception as exc:  # e.g. required reply fields missing
                self._handler_failed(ctx, route, exc)
                return
            if ctx.dedup_key is not None:
                self.remember_reply(ctx, result, body)
            link.send_frame(fast[1], fast[2], ctx.seq, body)
            return
        self._finish(ctx, route, result, key)

    async def _resume(
        self, ctx: Context, route: Route, coro: Any, first: Any, key: tuple[int, ...] | None
    ) -> None:
        try:
            result = await _Resume(coro, first)
        except Exception as exc:
            self._handler_failed(ctx, route, exc)
            return
        self._finish(ctx, route, result, key)

    def _finish(self, ctx: Context, route: Route, result: Any, key: tuple[int, ...] | None) -> None:
        try:
            self._complete(ctx, route, result, key)
        except Exception as exc:  # e.g. a reply missing required fields cannot be serialized
            self._handler_failed(ctx, route, exc)
        if ctx.close_reason is not None:
            ctx.link.close(ctx.close_reason)

    def _complete(self, ctx: Context, route: Route, result: Any, key: tuple[int, ...] | None) -> None:
        if ctx.dedup_key is not None and result is not None:
            self.remember_reply(ctx, result)
        if result is not None:
            self._send_reply(ctx, route, result)

    # -- the dedup window ------------------------------------------------------------------------------------
    def remember_reply(self, ctx: Context, result: Message, body: bytes | None = None) -> bytes | None:
        """Record `result` as the reply to `ctx`'s request in its dedup window (whenever it is sent: returned
        or through `ctx.reply` later) and answer the duplicates that arrived while it was pending.

        The window keeps the reply serialized (`body`, made here if not given, and returned): bytes are not
        tracked by the cycle collector, where a message object and its slot would be, for the whole window."""
        slot = ctx.dedup_slot
        key = ctx.dedup_key
        if slot is None or key is None:
            return body
        slot.result = result
        if body is None:
            try:
                body = result.SerializeToString()
            except Exception:  # e.g. required fields missing: the send reports it; keep the message
                body = None
        route = self.routes.get(ctx.info.command_id)
        if body is not None and route is not None and route.dedup is not None:
            route.dedup.replace(ctx.user_id, key, slot, body)
        if slot.waiters:
            self._answer_waiters(ctx, slot, result)
        return body

    def forget_request(self, ctx: Context, provisional: Message | None = None) -> None:
        """Drop `ctx`'s request from its dedup window, so a retransmit is processed afresh. Duplicates that
        were waiting for its reply get `provisional` (the same answer the first copy got), if given."""
        route = self.routes.get(ctx.info.command_id)
        key = ctx.dedup_key
        slot = ctx.dedup_slot
        if route is None or route.dedup is None or key is None:
            return
        route.dedup.forget(ctx.user_id, key)
        ctx.dedup_slot = None
        if provisional is not None and slot is not None and slot.waiters:
            self._answer_waiters(ctx, slot, provisional)

    def _answer_waiters(self, ctx: Context, slot: _Waiting, result: Message) -> None:
        waiters, slot.waiters = slot.waiters, None
        route = self.routes.get(ctx.info.command_id)
        if not waiters or route is None or route.reply is None:
            return
        info, stages = route.reply
        if type(result) is not info.message_class:
            return
        for link, seq in waiters:
            conn = link.conn
            if conn is not None and conn.is_open:
                self._send_packed(link, info, stages, result, seq)

    def _send_reply_body(self, ctx: Context, route: Route, body: bytes) -> None:
        """Send a remembered (serialized) reply again, through the pack stage where it transforms it."""
        if route.reply is None:
            return
        info, stages = route.reply
        link = ctx.link
        if stages.pack.trivial or (
            stages.pack.plain_unless_sealed and not (link.data and link.data.get("cipher"))
        ):
            link.send_frame(info.service_id, info.command_id, ctx.seq, body)
        else:
            self._send_packed(link, info, stages, info.message_class.FromString(body), ctx.seq)

    def _send_reply(self, ctx: Context, route: Route, result: Any) -> None:
        if route.reply is None:
            log.error("%s returned a %s but the command has no reply", route.name, type(result).__name__)
            return
        info, stages = route.reply
        if type(result) is not info.message_class:
            log.error(
                "%s returned a %s; its reply %s carries %s",
                route.name,
                type(result).__name__,
                info.name,
                info.message_class.__name__,
            )
            return
        self._send_packed(ctx.link, info, stages, result, ctx.seq)

    def _handler_failed(self, ctx: Context, route: Route, exc: BaseException) -> None:
        log.error("handler %s failed for %r (seq %d): %r", route.name, ctx.link, ctx.seq, exc, exc_info=exc)
        if self.close_on_handler_error:
            ctx.link.close(f"handler {route.name} failed")
        elif ctx.close_reason is not None:
            ctx.link.close(ctx.close_reason)

    # -- sending ---------------------------------------------------------------------------------------------
    def send(self, link: Link, command: str, msg: Message, seq: int = 0, body: bytes | None = None) -> bool:
        """Pack and queue `command` on `link` (seq 0 for pushes).

        `body`, if given, is `msg` already serialized (e.g. a relayed message as it arrived): it is sent as it
        is whenever the pack stage would produce exactly those bytes for this connection.

        False when nothing was queued: the connection is closing, or `command` is an extension command and
        the client never opted in to extensions.
        """
        try:
            info, stages = self._outbound[command]
        except KeyError:
            raise ValueError(f"unknown command {command!r}") from None
        if info.command_id in self.extension_commands and not extension_capable(link):
            log.debug("%r: %s not sent: the client never opted in to extensions", link, command)
            return False
        if body is not None and (
            stages.pack.trivial
            or (stages.pack.plain_unless_sealed and not (link.data and link.data.get("cipher")))
        ):
            return link.send_frame(info.service_id, info.command_id, seq, body)
        return self._send_packed(link, info, stages, msg, seq)

    @staticmethod
    def _send_packed(link: Link, info: CommandInfo, stages: CommandStages, msg: Message, seq: int) -> bool:
        if stages.pack.trivial:
            return link.send_frame(info.service_id, info.command_id, seq, msg.SerializeToString())
        cipher = link.data.get("cipher") if link.data else None
        flag, body = stages.pack.pack(msg, info.service_id, info.command_id, seq, cipher)
        return link.send_frame(info.service_id, info.command_id, seq, body, flag=flag)

    def _guard(self, hook: Callable[..., Any], *args: Any) -> None:
        try:
            result = hook(*args)
            if asyncio.iscoroutine(result):
                task = asyncio.get_running_loop().create_task(result)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except Exception:
            log.exception("service hook %s failed", getattr(hook, "__name__", hook))

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait for handlers still running (on shutdown)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
