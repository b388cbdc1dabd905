"""Codegen diff layer: the browser API (the manifest's `web:`): commands, events and JSON shapes.

The browser client is generated from the same spec as the servers, but a browser may keep an old page open
across a deploy, so the web API evolves under the same rules as the binary protocol. A shape's direction
decides what breaks: a field the gateway sends (event fields, command replies, `types:`) may be added freely
but not removed or made absent-able, and a field the browser sends (command requests) may be dropped but not
added as required."""

from __future__ import annotations

from collections.abc import Sequence

from codegen.diff.context import DiffContext
from codegen.diff.findings import Category
from codegen.model import WebApi, WebCommand, WebField


def check_web(ctx: DiffContext) -> None:
    """Diff the two specs' `web:` sections: the API itself, its types, events and commands."""
    old, new = ctx.old.web, ctx.new.web
    if old is None and new is None:
        return
    if old is None:
        assert new is not None
        ctx.report("WEB_API_ADDED", new.loc, "browser API (web:) added", "web")
        return
    if new is None:
        ctx.report("WEB_API_REMOVED", old.loc, "browser API (web:) removed", "web")
        return
    _check_endpoints(ctx, old, new)
    _check_types(ctx, old, new)
    _check_events(ctx, old, new)
    _check_commands(ctx, old, new)


def _check_endpoints(ctx: DiffContext, old: WebApi, new: WebApi) -> None:
    for key, label in (("http", "HTTP prefix"), ("websocket", "WebSocket endpoint")):
        before, after = getattr(old, key), getattr(new, key)
        if before != after:
            ctx.report(
                "WEB_ENDPOINT_CHANGED",
                new.key_locs.get(key, new.loc),
                f"web {label} changed from {before or '(none)'!r} to {after or '(none)'!r}",
                f"web.{key}",
            )


def _check_types(ctx: DiffContext, old: WebApi, new: WebApi) -> None:
    old_types = {t.name: t for t in old.types}
    new_types = {t.name: t for t in new.types}
    for name, t in new_types.items():
        if name not in old_types:
            ctx.report("WEB_TYPE_ADDED", t.loc, f"web type {name} added", f"web.types.{name}")
    for name, t in old_types.items():
        if name not in new_types:
            ctx.report("WEB_TYPE_DELETED", t.loc, f"web type {name} deleted", f"web.types.{name}")
        else:
            _check_shape(ctx, f"web type {name}", f"web.types.{name}", t.fields, new_types[name].fields,
                         sent_by_gateway=True)


def _check_events(ctx: DiffContext, old: WebApi, new: WebApi) -> None:
    old_events = {e.name: e for e in old.events}
    new_events = {e.name: e for e in new.events}
    for name, e in new_events.items():
        if name not in old_events:
            ctx.report("WEB_EVENT_ADDED", e.loc, f"web event {name} added", f"web.events.{name}")
    for name, o in old_events.items():
        n = new_events.get(name)
        subject = f"web.events.{name}"
        if n is None:
            ctx.report("WEB_EVENT_DELETED", o.loc, f"web event {name} deleted", subject)
            continue
        old_data = ctx.command_map.get(o.data, o.data) if o.data else None
        if old_data != n.data:
            ctx.report(
                "WEB_EVENT_DATA_CHANGED",
                n.key_locs.get("data", n.loc),
                f"web event {name} carries {n.data or 'no command'} instead of {o.data or 'no command'}",
                subject,
            )
        _check_shape(ctx, f"web event {name}", subject, o.fields, n.fields, sent_by_gateway=True)


def _route(c: WebCommand) -> str:
    http = f"{c.method} {c.path}" if c.method else "no HTTP route"
    return f"{http}, {'WebSocket op' if c.ws else 'no WebSocket op'}, body {c.body}"


