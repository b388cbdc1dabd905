"""Unit tests of the pack/unpack stages: compression, session AEAD, tampering, replay, the legacy codec."""

from __future__ import annotations

import base64
import zlib

import pytest
import rt_testproto as tp
from hypothesis import given
from hypothesis import strategies as st

from runtime.errors import BodyError, IntegrityError, ReplayRejected
from runtime.framing import FLAG_COMPRESSED, FLAG_ENCRYPTED, Frame, FrameDecoder, encode_frame
from runtime.stages.crypto import KeyExchange, SessionCipher, header_ad
from runtime.stages.legacy_codec import (
    TEAMTALK_DEFAULT_KEY,
    LegacyTextCodec,
    decrypt_text,
    encrypt_text,
    padded_size,
)
from runtime.stages.pack import PackStage
from runtime.stages.unpack import ReplayWindow, UnpackStage

SID, CID = 3, 0x0305


def ciphers(algorithm: str = "aes-256-gcm") -> tuple[SessionCipher, SessionCipher]:
    client, server = KeyExchange(), KeyExchange()
    ck = client.derive(server.public_bytes, initiator=True, context=b"user 7")
    sk = server.derive(client.public_bytes, initiator=False, context=b"user 7")
    assert ck.send_key == sk.recv_key and ck.recv_key == sk.send_key and ck.send_key != ck.recv_key
    return SessionCipher(ck, algorithm), SessionCipher(sk, algorithm)


def wire(flag: int, body: bytes, seq: int = 5) -> Frame:
    (frame,) = FrameDecoder().feed(encode_frame(SID, CID, seq, body, flag=flag))
    return frame


def test_plain_pack_is_plain_protobuf() -> None:
    stage = PackStage({})
    assert stage.trivial
    msg = tp.Echo(text="x")
    assert stage.pack(msg, SID, CID, 1) == (0, msg.SerializeToString())


def test_zlib_only_above_threshold_and_roundtrip() -> None:
    stage = PackStage({"compress": "zlib", "compress_min_bytes": 64})
    small = tp.Echo(text="short")
    assert stage.pack(small, SID, CID, 1)[0] == 0
    big = tp.Echo(text="a" * 5000)
    flag, body = stage.pack(big, SID, CID, 1)
    assert flag == FLAG_COMPRESSED and len(body) < 200
    assert UnpackStage({}).unpack(wire(flag, body), tp.Echo) == big


def test_zlib_bomb_is_bounded() -> None:
    bomb = zlib.compress(b"\x1a\x00" * 1_000_000)
    with pytest.raises(BodyError, match="exceeds"):
        UnpackStage({"max_bytes": 4096}).unpack(wire(FLAG_COMPRESSED, bomb), tp.Echo)
    with pytest.raises(BodyError):
        UnpackStage({}).unpack(wire(FLAG_COMPRESSED, b"not zlib"), tp.Echo)


@pytest.mark.parametrize("algorithm", ["aes-256-gcm", "chacha20-poly1305"])
def test_session_aead_roundtrip_and_tampering(algorithm: str) -> None:
    client, server = ciphers(algorithm)
    pack = PackStage({"encrypt": "session_aead", "compress": "zlib", "compress_min_bytes": 1})
    msg = tp.Echo(text="secret " * 20)
    flag, body = pack.pack(msg, SID, CID, 5, client)
    assert flag & FLAG_ENCRYPTED and b"secret" not in body
    unpack = UnpackStage({"replay": "reject"}, require_encryption=True)
    assert unpack.unpack(wire(flag, body), tp.Echo, server, ReplayWindow()) == msg
    for i in (0, 9, len(body) - 1):  # counter, ciphertext, tag
        bad = bytearray(body)
        bad[i] ^= 1
        with pytest.raises(IntegrityError):
            unpack.unpack(wire(flag, bytes(bad)), tp.Echo, server, ReplayWindow())
    with pytest.raises(IntegrityError):  # the header is associated data: another seq does not open
        unpack.unpack(wire(flag, body, seq=6), tp.Echo, server, ReplayWindow())
    with pytest.raises(
        IntegrityError
    ):  # the sender's own key does not open its messages (per-direction keys)
        unpack.unpack(wire(flag, body), tp.Echo, client, ReplayWindow())


