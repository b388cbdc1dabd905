"""Runtime services layer (msg): client connections, auth gate, fan-out, delivery (TeamTalk's msg_server)."""

from runtime.services.msg.service import MsgService

__all__ = ["MsgService"]
