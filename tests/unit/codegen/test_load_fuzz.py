"""Robustness of load + validate: a valid spec with one value anywhere replaced by junk of another shape must
end in diagnostics (or load cleanly), never in any exception other than `SpecError`."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st

from codegen.api import check_spec
from codegen.diagnostics import SpecError

from .test_load import MINI, fixed_base

FILES = {**MINI, "base.yaml": fixed_base()}
DOCS = {name: yaml.safe_load(text) for name, text in FILES.items()}

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(["map<string, uint32>", "map<", "Mini.Base.User", "5s", "20/s", "CID_SEND_REQ", "1-max"]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=6), st.integers(), max_size=3),
)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key/index path into a YAML document."""
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += paths(value, (*prefix, i))
    return out


ALL_PATHS = [(name, path) for name, doc in DOCS.items() for path in paths(doc) if path]


def replaced(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, dict):
        return {k: (replaced(v, rest, value) if k == head else v) for k, v in doc.items()}
    return [replaced(v, rest, value) if i == head else v for i, v in enumerate(doc)]


@given(target=st.sampled_from(ALL_PATHS), value=junk)
def test_junk_anywhere_gives_diagnostics_not_crashes(target: tuple[str, tuple[Any, ...]], value: Any) -> None:
    name, path = target
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for file, doc in DOCS.items():
            text = yaml.safe_dump(replaced(doc, path, value) if file == name else doc, sort_keys=False)
            (root / file).parent.mkdir(parents=True, exist_ok=True)
            (root / file).write_text(text, encoding="utf-8")
        try:
            check_spec(root)
        except SpecError as exc:
            assert exc.diagnostics, "a SpecError always carries its diagnostics"
            assert all(d.loc.file for d in exc.diagnostics)
