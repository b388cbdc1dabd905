"""Runtime plugins layer: loading the handler code of spec plugins enabled by `plugins: [...]` in the config.

A spec plugin (e.g. `spec/teamtalk/plugins/shake.yaml`) adds commands hosted by an existing service; its
handler code is a module `runtime.plugins.<name>` with a `create(service) -> Plugin` function and a
`COMMANDS` tuple naming the commands it hosts. The hosting
service asks `load_plugins` for the plugins the cluster config enables and `handler_namespace` for the
`on_<command>` methods to put in its handler class: a plugin's own handlers for the commands it serves, and a
stub for each command of a plugin that the generated stack knows but the config does not enable (so the
generated base class stays satisfied and such a frame is answered with nothing, as an unknown command is).
Relayed frames are offered to the plugins first (`Plugins.on_relay`).
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from runtime.registry import CommandInfo

log = logging.getLogger("ttgen.plugins")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

PluginHandler = Callable[[Any, Any], Awaitable[Any]]


class Plugin(Protocol):
    """What a plugin module's `create(service)` returns."""

    name: str

    def handlers(self) -> dict[str, PluginHandler]:
        """Command name -> `async handler(ctx, msg)` (a returned message is the command's reply)."""
        ...

    def on_relay(self, name: str, msg: Any, targets: tuple[int, ...] | None) -> bool:
        """A frame a router relayed to this server; True if the plugin consumed it."""
        ...


class PluginError(ValueError):
    """A plugin that is named badly, missing, or does not provide `create`."""


class Plugins:
    """The enabled plugins of one service instance."""

    def __init__(self, plugins: Iterable[Plugin] = ()) -> None:
        self.plugins = list(plugins)
        self._handlers: dict[str, PluginHandler] = {}
        for plugin in self.plugins:
            self._handlers.update(plugin.handlers())

    def __len__(self) -> int:
        return len(self.plugins)

    def handler(self, command: str) -> PluginHandler | None:
        """The plugin handler of a command, if an enabled plugin serves it."""
        return self._handlers.get(command)

    def on_relay(self, name: str, msg: Any, targets: tuple[int, ...] | None) -> bool:
        """Offer a relayed frame to every plugin; True if one consumed it."""
        for plugin in self.plugins:
            try:
                if plugin.on_relay(name, msg, targets):
                    return True
            except Exception:
                log.exception("plugin %s failed on a %s relay", plugin.name, name)
                return True
        return False

    def handler_namespace(self, hosted: Iterable[CommandInfo], existing: type) -> dict[str, Any]:
        """`on_<command>` methods for hosted plugin commands the handler class does not implement itself.

        Only commands some plugin module declares (`COMMANDS`) get one: a base command without a handler
        still makes the generated base class refuse to instantiate.
        """
        ns: dict[str, Any] = {}
        owned = plugin_commands()
        for info in hosted:
            method = "on_" + info.name.lower()
            if info.name in owned and not hasattr(existing, method):
                ns[method] = _delegate(self, info.name)
        return ns


def _delegate(plugins: Plugins, command: str) -> Callable[[Any, Any, Any], Awaitable[Any]]:
    async def handler(self: Any, ctx: Any, msg: Any) -> Any:
        fn = plugins.handler(command)
        if fn is None:
            log.debug("%s: no enabled plugin serves it", command)
            return None
        return await fn(ctx, msg)

    handler.__name__ = "on_" + command.lower()
    handler.__doc__ = f"{command}: served by an enabled plugin (runtime.plugins)."
    return handler


def plugin_commands() -> set[str]:
    """Every command name a plugin module of this package declares in its `COMMANDS`."""
    names: set[str] = set()
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        names.update(getattr(module, "COMMANDS", ()))
    return names


def plugins_for(command_names: Iterable[str]) -> list[str]:
    """The plugin modules of this package whose commands a stack has (all of its `COMMANDS`), by name: what
    a cluster built for exactly that stack can enable (e.g. `ttgen fuzz`'s in-process cluster)."""
    have = set(command_names)
    names = []
    for info in pkgutil.iter_modules(__path__):
        commands = getattr(importlib.import_module(f"{__name__}.{info.name}"), "COMMANDS", ())
        if commands and set(commands) <= have:
            names.append(info.name)
    return sorted(names)


def load_plugins(names: Iterable[str], service: Any) -> Plugins:
    """Import `runtime.plugins.<name>` for each enabled name and create its plugin for the service."""
    out = []
    for name in names:
        if not _NAME.match(name):
            raise PluginError(f"bad plugin name {name!r}")
        try:
            module = importlib.import_module(f"runtime.plugins.{name}")
        except ModuleNotFoundError as exc:
            raise PluginError(f"plugin {name!r} has no handler module runtime.plugins.{name}") from exc
        create = getattr(module, "create", None)
        if not callable(create):
            raise PluginError(f"runtime.plugins.{name} has no create(service) function")
        plugin = create(service)
        if plugin is not None:  # a plugin may decline a service it does not run on
            out.append(plugin)
    return Plugins(out)
