"""Codegen validate layer: TT5xx commands, protocol services and cluster services."""

from __future__ import annotations

from codegen.diagnostics import Diagnostics, did_you_mean
from codegen.model import Command, ProtoService, Spec, loc_at

HOSTED_DIRECTIONS = ("c2s", "both", "s2s")
DELIVERED_DIRECTIONS = ("s2c", "both", "s2s")  # what a server may send: what a link can deliver


def check_command_messages(spec: Spec, diags: Diagnostics) -> None:
    """TT203: a command names an unknown message. TT501: it names an enum instead of a message."""
    messages = spec.messages()
    enums = spec.enums()
    for mod in spec.modules:
        for c in mod.commands:
            if c.message in messages:
                continue
            loc = loc_at(c, "message")
            if c.message in enums:
                diags.error("TT501", f"command '{c.name}' names enum '{c.message}', not a message", loc)
                continue
            pool = sorted(messages) + [q.rsplit(".", 1)[-1] for q in messages]
            diags.error("TT203", f"unknown message '{c.message}'{did_you_mean(c.message, pool)}", loc)


def check_replies(spec: Spec, diags: Diagnostics) -> None:
    """TT502: `reply` names no declared command."""
    commands = spec.commands()
    for c in commands.values():
        if c.reply is not None and c.reply not in commands:
            hint = did_you_mean(c.reply, commands)
            diags.error(
                "TT502",
                f"command '{c.name}' replies with unknown command '{c.reply}'{hint}",
                loc_at(c, "reply"),
            )


def check_command_names_unique(spec: Spec, diags: Diagnostics) -> None:
    """TT509: a command name declared by two modules (TT702 when a plugin redeclares a base command)."""
    seen: dict[str, tuple[Command, str | None]] = {}
    for mod in spec.modules:
        for c in mod.commands:
            if c.name not in seen:
                seen[c.name] = (c, mod.plugin)
                continue
            first, first_plugin = seen[c.name]
            code = "TT702" if mod.plugin and not first_plugin else "TT509"
            diags.error(
                code, f"command '{c.name}' is already declared", c.loc, hint=f"first declared at {first.loc}"
            )


def check_service_names_unique(spec: Spec, diags: Diagnostics) -> None:
    """TT511: modules declare one protocol service name with different ids or ranges.

    Several modules may share a service (TeamTalk's IM.Other and IM.Server both live under SID_OTHER) as
    long as they declare it identically.
    """
    seen: dict[str, ProtoService] = {}
    for mod in spec.modules:
        svc = mod.service
        if svc is None:
            continue
        first = seen.setdefault(svc.name, svc)
        if first is not svc and (first.id, first.range) != (svc.id, svc.range):
            diags.error(
                "TT511",
                f"service '{svc.name}' is declared again with id {svc.id} (first: id {first.id})",
                loc_at(svc, "id"),
                hint=f"first declared at {first.loc}",
            )


def check_hosting(spec: Spec, diags: Diagnostics) -> None:
    """TT503: a c2s/both/s2s command that no cluster service hosts (s2c commands need no host). An s2s command
    a service receives from its links (`receives`) counts as handled: clients never send it."""
    if not spec.cluster:
        return  # a protocol-only spec: nothing to host yet
    hosted = {name for svc in spec.cluster for name in svc.hosts}
    received = {name for svc in spec.cluster for name in svc.receives}
    commands = spec.commands()
    for c in commands.values():
        if c.direction == "s2s" and c.name in received:
            continue
        if c.direction in HOSTED_DIRECTIONS and c.name not in hosted:
            diags.error(
                "TT503",
                f"{c.direction} command '{c.name}' is hosted by no cluster service",
                c.loc,
                hint="add it to some service's `hosts` in the cluster file",
            )


def check_cluster_refs(spec: Spec, diags: Diagnostics) -> None:
    """TT504: `hosts` names an unknown command. TT505: `links` names an unknown cluster service."""
    commands = spec.commands()
    services = spec.cluster_services()
    for svc in spec.cluster:
        for name in svc.hosts:
            if name not in commands:
                diags.error(
                    "TT504",
                    f"cluster service '{svc.name}' hosts unknown command '{name}'"
                    + did_you_mean(name, commands),
                    loc_at(svc, f"hosts:{name}"),
                )
        for name in svc.links:
            if name not in services:
                diags.error(
                    "TT505",
                    f"cluster service '{svc.name}' links to unknown service '{name}'"
                    + did_you_mean(name, services),
                    loc_at(svc, f"links:{name}"),
                )


