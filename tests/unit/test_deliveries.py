"""What a router delivers (runtime.services.deliveries) is what msg servers and gateways route, and what
their cluster entries list as `receives` (so each generated deliveries base has one method per delivered
command)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from generated.teamtalk import servers
from generated.teamtalk.registry import CLUSTER_SERVICES, REGISTRY
from runtime.services.base import generated_handlers
from runtime.services.deliveries import ROUTER_TABLE, router_deliveries
from runtime.services.gateway.relays import GatewayRelays
from runtime.services.msg.inbound import FALLBACK, InboundRelays, relay_handlers


def _received(service: str) -> set[str]:
    return set(CLUSTER_SERVICES[service]["receives"])


def test_msg_receives_exactly_what_routers_deliver() -> None:
    assert _received("msg") == {info.name for info in router_deliveries(REGISTRY)}


def test_the_gateway_receives_every_delivery_except_server_only_plugin_frames() -> None:
    delivered = {info.name: info for info in router_deliveries(REGISTRY)}
    received = _received("gateway")
    assert received <= set(delivered)
    for name in set(delivered) - received:  # e.g. the shake plugin's broadcast: for msg servers only
        assert delivered[name].direction == "s2s" and name in _received("msg"), name
    assert {"CID_MSG_DATA", "CID_OTHER_LOGIN_STATUS_NOTIFY", "CID_EXT_MSG_EDIT_NOTIFY"} <= received
    # The router's table commands are never delivered.
    assert not set(ROUTER_TABLE) & set(delivered)
    # No client sends the gateway a binary frame: its base hosts nothing.
    assert REGISTRY.hosted_by("gateway") == []


@pytest.mark.parametrize(
    ("service", "base"), [("msg", "MsgDeliveriesBase"), ("gateway", "GatewayDeliveriesBase")]
)
def test_each_deliveries_base_maps_exactly_the_received_commands(service: str, base: str) -> None:
    cls = getattr(servers, base)
    assert servers.DELIVERY_BASES[service] is cls
    assert set(cls.__mapping__) == {REGISTRY.by_name(name).command_id for name in _received(service)}
    assert set(cls.__abstractmethods__) == set(cls.__mapping__.values())


def test_relay_handlers_implement_the_generated_bases() -> None:
    missing = [m for m in servers.GatewayDeliveriesBase.__abstractmethods__ if not hasattr(GatewayRelays, m)]
    assert missing == []
    # msg: every delivered command has its own method, except a plugin's (the plugins take those first).
    missing = [m for m in servers.MsgDeliveriesBase.__abstractmethods__ if not hasattr(InboundRelays, m)]
    assert missing == ["on_cid_shake_share"]


class _Svc:
    """What InboundRelays reads of its service at construction."""

    def __init__(self, stack: Any) -> None:
        self.ctx = SimpleNamespace(registry=REGISTRY, servers=stack)
        self.proto = None
        self.metrics = SimpleNamespace(counter=lambda *_a: None)


def test_msg_binds_its_relays_to_the_generated_base() -> None:
    relays = relay_handlers(_Svc(servers))  # type: ignore[arg-type]
    assert isinstance(relays, servers.MsgDeliveriesBase)
    mapping = relays.__mapping__
    assert set(mapping) == {info.command_id for info in router_deliveries(REGISTRY)}
    assert mapping[REGISTRY.by_name("CID_MSG_DATA").command_id] == "on_cid_msg_data"
    shake = REGISTRY.by_name("CID_SHAKE_SHARE").command_id
    assert mapping[shake] == "on_cid_shake_share"
    assert type(relays).on_cid_shake_share is InboundRelays.on_other_relay
    # Every mapped name is a method a Dispatcher can bind.
    assert all(callable(getattr(relays, name)) for name in mapping.values())


def test_msg_without_a_generated_base_routes_by_method_name() -> None:
    relays = relay_handlers(_Svc(None))  # type: ignore[arg-type]
    assert type(relays) is InboundRelays
    mapping = relays.__mapping__
    assert set(mapping) == {info.command_id for info in router_deliveries(REGISTRY)}
    assert (
        mapping[REGISTRY.by_name("CID_OTHER_SERVER_KICK_USER").command_id] == "on_cid_other_server_kick_user"
    )
    assert mapping[REGISTRY.by_name("CID_SHAKE_SHARE").command_id] == FALLBACK


def test_the_abc_refuses_relays_missing_a_delivery_method() -> None:
    namespace = {
        k: v
        for k, v in vars(InboundRelays).items()
        if k not in ("on_cid_other_login_status_notify", "__dict__", "__weakref__")
    }
    lacking = type("Lacking", (), namespace)  # InboundRelays without one delivery method
    stack = SimpleNamespace(MsgDeliveriesBase=servers.MsgDeliveriesBase)
    plugin = {"on_cid_shake_share": InboundRelays.on_other_relay}
    bound = generated_handlers(SimpleNamespace(servers=stack), lacking, "MsgDeliveriesBase", plugin)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_cid_other_login_status_notify"):
        bound(_Svc(stack))
    # The complete class is accepted by the same base.
    complete = generated_handlers(SimpleNamespace(servers=stack), InboundRelays, "MsgDeliveriesBase", plugin)  # type: ignore[arg-type]
    assert isinstance(complete(_Svc(stack)), servers.MsgDeliveriesBase)  # type: ignore[arg-type]
