"""Runtime services layer (msg): client connections, the auth gate, fan-out and delivery (TeamTalk's msg_server)."""

from runtime.services.msg.service import MsgService

__all__ = ["MsgService"]
