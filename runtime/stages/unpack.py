"""Runtime stage layer, unpack stage: open (verify + decrypt), replay check, decompress, parse a body."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from runtime.errors import BodyError, IntegrityError, ReplayRejected
from runtime.framing import DEFAULT_MAX_FRAME_BYTES, FLAG_COMPRESSED, FLAG_ENCRYPTED, Frame
from runtime.stages.crypto import SessionCipher, header_ad
from runtime.stages.input import missing_fields
from runtime.stages.policy import choice

_TextCheck = Callable[[Message], "str | None"]
_TEXT_CHECKS: dict[str, _TextCheck | None] = {}


def text_check(descriptor: Any) -> _TextCheck | None:
    """For a message `Descriptor`: a function naming the first string field (nested and repeated ones too)
    that does not hold valid UTF-8, or None when the type has no string field at all (nothing to check).

    A proto2 parser keeps such a field's raw bytes where the code expects text; refused here, the bad input is
    an undecodable body like any other, and no handler ever sees bytes in a `str` field."""
    key = descriptor.full_name
    if key not in _TEXT_CHECKS:
        _TEXT_CHECKS[key] = None  # a recursive type refers to itself: assume nothing while building it
        strings = [f.name for f in descriptor.fields if f.type == FieldDescriptor.TYPE_STRING]
        nested = [
            (f.name, check)
            for f in descriptor.fields
            if f.type == FieldDescriptor.TYPE_MESSAGE and (check := text_check(f.message_type)) is not None
        ]
        _TEXT_CHECKS[key] = _make_text_check(strings, nested) if strings or nested else None
    return _TEXT_CHECKS[key]


def _make_text_check(strings: list[str], nested: list[tuple[str, _TextCheck]]) -> _TextCheck:
    def check(msg: Message) -> str | None:
        for name in strings:
            value = getattr(msg, name)
            if type(value) is bytes:
                return name
            if not isinstance(value, str):  # a repeated field
                for item in value:
                    if type(item) is bytes:
                        return name
        for name, inner in nested:
            value = getattr(msg, name)
            items = value if not isinstance(value, Message) else (value,)
            for item in items:
                bad = inner(item)
                if bad is not None:
                    return f"{name}.{bad}"
        return None

    return check


def check_text(msg: Message) -> None:
    """Raise `BodyError` if a string field of `msg` is not valid UTF-8."""
    check = text_check(msg.DESCRIPTOR)
    if check is not None:
        bad = check(msg)
        if bad is not None:
            raise BodyError(f"{msg.DESCRIPTOR.full_name}.{bad} is not valid UTF-8 text")


class ReplayWindow:
    """Sliding window over nonce counters (as in IPsec): each counter is accepted once; too old is refused."""

    __slots__ = ("bitmap", "highest", "size")

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self.highest = -1
        self.bitmap = 0  # bit i set: counter (highest - i) was seen

    def accept(self, counter: int) -> None:
        """Record `counter`; raise `ReplayRejected` if it was seen or is older than the window."""
        if counter > self.highest:
            shift = counter - self.highest
            self.bitmap = ((self.bitmap << shift) | 1) & ((1 << self.size) - 1) if shift < self.size else 1
            self.highest = counter
            return
        offset = self.highest - counter
        if offset >= self.size:
            raise ReplayRejected(f"nonce counter {counter} is older than the replay window")
        if self.bitmap >> offset & 1:
            raise ReplayRejected(f"nonce counter {counter} replayed")
        self.bitmap |= 1 << offset


INFLATE_RATE = 4 << 20  # decompressed bytes a connection may produce per second, on average
INFLATE_BURST = 8 << 20  # ... and at once


class InflateBudget:
    """A connection's allowance of decompressed bytes (a token bucket in bytes). Inflating is cheap per input
    byte and dear per output byte, so a client sending small bombs is held to what it may make us produce.

    Each compressed frame is charged its command's largest decoded size before inflating and refunded the
    unused part after: no frame starts that the allowance could not cover."""

    __slots__ = ("burst", "clock", "rate", "stamp", "tokens")

    def __init__(
        self, clock: Callable[[], float], rate: float = INFLATE_RATE, burst: float = INFLATE_BURST
    ) -> None:
        self.clock = clock
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = clock()

    def spend(self, size: int) -> None:
        """Take `size` bytes of allowance; `BodyError` (the connection is closed) when there is too little."""
        now = self.clock()
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens < size:
            self.tokens = tokens
            raise BodyError(f"compressed frames above {self.rate / (1 << 20):g} MiB/s of decompressed data")
        self.tokens = tokens - size

    def refund(self, size: int) -> None:
        """Give back allowance charged and not used."""
        self.tokens = min(self.burst, self.tokens + size)


class UnpackStage:
    """Parses one command's frames according to its `unpack` policy (and the pack flags on the frame)."""

    def __init__(
        self,
        policy: Mapping[str, Any],
        *,
        require_encryption: bool = False,
        input_max_bytes: int | None = None,
    ) -> None:
        """`input_max_bytes`: the command's `input.max_bytes`. It bounds the body as received; the decoded
        body is held to it too (and to the policy's own `max_bytes`), so compression cannot multiply it."""
        self.verify = bool(policy.get("verify", True))
        self.replay = choice(policy, "replay", ("allow", "reject"), "allow")
        limit = int(policy.get("max_bytes", DEFAULT_MAX_FRAME_BYTES))
        self.max_bytes = min(limit, input_max_bytes) if input_max_bytes is not None else limit
        self.require_encryption = require_encryption

    def unpack(
        self,
        frame: Frame,
        message_class: type[Message],
        cipher: SessionCipher | None = None,
        window: ReplayWindow | None = None,
        budget: InflateBudget | None = None,
    ) -> Message:
        """Return the parsed message. Raises `IntegrityError`, `ReplayRejected` or `BodyError`; `budget` is
        the connection's allowance of decompressed bytes (None: unmetered)."""
        body: bytes | memoryview = frame.body
        flag = frame.flag
        if flag & FLAG_ENCRYPTED:
            if cipher is None:
                raise IntegrityError("encrypted frame but no session keys agreed")
            ad = header_ad(frame.version, flag, frame.service_id, frame.command_id, frame.seq)
            counter, body = cipher.open(body, ad)
            if self.replay == "reject":
                if window is None:
                    raise ReplayRejected("replay protection needs a replay window")
                window.accept(counter)
        elif self.require_encryption and cipher is not None:
            raise IntegrityError("plaintext frame on a session that requires encryption")
        if flag & FLAG_COMPRESSED:
            if budget is not None:
                budget.spend(self.max_bytes)  # what this frame may inflate to, charged before inflating
            inflater = zlib.decompressobj()
            try:
                # max_length bounds the output, so a small zlib bomb cannot expand beyond the size limit.
                body = inflater.decompress(body, self.max_bytes + 1)
            except zlib.error as exc:
                raise BodyError(f"bad compressed body: {exc}") from None
            if len(body) > self.max_bytes or inflater.unconsumed_tail:
                raise BodyError(f"decompressed body exceeds {self.max_bytes} bytes")
            if budget is not None:
                budget.refund(self.max_bytes - len(body))
        try:
            msg = message_class.FromString(body)  # type: ignore[arg-type]  # any buffer works
        except (DecodeError, ValueError, RuntimeError) as exc:
            raise BodyError(f"undecodable {message_class.DESCRIPTOR.full_name} body: {exc}") from None
        if self.verify and not msg.IsInitialized():
            missing = ", ".join(missing_fields(msg))
            raise BodyError(f"{message_class.DESCRIPTOR.full_name} missing required fields: {missing}")
        check_text(msg)
        return msg
