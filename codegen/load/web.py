"""Codegen load layer: the manifest's `web:` section, the gateway's JSON API for browsers.

Structure is checked here (TT105/106/107/111 through the `Reader`, TT851 for a malformed field type, TT852
for a malformed HTTP route); what the names refer to (types, messages, enums, commands) is the validator's
job (`codegen.checks.web`).
"""

from __future__ import annotations

import re

from codegen.load.reader import Reader
from codegen.load.yamlpos import Y
from codegen.model import Loc, WebApi, WebCommand, WebEvent, WebField, WebType

WEB_KEYS = ("doc", "http", "websocket", "enums", "types", "commands", "events")
TYPE_KEYS = ("doc", "fields")
FIELD_KEYS = ("type", "doc")
COMMAND_KEYS = ("doc", "http", "ws", "auth", "body", "request", "reply")
BODIES = ("json", "multipart")
EVENT_KEYS = ("doc", "fields", "data")
HTTP_METHODS = ("GET", "POST", "PUT", "DELETE")
MAX_WEB_ENTRIES = 256  # per list or mapping of the section
_TYPE = re.compile(r"^(?P<base>[A-Za-z_][A-Za-z0-9_.]*)(?P<list>\[\])?(?P<opt>\?)?$")
_PATH = re.compile(r"^/[A-Za-z0-9_./-]*$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def build_web(r: Reader, y: Y) -> WebApi | None:
    """The `web:` section as a `WebApi` (None if it is not a mapping)."""
    m = r.mapping(y, "web", WEB_KEYS)
    if m is None:
        return None
    locs = {k: v.loc for k, v in m.items()}
    http = _path(r, m.get("http"), "web http") if "http" in m else "/api"
    websocket = _path(r, m.get("websocket"), "web websocket") if "websocket" in m else ""
    enums = []
    for name, loc in r.str_list(m.get("enums"), "web enums")[:MAX_WEB_ENTRIES]:
        if name not in enums:
            enums.append(name)
            locs[f"enums:{name}"] = loc
    types = []
    for name, ty in _entries(r, m.get("types"), "web types", "web type"):
        tm = r.mapping(ty, f"web type '{name}'", TYPE_KEYS, required=("fields",))
        if tm is not None:
            fields = _fields(r, tm.get("fields"), f"web type '{name}'")
            types.append(WebType(name, fields, m["types"].keys[name], r.string(tm.get("doc"), "doc") or ""))
    commands = [
        c for name, cy in _entries(r, m.get("commands"), "web commands", "web command")
        if (c := _command(r, name, cy, m["commands"].keys[name])) is not None
    ]
    events = [
        e for name, ey in _entries(r, m.get("events"), "web events", "web event")
        if (e := _event(r, name, ey, m["events"].keys[name])) is not None
    ]
    return WebApi(
        loc=y.loc,
        doc=r.string(m.get("doc"), "doc") or "",
        http=http or "/api",
        websocket=websocket or "",
        enums=tuple(enums),
        types=tuple(types),
        commands=tuple(commands),
        events=tuple(events),
        key_locs=locs,
    )


def _entries(r: Reader, y: Y | None, what: str, one: str) -> list[tuple[str, Y]]:
    if y is None:
        return []
    items = list(r.entries(y, what, "TT104", one).items())
    if len(items) > MAX_WEB_ENTRIES:
        r.diags.error("TT109", f"{what}: {len(items)} entries (limit {MAX_WEB_ENTRIES})", y.loc)
        return []
    out = []
    for name, item in items:
        if not _NAME.match(name):
            r.diags.error("TT105", f"{what}: '{name}' is not a name (letters, digits, _)", y.keys[name])
            continue
        out.append((name, item))
    return out


def _path(r: Reader, y: Y | None, what: str) -> str | None:
    text = r.string(y, what)
    if text is None or y is None:
        return None
    if not _PATH.match(text):
        r.diags.error("TT852", f"{what}: '{text}' is not an absolute URL path", y.loc)
        return None
    return text


def _fields(r: Reader, y: Y | None, what: str) -> tuple[WebField, ...]:
    out = []
    for name, fy in _entries(r, y, f"{what} fields", "web field"):
        assert y is not None
        doc, ty = "", fy
        if fy.kind == "map":
            fm = r.mapping(fy, f"{what} field '{name}'", FIELD_KEYS, required=("type",))
            if fm is None or "type" not in fm:
                continue
            doc, ty = r.string(fm.get("doc"), "doc") or "", fm["type"]
        text = r.string(ty, f"{what} field '{name}' type")
        if text is None:
            continue
        match = _TYPE.match(text.strip())
        if match is None:
            r.diags.error(
                "TT851",
                f"{what} field '{name}': malformed type '{text}'",
                ty.loc,
                hint="a type name, optionally followed by [] (a list) and ? (may be absent)",
            )
            continue
        out.append(
            WebField(
                name=name,
                type=match["base"],
                loc=ty.loc,
                list=bool(match["list"]),
                optional=bool(match["opt"]),
                doc=doc,
            )
        )
    return tuple(out)


def _command(r: Reader, name: str, y: Y, loc: Loc) -> WebCommand | None:
    what = f"web command '{name}'"
    m = r.mapping(y, what, COMMAND_KEYS)
    if m is None:
        return None
    locs = {k: v.loc for k, v in m.items()}
    method = path = ""
    if "http" in m:
        route = r.string(m["http"], f"{what} http") or ""
        parts = route.split()
        if len(parts) != 2 or parts[0] not in HTTP_METHODS or not _PATH.match(parts[1]):
            r.diags.error(
                "TT852",
                f"{what}: malformed HTTP route '{route}'",
                m["http"].loc,
                hint="METHOD /path, with METHOD one of " + ", ".join(HTTP_METHODS),
            )
        else:
            method, path = parts
    ws = r.boolean(m.get("ws"), f"{what} ws") if "ws" in m else None
    auth = r.boolean(m.get("auth"), f"{what} auth") if "auth" in m else None
    body = r.choice(m.get("body"), f"{what} body", BODIES) if "body" in m else None
    return WebCommand(
        name=name,
        loc=loc,
        doc=r.string(m.get("doc"), "doc") or "",
        method=method,
        path=path,
        ws=ws if ws is not None else True,
        auth=auth if auth is not None else True,
        body=body or "json",
        request=_fields(r, m.get("request"), f"{what} request") if "request" in m else (),
        reply=_fields(r, m.get("reply"), f"{what} reply") if "reply" in m else (),
        key_locs=locs,
    )


def _event(r: Reader, name: str, y: Y, loc: Loc) -> WebEvent | None:
    what = f"web event '{name}'"
    m = r.mapping(y, what, EVENT_KEYS)
    if m is None:
        return None
    return WebEvent(
        name=name,
        loc=loc,
        doc=r.string(m.get("doc"), "doc") or "",
        fields=_fields(r, m.get("fields"), what) if "fields" in m else (),
        data=r.string(m.get("data"), f"{what} data") if "data" in m else None,
        key_locs={k: v.loc for k, v in m.items()},
    )
