"""Codegen diff layer: protocol service and command ids, messages, replies, directions, cluster hosting and
deliveries."""

from __future__ import annotations

from codegen.diff.context import DiffContext, pair_elements
from codegen.model import Command, Spec


def check_services(ctx: DiffContext) -> dict[str, str]:
    """Diff protocol services (paired by name, then id); returns old service name -> new service name."""
    pairing = pair_elements(
        list(ctx.old.services().values()),
        list(ctx.new.services().values()),
        name=lambda s: s.name,
        hint=lambda s: None,
        number=lambda s: s.id,
    )
    mapping: dict[str, str] = {}
    for o, n, _ in pairing.pairs:
        mapping[o.name] = n.name
        if o.name != n.name:
            ctx.report("SERVICE_RENAMED", n.loc, f"service {o.name} (id {n.id}) renamed to {n.name}", n.name)
        if o.id != n.id:
            ctx.report("SERVICE_ID_CHANGED", n.loc, f"service {n.name} changed id {o.id} -> {n.id}", n.name)
    for s in pairing.added:
        ctx.report("SERVICE_ADDED", s.loc, f"service {s.name} (id {s.id}) added", s.name)
    for s in pairing.removed:
        ctx.report("SERVICE_REMOVED", s.loc, f"service {s.name} (id {s.id}) removed", s.name)
    return mapping


def _hosts(spec: Spec, command: str) -> set[str]:
    return {s.name for s in spec.cluster if command in s.hosts}


def _receivers(spec: Spec, command: str) -> set[str]:
    return {s.name for s in spec.cluster if command in s.receives}


def check_commands(ctx: DiffContext) -> None:
    """Pair commands (renamed_from, then name, then id) and diff ids, services, messages, replies, hosting."""
    service_map = check_services(ctx)
    pairing = pair_elements(
        list(ctx.old.commands().values()),
        list(ctx.new.commands().values()),
        name=lambda c: c.name,
        hint=lambda c: c.renamed_from,
        number=lambda c: c.id,
    )
    for o, n, _ in pairing.pairs:
        ctx.command_map[o.name] = n.name
    for o, n, how in pairing.pairs:
        _check_command(ctx, o, n, how, service_map)
    for c in pairing.added:
        ctx.report("COMMAND_ADDED", c.loc, f"command {c.name} (0x{c.id:04x}) added", c.name)
    for c in pairing.removed:
        ctx.report("COMMAND_REMOVED", c.loc, f"command {c.name} (0x{c.id:04x}) removed", c.name)


def _check_command(ctx: DiffContext, o: Command, n: Command, how: str, service_map: dict[str, str]) -> None:
    subject = n.name
    if o.name != n.name:
        if how == "hint":
            ctx.report("COMMAND_RENAMED", n.loc, f"command {o.name} renamed to {n.name}", subject)
        else:
            ctx.report(
                "COMMAND_ID_REUSED",
                n.loc,
                f"command id 0x{n.id:04x} changed from {o.name} to {n.name} without renamed_from",
                subject,
            )
    if o.id != n.id:
        ctx.report(
            "COMMAND_ID_CHANGED", n.loc, f"command {n.name} changed id 0x{o.id:04x} -> 0x{n.id:04x}", subject
        )
    if service_map.get(o.service, o.service) != n.service:
        ctx.report(
            "COMMAND_SERVICE_CHANGED",
            n.loc,
            f"command {n.name} moved from service {o.service} to {n.service}",
            subject,
        )
    if ctx.message_map.get(o.message, o.message) != n.message:
        ctx.report(
            "COMMAND_MESSAGE_CHANGED",
            n.loc,
            f"command {n.name} now carries {n.message} instead of {o.message}",
            subject,
        )
    _check_reply(ctx, o, n)
    if o.direction != n.direction:
        ctx.report(
            "COMMAND_DIRECTION_CHANGED",
            n.loc,
            f"command {n.name} changed direction {o.direction} -> {n.direction}",
            subject,
            severity="high" if _narrowed(o.direction, n.direction) else "medium",
        )
    for rule, services_of, verb in (
        ("COMMAND_HOSTING_CHANGED", _hosts, "hosted by"),
        ("COMMAND_DELIVERY_CHANGED", _receivers, "delivered to"),
    ):
        before, after = services_of(ctx.old, o.name), services_of(ctx.new, n.name)
        if before != after:
            ctx.report(rule, n.loc, f"command {n.name} {verb} {_names(before)} -> {_names(after)}", subject)
    if n.deprecated and not o.deprecated:
        ctx.report("COMMAND_DEPRECATED", n.loc, f"command {n.name} deprecated", subject)


def _check_reply(ctx: DiffContext, o: Command, n: Command) -> None:
    old_reply = ctx.command_map.get(o.reply, o.reply) if o.reply else None
    if old_reply == n.reply:
        return
    if n.reply is None:
        ctx.report(
            "COMMAND_REPLY_REMOVED", n.loc, f"command {n.name} no longer answered by {o.reply}", n.name
        )
    elif old_reply is None:
        ctx.report("COMMAND_REPLY_ADDED", n.loc, f"command {n.name} now answered by {n.reply}", n.name)
    else:
        ctx.report(
            "COMMAND_REPLY_CHANGED",
            n.loc,
            f"command {n.name} answered by {n.reply} instead of {o.reply}",
            n.name,
        )


_SENDERS = {"c2s": {"client"}, "s2c": {"server"}, "both": {"client", "server"}, "s2s": {"cluster"}}


def _narrowed(old: str, new: str) -> bool:
    """True when some sender allowed before is refused now."""
    return not _SENDERS.get(old, set()) <= _SENDERS.get(new, set())


def _names(names: set[str]) -> str:
    return "[" + ", ".join(sorted(names)) + "]"


def check_cluster(ctx: DiffContext) -> None:
    """Diff cluster services: added, removed, listen and links changes."""
    old, new = ctx.old.cluster_services(), ctx.new.cluster_services()
    for name in sorted(set(new) - set(old)):
        ctx.report("CLUSTER_SERVICE_ADDED", new[name].loc, f"cluster service {name} added", name)
    for name in sorted(set(old) - set(new)):
        ctx.report("CLUSTER_SERVICE_REMOVED", old[name].loc, f"cluster service {name} removed", name)
    for name in sorted(set(old) & set(new)):
        o, n = old[name], new[name]
        if o.listen != n.listen:
            ctx.report(
                "CLUSTER_LISTEN_CHANGED",
                n.loc,
                f"cluster service {name} listen {o.listen or '(none)'} -> {n.listen or '(none)'}",
                name,
            )
        if set(o.links) != set(n.links):
            ctx.report(
                "CLUSTER_LINKS_CHANGED",
                n.loc,
                f"cluster service {name} links {_names(set(o.links))} -> {_names(set(n.links))}",
                name,
            )
