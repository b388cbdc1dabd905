"""Unit: internal links dispatched by the Dispatcher to a service's handlers (runtime.link_dispatch), over a
real loopback link with the cluster handshake."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from generated.teamtalk import servers
from generated.teamtalk.registry import REGISTRY
from runtime.connection import CONFIRMED, FLAG_RELAY, LinkAuth, pack_relay
from runtime.dispatch import Context, Dispatcher
from runtime.link_dispatch import LinkContext, answer_later, forwards
from runtime.services.base import ServiceContext, bound_to_base
from runtime.services.links import Link, NoRequests
from runtime.transport import serve_links

SECRET = b"k" * 32
UNREAD_REQ = REGISTRY.by_name("CID_MSG_UNREAD_CNT_REQUEST")
UNREAD_RSP = REGISTRY.by_name("CID_MSG_UNREAD_CNT_RESPONSE")
LIST_REQ = REGISTRY.by_name("CID_MSG_LIST_REQUEST")
MSG_DATA = REGISTRY.by_name("CID_MSG_DATA")
LATEST_REQ = REGISTRY.by_name("CID_MSG_GET_LATEST_MSG_ID_REQ")


class Service:
    """A hand-made service: four commands, each showing one way an internal request is answered."""

    def __init__(self) -> None:
        self.__mapping__ = {
            UNREAD_REQ.command_id: "on_unread",
            LIST_REQ.command_id: "on_list",
            MSG_DATA.command_id: "on_msg_data",
            LATEST_REQ.command_id: "on_latest",
        }
        self.seen: list[tuple[str, int, Any]] = []
        self.later: list[Callable[[Any], None]] = []
        self.observed: list[tuple[str, bool]] = []

    async def on_unread(self, ctx: Context, msg: Any) -> Any:
        """Returns its reply: the acting user is the relay envelope's first target."""
        await asyncio.sleep(0)
        self.seen.append(("unread", ctx.user_id, msg.user_id))
        return UNREAD_RSP.message_class(user_id=ctx.user_id, total_cnt=3)

    def on_list(self, ctx: Context, msg: Any) -> None:
        """Answers later, from a callback."""
        self.later.append(answer_later(ctx))

    @forwards
    def on_msg_data(self, ctx: Context, msg: Any) -> None:
        """Gets no parsed message; sees the envelope's targets."""
        assert isinstance(ctx, LinkContext)
        self.seen.append(("forward", ctx.user_id, (msg, ctx.targets)))

    async def on_latest(self, ctx: Context, msg: Any) -> Any:
        raise RuntimeError("a failing handler")

    def observe_internal(self, command: str, seconds: float, failed: bool) -> None:
        self.observed.append((command, failed))


def test_internal_requests_reach_the_handlers_as_the_relayed_user() -> None:
    async def body() -> None:
        service = Service()
        dispatcher = Dispatcher(REGISTRY, service)
        server = await serve_links(
            "127.0.0.1", 0, dispatcher.handler_factory, registry=REGISTRY, auth=LinkAuth(SECRET)
        )
        try:
            _tr, link = await asyncio.get_running_loop().create_connection(
                lambda: Link(REGISTRY, NoRequests(), name="t", auth=LinkAuth(SECRET), dialer=True),
                "127.0.0.1",
                server.port,
            )
            assert await link.authenticated
            req = UNREAD_REQ.message_class(user_id=999)  # the client's claim: ignored
            reply = await link.call(
                UNREAD_REQ.command_id, pack_relay([42], req.SerializeToString()), 5, flag=FLAG_RELAY
            )
            assert reply.command_id == UNREAD_RSP.command_id
            assert UNREAD_RSP.message_class.FromString(reply.body).user_id == 42
            assert service.seen == [("unread", 42, 999)]
            # Not relayed: no acting user.
            await link.call(UNREAD_REQ.command_id, req.SerializeToString(), 5)
            assert service.seen[-1] == ("unread", 0, 999)

            # A deferred answer comes when the handler's callback runs; not before.
            list_req = LIST_REQ.message_class(
                user_id=1, session_type=1, session_id=2, msg_id_begin=0, msg_cnt=1
            ).SerializeToString()
            pending = asyncio.ensure_future(
                link.call(LIST_REQ.command_id, pack_relay([7], list_req), 5, flag=FLAG_RELAY)
            )
            while not service.later:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            assert not pending.done()
            service.later[0](UNREAD_RSP.message_class(user_id=7, total_cnt=0))
            assert (await pending).command_id == UNREAD_RSP.command_id

            # A forwarded relay is not parsed (a body that is not IMMsgData reaches the handler as it is).
            got = await link.call(MSG_DATA.command_id, pack_relay([5, 6], b"\xff\xff"), 5, flag=FLAG_RELAY)
            assert got is CONFIRMED
            assert service.seen[-1] == ("forward", 5, (None, (5, 6)))

            # A failing handler answers empty; so does a body that does not parse.
            assert await link.call(LATEST_REQ.command_id, b"", 5) is CONFIRMED
            assert await link.call(UNREAD_REQ.command_id, b"\xff\xff\xff", 5) is CONFIRMED
            # A command the service does not handle is answered empty.
            other = REGISTRY.by_name("CID_GROUP_INFO_REQUEST").command_id
            assert await link.call(other, b"", 5) is CONFIRMED
            assert ("CID_MSG_GET_LATEST_MSG_ID_REQ", True) in service.observed
            assert ("CID_MSG_UNREAD_CNT_REQUEST", False) in service.observed
            link.close()
        finally:
            await server.shutdown(1.0)

    asyncio.run(body())


def test_biz_and_router_are_their_generated_bases() -> None:
    from runtime.cluster.discovery import StaticDiscovery
    from runtime.services.biz.service import BizService
    from runtime.services.router import RouterService

    async def body() -> None:
        for cls, base in ((BizService, servers.BizServiceBase), (RouterService, servers.RouterServiceBase)):
            ctx = ServiceContext(
                name=base.__service__,
                instance=0,
                registry=REGISTRY,
                config={},
                cluster_config={},
                data_dir=None,  # type: ignore[arg-type]  # never started
                discovery=StaticDiscovery([]),
                servers=servers,
            )
            svc = cls(ctx)
            assert isinstance(svc, base) and bound_to_base(cls, ctx, base.__name__) is type(svc)
            # Every hosted command is routed to a method of the base, implemented by the service.
            assert set(svc.dispatcher.routes) == set(base.__mapping__)
            for cid, method in base.__mapping__.items():
                assert svc.dispatcher.routes[cid].handler == getattr(svc, method)
                assert method not in getattr(type(svc), "__abstractmethods__", ())

    asyncio.run(body())
