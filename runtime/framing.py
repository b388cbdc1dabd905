"""Runtime framing layer: the sans-IO TeamTalk frame codec (16-byte big-endian header + body), no sockets."""

from __future__ import annotations

import struct
from typing import NamedTuple

from runtime.errors import OversizedFrame, ShortFrame, ZeroLengthFrame

HEADER_SIZE = 16
DEFAULT_MAX_FRAME_BYTES = 1 << 20
PROTOCOL_VERSION = 1
# Bodies shorter than this are copied out of the read chunk: a small bytes slice is cheaper to make and to
# parse than a memoryview; larger bodies are handed out as views so a big frame is never copied.
ZERO_COPY_THRESHOLD = 16 * 1024

# Flag bits: TeamTalk leaves `flag` 0, so a zero flag keeps frames wire-compatible with its clients.
FLAG_COMPRESSED = 0x0001
FLAG_ENCRYPTED = 0x0002

HEADER = struct.Struct(">IHHHHHH")
_pack_header = HEADER.pack
_unpack_header = HEADER.unpack_from


class FrameHeader(NamedTuple):
    """The 16-byte header: length (incl. header), version, flag, service id, command id, seq, reserved."""

    length: int
    version: int
    flag: int
    service_id: int
    command_id: int
    seq: int
    reserved: int = 0

    def pack(self) -> bytes:
        """The header's 16 wire bytes."""
        return _pack_header(*self)

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview, offset: int = 0) -> FrameHeader:
        """Read a header from `data` at `offset` (which must hold at least 16 bytes)."""
        return cls(*_unpack_header(data, offset))


class _FrameFields(NamedTuple):
    # The header's fields in wire order, then the body: the decoder builds a frame from the unpacked header
    # tuple plus the body in one step, which is what keeps per-frame decoding cheap.
    length: int
    version: int
    flag: int
    service_id: int
    command_id: int
    seq: int
    reserved: int
    body: bytes | memoryview


class Frame(_FrameFields):
    """One frame: the header fields (`length` includes the 16-byte header) and the body.

    Construct with `Frame(service_id, command_id, seq, body, flag=0, version=1, reserved=0)`; the length is
    computed. A decoded `body` is bytes, or a memoryview into the read chunk for large bodies.
    """

    __slots__ = ()

    def __new__(
        cls,
        service_id: int,
        command_id: int,
        seq: int,
        body: bytes | memoryview,
        flag: int = 0,
        version: int = PROTOCOL_VERSION,
        reserved: int = 0,
    ) -> Frame:
        return tuple.__new__(
            cls, (HEADER_SIZE + len(body), version, flag, service_id, command_id, seq, reserved, body)
        )

    @property
    def header(self) -> FrameHeader:
        """This frame's header."""
        return tuple.__new__(FrameHeader, self[:7])

    def encode(self) -> bytes:
        """The frame's wire bytes."""
        return _pack_header(*self[:7]) + self.body


def encode_frame(
    service_id: int,
    command_id: int,
    seq: int,
    body: bytes | bytearray | memoryview = b"",
    *,
    flag: int = 0,
    version: int = PROTOCOL_VERSION,
) -> bytes:
    """Encode one frame. `seq` is the 16-bit sequence number (0 for pushes)."""
    return _pack_header(HEADER_SIZE + len(body), version, flag, service_id, command_id, seq, 0) + body


def append_frame(
    out: bytearray,
    service_id: int,
    command_id: int,
    seq: int,
    body: bytes | bytearray | memoryview = b"",
    *,
    flag: int = 0,
    version: int = PROTOCOL_VERSION,
) -> None:
    """Encode one frame onto the end of `out`, so many frames can go out with a single transport write."""
    out += _pack_header(HEADER_SIZE + len(body), version, flag, service_id, command_id, seq, 0)
    out += body


class FrameDecoder:
    """Incremental decoder: `feed` any split or coalesced reads and get back the complete frames.

    After a `FrameError` the decoder stays broken and raises the same error again: a byte stream has no way to
    find the next frame boundary, so the connection must close.
    """

    __slots__ = ("_error", "_need", "_pending", "_pending_len", "max_frame_bytes")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        if max_frame_bytes < HEADER_SIZE:
            raise ValueError("max_frame_bytes must be at least the header size")
        self.max_frame_bytes = max_frame_bytes
        # Partial data is kept as a list of chunks and joined once enough bytes arrived for the next frame,
        # so a large frame read in many small pieces costs linear, not quadratic, copying.
        self._pending: list[bytes] = []
        self._pending_len = 0
        self._need = HEADER_SIZE
        self._error: ShortFrame | ZeroLengthFrame | OversizedFrame | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return self._pending_len

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Consume `data`; return every frame completed by it, in order."""
        if self._error is not None:
            raise self._error
        if type(data) is not bytes:
            data = bytes(data)  # bodies may be views into the chunk, so it must be immutable
        if self._pending:
            self._pending.append(data)
            self._pending_len += len(data)
            if self._pending_len < self._need:
                return []
            data = b"".join(self._pending)
            self._pending.clear()
            self._pending_len = 0
        frames: list[Frame] = []
        append = frames.append
        # Frames are built as header tuple + (body,) via tuple.__new__: measured faster than Frame(...) or a
        # starred tuple display, and this loop runs once per frame.
        new_tuple = tuple.__new__
        unpack = _unpack_header
        size = len(data)
        last_header = size - HEADER_SIZE
        copy_below = ZERO_COPY_THRESHOLD + HEADER_SIZE
        pos = 0
        view: memoryview | None = None
        max_bytes = self.max_frame_bytes
        need = HEADER_SIZE
        while pos <= last_header:
            header = unpack(data, pos)
            length = header[0]
            if length < HEADER_SIZE or length > max_bytes:
                self._fail(length)
            end = pos + length
            if end > size:
                need = length
                break
            if length < copy_below:
                append(new_tuple(Frame, header + (data[pos + HEADER_SIZE : end],)))  # noqa: RUF005
            else:
                if view is None:
                    view = memoryview(data)
                append(new_tuple(Frame, header + (view[pos + HEADER_SIZE : end],)))  # noqa: RUF005
            pos = end
        self._need = need
        if pos < size:
            tail = data[pos:] if pos else data
            self._pending.append(tail)
            self._pending_len = len(tail)
        return frames

    def _fail(self, length: int) -> None:
        error: ShortFrame | ZeroLengthFrame | OversizedFrame
        if length == 0:
            error = ZeroLengthFrame("frame header declares length 0")
        elif length < HEADER_SIZE:
            error = ShortFrame(
                f"frame header declares length {length}, shorter than the {HEADER_SIZE}-byte header"
            )
        else:
            error = OversizedFrame(f"frame of {length} bytes exceeds the limit of {self.max_frame_bytes}")
        self._error = error
        self._pending.clear()
        self._pending_len = 0
        raise error
