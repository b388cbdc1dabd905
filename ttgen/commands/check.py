"""CLI layer: `ttgen check`, validate a spec and print its diagnostics like a compiler."""

from __future__ import annotations

from pathlib import Path

import click

from codegen.diagnostics import Diagnostic, SpecError
from ttgen.commands import _common

EXAMPLES = """\b
Examples:
  ttgen check spec/teamtalk
  ttgen check spec/teamtalk/ttgen.yaml --format json
  ttgen check my_spec --warnings-as-errors

\b
Exit status: 0 the spec is valid (warnings allowed), 1 the spec has errors
(or warnings with --warnings-as-errors), 2 bad command line.
Error codes are listed in docs/errors.md.
"""


@click.command("check", epilog=EXAMPLES)
@click.argument("spec_path", metavar="SPEC", type=click.Path(exists=True, path_type=Path))
@_common.FORMAT_OPTION
@click.option("--warnings-as-errors", "-W", is_flag=True, help="Fail (exit 1) on warnings too.")
def check(spec_path: Path, fmt: str, warnings_as_errors: bool) -> None:
    """Validate SPEC (a spec folder holding ttgen.yaml, or the manifest) and print every problem."""
    shown = str(spec_path)
    diagnostics: list[Diagnostic]
    summary: dict[str, object] = {}
    try:
        spec, diagnostics = _common.load_checked(spec_path, warnings_as_errors=warnings_as_errors)
        summary = _common.spec_summary(spec)
        failed = False
    except SpecError as exc:
        diagnostics, failed = exc.diagnostics, True
    if fmt == "json":
        click.echo(_common.json_report(shown, diagnostics, summary))
    else:
        _common.print_diagnostics(diagnostics, fmt, err=False)
        click.echo(_summary_line(shown, diagnostics, summary, failed))
    if failed:
        raise SystemExit(_common.EXIT_ERRORS)


def _summary_line(shown: str, diagnostics: list[Diagnostic], summary: dict[str, object], failed: bool) -> str:
    errors, warnings = _common.counts(diagnostics)
    if failed:
        tail = f", {_common.plural(warnings, 'warning')}" if warnings else ""
        return f"{shown}: {_common.plural(errors, 'error')}{tail}"
    sizes = ", ".join(
        _common.plural(int(str(summary[key])), word)
        for key, word in (("modules", "module"), ("messages", "message"), ("commands", "command"))
    )
    tail = f"; {_common.plural(warnings, 'warning')}" if warnings else ""
    return f"{shown}: ok ({summary['name']} {summary['version']}: {sizes}{tail})"
