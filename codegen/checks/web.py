"""Codegen validate layer: TT85x, the browser API (`web:`): field types, routes, event data, enums."""

from __future__ import annotations

from collections.abc import Callable

from codegen.diagnostics import Diagnostics, did_you_mean
from codegen.model import WEB_SCALARS, Spec, WebField, loc_at


def _all_fields(spec: Spec) -> list[tuple[str, WebField]]:
    web = spec.web
    if web is None:
        return []
    out: list[tuple[str, WebField]] = []
    for t in web.types:
        out.extend((f"web type '{t.name}'", f) for f in t.fields)
    for c in web.commands:
        out.extend((f"web command '{c.name}' request", f) for f in c.request)
        out.extend((f"web command '{c.name}' reply", f) for f in c.reply)
    for e in web.events:
        out.extend((f"web event '{e.name}'", f) for f in e.fields)
    return out


def check_web_types(spec: Spec, diags: Diagnostics) -> None:
    """TT851: a field type that is no JSON scalar, web type, spec message or spec enum."""
    if spec.web is None:
        return
    known = {*WEB_SCALARS, *(t.name for t in spec.web.types), *spec.messages(), *spec.enums()}
    for what, f in _all_fields(spec):
        if f.type not in known:
            diags.error(
                "TT851",
                f"{what} field '{f.name}': unknown type '{f.type}'" + did_you_mean(f.type, known),
                f.loc,
                hint=f"a JSON scalar ({', '.join(WEB_SCALARS)}), a web type, or a qualified message or enum",
            )


def check_web_routes(spec: Spec, diags: Diagnostics) -> None:
    """TT852: two commands on one HTTP route, or a command with neither a route nor the WebSocket."""
    web = spec.web
    if web is None:
        return
    seen: dict[tuple[str, str], str] = {}
    for c in web.commands:
        if c.method:
            first = seen.setdefault((c.method, c.path), c.name)
            if first != c.name:
                diags.error(
                    "TT852",
                    f"web command '{c.name}': route {c.method} {c.path} is already command '{first}'s",
                    loc_at(c, "http"),
                )
        elif not c.ws or not web.websocket:
            diags.error(
                "TT852",
                f"web command '{c.name}' has no HTTP route and no WebSocket to travel on",
                c.loc,
                hint="give it `http: METHOD /path`, or a `websocket:` endpoint to the section",
            )


def check_web_events(spec: Spec, diags: Diagnostics) -> None:
    """TT853: an event's `data` names no command, or one never sent to clients."""
    if spec.web is None:
        return
    commands = spec.commands()
    for e in spec.web.events:
        if e.data is None:
            continue
        command = commands.get(e.data)
        loc = loc_at(e, "data")
        if command is None:
            diags.error(
                "TT853",
                f"web event '{e.name}' data names unknown command '{e.data}'"
                + did_you_mean(e.data, commands),
                loc,
            )
        elif command.direction not in ("s2c", "both"):
            diags.error(
                "TT853",
                f"web event '{e.name}' data command '{e.data}' is {command.direction}: "
                "it never goes to clients",
                loc,
            )


def check_web_enums(spec: Spec, diags: Diagnostics) -> None:
    """TT854: `enums` names no enum of the spec."""
    web = spec.web
    if web is None:
        return
    enums = spec.enums()
    for name in web.enums:
        if name not in enums:
            diags.error(
                "TT854",
                f"web enums: unknown enum '{name}'" + did_you_mean(name, enums),
                loc_at(web, f"enums:{name}"),
            )


CHECKS: list[Callable[[Spec, Diagnostics], None]] = [
    check_web_types,
    check_web_routes,
    check_web_events,
    check_web_enums,
]
