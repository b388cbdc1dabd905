"""CLI layer: `ttgen schema`, print the JSON Schema of the spec language (for editor completion)."""

from __future__ import annotations

import json

import click

from codegen.schema import FILE_KINDS, spec_schema

EXAMPLES = """\b
Examples:
  ttgen schema > spec.schema.json
  ttgen schema --kind module
  # VS Code (redhat.vscode-yaml): "yaml.schemas": {"./spec.schema.json": "spec/**/*.yaml"}
"""


@click.command("schema", epilog=EXAMPLES)
@click.option(
    "--kind",
    type=click.Choice(["all", *FILE_KINDS]),
    default="all",
    show_default=True,
    help="Print the schema of one file kind only (manifest, module, cluster, stages or plugin).",
)
def schema(kind: str) -> None:
    """Print the JSON Schema (draft 2020-12) of ttgen spec files."""
    doc = spec_schema()
    if kind != "all":
        doc = {**{k: v for k, v in doc.items() if k != "anyOf"}, "$ref": f"#/$defs/{kind}"}
        doc["title"] = f"ttgen {kind} file"
    click.echo(json.dumps(doc, indent=2, sort_keys=True))
