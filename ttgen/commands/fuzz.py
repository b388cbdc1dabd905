"""CLI layer: `ttgen fuzz`: run a stack's generated fuzz suites against an in-process or a running cluster."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from runtime.fuzz.engine import Engine, Stats
from runtime.fuzz.suites import SUITES
from ttgen.commands._common import load_checked
from ttgen.fuzzing import fuzz_stack, parse_duration, plan, run_atheris

DEFAULT_SAVE = Path("tests/fuzz/reproducers")


def progress_line(stats: Stats) -> str:
    return (
        f"[{stats.elapsed:6.1f}s] examples {stats.examples} ({stats.rate:.1f}/s)  "
        f"frames sent {stats.frames}  "
        f"failures {stats.failures}  cases run {stats.cases_run}"
    )


@click.command("fuzz")
@click.argument("spec_path", metavar="SPEC", type=click.Path(exists=True, file_okay=True, dir_okay=True))
@click.option("--target", metavar="HOST:PORT", help="Fuzz a running msg server instead of an in-process one.")
@click.option("--time", "duration", default="60s", show_default=True, help="Time budget, e.g. 60s, 2m.")
@click.option("--seed", type=int, default=0, show_default=True, help="Base seed of the random examples.")
@click.option(
    "--suite",
    "suite_names",
    multiple=True,
    type=click.Choice(SUITES),
    help="Suites to run (repeatable; default: all).",
)
@click.option(
    "--server",
    type=click.Choice(["auto", "cluster", "validating"]),
    default="auto",
    show_default=True,
    help="In-process target: the real cluster, or a validating echo server.",
)
@click.option(
    "--save-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where reproducers are saved (default: tests/fuzz/reproducers/<spec>).",
)
@click.option("--user", default="fuzz", show_default=True, help="Login name on a running cluster (--target).")
@click.option("--password", default="fuzz-secret", show_default=True, help="Password on a running cluster.")
@click.option(
    "--engine",
    type=click.Choice(["hypothesis", "atheris"]),
    default="hypothesis",
    show_default=True,
    help="atheris: coverage-guided fuzzing of the frame decoder and connection (needs ttgen[fuzz]).",
)
@click.option(
    "--max-failures",
    type=int,
    default=0,
    show_default=True,
    help="Stop after this many failures (0: use the whole time budget).",
)
@click.option(
    "--plant",
    type=click.Choice(["handler", "framing"]),
    default=None,
    hidden=True,
    help="Test-only: plant a known bug in the in-process target to prove the fuzzer finds it.",
)
def fuzz(
    spec_path: str,
    target: str | None,
    duration: str,
    seed: int,
    suite_names: tuple[str, ...],
    server: str,
    save_dir: Path | None,
    user: str,
    password: str,
    engine: str,
    max_failures: int,
    plant: str | None,
) -> None:
    """Fuzz SPEC's generated stack: message round-trips, frames, every hosted command on a live server
    (valid and malformed bodies, frames before login, mutated frames) and stateful client sessions.

    \b
    Each failure is printed with its minimal reproducer (frame bytes in hex and the command sequence) and
    saved as JSON, which tests/fuzz/test_replay.py replays. Exits 1 if anything failed.
    """
    # Fuzzing makes servers log every refusal; those records are expected, not news.
    logging.getLogger().addHandler(logging.NullHandler())
    spec, _ = load_checked(spec_path)
    budget = parse_duration(duration)
    if engine == "atheris":
        found_ = run_atheris(spec.name, budget, seed, plant)
        folder_ = (save_dir or DEFAULT_SAVE) / spec.name
        for rep in found_:
            click.echo(f"\nFAILURE {rep.id} ({rep.suite}) saved to {rep.save(folder_)}\n{rep.describe()}")
        click.echo(f"done: atheris ran {budget:g}s; {len(found_)} failures")
        if found_:
            raise SystemExit(1)
        return
    stack = fuzz_stack(spec.name)
    chosen = suite_names or SUITES
    live = any(s in chosen for s in ("live", "stateful"))
    run_plan = plan(stack, target=target, server=server, plant=plant, live=live, user=user, password=password)
    folder = (save_dir or DEFAULT_SAVE) / spec.name
    click.echo(
        f"fuzzing {spec.name} {spec.version} for {budget:g}s: suites {', '.join(chosen)}; "
        f"target: {run_plan.description}; seed {seed}"
    )
    tty = sys.stdout.isatty()
    runner = Engine(
        stack,
        run_plan.target,
        suite_names=tuple(chosen),
        budget=budget,
        seed=seed,
        plant=plant,
        decoder=run_plan.decoder,
        progress=lambda s: click.echo(progress_line(s)),
        progress_every=1.0 if tty else 5.0,
        max_failures=max_failures,
    )
    try:
        found = runner.run()
    finally:
        if run_plan.target is not None:
            run_plan.target.close()
    stats = runner.stats
    commands = {c.name for c in stack.registry}
    unanswered = f"{run_plan.target.unanswered} valid requests unanswered; " if run_plan.target else ""
    click.echo(
        f"done: {stats.examples} examples in {stats.elapsed:.1f}s ({stats.rate:.1f}/s), "
        f"{stats.frames} frames sent, {len(found)} failures; {unanswered}"
        f"commands covered {len(stats.covered_commands & commands)}/{len(commands)}, "
        f"messages covered {len(stats.covered_messages)}/{len(stack.messages)}"
    )
    if run_plan.target is not None and run_plan.target.unanswered_by:
        top = sorted(run_plan.target.unanswered_by.items(), key=lambda kv: (-kv[1], kv[0]))
        click.echo("unanswered valid requests: " + ", ".join(f"{name} x{n}" for name, n in top))
    for rep in found:
        path = rep.save(folder)
        click.echo(f"\nFAILURE {rep.id} ({rep.suite}) saved to {path}\n{rep.describe()}")
        if rep.example:
            click.echo(rep.example)
    if found:
        raise SystemExit(1)
