"""CLI compat layer: generate a spec's stack into a folder and load it into its own protobuf descriptor pool.

Two versions of one protocol usually share file and message names (`Chat_Base.proto`, `Chat.Base.Note`), so
importing both generated `_pb2` modules would collide in protobuf's default pool. Each version is therefore
loaded from its generated `descriptor_set.bin` into a private `DescriptorPool`, and its message classes are
made with `message_factory.GetMessageClass`; the per-version `Registry` is built over those classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from codegen.emit import EmitOptions, emit_stack
from codegen.model import Spec
from runtime.registry import CommandInfo, Registry

DESCRIPTOR_SET = "descriptor_set.bin"

# The compat run checks the wire contract (frames and bodies). Stage policies are the diff's business, and the
# auth gate would refuse every command of an unauthenticated test connection, so the harness switches it off.
COMPAT_STAGES: Mapping[str, Mapping[str, Any]] = {"input": {"require_auth": False}}


@dataclass(frozen=True)
class VersionStack:
    """One protocol version, generated on disk and loaded in isolation."""

    label: str  # "old" or "new"
    spec: Spec
    directory: Path  # the generated stack folder
    pool: descriptor_pool.DescriptorPool
    classes: Mapping[str, type[Message]]  # qualified message name -> class from this version's pool
    registry: Registry

    def message_class(self, qualname: str) -> type[Message]:
        """The class of a message of this version (KeyError if the version has no such message)."""
        return self.classes[qualname]


def write_stack(spec: Spec, directory: Path) -> Path:
    """Emit the stack of `spec` (same output as `ttgen generate`) into `directory/<spec name>/`."""
    files = emit_stack(spec, EmitOptions(docs=False))
    target = directory / spec.name
    for rel, content in files.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return target


def load_pool(descriptor_set: bytes) -> descriptor_pool.DescriptorPool:
    """A fresh descriptor pool holding every file of a serialized FileDescriptorSet."""
    fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)
    pool = descriptor_pool.DescriptorPool()
    pending = list(fds.file)
    added: set[str] = set()
    while pending:  # add files after their dependencies, whatever order the set lists them in
        progress = False
        for file_proto in list(pending):
            if all(dep in added for dep in file_proto.dependency):
                pool.Add(file_proto)
                added.add(file_proto.name)
                pending.remove(file_proto)
                progress = True
        if not progress:
            missing = {dep for f in pending for dep in f.dependency} - added
            raise ValueError(f"descriptor set is missing dependencies: {', '.join(sorted(missing))}")
    return pool


def build_registry(spec: Spec, classes: Mapping[str, type[Message]]) -> Registry:
    """The command registry of one version, over that version's isolated message classes."""
    services = spec.services()
    hosts: dict[str, list[str]] = {}
    for svc in spec.cluster:
        for name in svc.hosts:
            hosts.setdefault(name, []).append(svc.name)
    infos = [
        CommandInfo(
            name=c.name,
            service_id=services[c.service].id if c.service in services else c.id >> 8,
            command_id=c.id,
            message_class=classes[c.message],
            direction=c.direction,
            reply=c.reply,
            hosted_by=tuple(sorted(hosts.get(c.name, ()))),
            stages=COMPAT_STAGES,
            doc=c.doc,
        )
        for c in sorted(spec.commands().values(), key=lambda c: c.id)
    ]
    return Registry(spec.name, spec.version, infos, services={s.name: s.id for s in services.values()})


def build_stack(spec: Spec, directory: Path, label: str) -> VersionStack:
    """Generate `spec` under `directory` and load it into its own pool, classes and registry."""
    stack_dir = write_stack(spec, directory)
    pool = load_pool((stack_dir / DESCRIPTOR_SET).read_bytes())
    classes = {
        qualname: message_factory.GetMessageClass(pool.FindMessageTypeByName(qualname))
        for qualname in sorted(spec.messages())
    }
    return VersionStack(label, spec, stack_dir, pool, classes, build_registry(spec, classes))
