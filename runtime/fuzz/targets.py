"""Runtime fuzz layer: live targets: the server a fuzz suite talks to, and what it knows about that server.

A `Target` hands out raw connections (logged in or not), a bystander connection that must stay unaffected, a
storage digest, and the stage units that mirror the server's (to predict whether an input must be refused).
`ValidatingTarget` serves the stack's generated server bases with a validating echo service in a background
thread; `runtime.fuzz.cluster.ClusterTarget` runs the real in-process cluster; `RemoteTarget` is any running
server (`TTGEN_FUZZ_TARGET=host:port`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import traceback
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from dataclasses import replace
from typing import Any, TypeVar

from google.protobuf.message import Message

from runtime.fuzz.stack import FuzzStack
from runtime.fuzz.strategies import minimal_message
from runtime.fuzz.wire import NoAnswer, PeerClosed, RawConnection
from runtime.registry import CommandInfo, Registry
from runtime.stages import CommandStages, build_stages

T = TypeVar("T")
LOGIN_SEQ = 1
LOGIN_ATTEMPTS = 5
# Fields of a login reply that say whether it succeeded (0: success), in the order they are looked for.
RESULT_FIELDS = ("result_code", "result", "error_code", "error", "status", "code")


class HandlerErrors(logging.Handler):
    """Collects the exceptions an in-process server's handlers raised (the dispatcher logs each one with its
    traceback), so the fuzz check after an example can report them as failures."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info is None or record.exc_info[1] is None:
            return
        text = record.getMessage() + "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        with self._lock:
            self.errors.append(text)

    def take(self) -> list[str]:
        with self._lock:
            out, self.errors = self.errors, []
        return out

    def attach(self, *loggers: str) -> None:
        for name in loggers:
            logging.getLogger(name).addHandler(self)

    def detach(self, *loggers: str) -> None:
        for name in loggers:
            logging.getLogger(name).removeHandler(self)


def login_succeeded(reply: Message) -> bool:
    """Whether a login reply says the login succeeded: its result field (the first of `RESULT_FIELDS` it
    has, of an integer or enum type) is 0; a reply without such a field counts as success."""
    fields = reply.DESCRIPTOR.fields_by_name
    for name in RESULT_FIELDS:
        fd = fields.get(name)
        if fd is not None and not fd.is_repeated and fd.cpp_type in INTEGER_CPP_TYPES:
            return int(getattr(reply, name)) == 0
    return True


# FieldDescriptor.CPPTYPE_* of int32, int64, uint32, uint64 and enum.
INTEGER_CPP_TYPES = frozenset({1, 2, 3, 4, 8})


