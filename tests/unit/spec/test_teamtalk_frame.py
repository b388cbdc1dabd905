"""Frames built with the generated TeamTalk classes and the runtime codec equal frames built by hand.

The hand-built frames follow TeamTalk's 16-byte header (length including the header, version 1, flag, service
id, command id, seq, reserved; all big-endian) and decode back byte for byte.
"""

from __future__ import annotations

import importlib
import struct

import pytest

from runtime.framing import FrameDecoder, encode_frame

HEADER = ">IHHHHHH"  # length, version, flag, service_id, command_id, seq_num, reserved


@pytest.fixture(scope="module")
def registry():
    return importlib.import_module("generated.teamtalk.registry").REGISTRY


@pytest.fixture(scope="module")
def message_pb2():
    return importlib.import_module("generated.teamtalk.IM_Message_pb2")


@pytest.fixture(scope="module")
def base_pb2():
    return importlib.import_module("generated.teamtalk.IM_BaseDefine_pb2")


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def hand_frame(service_id: int, command_id: int, seq: int, body: bytes) -> bytes:
    return struct.pack(HEADER, 16 + len(body), 1, 0, service_id, command_id, seq, 0) + body


def decode_byte_by_byte(wire: bytes):
    decoder = FrameDecoder()
    frames = []
    for i in range(len(wire)):
        frames += decoder.feed(wire[i : i + 1])
    assert decoder.buffered == 0
    return frames


def sample_msg(message_pb2, base_pb2):
    return message_pb2.IMMsgData(
        from_user_id=1001,
        to_session_id=1002,
        msg_id=0,
        create_time=1_700_000_000,
        msg_type=base_pb2.MSG_TYPE_SINGLE_TEXT,
        msg_data=b"hello",
    )


def test_msg_data_body_is_the_proto2_wire_form(message_pb2, base_pb2):
    # Field keys are (number << 3) | wire type: varint 0, length-delimited 2.
    expected = (
        b"\x08" + varint(1001)
        + b"\x10" + varint(1002)
        + b"\x18" + varint(0)
        + b"\x20" + varint(1_700_000_000)
        + b"\x28" + varint(0x01)
        + b"\x32" + varint(5) + b"hello"
    )  # fmt: skip
    assert sample_msg(message_pb2, base_pb2).SerializeToString() == expected


def test_msg_data_frame_matches_the_hand_built_header(registry, message_pb2, base_pb2):
    info = registry.by_name("CID_MSG_DATA")
    assert (info.service_id, info.command_id) == (3, 0x0301)
    assert info.message_class is message_pb2.IMMsgData
    body = sample_msg(message_pb2, base_pb2).SerializeToString()

    wire = encode_frame(info.service_id, info.command_id, 0x1234, body)

    assert wire == hand_frame(3, 0x0301, 0x1234, body)
    assert wire[:16] == bytes.fromhex(f"{16 + len(body):08x} 0001 0000 0003 0301 1234 0000")
    (frame,) = decode_byte_by_byte(wire)
    assert (frame.service_id, frame.command_id, frame.seq, frame.flag, frame.version) == (
        3,
        0x0301,
        0x1234,
        0,
        1,
    )
    assert bytes(frame.body) == body
    decoded = registry.by_id(frame.command_id).message_class.FromString(bytes(frame.body))
    assert decoded == sample_msg(message_pb2, base_pb2)
    assert decoded.msg_data == b"hello" and decoded.from_user_id == 1001


def test_hand_built_frames_decode_through_the_registry(registry, message_pb2, base_pb2):
    ack = message_pb2.IMMsgDataAck(
        user_id=1001, session_id=1002, msg_id=7, session_type=base_pb2.SESSION_TYPE_SINGLE
    ).SerializeToString()
    wire = hand_frame(3, 0x0302, 9, ack) + hand_frame(7, 0x0701, 0, b"")  # coalesced: ack, then heartbeat

    ack_frame, beat = decode_byte_by_byte(wire)

    assert registry.by_id(ack_frame.command_id).name == "CID_MSG_DATA_ACK"
    assert message_pb2.IMMsgDataAck.FromString(bytes(ack_frame.body)).msg_id == 7
    assert ack_frame.seq == 9
    assert registry.by_id(beat.command_id).name == "CID_OTHER_HEARTBEAT"
    assert (beat.service_id, beat.seq, bytes(beat.body)) == (7, 0, b"")


def test_heartbeat_is_a_bare_16_byte_frame(registry):
    info = registry.by_name("CID_OTHER_HEARTBEAT")
    body = info.message_class().SerializeToString()
    wire = encode_frame(info.service_id, info.command_id, 0, body)
    assert wire == struct.pack(HEADER, 16, 1, 0, 7, 0x0701, 0, 0)
    assert len(wire) == 16


def test_burn_after_reading_reuses_the_msg_data_body_under_its_own_id(registry, message_pb2, base_pb2):
    burn, plain = registry.by_name("CID_EXT_MSG_BURN"), registry.by_name("CID_MSG_DATA")
    assert burn.message_class is plain.message_class is message_pb2.IMMsgData
    body = sample_msg(message_pb2, base_pb2).SerializeToString()
    wire = encode_frame(burn.service_id, burn.command_id, 1, body)
    assert wire == hand_frame(0x10, 0x1005, 1, body)
    assert wire[16:] == encode_frame(plain.service_id, plain.command_id, 1, body)[16:]
