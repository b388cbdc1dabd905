"""Codegen validate layer: the registry of `check_*` rules (one function per rule, grouped by code range).

New rules plug in by being appended to a group's `CHECKS` list; `codegen.validate.validate` runs them all.
"""

from __future__ import annotations

from collections.abc import Callable

from codegen.checks import commands, files, names, numbers, plugins, presence, stages, syntax, web
from codegen.diagnostics import Diagnostics
from codegen.model import Spec

Check = Callable[[Spec, Diagnostics], None]

ALL_CHECKS: list[Check] = [
    *files.CHECKS,
    *names.CHECKS,
    *numbers.CHECKS,
    *syntax.CHECKS,
    *commands.CHECKS,
    *stages.CHECKS,
    *presence.CHECKS,
    *plugins.CHECKS,
    *web.CHECKS,
]