class LoopThread:
    """An asyncio event loop running in a daemon thread, for servers the blocking fuzz client talks to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fuzz-server", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine on the loop and wait for its result."""
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run a plain function on the loop thread and wait for its result."""

        async def wrapper() -> T:
            return fn()

        return self.run(wrapper(), timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10.0)
        if not self.loop.is_running():
            self.loop.close()


class Target:
    """A live server under fuzzing. Subclasses set the address and may override login and storage."""

    name = "target"
    enforces_limits = False  # the server's input stage applies the spec's field constraints
    replies_always = False  # every accepted request that has a reply command is answered
    # An accepted request whose reply never comes (while the connection stays open) is a failure.
    answers_valid_requests = False
    fuzz_user_id = 0  # the user id fuzz connections log in as (0: unknown)
    auto_auth = False  # sessions are authenticated on connect (the protocol has no login command)
    serves: frozenset[str] | None = (
        None  # cluster services whose commands the client port dispatches (None: all)
    )
    # Loggers whose records with an exception are handler failures (in-process servers only).
    handler_loggers: tuple[str, ...] = ()

    def __init__(self, stack: FuzzStack, host: str, port: int, *, timeout: float = 2.0) -> None:
        self.stack = stack
        self.host, self.port = host, port
        self.timeout = timeout
        self.frames_sent = 0
        self.sent_commands: set[str] = set()  # every command a fuzz example sent (coverage)
        self.unanswered = 0  # valid requests whose reply never came (not an error unless replies_always)
        self.unanswered_by: dict[str, int] = {}  # the same, per command
        self.reply_timeout = timeout
        self._bystander: RawConnection | None = None
        self._stages: dict[int, CommandStages] | None = None
        self.handler_errors = HandlerErrors()
        self.handler_errors.attach(*self.handler_loggers)

    @property
    def max_frame_bytes(self) -> int:
        """The frame-length limit the server must apply: the spec's."""
        return self.stack.max_frame_bytes

    def accounts(self) -> dict[str, str] | None:
        """Seeded users the authentication properties log in as (name -> password), or None when the
        target cannot tell a right password from a wrong one."""
        return None

    def login_request(self, user: str, password: str) -> tuple[CommandInfo, Message]:
        """The login command and body for `user` with `password` as typed (targets with `accounts`)."""
        raise NotImplementedError

    def check_handlers(self) -> None:
        """AssertionError, with the traceback, if a server handler raised since the last check."""
        errors = self.handler_errors.take()
        if errors:
            raise AssertionError(f"a handler raised: {errors[0]}")

    # -- connections -----------------------------------------------------------------------------------------
    def connect(self, *, login: bool = False) -> RawConnection:
        """A new raw connection to the client port, logged in if asked."""
        attempts = LOGIN_ATTEMPTS if login else 1
        for attempt in range(attempts):
            conn = RawConnection(self.host, self.port, timeout=self.timeout)
            if not login:
                return conn
            try:
                self.login(conn)
                return conn
            except (AssertionError, PeerClosed, NoAnswer):
                conn.close()
                # Right after an earlier example broke a session the server may still be tearing it down
                # (e.g. "already logged in"); a fresh attempt is a new round trip, not a sleep.
                if attempt == attempts - 1:
                    raise
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")

    def login_message(self) -> tuple[CommandInfo, Message] | None:
        """The login command and body fuzz connections use (None: the stack has no login command)."""
        candidates = self.stack.login_commands()
        if not candidates:
            return None
        info = candidates[0]
        return info, minimal_message(self.stack.strats, self.stack.message_of(info.name))

    def login(self, conn: RawConnection) -> None:
        """Log `conn` in; AssertionError if the server refuses."""
        found = self.login_message()
        if found is None:
            return
        info, msg = found
        conn.send_frame(info.service_id, info.command_id, LOGIN_SEQ, msg.SerializeToString())
        reply = self.stack.command(info.reply or info.name)
        frame = conn.wait_for(lambda f: f.command_id == reply.command_id and f.seq == LOGIN_SEQ)
        self.check_login_reply(reply.message_class.FromString(bytes(frame.body)))
        conn.inbox.clear()

    def check_login_reply(self, reply: Message) -> None:
        """Raise AssertionError if a login reply says the login failed (see `login_succeeded`)."""
        assert login_succeeded(reply), f"fuzz login refused: {reply}"

    def bystander(self) -> RawConnection:
        """A long-lived logged-in connection that fuzzing must never disturb (re-opened after a failure)."""
        if self._bystander is None or self._bystander.closed:
            self._bystander = self.connect(login=True)
        return self._bystander

    def prepare(self) -> None:
        """Before an example: the bystander is open and healthy (one broken by an earlier example is replaced
        without blaming this one), so whatever this example breaks, it breaks on an older connection."""
        conn = self._bystander
        if conn is not None:
            try:
                conn.probe()
            except (PeerClosed, NoAnswer):
                conn.close()
                self._bystander = None
        self.bystander()

    def check_bystander(self) -> None:
        """The server still answers a heartbeat on another, older connection."""
        conn = self.bystander()
        try:
            conn.probe()
        except (PeerClosed, NoAnswer) as exc:
            conn.close()
            self._bystander = None
            raise AssertionError(f"another connection was affected: {exc}") from None

    def check_alive(self) -> None:
        """A brand-new connection still gets a heartbeat answered (the server did not crash)."""
        try:
            with self.connect() as conn:
                conn.probe()
        except (OSError, PeerClosed, NoAnswer) as exc:
            raise AssertionError(f"server no longer answers a new connection: {exc}") from None

    # -- what the server does with input ---------------------------------------------------------------------
    def stages(self) -> dict[int, CommandStages]:
        """Stage units matching the server's own (to predict refusals)."""
        if self._stages is None:
            if self.enforces_limits:
                self._stages = build_stages(self.stack.registry, field_limits=self.stack.field_limits)
            else:
                # A server not known to check the constraints: predict no constraint refusals, even though
                # the generated registry carries them as `input.fields`.
                self._stages = build_stages(strip_field_limits(self.stack.registry))
        return self._stages

    def settle(self, conn: RawConnection) -> None:
        """Before a storage digest: wait, on `conn`, until work that earlier examples started is done."""

    def storage_digest(self) -> str | None:
        """A digest of everything the server stores (None: not observable)."""
        return None

    def reset(self) -> None:
        """Forget broken connections and reported handler errors after a failure, so the next example starts
        clean."""
        if self._bystander is not None:
            self._bystander.close()
            self._bystander = None
        self.handler_errors.take()

    def close(self) -> None:
        self.reset()
        self.handler_errors.detach(*self.handler_loggers)


