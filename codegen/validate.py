"""Codegen validate layer: run every `check_*` rule over a loaded spec and collect all diagnostics."""

from __future__ import annotations

from codegen.checks import ALL_CHECKS
from codegen.diagnostics import Diagnostic, Diagnostics
from codegen.model import Spec

__all__ = ["validate"]


def validate(spec: Spec) -> list[Diagnostic]:
    """Every diagnostic of every check, sorted by location. Never raises for a bad spec."""
    diags = Diagnostics()
    for check in ALL_CHECKS:
        check(spec, diags)
    return diags.sorted()
