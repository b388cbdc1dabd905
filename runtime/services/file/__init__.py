"""Runtime services layer (file): online relay and offline store of file transfers (TeamTalk file_server).

Public (tests/unit/test_layering.py): the service, and the msg server's half of file transfer, a component of
the msg service's handlers.
"""

from runtime.services.file.msg_side import FileRequestHandlers
from runtime.services.file.service import FileService

__all__ = ["FileRequestHandlers", "FileService"]
