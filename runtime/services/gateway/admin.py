"""Runtime services layer (gateway): the admin HTTP API (http_msg_server's `/query/...`), authenticated.

- `POST /query/CreateGroup` `{req_user_id, app_key, group_name, group_type 1|2, group_avatar, user_id_list}`
  -> `{error_code, error_msg, group_id}`;
- `POST /query/ChangeMembers` `{req_user_id, app_key, group_id, modify_type 1 add|2 del, user_id_list}`
  -> `{error_code, error_msg, group_id, cur_user_id_list, chg_user_id_list}`.

TeamTalk's key check was a stub; here `app_key` (or an `X-Api-Key` header) must equal the key in
`<data_dir>/admin.key` (created 0600 on first start), compared in constant time. Error codes keep TeamTalk's
numbering: 0 OK, 1 bad params (400), 2 unknown app_key (401), 4 forbidden ids: unknown users or group (404),
9 server exception (503), 10 create-group failure, 11 change-member failure (409). Nothing is written unless
the request is authenticated and valid; members (and every msg server's member cache) learn of changes through
CID_GROUP_CHANGE_MEMBER_NOTIFY; biz re-checks the stored group version on every group send.
"""

from __future__ import annotations

import hmac
import unicodedata
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from runtime.httpkit import Request, Response, json_response
from runtime.services.protocol import enums_of
from runtime.storage import errors as se
from runtime.storage.models import GroupModify, GroupType

if TYPE_CHECKING:
    from runtime.services.gateway.service import GatewayService

OK, BAD_PARAMS, UNKNOWN_KEY, FORBIDDEN_IDS, SERVER_ERROR, CREATE_FAILED, CHANGE_FAILED = 0, 1, 2, 4, 9, 10, 11
MAX_MEMBERS = 2000
MAX_NAME = 256
MAX_AVATAR = 1024


def _error(code: int, message: str, status: int) -> Response:
    return json_response({"error_code": code, "error_msg": message}, status)


def _choices(enum: type[IntEnum]) -> str:
    """The values of an enum for an error message: "1 (NORMAL), 2 (TMP)"."""
    return ", ".join(f"{int(m)} ({m.name})" for m in enum)


def _uint(doc: dict[str, Any], key: str) -> int:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 0xFFFFFFFF:
        raise ValueError(f"{key} must be a positive 32-bit integer")
    return value


def _ids(doc: dict[str, Any], key: str) -> list[int]:
    value = doc.get(key)
    if not isinstance(value, list) or len(value) > MAX_MEMBERS:
        raise ValueError(f"{key} must be a list of at most {MAX_MEMBERS} user ids")
    return [_uint({key: v}, key) for v in value]


def _text(doc: dict[str, Any], key: str, limit: int, *, required: bool) -> str:
    value = doc.get(key, None if required else "")
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > limit:
        raise ValueError(
            f"{key} must be a{' non-empty' if required else ''} string of at most {limit} characters"
        )
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ValueError(f"{key} must not contain control characters")
    return value


