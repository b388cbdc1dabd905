"""Frame mutators change frames the way they say; the decoder checks catch a planted off-by-one."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.framing import FrameDecoder, encode_frame
from runtime.fuzz import framing, mutate
from runtime.fuzz.plant import OffByOneDecoder

FRAME = encode_frame(3, 0x0301, 7, b"hello world")
SETTINGS = settings(max_examples=60, derandomize=True, database=None)


@SETTINGS
@given(mutate.bit_flip(FRAME))
def test_bit_flip_changes_exactly_one_bit(data: bytes) -> None:
    diff = int.from_bytes(data, "big") ^ int.from_bytes(FRAME, "big")
    assert len(data) == len(FRAME) and bin(diff).count("1") == 1


@SETTINGS
@given(mutate.length_lie(FRAME))
def test_length_lie_rewrites_only_the_length(data: bytes) -> None:
    assert data[4:] == FRAME[4:] and struct.unpack(">I", data[:4])[0] != len(FRAME)


@SETTINGS
@given(mutate.truncate(FRAME))
def test_truncate_cuts_short(data: bytes) -> None:
    assert FRAME.startswith(data) and len(data) < len(FRAME)


@SETTINGS
@given(mutate.swap_fields(FRAME))
def test_swap_fields_touches_only_the_header(data: bytes) -> None:
    assert data[16:] == FRAME[16:] and data[:4] == FRAME[:4]


@SETTINGS
@given(st.binary(max_size=80).flatmap(mutate.split))
def test_split_keeps_every_byte(chunks: list[bytes]) -> None:
    assert all(chunks) or len(chunks) == 1


@SETTINGS
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=4))
def test_real_decoder_passes_the_garbage_check(chunks: list[bytes]) -> None:
    framing.check_decoder(chunks, FrameDecoder)


def test_garbage_check_catches_the_planted_off_by_one() -> None:
    empty = encode_frame(7, 0x0701, 1, b"")
    framing.check_decoder([empty], FrameDecoder)
    with pytest.raises(AssertionError, match="left undecoded"):
        framing.check_decoder([empty], OffByOneDecoder)
    with pytest.raises(AssertionError, match="decoded 0 frames"):
        framing.check_roundtrip([(7, 0x0701, 1, b"")], [], OffByOneDecoder)


def test_off_by_one_decoder_is_otherwise_correct() -> None:
    frames = [(3, 0x0301, 1, b"abc"), (3, 0x0301, 2, b"defg")]
    framing.check_roundtrip(frames, [5, 20], OffByOneDecoder)
