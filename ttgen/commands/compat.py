"""CLI layer: `ttgen compat OLD NEW`: cross-version interop over real frames (old/new clients and servers)."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path

import click

from codegen.diagnostics import SpecError
from codegen.gitspec import GitSpecError, load_side, materialize
from ttgen.commands import _common

EXAMPLES = """
\b
Examples:
  ttgen compat main:spec/teamtalk spec/teamtalk
  ttgen compat HEAD~1:spec/teamtalk HEAD:spec/teamtalk --command CID_MSG_DATA --format json
  ttgen compat old/spec new/spec --keep /tmp/stacks      # keep both generated stacks for inspection
\b
Each client command of one version is framed, sent to an echo server of the other version on 127.0.0.1,
decoded, echoed and decoded back, and the reply the client waits for must arrive; server pushes go the other
way (the probe opts in to extension pushes first). Every message is sent as a full sample, a minimal one
(optionals unset) and one per enum value. Verdicts: ok, lossy (a value did not survive), broken (undecodable,
refused, unknown, renumbered, moved or removed command, renumbered field or enum value, missing reply),
ignored (a push added after the client's version). Identical specs give no findings.
\b
Exit codes: 0 nothing at or above --fail-on, 1 something is (or a spec has errors), 2 usage error.
"""


@click.command("compat", epilog=EXAMPLES)
@click.argument("old")
@click.argument("new")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--fail-on",
    type=click.Choice(["lossy", "broken", "none"]),
    default="lossy",
    show_default=True,
    help="Exit 1 when an exchange is at least this bad ('none': never).",
)
@click.option(
    "--command", "commands", multiple=True, metavar="NAME", help="Probe only this command (repeatable)."
)
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Generate the two stacks into this folder (old/, new/) and keep them.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds to wait for one answer before calling the exchange broken.",
)
def compat(
    old: str, new: str, fmt: str, fail_on: str, commands: tuple[str, ...], keep: Path | None, timeout: float
) -> None:
    """Run old client vs new server and new client vs old server for every command.

    OLD and NEW are spec paths or git revisions (REV:path), as for `ttgen diff`.
    """
    from ttgen.compat import run_compat

    try:
        with ExitStack() as stack:
            old_spec = load_side(stack.enter_context(materialize(old)))
            new_spec = load_side(stack.enter_context(materialize(new)))
    except GitSpecError as exc:
        raise click.UsageError(str(exc)) from None
    except SpecError as exc:
        _common.print_diagnostics(exc.diagnostics)
        sys.exit(_common.EXIT_ERRORS)
    known = set(old_spec.commands()) | set(new_spec.commands())
    unknown = sorted(set(commands) - known)
    if unknown:
        raise click.UsageError(f"unknown command(s): {', '.join(unknown)}")
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    report = run_compat(old_spec, new_spec, workdir=keep, commands=set(commands) or None, timeout=timeout)
    failing = [] if fail_on == "none" else report.failures(fail_on)
    if fmt == "json":
        click.echo(report.render_json(failed=bool(failing)), nl=False)
    else:
        click.echo(report.render_text(), nl=False)
    if failing:
        sys.exit(_common.EXIT_ERRORS)
