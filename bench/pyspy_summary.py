"""Summarise `py-spy record --format raw` files: where a process's samples went, by area of the code.

    py-spy record -p PID -d 5 -r 200 --format raw -o msg0.txt --nonblocking
    .venv/bin/python bench/pyspy_summary.py msg0.txt biz0.txt

For each file: the share of samples per thread (the event loop, the SQLite writer, ...), per area (the first
matching rule of AREAS on the innermost frames: the storage writer, links, the dispatcher, stages, metrics,
logging, the event loop itself, ...), and the functions with the most samples of their own (and, with
`--cumulative N`, the N functions on the most stacks). py-spy counts a sample whenever the process is
runnable, waiting for a CPU included: on a busy machine the line after a socket write (which wakes the peer)
collects preemptions, so `perf record` is the measure of CPU, this of where Python code spends it.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

# (area, substrings of a frame: the innermost frame matching any of them names the area of a sample)
AREAS = (
    ("storage writer (SQLite, AES-GCM)", ("storage/sqlite", "storage/at_rest")),
    ("logging", ("logging/", "cluster/logs.py")),
    ("metrics", ("monitor/metrics.py",)),
    ("internal links (relay, in-process)", ("services/links.py", "local_links.py", "msg/routing.py")),
    ("client transport and framing", ("runtime/transport.py", "runtime/framing.py", "runtime/connection.py")),
    ("dispatcher and stages", ("runtime/dispatch", "runtime/stages/")),
    ("msg handlers and delivery", ("services/msg/",)),
    ("biz handlers", ("services/biz/",)),
    ("router", ("services/router.py",)),
    ("protobuf", ("google/protobuf", "_pb2")),
    ("event loop (uvloop, asyncio)", ("uvloop", "asyncio/")),
)


def summarise(path: Path, top: int, cumulative: int = 0) -> None:
    threads: collections.Counter[str] = collections.Counter()
    areas: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        threads["writer thread" if any("threading.py" in f for f in frames[:3]) else "event loop"] += n
        own[frames[-1]] += n
        for name in {_function(f) for f in frames}:
            inclusive[name] += n
        for frame in reversed(frames):
            area = next((name for name, keys in AREAS if any(k in frame for k in keys)), None)
            if area is not None:
                areas[area] += n
                break
        else:
            areas["other"] += n
    print(f"\n{path} ({total} samples)")
    for title, counter in (("threads", threads), ("areas", areas)):
        print(f"  {title}:")
        for key, n in counter.most_common():
            print(f"    {100 * n / max(1, total):5.1f}%  {key}")
    print("  own samples:")
    for key, n in own.most_common(top):
        print(f"    {100 * n / max(1, total):5.1f}%  {key[:120]}")
    if cumulative:
        print("  cumulative (samples with the function anywhere on the stack; entry frames left out):")
        shown = 0
        for key, n in inclusive.most_common():
            if n >= 0.98 * total:
                continue  # runpy, the worker's main, the event loop's run: (nearly) every sample
            print(f"    {100 * n / max(1, total):5.1f}%  {key[:120]}")
            shown += 1
            if shown >= cumulative:
                break


def _function(frame: str) -> str:
    """A frame without its line: `f (runtime/transport.py:232)` -> `f (runtime/transport.py)`."""
    head, sep, where = frame.rpartition(" (")
    if not sep:
        return frame
    return f"{head} ({where.rstrip(')').rsplit(':', 1)[0]})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--cumulative", type=int, default=0, help="also the N functions on the most stacks")
    args = ap.parse_args()
    for path in args.files:
        summarise(path, args.top, args.cumulative)


if __name__ == "__main__":
    main()
