"""Runtime fuzz layer: planted bugs, test-only, that prove the fuzz suites find real defects.

- `handler`: one hosted command's handler "crashes" its server (aborts every client connection) when a
  uint32 field of the request is at its maximum, 2**32-1;
- `raise`: the same handler raises an exception on that value instead (the request goes unanswered);
- `framing`: a frame decoder with an off-by-one (`>` for `>=`) that leaves a frame with an empty body stuck
  when it ends a read;
- `frame_max`: the server's frame decoder checks the length limit off by one (a frame one byte over the
  limit is accepted);
- `auth`: the login check skips the password for user names exactly as long as the login name may be;
- `authz`: group member changes skip the authorization check (anyone may remove anyone).

Only `ttgen fuzz --plant` (and `--replay` of a reproducer found under a plant) and the tests that exercise
the fuzzer use these; no server runs them otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from runtime.errors import FrameError
from runtime.framing import HEADER, HEADER_SIZE, Frame, FrameDecoder
from runtime.fuzz.stack import FuzzStack
from runtime.registry import CommandInfo

UINT32_MAX = 2**32 - 1
_UINT32_TYPES = (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32)
PLANTS = ("handler", "raise", "framing", "frame_max", "auth", "authz")
CLUSTER_PLANTS = ("handler", "raise", "frame_max", "auth", "authz")  # planted in the cluster's services


def uint32_fields(info: CommandInfo) -> list[str]:
    """Top-level singular uint32/fixed32 fields of a command's message."""
    return [
        f.name for f in info.message_class.DESCRIPTOR.fields if f.type in _UINT32_TYPES and not f.is_repeated
    ]


def plant_command(stack: FuzzStack, service: str | None = None) -> CommandInfo:
    """The command whose handler gets the planted bug: the first authenticated client command (hosted by
    `service` if given) with a uint32 field, skipping logins and logouts, in id order."""
    for info in stack.registry:
        if not info.from_client or not info.hosted_by or (service and service not in info.hosted_by):
            continue
        name = info.name.upper()
        if "LOGIN" in name.replace("LOGINOUT", "") and not info.policy("input").get("require_auth", True):
            continue
        if "LOGOUT" in name or "LOGINOUT" in name or not uint32_fields(info):
            continue
        return info
    raise LookupError(f"stack {stack.name} has no client command with a uint32 field to plant a bug in")


def trips(msg: Message) -> bool:
    """The planted condition: some top-level uint32 field holds 2**32-1."""
    return any(
        getattr(msg, f.name) == UINT32_MAX
        for f in msg.DESCRIPTOR.fields
        if f.type in _UINT32_TYPES and not f.is_repeated
    )


def crash(links: Iterable[Any]) -> None:
    """What the planted handler does: drop every client connection at once, as a crashing server would."""
    for link in list(links):
        link.abort("planted crash")


class PlantedError(RuntimeError):
    """What the `raise` plant's handler raises."""


def planted_handler(
    real: Callable[[Any, Any], Coroutine[Any, Any, Any]],
    links: Callable[[], Iterable[Any]],
    kind: str = "handler",
) -> Callable[[Any, Any], Coroutine[Any, Any, Any]]:
    """Wrap a handler so that a request tripping the condition crashes the server's connections (`handler`)
    or makes the handler raise (`raise`)."""

    async def handler(ctx: Any, msg: Any) -> Any:
        if trips(msg):
            if kind == "raise":
                raise PlantedError(f"planted bug: {type(msg).__name__} with a uint32 field at {UINT32_MAX}")
            crash(links())
            return None
        return await real(ctx, msg)

    return handler


def _msg_service_class() -> type:
    from runtime.services.msg import MsgService

    class PlantedMsgService(MsgService):
        """The msg service with a planted bug (test-only): `fuzz_plant` names it; `handler` and `raise` go
        into the handler of `fuzz_plant_command`, `frame_max` into the client port's frame decoder."""

        def _make_handlers(self) -> Any:
            handlers = super()._make_handlers()
            kind = str(self.ctx.config.get("fuzz_plant", "handler"))
            if kind not in ("handler", "raise"):
                return handlers
            command = str(self.ctx.config["fuzz_plant_command"])
            method = "on_" + command.lower()
            real = getattr(handlers, method)
            links = lambda: self._server.links if self._server else ()  # noqa: E731
            setattr(handlers, method, planted_handler(real, links, kind))
            return handlers

        async def start(self) -> None:
            await super().start()
            if self.ctx.config.get("fuzz_plant") == "frame_max" and self._server is not None:
                from runtime.fuzz.targets import install_decoder

                install_decoder(self._server, OffByOneMaxDecoder)

    return PlantedMsgService


