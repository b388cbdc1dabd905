"""Codegen emit layer: turns a validated `Spec` into an in-memory map of generated files.

`emit_stack(spec, options)` runs every registered emitter in order. Each emitter receives the spec, the
options and the files emitted so far (so the protoc step can compile the `.proto` text the proto emitter
produced) and returns new files. Later emitters (fuzz strategies, generated tests) plug in with
`register_emitter`; nothing here touches disk (that is `codegen.writer`'s job).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from codegen.model import Spec
from codegen.perf import gc_paused

FileMap = dict[str, str | bytes]


@dataclass(frozen=True)
class EmitOptions:
    """Knobs of one generation run.

    `spec_label` is the spec's location as written into DO NOT EDIT headers; empty means `default_spec_label`.
    It must be relative (never absolute) so that output is identical on every machine. `compile` runs protoc;
    turning it off yields the text-only files, enough for a fast preview of the `.proto` output.
    """

    spec_label: str = ""
    compile: bool = True
    docs: bool = True


# An emitter: (spec, options, files emitted so far) -> files it adds.
Emitter = Callable[[Spec, EmitOptions, Mapping[str, str | bytes]], FileMap]


@dataclass(frozen=True)
class RegisteredEmitter:
    """An emitter with the name used to order, replace or skip it."""

    name: str
    func: Emitter


EMITTERS: list[RegisteredEmitter] = []


def register_emitter(name: str, func: Emitter, *, after: str | None = None) -> None:
    """Add an emitter (or replace the one with the same name), by default at the end of the run.

    `after` puts it right behind a named emitter, e.g. `register_emitter("strategies", f, after="protoc")`.
    """
    for i, existing in enumerate(EMITTERS):
        if existing.name == name:
            EMITTERS[i] = RegisteredEmitter(name, func)
            return
    entry = RegisteredEmitter(name, func)
    if after is None:
        EMITTERS.append(entry)
        return
    names = [e.name for e in EMITTERS]
    if after not in names:
        raise ValueError(f"no emitter named {after!r} (have {', '.join(names)})")
    EMITTERS.insert(names.index(after) + 1, entry)


def default_spec_label(spec: Spec) -> str:
    """The spec folder's last two path parts (`spec/teamtalk`): stable whatever directory ttgen runs from."""
    return "/".join(Path(spec.root).resolve().parts[-2:])


def emit_stack(spec: Spec, options: EmitOptions | None = None) -> FileMap:
    """Generate every file of `spec`'s stack: relative POSIX path -> text (str) or binary (bytes) content.

    The result is sorted by path and byte-stable: the same spec and options always give the same map.
    Raises `codegen.diagnostics.SpecError` (TT9xx) if protoc rejects the emitted `.proto` text.
    """
    opts = options or EmitOptions()
    if not opts.spec_label:
        opts = replace(opts, spec_label=default_spec_label(spec))
    files: FileMap = {}
    with gc_paused():
        for emitter in EMITTERS:
            added = emitter.func(spec, opts, files)
            clash = sorted(set(added) & set(files))
            if clash:
                raise RuntimeError(f"emitter {emitter.name!r} overwrote {', '.join(clash)}")
            files.update(added)
    return dict(sorted(files.items()))


def _register_builtin() -> None:
    # Imported here, not at the top, because the emitter modules import the helpers of this package.
    from codegen.emit import docs, proto, python

    register_emitter("proto", proto.emit_protos)
    register_emitter("protoc", proto.emit_compiled)
    register_emitter("package", python.emit_package_init)
    register_emitter("registry", python.emit_registry)
    register_emitter("servers", python.emit_servers)
    register_emitter("clients", python.emit_clients)
    register_emitter("docs", docs.emit_docs)
    from codegen.emit import fuzz

    register_emitter("fuzz", fuzz.emit_fuzz)
    from codegen.emit import web

    register_emitter("web", web.emit_web)


_register_builtin()

__all__ = [
    "EMITTERS", "EmitOptions", "Emitter", "FileMap", "default_spec_label", "emit_stack", "register_emitter",
]
