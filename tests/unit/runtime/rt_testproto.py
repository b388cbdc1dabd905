"""Test support: a small TeamTalk-shaped protocol built from descriptors at run time, and its Registry."""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from runtime.registry import CommandInfo, Registry

F = descriptor_pb2.FieldDescriptorProto
REQ, OPT, REP = F.LABEL_REQUIRED, F.LABEL_OPTIONAL, F.LABEL_REPEATED
U32, STR, BYTES = F.TYPE_UINT32, F.TYPE_STRING, F.TYPE_BYTES

# Named enum bits as a generated registry carries them (TeamTalk's ClientType marks mobiles with 0x10).
ENUM_BITS = {"rttest.ClientType": {"MOBILE": 0x10}}

MESSAGES: dict[str, list[tuple[str, int, int, int]]] = {
    "LoginReq": [("user_name", 1, STR, REQ), ("password", 2, STR, REQ), ("client_type", 3, U32, REQ)],
    "LoginRes": [("result_code", 1, U32, REQ), ("user_id", 2, U32, OPT)],
    "HeartBeat": [],
    "MsgData": [
        ("from_user_id", 1, U32, REQ),
        ("to_session_id", 2, U32, REQ),
        ("msg_id", 3, U32, REQ),
        ("msg_type", 5, U32, REQ),
        ("msg_data", 6, BYTES, REQ),
        ("attach_data", 20, BYTES, OPT),
    ],
    "MsgDataAck": [("user_id", 1, U32, REQ), ("session_id", 2, U32, REQ), ("msg_id", 3, U32, REQ)],
    "Echo": [("text", 1, STR, OPT), ("items", 2, U32, REP), ("blob", 3, BYTES, OPT)],
    "Notify": [("text", 1, STR, OPT)],
}


def _classes() -> dict[str, type[Message]]:
    fdp = descriptor_pb2.FileDescriptorProto(name="rttest.proto", package="rttest", syntax="proto2")
    for name, fields in MESSAGES.items():
        msg = fdp.message_type.add(name=name)
        for fname, number, ftype, label in fields:
            msg.field.add(name=fname, number=number, type=ftype, label=label)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"rttest.{name}"))
        for name in MESSAGES
    }


CLASSES = _classes()
LoginReq = CLASSES["LoginReq"]
LoginRes = CLASSES["LoginRes"]
HeartBeat = CLASSES["HeartBeat"]
MsgData = CLASSES["MsgData"]
MsgDataAck = CLASSES["MsgDataAck"]
Echo = CLASSES["Echo"]
Notify = CLASSES["Notify"]

NO_AUTH = {"input": {"require_auth": False}}


def build_registry(overrides: dict[str, dict[str, Any]] | None = None) -> Registry:
    """The test protocol; `overrides` replaces the stage policies of named commands."""
    commands = [
        ("LOGIN_REQ", 1, 0x0103, LoginReq, "c2s", "LOGIN_RES", NO_AUTH),
        ("LOGIN_RES", 1, 0x0104, LoginRes, "s2c", None, {}),
        ("HEARTBEAT", 7, 0x0701, HeartBeat, "both", None, NO_AUTH),
        (
            "MSG_DATA",
            3,
            0x0301,
            MsgData,
            "c2s",
            "MSG_DATA_ACK",
            {"input": {"rate": "20/s", "reject": ["self_message", "empty_body"]}},
        ),
        ("MSG_DATA_ACK", 3, 0x0302, MsgDataAck, "both", None, {}),
        ("ECHO_REQ", 3, 0x0305, Echo, "c2s", "ECHO_RSP", {}),
        ("ECHO_RSP", 3, 0x0306, Echo, "s2c", None, {}),
        ("NOTIFY", 2, 0x0203, Notify, "s2c", None, {}),
        ("SERVER_ONLY", 7, 0x0709, Notify, "s2s", None, {}),
    ]
    overrides = overrides or {}
    return Registry(
        "rttest",
        "1.0.0",
        [
            CommandInfo(
                name=name,
                service_id=sid,
                command_id=cid,
                message_class=cls,
                direction=direction,
                reply=reply,
                hosted_by=("msg",),
                stages=overrides.get(name, stages),
            )
            for name, sid, cid, cls, direction, reply, stages in commands
        ],
        enum_bits=ENUM_BITS,
    )