def test_plaintext_refused_when_encryption_required() -> None:
    _client, server = ciphers()
    with pytest.raises(IntegrityError, match="plaintext"):
        UnpackStage({}, require_encryption=True).unpack(wire(0, b""), tp.Echo, server)


def test_replayed_frames_rejected_when_policy_says_so() -> None:
    client, server = ciphers()
    pack = PackStage({"encrypt": "session_aead"})
    sealed = [pack.pack(tp.Echo(text=str(i)), SID, CID, 5, client) for i in range(3)]
    window = ReplayWindow()
    strict = UnpackStage({"replay": "reject"})
    for flag, body in sealed:
        strict.unpack(wire(flag, body), tp.Echo, server, window)
    with pytest.raises(ReplayRejected):
        strict.unpack(wire(*sealed[1]), tp.Echo, server, window)
    assert UnpackStage({"replay": "allow"}).unpack(wire(*sealed[1]), tp.Echo, server).text == "1"


def test_replay_window_out_of_order_and_too_old() -> None:
    w = ReplayWindow(size=8)
    for c in (5, 3, 4, 100, 99):
        w.accept(c)
    for c in (5, 99, 100, 92):
        with pytest.raises(ReplayRejected):
            w.accept(c)
    w.accept(93)


@given(st.lists(st.integers(0, 200), max_size=60))
def test_replay_window_accepts_each_counter_at_most_once(counters: list[int]) -> None:
    w = ReplayWindow(size=16)
    accepted = []
    for c in counters:
        try:
            w.accept(c)
            accepted.append(c)
        except ReplayRejected:
            pass
    assert len(accepted) == len(set(accepted))


def test_header_ad_binds_fields() -> None:
    assert header_ad(1, 2, 3, 4, 5) != header_ad(1, 2, 3, 4, 6)
    with pytest.raises(IntegrityError):
        KeyExchange().derive(b"short", initiator=True)


@pytest.mark.parametrize(
    ("length", "size"),
    [(0, 16), (1, 16), (12, 16), (13, 32), (15, 32), (16, 32), (28, 32), (29, 48), (32, 48)],
)
def test_legacy_padding_sizes(length: int, size: int) -> None:
    assert padded_size(length) == size


def test_legacy_codec_layout() -> None:
    key = TEAMTALK_DEFAULT_KEY
    ct = encrypt_text(b"hello", key)
    raw = base64.b64decode(ct)
    assert len(raw) == 16
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    dec = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
    plain = dec.update(raw) + dec.finalize()
    assert plain == b"hello" + b"\x00" * 7 + b"\x00\x00\x00\x05"
    assert decrypt_text(ct, key) == b"hello"
    with pytest.raises(IntegrityError):
        decrypt_text(ct, b"x" * 32)
    with pytest.raises(IntegrityError):
        decrypt_text(b"!!not base64!!", key)


@given(st.binary(max_size=100))
def test_legacy_roundtrip(data: bytes) -> None:
    assert decrypt_text(encrypt_text(data, TEAMTALK_DEFAULT_KEY), TEAMTALK_DEFAULT_KEY) == data


def test_legacy_codec_on_fields_through_pack() -> None:
    stage = PackStage(
        {"legacy_codec": "teamtalk_aes_ecb", "codec_fields": ["msg_data"]}, legacy_key=TEAMTALK_DEFAULT_KEY
    )
    msg = tp.MsgData(from_user_id=1, to_session_id=2, msg_id=3, msg_type=1, msg_data="你好".encode())
    _flag, body = stage.pack(msg, 3, 0x0301, 1)
    sent = tp.MsgData.FromString(body)
    assert sent.msg_data == encrypt_text("你好".encode(), TEAMTALK_DEFAULT_KEY)
    assert msg.msg_data == "你好".encode()  # the caller's message is untouched
    LegacyTextCodec(TEAMTALK_DEFAULT_KEY).decode(sent)
    assert sent.msg_data == "你好".encode()
    assert not PackStage({"legacy_codec": "teamtalk_aes_ecb"}).codec  # no key configured: opaque pass-through
