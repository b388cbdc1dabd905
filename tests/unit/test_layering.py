"""The dependency rule of ARCHITECTURE.md: runtime never imports codegen or ttgen; codegen never imports
runtime or generated. And inside `runtime.services`, one service never imports another service's private
modules. Checked on the import statements of every module (also those under `if TYPE_CHECKING:` or inside
functions), so a violation fails even if the import is never executed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "runtime": {"codegen", "ttgen"},
    "codegen": {"runtime", "generated", "ttgen"},
    "generated": {"codegen", "ttgen"},
}


def imported_top_levels(path: Path) -> set[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[tuple[str, int]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update((alias.name.split(".")[0], node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.module.split(".")[0], node.lineno))
    return found


def violations(package: str) -> list[str]:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for top, line in imported_top_levels(path):
            if top in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line}: imports {top}")
    return bad


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependency_rule(package: str) -> None:
    assert violations(package) == []


def test_checker_sees_a_violation(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("import os\nfrom codegen.model import Spec\n")
    assert ("codegen", 2) in imported_top_levels(sample)


# -- services: one service does not import another's private modules -----------------------------------------
#
# A *service* is a package or module directly under runtime/services that hosts a cluster role; every other
# module there (base, links, presence, protocol, refusals, ...) is shared by the services and may be imported
# by any of them. What a service offers the others is its package's `__init__` (`runtime.services.msg`, not
# `runtime.services.msg.routing`): its public names are what the `__init__` exports, and everything else
# inside the package is private to it.
SERVICES = frozenset({"biz", "file", "gateway", "login", "msg", "router"})
SERVICES_ROOT = ROOT / "runtime" / "services"


def service_of(module: str) -> str | None:
    """The service a `runtime.services...` module belongs to (None: a shared module, or not a service)."""
    parts = module.split(".")
    if parts[:2] != ["runtime", "services"] or len(parts) < 3:
        return None
    return parts[2] if parts[2] in SERVICES else None


def is_public(module: str) -> bool:
    """Whether other services may import `module`: a shared module, or a service package's `__init__`."""
    parts = module.split(".")
    return service_of(module) is None or len(parts) == 3


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, name: str) -> list[tuple[str, int]]:
    """Every module `path` (module `name`) imports, absolute; `from pkg import sub` counts as `pkg.sub` when
    `sub` is a module of the package (a name defined in its `__init__` counts as the package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                found.append((sub if _is_module(sub) else module, node.lineno))
    return found


def _is_module(module: str) -> bool:
    path = ROOT.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def service_violations(root: Path = SERVICES_ROOT) -> list[str]:
    """`path:line: a imports b` for each import of another service's private module under `root`."""
    bad: set[str] = set()
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root.parents[1])
        mine = service_of(name)
        for module, line in imported_modules(path, name):
            theirs = service_of(module)
            if theirs is not None and theirs != mine and not is_public(module):
                bad.add(f"{path.relative_to(root.parents[1])}:{line}: {name} imports {module}")
    return sorted(bad)


def test_services_import_only_each_others_public_modules() -> None:
    assert service_violations() == []


@pytest.mark.parametrize(
    ("source", "bad"),
    [
        ("from runtime.services.msg.routing import RouterPool\n", True),
        ("import runtime.services.biz.convert\n", True),
        ("from runtime.services.msg import routing\n", True),  # a private module, named from its package
        (
            "if TYPE_CHECKING:\n    from runtime.services.biz.convert import X\n",
            True,
        ),
        (
            "def f():\n    from runtime.services.router import UserTable\n",
            False,
        ),  # a service module's public face
        ("from runtime.services.msg import MsgService\n", False),  # the package's __init__
        ("from runtime.services.links import Proto\n", False),  # shared
        ("from ..msg.common import Fanout\n", True),  # relative, from runtime/services/gateway
        ("from .relays import chat_key\n", False),  # its own private module
    ],
)
def test_the_service_rule_catches_a_planted_violation(tmp_path: Path, source: str, bad: bool) -> None:
    """A module planted in a copy of runtime/services/gateway: the checker flags exactly the bad imports."""
    services = tmp_path / "runtime" / "services"
    (services / "gateway").mkdir(parents=True)
    (services / "gateway" / "planted.py").write_text(source, encoding="utf-8")
    found = service_violations(services)
    assert bool(found) is bad, found
    if bad:
        assert found[0].startswith("runtime/services/gateway/planted.py:")


# -- storage: a layer below the services ---------------------------------------------------------------------
#
# runtime/storage knows nothing of the protocol: no generated code (the spec's values it repeats, such as
# SessionType, are pinned to the spec by tests/unit/storage/test_spec_values.py) and no services. Of the rest
# of runtime it uses only runtime.auth (password hashing for accounts).
STORAGE_ROOT = ROOT / "runtime" / "storage"
STORAGE_MAY_IMPORT = ("runtime.storage", "runtime.auth")


def storage_violations(root: Path = STORAGE_ROOT) -> list[str]:
    bad: set[str] = set()
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root.parents[1])
        for module, line in imported_modules(path, name):
            top = module.split(".")[0]
            inside = any(module == ok or module.startswith(ok + ".") for ok in STORAGE_MAY_IMPORT)
            if top == "generated" or (top == "runtime" and not inside):
                bad.add(f"{path.relative_to(root.parents[1])}:{line}: {name} imports {module}")
    return sorted(bad)


def test_storage_imports_no_generated_code_and_no_services() -> None:
    assert storage_violations() == []


@pytest.mark.parametrize(
    ("source", "bad"),
    [
        ("from generated.teamtalk.registry import Enums\n", True),
        ("if TYPE_CHECKING:\n    from runtime.services.biz import BizService\n", True),
        ("from runtime.storage.models import SessionType\n", False),
        ("from .models import SessionType\n", False),
        ("from runtime.auth import PasswordHasher\n", False),
    ],
)
def test_the_storage_rule_catches_a_planted_violation(tmp_path: Path, source: str, bad: bool) -> None:
    storage = tmp_path / "runtime" / "storage"
    storage.mkdir(parents=True)
    (storage / "planted.py").write_text(source, encoding="utf-8")
    assert bool(storage_violations(storage)) is bad
