"""Codegen diff layer: run every evolution check over two `Spec` models and return sorted findings."""

from __future__ import annotations

from codegen.diff.check_commands import check_cluster, check_commands
from codegen.diff.check_enums import check_enums
from codegen.diff.check_messages import check_message_pairs, check_messages
from codegen.diff.check_spec import check_spec, check_version
from codegen.diff.check_stages import check_presence, check_stages
from codegen.diff.check_web import check_web
from codegen.diff.context import DiffContext
from codegen.diff.findings import Finding
from codegen.model import Spec

# Order matters: spec-level checks fill the package map, message/enum pairing fills the rename maps that
# field, command and stage checks follow; the version check judges everything found before it.
CHECKS = (
    check_spec,
    check_messages,
    check_enums,
    check_message_pairs,
    check_commands,
    check_cluster,
    check_stages,
    check_presence,
    check_web,
)


def diff_specs(old: Spec, new: Spec, *, check_version_bump: bool = True) -> list[Finding]:
    """Classify every change from `old` to `new`. Pure: reads the two models only.

    Findings are sorted by location, then rule id, so output is stable.
    """
    ctx = DiffContext(old, new)
    for check in CHECKS:
        check(ctx)
    if check_version_bump:
        check_version(ctx)
    return sorted(ctx.findings, key=Finding.sort_key)
