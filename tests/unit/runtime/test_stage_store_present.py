"""Unit tests of the store and present stages: at-rest AEAD, retention, previews, redaction, burn-on-read."""

from __future__ import annotations

import pytest
import rt_testproto as tp
from hypothesis import given
from hypothesis import strategies as st

from runtime.errors import IntegrityError
from runtime.stages import STAGE_NAMES, CommandStages, build_stages
from runtime.stages.present import PresentStage, truncate_utf8
from runtime.stages.store import AtRestCipher, StorePolicy

KEY = bytes(range(32))


def test_store_policy_parsing_and_retention() -> None:
    p = StorePolicy.from_mapping({"at_rest": "encrypted", "retention": "30d", "burn_after_reading": True})
    assert p.encrypted and p.burn_after_reading and p.retention == 30 * 86400
    assert p.expires_at(100.0) == 100.0 + 30 * 86400
    assert not p.expired(0.0, 30 * 86400 - 1) and p.expired(0.0, 30 * 86400)
    forever = StorePolicy.from_mapping({})
    assert forever.retention is None and not forever.expired(0.0, 1e12) and not forever.encrypted
    with pytest.raises(ValueError):
        StorePolicy.from_mapping({"at_rest": "rot13"})


def test_at_rest_encryption_binds_row_and_detects_tampering() -> None:
    p = StorePolicy(encrypted=True)
    cipher = AtRestCipher(KEY)
    blob = p.seal(b"hello", cipher, ad=b"msg 1")
    assert b"hello" not in blob and p.unseal(blob, cipher, ad=b"msg 1") == b"hello"
    with pytest.raises(IntegrityError):
        p.unseal(blob, cipher, ad=b"msg 2")
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(IntegrityError):
        p.unseal(bytes(tampered), cipher, ad=b"msg 1")
    with pytest.raises(ValueError):
        p.seal(b"x", None)
    assert StorePolicy().seal(b"plain", None) == b"plain"


def test_truncate_on_utf8_boundaries() -> None:
    assert truncate_utf8("short", 37) == "short"
    assert truncate_utf8("a" * 40, 37) == "a" * 37 + "..."
    assert truncate_utf8("你好世界", 7) == "你好..."  # 3-byte characters: 7 bytes hold two
    assert truncate_utf8("ab€", 3) == "ab..."


@given(st.text(max_size=60), st.integers(0, 50))
def test_truncate_never_splits_a_character(text: str, limit: int) -> None:
    out = truncate_utf8(text, limit)
    assert "\ufffd" not in out or "\ufffd" in text
    if len(text.encode()) <= limit:
        assert out == text
    else:
        assert out.endswith("...") and len(out[:-3].encode()) <= limit and text.startswith(out[:-3])


def test_present_preview_placeholder_redaction_and_burn() -> None:
    stage = PresentStage(
        {
            "preview_bytes": 5,
            "redact": ["msg_data", "attach_data", "msg_id"],
            "placeholder": "[voice]",
            "burn_on_read": True,
        }
    )
    assert stage.preview("hello world") == "hello..."
    assert stage.preview(b"\x00\x00\x00\x05opus", is_audio=True) == "[voice]"
    msg = tp.MsgData(from_user_id=1, to_session_id=2, msg_id=3, msg_type=1, msg_data=b"secret")
    shown = stage.redacted(msg)
    assert shown.msg_data == b"[redacted]" and not shown.HasField("msg_id") and shown.from_user_id == 1
    assert msg.msg_data == b"secret"
    assert stage.should_burn(already_read=True) and not stage.should_burn(already_read=False)
    assert PresentStage({}).redacted(msg) is msg


def test_build_stages_for_a_registry() -> None:
    reg = tp.build_registry(
        {
            "ECHO_REQ": {
                "pack": {"compress": "zlib"},
                "store": {"persist": False},
                "present": {"preview_bytes": 10},
            }
        }
    )
    stages = build_stages(reg)
    assert set(stages) == {c.command_id for c in reg}
    echo = stages[0x0305]
    assert isinstance(echo, CommandStages) and echo.pack.compress and not echo.store.persist
    assert stages[0x0301].input.rate == 20
    assert len(STAGE_NAMES) == 6
    bad = tp.build_registry({"ECHO_REQ": {"pack": {"encrypt": "rot13"}}})
    with pytest.raises(ValueError, match="ECHO_REQ"):
        build_stages(bad)
