"""Runtime services layer (msg): client connections, auth gate, fan-out, delivery (TeamTalk's msg_server).

Public (tests/unit/test_layering.py): the service, and the collaborators its handler components are given
(local sessions, fan-out, the router pool, which the gateway also uses).
"""

from runtime.services.msg.common import Fanout, LocalSessions
from runtime.services.msg.routing import RouterPool
from runtime.services.msg.service import MsgService

__all__ = ["Fanout", "LocalSessions", "MsgService", "RouterPool"]
