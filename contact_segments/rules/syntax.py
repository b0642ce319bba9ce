"""Parsing: a JSON rule document becomes a small tree of nodes, or a list of diagnostics.

JSONLogic's grammar is tiny: an object with exactly one key is an operation, an array is an
array of rules, anything else is a literal.  Parsing checks what can be checked without data:
the operator exists, its argument count fits, no object has several keys, nothing is nested
deeper than a limit, and every literal is JSON.  All problems are collected, then raised
together as one :class:`RuleError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ROOT, Diagnostic, RuleError, child_path

if TYPE_CHECKING:
    from .operators import OperatorRegistry

#: Deepest nesting ``compile_rule`` accepts.  json-logic-js overflows its stack well before
#: documents that deep; segment rules have a much lower limit of their own (validation).
MAX_DEPTH = 400


@dataclass(frozen=True, slots=True)
class Literal:
    value: None | bool | int | float | str
    path: str


@dataclass(frozen=True, slots=True)
class Array:
    items: tuple[Node, ...]
    path: str


@dataclass(frozen=True, slots=True)
class Operation:
    op: str
    args: tuple[Node, ...]
    path: str


Node = Literal | Array | Operation


def depth_of(document: Any, limit: int) -> int:
    """The nesting depth of a JSON document, counted without recursion, stopping past ``limit``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                break
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
    return deepest


def parse(document: Any, registry: OperatorRegistry, *, max_depth: int = MAX_DEPTH) -> Node:
    """Parse a rule document, raising :class:`RuleError` with every problem found."""
    if depth_of(document, max_depth) > max_depth:
        raise RuleError.at(ROOT, f"the rule nests deeper than {max_depth} levels")
    diagnostics: list[Diagnostic] = []
    node = _parse(document, ROOT, registry, diagnostics)
    if diagnostics:
        raise RuleError(diagnostics)
    return node


def _parse(value: Any, path: str, registry: OperatorRegistry, diagnostics: list[Diagnostic]) -> Node:
    kind = type(value)
    if kind is list:
        return Array(
            tuple(_parse(item, child_path(path, i), registry, diagnostics) for i, item in enumerate(value)),
            path,
        )
    if kind is dict:
        return _parse_operation(value, path, registry, diagnostics)
    if value is None or kind in (bool, int, str):
        return Literal(value, path)
    if kind is float:
        if not math.isfinite(value):
            diagnostics.append(Diagnostic(path, f"{value!r} is not a JSON number"))
        return Literal(value, path)
    diagnostics.append(Diagnostic(path, f"a {kind.__name__} is not a JSON value"))
    return Literal(None, path)


def _parse_operation(
    value: dict, path: str, registry: OperatorRegistry, diagnostics: list[Diagnostic]
) -> Node:
    if len(value) != 1:
        keys = ", ".join(repr(k) for k in list(value)[:5]) or "none"
        diagnostics.append(
            Diagnostic(path, f"an operation is an object with exactly one key, this one has {len(value)} ({keys})")
        )
        return Literal(None, path)
    ((op, raw_args),) = value.items()
    op_path = child_path(path, op)
    if not isinstance(op, str):
        diagnostics.append(Diagnostic(path, f"operator {op!r} is not a string"))
        return Literal(None, path)
    operator = registry.get(op)
    if operator is None:
        diagnostics.append(Diagnostic(op_path, f"unknown operator {op!r}"))
        return Literal(None, path)
    if isinstance(raw_args, list):
        args = tuple(_parse(item, child_path(op_path, i), registry, diagnostics) for i, item in enumerate(raw_args))
    else:  # the unary shorthand: {"var": "x"} means {"var": ["x"]}
        args = (_parse(raw_args, op_path, registry, diagnostics),)
    problem = operator.check_arity(len(args))
    if problem:
        diagnostics.append(Diagnostic(op_path, problem))
    return Operation(op, args, path)