class AdminApi:
    """`/query/CreateGroup` and `/query/ChangeMembers`."""

    def __init__(self, svc: GatewayService) -> None:
        self.svc = svc
        self.m_refused = svc.metrics.counter("gateway_admin_refused_total", "admin requests refused")
        self.m_done = svc.metrics.counter("gateway_admin_done_total", "admin changes made")

    async def handle(self, request: Request) -> Response:
        """Decode, authenticate, validate, then change; every request goes to the admin audit log."""
        response = await self._handle(request)
        (self.m_done if response.status == 200 else self.m_refused).inc()
        doc = response.doc if isinstance(response.doc, dict) else {}
        outcome = "ok" if response.status == 200 else f"refused: {doc.get('error_msg', response.status)}"
        self.svc.admin_users.audit.record(
            f"http:{request.peer.rsplit(':', 1)[0]}",
            request.path[:100],
            str(doc.get("group_id", "-")),
            str(outcome),
        )
        return response

    async def _handle(self, request: Request) -> Response:
        if request.path not in ("/query/CreateGroup", "/query/ChangeMembers"):
            return _error(BAD_PARAMS, "no such interface", 404)
        if request.method != "POST":
            return _error(BAD_PARAMS, "use POST", 405)
        try:
            doc = request.json()
        except ValueError as exc:
            return _error(BAD_PARAMS, str(exc), 400)
        if not isinstance(doc, dict):
            return _error(BAD_PARAMS, "the body must be a JSON object", 400)
        key = request.headers.get("x-api-key") or doc.get("app_key")
        if not isinstance(key, str) or not hmac.compare_digest(key.encode(), self.svc.admin_key.encode()):
            return _error(UNKNOWN_KEY, "unknown app_key", 401)
        if self.svc.storage is None:
            return _error(SERVER_ERROR, "storage is unavailable", 503)
        try:
            if request.path == "/query/CreateGroup":
                return await self.create_group(doc)
            return await self.change_members(doc)
        except ValueError as exc:
            return _error(BAD_PARAMS, str(exc), 400)

    async def create_group(self, doc: dict[str, Any]) -> Response:
        """Create a NORMAL or TMP group as an administrator."""
        creator = _uint(doc, "req_user_id")
        name = _text(doc, "group_name", MAX_NAME, required=True)
        avatar = _text(doc, "group_avatar", MAX_AVATAR, required=False)
        group_type = doc.get("group_type")
        if isinstance(group_type, bool) or group_type not in set(GroupType):
            raise ValueError(f"group_type must be one of {_choices(GroupType)}")
        members = _ids(doc, "user_id_list")
        assert self.svc.storage is not None
        try:
            group = await self.svc.storage.create_group(
                creator, name, GroupType(group_type), members, avatar=avatar, by_admin=True
            )
        except se.NotFound as exc:
            return _error(FORBIDDEN_IDS, f"unknown user: {exc}", 404)
        except se.InvalidArgument as exc:
            return _error(BAD_PARAMS, str(exc), 400)
        except se.StorageError as exc:
            return _error(CREATE_FAILED, f"create group failed: {exc}", 409)
        ids = sorted(m.user_id for m in group.members)
        add = enums_of(self.svc.proto.registry).GroupModifyType.GROUP_MODIFY_TYPE_ADD
        await self._announce(creator, group.id, add, ids, ids)
        return json_response({"error_code": OK, "error_msg": "", "group_id": group.id})

    async def change_members(self, doc: dict[str, Any]) -> Response:
        """Add or remove members as an administrator (no permission rules)."""
        actor = _uint(doc, "req_user_id")
        group_id = _uint(doc, "group_id")
        modify = doc.get("modify_type")
        if isinstance(modify, bool) or modify not in set(GroupModify):
            raise ValueError(f"modify_type must be one of {_choices(GroupModify)}")
        users = _ids(doc, "user_id_list")
        if not users:
            raise ValueError("user_id_list must not be empty")
        assert self.svc.storage is not None
        try:
            change = await self.svc.storage.change_group_members(None, group_id, GroupModify(modify), users)
        except se.NotFound as exc:
            return _error(FORBIDDEN_IDS, f"unknown group or user: {exc}", 404)
        except se.InvalidArgument as exc:
            return _error(BAD_PARAMS, str(exc), 400)
        except se.StorageError as exc:
            return _error(CHANGE_FAILED, f"change members failed: {exc}", 409)
        await self._announce(actor, group_id, modify, sorted(change.members), sorted(change.changed))
        return json_response(
            {
                "error_code": OK,
                "error_msg": "",
                "group_id": group_id,
                "cur_user_id_list": sorted(change.members),
                "chg_user_id_list": sorted(change.changed),
            }
        )

    async def _announce(
        self, actor: int, group_id: int, change_type: int, cur: list[int], chg: list[int]
    ) -> None:
        """Drop cached member lists (gateway, msg servers) and tell current and changed members."""
        svc = self.svc
        svc.group_members.pop(group_id, None)
        note: Any = svc.proto.new(
            "CID_GROUP_CHANGE_MEMBER_NOTIFY",
            user_id=actor,
            change_type=change_type,
            group_id=group_id,
            cur_user_id_list=cur,
            chg_user_id_list=chg,
        )
        svc.notify("CID_GROUP_CHANGE_MEMBER_NOTIFY", note, sorted(set(cur) | set(chg)))
