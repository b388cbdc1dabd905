"""Codegen validate layer: TT8xx presence policy (commands, user-stat fields, interval, status values)."""

from __future__ import annotations

from codegen.diagnostics import Diagnostics, did_you_mean
from codegen.model import Spec, loc_at
from codegen.presence import stat_fields, status_enum
from codegen.stages_schema import duration_ms


def _commands(spec: Spec) -> list[tuple[str, str]]:
    """(key, command name) of the policy's commands: notify, then batch if given."""
    policy = spec.presence
    if policy is None:
        return []
    out = [("notify", policy.notify)]
    if policy.batch is not None:
        out.append(("batch", policy.batch))
    return out


def check_presence_commands(spec: Spec, diags: Diagnostics) -> None:
    """TT801: notify/batch names no command. TT804: the command is never sent to clients."""
    policy = spec.presence
    if policy is None:
        return
    commands = spec.commands()
    for key, name in _commands(spec):
        command = commands.get(name)
        loc = loc_at(policy, key)
        if command is None:
            diags.error(
                "TT801", f"presence {key} names unknown command '{name}'" + did_you_mean(name, commands), loc
            )
        elif command.direction not in ("s2c", "both"):
            diags.error(
                "TT804",
                f"presence {key} command '{name}' is {command.direction}: it never goes to clients",
                loc,
                hint="presence pushes need direction s2c or both",
            )


def check_presence_fields(spec: Spec, diags: Diagnostics) -> None:
    """TT802: the notify message holds no single user-stat field, or the batch message no repeated one of
    the same type (a user stat: an integer `user_id` and an enum `status`)."""
    policy = spec.presence
    if policy is None:
        return
    commands, messages = spec.commands(), spec.messages()
    stat_type: str | None = None
    for key, name in _commands(spec):
        command = commands.get(name)
        message = messages.get(command.message) if command else None
        if message is None:
            continue
        repeated = key == "batch"
        found = stat_fields(spec, message, repeated)
        if key == "batch" and stat_type is not None:
            found = [f for f in found if f.type == stat_type]
        if len(found) == 1:
            stat_type = stat_type or found[0].type
            continue
        kind = "repeated" if repeated else "singular"
        what = "no" if not found else f"{len(found)} (ambiguous)"
        same = f" of type '{stat_type}'" if repeated and stat_type else ""
        diags.error(
            "TT802",
            f"presence {key} command '{name}': message '{message.name}' has {what} {kind} user-stat"
            f" field{same}",
            loc_at(policy, key),
            hint="a user stat is a message with an integer `user_id` and an enum `status` field",
        )


def check_presence_values(spec: Spec, diags: Diagnostics) -> None:
    """TT803: coalesce is not a duration, or batch_from is below 2. TT805: online/offline name no value of
    the user stat's status enum, or the same one."""
    policy = spec.presence
    if policy is None:
        return
    if duration_ms(policy.coalesce) is None:
        diags.error(
            "TT803",
            f"bad presence coalesce '{policy.coalesce}': expected a duration such as 0ms, 500ms or 2s",
            loc_at(policy, "coalesce"),
        )
    if policy.batch_from < 2:
        diags.error(
            "TT803",
            f"bad presence batch_from {policy.batch_from}: expected 2 or more (a single change is a notify)",
            loc_at(policy, "batch_from"),
        )
    command = spec.commands().get(policy.notify)
    message = spec.messages().get(command.message) if command else None
    singles = stat_fields(spec, message, repeated=False) if message else []
    enum = status_enum(spec, singles[0].type) if len(singles) == 1 else None
    if enum is None:
        return  # TT801/TT802 already said why
    names = [v.name for v in enum.values]
    for key in ("online", "offline"):
        value = getattr(policy, key)
        if value not in names:
            diags.error(
                "TT805",
                f"presence {key} '{value}' is not a value of '{enum.qualname}'" + did_you_mean(value, names),
                loc_at(policy, key),
            )
    if policy.online == policy.offline and policy.online in names:
        diags.error(
            "TT805", f"presence online and offline are both '{policy.online}'", loc_at(policy, "offline")
        )


CHECKS = [check_presence_commands, check_presence_fields, check_presence_values]
