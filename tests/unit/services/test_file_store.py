"""Unit: the offline-file format, uploads, task ids and task expiry (no sockets)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from generated.teamtalk.registry import REGISTRY
from runtime.services.file.offline_store import (
    HEADER_SIZE,
    OfflineFileError,
    OfflineHeader,
    Upload,
    delete_offline,
    offline_path,
    read_chunk,
    read_header,
    valid_task_id,
)
from runtime.services.file.tasks import TaskTable


def header(task_id: str, size: int) -> OfflineHeader:
    return OfflineHeader(task_id, 7, 9, 1_700_000_000, size, "résumé.pdf")


def test_header_round_trips_and_rejects_garbage() -> None:
    h = header(str(uuid.uuid4()), 12345)
    data = h.pack()
    assert len(data) == HEADER_SIZE
    assert OfflineHeader.unpack(data) == h
    with pytest.raises(OfflineFileError):
        OfflineHeader.unpack(b"XXXX" + data[4:])
    with pytest.raises(OfflineFileError):
        OfflineHeader.unpack(data[:10])


def test_paths_are_two_level_and_only_for_uuids(tmp_path: Path) -> None:
    task = str(uuid.uuid4())
    assert offline_path(tmp_path, task) == tmp_path / "offline_file" / task[:2] / task
    for bad in ("../../etc/passwd", "", task.upper(), task + "x", "a" * 36):
        assert not valid_task_id(bad)
        with pytest.raises(OfflineFileError):
            offline_path(tmp_path, bad)


def test_upload_is_published_only_when_complete(tmp_path: Path) -> None:
    task = str(uuid.uuid4())
    up = Upload(tmp_path, header(task, 10))
    up.write(0, b"01234")
    assert not offline_path(tmp_path, task).exists() and not up.complete
    with pytest.raises(OfflineFileError):
        up.write(3, b"xx")  # not where the last chunk ended
    with pytest.raises(OfflineFileError):
        up.write(5, b"too many bytes")
    up.write(5, b"56789")
    assert up.complete
    up.finish()
    assert read_header(tmp_path, task) == header(task, 10)
    assert read_chunk(tmp_path, task, 3, 4) == b"3456"
    assert read_chunk(tmp_path, task, 8, 100) == b"89"
    assert delete_offline(tmp_path, task) and not delete_offline(tmp_path, task)
    with pytest.raises(OfflineFileError):
        read_header(tmp_path, task)


def test_aborted_upload_leaves_nothing(tmp_path: Path) -> None:
    task = str(uuid.uuid4())
    up = Upload(tmp_path, header(task, 10))
    up.write(0, b"abc")
    up.abort()
    assert list((tmp_path / "offline_file").rglob("*.*")) == [] and not offline_path(tmp_path, task).exists()


def test_task_ids_are_fresh_uuids_and_idle_tasks_expire() -> None:
    table = TaskTable(timeout=60.0)
    offline = REGISTRY.enums.TransferFileType.FILE_TYPE_OFFLINE
    a = table.create(1, 2, "a", 10, offline)
    b = table.create(1, 2, "a", 10, offline)
    assert a.task_id != b.task_id and valid_task_id(a.task_id) and uuid.UUID(a.task_id).version == 4
    a.touched, b.touched = 100.0, 150.0
    assert [t.task_id for t in table.expired(now=200.0)] == [a.task_id]
    assert table.get(a.task_id) is None and table.get(b.task_id) is b
