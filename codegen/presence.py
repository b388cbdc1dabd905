"""Codegen model layer: what a presence policy resolves to: the user-stat fields its commands carry and the
numeric status values, shared by the validator (TT8xx) and the registry emitter.

A *user stat* is a message with an integer `user_id` field and an enum `status` field (TeamTalk's
`IM.BaseDefine.UserStat`). The `notify` command's message holds one singular user-stat field; the `batch`
command's message holds one repeated user-stat field of the same type, and may hold an integer `user_id`
field of its own, which the runtime sets to the recipient.
"""

from __future__ import annotations

from dataclasses import dataclass

from codegen.model import SCALAR_TYPES, Enum, Field, Message, PresencePolicy, Spec
from codegen.stages_schema import duration_ms

_INTEGER_TYPES = frozenset({"uint32", "uint64", "int32", "int64", "fixed32", "fixed64", "sint32", "sint64"})


def is_user_stat(spec: Spec, qualname: str) -> bool:
    """True for a message with an integer `user_id` and an enum `status` field."""
    message = spec.messages().get(qualname)
    if message is None:
        return False
    fields = {f.name: f for f in message.fields}
    user, status = fields.get("user_id"), fields.get("status")
    return (
        user is not None
        and user.type in _INTEGER_TYPES
        and status is not None
        and status.type not in SCALAR_TYPES
        and status.type in spec.enums()
    )


def stat_fields(spec: Spec, message: Message, repeated: bool) -> list[Field]:
    """The user-stat fields of a message (repeated ones, or singular non-map ones)."""
    return [
        f
        for f in message.fields
        if (f.label == "repeated") == repeated and not f.is_map and is_user_stat(spec, f.type)
    ]


def status_enum(spec: Spec, stat_type: str) -> Enum | None:
    """The enum of a user-stat message's `status` field."""
    message = spec.messages().get(stat_type)
    if message is None:
        return None
    for f in message.fields:
        if f.name == "status":
            return spec.enums().get(f.type)
    return None


@dataclass(frozen=True)
class PresenceShape:
    """A valid presence policy, resolved: what the generated registry carries (`PRESENCE`)."""

    notify: str
    notify_field: str
    batch: str | None
    batch_field: str | None
    batch_owner_field: str | None
    batch_from: int
    audience: tuple[str, ...]
    clients: str
    coalesce_ms: int
    online: int
    offline: int

    def as_dict(self) -> dict[str, object]:
        return {
            "audience": self.audience,
            "batch": self.batch,
            "batch_field": self.batch_field,
            "batch_from": self.batch_from,
            "batch_owner_field": self.batch_owner_field,
            "clients": self.clients,
            "coalesce_ms": self.coalesce_ms,
            "notify": self.notify,
            "notify_field": self.notify_field,
            "offline": self.offline,
            "online": self.online,
        }


def resolve_presence(spec: Spec, policy: PresencePolicy) -> PresenceShape | None:
    """The resolved policy, or None when it does not resolve (the validator says why)."""
    commands, messages = spec.commands(), spec.messages()
    notify = commands.get(policy.notify)
    notify_msg = messages.get(notify.message) if notify else None
    if notify_msg is None:
        return None
    singles = stat_fields(spec, notify_msg, repeated=False)
    if len(singles) != 1:
        return None
    stat_type = singles[0].type
    batch_field = owner = None
    if policy.batch is not None:
        batch = commands.get(policy.batch)
        batch_msg = messages.get(batch.message) if batch else None
        if batch_msg is None:
            return None
        lists = [f for f in stat_fields(spec, batch_msg, repeated=True) if f.type == stat_type]
        if len(lists) != 1:
            return None
        batch_field = lists[0].name
        owner = next(
            (f.name for f in batch_msg.fields if f.name == "user_id" and f.type in _INTEGER_TYPES), None
        )
    enum = status_enum(spec, stat_type)
    values = {v.name: v.value for v in enum.values} if enum else {}
    ms = duration_ms(policy.coalesce) if isinstance(policy.coalesce, str) else None
    if policy.online not in values or policy.offline not in values or ms is None:
        return None
    return PresenceShape(
        notify=policy.notify,
        notify_field=singles[0].name,
        batch=policy.batch,
        batch_field=batch_field,
        batch_owner_field=owner,
        batch_from=policy.batch_from,
        audience=policy.audience,
        clients=policy.clients,
        coalesce_ms=ms,
        online=values[policy.online],
        offline=values[policy.offline],
    )