def _biz_service_class() -> type:
    from runtime.services.biz.service import BizService

    class PlantedBizService(BizService):
        """The biz service with a planted bug (test-only), named by `fuzz_plant`: `auth` skips the password
        check for login names of `fuzz_plant_name_len` characters; `authz` changes group members without
        checking who asks."""

        async def start(self) -> None:
            await super().start()
            kind = self.ctx.config.get("fuzz_plant")
            if kind == "auth":
                plant_auth_bypass(self.auth.authenticator, int(self.ctx.config["fuzz_plant_name_len"]))
            elif kind == "authz":
                storage = self.storage
                real = storage.change_group_members

                async def change(actor_id: Any, group_id: int, modify: Any, user_ids: Any) -> Any:
                    return await real(None, group_id, modify, user_ids)  # None: the admin, never refused

                storage.change_group_members = change  # type: ignore[method-assign]

    return PlantedBizService


def plant_auth_bypass(authenticator: Any, name_len: int) -> None:
    """Make `authenticator` accept any password for login names of exactly `name_len` characters."""
    from runtime.auth import LoginOutcome, LoginResult

    real = authenticator.authenticate

    async def authenticate(login_name: str, wire_password: str, address: str) -> Any:
        if len(login_name) == name_len:
            creds = await authenticator._store.get_credentials(login_name)
            if creds is not None:
                return LoginResult(LoginOutcome.OK, creds.user_id)
        return await real(login_name, wire_password, address)

    authenticator.authenticate = authenticate


def __getattr__(name: str) -> Any:
    # The cluster config names `runtime.fuzz.plant:PlantedMsgService` (or `PlantedBizService`); built on first
    # use so importing this module does not import the services.
    if name == "PlantedMsgService":
        cls = _msg_service_class()
    elif name == "PlantedBizService":
        cls = _biz_service_class()
    else:
        raise AttributeError(name)
    globals()[name] = cls
    return cls


class OffByOneDecoder(FrameDecoder):
    """`FrameDecoder` with a planted off-by-one: it needs *more* than a header's worth of bytes to look at a
    frame, so an empty-body frame at the end of a read is never decoded."""

    __slots__ = ()

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        if self._error is not None:
            raise self._error
        data = bytes(b"".join(self._pending) + bytes(data)) if self._pending else bytes(data)
        self._pending.clear()
        self._pending_len = 0
        frames: list[Frame] = []
        pos, size = 0, len(data)
        while size - pos > HEADER_SIZE:  # the planted bug: `>` where `>=` is right
            length, version, flag, sid, cid, seq, reserved = HEADER.unpack_from(data, pos)
            if length < HEADER_SIZE or length > self.max_frame_bytes:
                self._fail(length)
            if pos + length > size:
                break
            frames.append(
                Frame(sid, cid, seq, data[pos + HEADER_SIZE : pos + length], flag, version, reserved)
            )
            pos += length
        if pos < size:
            self._pending.append(data[pos:])
            self._pending_len = size - pos
        return frames


class OffByOneMaxDecoder(FrameDecoder):
    """`FrameDecoder` whose length limit is off by one: a frame one byte longer than `max_frame_bytes` is
    accepted (the limit check compares against the limit plus one)."""

    __slots__ = ()

    def __init__(self, max_frame_bytes: int) -> None:
        super().__init__(max_frame_bytes + 1)


def decoder_for(plant: str | None) -> type[FrameDecoder]:
    """The decoder class the framing suites and the validating server use under a plant."""
    if plant == "framing":
        return OffByOneDecoder
    if plant == "frame_max":
        return OffByOneMaxDecoder
    return FrameDecoder


__all__ = [
    "CLUSTER_PLANTS",
    "PLANTS",
    "FrameError",
    "OffByOneDecoder",
    "OffByOneMaxDecoder",
    "crash",
    "decoder_for",
    "plant_command",
    "trips",
]
