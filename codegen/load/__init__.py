"""Codegen load layer: read a spec folder (manifest, modules, cluster, stages, plugins) into the model.

`load_spec(path)` reports every structural problem it finds (TT1xx, plus the few name problems that stop a
node from being built) in one `SpecError`; reference and rule checks are
the validator's job (`codegen.validate`).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from codegen.diagnostics import Diagnostics, SpecError
from codegen.load.extras import build_cluster, build_policy, build_presence, merge_cluster
from codegen.load.modules import MODULE_KEYS, ModuleBuilder, ModuleSource, declare_types
from codegen.load.reader import Reader
from codegen.load.scope import TypeTable
from codegen.load.web import build_web
from codegen.load.yamlpos import Y, display_path, read_yaml
from codegen.model import (
    WIRE_FORMATS,
    ClusterService,
    Frame,
    Loc,
    Module,
    Plugin,
    PresencePolicy,
    Spec,
    StagePolicy,
    WebApi,
)
from codegen.perf import gc_paused

__all__ = ["MAX_FILES", "MAX_MODULES", "load_spec"]

MANIFEST = "ttgen.yaml"
MAX_FILES = 512
MAX_MODULES = 256  # per list (manifest or plugin): a spec this large is a mistake or an attack
MANIFEST_KEYS = (
    "spec",
    "version",
    "syntax",
    "wire",
    "doc",
    "frame",
    "options",
    "modules",
    "cluster",
    "stages",
    "presence",
    "plugins",
    "output",
    "docs_output",
    "web",
)
FRAME_KEYS = ("kind", "max_frame_bytes", "version")
PLUGIN_KEYS = ("plugin", "requires", "modules", "cluster", *MODULE_KEYS)


def load_spec(path: str | os.PathLike[str]) -> Spec:
    """Load the spec at `path` (a folder holding `ttgen.yaml`, or the manifest file itself).

    Raises `SpecError` with every load diagnostic when the spec cannot be built faithfully.
    """
    loader = _Loader()
    with gc_paused():
        spec = loader.load(os.fspath(path))
    if spec is None or loader.diags.has_errors:
        raise SpecError(loader.diags.items)
    return spec


class _Loader:
    def __init__(self) -> None:
        self.diags = Diagnostics()
        self.r = Reader(self.diags)
        self.seen: dict[str, Loc] = {}  # real path -> where it was first included
        self.root = ""
        self.sources: list[ModuleSource] = []
        self.cluster: list[ClusterService] = []
        self.stage_entries: list[tuple[str, Y, Loc, str]] = []  # target, policy, loc, package scope
        self.plugins: list[Plugin] = []
        self.presence: PresencePolicy | None = None
        self.web: WebApi | None = None
        self.table = TypeTable()  # every declared type, filled once all files are read

    def _read(self, path: str, ref: Loc) -> Y | None:
        if "\0" in path:  # the OS refuses such names; say so instead of raising ValueError
            self.diags.error("TT101", f"invalid file name {path!r}", ref)
            return None
        real = os.path.realpath(path)
        if real in self.seen:
            first = self.seen[real]
            self.diags.error(
                "TT108",
                f"{display_path(path)} is included again (circular or repeated include)",
                ref,
                hint=f"first included at {first}",
            )
            return None
        if len(self.seen) >= MAX_FILES:
            self.diags.error("TT109", f"too many spec files (limit {MAX_FILES})", ref)
            return None
        self.seen[real] = ref
        return read_yaml(path, self.diags, ref)

    def load(self, path: str) -> Spec | None:
        manifest = os.path.join(path, MANIFEST) if os.path.isdir(path) else path
        self.root = os.path.dirname(os.path.abspath(manifest))
        y = self._read(manifest, Loc(display_path(manifest)))
        if y is None:
            return None
        m = self.r.mapping(y, "manifest", MANIFEST_KEYS, required=("spec", "version", "modules"))
        if m is None:
            return None
        name = self.r.string(m.get("spec"), "spec") or ""
        version = self.r.string(m.get("version"), "version") or ""
        syntax = self.r.choice(m.get("syntax"), "syntax", ("proto2", "proto3")) if "syntax" in m else "proto2"
        wire = self.r.choice(m.get("wire"), "wire", WIRE_FORMATS) if "wire" in m else "binary"
        base = os.path.dirname(manifest)
        for rel, loc in self._module_list(m.get("modules"), "modules"):
            self._module_file(os.path.join(base, rel), loc, None)
        if "cluster" in m:
            cy = self._included(m["cluster"], base)
            if cy is not None:
                self.cluster = build_cluster(self.r, cy, None)
        if "stages" in m:
            self._stages_section(m["stages"], base)
        if "presence" in m:
            self._presence_section(m["presence"], base)
        if "web" in m:
            wy = self._section(m["web"], base, "web")
            if wy is not None:
                self.web = build_web(self.r, wy)
        for rel, loc in self.r.str_list(m.get("plugins"), "plugins"):
            self._plugin(os.path.join(base, rel), loc)
        modules = self._build_modules()
        return Spec(
            name=name,
            version=version,
            syntax=syntax or "proto2",  # type: ignore[arg-type]
            root=self.root,
            loc=y.keys.get("spec", y.loc),
            doc=self.r.string(m.get("doc"), "doc") or "",
            frame=self._frame(m.get("frame")),
            modules=tuple(modules),
            cluster=tuple(self.cluster),
            stages=tuple(self._policies(modules)),
            plugins=tuple(self.plugins),
            presence=self.presence,
            options=ModuleBuilder(self.r, TypeTable()).options(m.get("options")),
            key_locs={k: v.loc for k, v in m.items()},
            output=self.r.string(m.get("output"), "output"),
            docs_output=self.r.string(m.get("docs_output"), "docs_output"),
            wire=wire or "binary",  # type: ignore[arg-type]
            web=self.web,
        )

    def _module_list(self, y: Y | None, what: str) -> list[tuple[str, Loc]]:
        items = self.r.str_list(y, what)
        if y is not None and len(items) > MAX_MODULES:
            self.diags.error("TT109", f"{what}: {len(items)} entries (limit {MAX_MODULES})", y.loc)
            return []
        return items

    def _included(self, y: Y, base: str) -> Y | None:
        """A section given inline (a mapping) or as a path to a file holding it."""
        if y.kind == "scalar" and isinstance(y.value, str):
            return self._read(os.path.join(base, y.value), y.loc)
        return y

    def _module_file(self, path: str, ref: Loc, plugin: str | None) -> None:
        y = self._read(path, ref)
        if y is None:
            return
        m = self.r.mapping(y, "module file", MODULE_KEYS, required=("module",))
        if m is not None:
            self._add_source(m, y, path, plugin)

    def _add_source(self, m: dict[str, Y], node: Y, path: str, plugin: str | None) -> None:
        rel = os.path.relpath(os.path.abspath(path), self.root).replace(os.sep, "/")
        package = self.r.string(m.get("module"), "module") or ""
        self.sources.append(ModuleSource(m, node, display_path(path), rel, plugin, package))

    def _section(self, y: Y, base: str, key: str) -> Y | None:
        """A manifest section given inline, or in its own file (then `key:` at that file's top level)."""
        node = self._included(y, base)
        if node is None or node is y:
            return node
        top = self.r.mapping(node, f"{key} file", (key,), required=(key,))
        if top is None or key not in top:
            return None
        section: Y = top[key]
        return section

    def _stages_section(self, y: Y, base: str) -> None:
        sy = self._section(y, base, "stages")
        if sy is None:
            return
        for target, pol in self.r.entries(sy, "stages", "TT607", "stage policy for").items():
            self.stage_entries.append((target, pol, sy.keys[target], ""))

    def _presence_section(self, y: Y, base: str) -> None:
        py = self._section(y, base, "presence")
        if py is not None:
            self.presence = build_presence(self.r, py)

    def _plugin(self, path: str, ref: Loc) -> None:
        y = self._read(path, ref)
        if y is None:
            return
        m = self.r.mapping(y, "plugin", PLUGIN_KEYS, required=("plugin",))
        if m is None:
            return
        name = self.r.string(m.get("plugin"), "plugin") or ""
        self.plugins.append(
            Plugin(
                name=name,
                file=os.path.relpath(os.path.abspath(path), self.root).replace(os.sep, "/"),
                loc=y.keys.get("plugin", y.loc),
                doc=self.r.string(m.get("doc"), "doc") or "",
                requires=self.r.string(m.get("requires"), "requires") or "",
                key_locs={k: v.loc for k, v in m.items()},
            )
        )
        base = os.path.dirname(path)
        for rel, loc in self._module_list(m.get("modules"), "plugin modules"):
            self._module_file(os.path.join(base, rel), loc, name)
        if "module" in m:
            inline = {k: v for k, v in m.items() if k in MODULE_KEYS}
            self._add_source(inline, y, path, name)
        elif any(k in m for k in ("messages", "enums", "commands", "service")):
            self.diags.error("TT107", "plugin declares messages, enums or commands but no `module`", y.loc)
        if "stages" in m and "module" not in m:
            self._stages_section(m["stages"], base)
        if "cluster" in m:
            cy = self._included(m["cluster"], base)
            if cy is not None:
                self.cluster = merge_cluster(self.cluster, build_cluster(self.r, cy, name))

    def _build_modules(self) -> list[Module]:
        for src in self.sources:
            declare_types(src, self.table)
        builder = ModuleBuilder(self.r, self.table)
        modules = []
        for src in self.sources:
            modules.append(builder.build(src))
            self.stage_entries.extend((t, p, loc, src.package) for t, p, loc in src.stage_entries)
        return modules

    def _policies(self, modules: list[Module]) -> list[StagePolicy]:
        commands = {c.name for mod in modules for c in mod.commands}
        messages = [m.qualname for mod in modules for m in mod.messages]

        def resolver(scope: str) -> Callable[[str], str]:
            def resolve(target: str) -> str:
                if target in commands:
                    return target
                found = self.table.resolve(target, scope)
                if found is not None and self.table.kind(found) == "message":
                    return found
                tail = [q for q in messages if q.endswith("." + target)]
                return tail[0] if len(tail) == 1 else target

            return resolve

        out = []
        for target, pol, loc, scope in self.stage_entries:
            policy = build_policy(self.r, target, pol, loc, resolver(scope))
            if policy is not None:
                out.append(policy)
        return out

    def _frame(self, y: Y | None) -> Frame:
        if y is None:
            return Frame()
        m = self.r.mapping(y, "frame", FRAME_KEYS) or {}
        kind = self.r.choice(m.get("kind"), "frame kind", ("teamtalk16",)) if "kind" in m else None
        size = self.r.integer(m.get("max_frame_bytes"), "max_frame_bytes")
        version = self.r.integer(m.get("version"), "frame version")
        default = Frame()
        return Frame(
            kind=kind or default.kind,
            max_frame_bytes=size if size is not None else default.max_frame_bytes,
            version=version if version is not None else default.version,
        )