def check_deliveries(spec: Spec, diags: Diagnostics) -> None:
    """TT514: `receives` names an unknown command. TT515: `receives` names a c2s command (only clients send
    it: no linked service can deliver it). TT516 (warning): a service receives deliveries but links to no
    service, so nothing can deliver them."""
    commands = spec.commands()
    for svc in spec.cluster:
        for name in svc.receives:
            command = commands.get(name)
            if command is None:
                diags.error(
                    "TT514",
                    f"cluster service '{svc.name}' receives unknown command '{name}'"
                    + did_you_mean(name, commands),
                    loc_at(svc, f"receives:{name}"),
                )
            elif command.direction not in DELIVERED_DIRECTIONS:
                diags.error(
                    "TT515",
                    f"cluster service '{svc.name}' receives {command.direction} command '{name}': only"
                    " clients send it, so no linked service can deliver it",
                    loc_at(svc, f"receives:{name}"),
                    hint="`receives` lists what linked services send (s2c, both or s2s commands); what"
                    " clients send goes in `hosts`",
                )
        if svc.receives and not svc.links:
            diags.warning(
                "TT516",
                f"cluster service '{svc.name}' receives {len(svc.receives)} command(s) but links to no"
                " service, so nothing delivers them",
                loc_at(svc, "receives"),
                hint="list the services that deliver them in `links`",
            )


def check_ports(spec: Spec, diags: Diagnostics) -> None:
    """TT513: a cluster service's default_port is not a TCP port."""
    for svc in spec.cluster:
        if svc.default_port is not None and not 0 <= svc.default_port <= 65535:
            diags.error(
                "TT513",
                f"default_port {svc.default_port} of '{svc.name}' is not in 0..65535",
                loc_at(svc, "default_port"),
            )


def check_wire_enums(spec: Spec, diags: Diagnostics) -> None:
    """TT506: `command_enum` disagrees with the command ids. TT507: `id_enum` disagrees with the service id.
    TT510: either names an unknown enum or value."""
    enums = spec.enums()
    for mod in spec.modules:
        svc = mod.service
        if svc is None:
            continue
        if svc.id_enum_value is not None:
            enum_name, _, value_name = svc.id_enum_value.rpartition(".")
            enum = enums.get(enum_name)
            values = {v.name: v.value for v in enum.values} if enum else {}
            loc = loc_at(svc, "id_enum")
            if enum is None or value_name not in values:
                diags.error(
                    "TT510",
                    f"id_enum '{svc.id_enum_value}' names no enum value" + did_you_mean(value_name, values),
                    loc,
                )
            elif values[value_name] != svc.id:
                diags.error(
                    "TT507",
                    f"service '{svc.name}' has id {svc.id} but {svc.id_enum_value} = {values[value_name]}",
                    loc,
                )
        if svc.command_enum is not None:
            enum = enums.get(svc.command_enum)
            if enum is None:
                diags.error(
                    "TT510",
                    f"command_enum '{svc.command_enum}' names no enum"
                    + did_you_mean(svc.command_enum, enums),
                    loc_at(svc, "command_enum"),
                )
                continue
            values = {v.name: v.value for v in enum.values}
            for c in mod.commands:
                if c.name not in values:
                    diags.error(
                        "TT506",
                        f"command '{c.name}' is not a value of {svc.command_enum}"
                        + did_you_mean(c.name, values),
                        c.loc,
                    )
                elif values[c.name] != c.id:
                    diags.error(
                        "TT506",
                        f"command '{c.name}' has id 0x{c.id:04x} but {svc.command_enum}."
                        f"{c.name} = 0x{values[c.name]:04x}",
                        loc_at(c, "id"),
                    )


CHECKS = [
    check_command_messages,
    check_replies,
    check_command_names_unique,
    check_service_names_unique,
    check_hosting,
    check_cluster_refs,
    check_deliveries,
    check_ports,
    check_wire_enums,
]
