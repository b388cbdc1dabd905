"""Benchmark: durable message inserts per second, group commit versus one transaction per message.

Both modes run on real SQLite files (WAL, synchronous=FULL) in the same process and run; each mode is
measured several times and the median is reported. Senders are concurrent (asyncio.gather), as many
connections would be.

    .venv/bin/python bench/bench_storage.py [--messages 5000] [--baseline-messages 1000] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime.storage import NewUser
from runtime.storage.sqlite import SqliteStorage

PAIRS = 50


async def one_run(data_dir: Path, messages: int, group_commit: bool, encrypt: bool) -> tuple[float, float]:
    """Messages per second and average batch size of one run."""
    async with SqliteStorage(data_dir, group_commit=group_commit, encrypt_at_rest=encrypt) as store:
        users = [await store.create_user(NewUser(f"user{i}")) for i in range(PAIRS * 2)]
        payload = os.urandom(200)
        batches_before, ops_before = store.writer.batches, store.writer.operations
        start = time.perf_counter()
        await asyncio.gather(
            *[
                store.send_single(users[2 * (i % PAIRS)].id, users[2 * (i % PAIRS) + 1].id, 1, payload)
                for i in range(messages)
            ]
        )
        elapsed = time.perf_counter() - start
        batches = store.writer.batches - batches_before
        ops = store.writer.operations - ops_before
    return messages / elapsed, ops / max(batches, 1)


def measure(messages: int, group_commit: bool, runs: int, encrypt: bool) -> tuple[float, float]:
    rates, sizes = [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="ttgen-bench-") as tmp:
            rate, size = asyncio.run(one_run(Path(tmp), messages, group_commit, encrypt))
        rates.append(rate)
        sizes.append(size)
    return statistics.median(rates), statistics.median(sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000, help="messages per group-commit run")
    parser.add_argument("--baseline-messages", type=int, default=1000, help="messages per baseline run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--encrypt", action="store_true", help="AES-256-GCM at rest")
    args = parser.parse_args()
    grouped, batch = measure(args.messages, True, args.runs, args.encrypt)
    single, _ = measure(args.baseline_messages, False, args.runs, args.encrypt)
    print(
        f"sqlite {__import__('sqlite3').sqlite_version}, WAL, synchronous=FULL, encrypt={args.encrypt}, "
        f"median of {args.runs} runs"
    )
    print(
        f"group commit          : {grouped:10.0f} msg/s  ({args.messages} msgs/run, median batch {batch:.0f})"
    )
    print(f"one txn per message   : {single:10.0f} msg/s  ({args.baseline_messages} msgs/run)")
    print(f"ratio                 : {grouped / single:10.1f}x")


if __name__ == "__main__":
    main()
