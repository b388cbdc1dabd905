"""Runtime push layer: notifications to mobile devices that are offline when a message is stored for them.

`sinks` holds the interface (`Sink`) and its implementations: a webhook (JSON POST, aiohttp client) and a
local JSON-lines file (tests, development). `dispatcher` queues notifications with bounded memory and retries
failures with backoff, counting everything in metrics. `offline` decides who gets one: the router (which
knows every connection in the cluster) hands it each relayed chat message; users without an online mobile
connection that registered a mobile device token and did not shield pushes get one notification per message,
without the content for burn-after-reading messages. See docs/push.md.
"""

from runtime.push.dispatcher import PushDispatcher
from runtime.push.offline import OfflinePush, push_from_config
from runtime.push.sinks import LocalSink, Notification, PushError, Sink, WebhookSink

__all__ = [
    "LocalSink",
    "Notification",
    "OfflinePush",
    "PushDispatcher",
    "PushError",
    "Sink",
    "WebhookSink",
    "push_from_config",
]
