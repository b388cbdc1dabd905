"""Codegen diff layer: stage policy rules, per command over its effective policy, classified by direction."""

from __future__ import annotations

import math
import re
from typing import Any

from codegen.diff.context import DiffContext
from codegen.model import STAGES, Command, Loc, Spec

_MISSING: Any = object()

# Documented defaults: a key left out means this value.
_DEFAULTS: dict[str, Any] = {
    "input.require_auth": True,
    "input.on_invalid": "reject",
    "store.retention": "forever",
}

# Numeric limits where a lower value is stricter, and ones where a higher value is stricter.
_UPPER_LIMITS = {"input.max_bytes", "input.rate", "unpack.max_bytes", "present.preview_bytes"}
_LOWER_LIMITS = {"transport.dedup_window"}
# Set-valued keys: a superset is stricter.
_SETS = {"input.reject", "present.redact"}
# Enumerated keys, least strict first; a missing key is the first value.
_ORDERED: dict[str, tuple[Any, ...]] = {
    "input.on_rate_exceeded": ("drop", "reject", "close"),
    "input.on_invalid": ("drop", "reject", "close"),
    "transport.dedup": ("none", "per_connection", "per_sender"),
    "transport.ordering": ("none", "send_wait"),
    "store.burn_after_reading": (False, True),
    "present.burn_on_read": (False, True),
}
# Keys whose weakening has a dedicated high-severity rule (the opposite change is a tightening).
_WEAKENING_RULES = {
    "transport.ack": "STAGE_ACK_REMOVED",
    "transport.retransmit": "STAGE_DELIVERY_WEAKENED",
    "transport.max_attempts": "STAGE_DELIVERY_WEAKENED",
    "pack.encrypt": "STAGE_ENCRYPTION_REMOVED",
    "store.at_rest": "STAGE_AT_REST_WEAKENED",
    "store.persist": "STAGE_PERSIST_DISABLED",
    "transport.ephemeral": "STAGE_PERSIST_DISABLED",
    "store.retention": "STAGE_RETENTION_SHORTENED",
    "input.require_auth": "STAGE_AUTH_RELAXED",
    "unpack.verify": "STAGE_VERIFY_RELAXED",
    "unpack.replay": "STAGE_VERIFY_RELAXED",
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\b")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration_seconds(value: Any) -> float | None:
    """`"30d"` -> seconds; `forever` -> inf; None if it is not a duration."""
    if value == "forever":
        return math.inf
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    m = _DURATION.match(str(value))
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)] if m else None


