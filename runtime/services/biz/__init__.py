"""Runtime services layer (biz): business logic over runtime.storage (TeamTalk's db_proxy logic).

Public (what other services may import, tests/unit/test_layering.py): the service and how the configured
storage is opened. The store envelope msg and the gateway speak with biz is in runtime.services.contracts.
"""

from runtime.services.biz.service import BizService
from runtime.services.biz.storage_open import open_storage

__all__ = ["BizService", "open_storage"]
