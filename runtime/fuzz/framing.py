"""Runtime fuzz layer: sans-IO checks of the frame codec and the connection state machine.

- `check_roundtrip`: frames encoded, delivered in arbitrary chunks, decode to exactly the same frames.
- `check_decoder`: any bytes: the decoder either returns frames that re-encode to exactly the bytes consumed,
  or raises `FrameError` (and then keeps raising it); a complete frame is never left undecoded.
- `check_connection`: any bytes into a server-side `Connection`: no exception escapes, nothing is yielded
  after it decided to close, and heartbeats are answered with the request's seq.
- `check_limit`: the frame-length limit is exact: a frame of `max_frame_bytes` decodes, one byte more is
  refused.
"""

from __future__ import annotations

from runtime.connection import HEARTBEAT_COMMAND_ID, Connection, Kind
from runtime.errors import FrameError, OversizedFrame
from runtime.framing import HEADER, HEADER_SIZE, FrameDecoder, encode_frame
from runtime.fuzz.live import recorder
from runtime.registry import Registry

Decoder = type[FrameDecoder]
SMALL_MAX_FRAME = 4096  # a small limit makes oversized frames reachable by fuzzing


def check_roundtrip(
    frames: list[tuple[int, int, int, bytes]], chunks_at: list[int], decoder: Decoder = FrameDecoder
) -> None:
    """Encode (service id, command id, seq, body) frames, feed them cut at `chunks_at`, get them back."""
    wire = b"".join(encode_frame(sid, cid, seq, body) for sid, cid, seq, body in frames)
    cuts = sorted({c for c in chunks_at if 0 < c < len(wire)})
    chunks = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    recorder().add("decode", chunks=[c.hex() for c in chunks], expect="roundtrip")
    dec = decoder(1 << 20)
    out = []
    for chunk in chunks:
        out.extend(dec.feed(chunk))
    got = [(f.service_id, f.command_id, f.seq, bytes(f.body)) for f in out]
    assert got == frames, f"decoded {len(got)} frames, sent {len(frames)}: {got!r} != {frames!r}"
    assert dec.buffered == 0, f"{dec.buffered} bytes left over after whole frames"


def check_decoder(chunks: list[bytes], decoder: Decoder = FrameDecoder) -> None:
    """Arbitrary chunks: frames plus the buffered tail account for every byte; errors are FrameErrors only."""
    recorder().add("decode", chunks=[c.hex() for c in chunks], expect="consistent")
    dec = decoder(SMALL_MAX_FRAME)
    consumed = b""
    data = b""
    for chunk in chunks:
        data += chunk
        try:
            frames = dec.feed(chunk)
        except FrameError as exc:
            try:
                dec.feed(b"")
            except FrameError as again:
                assert type(again) is type(exc), "a broken decoder changed its error"
            else:
                raise AssertionError("a broken decoder accepted more input") from None
            return
        for frame in frames:
            consumed += frame.encode()
        assert data.startswith(consumed), "decoded frames do not re-encode to the bytes received"
        assert len(data) - len(consumed) == dec.buffered, "bytes lost or duplicated between frames"
    tail = data[len(consumed) :]
    if len(tail) >= HEADER_SIZE:
        (length,) = HEADER.unpack_from(tail)[:1]
        assert length > len(tail), f"a complete {length}-byte frame was left undecoded"


def check_connection(registry: Registry, chunks: list[bytes], decoder: Decoder = FrameDecoder) -> None:
    """Arbitrary chunks into a server-side connection: it never raises and stops yielding once closing."""
    recorder().add("connection", chunks=[c.hex() for c in chunks])
    conn = Connection(registry, Kind.CLIENT_SESSION, 0.0, peer="fuzz", max_frame_bytes=SMALL_MAX_FRAME)
    conn._decoder = decoder(SMALL_MAX_FRAME)  # the decoder under test (a planted one in fuzzer self-tests)
    for i, chunk in enumerate(chunks):
        was_open = conn.is_open
        taken = list(conn.receive_data(chunk, float(i)))
        if not was_open:
            assert not taken, "a closed connection yielded frames"
        for frame, info in taken:
            assert frame.command_id == info.command_id
            assert frame.command_id != HEARTBEAT_COMMAND_ID, "heartbeats must be answered, not dispatched"
        conn.data_to_send()
    if not conn.is_open:
        assert conn.close_reason, "closed without a reason"


def limit_frame(max_frame_bytes: int, offset: int, command_id: int = 0xFFFE) -> bytes:
    """A frame whose total length is `max_frame_bytes + offset` (an unknown command, zero-filled body)."""
    return encode_frame(0xFF, command_id, 1, bytes(max_frame_bytes + offset - HEADER_SIZE))


def check_limit(
    offset: int, chunk: int, decoder: Decoder = FrameDecoder, limit: int = SMALL_MAX_FRAME
) -> None:
    """A frame `offset` bytes over (or under) the limit, fed in `chunk`-byte pieces: decoded whole when it
    fits, refused with `OversizedFrame` when it does not."""
    wire = limit_frame(limit, offset)
    chunks = [wire[i : i + chunk] for i in range(0, len(wire), chunk)]
    recorder().add("limit", offset=offset, chunk=chunk, limit=limit)
    dec = decoder(limit)
    frames = []
    try:
        for piece in chunks:
            frames.extend(dec.feed(piece))
    except OversizedFrame:
        assert offset > 0, f"a frame of {limit + offset} bytes (limit {limit}) was refused as oversized"
        return
    assert offset <= 0, f"a frame of {limit + offset} bytes was accepted with a limit of {limit}"
    assert len(frames) == 1 and len(frames[0].body) == len(wire) - HEADER_SIZE, (
        "the frame at the limit was lost"
    )
