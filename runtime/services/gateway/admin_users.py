"""Runtime services layer (gateway): the admin HTTP API for people, a thin layer over runtime.admin.

Every request carries the admin key in an `X-Api-Key` header (checked, in constant time, before the body is
read; a wrong or missing key is answered 401 and audited). Bodies are JSON objects except the import's CSV.

- `POST /admin/users/disable` `{"user": NAME}` (or `{"user_id": ID}`): status LEFT, every session kicked
  at once;
- `POST /admin/users/enable` `{"user": NAME}`;
- `POST /admin/users/delete` `{"user": NAME}`: status LEFT, password void, device tokens dropped, kicked;
- `POST /admin/users/passwd` `{"user": NAME, "password": TEXT}`;
- `POST /admin/users/kick` `{"user": NAME}`: end every session (`ttgen admin` asks this after its own change);
- `POST /admin/users/import[?partial=1]` with a CSV body (header `name,password[,nick,department,email]`):
  one transaction; `{"created": N, "errors": [{"line", "name", "message"}]}`, 200 when written, 422 when
  refused (nothing written);
- `GET /admin/audit[?limit=N]`: the last N (default 100, at most 1000) audit records.

Answers are `{"error_code": 0, "error_msg": "", ...}` like `/query/`; refusals: 1 bad request (400),
2 bad key (401), 4 unknown user (404), 5 conflict (409: e.g. enabling a deleted user), 9 storage
unavailable (503). NAME is a login name, `#ID`, or an id no login name matches.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from aiohttp import web

from runtime.admin import AdminError, AuditLog, UserAdmin, audit_path, parse_users_csv
from runtime.auth import PasswordHasher, PolicyError, cluster_hash_policy
from runtime.httpkit import Request, Response, json_response, serve_simple
from runtime.services.protocol import enums_of

if TYPE_CHECKING:
    from runtime.services.gateway.service import GatewayService

OK, BAD_REQUEST, BAD_KEY, NOT_FOUND, CONFLICT, UNAVAILABLE = 0, 1, 2, 4, 5, 9
KINDS = {"not_found": (NOT_FOUND, 404), "conflict": (CONFLICT, 409), "bad_request": (BAD_REQUEST, 400)}
VERBS = ("disable", "enable", "delete", "passwd", "kick")
MAX_ADMIN_BODY = 8 * 1024 * 1024  # an import of about 100,000 short rows


def _error(code: int, message: str, status: int) -> Response:
    return json_response({"error_code": code, "error_msg": message}, status)


class AdminUsersApi:
    """`/admin/...` on the gateway."""

    def __init__(self, svc: GatewayService) -> None:
        self.svc = svc
        ctx = svc.ctx
        self.audit = AuditLog(audit_path(ctx.cluster_config, ctx.data_dir))
        try:
            self.hasher: PasswordHasher | None = PasswordHasher(
                policy=cluster_hash_policy(ctx.cluster_config)
            )
        except PolicyError:
            self.hasher = None  # biz refuses to start with such a policy; passwd and import answer 503 here
        max_body = int(ctx.config.get("admin_max_body_bytes", MAX_ADMIN_BODY))
        self._inner = serve_simple(self._handle, max_body=max_body, name="gateway-admin")
        self.m_done = svc.metrics.counter("gateway_admin_users_done_total", "admin user actions done")
        self.m_refused = svc.metrics.counter(
            "gateway_admin_users_refused_total", "admin user actions refused"
        )

    def add_routes(self, app: web.Application) -> None:
        """Route `/admin/...` here (before the gateway's catch-all)."""
        app.router.add_route("*", "/admin/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Rate limit and key check before the body is read; then the verb."""
        peer = request.remote or "?"
        if not self.svc.rate_ok(peer):
            from runtime.services.gateway.service import rate_limited

            return rate_limited().to_aiohttp()
        key = request.headers.get("X-Api-Key", "")
        if not hmac.compare_digest(key.encode(), self.svc.admin_key.encode()):
            self.m_refused.inc()
            self.audit.record(f"http:{peer}", request.path[:100], "-", "refused: bad or missing X-Api-Key")
            rsp = _error(BAD_KEY, "unknown or missing X-Api-Key", 401)
            rsp.close = True
            return rsp.to_aiohttp()
        return await self._inner(request)

    async def _handle(self, request: Request) -> Response:
        response = await self._route(request)
        (self.m_done if response.status == 200 else self.m_refused).inc()
        return response

    async def _route(self, request: Request) -> Response:
        if request.path == "/admin/audit":
            if request.method != "GET":
                return _error(BAD_REQUEST, "use GET", 405)
            limit = request.query.get("limit", "100")
            if not limit.isdigit() or not 1 <= int(limit) <= 1000:
                return _error(BAD_REQUEST, "limit must be 1..1000", 400)
            return json_response({"error_code": OK, "error_msg": "", "records": self.audit.read(int(limit))})
        verb = request.path.removeprefix("/admin/users/")
        if not request.path.startswith("/admin/users/") or verb not in (*VERBS, "import"):
            return _error(BAD_REQUEST, "no such interface", 404)
        if request.method != "POST":
            return _error(BAD_REQUEST, "use POST", 405)
        storage = self.svc.storage
        if storage is None:
            return _error(UNAVAILABLE, "storage is unavailable", 503)
        admin = UserAdmin(
            storage, self.audit, f"http:{request.peer.rsplit(':', 1)[0]}", hasher=self.hasher, kick=self.kick
        )
        try:
            if verb == "import":
                return await self._import(admin, request)
            return await self._verb(admin, verb, request)
        except AdminError as exc:
            code, status = KINDS.get(exc.kind, (BAD_REQUEST, 400))
            if "no password hasher" in str(exc):
                code, status = UNAVAILABLE, 503
            return _error(code, str(exc), status)

    async def _verb(self, admin: UserAdmin, verb: str, request: Request) -> Response:
        doc: Any = request.json()
        user_id = doc.get("user_id") if isinstance(doc, dict) else None
        if isinstance(user_id, int) and not isinstance(user_id, bool) and 0 < user_id <= 0xFFFFFFFF:
            name = f"#{user_id}"
        elif isinstance(doc, dict) and isinstance(doc.get("user"), str) and doc["user"].strip():
            name = doc["user"].strip()[:256]
        else:
            return _error(BAD_REQUEST, 'the body must be {"user": NAME, ...} or {"user_id": ID, ...}', 400)
        if verb == "passwd":
            password = doc.get("password")
            if not isinstance(password, str):
                return _error(BAD_REQUEST, '"password" must be a string', 400)
            user = await admin.passwd(name, password)
        else:
            user = await getattr(admin, verb)(name)
        return json_response(
            {
                "error_code": OK,
                "error_msg": "",
                "user_id": user.id,
                "user": user.login_name,
                "status": user.status,
            }
        )

    async def _import(self, admin: UserAdmin, request: Request) -> Response:
        try:
            text = request.body.decode("utf-8")
        except UnicodeDecodeError:
            return _error(BAD_REQUEST, "the CSV must be UTF-8", 400)
        rows, errors = parse_users_csv(text)
        report = await admin.import_users(rows, errors, partial=request.query.get("partial") == "1")
        doc = {
            "error_code": OK if report.created else BAD_REQUEST,
            "error_msg": "" if report.created else "nothing imported",
            "rows": report.rows,
            "created": len(report.created),
            "errors": [{"line": e.line, "name": e.name, "message": e.message} for e in report.errors[:1000]],
        }
        return json_response(doc, 200 if report.created else 422)

    async def kick(self, user_ids: list[int]) -> None:
        """End every session of the users: this gateway's at once, the msg servers' (and other gateways')
        through the routers."""
        svc = self.svc
        enums = enums_of(svc.ctx.registry)
        kicks = enums.KickReasonType
        for uid in user_ids:
            for session in list(svc.sessions.of(uid)):
                svc.kick(session, kicks.KICK_REASON_DUPLICATE_USER)
            note = svc.proto.new(
                "CID_OTHER_SERVER_KICK_USER",
                user_id=uid,
                # not looked at: SERVER_KICK_ACCOUNT ends the sessions of every client class
                client_type=enums.ClientType.CLIENT_TYPE_WINDOWS,
                reason=enums.ServerKickReason.SERVER_KICK_ACCOUNT,
            )
            svc.routers.relay(svc.proto.cid("CID_OTHER_SERVER_KICK_USER"), note.SerializeToString(), [uid])
