"""Codegen protoc driver: compiles emitted `.proto` text in-process with grpcio-tools' bundled protoc.

The `.proto` text is written to a private temporary folder (never the output tree), compiled with
`--python_out`, `--pyi_out` and `--descriptor_set_out`, and read back. protoc names sibling modules with
absolute imports (`import IM_BaseDefine_pb2 as ...`); we rewrite those to relative imports so that a generated
stack is a self-contained package that imports from wherever it sits. protoc rejecting our own emitted text is
a ttgen bug, reported as TT901 at the spec location of the offending declaration.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from codegen.diagnostics import Diagnostic, SpecError
from codegen.model import Loc, Spec

# protoc writes its errors to the process's stderr file descriptor, so capturing them means swapping fd 2;
# the lock keeps two threads from doing that at once.
_FD_LOCK = threading.Lock()
_ERROR_LINE = re.compile(r"^(?P<file>[^:\s]+\.proto):(?P<line>\d+):(?P<col>\d+): (?P<msg>.*)$")
_SIBLING_IMPORT = re.compile(r"^import (?P<mod>\w+_pb2) as (?P<alias>\w+)$", re.MULTILINE)
_SIBLING_FROM = re.compile(r"^from (?P<mod>\w+_pb2) import ", re.MULTILINE)


@dataclass(frozen=True)
class ProtocResult:
    """Compiled output: `<Name>_pb2.py` / `.pyi` text by file name, and the FileDescriptorSet bytes."""

    modules: dict[str, str]
    descriptor_set: bytes


@functools.cache
def well_known_include() -> str:
    """The folder holding `google/protobuf/*.proto` that ships inside the grpc_tools package."""
    return str(resources.files("grpc_tools") / "_proto")


def compile_protos(protos: Mapping[str, str], *, spec: Spec | None = None) -> ProtocResult:
    """Compile `.proto` sources (file name -> text) and return the Python modules and the descriptor set.

    Raises `SpecError` with one TT901 diagnostic per protoc error, located in the spec when `spec` is given.
    """
    scratch = _scratch_parent()
    if scratch is not None:
        try:
            return _compile_in(scratch, protos, spec)
        except (OSError, SpecError):
            pass  # a full or unusable RAM disk (or a real error): the ordinary temporary folder decides
    return _compile_in(None, protos, spec)


def _compile_in(parent: str | None, protos: Mapping[str, str], spec: Spec | None) -> ProtocResult:
    from grpc_tools import _protoc_compiler

    with tempfile.TemporaryDirectory(prefix="ttgen-protoc-", dir=parent) as tmp:
        src = Path(tmp) / "src"
        out = Path(tmp) / "out"
        src.mkdir()
        out.mkdir()
        for name, text in protos.items():
            (src / name).write_text(text, encoding="utf-8")
        descriptor_path = Path(tmp) / "descriptor_set.bin"
        args = [
            "grpc_tools.protoc",
            f"-I{src}",
            f"-I{well_known_include()}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--descriptor_set_out={descriptor_path}",
            "--include_imports",
            *(str(src / name) for name in sorted(protos)),
        ]
        with _captured_stderr() as captured:
            status = _protoc_compiler.run_main([a.encode() for a in args])
        if status != 0:
            raise SpecError(protoc_diagnostics(captured(), protos, spec))
        modules = {
            path.name: relative_imports(path.read_text(encoding="utf-8"), set(protos))
            for path in sorted(out.iterdir())
        }
        return ProtocResult(modules=modules, descriptor_set=descriptor_path.read_bytes())


@functools.cache
def _scratch_parent() -> str | None:
    """Where protoc's private folder goes: a RAM-backed `/dev/shm` when there is one and TMPDIR is unset.

    protoc reads and writes a few dozen small files per run; creating files costs about a millisecond each on
    some disks (journaling, overlay file systems), and nothing here needs to outlive the run. None means the
    platform's default temporary folder.
    """
    shm = "/dev/shm"
    if os.environ.get("TMPDIR") or not os.path.isdir(shm) or not os.access(shm, os.W_OK | os.X_OK):
        return None
    return shm


def relative_imports(source: str, proto_files: set[str]) -> str:
    """Rewrite imports of sibling `_pb2` modules (those compiled from `proto_files`) into relative imports."""
    siblings = {name[: -len(".proto")] + "_pb2" for name in proto_files}

    def as_relative(match: re.Match[str]) -> str:
        if match.group("mod") not in siblings:
            return match.group(0)
        return f"from . import {match.group('mod')} as {match.group('alias')}"

    def from_relative(match: re.Match[str]) -> str:
        if match.group("mod") not in siblings:
            return match.group(0)
        return f"from .{match.group('mod')} import "

    return _SIBLING_FROM.sub(from_relative, _SIBLING_IMPORT.sub(as_relative, source))


@contextlib.contextmanager
def _captured_stderr() -> Iterator[Callable[[], str]]:
    """Redirect file descriptor 2 to a temporary file for the duration.

    Yields a reader that returns what was written once the block has exited.
    """
    with _FD_LOCK, tempfile.TemporaryFile(mode="w+b") as sink:
        saved = os.dup(2)
        text: list[str] = []
        try:
            os.dup2(sink.fileno(), 2)
            yield lambda: "".join(text)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text.append(sink.read().decode("utf-8", "replace"))


def protoc_diagnostics(output: str, protos: Mapping[str, str], spec: Spec | None) -> list[Diagnostic]:
    """Turn protoc's error text into TT901 diagnostics pointing at the spec declaration that caused each."""
    diags = []
    for line in output.splitlines():
        m = _ERROR_LINE.match(line.strip())
        if m is None:
            if line.strip():
                diags.append(_internal(line.strip(), spec.loc if spec else Loc.none()))
            continue
        name = os.path.basename(m.group("file"))
        loc = locate(spec, name, protos.get(name, ""), int(m.group("line")))
        diags.append(_internal(f"{name}:{m.group('line')}:{m.group('col')}: {m.group('msg')}", loc))
    return diags or [_internal("protoc failed without a message", spec.loc if spec else Loc.none())]


def _internal(message: str, loc: Loc) -> Diagnostic:
    return Diagnostic(
        "TT901", "error", f"protoc rejected the emitted .proto text: {message}", loc,
        hint="this is a ttgen bug (the validator should have caught it); please report it with the spec",
    )


_DECL = re.compile(r"^\s*(?:message|enum)\s+(\w+)\s*\{")
_FIELD = re.compile(r"(\w+)\s*=\s*\d+")


def locate(spec: Spec | None, proto_file: str, text: str, line_no: int) -> Loc:
    """Best-effort spec location of line `line_no` of an emitted `.proto`: the field, message or module."""
    if spec is None:
        return Loc(proto_file, line_no, 0)
    module = next((m for m in spec.modules if m.proto_file == proto_file), None)
    if module is None:
        return spec.loc
    lines = text.splitlines()
    field_name = None
    if 0 < line_no <= len(lines):
        fm = _FIELD.search(lines[line_no - 1])
        field_name = fm.group(1) if fm else None
    for i in range(min(line_no, len(lines)) - 1, -1, -1):
        dm = _DECL.match(lines[i])
        if dm is None:
            continue
        simple = dm.group(1)
        for message in module.messages:
            if message.name.rsplit(".", 1)[-1] != simple:
                continue
            for f in message.fields:
                if f.name == field_name:
                    return f.loc
            return message.loc
        for enum in module.enums:
            if enum.name == simple:
                return enum.loc
        break
    return module.loc