USER_FIELDS = ("user_name", "username", "user", "login_name", "login", "account", "name")
PASSWORD_FIELDS = ("password", "passwd", "pass", "secret")


def credential_fields(msg: Message) -> tuple[str, str] | None:
    """The (user, password) string fields of a login message, or None if it has no such pair."""
    fields = msg.DESCRIPTOR.fields_by_name

    def first(names: tuple[str, ...]) -> str | None:
        for name in names:
            fd = fields.get(name)
            if fd is not None and not fd.is_repeated and fd.type in (fd.TYPE_STRING, fd.TYPE_BYTES):
                return name
        return None

    user, password = first(USER_FIELDS), first(PASSWORD_FIELDS)
    return (user, password) if user and password else None


class RemoteTarget(Target):
    """A server already running somewhere (`ttgen fuzz --target HOST:PORT`). With `user` and `password`, fuzz
    connections log in with them (set in the login message's user and password fields), the user id the
    login reply gives is the one the oracle predicts with, and the authentication properties run against
    that account."""

    name = "remote"

    def __init__(
        self,
        stack: FuzzStack,
        host: str,
        port: int,
        *,
        user: str | None = None,
        password: str | None = None,
        timeout: float = 2.0,
    ) -> None:
        super().__init__(stack, host, port, timeout=timeout)
        self.user, self.password = user, password

    def _with_credentials(self, user: str, password: str) -> tuple[CommandInfo, Message] | None:
        found = Target.login_message(self)
        if found is None:
            return None
        info, msg = found
        names = credential_fields(msg)
        if names is None:
            return found
        for name, value in zip(names, (user, password), strict=True):
            kind = msg.DESCRIPTOR.fields_by_name[name].type
            setattr(
                msg, name, value.encode() if kind == msg.DESCRIPTOR.fields_by_name[name].TYPE_BYTES else value
            )
        return info, msg

    def login_message(self) -> tuple[CommandInfo, Message] | None:
        if self.user is None or self.password is None:
            return super().login_message()
        return self._with_credentials(self.user, self.password)

    def check_login_reply(self, reply: Message) -> None:
        super().check_login_reply(reply)
        user_id = getattr(reply, "user_id", 0)
        if isinstance(user_id, int) and user_id:
            self.fuzz_user_id = user_id

    def accounts(self) -> dict[str, str] | None:
        found = Target.login_message(self)
        if self.user is None or self.password is None or found is None or credential_fields(found[1]) is None:
            return None
        return {self.user: self.password}

    def login_request(self, user: str, password: str) -> tuple[CommandInfo, Message]:
        found = self._with_credentials(user, password)
        assert found is not None
        return found


def strip_rates(registry: Registry) -> Registry:
    """A copy of `registry` without input rate limits (the validating server answers as fast as it is fed)."""
    infos = []
    for info in registry:
        stages = {k: dict(v) for k, v in info.stages.items()}
        stages.get("input", {}).pop("rate", None)
        infos.append(replace(info, stages=stages))
    return registry.derive(infos)


def strip_field_limits(registry: Registry) -> Registry:
    """A copy of `registry` without the field constraints in its `input.fields` tables."""
    infos = []
    for info in registry:
        stages = {k: dict(v) for k, v in info.stages.items()}
        stages.get("input", {}).pop("fields", None)
        infos.append(replace(info, stages=stages))
    return registry.derive(infos)


class ValidatingService:
    """Hosts every hosted command: checks come from the stages; it records what it accepted and replies."""

    def __init__(self, stack: FuzzStack, registry: Registry) -> None:
        self.stack = stack
        self.accepted: list[tuple[str, bytes]] = []
        # A protocol without a login command (none allowed before authentication) cannot authenticate a
        # client; its sessions are authenticated on connect so its commands can be fuzzed at all.
        self.auto_auth = not stack.login_commands()
        self.plant: Callable[[Any, CommandInfo, Message], None] | None = None
        self.__mapping__: dict[int, str] = {}
        for info in registry:
            if info.hosted_by:
                method = "on_" + info.name.lower()
                self.__mapping__[info.command_id] = method
                setattr(self, method, self._handler(info))

    def on_connect(self, link: Any) -> None:
        if self.auto_auth and link.conn is not None:
            link.conn.authenticate(1, 1)

    def _handler(self, info: CommandInfo) -> Callable[[Any, Message], Coroutine[Any, Any, Message | None]]:
        reply = self.stack.registry.by_name(info.reply) if info.reply else None
        login = not info.policy("input").get("require_auth", True) and reply is not None

        async def handle(ctx: Any, msg: Message) -> Message | None:
            if self.plant is not None:
                self.plant(ctx, info, msg)
            self.accepted.append((info.name, msg.SerializePartialToString()))
            if login and not ctx.authenticated:
                ctx.authenticate(1, 1)
            if reply is None:
                return None
            return minimal_message(self.stack.strats, str(reply.message_class.DESCRIPTOR.full_name))

        return handle


