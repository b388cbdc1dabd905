"""Codegen load layer: YAML parsing that keeps 1-based line/column positions on every node.

PyYAML's compose API gives nodes with start marks; we convert them into `Y` values (mapping, sequence or
scalar) that carry a `Loc`. Duplicate mapping keys are kept aside (first one wins) so the builder can report
them with a code that names what was duplicated (a field, a message, ...).
"""

from __future__ import annotations

import os
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from codegen.diagnostics import Diagnostics
from codegen.model import Loc

MAX_FILE_BYTES = 4 * 1024 * 1024
# Cap on YAML nodes with aliases expanded; a real 4 MiB spec file has far fewer.
MAX_NODES = 1_000_000

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR_TAG = "tag:yaml.org,2002:str"


def display_path(path: str) -> str:
    """A path as shown in diagnostics: relative to the current directory when it is below it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return path
    return path if rel.startswith("..") else rel


class Y:
    """A located YAML value. `kind` is 'map', 'seq' or 'scalar'.

    For maps, `value` is `dict[str, Y]`, `keys` gives each key's location and `dups` the repeated keys.
    For scalars, `value` is the constructed Python value and `raw` the source text (`doc: yes` stays 'yes').
    """

    __slots__ = ("dups", "keys", "kind", "loc", "plain", "raw", "value")

    def __init__(self, kind: str, value: Any, loc: Loc, raw: str = "", plain: bool = False) -> None:
        self.kind = kind
        self.value = value
        self.loc = loc
        self.raw = raw
        self.plain = plain
        self.keys: dict[str, Loc] = {}
        self.dups: list[tuple[str, Loc]] = []

    def type_name(self) -> str:
        """The YAML kind as a user reads it: 'a mapping', 'a list', 'a string', 'an integer', ..."""
        if self.kind == "map":
            return "a mapping"
        if self.kind == "seq":
            return "a list"
        v = self.value
        if v is None:
            return "null"
        if isinstance(v, bool):
            return "a boolean"
        if isinstance(v, int):
            return "an integer"
        if isinstance(v, float):
            return "a number"
        if isinstance(v, str):
            return "a string"
        return f"a {type(v).__name__}"


class _Converter:
    def __init__(self, file: str) -> None:
        self.file = file
        self.constructor = SafeConstructor()

    def loc(self, node: Node) -> Loc:
        mark = node.start_mark
        return Loc(self.file, mark.line + 1, mark.column + 1)

    def convert(self, node: Node) -> Y:
        if isinstance(node, MappingNode):
            out: dict[str, Y] = {}
            result = Y("map", out, self.loc(node))
            self._fill_map(node, result, out)
            return result
        if isinstance(node, SequenceNode):
            return Y("seq", [self.convert(n) for n in node.value], self.loc(node))
        assert isinstance(node, ScalarNode)
        if node.tag == _STR_TAG:  # the common case, without the constructor's bookkeeping
            value: Any = node.value
        else:
            table: dict[Any, Any] = self.constructor.yaml_constructors
            value = table.get(node.tag, table[None])(self.constructor, node)  # None: unknown tag, an error
        return Y("scalar", value, self.loc(node), raw=node.value, plain=not node.style)

    def _fill_map(self, node: MappingNode, result: Y, out: dict[str, Y]) -> None:
        # `<<` merge keys are flattened first so that anchors can share stage policies.
        self.constructor.flatten_mapping(node)
        for key_node, value_node in node.value:
            key_loc = self.loc(key_node)
            if not isinstance(key_node, ScalarNode):
                raise _BadKey(key_loc)
            key = key_node.value
            if key in out:
                result.dups.append((key, key_loc))
                continue
            out[key] = self.convert(value_node)
            result.keys[key] = key_loc


def _expanded_size(root: Node) -> int:
    """Node count with every alias expanded, computed without expanding (memoized per shared node)."""
    memo: dict[int, int] = {}

    def size(node: Node) -> int:
        key = id(node)
        if key in memo:
            return memo[key]
        memo[key] = 1  # a recursive alias counts once instead of looping
        if isinstance(node, MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, SequenceNode):
            total = 1 + sum(size(n) for n in node.value)
        else:
            total = 1
        memo[key] = total
        return total

    return size(root)


class _BadKey(Exception):
    def __init__(self, loc: Loc) -> None:
        self.loc = loc


def read_yaml(path: str, diags: Diagnostics, ref: Loc) -> Y | None:
    """Read and compose one YAML file; on failure report TT101/TT102/TT103/TT112 and return None."""
    shown = display_path(path)
    try:
        size = os.path.getsize(path)
    except OSError:
        diags.error("TT101", f"file not found: {shown}", ref)
        return None
    if os.path.isdir(path):
        diags.error("TT101", f"expected a YAML file, got a directory: {shown}", ref)
        return None
    if size > MAX_FILE_BYTES:
        diags.error("TT103", f"file too large: {shown} is {size} bytes (limit {MAX_FILE_BYTES})", ref)
        return None
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        diags.error("TT102", f"file is not valid UTF-8 (byte {exc.start})", Loc(shown, 1, 1))
        return None
    except OSError as exc:
        diags.error("TT101", f"cannot read {shown}: {exc.strerror}", ref)
        return None
    try:
        node = yaml.compose(text, Loader=_Loader)
        if node is None:
            diags.error("TT112", f"file is empty: {shown}", Loc(shown, 1, 1))
            return None
        # Checked before converting: aliases can make a small file expand exponentially ("billion laughs").
        if _expanded_size(node) > MAX_NODES:
            limit = f"more than {MAX_NODES} YAML nodes once aliases are expanded"
            diags.error("TT103", f"document too large: {limit}", Loc(shown, 1, 1))
            return None
        return _Converter(shown).convert(node)
    except RecursionError:
        diags.error("TT103", "document nested too deeply", Loc(shown, 1, 1))
    except _BadKey as exc:
        diags.error("TT105", "mapping keys must be plain scalars", exc.loc)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Loc(shown, mark.line + 1, mark.column + 1) if mark else Loc(shown, 1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        diags.error("TT102", f"YAML syntax error: {problem}", loc)
    except yaml.YAMLError as exc:
        diags.error("TT102", f"YAML error: {exc}", Loc(shown, 1, 1))
    return None
