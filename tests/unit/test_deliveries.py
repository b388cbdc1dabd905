"""What a router delivers (runtime.services.deliveries) is what msg servers and gateways route, and what the
gateway's spec hosts (so its generated base has one method per delivered command)."""

from __future__ import annotations

from generated.teamtalk import servers
from generated.teamtalk.registry import REGISTRY
from runtime.services.deliveries import ROUTER_TABLE, router_deliveries


def test_the_gateway_hosts_every_delivery_except_server_only_plugin_frames() -> None:
    delivered = {info.name: info for info in router_deliveries(REGISTRY)}
    hosted = {info.name for info in REGISTRY.hosted_by("gateway")}
    assert hosted <= set(delivered)
    for name in set(delivered) - hosted:  # e.g. the shake plugin's broadcast: for msg servers only
        assert delivered[name].direction == "s2s" and "msg" in delivered[name].hosted_by, name
    assert {"CID_MSG_DATA", "CID_OTHER_LOGIN_STATUS_NOTIFY", "CID_EXT_MSG_EDIT_NOTIFY"} <= hosted
    # The router's table commands are never delivered.
    assert not set(ROUTER_TABLE) & set(delivered)


def test_the_generated_gateway_base_maps_exactly_the_hosted_commands() -> None:
    base = servers.GatewayServiceBase
    assert set(base.__mapping__) == {info.command_id for info in REGISTRY.hosted_by("gateway")}


def test_relay_handlers_implement_the_generated_base() -> None:
    from runtime.services.gateway.relays import GatewayRelays

    missing = [m for m in servers.GatewayServiceBase.__abstractmethods__ if not hasattr(GatewayRelays, m)]
    assert missing == []


def test_msg_routes_exactly_the_deliveries() -> None:
    from runtime.services.msg.inbound import InboundRelays

    class Svc:  # what InboundRelays reads of its service
        class ctx:
            registry = REGISTRY

        proto = None

        class metrics:
            @staticmethod
            def counter(*_a: object) -> None:
                return None

    relays = InboundRelays(Svc())  # type: ignore[arg-type]
    assert set(relays.__mapping__) == {info.command_id for info in router_deliveries(REGISTRY)}