def _check_commands(ctx: DiffContext, old: WebApi, new: WebApi) -> None:
    old_commands = {c.name: c for c in old.commands}
    new_commands = {c.name: c for c in new.commands}
    for name, c in new_commands.items():
        if name not in old_commands:
            ctx.report("WEB_COMMAND_ADDED", c.loc, f"web command {name} added", f"web.commands.{name}")
    for name, o in old_commands.items():
        n = new_commands.get(name)
        subject = f"web.commands.{name}"
        if n is None:
            ctx.report("WEB_COMMAND_DELETED", o.loc, f"web command {name} deleted", subject)
            continue
        if _route(o) != _route(n):
            ctx.report(
                "WEB_COMMAND_ROUTE_CHANGED",
                n.key_locs.get("http", n.loc),
                f"web command {name}: {_route(o)} -> {_route(n)}",
                subject,
            )
        if o.auth != n.auth:
            ctx.report(
                "WEB_COMMAND_AUTH_CHANGED",
                n.key_locs.get("auth", n.loc),
                f"web command {name} {'now needs' if n.auth else 'no longer needs'} the session token",
                subject,
                category=Category.SEMANTIC,
                severity="high" if not n.auth else "medium",
                direction="tightened" if n.auth else "relaxed",
            )
        _check_shape(ctx, f"web command {name} request", f"{subject}.request", o.request, n.request,
                     sent_by_gateway=False)
        _check_shape(ctx, f"web command {name} reply", f"{subject}.reply", o.reply, n.reply,
                     sent_by_gateway=True)


def _type_text(ctx: DiffContext, f: WebField, *, old: bool) -> str:
    base = ctx.translate_type(f.type) if old else f.type
    return f"{base}[]" if f.list else base


def _check_shape(
    ctx: DiffContext,
    what: str,
    subject: str,
    old_fields: Sequence[WebField],
    new_fields: Sequence[WebField],
    *,
    sent_by_gateway: bool,
) -> None:
    """Field by field. `sent_by_gateway`: the browser reads the shape (events, replies, types); otherwise the
    browser writes it and the gateway reads it (requests)."""
    olds = {f.name: f for f in old_fields}
    news = {f.name: f for f in new_fields}
    for name, f in news.items():
        if name in olds:
            continue
        if not sent_by_gateway and not f.optional:
            ctx.report("WEB_REQUIRED_FIELD_ADDED", f.loc,
                       f"{what}: required field {name} added (old pages do not send it)", f"{subject}.{name}")
        else:
            ctx.report("WEB_FIELD_ADDED", f.loc, f"{what}: field {name} added", f"{subject}.{name}")
    for name, o in olds.items():
        n = news.get(name)
        if n is None:
            if sent_by_gateway and not o.optional:
                ctx.report("WEB_FIELD_DELETED", o.loc,
                           f"{what}: field {name} deleted (old pages read it)", f"{subject}.{name}")
            else:
                ctx.report("WEB_FIELD_DELETED", o.loc, f"{what}: field {name} deleted", f"{subject}.{name}",
                           category=Category.COMPATIBLE if not sent_by_gateway else Category.SEMANTIC,
                           severity="info" if not sent_by_gateway else "low")
            continue
        before, after = _type_text(ctx, o, old=True), _type_text(ctx, n, old=False)
        if before != after:
            ctx.report("WEB_FIELD_TYPE_CHANGED", n.loc,
                       f"{what}: field {name} changed type {before} -> {after}", f"{subject}.{name}")
        if o.optional != n.optional:
            # Absent-able output breaks old readers; a newly required input breaks old writers.
            breaks = n.optional if sent_by_gateway else not n.optional
            ctx.report(
                "WEB_FIELD_OPTIONALITY_CHANGED",
                n.loc,
                f"{what}: field {name} {'may now be absent' if n.optional else 'is now required'}",
                f"{subject}.{name}",
                category=None if breaks else Category.COMPATIBLE,
                severity=None if breaks else "info",
                direction="relaxed" if n.optional else "tightened",
            )
