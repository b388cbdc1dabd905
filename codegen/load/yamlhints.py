"""Codegen load layer: hints for YAML syntax errors caused by tabs and indentation (TT102).

PyYAML reports what its parser expected (`expected <block end>, but found '<block mapping start>'`), which
names the symptom, not the cause. Most such errors in hand-written specs are a tab used for indentation or a
line indented unlike its siblings; `yaml_hint` looks at the text around the error and says which.
"""

from __future__ import annotations

# What the parsers say when a line is indented wrongly (LibYAML's wording, then PyYAML's).
_INDENT_PROBLEMS = (
    "did not find expected key",
    "did not find expected '-' indicator",
    "mapping values are not allowed",
    "expected <block end>",
)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _previous_content_line(lines: list[str], index: int) -> int | None:
    """The index of the nearest line above `index` that holds YAML (not blank, not only a comment)."""
    for i in range(index - 1, -1, -1):
        stripped = lines[i].strip()
        if stripped and not stripped.startswith("#"):
            return i
    return None


def _tab_hint(lines: list[str], index: int) -> str:
    line = lines[index] if index < len(lines) else ""
    leading = line[: len(line) - len(line.lstrip(" \t"))]
    if "\t" in leading:
        return f"line {index + 1} is indented with a tab; YAML indents with spaces only: use spaces instead"
    return "YAML does not allow tabs here; use spaces (a tab inside a value needs quotes)"


def _levels_above(lines: list[str], index: int) -> list[tuple[int, int]]:
    """(indent, line index) of the enclosing blocks' entries, innermost first, as seen from line `index`."""
    levels: list[tuple[int, int]] = []
    limit: int | None = None
    for i in range(index - 1, -1, -1):
        stripped = lines[i].strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = _indent(lines[i])
        if limit is None or indent < limit:
            levels.append((indent, i))
            limit = indent
        if indent == 0:
            break
    return levels


def _spaces(n: int) -> str:
    return f"{n} space{'s' if n != 1 else ''}"


def _indent_hint(lines: list[str], index: int, col: int) -> str:
    line = lines[index]
    first_colon = line.find(":")
    if 0 <= first_colon < col - 1 and line[col - 1 : col] == ":":
        return "a value that contains ': ' must be quoted (e.g. doc: 'a: b')"
    indent = _indent(line)
    prev = _previous_content_line(lines, index)
    if prev is None:
        return ""
    prev_line = lines[prev].split("#", 1)[0].rstrip()
    prev_indent = _indent(prev_line)
    if indent > prev_indent and not prev_line.endswith((":", "-")):
        return (
            f"line {index + 1} is indented deeper ({_spaces(indent)}) than line {prev + 1} ({prev_indent}), "
            f"whose entry already has a value, so YAML reads it as part of that value: indent it "
            f"{_spaces(prev_indent)} to make it a sibling"
        )
    levels = _levels_above(lines, index)
    if indent not in {lvl for lvl, _ in levels}:
        in_use = ", ".join(f"{lvl} (line {i + 1})" for lvl, i in sorted(levels))
        return (
            f"line {index + 1} is indented {_spaces(indent)}, which lines up with no entry above it "
            f"(indents in use: {in_use}): indent it exactly like the entries it belongs with"
        )
    return ""


def yaml_hint(text: str, problem: str, line: int, col: int) -> str:
    """A hint for a YAML syntax error reported at 1-based `line`:`col` (empty if no cause is recognised).

    Works with the messages of both PyYAML parsers (LibYAML's and the pure-Python one).
    """
    lines = text.splitlines()
    index = line - 1
    if index < 0 or index >= len(lines):
        return ""
    current = lines[index]
    leading = current[: len(current) - len(current.lstrip(" \t"))]
    at_mark = current[col - 1 : col] if col >= 1 else ""
    if "\t" in leading or at_mark == "\t" or "tab" in problem:
        return _tab_hint(lines, index)
    if any(p in problem for p in _INDENT_PROBLEMS):
        return _indent_hint(lines, index, col)
    return ""
