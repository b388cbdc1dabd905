"""Unit tests of the sans-IO frame codec: split/coalesced reads, limits, and hypothesis round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.errors import FrameError, OversizedFrame, ShortFrame, ZeroLengthFrame
from runtime.framing import (
    HEADER,
    HEADER_SIZE,
    ZERO_COPY_THRESHOLD,
    Frame,
    FrameDecoder,
    FrameHeader,
    append_frame,
    encode_frame,
)

u16 = st.integers(0, 0xFFFF)
frames_st = st.tuples(u16, u16, u16, st.binary(max_size=300), u16, u16, u16).map(lambda t: Frame(*t))


def test_frame_fields_follow_the_header() -> None:
    frame = Frame(3, 0x0301, 7, b"abc", flag=2)
    assert frame.length == 19 and frame.header == FrameHeader(19, 1, 2, 3, 0x0301, 7, 0)
    assert FrameDecoder().feed(frame.encode()) == [frame]


def test_header_layout_is_big_endian_16_bytes() -> None:
    data = encode_frame(3, 0x0301, 7, b"abc")
    assert len(data) == 19
    assert data[:16] == bytes.fromhex("00000013 0001 0000 0003 0301 0007 0000".replace(" ", ""))
    assert FrameHeader.unpack(data) == FrameHeader(19, 1, 0, 3, 0x0301, 7, 0)
    assert FrameHeader(19, 1, 0, 3, 0x0301, 7, 0).pack() == data[:16]


def test_empty_body_gives_a_16_byte_frame() -> None:
    data = encode_frame(7, 0x0701, 0)
    assert len(data) == HEADER_SIZE
    assert FrameDecoder().feed(data) == [Frame(7, 0x0701, 0, b"")]


def test_coalesced_frames_decode_in_order() -> None:
    out = bytearray()
    for i in range(5):
        append_frame(out, 3, 0x0301, i, bytes([i]) * i)
    frames = FrameDecoder().feed(bytes(out))
    assert [(f.seq, bytes(f.body)) for f in frames] == [(i, bytes([i]) * i) for i in range(5)]


def test_one_chunk_and_byte_at_a_time_give_the_same_frames() -> None:
    data = b"".join(encode_frame(1, 0x100 + i, i, b"x" * (i * 37)) for i in range(20))
    whole = FrameDecoder().feed(data)
    decoder = FrameDecoder()
    trickled: list[Frame] = []
    for i in range(len(data)):
        trickled.extend(decoder.feed(data[i : i + 1]))
    assert trickled == whole
    assert len(whole) == 20
    assert decoder.buffered == 0


def test_split_inside_header_and_body() -> None:
    data = encode_frame(2, 0x0204, 9, b"hello world")
    decoder = FrameDecoder()
    assert decoder.feed(data[:5]) == []
    assert decoder.feed(data[5:20]) == []
    assert decoder.buffered == 20
    assert decoder.feed(data[20:] + data[:3]) == [Frame(2, 0x0204, 9, b"hello world")]
    assert decoder.buffered == 3


def test_large_body_is_a_view_not_a_copy() -> None:
    body = b"z" * (ZERO_COPY_THRESHOLD + 1)
    (frame,) = FrameDecoder().feed(encode_frame(5, 0x0505, 1, body))
    assert isinstance(frame.body, memoryview)
    assert frame.body == body


@pytest.mark.parametrize(
    ("length", "error"), [(0, ZeroLengthFrame), (1, ShortFrame), (15, ShortFrame), (1025, OversizedFrame)]
)
def test_bad_lengths_raise_typed_errors_that_close(length: int, error: type[FrameError]) -> None:
    decoder = FrameDecoder(max_frame_bytes=1024)
    good = encode_frame(1, 0x0103, 1, b"ok")
    bad = HEADER.pack(length, 1, 0, 1, 0x0103, 2, 0)
    with pytest.raises(error) as info:
        decoder.feed(good + bad)
    assert info.value.close_connection
    with pytest.raises(error):  # the decoder stays broken: a stream cannot resync
        decoder.feed(good)


def test_oversized_is_refused_from_the_header_alone() -> None:
    decoder = FrameDecoder(max_frame_bytes=64)
    with pytest.raises(OversizedFrame):
        decoder.feed(HEADER.pack(1 << 30, 1, 0, 1, 1, 1, 0))


def test_mutable_input_is_copied() -> None:
    data = bytearray(encode_frame(1, 2, 3, b"abc"))
    (frame,) = FrameDecoder().feed(data)
    data[16:] = b"XYZ"
    assert frame.body == b"abc"


@given(st.lists(frames_st, max_size=8))
def test_roundtrip(frames: list[Frame]) -> None:
    data = b"".join(f.encode() for f in frames)
    assert FrameDecoder(max_frame_bytes=1 << 16).feed(data) == frames
    for f in frames:
        assert f.header.length == HEADER_SIZE + len(f.body)


@given(st.lists(frames_st, min_size=1, max_size=5), st.lists(st.integers(1, 64), min_size=1, max_size=40))
def test_any_split_gives_the_same_frames(frames: list[Frame], cuts: list[int]) -> None:
    data = b"".join(f.encode() for f in frames)
    decoder = FrameDecoder()
    got: list[Frame] = []
    pos = 0
    for cut in cuts * (len(data) // max(1, sum(cuts)) + 1):
        got.extend(decoder.feed(data[pos : pos + cut]))
        pos += cut
        if pos >= len(data):
            break
    got.extend(decoder.feed(data[pos:]))
    assert got == frames


@given(st.binary(max_size=2000), st.integers(1, 50))
def test_arbitrary_bytes_give_frames_or_a_typed_error(data: bytes, step: int) -> None:
    decoder = FrameDecoder(max_frame_bytes=512)
    try:
        for i in range(0, len(data), step):
            for frame in decoder.feed(data[i : i + step]):
                assert 0 <= len(frame.body) <= 512 - HEADER_SIZE
    except FrameError as exc:
        assert exc.close_connection
