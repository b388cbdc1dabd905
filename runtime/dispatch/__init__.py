"""Runtime dispatch layer: command id -> service handler, with the input/unpack/pack stages around each call.

A service object has `__mapping__: dict[int, str]` (command id -> method name) and methods
`async def on_x(self, ctx: Context, msg) -> Message | None` (or a plain `def` for a hot command that never
suspends); a returned message is sent as the command's `reply` with the request's seq. Handlers that finish
without suspending run inline, without an asyncio Task.

The package's modules, one concern each:

- `routes`: `Route`, what the hot path needs for one command, computed once; who receives extension commands;
- `context`: `Context`, what a handler sees of its request;
- `reply_cache`: the dedup window's entries and keys, and remembering/forgetting a reply in it;
- `stepping`: running a handler coroutine inline up to its first suspension, and resuming it in a task;
- `replies`: packing and sending replies (the fast paths that skip the pack stage where it is a no-op);
- `dispatcher`: `Dispatcher`, which routes the frames of every connection through the above.

Every module logs to the `runtime.dispatch` logger.
"""

from runtime.dispatch.context import Context
from runtime.dispatch.dispatcher import Dispatcher
from runtime.dispatch.routes import EXT_OPT_IN, EXTENSION_SERVICE, Handler, Route, extension_capable

__all__ = [
    "EXTENSION_SERVICE",
    "EXT_OPT_IN",
    "Context",
    "Dispatcher",
    "Handler",
    "Route",
    "extension_capable",
]
