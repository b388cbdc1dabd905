"""Benchmark: generating a stack (load + validate + emit + protoc) against bare protoc, in the same run.

Run from the repository root:

    .venv/bin/python bench/bench_generate.py [--runs 9] [--only teamtalk|synthetic]

For the bundled TeamTalk spec and a synthetic spec (100 messages, 100 commands, built here) it measures, in
rounds that interleave the three so that the load of a shared machine falls on all of them alike:
  (a) CLI: `ttgen generate SPEC -o TMP/runN` as a subprocess into a fresh folder (interpreter start-up,
      imports, template cache look-up and writing every file included);
  (b) in-process: `check_spec` + `emit_stack`, what `ttgen generate` does before writing, interpreter warm;
  (c) bare protoc: `python -m grpc_tools.protoc --python_out --pyi_out` as a subprocess on the same emitted
      `.proto` files (what a hand-written `.proto` workflow would run).
It prints the median wall and CPU time of each, the ratios a/c and b/c, the CPU per pipeline stage, and the
verdicts on the goal of issue 2: under 2 s wall, and under 2x bare protoc. CPU time is the steadier figure on
a busy machine (a subprocess's CPU is its own rusage; the in-process CPU is this process's), and a ratio
measured within one run is steadier than either absolute number.

Subprocesses run without PYTHONDONTWRITEBYTECODE, so they use bytecode caches as an installed ttgen does.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

from codegen.api import check_spec
from codegen.emit import EMITTERS, EmitOptions, FileMap, emit_stack
from codegen.load import load_spec
from codegen.model import Spec
from codegen.perf import gc_paused
from codegen.protoc import well_known_include
from codegen.validate import validate

ROOT = Path(__file__).resolve().parents[1]
MODULES = 4
MESSAGES_PER_MODULE = 25
GOAL_WALL_S = 2.0
T = TypeVar("T")
GOAL_RATIO = 2.0


def synthetic_spec(folder: Path) -> Path:
    """Write a spec of 4 modules x 25 messages (100) and 100 commands, with cross-module references."""
    mods = []
    for m in range(MODULES):
        lines = [f"module: Bench.M{m}", f"service: {{name: S{m}, id: {m + 1}}}", "messages:"]
        for i in range(MESSAGES_PER_MODULE):
            lines += [f"  Msg{i}:", "    doc: A synthetic message.", "    fields:"]
            lines += [f"      f{k}: {{number: {k + 1}, type: uint32, label: required}}" for k in range(4)]
            lines += [
                "      name: {number: 5, type: string, label: optional, max_len: 64}",
                "      data: {number: 6, type: bytes, label: repeated, max_items: 8}",
            ]
            if m > 0:
                lines.append(f"      ref: {{number: 7, type: Bench.M{m - 1}.Msg{i}, label: optional}}")
        lines.append("commands:")
        for i in range(MESSAGES_PER_MODULE):
            cid = ((m + 1) << 8) | (i + 1)
            lines.append(f"  CID_S{m}_C{i}: {{id: {cid:#06x}, message: Msg{i}, direction: c2s}}")
        (folder / f"m{m}.yaml").write_text("\n".join(lines) + "\n")
        mods.append(f"m{m}.yaml")
    hosts = ", ".join(f"CID_S{m}_C{i}" for m in range(MODULES) for i in range(MESSAGES_PER_MODULE))
    (folder / "ttgen.yaml").write_text(
        "spec: bench\nversion: 1.0.0\nsyntax: proto2\n"
        f"modules: [{', '.join(mods)}]\n"
        f"cluster: {{services: {{msg: {{role: msg, hosts: [{hosts}]}}}}}}\n"
    )
    return folder


def _self_cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


def _children_cpu() -> float:
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return kids.ru_utime + kids.ru_stime


@dataclass
class Samples:
    """Wall and CPU seconds of each run of one contender."""

    label: str
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def median(self) -> tuple[float, float]:
        return statistics.median(self.wall), statistics.median(self.cpu)


def time_in_process(func: Callable[[], object], into: Samples) -> None:
    start, cpu = time.perf_counter(), _self_cpu()
    func()
    into.wall.append(time.perf_counter() - start)
    into.cpu.append(_self_cpu() - cpu)


def time_subprocess(cmd: list[str], env: dict[str, str], into: Samples) -> None:
    start, cpu = time.perf_counter(), _children_cpu()
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    into.wall.append(time.perf_counter() - start)
    into.cpu.append(_children_cpu() - cpu)  # the child's own rusage, not this process's spawning work
    if done.returncode != 0:
        error = done.stderr.decode(errors="replace")
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{error}")


def stage_cpu(spec_dir: Path, runs: int) -> dict[str, float]:
    """Median CPU seconds of each pipeline stage (load, validate, every emitter) in this process."""
    samples: dict[str, list[float]] = {}

    def timed(name: str, func: Callable[[], T]) -> T:
        cpu = time.process_time()
        result = func()
        samples.setdefault(name, []).append(time.process_time() - cpu)
        return result

    for _ in range(runs):
        with gc_paused():  # as `check_spec` and `emit_stack` run
            spec: Spec = timed("load", partial(load_spec, spec_dir))
            timed("validate", partial(validate, spec))
            options = EmitOptions(spec_label="bench")
            files: dict[str, str | bytes] = {}
            for emitter in EMITTERS:
                added: FileMap = timed(emitter.name, partial(emitter.func, spec, options, files))
                files.update(added)
    return {name: statistics.median(values) for name, values in samples.items()}


def cli_command() -> list[str]:
    script = Path(sys.executable).parent / "ttgen"
    if script.is_file():
        return [str(script), "generate"]
    return [sys.executable, "-c", "import sys; from ttgen.cli import main; main(['generate', *sys.argv[1:]])"]


def bench(label: str, spec_dir: Path, runs: int) -> bool:
    """Measure one spec; print the table and verdicts; return whether every goal is met."""

    def in_process() -> dict[str, str | bytes]:
        spec, _ = check_spec(spec_dir)
        return emit_stack(spec)

    files = in_process()  # warm-up: imports, template compilation
    protos = sorted(name for name in files if name.endswith(".proto"))
    spec, _ = check_spec(spec_dir)
    # Subprocesses may cache bytecode (as an installed ttgen does), whatever this shell's setting.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cli = Samples("(a) ttgen generate, subprocess")
    inproc = Samples("(b) in-process pipeline")
    protoc = Samples("(c) bare protoc, subprocess")
    with tempfile.TemporaryDirectory(prefix="ttgen-bench-") as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "out"
        src.mkdir()
        out.mkdir()
        for name in protos:
            (src / name).write_text(str(files[name]), encoding="utf-8")
        protoc_cmd = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{src}",
            f"-I{well_known_include()}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            *[str(src / n) for n in protos],
        ]

        def cli_cmd(run: int) -> list[str]:
            return [*cli_command(), str(spec_dir), "-o", str(Path(tmp) / f"cli{run}")]

        # Warm-up of the subprocesses: bytecode caches, the jinja template cache, the OS file cache.
        time_subprocess(protoc_cmd, env, Samples("warm-up"))
        time_subprocess(cli_cmd(-1), env, Samples("warm-up"))
        for run in range(runs):  # interleaved, so that a burst of load hits every contender alike
            time_subprocess(cli_cmd(run), env, cli)
            time_in_process(in_process, inproc)
            time_subprocess(protoc_cmd, env, protoc)
    stages = stage_cpu(spec_dir, max(3, runs // 2))

    print(
        f"{label}: {len(spec.messages())} messages, {len(spec.commands())} commands, "
        f"{len(protos)} .proto files, {len(files)} output files; median of {runs} interleaved runs"
    )
    base_wall, base_cpu = protoc.median()
    for samples in (cli, inproc, protoc):
        wall, cpu = samples.median()
        ratio = "" if samples is protoc else f"  = {wall / base_wall:4.2f}x / {cpu / base_cpu:4.2f}x (c)"
        print(f"  {samples.label:32s} wall {wall * 1000:7.1f} ms  cpu {cpu * 1000:7.1f} ms{ratio}")
    print("  in-process CPU by stage (ms):  " + ", ".join(f"{k} {v * 1000:.1f}" for k, v in stages.items()))
    ok = True
    for samples in (cli, inproc):
        wall, cpu = samples.median()
        checks = [
            (f"wall {wall:.2f} s < {GOAL_WALL_S:.0f} s", wall < GOAL_WALL_S),
            (f"wall ratio {wall / base_wall:.2f}x < {GOAL_RATIO:.0f}x", wall / base_wall < GOAL_RATIO),
            (f"cpu ratio {cpu / base_cpu:.2f}x < {GOAL_RATIO:.0f}x", cpu / base_cpu < GOAL_RATIO),
        ]
        ok = ok and all(met for _, met in checks)
        verdicts = "; ".join(f"{text}: {'MET' if met else 'NOT MET'}" for text, met in checks)
        print(f"  goal {samples.label[:3]} {verdicts}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=9, help="measured runs of each contender (default 9)")
    parser.add_argument("--only", choices=["teamtalk", "synthetic"], help="measure one spec only")
    args = parser.parse_args()
    teamtalk = ROOT / "spec" / "teamtalk"
    if args.only in (None, "teamtalk") and (teamtalk / "ttgen.yaml").is_file():
        bench("teamtalk", teamtalk, args.runs)
    if args.only in (None, "synthetic"):
        with tempfile.TemporaryDirectory() as tmp:
            bench("synthetic", synthetic_spec(Path(tmp)), args.runs)


if __name__ == "__main__":
    main()
