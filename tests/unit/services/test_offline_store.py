"""Unit: offline files sealed at rest in 64 KiB segments: any chunk reads back, nothing is stored in clear,
tampering and truncation are refused, files 0600 in 0700 folders."""

from __future__ import annotations

import random
import stat
from pathlib import Path

import pytest

from runtime.services.file.offline_store import (
    SEGMENT,
    OfflineCipher,
    OfflineFileError,
    OfflineHeader,
    Upload,
    offline_path,
    read_chunk,
    read_header,
)

TASK = "0f1e2d3c-4b5a-4978-8796-a5b4c3d2e1f0"


def upload(tmp_path: Path, content: bytes, cipher: OfflineCipher, seed: int = 1) -> None:
    header = OfflineHeader(TASK, 7, 8, 1_700_000_000, len(content), "report.pdf")
    up = Upload(tmp_path, header, cipher)
    rng = random.Random(seed)
    pos = 0
    while pos < len(content):
        n = rng.choice([1, 100, 32 * 1024, SEGMENT, SEGMENT + 3])
        up.write(pos, content[pos : pos + n])
        pos += min(n, len(content) - pos)
    assert up.complete
    up.finish()


@pytest.mark.parametrize("size", [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT + 12345])
def test_round_trip_of_any_chunk(tmp_path: Path, size: int) -> None:
    cipher = OfflineCipher(bytes(range(32)))
    content = random.Random(size).randbytes(size)
    upload(tmp_path, content, cipher)
    assert read_header(tmp_path, TASK).size == size
    rng = random.Random(5)
    for _ in range(30):
        offset = rng.randrange(0, size + 2)
        n = rng.choice([0, 1, 1000, SEGMENT, 2 * SEGMENT + 7])
        assert read_chunk(tmp_path, TASK, offset, n, cipher) == content[offset : offset + n]


def test_sealed_on_disk_private_and_tamper_evident(tmp_path: Path) -> None:
    cipher = OfflineCipher(bytes(range(32)))
    content = b"confidential quarterly figures " * 5000
    upload(tmp_path, content, cipher)
    path = offline_path(tmp_path, TASK)
    raw = path.read_bytes()
    assert b"confidential" not in raw
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    with pytest.raises(OfflineFileError):
        read_chunk(tmp_path, TASK, 0, 10, OfflineCipher(bytes(32)))  # another key
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 1
    path.write_bytes(bytes(flipped))
    with pytest.raises(OfflineFileError):
        read_chunk(tmp_path, TASK, 0, len(content), cipher)
    path.write_bytes(raw[: len(raw) - 100])
    with pytest.raises(OfflineFileError):
        read_chunk(tmp_path, TASK, len(content) - 10, 10, cipher)
