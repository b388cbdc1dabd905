"""Coroutine stepping: a handler coroutine runs inline up to its first suspension; only then does it get a
task, which continues it from there (a hand-rolled eager task start)."""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any


class Resume:
    """Continue a coroutine that already ran up to its first suspension, yielding `first` first."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self.coro
        yielded = self.first
        while True:
            try:
                value = yield yielded
            except BaseException as exc:  # cancellation and errors go into the handler, as with a plain await
                try:
                    yielded = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    yielded = coro.send(value)
                except StopIteration as stop:
                    return stop.value
