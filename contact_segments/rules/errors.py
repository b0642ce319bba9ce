"""Errors of the rules layer.

Problems are collected as :class:`Diagnostic` values while a rule is parsed or validated, and
turned into one exception at the boundary, so a user sees every problem at once, each with the
JSON path of the node it concerns (``$.and[1].==[0].var``).
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice
from typing import Any

ROOT = "$"


@dataclass(frozen=True)
class Diagnostic:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


_TOO_LONG = "an integer too long to print"


class _Excerpt(reprlib.Repr):
    """``repr`` of a container, cut short: 3 levels deep (a thousand nested lists are not walked,
    nor would ``repr()`` survive them), a few items each, an object's first keys in its own order
    (``reprlib`` would sort them all first)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxstring = self.maxother = 80

    def repr_int(self, x: int, level: int) -> str:
        try:
            return super().repr_int(x, level)
        except ValueError:  # more digits than Python will print
            return f"<{_TOO_LONG}>"

    def repr_dict(self, x: dict[Any, Any], level: int) -> str:
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        pieces = [f"{self.repr1(key, level - 1)}: {self.repr1(x[key], level - 1)}" for key in islice(x, self.maxdict)]
        return "{" + ", ".join(pieces + ["..."] * (len(x) > self.maxdict)) + "}"


_CONTAINERS = _Excerpt()


def quote(value: object, limit: int = 80) -> str:
    """``repr(value)`` for a message, at most ``limit`` characters: user text is echoed escaped
    (no control characters reach a terminal) and short (a 50 MB key is not repeated back, nor a
    list of a million items or nested a thousand deep walked)."""
    if isinstance(value, str) and len(value) > limit:
        value = value[:limit]
        return repr(value)[: limit + 1] + "…"
    try:
        text = repr(value) if value is None or isinstance(value, str | int | float) else _CONTAINERS.repr(value)
    except ValueError:  # an integer with more digits than Python will print
        text = _TOO_LONG
    return text if len(text) <= limit + 2 else text[: limit + 1] + "…"


def child_path(path: str, step: str | int) -> str:
    """The path of a node below ``path``: ``$.and`` for an operator, ``$.and[1]`` for an index."""
    return f"{path}[{step}]" if isinstance(step, int) else f"{path}.{step}"


class RuleError(ValueError):
    """A rule that cannot be compiled. ``diagnostics`` lists every problem found."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics = tuple(diagnostics)
        if not self.diagnostics:
            raise ValueError("RuleError needs at least one diagnostic")
        super().__init__("; ".join(str(d) for d in self.diagnostics))

    @classmethod
    def at(cls, path: str, message: str) -> RuleError:
        return cls([Diagnostic(path, message)])

    @property
    def path(self) -> str:
        return self.diagnostics[0].path

    @property
    def message(self) -> str:
        return self.diagnostics[0].message

    @property
    def messages(self) -> dict[str, str]:
        """The diagnostics keyed by JSON path, the shape of Marshmallow's ``ValidationError``."""
        merged: dict[str, str] = {}
        for diagnostic in self.diagnostics:
            merged[diagnostic.path] = (
                f"{merged[diagnostic.path]}; {diagnostic.message}"
                if diagnostic.path in merged
                else diagnostic.message
            )
        return merged
