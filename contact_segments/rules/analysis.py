"""What a segment rule depends on: which fields it reads, and how it depends on the clock.

The engine uses these to do as little as possible:

- :func:`fields_read` tells which segments a contact change can affect (only those reading a
  changed field are re-evaluated);
- :func:`depends_on_now` tells which segments time alone can change;
- :func:`time_thresholds` tells, for those, which contacts time can move in or out between two
  instants, as one index range query per threshold instead of a rebuild.

All three expect a validated segment rule (:func:`~.validation.validate_segment_rule`), walk it
without recursion and never evaluate it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Literal, cast

from .catalog import NOW, FieldType, lookup

Comparison = Literal["<", "<=", ">", ">="]

_MIRRORED: dict[str, Comparison] = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}


def _operations(rule: Any) -> Iterator[tuple[str, list[Any]]]:
    """Every operation in ``rule`` as ``(operator, arguments)``, unary shorthand expanded."""
    stack = [rule]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            for op, raw in node.items():
                args = raw if isinstance(raw, list) else [raw]
                yield op, args
                stack.extend(args)


def _var_name(node: Any) -> Any:
    """The name a ``{"var": ...}`` node reads, or ``None`` for anything else."""
    if not (isinstance(node, dict) and len(node) == 1 and "var" in node):
        return None
    raw = node["var"]
    return raw[0] if isinstance(raw, list) and raw else raw


def fields_read(rule: Any) -> frozenset[str]:
    """The catalog fields a rule reads (custom fields as ``custom_fields.<key>``), ``now`` aside."""
    names: set[str] = set()
    for op, args in _operations(rule):
        if op == "var":
            candidates = args[:1]
        elif op == "missing":
            candidates = args[0] if len(args) == 1 and isinstance(args[0], list) else args
        elif op == "missing_some" and len(args) == 2 and isinstance(args[1], list):
            candidates = args[1]
        else:
            continue
        for name in candidates:
            spec = lookup(name)
            if spec is not None and not spec.is_reserved:
                names.add(spec.name)
    return frozenset(names)


def depends_on_now(rule: Any) -> bool:
    """Whether the rule reads the evaluation instant ``now``, so that time alone can change it."""
    return any(op == "var" and args[:1] == [NOW] for op, args in _operations(rule))


@dataclass(frozen=True, slots=True, order=True)
class FieldWindow:
    """Values of ``field`` between ``low`` and ``high``; which end is included depends on
    ``low_inclusive``: ``low <= value < high`` if true, else ``low < value <= high``.

    A null field compares as 0 in JavaScript, so it is in the window when 0 is; that needs an
    offset of about minus the current epoch (some 56 years), but a query that must be exact adds
    ``OR field IS NULL`` when ``window.contains(0)``.
    """

    field: str
    low: float
    high: float
    low_inclusive: bool

    def contains(self, value: float | None) -> bool:
        if value is None:
            value = 0
        if self.low_inclusive:
            return self.low <= value < self.high
        return self.low < value <= self.high


@dataclass(frozen=True, slots=True, order=True)
class TimeThreshold:
    """One comparison ``field <operator> now + offset`` in a rule, ``field`` a timestamp.

    ``created_at > now - 604800`` ("created less than 7 days ago") is
    ``TimeThreshold("created_at", -604800, ">")``; a comparison written the other way round
    (``now - 604800 < created_at``) or as one side of a between is turned to read the same way.

    As ``now`` advances, the comparison can change value only when ``now`` crosses
    ``field - offset``, so between two instants only contacts with ``field`` near
    ``t + offset`` can flip; :meth:`window` gives those values exactly.
    """

    field: str
    offset: int | float
    operator: Comparison

    def window(self, t0: float, t1: float) -> FieldWindow:
        """The ``field`` values for which the comparison may differ between ``now = t0`` and ``now = t1``.

        With ``d = field - offset``: ``>`` holds while ``now < d`` and ``<=`` once ``now >= d``, so
        both change value *at* ``d``, and differ between t0 < t1 exactly when ``t0 < d <= t1``;
        ``>=`` and ``<`` change just *after* ``d``: when ``t0 <= d < t1``.  Hence
        ``field`` in ``(t0 + offset, t1 + offset]`` or ``[t0 + offset, t1 + offset)``.
        """
        low, high = sorted((t0, t1))
        return FieldWindow(self.field, low + self.offset, high + self.offset, self.low_inclusive)

    @property
    def low_inclusive(self) -> bool:
        """Whether :meth:`window` includes its low end (and excludes its high one)."""
        return self.operator in (">=", "<")


def _now_offset(node: Any) -> int | float | None:
    """K for ``now``, ``now + K`` or ``now - K`` (as -K); ``None`` for anything else."""
    if _var_name(node) == NOW:
        return 0
    if isinstance(node, dict) and len(node) == 1:
        ((op, args),) = node.items()
        if op in ("+", "-") and isinstance(args, list) and len(args) == 2 and _var_name(args[0]) == NOW:
            amount = args[1]
            if isinstance(amount, int | float) and not isinstance(amount, bool):
                return amount if op == "+" else -amount
    return None


def _timestamp(node: Any) -> str | None:
    spec = lookup(_var_name(node))
    return spec.name if spec is not None and spec.type is FieldType.TIMESTAMP else None


def time_thresholds(rule: Any) -> frozenset[TimeThreshold]:
    """Every comparison of a timestamp field with ``now`` (± N) in the rule, as a :class:`TimeThreshold`.

    Empty when the rule does not depend on time.  A contact's membership can change between two
    instants without the contact changing only if one of these comparisons changes, so the union
    of the :meth:`TimeThreshold.window` ranges holds every candidate.
    """
    found: set[TimeThreshold] = set()
    for op, args in _operations(rule):
        if op not in _MIRRORED or len(args) < 2:
            continue
        pairs = pairwise(args) if op in ("<", "<=") else [(args[0], args[1])]  # a between is two
        for left, right in pairs:
            field, offset = _timestamp(left), _now_offset(right)
            if field is not None and offset is not None:
                found.add(TimeThreshold(field, offset, cast(Comparison, op)))
            field, offset = _timestamp(right), _now_offset(left)
            if field is not None and offset is not None:
                found.add(TimeThreshold(field, offset, _MIRRORED[op]))
    return frozenset(found)
