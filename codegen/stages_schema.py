"""Codegen model layer: the schema of lifecycle stage policy keys, used by the validator and `ttgen schema`.

The runtime interprets the same keys (runtime/stages); this module only says which keys exist per stage and
what values they take, so a typo or a bad duration is a spec error with a location, not a
runtime surprise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

DURATION_RE = re.compile(r"^(\d+)(ms|s|m|h|d)$")
RATE_RE = re.compile(r"^(\d+)/(s|m)$")
_DURATION_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


@dataclass(frozen=True)
class KeySpec:
    """What one policy key accepts.

    kind: int | bool | str | duration | rate | choice | rules | command | fields | retention
    """

    kind: str
    doc: str
    choices: tuple[str, ...] = ()


def _choice(doc: str, *choices: str) -> KeySpec:
    return KeySpec("choice", doc, choices)


STAGE_KEYS: dict[str, dict[str, KeySpec]] = {
    "input": {
        "max_bytes": KeySpec("int", "largest accepted body, in bytes"),
        "rate": KeySpec("rate", "per-connection rate limit such as 20/s or 100/m"),
        "on_rate_exceeded": _choice("what to do when the rate is exceeded", "drop", "reject", "close"),
        "on_invalid": _choice(
            "what to do with a message breaking a field constraint (default reject: answered with an error)",
            "drop",
            "reject",
            "close",
        ),
        "reject": KeySpec("rules", "named input rules to enforce", ("self_message", "empty_body")),
        "require_auth": KeySpec("bool", "the command is refused before login (default true)"),
    },
    "pack": {
        "compress": _choice("body compression", "none", "zlib"),
        "compress_min_bytes": KeySpec("int", "compress only bodies at least this large"),
        "encrypt": _choice("body encryption", "none", "session_aead"),
        "legacy_codec": _choice("TeamTalk's text codec, applied to codec_fields", "none", "teamtalk_aes_ecb"),
        "codec_fields": KeySpec("fields", "fields the legacy codec applies to"),
    },
    "transport": {
        "ack": KeySpec("command", "the command that acknowledges this one"),
        "timeout": KeySpec("duration", "how long to wait for the ack, such as 5s"),
        "retransmit": _choice("resend policy", "none", "until_ack"),
        "max_attempts": KeySpec("int", "give up after this many sends"),
        "dedup": _choice("duplicate suppression", "none", "per_connection", "per_sender"),
        "dedup_window": KeySpec("duration", "how long a seen id is remembered, such as 10m"),
        "ordering": _choice("delivery ordering", "none", "send_wait"),
        "ephemeral": KeySpec("bool", "never stored or queued for offline delivery"),
    },
    "unpack": {
        "verify": KeySpec("bool", "verify the authentication tag before parsing"),
        "replay": _choice("replay protection", "allow", "reject"),
        "max_bytes": KeySpec("int", "largest accepted decoded body, in bytes"),
    },
    "store": {
        "persist": KeySpec("bool", "stored durably before the sender is acknowledged"),
        "at_rest": _choice("storage encryption", "plain", "encrypted"),
        "retention": KeySpec("retention", "forever, or a duration such as 30d"),
        "burn_after_reading": KeySpec("bool", "deleted once every recipient has read it"),
    },
    "present": {
        "preview_bytes": KeySpec("int", "bytes shown in session previews"),
        "redact": KeySpec("fields", "fields hidden from readers"),
        "burn_on_read": KeySpec("bool", "shown once, then removed"),
        "placeholder": KeySpec("str", "text shown instead of the content"),
    },
}


def duration_ms(text: str) -> int | None:
    """Milliseconds of a duration such as '5s' or '30d', or None when malformed."""
    match = DURATION_RE.match(text)
    return int(match.group(1)) * _DURATION_MS[match.group(2)] if match else None


def value_problem(spec: KeySpec, value: Any) -> str | None:
    """Why `value` is not acceptable for a key of this kind, or None when it is.

    `command` and `fields` values are only checked for shape here; the validator resolves the names.
    """
    kind = spec.kind
    if kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        return None if ok else "expected a non-negative integer"
    if kind == "bool":
        return None if isinstance(value, bool) else "expected true or false"
    if kind == "str":
        return None if isinstance(value, str) else "expected a string"
    if kind == "choice":
        return None if value in spec.choices else "expected one of: " + ", ".join(spec.choices)
    if kind == "duration":
        ok = isinstance(value, str) and duration_ms(value) is not None
        return None if ok else "expected a duration such as 500ms, 5s, 10m, 2h or 30d"
    if kind == "retention":
        ok = value == "forever" or (isinstance(value, str) and duration_ms(value) is not None)
        return None if ok else "expected 'forever' or a duration such as 30d"
    if kind == "rate":
        ok = isinstance(value, str) and RATE_RE.match(value) is not None and int(value.split("/")[0]) > 0
        return None if ok else "expected a rate such as 20/s or 100/m"
    if kind == "command":
        return None if isinstance(value, str) else "expected a command name"
    if kind in ("fields", "rules"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return "expected a list of names"
        if kind == "rules":
            bad = [v for v in value if v not in spec.choices]
            return f"unknown rule '{bad[0]}' (rules: {', '.join(spec.choices)})" if bad else None
        return None
    raise AssertionError(f"unknown key kind {kind}")


def json_schema_for(spec: KeySpec) -> dict[str, Any]:
    """The JSON Schema of one policy key (for `ttgen schema`)."""
    schema: dict[str, Any]
    if spec.kind == "int":
        schema = {"type": "integer", "minimum": 0}
    elif spec.kind == "bool":
        schema = {"type": "boolean"}
    elif spec.kind in ("str", "command"):
        schema = {"type": "string"}
    elif spec.kind == "choice":
        schema = {"enum": list(spec.choices)}
    elif spec.kind == "duration":
        schema = {"type": "string", "pattern": DURATION_RE.pattern}
    elif spec.kind == "retention":
        schema = {"anyOf": [{"const": "forever"}, {"type": "string", "pattern": DURATION_RE.pattern}]}
    elif spec.kind == "rate":
        schema = {"type": "string", "pattern": RATE_RE.pattern}
    elif spec.kind == "rules":
        schema = {"type": "array", "items": {"enum": list(spec.choices)}}
    else:
        schema = {"type": "array", "items": {"type": "string"}}
    schema["description"] = spec.doc
    return schema
