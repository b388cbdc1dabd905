"""Runtime stage layer, input stage: body size, required fields, field limits, rate limits, reject rules."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from runtime.errors import InputRejected
from runtime.stages.policy import choice, parse_rate

RATE_ACTIONS = ("drop", "reject", "close")
REJECT_RULES = ("self_message", "empty_body")


def missing_fields(msg: Message) -> list[str]:
    """Names of required fields not set (upb's parser does not check them)."""
    errors: list[str] = msg.FindInitializationErrors()  # type: ignore[attr-defined]
    return errors


@dataclass(frozen=True)
class FieldLimits:
    """Constraints on one field, as the spec's field keys give them."""

    max_len: int | None = None
    min_len: int | None = None
    non_empty: bool = False
    min: float | None = None
    max: float | None = None
    max_items: int | None = None
    pattern: str | None = None

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> FieldLimits:
        known = {
            k: raw[k]
            for k in ("max_len", "min_len", "non_empty", "min", "max", "max_items", "pattern")
            if k in raw
        }
        return cls(**known)


class TokenBucket:
    """A token bucket: `rate` tokens per second, holding at most `burst`."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return True
        self.tokens = tokens
        return False


class InputStage:
    """Checks one command's incoming messages against its `input` policy; raises `InputRejected`."""

    def __init__(
        self,
        policy: Mapping[str, Any],
        descriptor: Descriptor | Any,
        field_limits: Mapping[str, FieldLimits | Mapping[str, Any]] | None = None,
        *,
        group_bit: int = 0,
    ) -> None:
        self.max_bytes: int | None = policy.get("max_bytes")
        # The `msg_type` bit of a group message (TeamTalk's MsgType bit GROUP, from the spec): `self_message`
        # only applies to single chats.
        self.group_bit = group_bit
        rate = policy.get("rate")
        self.rate = parse_rate(rate) if rate is not None else None
        self.burst = float(policy.get("burst", self.rate or 0.0))
        self.on_rate_exceeded = choice(policy, "on_rate_exceeded", RATE_ACTIONS, "drop")
        # A message breaking a field constraint is answered with an error by default (`reject`).
        self.on_invalid = choice(policy, "on_invalid", RATE_ACTIONS, "reject")
        self.rules = tuple(policy.get("reject", ()))
        for rule in self.rules:
            if rule not in REJECT_RULES:
                raise ValueError(f"unknown reject rule {rule!r} (known: {', '.join(REJECT_RULES)})")
        self.require_auth = bool(policy.get("require_auth", True))
        raw_limits: dict[str, Any] = dict(policy.get("fields", {}))
        raw_limits.update(field_limits or {})
        self.limits: dict[str, tuple[FieldDescriptor, FieldLimits, re.Pattern[str] | None]] = {}
        for name, limits in raw_limits.items():
            fd = descriptor.fields_by_name.get(name)
            if fd is None:
                raise ValueError(f"input constraint on unknown field {descriptor.full_name}.{name}")
            lim = limits if isinstance(limits, FieldLimits) else FieldLimits.from_mapping(limits)
            self.limits[name] = (fd, lim, re.compile(lim.pattern) if lim.pattern else None)
        self._fields = descriptor.fields_by_name
        self._has_to_user = "to_user_id" in self._fields
        self._has_to_session = "to_session_id" in self._fields
        self._has_msg_type = "msg_type" in self._fields
        self._has_msg_data = "msg_data" in self._fields
        self.active = bool(self.max_bytes or self.rate or self.rules or self.limits)
        # The policy compiled to one small function per constraint and rule, so the per-message work is only
        # what the policy asks for (the generic `_check_field` handles the rarer shapes).
        self._checks: tuple[Callable[[Message, int], None], ...] = tuple(
            [self._compile_field(name, *entry) for name, entry in self.limits.items()]
            + [self._compile_rule(rule) for rule in self.rules]
        )

    def check_size(self, body_len: int) -> None:
        """Before parsing: refuse oversized bodies without spending time on them."""
        if self.max_bytes is not None and body_len > self.max_bytes:
            raise InputRejected(
                f"body of {body_len} bytes exceeds max_bytes {self.max_bytes}",
                action="close",
                rule="max_bytes",
            )

    def check_rate(self, buckets: dict[int, TokenBucket], key: int, now: float) -> None:
        """Spend a token from this connection's bucket for the command (`buckets` lives on the connection)."""
        if self.rate is None:
            return
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = TokenBucket(self.rate, max(self.burst, 1.0), now)
        if not bucket.take(now):
            raise InputRejected(f"rate above {self.rate:g}/s", action=self.on_rate_exceeded, rule="rate")

    @staticmethod
    def check_required(msg: Message) -> None:
        """Required fields (proto2) are set. The unpack stage already does this when its `verify` is on."""
        if not msg.IsInitialized():
            missing = ", ".join(missing_fields(msg))
            raise InputRejected(f"required fields missing: {missing}", action="close", rule="required")

    def check_message(self, msg: Message, user_id: int) -> None:
        """After parsing: field constraints and reject rules."""
        for check in self._checks:
            check(msg, user_id)

    def _compile_field(
        self, name: str, fd: FieldDescriptor, lim: FieldLimits, pattern: re.Pattern[str] | None
    ) -> Callable[[Message, int], None]:
        action = self.on_invalid
        checker = self._check_field

        def generic(msg: Message, name: str, fd: FieldDescriptor, lim: FieldLimits, pattern: Any) -> None:
            try:
                checker(msg, name, fd, lim, pattern)
            except InputRejected as exc:
                exc.action = action
                exc.close_connection = action == "close"
                raise

        if fd.is_repeated or pattern is not None or fd.type not in (fd.TYPE_BYTES, fd.TYPE_STRING):
            return lambda msg, _user: generic(msg, name, fd, lim, pattern)
        # A singular string or bytes field: sizes in bytes (UTF-8 for strings).
        is_str = fd.type == fd.TYPE_STRING
        optional = fd.has_presence and not fd.is_required
        high = lim.max_len
        low = max(lim.min_len or 0, 1 if lim.non_empty else 0)

        def check(msg: Message, _user: int) -> None:
            value = getattr(msg, name)
            size = len(value)
            if is_str and not value.isascii():
                size = len(value.encode())
            if (high is not None and size > high) or size < low:
                if optional and not msg.HasField(name):
                    return  # an absent optional field has no value to constrain
                generic(msg, name, fd, lim, pattern)  # raises with the precise reason

        return check

    def _compile_rule(self, rule: str) -> Callable[[Message, int], None]:
        # A reject rule refuses like a broken constraint (`on_invalid`, default `reject`: answered with an
        # error, or the connection closed), so a refused message never looks like a lost one.
        action = self.on_invalid
        if rule == "self_message":
            is_self = self._is_self_message

            def self_message(msg: Message, user_id: int) -> None:
                if is_self(msg, user_id):
                    raise InputRejected("message to oneself", action=action, rule="self_message")

            return self_message
        is_empty = self._is_empty

        def empty_body(msg: Message, _user: int) -> None:
            if is_empty(msg):
                raise InputRejected("empty message body", action=action, rule="empty_body")

        return empty_body

    @staticmethod
    def _check_field(
        msg: Message, name: str, fd: FieldDescriptor, lim: FieldLimits, pattern: re.Pattern[str] | None
    ) -> None:
        if not fd.is_repeated and fd.has_presence and not msg.HasField(name):
            return  # an absent optional field has no value to constrain; required ones are checked at parse
        value = getattr(msg, name)
        if fd.is_repeated:
            if lim.max_items is not None and len(value) > lim.max_items:
                raise InputRejected(
                    f"{name}: {len(value)} items, more than {lim.max_items}", rule="max_items"
                )
            values = list(value)
        else:
            values = [value]
        for item in values:
            if isinstance(item, str | bytes):
                size = len(item.encode()) if isinstance(item, str) else len(item)
                if lim.max_len is not None and size > lim.max_len:
                    raise InputRejected(f"{name}: {size} bytes, more than {lim.max_len}", rule="max_len")
                if lim.min_len is not None and size < lim.min_len:
                    raise InputRejected(f"{name}: {size} bytes, fewer than {lim.min_len}", rule="min_len")
                if lim.non_empty and size == 0:
                    raise InputRejected(f"{name}: must not be empty", rule="non_empty")
                if pattern is not None and isinstance(item, str) and pattern.fullmatch(item) is None:
                    raise InputRejected(f"{name}: does not match {pattern.pattern!r}", rule="pattern")
            elif isinstance(item, int | float) and not isinstance(item, bool):
                if lim.min is not None and item < lim.min:
                    raise InputRejected(f"{name}: {item} below {lim.min}", rule="min")
                if lim.max is not None and item > lim.max:
                    raise InputRejected(f"{name}: {item} above {lim.max}", rule="max")

    def _is_self_message(self, msg: Message, user_id: int) -> bool:
        if self._has_to_user and getattr(msg, "to_user_id", 0) == user_id:
            return True
        if not self._has_to_session or getattr(msg, "to_session_id", 0) != user_id:
            return False
        return not self._has_msg_type or not (getattr(msg, "msg_type", 0) & self.group_bit)

    def _is_empty(self, msg: Message) -> bool:
        if self._has_msg_data:
            return len(getattr(msg, "msg_data", b"")) == 0
        return msg.ByteSize() == 0
