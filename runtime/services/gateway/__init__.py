"""Runtime services layer (gateway): HTTP long-poll messaging and the admin HTTP API (http_msg_server)."""

from runtime.services.gateway.service import GatewayService

__all__ = ["GatewayService"]
