"""CLI layer: `ttgen diff OLD NEW`: classify every change between two spec versions (paths or git revs)."""

from __future__ import annotations

import sys
from contextlib import ExitStack

import click

from codegen.diagnostics import SpecError
from codegen.diff import Category, Finding, at_or_above, diff_specs
from codegen.diff.render import render_github, render_json, render_text
from codegen.gitspec import GitSpecError, load_side, materialize
from ttgen.commands import _common

CATEGORY_CHOICES = [c.value for c in Category] + ["none"]

EXAMPLES = """
\b
Examples:
  ttgen diff spec/teamtalk.old spec/teamtalk            # two folders
  ttgen diff main:spec/teamtalk spec/teamtalk           # a git revision vs the working tree
  ttgen diff HEAD~1:spec/teamtalk HEAD:spec/teamtalk --format github
  ttgen diff v1.0.0:spec/teamtalk spec/teamtalk --fail-on wire-breaking --format json
\b
A side is a path that exists, or REV:path with path relative to the repository root (./path: relative to the
current directory). Categories, least to most severe: compatible < semantic = lifecycle < source-breaking
< lossy < wire-breaking.
\b
Exit codes: 0 nothing at or above --fail-on, 1 something is (or a spec has errors), 2 usage error.
"""


def diff_sources(old: str, new: str) -> list[Finding]:
    """Diff two sides (paths or REV:path); locations name working-tree paths.

    Raises SpecError (a side does not load) or GitSpecError (a side cannot be resolved).
    """
    with ExitStack() as stack:
        old_side = stack.enter_context(materialize(old))
        new_side = stack.enter_context(materialize(new))
        old_spec, new_spec = load_side(old_side), load_side(new_side)
        findings = diff_specs(old_spec, new_spec)
        # Deletions point into OLD, everything else into NEW: map temp-dir paths of revisions back.
        mapped = [f.with_loc(new_side.relabel(old_side.relabel(f.loc))) for f in findings]
    return sorted(mapped, key=Finding.sort_key)


@click.command("diff", epilog=EXAMPLES)
@click.argument("old")
@click.argument("new")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "github"]),
    default="text",
    show_default=True,
    help="Output format (github: workflow-command annotations).",
)
@click.option(
    "--fail-on",
    type=click.Choice(CATEGORY_CHOICES),
    default="lossy",
    show_default=True,
    help="Exit 1 when a finding at or above this category exists ('none': never). The default, lossy, is the "
    "bar `ttgen compat` sets: silent data loss fails as well as undecodable frames.",
)
def diff(old: str, new: str, fmt: str, fail_on: str) -> None:
    """Classify the changes between two spec versions.

    Every change gets a stable rule id and a category: wire-breaking, lossy, source-breaking, semantic,
    lifecycle or compatible (see docs/evolution.md for the rule table), judged by what the runtime does on the
    wire: names only count where the manifest says `wire: json`. The version field is checked against the
    worst change.
    """
    try:
        findings = diff_sources(old, new)
    except GitSpecError as exc:
        raise click.UsageError(str(exc)) from None
    except SpecError as exc:
        _common.print_diagnostics(exc.diagnostics)
        sys.exit(_common.EXIT_ERRORS)
    failing = [] if fail_on == "none" else at_or_above(findings, Category.parse(fail_on))
    if fmt == "json":
        click.echo(render_json(findings, old=old, new=new, failed=bool(failing)), nl=False)
    elif fmt == "github":
        click.echo(render_github(findings), nl=False)
    else:
        click.echo(render_text(findings), nl=False)
    if failing:
        sys.exit(_common.EXIT_ERRORS)
