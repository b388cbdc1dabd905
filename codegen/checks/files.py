"""Codegen validate layer: manifest and emitted-file rules (version, frame, file options, imports)."""

from __future__ import annotations

from codegen.checks.names import SEMVER_RE, all_messages
from codegen.diagnostics import Diagnostics, did_you_mean
from codegen.model import SCALAR_TYPES, Loc, Module, Spec, loc_at

# File options protoc knows (descriptor.proto FileOptions), with the values each accepts; None: any string.
BOOL = ("true", "false")
FILE_OPTIONS: dict[str, tuple[str, ...] | None] = {
    "java_package": None,
    "java_outer_classname": None,
    "java_multiple_files": BOOL,
    "java_generate_equals_and_hash": BOOL,
    "java_string_check_utf8": BOOL,
    "optimize_for": ("SPEED", "CODE_SIZE", "LITE_RUNTIME"),
    "go_package": None,
    "cc_generic_services": BOOL,
    "java_generic_services": BOOL,
    "py_generic_services": BOOL,
    "deprecated": BOOL,
    "cc_enable_arenas": BOOL,
    "objc_class_prefix": None,
    "csharp_namespace": None,
    "swift_prefix": None,
    "php_class_prefix": None,
    "php_namespace": None,
    "php_metadata_namespace": None,
    "ruby_package": None,
}


def check_semver(spec: Spec, diags: Diagnostics) -> None:
    """TT110: the manifest version is semantic versioning (MAJOR.MINOR.PATCH[-pre][+build])."""
    if not SEMVER_RE.match(spec.version):
        message = f"version '{spec.version}' is not semver (MAJOR.MINOR.PATCH)"
        diags.error("TT110", message, loc_at(spec, "version"))


def check_frame(spec: Spec, diags: Diagnostics) -> None:
    """TT114: the frame limit leaves room for the 16-byte header and fits the u32 length field."""
    size = spec.frame.max_frame_bytes
    if not 16 < size <= 0xFFFFFFFF:
        message = f"frame max_frame_bytes {size} must be in 17..4294967295"
        diags.error("TT114", message, loc_at(spec, "frame"))


def check_file_options(spec: Spec, diags: Diagnostics) -> None:
    """TT116: a file option protoc does not know, or a value it would reject."""
    sources: list[tuple[tuple[tuple[str, str], ...], Loc]] = [(spec.options, loc_at(spec, "options"))]
    sources += [(mod.options, mod.loc) for mod in spec.modules]
    for options, loc in sources:
        for name, value in options:
            if name not in FILE_OPTIONS:
                diags.error("TT116", f"unknown file option '{name}'" + did_you_mean(name, FILE_OPTIONS), loc)
                continue
            allowed = FILE_OPTIONS[name]
            if allowed is not None and value not in allowed:
                diags.error(
                    "TT116",
                    f"file option {name}: invalid value '{value}'",
                    loc,
                    hint="expected one of: " + ", ".join(allowed),
                )


def _imports(spec: Spec) -> dict[str, set[str]]:
    """Package -> packages whose types its messages use (the `import`s of its emitted .proto file)."""
    owner = {m.qualname: mod.package for mod in spec.modules for m in mod.messages}
    owner.update({q: e.package for q, e in spec.enums().items()})
    graph: dict[str, set[str]] = {mod.package: set() for mod in spec.modules}
    for m in all_messages(spec):
        for f in m.fields:
            if f.type in SCALAR_TYPES:
                continue
            target = owner.get(f.type)
            if target is not None and target != m.package:
                graph[m.package].add(target)
    return graph


def check_import_cycles(spec: Spec, diags: Diagnostics) -> None:
    """TT213: modules whose types refer to each other in a cycle (protoc rejects recursive imports)."""
    graph = _imports(spec)
    modules: dict[str, Module] = {}
    for mod in spec.modules:
        modules.setdefault(mod.package, mod)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    reported: set[frozenset[str]] = set()

    def visit(pkg: str, path: list[str]) -> None:
        state[pkg] = 1
        for dep in sorted(graph.get(pkg, ())):
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    diags.error(
                        "TT213",
                        "modules import each other: " + " -> ".join(cycle),
                        modules[dep].loc,
                        hint="move the shared types into a module both can import",
                    )
            elif dep not in state:
                visit(dep, [*path, dep])
        state[pkg] = 2

    for pkg in graph:
        if pkg not in state:
            visit(pkg, [pkg])


CHECKS = [check_semver, check_frame, check_file_options, check_import_cycles]
