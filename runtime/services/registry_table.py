"""Runtime services layer: the table from cluster service name to the class that implements it.

The supervisor creates services from this table (or from a per-service `class:` key of the cluster config), so
a new service plugs in with one line. A service whose module is not present yet is skipped with a warning
instead of breaking the cluster: the table may name services that later work adds.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from runtime.services.base import Service

# name -> "module:Class". Order is the start order (peers a service links to come first); stop is the reverse.
SERVICE_TABLE: dict[str, str] = {
    "storage": "runtime.services.blobs:BlobService",
    "biz": "runtime.services.biz:BizService",
    "router": "runtime.services.router:RouterService",
    "login": "runtime.services.login:LoginService",
    "file": "runtime.services.file:FileService",
    "msg": "runtime.services.msg:MsgService",
    "gateway": "runtime.services.gateway:GatewayService",
}


class ServiceUnavailable(LookupError):
    """The module of a service class does not exist (yet): the supervisor skips that service."""


class BadServiceClass(ValueError):
    """A `module:Class` reference that is malformed, or names something that is not a Service subclass."""


@dataclass(frozen=True)
class ServiceRef:
    """A parsed `module:Class` reference."""

    module: str
    attr: str

    @classmethod
    def parse(cls, text: str) -> ServiceRef:
        """Parse `package.module:ClassName`; BadServiceClass if the shape is wrong."""
        module, sep, attr = text.partition(":")
        if (
            not sep
            or not module
            or not attr
            or not all(p.isidentifier() for p in module.split("."))
            or not attr.isidentifier()
        ):
            raise BadServiceClass(f"{text!r} is not a 'package.module:ClassName' reference")
        return cls(module, attr)

    def __str__(self) -> str:
        return f"{self.module}:{self.attr}"


def start_rank(name: str) -> int:
    """Position of a service in start order; services not in the table start last, in name order."""
    names = list(SERVICE_TABLE)
    return names.index(name) if name in names else len(names)


def load_service_class(reference: str) -> type[Service]:
    """Import the class a `module:Class` reference names.

    Raises ServiceUnavailable when the module itself is missing (a service not written yet) and
    BadServiceClass when the reference is malformed or the attribute is not a Service subclass. An ImportError
    raised *inside* an existing module is a bug in that module and propagates.
    """
    ref = ServiceRef.parse(reference)
    try:
        module = importlib.import_module(ref.module)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if ref.module == missing or ref.module.startswith(missing + "."):
            raise ServiceUnavailable(
                f"{ref} is not available (module {missing!r} does not exist yet)"
            ) from None
        raise
    cls = getattr(module, ref.attr, None)
    if cls is None:
        raise ServiceUnavailable(f"module {ref.module!r} has no attribute {ref.attr!r}")
    if not isinstance(cls, type) or not issubclass(cls, Service):
        raise BadServiceClass(f"{ref} is not a runtime.services.base.Service subclass")
    return cls
