"""CLI layer: `ttgen generate`: spec -> generated stack on disk (or a staleness check of it)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import click

from codegen.diagnostics import Diagnostic, SpecError
from codegen.model import Spec
from codegen.writer import WriteReport, sync_tree
from ttgen.commands import _common

DOCS_FILE = "PROTOCOL.md"


@dataclass(frozen=True)
class Targets:
    """Where one generation run writes: the stack folder and, optionally, a docs folder."""

    stack: Path
    docs: Path | None


def default_output_parent(spec_root: Path) -> Path:
    """Where a stack goes by default: `generated/` beside the folder named `spec`.

    `spec/teamtalk` -> `generated/`, `demo/spec` -> `demo/generated/`; any other spec folder gets `generated/`
    beside it.
    """
    if spec_root.name == "spec":
        return spec_root.parent / "generated"
    if spec_root.parent.name == "spec":
        return spec_root.parent.parent / "generated"
    return spec_root.parent / "generated"


def resolve_targets(spec: Spec, out: Path | None, docs_dir: Path | None) -> Targets:
    """CLI options win over the manifest's `output:` / `docs_output:`, which win over the defaults."""
    root = Path(spec.root)
    if out is not None:
        parent = out
    elif spec.output:
        parent = root / spec.output
    else:
        parent = default_output_parent(root)
    docs = docs_dir if docs_dir is not None else (root / spec.docs_output if spec.docs_output else None)
    return Targets(stack=parent / spec.name, docs=docs)


def generate_stack(spec: Spec, targets: Targets, *, check: bool) -> list[WriteReport]:
    """Emit the stack and sync it (and the docs copy) to disk; in check mode only compare."""
    from codegen.emit import EmitOptions, emit_stack

    files = emit_stack(spec, EmitOptions())
    reports = [sync_tree(files, targets.stack, check=check)]
    if targets.docs is not None and DOCS_FILE in files:
        reports.append(sync_tree({DOCS_FILE: files[DOCS_FILE]}, targets.docs, check=check, prune=False))
    return reports


def _shown(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


EXAMPLES = """
\b
Examples:
  ttgen generate spec/teamtalk                  # writes generated/teamtalk/
  ttgen generate spec/teamtalk --check          # CI: exit 1 if generated/ is stale
  ttgen generate demo/spec -o /tmp/out          # writes /tmp/out/<spec name>/
  ttgen generate spec/teamtalk --docs-dir docs/protocol
\b
Exit codes: 0 ok (or fresh), 1 spec errors or stale output, 2 usage error.
"""


@click.command("generate", epilog=EXAMPLES)
@click.argument("spec_path", metavar="SPEC", type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Parent folder of the stack (the stack goes to OUT/<spec name>/). "
    "Default: manifest `output:`, else generated/ beside the spec folder.",
)
@click.option(
    "--docs-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write PROTOCOL.md here (default: manifest `docs_output:`, else nowhere).",
)
@click.option(
    "--check", is_flag=True, help="Write nothing; list stale, missing and extra files; exit 1 on drift."
)
@_common.FORMAT_OPTION
def generate(spec_path: Path, out: Path | None, docs_dir: Path | None, check: bool, fmt: str) -> None:
    """Generate .proto files, protobuf modules, registry, servers, clients and docs from SPEC.

    SPEC is a spec folder (holding ttgen.yaml) or the manifest file itself.
    """
    try:
        spec, warnings = _common.load_checked(spec_path)
        targets = resolve_targets(spec, out, docs_dir)
        reports = generate_stack(spec, targets, check=check)
    except SpecError as exc:
        if fmt == "json":
            click.echo(_common.json_report(str(spec_path), exc.diagnostics, {}))
        else:
            _common.print_diagnostics(exc.diagnostics, fmt)
        raise SystemExit(_common.EXIT_ERRORS) from None
    drift = any(not r.fresh for r in reports)
    if fmt == "json":
        click.echo(json.dumps(_json_report(warnings, reports, check), indent=2, sort_keys=True))
    else:
        _common.print_diagnostics(warnings, fmt)
        for report in reports:
            _print_report(report, check)
    if check and drift:
        raise SystemExit(_common.EXIT_ERRORS)


def _print_report(report: WriteReport, check: bool) -> None:
    where = _shown(report.root)
    if check:
        for kind, rel in report.problems():
            click.echo(f"{kind}: {_shown(report.root / rel)}")
        if report.fresh:
            click.echo(f"{where}: up to date ({len(report.unchanged)} files)")
        else:
            count = len(report.problems())
            click.echo(f"{where}: {count} file(s) out of date; run `ttgen generate` to update", err=True)
        return
    for rel in report.removed:
        click.echo(f"removed: {_shown(report.root / rel)}")
    click.echo(
        f"{where}: {len(report.written)} written, {len(report.unchanged)} unchanged"
        + (f", {len(report.removed)} removed" if report.removed else "")
    )


def _json_report(warnings: list[Diagnostic], reports: list[WriteReport], check: bool) -> dict[str, object]:
    return {
        "check": check,
        "diagnostics": [d.as_dict() for d in warnings],
        "outputs": [
            {
                "root": _shown(r.root),
                "fresh": r.fresh,
                "written": r.written,
                "unchanged": r.unchanged,
                "stale": r.stale,
                "missing": r.missing,
                "extra": r.extra,
                "removed": r.removed,
            }
            for r in reports
        ],
    }
