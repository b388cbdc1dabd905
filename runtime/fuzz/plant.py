"""Runtime fuzz layer: planted bugs, test-only, that prove the fuzz suites find real defects.

`handler`: one hosted command's handler "crashes" its server (aborts every client connection) when a uint32
field of the request is at its maximum, 2**32-1. `framing`: a frame decoder with an off-by-one (`>` for `>=`)
that leaves a frame with an empty body stuck when it ends a read. Only `ttgen fuzz --plant` and the tests
that exercise the fuzzer use these; no server runs them otherwise.
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
PLANTS = ("handler", "framing")


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


def planted_handler(
    real: Callable[[Any, Any], Coroutine[Any, Any, Any]], links: Callable[[], Iterable[Any]]
) -> Callable[[Any, Any], Coroutine[Any, Any, Any]]:
    """Wrap a handler so that a request tripping the condition crashes the server's connections."""

    async def handler(ctx: Any, msg: Any) -> Any:
        if trips(msg):
            crash(links())
            return None
        return await real(ctx, msg)

    return handler


def _msg_service_class() -> type:
    from runtime.services.msg import MsgService

    class PlantedMsgService(MsgService):
        """The msg service with the planted handler bug on `fuzz_plant_command` (test-only)."""

        def _make_handlers(self) -> Any:
            handlers = super()._make_handlers()
            command = str(self.ctx.config["fuzz_plant_command"])
            method = "on_" + command.lower()
            real = getattr(handlers, method)
            setattr(
                handlers, method, planted_handler(real, lambda: self._server.links if self._server else ())
            )
            return handlers

    return PlantedMsgService


def __getattr__(name: str) -> Any:
    # The cluster config names `runtime.fuzz.plant:PlantedMsgService`; build it on first use so importing this
    # module does not import the msg service.
    if name == "PlantedMsgService":
        cls = _msg_service_class()
        globals()[name] = cls
        return cls
    raise AttributeError(name)


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


def decoder_for(plant: str | None) -> type[FrameDecoder]:
    """The decoder class the framing suites and the validating server use under a plant."""
    return OffByOneDecoder if plant == "framing" else FrameDecoder


__all__ = ["PLANTS", "FrameError", "OffByOneDecoder", "crash", "decoder_for", "plant_command", "trips"]
