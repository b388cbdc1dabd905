"""Runtime stage layer, present stage: what a reader may see (previews, redaction, placeholders, burn)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

ELLIPSIS = "..."
REDACTED = "[redacted]"


def truncate_utf8(text: str | bytes, max_bytes: int, suffix: str = ELLIPSIS) -> str:
    """Cut `text` to at most `max_bytes` UTF-8 bytes without splitting a character; add `suffix` if cut.

    Like TeamTalk's push previews (37 bytes plus "..."), the suffix is not counted in `max_bytes`.
    """
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) <= max_bytes:
        return raw.decode("utf-8", "replace")
    cut = max(0, max_bytes)
    # Step back over UTF-8 continuation bytes (10xxxxxx) so the cut lands on a character boundary.
    while cut > 0 and (raw[cut] & 0xC0) == 0x80:
        cut -= 1
    return raw[:cut].decode("utf-8", "replace") + suffix


@dataclass(frozen=True)
class PresentPolicy:
    """A command's `present` policy."""

    preview_bytes: int | None = None
    redact: tuple[str, ...] = ()
    burn_on_read: bool = False
    placeholder: str | None = None

    @classmethod
    def from_mapping(cls, policy: Mapping[str, Any]) -> PresentPolicy:
        preview = policy.get("preview_bytes")
        return cls(
            preview_bytes=int(preview) if preview is not None else None,
            redact=tuple(policy.get("redact", ())),
            burn_on_read=bool(policy.get("burn_on_read", False)),
            placeholder=policy.get("placeholder"),
        )


class PresentStage:
    """Applies a `present` policy to messages and previews shown to a reader."""

    def __init__(self, policy: Mapping[str, Any] | PresentPolicy) -> None:
        self.policy = policy if isinstance(policy, PresentPolicy) else PresentPolicy.from_mapping(policy)

    def preview(self, content: str | bytes, *, is_audio: bool = False) -> str:
        """The preview: the placeholder for audio, else the content cut to `preview_bytes` (UTF-8 safe)."""
        p = self.policy
        if is_audio and p.placeholder is not None:
            return p.placeholder
        if p.preview_bytes is None:
            return content.decode("utf-8", "replace") if isinstance(content, bytes) else content
        return truncate_utf8(content, p.preview_bytes)

    def redacted(self, msg: Message) -> Message:
        """A copy with each named field redacted: strings and bytes replaced, other fields cleared."""
        if not self.policy.redact:
            return msg
        copy = type(msg)()
        copy.CopyFrom(msg)
        fields = copy.DESCRIPTOR.fields_by_name
        for name in self.policy.redact:
            fd = fields.get(name)
            if fd is None:
                continue
            value = None if fd.is_repeated else getattr(copy, name)
            if isinstance(value, str):
                setattr(copy, name, REDACTED)
            elif isinstance(value, bytes):
                setattr(copy, name, REDACTED.encode())
            else:
                copy.ClearField(name)
        return copy

    def should_burn(self, already_read: bool) -> bool:
        """True when the message must be deleted now that it has been shown to its reader."""
        return self.policy.burn_on_read and already_read
