"""Runtime services layer (file): transfer tasks (UUID ids), the sessions logged in to them, their expiry."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from runtime.services.file.offline_store import Upload


@dataclass
class Task:
    """One transfer: who sends what to whom, and the connections logged in for it."""

    task_id: str
    from_user_id: int
    to_user_id: int
    file_name: str
    size: int
    mode: int
    touched: float = field(default_factory=time.monotonic)
    sender: Any = None  # transport Link of the online sender or the offline uploader
    receiver: Any = None  # transport Link of the online receiver
    upload: Upload | None = None
    pump: asyncio.Task[None] | None = None
    pending: dict[int, asyncio.Future[Any]] = field(default_factory=dict)  # offset -> chunk reply

    def touch(self) -> None:
        """Record activity (the idle timeout counts from here)."""
        self.touched = time.monotonic()

    def fail_pending(self) -> None:
        """Wake every waiter for a chunk with None (the peer is gone or the task ended)."""
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_result(None)


@dataclass(frozen=True)
class Session:
    """What a file-service connection logged in as (kept in the link's extras)."""

    role: int
    task_id: str
    user_id: int


class TaskTable:
    """Live tasks by id; tasks idle longer than the timeout are expired by `expired()`."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.tasks: dict[str, Task] = {}

    def create(self, from_user_id: int, to_user_id: int, file_name: str, size: int, mode: int) -> Task:
        """A new task with a fresh random UUID."""
        task_id = str(uuid.uuid4())
        task = Task(task_id, from_user_id, to_user_id, file_name, size, mode)
        self.tasks[task_id] = task
        return task

    def get(self, task_id: str) -> Task | None:
        """The live task with that id."""
        return self.tasks.get(task_id)

    def remove(self, task_id: str) -> Task | None:
        """Forget a task (its waiters are woken)."""
        task = self.tasks.pop(task_id, None)
        if task is not None:
            task.fail_pending()
        return task

    def expired(self, now: float) -> list[Task]:
        """Remove and return tasks idle for longer than the timeout."""
        out = [t for t in self.tasks.values() if now - t.touched > self.timeout]
        for task in out:
            self.remove(task.task_id)
        return out
