"""Runtime layer: TeamTalk's legacy text codec on the server, for original TeamTalk clients.

TeamTalk clients encrypt text `msg_data` with AES-256-ECB under a key every client and server shares
(runtime.stages.legacy_codec; PROTOCOL.md section 4). With `services.msg.legacy_key` set (the 32-character
key, TeamTalk's shipped one is "12345678901234567890123456789012"), the msg server:

- decodes the text of chat messages from connections that never opted in to the extensions (original
  TeamTalk clients) before storing them, so the database holds (and seals at rest) the real text, and a
  push preview or a new client reads it;
- encodes text for such connections on the way out: delivered messages, history pages, messages by id and
  the recent sessions' latest message. Extension-capable clients (runtime.client) get the text as stored.

Text that does not decode under the key (another key, or a client that sends clear text) is stored as it
came and counted (`msg_legacy_undecodable_total`); voice and other non-text types pass through untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runtime.dispatch import extension_capable
from runtime.errors import IntegrityError
from runtime.monitor.metrics import Metrics
from runtime.registry import Registry
from runtime.services.protocol import enums_of
from runtime.stages.legacy_codec import decrypt_text, encrypt_text
from runtime.transport import Link

CHAT = frozenset({"CID_MSG_DATA", "CID_EXT_MSG_BURN"})
HISTORY = frozenset({"CID_MSG_LIST_RESPONSE", "CID_MSG_GET_BY_MSG_ID_RES"})
RECENT = "CID_BUDDY_LIST_RECENT_CONTACT_SESSION_RESPONSE"


def legacy_key_from_config(cfg: Mapping[str, Any]) -> bytes | None:
    """`legacy_key` of a msg section as 32 bytes, None when unset; ValueError naming the problem."""
    value = cfg.get("legacy_key")
    if value is None or value == "":
        return None
    key = value.encode("utf-8") if isinstance(value, str) else None
    if key is None or len(key) != 32:
        raise ValueError("services.msg.legacy_key must be a string of exactly 32 bytes (TeamTalk's AES key)")
    return key


class LegacyText:
    """Decodes on input and encodes on output for original TeamTalk connections."""

    def __init__(self, key: bytes, metrics: Metrics, registry: Registry) -> None:
        encrypt_text(b"", key)  # a bad key fails here, at start
        self.key = key
        types = enums_of(registry).MsgType
        self.text_types = frozenset({int(types.MSG_TYPE_SINGLE_TEXT), int(types.MSG_TYPE_GROUP_TEXT)})
        self.m_decoded = metrics.counter("msg_legacy_decoded_total", "texts decoded from the legacy codec")
        self.m_undecodable = metrics.counter(
            "msg_legacy_undecodable_total", "texts of original clients that did not decode (stored as sent)"
        )
        self.m_encoded = metrics.counter("msg_legacy_encoded_total", "texts encoded for original clients")

    def inbound(self, link: Link, msg: Any) -> None:
        """A chat message from a client: the text decoded in place if the client is an original one."""
        if extension_capable(link) or msg.msg_type not in self.text_types or not msg.msg_data:
            return
        try:
            msg.msg_data = decrypt_text(bytes(msg.msg_data), self.key)
        except IntegrityError:
            self.m_undecodable.inc()
            return
        self.m_decoded.inc()

    def outbound(self, link: Link, command: str, msg: Any) -> Any:
        """What to send `link` for `command`: `msg` itself, or an encoded copy for an original client."""
        if extension_capable(link):
            return msg
        if command in CHAT:
            if msg.msg_type not in self.text_types:
                return msg
            copy = type(msg)()
            copy.CopyFrom(msg)
            copy.msg_data = self._encode(bytes(msg.msg_data))
            return copy
        if command in HISTORY:
            copy = type(msg)()
            copy.CopyFrom(msg)
            for info in copy.msg_list:
                if info.msg_type in self.text_types:
                    info.msg_data = self._encode(bytes(info.msg_data))
            return copy
        if command == RECENT:
            copy = type(msg)()
            copy.CopyFrom(msg)
            for s in copy.contact_session_list:
                if s.latest_msg_type in self.text_types and s.latest_msg_data:
                    s.latest_msg_data = self._encode(bytes(s.latest_msg_data))
            return copy
        return msg

    def _encode(self, text: bytes) -> bytes:
        self.m_encoded.inc()
        return encrypt_text(text, self.key)
