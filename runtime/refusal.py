"""Runtime dispatch layer: the error reply to a refused request, for services without their own.

A request the input stage refuses with `reject` is answered with its command's reply carrying an error when
that reply has an error field (the first singular integer or enum field named like `ERROR_FIELDS`): the field
says the request was invalid, the request's same-named scalar fields that say what was refused are echoed,
other required fields get their defaults. When the reply cannot carry an error (or there is no reply) the
dispatcher closes the connection with a logged reason instead: refused input never looks like a lost packet.
Services with their own answer (`on_rejected`, e.g. runtime.services.refusals) decide for themselves.
"""

from __future__ import annotations

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
    values = [v for v in fd.enum_type.values if v.number != 0]
    for hint in _HINTS:
        for v in values:
            if hint in v.name:
                return int(v.number)
    return int(values[0].number) if values else 1


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
        req_fields = request.DESCRIPTOR.fields_by_name
        for name, target in fields.items():
            source = req_fields.get(name)
            if (
                source is None
                or target is fd
                or target.is_repeated
                or source.is_repeated
                or target.type != source.type
                or target.type == FieldDescriptor.TYPE_MESSAGE
            ):
                continue
            if not source.has_presence or request.HasField(name):
                setattr(reply, name, getattr(request, name))
    _fill_required(reply)
    built: Message = reply
    return built if built.IsInitialized() else None


def _fill_required(msg: Any) -> None:
    for fd in msg.DESCRIPTOR.fields:
        if not fd.is_required or msg.HasField(fd.name):
            continue
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            sub = getattr(msg, fd.name)
            sub.SetInParent()
            _fill_required(sub)
        else:
            setattr(msg, fd.name, fd.default_value)
