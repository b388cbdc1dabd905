"""Runtime services layer (gateway): the JSON API's error codes (docs/web-api.md) and `ApiError`.

Below 20 the API's own: 0 OK, 1 bad request, 2 not logged in, and, numbered as the spec's login `ResultType`
(IM.BaseDefine) numbers the same refusals, 3 service unavailable (`REFUSE_REASON_NO_DB_SERVER`) and 6 login
refused (`REFUSE_REASON_DB_VALIDATE_FAILED`). From 20 on the services' `ResultCode`
(runtime.services.contracts). The outcomes of recall and edit (the spec's `RecallResult`, `EditResult`) map to
these by name (`refusal_codes`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime.services.contracts import ResultCode

if TYPE_CHECKING:
    from generated.teamtalk.registry import Enums

OK, BAD_REQUEST, NOT_LOGGED_IN = int(ResultCode.OK), 1, 2
UNAVAILABLE = int(ResultCode.NO_DB_SERVER)  # ResultCode keeps the spec's ResultType numbering below 8
LOGIN_REFUSED = int(ResultCode.DB_VALIDATE_FAILED)
NOT_FOUND = int(ResultCode.NOT_FOUND)
ACCESS_DENIED = int(ResultCode.ACCESS_DENIED)
TOO_LARGE = int(ResultCode.VALUE_TOO_LARGE)
RATE_LIMITED = int(ResultCode.RATE_LIMITED)
WINDOW_EXPIRED = int(ResultCode.RECALL_WINDOW_EXPIRED)
INVALID = int(ResultCode.INVALID_ARGUMENT)
INTERNAL = int(ResultCode.INTERNAL)

# HTTP status of each code (anything else: 400).
STATUS = {NOT_LOGGED_IN: 401, UNAVAILABLE: 503, LOGIN_REFUSED: 401, NOT_FOUND: 404, ACCESS_DENIED: 403,
          TOO_LARGE: 413, RATE_LIMITED: 429, WINDOW_EXPIRED: 403, INTERNAL: 500}  # fmt: skip


class ApiError(Exception):
    """An error answer: the API turns it into `{error_code, error_msg}` with the code's HTTP status."""

    def __init__(self, code: int, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status if status is not None else STATUS.get(code, 400)


def unavailable(what: str = "biz") -> ApiError:
    """Error 3: a service the request needs did not answer."""
    return ApiError(UNAVAILABLE, f"{what} did not answer")


def not_member() -> ApiError:
    """Error 22: the user is not in that group (or there is no such group: the same answer)."""
    return ApiError(ACCESS_DENIED, "not a member of that group (or no such group)")


def refusal_codes(enums: type[Enums]) -> dict[str, dict[int, tuple[int, str]]]:
    """(error code, message) of each refusal of recall and edit, keyed by the spec's result values."""
    recall, edit = enums.RecallResult, enums.EditResult
    return {
        "recall": {
            int(recall.RECALL_NOT_FOUND): (NOT_FOUND, "no such message"),
            int(recall.RECALL_NOT_SENDER): (ACCESS_DENIED, "only the sender may recall"),
            int(recall.RECALL_TIME_LIMIT): (WINDOW_EXPIRED, "recall window expired"),
        },
        "edit": {
            int(edit.EDIT_NOT_FOUND): (NOT_FOUND, "no such message (or it was recalled or burned)"),
            int(edit.EDIT_NOT_SENDER): (ACCESS_DENIED, "only the sender may edit"),
            int(edit.EDIT_TIME_LIMIT): (WINDOW_EXPIRED, "edit window expired"),
            int(edit.EDIT_NOT_TEXT): (INVALID, "only a text message may be edited, to non-empty text"),
        },
    }
