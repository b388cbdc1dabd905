"""Runtime dispatch layer: frames of internal links (runtime.transport.InternalLink) to a service's handlers.

The `Dispatcher` routes an internal link's frames here: the same routes (command id -> the generated server
base's method), without the client stages (the peer proved the cluster secret; the link's frame limit
applies). A relayed frame (`FLAG_RELAY`) is unwrapped: the handler gets the inner message and acts for the
envelope's first target, `ctx.user_id`, the user the sending msg server authenticated (never a user id
written by a client).

A handler's returned message answers a `FLAG_REQUEST` frame with the command the registry names for that
message type (biz answers a stored IMMsgData with the IMMsgData itself); None answers it empty (a batched
confirmation), unless the handler called `ctx.defer()` and answers later with `ctx.reply(...)`. A handler
that fails is logged and its request answered empty, so the requester never waits for an answer that
cannot come.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from google.protobuf.message import Message

from runtime.connection import FLAG_RELAY, FLAG_REQUEST, relay_targets
from runtime.dispatch import Context, Dispatcher, Route
from runtime.framing import Frame
from runtime.registry import CommandInfo
from runtime.transport import InternalLink, Link

log = logging.getLogger("runtime.dispatch.links")

# A service's observer of internal requests: (command name, seconds from arrival to answer, failed).
Observer = Callable[[str, float, bool], None]
F = TypeVar("F", bound=Callable[..., Any])
_FORWARDS = "__link_forwards__"


def forwards(handler: F) -> F:
    """Marks a handler that passes an internal frame on as it came (a router's relay): the body is not
    parsed, the handler gets None for the message and forwards `ctx.frame` to `ctx.targets`."""
    setattr(handler, _FORWARDS, True)
    return handler


def _forwarded(dispatcher: Dispatcher) -> frozenset[int]:
    try:
        return dispatcher._link_forwards  # type: ignore[attr-defined,no-any-return]
    except AttributeError:
        cids = frozenset(cid for cid, r in dispatcher.routes.items() if getattr(r.handler, _FORWARDS, False))
        dispatcher._link_forwards = cids  # type: ignore[attr-defined]
        return cids


class LinkContext(Context):
    """What a handler sees of an internal request: the link, the frame, the acting user (the relay
    envelope's first target, 0 if none), all targets (None: a broadcast, or not relayed), the message's own
    bytes (`body`: to pass it on without serializing it again), and `reply`/`defer` to answer later."""

    __slots__ = ("answered", "body", "deferred", "frame", "started", "targets", "user")

    def __init__(
        self,
        dispatcher: Dispatcher,
        link: Link,
        info: CommandInfo,
        frame: Frame,
        user: int,
        targets: tuple[int, ...] | None,
        body: bytes | memoryview,
    ) -> None:
        # Context's fields set here directly (one call less on every internal frame)
        self.dispatcher = dispatcher
        self.link = link
        self.info = info
        self.seq = frame.seq
        self.close_reason: str | None = None
        self.dedup_key = None
        self.dedup_slot = None
        self.frame = frame
        self.body = body  # the message's bytes (inside the relay envelope; a forwarded frame's whole body)
        self.user = user
        self.targets = targets
        self.deferred = False
        self.answered = False
        self.started = 0.0

    @property
    def user_id(self) -> int:
        return self.user

    @property
    def client_type(self) -> int:
        return 0

    @property
    def authenticated(self) -> bool:
        return self.link.conn is not None and self.link.conn.is_open

    @property
    def internal(self) -> InternalLink:
        """The internal link the request came on."""
        link: Any = self.link  # an InternalLink (no cast() call: on every internal reply)
        return link  # type: ignore[no-any-return]

    def defer(self) -> None:
        """The handler answers later with `reply` (e.g. from a storage commit callback): returning None
        must not answer the request empty."""
        self.deferred = True

    def reply(self, msg: Message, *, remember: bool = True) -> bool:
        """Answer the request with `msg` (sent once; later calls are ignored)."""
        if self.answered:
            return False
        self.answered = True
        if self.started:
            _observe(self, False)
        link = self.internal
        return link.reply(self.frame, _reply_cid(self.dispatcher, type(msg)), msg.SerializeToString())

    def reply_or_empty(self, msg: Message | None) -> None:
        """Answer with `msg`, or empty when it is None (the handler's work failed)."""
        if msg is None:
            self.answer_empty(failed=True)
        else:
            self.reply(msg)

    def answer_empty(self, failed: bool = False) -> bool:
        """Answer the request empty (a batched confirmation), once."""
        if self.answered:
            return False
        self.answered = True
        if self.started:
            _observe(self, failed)
        link: Any = self.link
        return bool(link.confirm(self.frame))


def answer_later(ctx: Context) -> Callable[[Message | None], None]:
    """For a handler of an internal request that answers from a callback (e.g. a storage commit): marks the
    request deferred (returning None does not answer it) and returns the callable that answers it (with a
    message, or empty for None)."""
    if not isinstance(ctx, LinkContext):
        raise TypeError("answer_later is for requests of internal links")
    ctx.deferred = True
    return ctx.reply_or_empty


def _reply_cid(dispatcher: Dispatcher, cls: type[Message]) -> int:
    cids: dict[type[Message], int] | None = getattr(dispatcher, "_link_reply_cids", None)
    if cids is None:
        cids = {}
        dispatcher._link_reply_cids = cids  # type: ignore[attr-defined]
    cid = cids.get(cls)
    if cid is None:
        infos = dispatcher.registry.for_message(cls)
        if not infos:
            raise ValueError(f"no command carries {cls.__name__}")
        cid = cids[cls] = infos[0].command_id
    return cid


def _observer(dispatcher: Dispatcher) -> Observer | None:
    try:
        return dispatcher._link_observer  # type: ignore[attr-defined,no-any-return]
    except AttributeError:
        obs: Observer | None = getattr(dispatcher.service, "observe_internal", None)
        dispatcher._link_observer = obs  # type: ignore[attr-defined]
        return obs


def _observe(ctx: LinkContext, failed: bool) -> None:
    obs = _observer(ctx.dispatcher)
    if obs is not None:
        obs(ctx.info.name, time.perf_counter() - ctx.started, failed)


def frames_received(dispatcher: Dispatcher, link: Link, frames: Iterable[tuple[Frame, CommandInfo]]) -> None:
    """Dispatch the frames of an internal link (see the module docstring)."""
    routes = dispatcher.routes
    conn = link.conn
    assert conn is not None
    internal: Any = link
    observed = _observer(dispatcher) is not None
    forwarded = _forwarded(dispatcher)
    for frame, info in frames:
        cid = frame.command_id
        route = routes.get(cid)
        if route is None:
            log.warning("%r: %s is not handled by this service; answered empty", link, info.name)
            internal.confirm(frame)
            continue
        body: bytes | memoryview = frame.body
        user = 0
        targets: tuple[int, ...] | None = None
        try:
            if frame.flag & FLAG_RELAY:
                targets, start = relay_targets(body)
                if targets:
                    user = targets[0]
                if cid not in forwarded:  # a forwarding handler passes the whole frame on: no copy
                    body = body[start:]
            msg: Any = None if cid in forwarded else route.parse(body if type(body) is bytes else bytes(body))
        except Exception as exc:  # a bad body is answered empty; the link survives
            log.warning("%r: bad %s: %s", link, info.name, exc)
            internal.confirm(frame)
            continue
        ctx = LinkContext(dispatcher, link, info, frame, user, targets, body)
        if observed:
            ctx.started = time.perf_counter()
        if route.is_async:
            _start_task(dispatcher, ctx, route, msg)
        else:
            # Inline, the common case (relays, stores): a plain handler that answers or confirms at once.
            try:
                result = route.handler(ctx, msg)
            except Exception as exc:
                _failed(ctx, route, exc)
            else:
                if result is None and not ctx.deferred and ctx.close_reason is None:
                    ctx.answer_empty()
                else:
                    _finish(ctx, route, result)
        if not conn.is_open:
            return


def _start_task(dispatcher: Dispatcher, ctx: LinkContext, route: Route, msg: Message) -> None:
    # A task from the start (not stepped eagerly as client requests are): internal handlers await storage
    # and helpers that need a current task (asyncio.timeout). A hot command that never suspends is
    # implemented as a plain function and runs inline.
    task = asyncio.get_running_loop().create_task(_run_async(ctx, route, msg))
    dispatcher._tasks.add(task)
    task.add_done_callback(dispatcher._tasks.discard)


async def _run_async(ctx: LinkContext, route: Route, msg: Message) -> None:
    try:
        result = await route.handler(ctx, msg)  # type: ignore[misc]
    except Exception as exc:
        _failed(ctx, route, exc)
        return
    _finish(ctx, route, result)


def _finish(ctx: LinkContext, route: Route, result: Any) -> None:
    try:
        if result is not None:
            ctx.reply(result)
        elif not ctx.deferred:
            ctx.answer_empty()
    except Exception as exc:  # e.g. a reply missing required fields cannot be serialized
        _failed(ctx, route, exc)
    if ctx.close_reason is not None:
        ctx.link.close(ctx.close_reason)


def _failed(ctx: LinkContext, route: Route, exc: BaseException) -> None:
    log.error("internal handler %s failed for %r: %r", route.name, ctx.link, exc, exc_info=exc)
    ctx.answer_empty(failed=True)


__all__ = ["FLAG_REQUEST", "LinkContext", "Observer", "answer_later", "forwards", "frames_received"]