class ValidatingTarget(Target):
    """The stack's hosted commands served by a validating echo service on 127.0.0.1 (port 0)."""

    name = "validating"
    enforces_limits = True
    replies_always = True
    answers_valid_requests = True
    fuzz_user_id = 1
    handler_loggers = ("runtime.dispatch",)

    def __init__(self, stack: FuzzStack, *, decoder: type | None = None, timeout: float = 2.0) -> None:
        from runtime.dispatch import Dispatcher
        from runtime.transport import serve

        self.loop = LoopThread()
        registry = strip_rates(stack.registry)
        self.service = ValidatingService(stack, registry)
        stages = build_stages(registry, field_limits=stack.field_limits)
        self.dispatcher = Dispatcher(registry, self.service, stages=stages)
        self.server = self.loop.run(
            serve(
                "127.0.0.1",
                0,
                self.dispatcher.handler_factory,
                registry=registry,
                max_frame_bytes=stack.max_frame_bytes,
            )
        )
        self._stages_table = stages
        self.decoder = decoder
        if decoder is not None:
            install_decoder(self.server, decoder)
        super().__init__(stack, "127.0.0.1", self.server.port, timeout=timeout)
        self.auto_auth = self.service.auto_auth

    def stages(self) -> dict[int, CommandStages]:
        return self._stages_table

    def storage_digest(self) -> str:
        accepted = list(self.service.accepted)
        digest = hashlib.sha256()
        for name, body in accepted:
            digest.update(name.encode() + b"\0" + body + b"\0")
        return digest.hexdigest()

    def close(self) -> None:
        super().close()
        try:
            self.loop.run(self.server.shutdown(1.0))
        finally:
            self.loop.stop()


def install_decoder(server: Any, decoder: type) -> None:
    """Make every new connection of `server` decode with `decoder` (used to plant a framing bug)."""
    protocol_factory = server._server._protocol_factory

    def factory() -> Any:
        link = protocol_factory()
        original = link.connection_made

        def connection_made(transport: Any) -> None:
            original(transport)
            link.conn._decoder = decoder(link.max_frame_bytes)

        link.connection_made = connection_made
        return link

    server._server._protocol_factory = factory


def open_target(stack: FuzzStack, kind: str | None = None) -> Target:
    """The target for a stack: `$TTGEN_FUZZ_TARGET` (host:port) if set, else `$TTGEN_FUZZ_SERVER`
    (`validating` or `cluster`), else the in-process cluster for stacks the runtime services implement
    (the TeamTalk protocol) and the validating server for any other stack."""
    remote = os.environ.get("TTGEN_FUZZ_TARGET")
    if remote and kind is None:
        host, _, port = remote.rpartition(":")
        return RemoteTarget(stack, host or "127.0.0.1", int(port))
    kind = kind or os.environ.get("TTGEN_FUZZ_SERVER") or default_kind(stack)
    if kind == "cluster":
        from runtime.fuzz.cluster import ClusterTarget

        return ClusterTarget(stack)
    if kind == "validating":
        return ValidatingTarget(stack)
    raise ValueError(f"unknown fuzz target kind {kind!r} (validating, cluster)")


def default_kind(stack: FuzzStack) -> str:
    """`cluster` when the runtime's services implement this protocol, else `validating`."""
    from runtime.fuzz.cluster import cluster_supports

    return "cluster" if cluster_supports(stack) else "validating"


_SHARED: dict[int, Target] = {}


def shared_target(stack: FuzzStack) -> Target:
    """One target per stack per process (test modules share it); closed at interpreter exit."""
    key = id(stack.registry)
    target = _SHARED.get(key)
    if target is None:
        import atexit

        target = _SHARED[key] = open_target(stack)
        atexit.register(target.close)
    return target
