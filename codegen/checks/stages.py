"""Codegen validate layer: TT6xx lifecycle stage policies (targets, keys, values, references)."""

from __future__ import annotations

from codegen.diagnostics import Diagnostics, did_you_mean
from codegen.model import STAGES, Command, Loc, Message, Spec, StagePolicy
from codegen.stages_schema import STAGE_KEYS, value_problem


def _message_of(
    policy: StagePolicy, messages: dict[str, Message], commands: dict[str, Command]
) -> Message | None:
    command = commands.get(policy.target)
    return messages.get(command.message if command else policy.target)


def check_stage_targets(spec: Spec, diags: Diagnostics) -> None:
    """TT601: a policy keyed by neither a message nor a command. TT607: two policies for one target."""
    known = set(spec.messages()) | set(spec.commands())
    seen: dict[str, Loc] = {}
    for policy in spec.stages:
        if policy.target not in known:
            pool = sorted(known) + [q.rsplit(".", 1)[-1] for q in spec.messages()]
            diags.error(
                "TT601",
                f"stage policy for unknown message or command '{policy.target}'"
                + did_you_mean(policy.target, pool),
                policy.loc,
            )
        if policy.target in seen:
            diags.error(
                "TT607",
                f"second stage policy for '{policy.target}'",
                policy.loc,
                hint=f"the first is at {seen[policy.target]}; merge them",
            )
        seen.setdefault(policy.target, policy.loc)


def check_stage_keys(spec: Spec, diags: Diagnostics) -> None:
    """TT603: an unknown policy key (with did-you-mean). TT604: a bad value (durations, rates, ...)."""
    for policy in spec.stages:
        for stage in STAGES:
            schema = STAGE_KEYS[stage]
            for key, value in policy.stage(stage).items():
                spec_key = schema.get(key)
                if spec_key is None:
                    loc = policy.key_locs.get(f"{stage}.{key}:key", policy.loc)
                    diags.error(
                        "TT603",
                        f"unknown {stage} policy key '{key}'" + did_you_mean(key, schema),
                        loc,
                        hint=f"{stage} keys: " + ", ".join(schema),
                    )
                    continue
                problem = value_problem(spec_key, value)
                if problem:
                    loc = policy.key_locs.get(f"{stage}.{key}", policy.loc)
                    diags.error("TT604", f"bad value {value!r} for {stage}.{key}: {problem}", loc)


def check_stage_references(spec: Spec, diags: Diagnostics) -> None:
    """TT605: transport.ack names no command. TT606/TT608: present.redact/pack.codec_fields name no field."""
    commands = spec.commands()
    messages = spec.messages()
    for policy in spec.stages:
        ack = policy.transport.get("ack")
        if isinstance(ack, str) and ack not in commands:
            diags.error(
                "TT605",
                f"transport.ack names unknown command '{ack}'" + did_you_mean(ack, commands),
                policy.key_locs.get("transport.ack", policy.loc),
            )
        message = _message_of(policy, messages, commands)
        if message is None:
            continue
        names = [f.name for f in message.fields]
        for stage, key, code in (("present", "redact", "TT606"), ("pack", "codec_fields", "TT608")):
            value = policy.stage(stage).get(key)
            if not isinstance(value, list):
                continue
            for name in value:
                if isinstance(name, str) and name not in names:
                    diags.error(
                        code,
                        f"{stage}.{key} names unknown field '{name}' of '{message.name}'"
                        + did_you_mean(name, names),
                        policy.key_locs.get(f"{stage}.{key}", policy.loc),
                    )


CHECKS = [check_stage_targets, check_stage_keys, check_stage_references]
