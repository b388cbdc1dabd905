"""Runtime services layer (biz): business logic over runtime.storage (TeamTalk's db_proxy logic)."""

from runtime.services.biz.service import BizService

__all__ = ["BizService"]
