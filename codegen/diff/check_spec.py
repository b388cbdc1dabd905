"""Codegen diff layer: spec-wide rules (name, syntax, frame, modules, packages, options, plugins, version)."""

from __future__ import annotations

import re

from codegen.diff.context import DiffContext, pair_elements
from codegen.diff.findings import Category
from codegen.model import Module, Spec


def check_spec(ctx: DiffContext) -> None:
    """Spec-level changes; fills `ctx.package_map` so later checks pair elements across package changes."""
    old, new = ctx.old, ctx.new
    if old.name != new.name:
        ctx.report("SPEC_NAME_CHANGED", new.loc, f"spec renamed {old.name} -> {new.name}", new.name)
    if old.syntax != new.syntax:
        ctx.report("SYNTAX_CHANGED", new.loc, f"syntax changed {old.syntax} -> {new.syntax}", new.name)
    if old.frame.kind != new.frame.kind:
        ctx.report("FRAME_KIND_CHANGED", new.loc, f"frame kind changed {old.frame.kind} -> {new.frame.kind}")
    if old.frame.version != new.frame.version:
        ctx.report(
            "FRAME_VERSION_CHANGED",
            new.loc,
            f"frame header version changed {old.frame.version} -> {new.frame.version}",
        )
    if new.frame.max_frame_bytes < old.frame.max_frame_bytes:
        ctx.report(
            "FRAME_MAX_BYTES_LOWERED",
            new.loc,
            f"max_frame_bytes lowered {old.frame.max_frame_bytes} -> {new.frame.max_frame_bytes}",
            direction="tightened",
        )
    elif new.frame.max_frame_bytes > old.frame.max_frame_bytes:
        ctx.report(
            "FRAME_MAX_BYTES_RAISED",
            new.loc,
            f"max_frame_bytes raised {old.frame.max_frame_bytes} -> {new.frame.max_frame_bytes}",
            direction="relaxed",
        )
    _check_modules(ctx)
    old_plugins, new_plugins = {p.name: p for p in old.plugins}, {p.name: p for p in new.plugins}
    for name in sorted(set(new_plugins) - set(old_plugins)):
        ctx.report("PLUGIN_ADDED", new_plugins[name].loc, f"plugin {name} enabled", name)
    for name in sorted(set(old_plugins) - set(new_plugins)):
        ctx.report("PLUGIN_REMOVED", old_plugins[name].loc, f"plugin {name} disabled", name)


def _options(spec: Spec, module: Module) -> dict[str, str]:
    merged = dict(spec.options)
    merged.update(module.options)
    return merged


def _check_modules(ctx: DiffContext) -> None:
    by_file = pair_elements(ctx.old.modules, ctx.new.modules, name=lambda m: m.file, hint=lambda m: None)
    # A module file that was renamed but kept its package is still the same module.
    by_package = pair_elements(by_file.removed, by_file.added, name=lambda m: m.package, hint=lambda m: None)
    for o, n, _ in [*by_file.pairs, *by_package.pairs]:
        if o.package != n.package:
            ctx.package_map[o.package] = n.package
            ctx.report(
                "PACKAGE_CHANGED", n.loc, f"{n.file}: package changed {o.package} -> {n.package}", n.package
            )
        old_opts, new_opts = _options(ctx.old, o), _options(ctx.new, n)
        for key in sorted(set(old_opts) | set(new_opts)):
            if old_opts.get(key) != new_opts.get(key):
                ctx.report(
                    "FILE_OPTION_CHANGED",
                    n.loc,
                    f"{n.file}: option {key} {old_opts.get(key)!r} -> {new_opts.get(key)!r}",
                    f"{n.package}:{key}",
                )
    for m in by_package.added:
        ctx.report("MODULE_ADDED", m.loc, f"module {m.package} ({m.file}) added", m.package)
    for m in by_package.removed:
        ctx.report("MODULE_REMOVED", m.loc, f"module {m.package} ({m.file}) removed", m.package)


_SEMVER = re.compile(r"^\s*v?(\d+)\.(\d+)\.(\d+)(?:[-+].*)?\s*$")
_VERSION_RULES = {
    "VERSION_MAJOR_BUMP_MISSING",
    "VERSION_MINOR_BUMP_MISSING",
    "VERSION_DECREASED",
    "VERSION_UNPARSEABLE",
}


def parse_version(text: str) -> tuple[int, int, int] | None:
    """`MAJOR.MINOR.PATCH` (with optional `v` prefix and pre-release/build suffix) as a tuple, else None."""
    m = _SEMVER.match(str(text))
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def check_version(ctx: DiffContext) -> None:
    """Check the `version` bump against the worst change found (run last)."""
    old_v, new_v = parse_version(ctx.old.version), parse_version(ctx.new.version)
    if old_v is None or new_v is None:
        bad = ctx.old.version if old_v is None else ctx.new.version
        ctx.report(
            "VERSION_UNPARSEABLE",
            ctx.new.loc,
            f"version {bad!r} is not MAJOR.MINOR.PATCH; version bump not checked",
        )
        return
    if new_v < old_v:
        ctx.report(
            "VERSION_DECREASED", ctx.new.loc, f"version went down {ctx.old.version} -> {ctx.new.version}"
        )
        return
    changes = [f for f in ctx.findings if f.rule not in _VERSION_RULES]
    breaking = [f for f in changes if f.category.is_breaking]
    major_bumped = new_v[0] > old_v[0] or (old_v[0] == 0 and new_v[:2] > old_v[:2])
    minor_bumped = new_v[:2] > old_v[:2]
    if breaking and not major_bumped:
        worst = max(breaking, key=lambda f: f.category.rank).category
        needed = "a minor bump before 1.0" if old_v[0] == 0 else f"{old_v[0] + 1}.0.0"
        ctx.report(
            "VERSION_MAJOR_BUMP_MISSING",
            ctx.new.loc,
            f"version {ctx.old.version} -> {ctx.new.version}, but {len(breaking)} breaking change(s) "
            f"(worst: {worst.value}) need {needed}",
            ctx.new.name,
            category=worst,
        )
        return
    features = [f for f in changes if not f.category.is_breaking and not f.rule.endswith("_DEPRECATED")]
    if features and not minor_bumped:
        ctx.report(
            "VERSION_MINOR_BUMP_MISSING",
            ctx.new.loc,
            f"version {ctx.old.version} -> {ctx.new.version}: {len(features)} addition(s) or behaviour "
            f"change(s) call for a minor bump",
            ctx.new.name,
            category=Category.COMPATIBLE,
        )
