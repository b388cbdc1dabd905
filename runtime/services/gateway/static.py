"""Runtime services layer (gateway): the chat page's static files (docs/web-api.md, "Static files").

`GET /` is `<web_root>/index.html`, `GET /static/<name>` a file under `web_root` (default
`runtime/web/static/`), `GET /gen/<name>` a file under `web_gen_root` (default `generated/<spec>/web/`, the
generated browser client). Names are plain relative paths of known file types; anything else is 404. Every
answer carries a strict Content-Security-Policy (scripts, styles and connections from the page's own origin
only), `nosniff` and `no-referrer`.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from runtime.httpkit import peer_of

if TYPE_CHECKING:
    from runtime.services.gateway.service import GatewayService

CSP = (
    "default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
TYPES = {
    "html": "text/html",
    "css": "text/css",
    "js": "text/javascript",
    "mjs": "text/javascript",
    "ts": "text/plain",
    "map": "application/json",
    "json": "application/json",
    "svg": "image/svg+xml",
    "png": "image/png",
    "ico": "image/x-icon",
    "woff2": "font/woff2",
    "txt": "text/plain",
}
TEXT = ("html", "css", "js", "mjs", "ts", "map", "json", "svg", "txt")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}(?:/[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}){0,7}$")
MAX_STATIC = 8 * 1024 * 1024
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def default_roots(spec_name: str) -> tuple[Path, Path]:
    """`runtime/web/static` and `generated/<spec>/web` of this checkout."""
    runtime_dir = Path(__file__).resolve().parents[2]
    return runtime_dir / "web" / "static", runtime_dir.parent / "generated" / spec_name / "web"


class StaticFiles:
    """Serves the page and the generated client."""

    def __init__(self, svc: GatewayService, web_root: Any, gen_root: Any) -> None:
        self.svc = svc
        static, gen = default_roots(svc.ctx.registry.spec_name or "teamtalk")
        self.root = Path(str(web_root)) if web_root else static
        self.gen_root = Path(str(gen_root)) if gen_root else gen

    def add_routes(self, app: web.Application) -> None:
        """`/`, `/static/...` and `/gen/...` (GET and HEAD)."""
        app.router.add_get("/", self.index)
        app.router.add_get("/static/{name:.+}", self.static)
        app.router.add_get("/gen/{name:.+}", self.generated)

    async def index(self, request: web.Request) -> web.StreamResponse:
        """The page."""
        return await self._serve(request, self.root, "index.html")

    async def static(self, request: web.Request) -> web.StreamResponse:
        """A file of the page."""
        return await self._serve(request, self.root, request.match_info["name"])

    async def generated(self, request: web.Request) -> web.StreamResponse:
        """A file of the generated client."""
        return await self._serve(request, self.gen_root, request.match_info["name"])

    async def _serve(self, request: web.Request, root: Path, name: str) -> web.StreamResponse:
        from runtime.services.gateway.service import rate_limited

        if not self.svc.rate_ok(peer_of(request)):
            return rate_limited().to_aiohttp()
        ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
        if _NAME.match(name) is None or ".." in name or ext not in TYPES:
            return _not_found()
        base = root.resolve()
        path = (base / name).resolve()
        if base not in path.parents:
            return _not_found()
        try:
            data = await asyncio.to_thread(_read, path)
        except OSError:
            return _not_found()
        charset = "utf-8" if ext in TEXT else None
        return web.Response(body=data, content_type=TYPES[ext], charset=charset, headers=HEADERS)


def _read(path: Path) -> bytes:
    if not path.is_file() or path.stat().st_size > MAX_STATIC:
        raise FileNotFoundError(path)
    return path.read_bytes()


def _not_found() -> web.Response:
    return web.Response(status=404, text="not found\n", headers=HEADERS)
