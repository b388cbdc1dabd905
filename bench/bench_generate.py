"""Benchmark: wall time of generating a stack (load + validate + emit + protoc) against bare protoc.

Run from the repository root:

    .venv/bin/python bench/bench_generate.py [--runs 7]

For the bundled TeamTalk spec and a synthetic spec (100 messages, 100 commands, built here) it prints
the median of several runs of:
  - in-process: `check_spec` + `emit_stack` (what `ttgen generate` does before writing), interpreter warm;
  - CLI: `ttgen generate SPEC -o TMP` as a subprocess (interpreter start, imports, writing included);
  - bare protoc: `python -m grpc_tools.protoc --python_out --pyi_out` on the same emitted .proto files.
Goal (issue 2): under 2 s wall, and under 2x bare protoc. Results are recorded in bench/results/.
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
from pathlib import Path

from codegen.api import check_spec
from codegen.emit import emit_stack
from codegen.protoc import well_known_include

ROOT = Path(__file__).resolve().parents[1]
MODULES = 4
MESSAGES_PER_MODULE = 25


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


def _cpu() -> float:
    # CPU seconds of this process and its finished children: unlike wall time, barely moved by other load.
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def median_seconds(func: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median (wall, cpu) seconds of `runs` calls."""
    walls, cpus = [], []
    for _ in range(runs):
        start, cpu = time.perf_counter(), _cpu()
        func()
        walls.append(time.perf_counter() - start)
        cpus.append(_cpu() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def bench(label: str, spec_dir: Path, runs: int) -> None:
    def in_process() -> dict[str, str | bytes]:
        spec, _ = check_spec(spec_dir)
        return emit_stack(spec)

    files = in_process()  # warm-up: imports, template compilation
    protos = sorted(name for name in files if name.endswith(".proto"))
    with tempfile.TemporaryDirectory() as tmp:
        src, out, cli_out = Path(tmp) / "src", Path(tmp) / "out", Path(tmp) / "cli"
        src.mkdir()
        out.mkdir()
        for name in protos:
            (src / name).write_text(str(files[name]))
        protoc_cmd = [
            sys.executable, "-m", "grpc_tools.protoc", f"-I{src}", f"-I{well_known_include()}",
            f"--python_out={out}", f"--pyi_out={out}", *[str(src / n) for n in protos],
        ]
        cli_cmd = [str(Path(sys.executable).parent / "ttgen"), "generate", str(spec_dir), "-o", str(cli_out)]
        # Subprocesses may cache bytecode (as an installed ttgen does), whatever this shell's setting.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        subprocess.run(protoc_cmd, check=True, env=env)
        subprocess.run(cli_cmd, check=True, capture_output=True, env=env)
        t_in = median_seconds(in_process, runs)
        t_cli = median_seconds(
            lambda: subprocess.run(cli_cmd, check=True, capture_output=True, env=env), runs
        )
        t_protoc = median_seconds(lambda: subprocess.run(protoc_cmd, check=True, env=env), runs)
    spec, _ = check_spec(spec_dir)
    print(f"{label}: {len(spec.messages())} messages, {len(spec.commands())} commands, "
          f"{len(protos)} .proto files, {len(files)} output files; median of {runs} runs")
    rows = (("in-process load+validate+emit+protoc", t_in), ("ttgen generate (subprocess, writes)", t_cli))
    for name, (wall, cpu) in rows:
        print(f"  {name + ':':38s} wall {wall * 1000:7.1f} ms ({wall / t_protoc[0]:.2f}x)"
              f"  cpu {cpu * 1000:7.1f} ms ({cpu / t_protoc[1]:.2f}x bare protoc)")
    print(f"  {'bare protoc (subprocess):':38s} wall {t_protoc[0] * 1000:7.1f} ms"
          f"          cpu {t_protoc[1] * 1000:7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    teamtalk = ROOT / "spec" / "teamtalk"
    if (teamtalk / "ttgen.yaml").is_file():
        bench("teamtalk", teamtalk, args.runs)
    with tempfile.TemporaryDirectory() as tmp:
        bench("synthetic", synthetic_spec(Path(tmp)), args.runs)


if __name__ == "__main__":
    main()
