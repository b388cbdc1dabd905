"""Refused input always gets an answer: an error reply where the command's reply can carry one, otherwise a
close with a logged reason (a refusal never looks like a lost frame)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import rt_testproto as tp
from test_dispatch import LOGIN_OK, MemoryTransport, Service, msg_data, open_link, req

from runtime.dispatch import Context, Dispatcher
from runtime.errors import InputRejected
from runtime.refusal import error_reply


class PlainService(Service):
    """A service with no `on_rejected` hook of its own (as a scaffolded app/server.py)."""

    on_rejected = None  # type: ignore[assignment]


def run_plain(overrides: dict[str, Any], body: Any) -> None:
    async def main() -> None:
        service = PlainService()
        dispatcher = Dispatcher(tp.build_registry(overrides), service)
        assert dispatcher._on_rejected is None
        await body(dispatcher, service)

    asyncio.run(main())


def replies(t: MemoryTransport, cid: int) -> list[Any]:
    return [f for f in t.frames() if f.command_id == cid]


def test_a_constraint_violation_is_answered_with_an_error_when_the_reply_has_one() -> None:
    overrides = {"LOGIN_REQ": {"input": {"require_auth": False, "fields": {"user_name": {"max_len": 3}}}}}

    async def body(d: Dispatcher, s: PlainService) -> None:
        link, t = open_link(d, 1)
        link.data_received(req(0x0103, 7, tp.LoginReq(user_name="toolong", password="ok", client_type=1)))
        [frame] = replies(t, 0x0104)
        res = tp.LoginRes.FromString(bytes(frame.body))
        assert frame.seq == 7 and res.result_code != 0
        assert not t.closing  # answered, and the client may try again
        link.data_received(req(0x0103, 8, tp.LoginReq(user_name="ali", password="ok", client_type=1)))
        assert len(replies(t, 0x0104)) == 2 and link.conn is not None and link.conn.user_id == 3

    run_plain(overrides, body)


def test_a_violation_whose_reply_cannot_carry_an_error_closes_with_a_logged_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    overrides = {"MSG_DATA": {"input": {"fields": {"msg_data": {"max_len": 4}}}}}

    async def body(d: Dispatcher, s: PlainService) -> None:
        link, t = open_link(d, 1)
        link.data_received(LOGIN_OK)
        with caplog.at_level(logging.WARNING, logger="runtime.dispatch"):
            link.data_received(req(0x0301, 2, msg_data(data=b"far too long")))
        assert t.closing and s.msgs == []
        assert replies(t, 0x0302) == []
        assert link.conn is not None and "max_len" in (link.conn.close_reason or "")
        assert any("cannot carry an error" in r.getMessage() for r in caplog.records)

    run_plain(overrides, body)


def test_a_reject_rule_is_refused_like_a_constraint_not_dropped() -> None:
    async def body(d: Dispatcher, s: PlainService) -> None:
        link, t = open_link(d, 1)
        link.data_received(LOGIN_OK)  # user id 5
        link.data_received(req(0x0301, 2, msg_data(to=5)))  # to oneself: MsgDataAck has no error field
        assert t.closing and s.msgs == []

    run_plain({}, body)


def test_a_service_hook_that_cannot_answer_gets_the_connection_closed() -> None:
    class Hooked(Service):
        def on_rejected(self, ctx: Context, msg: Any, error: Any) -> bool:
            self.rejected.append(error)
            return False

    async def main() -> None:
        service = Hooked()
        d = Dispatcher(
            tp.build_registry({"MSG_DATA": {"input": {"fields": {"msg_data": {"max_len": 2}}}}}), service
        )
        link, t = open_link(d, 1)
        link.data_received(LOGIN_OK + req(0x0301, 2, msg_data(data=b"long")))
        assert [e.rule for e in service.rejected] == ["max_len"] and t.closing

    asyncio.run(main())


def test_error_reply_sets_the_error_field_echoes_and_fills_required() -> None:
    registry = tp.build_registry()
    info = registry.by_name("LOGIN_REQ")
    exc = InputRejected("user_name: too long", rule="max_len")
    reply: Any = error_reply(registry, info, tp.LoginReq(user_name="x", password="", client_type=1), exc)
    assert reply is not None and reply.result_code == 1 and reply.IsInitialized()
    assert error_reply(registry, registry.by_name("MSG_DATA"), msg_data(), exc) is None  # no error field
    assert error_reply(registry, registry.by_name("MSG_DATA_ACK"), None, exc) is None  # no reply at all
