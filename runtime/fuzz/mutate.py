"""Runtime fuzz layer: frame mutators: bit flips, length lies, truncation, header field swaps, random bytes.

Each mutator is a hypothesis strategy from valid frame bytes to malformed bytes, so shrinking turns a failure
into the smallest frame and the smallest change that still breaks the peer.
"""

from __future__ import annotations

import struct

from hypothesis import strategies as st

from runtime.framing import HEADER_SIZE

Strat = st.SearchStrategy[bytes]
# Header fields as (offset, size): length u32, then six u16 (version, flag, service, command, seq, reserved).
FIELDS = [(0, 4), (4, 2), (6, 2), (8, 2), (10, 2), (12, 2), (14, 2)]


def bit_flip(frame: bytes) -> Strat:
    """Flip one bit anywhere in the frame."""
    if not frame:
        return st.just(frame)
    return st.integers(0, len(frame) * 8 - 1).map(
        lambda bit: frame[: bit // 8] + bytes([frame[bit // 8] ^ (1 << (bit % 8))]) + frame[bit // 8 + 1 :]
    )


def length_lie(frame: bytes) -> Strat:
    """Rewrite the length field: zero, shorter than a header, off by a little, or far too large."""
    real = len(frame)
    lies = st.one_of(
        st.sampled_from([0, 1, HEADER_SIZE - 1, HEADER_SIZE, real - 1, real + 1, 2**31, 2**32 - 1]),
        st.integers(0, 2**32 - 1),
    )
    return lies.filter(lambda n: n != real).map(lambda n: struct.pack(">I", n) + frame[4:])


def truncate(frame: bytes) -> Strat:
    """Cut the frame short (the server then waits for the rest: it must not hang other connections)."""
    return st.integers(0, max(0, len(frame) - 1)).map(lambda n: frame[:n])


def swap_fields(frame: bytes) -> Strat:
    """Swap two 16-bit header fields (e.g. service id and command id), or overwrite one with any value."""
    if len(frame) < HEADER_SIZE:
        return st.just(frame)
    u16 = FIELDS[1:]

    def swap(pair: tuple[int, int]) -> bytes:
        (a, _), (b, _) = u16[pair[0]], u16[pair[1]]
        data = bytearray(frame)
        data[a : a + 2], data[b : b + 2] = frame[b : b + 2], frame[a : a + 2]
        return bytes(data)

    def overwrite(item: tuple[int, int]) -> bytes:
        offset, _ = u16[item[0]]
        return frame[:offset] + struct.pack(">H", item[1]) + frame[offset + 2 :]

    indices = st.integers(0, len(u16) - 1)
    return st.one_of(
        st.tuples(indices, indices).filter(lambda p: p[0] != p[1]).map(swap),
        st.tuples(indices, st.integers(0, 0xFFFF)).map(overwrite),
    )


def splice_garbage(frame: bytes) -> Strat:
    """Insert random bytes at a random position."""
    return st.tuples(st.integers(0, len(frame)), st.binary(min_size=1, max_size=32)).map(
        lambda t: frame[: t[0]] + t[1] + frame[t[0] :]
    )


MUTATORS = {
    "bit_flip": bit_flip,
    "length_lie": length_lie,
    "truncate": truncate,
    "swap_fields": swap_fields,
    "splice": splice_garbage,
}


def mutated(frames: Strat) -> Strat:
    """Malformed bytes made from valid frames by one of the mutators."""
    return st.tuples(frames, st.sampled_from(sorted(MUTATORS))).flatmap(lambda t: MUTATORS[t[1]](t[0]))


def split(data: bytes) -> st.SearchStrategy[list[bytes]]:
    """`data` cut into consecutive chunks (as TCP may deliver it)."""
    if len(data) < 2:
        return st.just([data])
    cuts = st.lists(st.integers(1, len(data) - 1), max_size=4, unique=True).map(sorted)
    return cuts.map(lambda cs: [data[a:b] for a, b in zip([0, *cs], [*cs, len(data)], strict=True)])