def rate_per_second(value: Any) -> float | None:
    """`"20/s"` -> 20.0, `"60/m"` -> 1.0; plain numbers are per second; None if unparseable."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    m = _RATE.match(str(value))
    return float(m.group(1)) / _UNIT_SECONDS[m.group(2)] if m else None


def _number(key: str, value: Any) -> float | None:
    if key == "input.rate":
        return rate_per_second(value)
    if key.endswith("_window"):
        return duration_seconds(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def classify_stage_change(key: str, old: Any, new: Any) -> tuple[str, str | None] | None:
    """(rule id, direction) for a change of `<stage>.<key>` from `old` to `new` (either may be missing).

    None when the two mean the same (a key spelled out with its default value, `20/s` vs `1200/m`).
    """
    old = _DEFAULTS.get(key) if old is _MISSING else old
    new = _DEFAULTS.get(key) if new is _MISSING else new
    if old == new:
        return None
    weakened = _weakened(key, old, new)
    if weakened is True:
        return _WEAKENING_RULES[key], "relaxed"
    if weakened is False:
        return "STAGE_TIGHTENED", "tightened"
    if key in _UPPER_LIMITS or key in _LOWER_LIMITS:
        a = _number(key, old) if old is not None else math.inf
        b = _number(key, new) if new is not None else math.inf
        if key in _LOWER_LIMITS:
            a = -math.inf if old is None else a
            b = -math.inf if new is None else b
        if a is not None and b is not None and a == b:
            return None
        if a is not None and b is not None:
            stricter = b < a if key in _UPPER_LIMITS else b > a
            return ("STAGE_TIGHTENED", "tightened") if stricter else ("STAGE_RELAXED", "relaxed")
    if key in _SETS:
        a_set, b_set = set(old or ()), set(new or ())
        if b_set > a_set:
            return "STAGE_TIGHTENED", "tightened"
        if b_set < a_set:
            return "STAGE_RELAXED", "relaxed"
    if key in _ORDERED:
        order = _ORDERED[key]
        a_i = order.index(old) if old in order else 0 if old is None else None
        b_i = order.index(new) if new in order else 0 if new is None else None
        if a_i is not None and b_i is not None and a_i != b_i:
            return ("STAGE_TIGHTENED", "tightened") if b_i > a_i else ("STAGE_RELAXED", "relaxed")
    return "STAGE_CHANGED", None


def _weakened(key: str, old: Any, new: Any) -> bool | None:
    """True: a dedicated weakening; False: the opposite (a tightening); None: not a key with such a rule."""
    if key not in _WEAKENING_RULES:
        return None
    if key == "transport.ack":
        return True if old and not new else False if new and not old else None
    if key == "transport.retransmit":
        strong_old, strong_new = old not in (None, "none"), new not in (None, "none")
    elif key == "transport.max_attempts":
        if old is None or new is None or old == new:
            return None
        return bool(new < old)  # fewer attempts: weaker; more: stricter
    elif key == "pack.encrypt":
        strong_old, strong_new = old not in (None, "none"), new not in (None, "none")
    elif key == "store.at_rest":
        strong_old, strong_new = old == "encrypted", new == "encrypted"
    elif key in ("store.persist", "input.require_auth", "unpack.verify"):
        strong_old, strong_new = old is True, new is True
    elif key == "transport.ephemeral":
        strong_old, strong_new = not old, not new
    elif key == "unpack.replay":
        strong_old, strong_new = old == "reject", new == "reject"
    else:  # store.retention: longer keeps more
        a, b = duration_seconds(old), duration_seconds(new)
        if a is None or b is None or a == b:
            return None
        return True if b < a else None  # a longer retention is a plain change, not a tightening
    if strong_old == strong_new:
        return None
    return strong_old and not strong_new


def _key_loc(spec: Spec, command: Command, dotted: str) -> Loc | None:
    for target in (command.name, command.message):
        pol = spec.stage_policy(target)
        if pol is not None:
            for k in (f"{dotted}:key", dotted):  # prefer the key's position over its value's
                if k in pol.key_locs:
                    return pol.key_locs[k]
    for target in (command.name, command.message):
        pol = spec.stage_policy(target)
        if pol is not None:
            return pol.loc
    return None


def check_stages(ctx: DiffContext) -> None:
    """Diff the effective stage policy of every command present in both versions, key by key."""
    old_cmds, new_cmds = ctx.old.commands(), ctx.new.commands()
    for old_name, new_name in sorted(ctx.command_map.items()):
        oc, nc = old_cmds[old_name], new_cmds[new_name]
        old_eff, new_eff = ctx.old.effective_stages(oc), ctx.new.effective_stages(nc)
        for stage in STAGES:
            a, b = old_eff.get(stage, {}), new_eff.get(stage, {})
            for key in sorted(set(a) | set(b)):
                va, vb = a.get(key, _MISSING), b.get(key, _MISSING)
                if va == vb:
                    continue
                dotted = f"{stage}.{key}"
                change = classify_stage_change(dotted, va, vb)
                if change is None:
                    continue
                rule_id, direction = change
                if vb is _MISSING:
                    loc = _key_loc(ctx.old, oc, dotted) or oc.loc
                    what = f"{dotted} {_show(va)} removed"
                else:
                    loc = _key_loc(ctx.new, nc, dotted) or nc.loc
                    what = (
                        f"{dotted} added: {_show(vb)}"
                        if va is _MISSING
                        else (f"{dotted} {_show(va)} -> {_show(vb)}")
                    )
                suffix = f" ({direction})" if direction else ""
                ctx.report(
                    rule_id, loc, f"{nc.name}: {what}{suffix}", f"{nc.name}.{dotted}", direction=direction
                )


def _show(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


_PRESENCE_KEYS = ("audience", "clients", "coalesce", "notify", "batch", "batch_from", "online", "offline")


def check_presence(ctx: DiffContext) -> None:
    """PRESENCE_CHANGED: the presence policy was added or removed, or keys of it changed (one each)."""
    old, new = ctx.old.presence, ctx.new.presence
    if old is None and new is None:
        return
    if old is None or new is None:
        where = new.loc if new is not None else old.loc  # type: ignore[union-attr]
        what = "added" if new is not None else "removed"
        ctx.report("PRESENCE_CHANGED", where, f"presence policy {what}", "presence")
        return
    for key in _PRESENCE_KEYS:
        a, b = getattr(old, key), getattr(new, key)
        if key == "coalesce":
            a, b = duration_seconds(a), duration_seconds(b)
        if a != b:
            ctx.report(
                "PRESENCE_CHANGED",
                new.key_locs.get(key, new.loc),
                f"presence {key} changed {getattr(old, key)!r} -> {getattr(new, key)!r}",
                "presence",
            )
