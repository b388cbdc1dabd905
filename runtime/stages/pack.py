"""Runtime stage layer, pack stage: serialize, optionally compress (zlib) and seal (session AEAD) a body."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

from google.protobuf.message import Message

from runtime.framing import FLAG_COMPRESSED, FLAG_ENCRYPTED, PROTOCOL_VERSION
from runtime.stages.crypto import SessionCipher, header_ad
from runtime.stages.legacy_codec import LegacyTextCodec
from runtime.stages.policy import choice

DEFAULT_COMPRESS_MIN_BYTES = 256


class PackStage:
    """Turns a message into (flag, body) for one command according to its `pack` policy.

    `encrypt: session_aead` needs the connection's `SessionCipher`; until keys are agreed (before login) the
    body goes out in the clear, which `UnpackStage` on the other side refuses if it requires encryption.
    """

    def __init__(self, policy: Mapping[str, Any], *, legacy_key: bytes | None = None) -> None:
        self.compress = choice(policy, "compress", ("none", "zlib"), "none") == "zlib"
        self.compress_min_bytes = int(policy.get("compress_min_bytes", DEFAULT_COMPRESS_MIN_BYTES))
        self.encrypt = choice(policy, "encrypt", ("none", "session_aead"), "none") == "session_aead"
        codec = choice(policy, "legacy_codec", ("none", "teamtalk_aes_ecb"), "none")
        # The legacy codec is applied by whoever holds the shared key (clients, push previews); servers that
        # do not configure a key pass the field through opaque, as TeamTalk's msg_server does.
        self.codec = (
            LegacyTextCodec(legacy_key, policy.get("codec_fields", ("msg_data",)))
            if codec != "none" and legacy_key is not None
            else None
        )
        # True when packing is plain protobuf serialization (the hot path skips this stage).
        self.trivial = not (self.compress or self.encrypt or self.codec)
        # True when only session sealing applies: on a connection without session keys the body is plain.
        self.plain_unless_sealed = not (self.compress or self.codec)

    def pack(
        self, msg: Message, service_id: int, command_id: int, seq: int, cipher: SessionCipher | None = None
    ) -> tuple[int, bytes]:
        """Serialize `msg` and apply the policy; returns the header flag and the body."""
        if self.codec is not None:
            copy = type(msg)()
            copy.CopyFrom(msg)
            self.codec.encode(copy)
            msg = copy
        body = msg.SerializeToString()
        flag = 0
        if self.compress and len(body) >= self.compress_min_bytes:
            packed = zlib.compress(body, 6)
            if len(packed) < len(body):
                body, flag = packed, FLAG_COMPRESSED
        if self.encrypt and cipher is not None:
            flag |= FLAG_ENCRYPTED
            body = cipher.seal(body, header_ad(PROTOCOL_VERSION, flag, service_id, command_id, seq))
        return flag, body
