"""Codegen diff layer: classify the changes between two spec versions with stable, documented rules.

`diff_specs(old, new)` is pure over two `codegen.model.Spec` objects; `codegen.gitspec` loads a side
from a git revision; `ttgen diff` renders the findings (`codegen.diff.render`).
"""

from codegen.diff.catalog import RULES, RuleInfo, rule
from codegen.diff.engine import diff_specs
from codegen.diff.findings import Category, Finding, at_or_above

__all__ = ["RULES", "Category", "Finding", "RuleInfo", "at_or_above", "diff_specs", "rule"]
