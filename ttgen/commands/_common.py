"""CLI layer: helpers shared by the spec commands (load + check, diagnostics as text or JSON, exit codes)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import click

from codegen.api import check_spec
from codegen.diagnostics import Diagnostic
from codegen.model import Spec

EXIT_OK = 0
EXIT_ERRORS = 1  # the spec has errors (or --check found drift)
EXIT_USAGE = 2  # bad command line: click's own usage errors use this code too

FORMAT_OPTION = click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Print diagnostics as compiler-style text lines or as one JSON document.",
)


def load_checked(
    path: str | os.PathLike[str], warnings_as_errors: bool = False
) -> tuple[Spec, list[Diagnostic]]:
    """Load and validate a spec; return it with its warnings. Raises `SpecError` when the spec has errors."""
    return check_spec(path, warnings_as_errors=warnings_as_errors)


def counts(diagnostics: Sequence[Diagnostic]) -> tuple[int, int]:
    """(errors, warnings)."""
    errors = sum(1 for d in diagnostics if d.is_error)
    return errors, len(diagnostics) - errors


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def print_diagnostics(diagnostics: Sequence[Diagnostic], fmt: str = "text", err: bool = True) -> None:
    """Print diagnostics, one compiler-style line each (`text`) or as a JSON list (`json`, on stdout)."""
    if fmt == "json":
        click.echo(json.dumps([d.as_dict() for d in diagnostics], indent=2))
        return
    for d in diagnostics:
        click.echo(d.format(), err=err)


def json_report(spec_path: str, diagnostics: Sequence[Diagnostic], summary: dict[str, object]) -> str:
    """The `--format json` document of a check: counts, a summary and every diagnostic."""
    errors, warnings = counts(diagnostics)
    doc = {
        "spec": spec_path,
        "ok": errors == 0,
        "errors": errors,
        "warnings": warnings,
        "summary": summary,
        "diagnostics": [d.as_dict() for d in diagnostics],
    }
    return json.dumps(doc, indent=2)


def spec_summary(spec: Spec) -> dict[str, object]:
    """Sizes of a loaded spec, for the summary line."""
    return {
        "name": spec.name,
        "version": spec.version,
        "modules": len(spec.modules),
        "messages": len(spec.messages()),
        "enums": len(spec.enums()),
        "commands": len(spec.commands()),
        "cluster_services": len(spec.cluster),
        "plugins": len(spec.plugins),
    }
