"""Codegen load layer: typed, located access to YAML values, reporting TT1xx structure problems as it goes.

Every accessor returns None (or an empty value) after reporting, so the builder continues and collects all
problems of a file in one run.
"""

from __future__ import annotations

from collections.abc import Iterable

from codegen.diagnostics import Diagnostics, did_you_mean
from codegen.load.yamlpos import Y
from codegen.model import Loc


class Reader:
    """Typed getters over `Y` values that report wrong types, unknown keys and missing keys."""

    def __init__(self, diags: Diagnostics) -> None:
        self.diags = diags

    def expect(self, y: Y, kind: str, what: str) -> bool:
        if y.kind == kind:
            return True
        wanted = {"map": "a mapping", "seq": "a list", "scalar": "a scalar"}[kind]
        self.diags.error("TT105", f"{what}: expected {wanted}, got {y.type_name()}", y.loc)
        return False

    def mapping(
        self,
        y: Y,
        what: str,
        allowed: Iterable[str],
        required: Iterable[str] = (),
    ) -> dict[str, Y] | None:
        """A mapping with a fixed key set: reports TT105 (not a mapping), TT104, TT106, TT107."""
        if not self.expect(y, "map", what):
            return None
        self.report_dups(y, "TT104", "key")
        allowed_set = set(allowed)
        items: dict[str, Y] = y.value
        for key in items:
            if key not in allowed_set:
                hint = did_you_mean(key, allowed_set)
                self.diags.error("TT106", f"unknown key '{key}' in {what}{hint}", y.keys[key])
        for key in required:
            if key not in items:
                self.diags.error("TT107", f"{what}: missing required key '{key}'", y.loc)
        return {k: v for k, v in items.items() if k in allowed_set}

    def entries(self, y: Y, what: str, dup_code: str, dup_what: str) -> dict[str, Y]:
        """A mapping of user-chosen names (messages, fields, ...); repeats are reported with `dup_code`."""
        if not self.expect(y, "map", what):
            return {}
        self.report_dups(y, dup_code, dup_what)
        return dict(y.value)

    def report_dups(self, y: Y, code: str, what: str) -> None:
        for key, loc in y.dups:
            first = y.keys.get(key)
            where = f" (first declared at line {first.line})" if first else ""
            self.diags.error(code, f"duplicate {what} '{key}'{where}", loc)

    def string(self, y: Y | None, what: str) -> str | None:
        """A scalar as text; for plain scalars the source text, so `doc: yes` is 'yes', not True."""
        if y is None:
            return None
        if y.kind != "scalar":
            self.diags.error("TT105", f"{what}: expected a string, got {y.type_name()}", y.loc)
            return None
        if y.value is None:
            self.diags.error("TT105", f"{what}: expected a string, got null", y.loc)
            return None
        return str(y.value) if not y.plain or isinstance(y.value, str) else y.raw

    def integer(self, y: Y | None, what: str) -> int | None:
        if y is None:
            return None
        if y.kind != "scalar" or isinstance(y.value, bool) or not isinstance(y.value, int):
            self.diags.error("TT105", f"{what}: expected an integer, got {y.type_name()}", y.loc)
            return None
        return y.value

    def number(self, y: Y | None, what: str) -> int | float | None:
        if y is None:
            return None
        if y.kind != "scalar" or isinstance(y.value, bool) or not isinstance(y.value, int | float):
            self.diags.error("TT105", f"{what}: expected a number, got {y.type_name()}", y.loc)
            return None
        return y.value

    def boolean(self, y: Y | None, what: str) -> bool | None:
        if y is None:
            return None
        if y.kind != "scalar" or not isinstance(y.value, bool):
            self.diags.error("TT105", f"{what}: expected true or false, got {y.type_name()}", y.loc)
            return None
        return y.value

    def choice(self, y: Y | None, what: str, choices: Iterable[str]) -> str | None:
        text = self.string(y, what)
        if text is None or y is None:
            return None
        options = list(choices)
        if text not in options:
            hint = did_you_mean(text, options)
            self.diags.error(
                "TT111",
                f"{what}: invalid value '{text}'{hint}",
                y.loc,
                hint="expected one of: " + ", ".join(options),
            )
            return None
        return text

    def str_list(self, y: Y | None, what: str) -> list[tuple[str, Loc]]:
        """A list of strings with their locations (a single string is accepted as a one-item list)."""
        if y is None:
            return []
        if y.kind == "scalar":
            text = self.string(y, what)
            return [(text, y.loc)] if text is not None else []
        if not self.expect(y, "seq", what):
            return []
        out: list[tuple[str, Loc]] = []
        for item in y.value:
            text = self.string(item, what + " item")
            if text is not None:
                out.append((text, item.loc))
        return out
