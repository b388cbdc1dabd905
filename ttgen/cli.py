"""CLI layer: the `ttgen` command, the one place that wires codegen, generated stacks and the runtime.

Sub-commands live in `ttgen.commands.<name>` and are imported only when invoked, so `ttgen --help` is fast
and a broken sub-command cannot break the others.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

# name -> (module, attribute, one-line help). Order is the order shown by --help.
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "check": ("ttgen.commands.check", "check", "Validate a spec and print diagnostics."),
    "generate": (
        "ttgen.commands.generate",
        "generate",
        "Generate .proto, protobuf modules, servers, clients, docs and tests.",
    ),
    "schema": ("ttgen.commands.schema", "schema", "Print the JSON Schema of the spec language."),
    "init": ("ttgen.commands.init", "init", "Scaffold a new spec project with a minimal chat protocol."),
    "diff": ("ttgen.commands.diff", "diff", "Classify the changes between two spec versions."),
    "compat": ("ttgen.commands.compat", "compat", "Run old/new client/server cross-version interop tests."),
    "fuzz": ("ttgen.commands.fuzz", "fuzz", "Fuzz a generated stack against a live cluster."),
    "watch": (
        "ttgen.commands.watch",
        "watch",
        "On every save: check, regenerate, diff, re-run affected tests, restart the app.",
    ),
    "up": ("ttgen.commands.up", "up", "Start the IM cluster (one process or one per service)."),
    "status": ("ttgen.commands.status", "status", "Show each running service's health and load."),
    "admin": ("ttgen.commands.admin", "admin", "Users, departments, groups, keys, audit."),
    "chat": ("ttgen.commands.chat", "chat", "Terminal chat client for a running cluster."),
    "bench": ("ttgen.commands.bench", "bench", "Load benchmarks: connections, login storms, messages."),
}


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = SUBCOMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attr, _ = entry
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            return None
        command = getattr(module, attr)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_, _, help_) in SUBCOMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ttgen")
def main(**_: Any) -> None:
    """ttgen: protocol-spec-driven codegen toolkit and IM cluster in the shape of TeamTalk.

    \b
    Examples:
      ttgen check spec/teamtalk
      ttgen generate spec/teamtalk --check
      ttgen diff main:spec/teamtalk spec/teamtalk
      ttgen up --demo
    """
