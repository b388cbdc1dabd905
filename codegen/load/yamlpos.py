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
from codegen.load.yamlhints import yaml_hint
from codegen.model import Loc, make_loc

MAX_FILE_BYTES = 4 * 1024 * 1024
# Cap on YAML nodes with aliases expanded; a real 4 MiB spec file has far fewer.
MAX_NODES = 1_000_000

_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
# A document at most this long cannot hold MAX_NODES nodes (every node but an implicit null takes at least one
# character, and each implicit null needs an indicator character), so without aliases it needs no node count.
_SMALL_TEXT = MAX_NODES // 4


class _Loader(_BaseLoader):  # type: ignore[misc]  # the base is chosen at run time
    """The safe loader, with tag resolution memoized per document (the same few scalars recur).

    The safe loader has no path resolvers, so the per-node descend/ascend hooks have nothing to do.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._resolved: dict[tuple[str, tuple[bool, bool]], str] = {}

    def resolve(self, kind: type[Node], value: Any, implicit: Any) -> str:
        if kind is not ScalarNode:
            tag: str = super().resolve(kind, value, implicit)
            return tag
        key = (value, implicit)
        found = self._resolved.get(key)
        if found is None:
            found = self._resolved[key] = super().resolve(kind, value, implicit)
        return found

    if not getattr(_BaseLoader, "yaml_path_resolvers", None):

        def descend_resolver(self, current_node: Any, current_index: Any) -> None:
            return None

        def ascend_resolver(self) -> None:
            return None


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

    def __init__(
        self,
        kind: str,
        value: Any,
        loc: Loc,
        raw: str = "",
        plain: bool = False,
        keys: dict[str, Loc] | None = None,
        dups: list[tuple[str, Loc]] | None = None,
    ) -> None:
        self.kind = kind
        self.value = value
        self.loc = loc
        self.raw = raw
        self.plain = plain
        self.keys: dict[str, Loc] = {} if keys is None else keys
        self.dups: list[tuple[str, Loc]] = [] if dups is None else dups

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


# Shared by every scalar and list `Y` (only mappings have keys): never mutated.
_NO_KEYS: dict[str, Loc] = {}
_NO_DUPS: list[tuple[str, Loc]] = []


class _Converter:
    def __init__(self, file: str) -> None:
        self.file = file
        self.constructor = SafeConstructor()
        self.table: dict[Any, Any] = self.constructor.yaml_constructors

    def loc(self, node: Node) -> Loc:
        mark = node.start_mark
        return make_loc(self.file, mark.line + 1, mark.column + 1)

    def convert(self, node: Node) -> Y:
        mark = node.start_mark
        loc = make_loc(self.file, mark.line + 1, mark.column + 1)
        if isinstance(node, ScalarNode):
            if node.tag == _STR_TAG:  # the common case, without the constructor's bookkeeping
                value: Any = node.value
            else:
                table = self.table  # None: an unknown tag, whose constructor raises
                value = table.get(node.tag, table[None])(self.constructor, node)
            return Y("scalar", value, loc, node.value, not node.style, _NO_KEYS, _NO_DUPS)
        if isinstance(node, MappingNode):
            out: dict[str, Y] = {}
            result = Y("map", out, loc)
            self._fill_map(node, result, out)
            return result
        assert isinstance(node, SequenceNode)
        convert = self.convert
        return Y("seq", [convert(n) for n in node.value], loc, "", False, _NO_KEYS, _NO_DUPS)

    def _fill_map(self, node: MappingNode, result: Y, out: dict[str, Y]) -> None:
        # `<<` merge keys are flattened first so that anchors can share stage policies.
        if any(key_node.tag == _MERGE_TAG for key_node, _ in node.value):
            self.constructor.flatten_mapping(node)
        keys = result.keys
        convert = self.convert
        file = self.file
        for key_node, value_node in node.value:
            mark = key_node.start_mark
            key_loc = make_loc(file, mark.line + 1, mark.column + 1)
            if not isinstance(key_node, ScalarNode):
                raise _BadKey(key_loc)
            key = key_node.value
            if key in out:
                result.dups.append((key, key_loc))
                continue
            out[key] = convert(value_node)
            keys[key] = key_loc


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
        # An alias is written `*name`; a short document without a `*` cannot reach the limit.
        if (len(text) > _SMALL_TEXT or "*" in text) and _expanded_size(node) > MAX_NODES:
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
        hint = yaml_hint(text, problem, loc.line, loc.col) if mark else ""
        diags.error("TT102", f"YAML syntax error: {problem}", loc, hint=hint)
    except yaml.YAMLError as exc:
        diags.error("TT102", f"YAML error: {exc}", Loc(shown, 1, 1))
    return None
