"""CLI layer: `ttgen watch SPEC`: regenerate, diff, test and restart on every save (see ttgen.watching)."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType

import click

from ttgen.watching import Served, Watcher

EXAMPLES = """
\b
Examples:
  ttgen watch spec                                  # check + regenerate on every save
  ttgen watch spec --test --serve app/server.py     # also run the affected tests, restart the app
  ttgen watch spec --base main --serve app/server.py --serve-arg --port --serve-arg 8000
"""


@click.command("watch", epilog=EXAMPLES)
@click.argument("spec_path", metavar="SPEC", type=click.Path(exists=True, path_type=Path))
@click.option("--test", "run_tests", is_flag=True, help="Re-run the generated tests a change can affect.")
@click.option(
    "--serve",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A Python app to run, and restart whenever the stack is regenerated (e.g. app/server.py).",
)
@click.option("--serve-arg", "serve_args", multiple=True, help="An argument for the served app (repeatable).")
@click.option(
    "--base",
    default="HEAD",
    show_default=True,
    help="The git revision each change is diffed against ('' for no diff).",
)
@click.option("--interval", type=float, default=0.5, show_default=True, help="Seconds between polls.")
@click.option("--cycles", type=int, default=0, hidden=True, help="Stop after this many cycles (tests).")
def watch(
    spec_path: Path,
    run_tests: bool,
    serve: Path | None,
    serve_args: tuple[str, ...],
    base: str,
    interval: float,
    cycles: int,
) -> None:
    """Watch SPEC: on every save, check it, regenerate what changed, print the diff against --base, re-run
    the affected generated tests (--test) and restart the served app (--serve). A spec with errors is
    reported and the app keeps running the last good stack. Stop with Ctrl-C."""

    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # so the served app is stopped on the way out

    signal.signal(signal.SIGTERM, stop)
    watcher = Watcher(
        spec_path,
        base=base or None,
        run_tests=run_tests,
        serve=Served(serve, tuple(serve_args)) if serve is not None else None,
        echo=lambda line: click.echo(line),
    )
    try:
        watcher.run(interval, cycles)
    except KeyboardInterrupt:
        click.echo("[watch] stopped")
