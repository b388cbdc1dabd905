"""Runtime dispatch layer: the error reply to a refused request, for services without their own.

A request the input stage refuses with `reject` is answered with its command's reply carrying an error when
that reply has an error field (the first singular integer or enum field named like `ERROR_FIELDS`): the field
says the request was invalid, the request's same-named scalar fields that say what was refused are echoed,
other required fields get their defaults. When the reply cannot carry an error (or there is no reply) the
dispatcher closes the connection with a logged reason instead: refused input never looks like a lost packet.
Services with their own answer (`on_rejected`, e.g. runtime.services.refusals) decide for themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from runtime.errors import StageError
from runtime.registry import CommandInfo, Registry

ERROR_FIELDS = ("result_code", "result", "error_code", "error", "status", "code")
_INTEGER_TYPES = frozenset(
    {
        FieldDescriptor.CPPTYPE_INT32,
        FieldDescriptor.CPPTYPE_INT64,
        FieldDescriptor.CPPTYPE_UINT32,
        FieldDescriptor.CPPTYPE_UINT64,
        FieldDescriptor.CPPTYPE_ENUM,
    }
)
_HINTS = ("INVALID", "BAD", "ERROR", "FAIL", "REFUSED", "DENIED")


def error_field(cls: type[Message]) -> Any:
    """The field (a FieldDescriptor) of a reply message that can say a request failed, or None."""
    fields = cls.DESCRIPTOR.fields_by_name
    for name in ERROR_FIELDS:
        fd = fields.get(name)
        if fd is not None and not fd.is_repeated and fd.cpp_type in _INTEGER_TYPES:
            return fd
    return None


def error_value(fd: Any) -> int:
    """A non-zero value that says the request was invalid (for an enum: the value whose name says so)."""
    if fd.cpp_type != FieldDescriptor.CPPTYPE_ENUM or fd.enum_type is None:
        return 1
    value = value_named(fd.enum_type, _HINTS)
    return 1 if value is None else value


def error_reply(
    registry: Registry, info: CommandInfo, request: Message | None, exc: StageError
) -> Message | None:
    """The reply that tells the client why `request` was refused (None: the command cannot carry one)."""
    if not info.reply:
        return None
    cls = registry.by_name(info.reply).message_class
    fd = error_field(cls)
    if fd is None:
        return None
    reply: Any = cls()
    setattr(reply, fd.name, error_value(fd))
    fields = cls.DESCRIPTOR.fields_by_name
    for name in ("result_string", "error_text", "reason", "message"):
        text = fields.get(name)
        if text is not None and text.type == FieldDescriptor.TYPE_STRING and not text.is_repeated:
            setattr(reply, name, f"{info.name} refused ({exc.rule}): {exc}")
            break
    if request is not None:
        echo_fields(reply, request, [name for name in fields if name != fd.name])
    fill_required(reply)
    built: Message = reply
    return built if built.IsInitialized() else None


def value_named(enum: Any, hints: Iterable[str]) -> int | None:
    """The first non-zero value of an enum descriptor whose name contains a hint (hints in order), else the
    first non-zero value; None when the enum has only 0."""
    values = [v for v in enum.values if v.number != 0]
    for hint in hints:
        for v in values:
            if hint in v.name:
                return int(v.number)
    return int(values[0].number) if values else None


def echo_fields(reply: Any, request: Message, names: Iterable[str]) -> None:
    """Copy the request's same-named singular scalar fields (same type, set or without presence) into the
    reply: they say what was refused."""
    fields = reply.DESCRIPTOR.fields_by_name
    req_fields = request.DESCRIPTOR.fields_by_name
    for name in names:
        target, source = fields.get(name), req_fields.get(name)
        if (
            target is None
            or source is None
            or target.is_repeated
            or source.is_repeated
            or target.type != source.type
            or target.type == FieldDescriptor.TYPE_MESSAGE
        ):
            continue
        if not source.has_presence or request.HasField(name):
            setattr(reply, name, getattr(request, name))


def fill_required(msg: Any) -> None:
    """Give unset required fields their default values (a refusal has nothing better to put there)."""
    for fd in msg.DESCRIPTOR.fields:
        if not fd.is_required or msg.HasField(fd.name):
            continue
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            sub = getattr(msg, fd.name)
            sub.SetInParent()
            fill_required(sub)
        else:
            setattr(msg, fd.name, fd.default_value)
