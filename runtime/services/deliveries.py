"""Runtime services layer: what a router delivers to msg servers and gateways, derived from the spec.

A router forwards every relay it hosts (the cluster file's `router.hosts`) except the commands of its own
user table (status updates, snapshots, role choice, status queries, heartbeats), and sends two kinds of
frames of its own: the presence policy's pushes (`notify`, `batch`) and the PC login status of a user to the
servers holding that user (for their mobiles). msg servers (runtime.services.msg.inbound) and gateways
(runtime.services.gateway.relays) route exactly these commands from their router links; their `receives` in
the cluster file list the same set, so the generated `MsgDeliveriesBase` and `GatewayDeliveriesBase` have one
method per delivered command (tests/unit/test_deliveries.py checks they agree).
"""

from __future__ import annotations

from runtime.dispatch import Context
from runtime.link_dispatch import LinkContext
from runtime.registry import CommandInfo, Registry
from runtime.services.presence import PresencePolicy

# The router's own table commands: answered or applied by the router, never forwarded.
ROUTER_TABLE = (
    "CID_BUDDY_LIST_USERS_STATUS_REQUEST",
    "CID_OTHER_ROLE_SET",
    "CID_OTHER_ONLINE_USER_INFO",
    "CID_OTHER_USER_STATUS_UPDATE",
    "CID_OTHER_HEARTBEAT",
)
# Frames a router originates besides presence pushes: a user's PC came or went (runtime.services.router).
ROUTER_NOTICES = ("CID_OTHER_LOGIN_STATUS_NOTIFY",)


def router_deliveries(registry: Registry) -> list[CommandInfo]:
    """Every command a router may send a msg server or gateway, in command-id order."""
    known = {info.name for info in registry}
    names = {info.name for info in registry.hosted_by("router")} - set(ROUTER_TABLE)
    policy = PresencePolicy.from_registry(registry)
    names.add(policy.notify)
    if policy.batch:
        names.add(policy.batch)
    names.update(n for n in ROUTER_NOTICES if n in known)
    return sorted((registry.by_name(n) for n in names), key=lambda info: info.command_id)


def delivery_mapping(handlers: object, registry: Registry, fallback: str) -> dict[int, str]:
    """The `__mapping__` of a delivery handler object (a msg server's or a gateway's): its generated
    `<Service>DeliveriesBase`'s when bound to one, completed for every command a router delivers that the base
    does not list (a stack whose spec lacks the `receives` list, a plugin's frame) by its method's name, else
    `fallback`."""
    mapping: dict[int, str] = dict(getattr(handlers, "__mapping__", None) or {})
    for info in router_deliveries(registry):
        if info.command_id not in mapping:
            name = "on_" + info.name.lower()
            mapping[info.command_id] = name if hasattr(handlers, name) else fallback
    return mapping


def delivery_targets(ctx: Context) -> tuple[int, ...] | None:
    """The users a delivered frame is for (its relay envelope), None for everyone (a broadcast, or a frame
    that did not come over a link)."""
    return ctx.targets if isinstance(ctx, LinkContext) else None
