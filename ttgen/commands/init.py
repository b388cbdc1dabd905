"""CLI layer: `ttgen init`: scaffold a new spec project with a minimal chat protocol and its tests."""

from __future__ import annotations

import re
from pathlib import Path

import click
import jinja2

import codegen

SCAFFOLD = Path(codegen.__file__).resolve().parent / "scaffold"
EXIT_REFUSED = 1

EXAMPLES = """
\b
Examples:
  ttgen init mychat                    # mychat/spec, mychat/tests, mychat/README.md
  ttgen init mychat --syntax proto2
  ttgen init mychat --generate         # also run `ttgen generate mychat/spec`
\b
Then:
  ttgen generate mychat/spec && (cd mychat && pytest)
"""


def spec_name_for(folder: Path) -> str:
    """The spec name for a project folder: its name lower-cased as an identifier (`My-Chat` -> `my_chat`)."""
    name = re.sub(r"[^0-9a-z_]+", "_", folder.name.lower()).strip("_") or "chat"
    return "p_" + name if name[0].isdigit() else name


def scaffold_files(name: str, syntax: str) -> dict[str, str]:
    """Every scaffold file rendered for project `name`: relative path -> text."""
    camel = "".join(part.capitalize() for part in name.split("_") if part)
    package = f"{camel}.Chat"
    context = {
        "name": name,
        "syntax": syntax,
        "package": package,
        "file_stem": package.replace(".", "_"),
        "client_class": camel + "Client",
        # proto2 needs a label on every field; proto3 fields are singular without one.
        "req": ", label: required" if syntax == "proto2" else "",
        "opt": ", label: optional" if syntax == "proto2" else "",
    }
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(SCAFFOLD)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    out = {}
    for template in sorted(p for p in SCAFFOLD.rglob("*.j2")):
        rel = template.relative_to(SCAFFOLD).as_posix()
        out[rel[: -len(".j2")]] = env.get_template(rel).render(**context)
    return out


def write_project(folder: Path, syntax: str) -> list[Path]:
    """Create the project in `folder` (which must be absent or empty); returns the written files."""
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise click.ClickException(f"{folder} already exists and is not empty; choose a new folder")
    written = []
    for rel, text in scaffold_files(spec_name_for(folder), syntax).items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="\n")
        written.append(path)
    return written


@click.command("init", epilog=EXAMPLES)
@click.argument("folder", metavar="NAME", type=click.Path(path_type=Path))
@click.option(
    "--syntax",
    type=click.Choice(["proto3", "proto2"]),
    default="proto3",
    show_default=True,
    help="Protobuf syntax of the new spec.",
)
@click.option(
    "--generate/--no-generate",
    "run_generate",
    default=False,
    show_default=True,
    help="Also generate the stack into NAME/generated/.",
)
def init(folder: Path, syntax: str, run_generate: bool) -> None:
    """Create NAME/ with a spec for a minimal chat protocol (login, messages with acks, pushes, heartbeats),
    a README and tests of the generated stack. Refuses to touch an existing non-empty folder."""
    try:
        written = write_project(folder, syntax)
    except click.ClickException as exc:
        click.echo(f"error: {exc.message}", err=True)
        raise SystemExit(EXIT_REFUSED) from None
    for path in written:
        click.echo(f"created: {path}")
    if run_generate:
        from ttgen.commands.generate import generate

        ctx = click.get_current_context()
        ctx.invoke(generate, spec_path=folder / "spec", out=None, docs_dir=None, check=False, fmt="text")
        click.echo(f"\nNext: cd {folder} && pytest")
    else:
        click.echo(f"\nNext: ttgen generate {folder / 'spec'} && (cd {folder} && pytest)")
