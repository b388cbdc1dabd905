"""Benchmark: fuzz throughput per suite on the bundled TeamTalk stack, and a long run's totals.

Run from the repository root:

    .venv/bin/python bench/bench_fuzz.py [--seconds 20] [--long 120]

For each suite (roundtrip, frames: sans-IO; live, stateful: against the in-process cluster) it runs the
`ttgen fuzz` engine for `--seconds` and prints examples, examples/s (wall and per CPU second), frames sent
and failures. With `--long N` it then runs every suite together for N seconds, as `ttgen fuzz spec/teamtalk
--time Ns` does. CPU seconds are the steadier figure on a shared machine. Results are written down in
bench/RESULTS-fuzz.md by hand, not asserted.
"""

from __future__ import annotations

import argparse
import logging
import time

from generated.teamtalk import registry, servers, strategies
from runtime.fuzz.cluster import ClusterTarget
from runtime.fuzz.engine import Engine
from runtime.fuzz.stack import FuzzStack


def run(stack: FuzzStack, suites: tuple[str, ...], seconds: float, live: bool) -> None:
    target = ClusterTarget(stack) if live else None
    cpu = time.process_time()
    try:
        engine = Engine(stack, target, suite_names=suites, budget=seconds, seed=1)
        found = engine.run()
    finally:
        if target is not None:
            target.close()
    cpu = time.process_time() - cpu
    s = engine.stats
    print(
        f"{'+'.join(suites):32s} {s.examples:7d} examples  {s.rate:8.1f}/s wall  "
        f"{s.examples / cpu:8.1f}/s cpu  "
        f"frames {s.frames:7d}  failures {len(found)}  commands {len(s.covered_commands)}  "
        f"messages {len(s.covered_messages)}"
    )
    for rep in found:
        print("   ", rep.case, rep.failure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--long", type=float, default=0.0)
    args = parser.parse_args()
    logging.getLogger().addHandler(logging.NullHandler())
    stack = FuzzStack.from_modules(registry, servers, strategies)
    for suite, live in (("roundtrip", False), ("frames", False), ("live", True), ("stateful", True)):
        run(stack, (suite,), args.seconds, live)
    if args.long:
        run(stack, ("roundtrip", "frames", "live", "stateful"), args.long, True)


if __name__ == "__main__":
    main()
