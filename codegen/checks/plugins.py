"""Codegen validate layer: TT7xx plugin rules (no edits to the base spec, `requires` met, unique names)."""

from __future__ import annotations

import re

from codegen.checks.names import SEMVER_RE
from codegen.diagnostics import Diagnostics
from codegen.model import Loc, Spec, loc_at

_REQ_RE = re.compile(r"^\s*([a-z][a-z0-9_]*)\s*((?:(?:>=|<=|==|!=|>|<)\s*[0-9][0-9A-Za-z.+-]*\s*,?\s*)*)$")
_CLAUSE_RE = re.compile(r"(>=|<=|==|!=|>|<)\s*([0-9][0-9A-Za-z.+-]*)")


def _version_key(text: str) -> tuple[int, ...]:
    """MAJOR.MINOR.PATCH as a tuple (missing parts are 0; pre-release and build are ignored)."""
    core = re.split(r"[-+]", text, maxsplit=1)[0]
    parts = [int(p) if p.isdigit() else 0 for p in core.split(".")]
    return tuple([*parts, 0, 0, 0][:3])


def requirement_problem(requires: str, name: str, version: str) -> tuple[str, str] | None:
    """(code, message) when `requires` (e.g. 'teamtalk>=1.0,<2') is malformed or not met by name/version."""
    match = _REQ_RE.match(requires)
    if match is None:
        return "TT704", f"malformed requires '{requires}' (expected e.g. 'teamtalk>=1.0,<2')"
    if match.group(1) != name:
        return "TT703", f"plugin requires spec '{match.group(1)}', but this spec is '{name}'"
    have = _version_key(version)
    for op, wanted in _CLAUSE_RE.findall(match.group(2)):
        want = _version_key(wanted)
        ok = {
            ">=": have >= want,
            "<=": have <= want,
            ">": have > want,
            "<": have < want,
            "==": have == want,
            "!=": have != want,
        }[op]
        if not ok:
            return "TT703", f"plugin requires {name}{op}{wanted}, but the spec is version {version}"
    return None


def check_plugin_requires(spec: Spec, diags: Diagnostics) -> None:
    """TT703: the spec does not satisfy a plugin's `requires`. TT704: `requires` is malformed."""
    if not SEMVER_RE.match(spec.version):
        return  # TT110 already says the version is unusable
    for plugin in spec.plugins:
        if not plugin.requires:
            continue
        problem = requirement_problem(plugin.requires, spec.name, spec.version)
        if problem:
            diags.error(problem[0], f"plugin '{plugin.name}': {problem[1]}", loc_at(plugin, "requires"))


def check_plugin_names(spec: Spec, diags: Diagnostics) -> None:
    """TT705: two plugins with one name."""
    seen: dict[str, Loc] = {}
    for plugin in spec.plugins:
        if plugin.name in seen:
            diags.error(
                "TT705",
                f"plugin '{plugin.name}' is enabled twice",
                plugin.loc,
                hint=f"first at {seen[plugin.name]}",
            )
        seen.setdefault(plugin.name, plugin.loc)


def check_plugin_redeclarations(spec: Spec, diags: Diagnostics) -> None:
    """TT702: a plugin module redeclares a base package, message or enum (plugins only add)."""
    base = {mod.package: mod for mod in spec.modules if mod.plugin is None}
    for mod in spec.modules:
        if mod.plugin is None or mod.package not in base:
            continue
        existing = {m.name for m in base[mod.package].messages} | {e.name for e in base[mod.package].enums}
        clashes = [m for m in mod.messages if m.name in existing] + [
            e for e in mod.enums if e.name in existing
        ]
        for node in clashes:
            diags.error(
                "TT702", f"plugin '{mod.plugin}' declares existing '{mod.package}.{node.name}'", node.loc
            )
        if not clashes:
            diags.error(
                "TT702",
                f"plugin '{mod.plugin}' reuses base package '{mod.package}'",
                mod.loc,
                hint="put plugin types in a package of their own",
            )


CHECKS = [check_plugin_requires, check_plugin_names, check_plugin_redeclarations]
