"""`Dispatcher`: routes the frames of every connection of a server to one service object's handlers, through
the input/unpack stages on the way in and the reply cache and pack stage on the way out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf.message import Message

from runtime.connection import Kind
from runtime.dispatch import reply_cache
from runtime.dispatch.context import Context
from runtime.dispatch.replies import body_as_is, send_packed, send_reply, send_reply_body
from runtime.dispatch.reply_cache import Waiting, connection_epoch, dedup_key
from runtime.dispatch.routes import EXT_OPT_IN, EXTENSION_SERVICE, Route, extension_capable
from runtime.dispatch.stepping import Resume
from runtime.errors import BodyError, StageError
from runtime.framing import FLAG_COMPRESSED, Frame
from runtime.refusal import error_reply
from runtime.registry import CommandInfo, Registry
from runtime.stages import CommandStages, build_stages
from runtime.stages.input import missing_fields
from runtime.stages.unpack import InflateBudget
from runtime.transport import Link

log = logging.getLogger("runtime.dispatch")

_INFLATE = "inflate_budget"
_DROPS = "drop_log"
DROP_LOG_EVERY = 10.0  # s: a connection's unanswered drops of one command and rule log once per this


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
        from runtime.link_dispatch import frames_received  # imports this module

        self._link_frames = frames_received  # frames of internal links
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
            self._link_frames(self, link, frames)  # runtime.link_dispatch
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
        now = -1.0  # the loop's time, read once for the rate check and the dedup window
        if not route.fast_in:
            try:
                stage = route.stages.input
                if not route.verify:
                    stage.check_required(msg)
                if stage.rate is not None:
                    now = link.now()
                    buckets = (data or link.extras()).setdefault("buckets", {})  # `data`: link.data, above
                    stage.check_rate(buckets, frame.command_id, now)
                stage.check_message(msg, user_id)
            except StageError as exc:
                self._refused(link, frame, route, msg, exc)
                return
        ctx = Context(self, link, info, frame.seq)
        key = None
        if route.dedup is not None:
            key = dedup_key(frame, msg)
            if route.dedup_per_connection:
                key = (connection_epoch(link), *key)
            if now < 0:
                now = link.now()
            cached = route.dedup.get(user_id, key, now)
            if type(cached) is bytes:
                log.info(
                    "%r: duplicate %s (seq %d) answered from the dedup window", link, info.name, frame.seq
                )
                send_reply_body(ctx, route, cached)
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
                    send_reply(ctx, route, cached.result)
                return
            slot = Waiting()
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

    @staticmethod
    def _log_drop(link: Link, route: Route, exc: StageError) -> None:
        """Say that a request was dropped unanswered, at most once per `DROP_LOG_EVERY` seconds per
        connection, command and rule, with the count of those not logged since: a flooding client must not
        turn the log into the most expensive part of refusing it."""
        drops: dict[tuple[str, str], list[float]] = link.extras().setdefault(_DROPS, {})
        now = link.now()
        key = (route.name, exc.rule)
        entry = drops.get(key)
        if entry is not None and now - entry[0] < DROP_LOG_EVERY:
            entry[1] += 1
            return
        unlogged = int(entry[1]) if entry is not None else 0
        drops[key] = [now, 0]  # when last logged, how many since
        log.info(
            "%r: %s dropped unanswered (%s, on the spec's drop policy): %s%s",
            link,
            route.name,
            exc.rule,
            exc,
            f" ({unlogged} more since the last such line)" if unlogged else "",
        )

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
            self._log_drop(link, route, exc)
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
        if result is None and ctx.close_reason is None:
            # Nothing to send or close (a client's IMMsgDataAck; an IMMsgData whose ack comes from a callback,
            # its dedup slot filled by `ctx.reply` then).
            return
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
            result = await Resume(coro, first)
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
            send_reply(ctx, route, result)

    # -- the dedup window (runtime.dispatch.reply_cache) ----------------------------------------------------
    def remember_reply(self, ctx: Context, result: Message, body: bytes | None = None) -> bytes | None:
        """Record `result` as the reply to `ctx`'s request in its dedup window (whenever it is sent: returned
        or through `ctx.reply` later) and answer the duplicates that arrived while it was pending. Returns the
        reply serialized (`body`, made here if not given)."""
        return reply_cache.remember(self.routes.get(ctx.info.command_id), ctx, result, body)

    def forget_request(self, ctx: Context, provisional: Message | None = None) -> None:
        """Drop `ctx`'s request from its dedup window, so a retransmit is processed afresh. Duplicates that
        were waiting for its reply get `provisional` (the same answer the first copy got), if given."""
        reply_cache.forget(self.routes.get(ctx.info.command_id), ctx, provisional)

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
        if body is not None and body_as_is(link, stages):
            return link.send_frame(info.service_id, info.command_id, seq, body)
        return send_packed(link, info, stages, msg, seq)

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
