"""Runtime services layer (biz): business logic over runtime.storage (TeamTalk's db_proxy logic).

Public (what other services may import, tests/unit/test_layering.py): the service, the store envelope a
sender of IMMsgData speaks with biz (request tokens, resend flag and delays, the reply envelope) and how the
configured storage is opened.
"""

from runtime.services.biz.convert import (
    STORE_RETRY_DELAYS,
    StoreTokens,
    pack_store_request,
    pack_version,
    resend_request,
    unpack_store_reply,
)
from runtime.services.biz.service import BizService
from runtime.services.biz.storage_open import open_storage

__all__ = [
    "STORE_RETRY_DELAYS",
    "BizService",
    "StoreTokens",
    "open_storage",
    "pack_store_request",
    "pack_version",
    "resend_request",
    "unpack_store_reply",
]
