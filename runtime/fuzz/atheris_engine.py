"""Runtime fuzz layer: coverage-guided fuzzing of the frame decoder and connection with atheris (optional).

Run as `python -m runtime.fuzz.atheris_engine --time 60 --artifacts DIR [--plant framing]`; `ttgen fuzz
--engine atheris` does that in a child process (libFuzzer exits the process when it stops) and turns every
crash file into a reproducer. The input's first byte picks where the stream is cut into reads.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime.framing import FrameDecoder
from runtime.registry import Registry


def chunks_of(data: bytes) -> list[bytes]:
    """The reads a fuzz input stands for: byte 0 is a cut stride, the rest is the stream."""
    if not data:
        return [b""]
    stride, stream = data[0] % 32 + 1, data[1:]
    return [stream[i : i + stride] for i in range(0, len(stream), stride)] or [b""]


def available() -> bool:
    """Whether atheris is installed (it is an optional dependency: `pip install ttgen[fuzz]`)."""
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--time", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--artifacts", type=Path, required=True)
    parser.add_argument("--plant", choices=["framing"], default=None)
    args = parser.parse_args(argv)
    import atheris

    with atheris.instrument_imports():
        from runtime import connection, framing  # noqa: F401
        from runtime.fuzz import framing as checks
        from runtime.fuzz.plant import OffByOneDecoder
    decoder: type[FrameDecoder] = OffByOneDecoder if args.plant == "framing" else FrameDecoder
    registry = Registry("atheris", "0", [])

    def one_input(data: bytes) -> None:
        chunks = chunks_of(data)
        checks.check_decoder(chunks, decoder)
        checks.check_connection(registry, chunks, decoder)

    args.artifacts.mkdir(parents=True, exist_ok=True)
    flags = [
        sys.argv[0],
        f"-max_total_time={args.time}",
        f"-seed={args.seed or 1}",
        f"-artifact_prefix={args.artifacts}/",
        "-print_final_stats=1",
    ]
    atheris.Setup(flags, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
