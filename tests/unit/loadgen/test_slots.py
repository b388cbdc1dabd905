"""runtime.loadgen.worker: the login slots of a load process (FIFO hand-over, no leak on cancellation)."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("generated.teamtalk.registry")

from generated.teamtalk.registry import REGISTRY
from runtime.loadgen.conn import Wire
from runtime.loadgen.worker import LoadProcess

JOB = {"stack": "generated.teamtalk", "password_md5": "x", "endpoints": {}, "users": [], "max_inflight": 2}


def test_slots_are_handed_over_in_order_and_never_leak() -> None:
    async def scenario() -> None:
        p = LoadProcess(dict(JOB), Wire(REGISTRY))
        await p.acquire_slot()
        await p.acquire_slot()
        assert p.inflight == 2
        order: list[int] = []

        async def wait(k: int) -> None:
            await p.acquire_slot()
            order.append(k)

        waiters = [asyncio.create_task(wait(k)) for k in range(3)]
        await asyncio.sleep(0)
        assert order == [] and p.inflight == 2
        waiters[1].cancel()  # a waiter that gives up must not take a slot with it
        await asyncio.sleep(0)
        p.release_slot()
        await asyncio.sleep(0)
        assert order == [0] and p.inflight == 2
        p.release_slot()
        await asyncio.sleep(0)
        assert order == [0, 2] and p.inflight == 2
        for _ in range(2):
            p.release_slot()
        assert p.inflight == 0
        await asyncio.gather(*waiters, return_exceptions=True)

    asyncio.run(scenario())
