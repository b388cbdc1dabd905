"""Codegen API layer: the entry points the CLI and other tools call (load + validate)."""

from __future__ import annotations

import os

from codegen.diagnostics import Diagnostic, SpecError
from codegen.load import load_spec
from codegen.model import Spec
from codegen.perf import gc_paused
from codegen.validate import validate

__all__ = ["check_spec", "load_spec", "validate"]


def check_spec(
    path: str | os.PathLike[str], *, warnings_as_errors: bool = False
) -> tuple[Spec, list[Diagnostic]]:
    """Load and validate the spec at `path`; return it with its warnings.

    Raises `SpecError` carrying every diagnostic (warnings included) when any error exists, or when
    `warnings_as_errors` is set and any warning exists.
    """
    with gc_paused():
        spec = load_spec(path)
        diagnostics = validate(spec)
    failing = [d for d in diagnostics if d.is_error or warnings_as_errors]
    if failing:
        raise SpecError(diagnostics)
    return spec, diagnostics
