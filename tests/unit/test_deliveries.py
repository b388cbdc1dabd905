"""What a router delivers (runtime.services.deliveries) is what msg servers and gateways route, and what
their cluster entries list as `receives` (so each generated deliveries base has one method per delivered
command)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from generated.teamtalk import servers
from generated.teamtalk.registry import CLUSTER_SERVICES, REGISTRY
from runtime.link_dispatch import LinkContext
from runtime.monitor.metrics import Metrics
from runtime.services.base import generated_handlers
from runtime.services.deliveries import ROUTER_TABLE, router_deliveries
from runtime.services.gateway.relays import GatewayRelays
from runtime.services.links import Proto
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


class _Recorder:
    """The parts of a msg service the delivery methods act on, recording what they do."""

    def __init__(self, consumed_by_plugin: bool = False) -> None:
        self.ctx = SimpleNamespace(registry=REGISTRY, servers=servers)
        self.proto = Proto(REGISTRY)
        self.metrics = Metrics()
        self.calls: list[tuple[str, ...]] = []
        self.sessions = {7: [], 8: []}
        self.group_members = {5: (1, [7, 8])}
        enabled = [object()] if consumed_by_plugin else []
        self.plugins = SimpleNamespace(plugins=enabled, on_relay=self._plugin)
        self.presence = SimpleNamespace(on_relay=self._presence)
        self.handlers = SimpleNamespace(
            fan_out=lambda name, msg, users, mobile_only=False: self.calls.append(
                ("fan_out", name, repr(sorted(users)), str(mobile_only))
            ),
            deliver_chat=lambda name, msg, targets, body=None: self.calls.append(
                ("chat", name, repr(tuple(targets)), repr(body))
            ),
            kick=lambda st, reason: self.calls.append(("kick", str(st.user_id), str(reason))),
        )
        self.states = [SimpleNamespace(user_id=7, mobile=False, client_type=0x01)]

    def states_of(self, user_id: int) -> list[Any]:
        return [st for st in self.states if st.user_id == user_id]

    def _plugin(self, name: str, msg: Any, targets: tuple[int, ...] | None) -> bool:
        self.calls.append(("plugin", name))
        return True

    def _presence(self, name: str, msg: Any) -> bool:
        self.calls.append(("presence", name))
        return name in ("CID_BUDDY_LIST_STATUS_NOTIFY", "CID_BUDDY_LIST_USERS_STATUS_RESPONSE")


def _deliver(relays: Any, name: str, msg: Any, targets: tuple[int, ...] | None, body: bytes = b"") -> None:
    """One delivered frame, routed as the Dispatcher routes it: by command id through `__mapping__`."""
    info = REGISTRY.by_name(name)
    ctx = LinkContext(None, None, info, SimpleNamespace(seq=1), 0, targets, body)  # type: ignore[arg-type]
    getattr(relays, relays.__mapping__[info.command_id])(ctx, msg)


def test_each_delivery_does_its_commands_work_and_is_counted() -> None:
    svc = _Recorder()
    relays = relay_handlers(svc)  # type: ignore[arg-type]
    new = svc.proto.new
    _deliver(relays, "CID_MSG_DATA", new("CID_MSG_DATA", from_user_id=8, to_session_id=7), (7,), b"raw")
    _deliver(relays, "CID_EXT_TYPING", new("CID_EXT_TYPING"), None)  # to everyone here
    change = new("CID_GROUP_CHANGE_MEMBER_NOTIFY", group_id=5)
    _deliver(relays, "CID_GROUP_CHANGE_MEMBER_NOTIFY", change, (8,))
    _deliver(relays, "CID_OTHER_LOGIN_STATUS_NOTIFY", new("CID_OTHER_LOGIN_STATUS_NOTIFY", user_id=7), (7,))
    _deliver(relays, "CID_BUDDY_LIST_STATUS_NOTIFY", new("CID_BUDDY_LIST_STATUS_NOTIFY"), None)
    reason = int(REGISTRY.enums.KickReasonType.KICK_REASON_DUPLICATE_USER)
    kick = new("CID_OTHER_SERVER_KICK_USER", user_id=7, client_type=0x02, reason=reason)
    _deliver(relays, "CID_OTHER_SERVER_KICK_USER", kick, (7,))
    _deliver(relays, "CID_SHAKE_SHARE", new("CID_SHAKE_SHARE", user_id=8), None)  # no plugin took it
    assert svc.calls == [
        ("chat", "CID_MSG_DATA", "(7,)", "b'raw'"),
        ("fan_out", "CID_EXT_TYPING", "[7, 8]", "False"),
        ("fan_out", "CID_GROUP_CHANGE_MEMBER_NOTIFY", "[8]", "False"),
        ("fan_out", "CID_BUDDY_LIST_PC_LOGIN_STATUS_NOTIFY", "[7]", "True"),
        ("presence", "CID_BUDDY_LIST_STATUS_NOTIFY"),
        ("kick", "7", str(reason)),  # a PC kicks a PC: same class
        ("presence", "CID_SHAKE_SHARE"),
        ("fan_out", "CID_SHAKE_SHARE", "[7, 8]", "False"),
    ]
    assert svc.group_members == {}  # the changed group's cached members are dropped
    assert relays.m_inbound.value == 7


def test_an_enabled_plugin_sees_every_delivery_first() -> None:
    svc = _Recorder(consumed_by_plugin=True)
    relays = relay_handlers(svc)  # type: ignore[arg-type]
    _deliver(relays, "CID_MSG_DATA", svc.proto.new("CID_MSG_DATA"), (7,))
    _deliver(relays, "CID_OTHER_LOGIN_STATUS_NOTIFY", svc.proto.new("CID_OTHER_LOGIN_STATUS_NOTIFY"), (7,))
    assert svc.calls == [("plugin", "CID_MSG_DATA"), ("plugin", "CID_OTHER_LOGIN_STATUS_NOTIFY")]
    assert relays.m_inbound.value == 2
