"""CLI layer: `ttgen fuzz`: run a stack's generated fuzz suites against an in-process or a running cluster."""

from __future__ import annotations

import logging
import socket
import sys
import time
from pathlib import Path

import click

from runtime.fuzz.engine import Engine, Stats
from runtime.fuzz.plant import PLANTS
from runtime.fuzz.reproducer import Reproducer, replay
from runtime.fuzz.suites import SUITES
from ttgen.commands._common import load_checked
from ttgen.commands.generate import resolve_targets
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
@click.option(
    "--user",
    default=None,
    help="Login name on a running server (--target); a TeamTalk cluster defaults to `fuzz`.",
)
@click.option(
    "--password",
    default=None,
    help="Password of --user (a TeamTalk cluster defaults to `fuzz-secret`); also the account the auth suite "
    "tries wrong and empty passwords on.",
)
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
    "--wait",
    "wait_up",
    type=float,
    default=0.0,
    help="With --target: seconds to wait for the server to accept connections (e.g. just started).",
)
@click.option(
    "--replay",
    "replay_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Replay a saved reproducer (JSON) instead of fuzzing: exit 1 while it still fails, 0 once fixed.",
)
@click.option(
    "--plant",
    type=click.Choice(PLANTS),
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
    user: str | None,
    password: str | None,
    engine: str,
    max_failures: int,
    wait_up: float,
    replay_file: Path | None,
    plant: str | None,
) -> None:
    """Fuzz SPEC's generated stack: message round-trips, frames, every hosted command on a live server
    (valid and malformed bodies, frames before login, mutated frames) and stateful client sessions.

    \b
    Suites share the time budget (the one with the least time so far goes next). A handler that raises, a
    valid request left unanswered, a frame at the spec's length limit refused (or one byte over it taken), a
    wrong or empty password accepted: each is a failure, printed with its traceback or message and its
    minimal reproducer (frame bytes in hex, the command or rule sequence), saved as JSON and replayable with
    --replay FILE. The run ends with a report per suite. Exits 1 if anything failed.
    """
    # Fuzzing makes servers log every refusal; those records are expected, not news.
    logging.getLogger().addHandler(logging.NullHandler())
    spec, _ = load_checked(spec_path)
    budget = parse_duration(duration)
    stack_dir = resolve_targets(spec, None, None).stack
    if target and wait_up > 0:
        wait_for_server(target, wait_up)
    if replay_file is not None:
        raise SystemExit(replay_one(spec.name, stack_dir, replay_file, plant, server, target, user, password))
    if engine == "atheris":
        found_ = run_atheris(spec.name, budget, seed, plant)
        folder_ = (save_dir or DEFAULT_SAVE) / spec.name
        for rep in found_:
            click.echo(f"\nFAILURE {rep.id} ({rep.suite}) saved to {rep.save(folder_)}\n{rep.describe()}")
        click.echo(f"done: atheris ran {budget:g}s; {len(found_)} failures")
        if found_:
            raise SystemExit(1)
        return
    stack = fuzz_stack(spec.name, stack_dir)
    chosen = suite_names or SUITES
    live = any(s in chosen for s in ("live", "auth", "stateful"))
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
    for line in stats.report(commands):
        click.echo(line)
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


LIVE_OPS = frozenset({"connect", "send", "raw", "check_server", "frame_limit", "auth", "rule"})


def replay_one(
    spec_name: str,
    stack_dir: Path,
    path: Path,
    plant: str | None,
    server: str,
    target: str | None,
    user: str | None,
    password: str | None,
) -> int:
    """`ttgen fuzz --replay FILE`: run a reproducer's steps again (with the bug it was found under, if it was
    planted); 1 while it fails, 0 once it passes."""
    rep = Reproducer.load(path)
    if rep.spec != spec_name:
        raise click.UsageError(f"{path} is a reproducer of spec {rep.spec!r}, not {spec_name!r}")
    chosen_plant = plant or rep.plant
    stack = fuzz_stack(spec_name, stack_dir)
    live = any(step["op"] in LIVE_OPS for step in rep.steps)
    run_plan = plan(
        stack, target=target, server=server, plant=chosen_plant, live=live, user=user, password=password
    )
    click.echo(f"replaying {rep.id} ({rep.case}) against {run_plan.description}")
    click.echo(rep.describe())
    try:
        replay(rep, stack, run_plan.target, run_plan.decoder)
    except AssertionError as exc:
        click.echo(f"\nFAILURE (still fails): {exc}")
        return 1
    finally:
        if run_plan.target is not None:
            run_plan.target.close()
    click.echo("\npassed: the reproducer no longer fails")
    return 0


def wait_for_server(target: str, seconds: float) -> None:
    """Until HOST:PORT accepts a TCP connection, for at most `seconds` (polling: the server is starting)."""
    host, _, port = target.rpartition(":")
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=1.0).close()
            return
        except (OSError, ValueError):
            if time.monotonic() >= deadline:
                raise click.ClickException(
                    f"nothing accepts connections on {target} after {seconds:g}s"
                ) from None
            time.sleep(0.1)
