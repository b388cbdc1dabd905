"""Runtime services layer (file): online relay and offline store of file transfers (TeamTalk file_server)."""

from runtime.services.file.service import FileService

__all__ = ["FileService"]
