"""Compiling a segment rule to a SQLAlchemy boolean expression with the Python predicate's meaning.

The SQL compiler covers what :func:`~.validation.validate_segment_rule` accepts, and gives it
exactly the meaning :func:`~.compiler.compile_rule` gives it: JavaScript truthiness, loose
equality and null coercion included.  It does so without re-implementing JavaScript in SQL:

* **The clock is a constant.**  ``now`` is known when the expression is built, so ``now - N``
  folds to a number, and every comparison is a field against a constant.  Or ``now`` is a SQL
  expression (a bound parameter), so that one statement serves every instant: then ``now ± N``
  stays SQL arithmetic (:class:`_Clock`), and a comparison of a field with it keeps each branch
  in SQL, the null branch's ``0 < now - N`` included.  Validated segment rules use the clock
  only so; any other use needs the instant's value (:class:`InstantRequired`).
* **A field is a few typed branches.**  A string column is "null" or "a string"; a timestamp is
  "null" or "a number"; a custom field is null, a string, a number or a boolean, told apart by its
  JSON type.  In each branch the field has one JavaScript type, so an operation against a constant
  either folds to ``True``/``False`` in Python (computed with the very helpers the Python compiler
  uses: :mod:`.jsvalues`) or becomes one plain SQL comparison.
* **Two-valued logic.**  Every condition this module returns is ``TRUE`` or ``FALSE``, never SQL
  ``NULL``, so ``NOT`` means JavaScript's ``!``.  Branch guards are ``IS NULL`` / type tests, and
  each comparison is ANDed with its branch's guard.  SQL may compute a branch's value on rows
  outside the branch (SQLite does outside ``WHERE``, PostgreSQL may reorder), so a value is NULL
  there, never an error, and ``guard AND comparison`` is then ``FALSE``.

Time-relative conditions come out as ``created_at > :param`` (plus ``OR created_at IS NULL``
where JavaScript's ``null -> 0`` makes null match), which a btree index on the column serves.
Within an ``and`` that guards the field (``{"!!": [{"var": "created_at"}]}``, as product
conditions do), the null case is left out, so "more than 30 days ago" is a plain range too.
Values are always bound parameters.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Double,
    Text,
    and_,
    bindparam,
    case,
    false,
    func,
    literal,
    not_,
    or_,
    true,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from . import jsvalues as js
from .catalog import FieldType, lookup
from .errors import ROOT, RuleError, child_path

Condition = ColumnElement[bool] | bool
"""A two-valued SQL condition, or a constant when the answer does not depend on the row."""

SQL_FALSE = false()
SQL_TRUE = true()


# --------------------------------------------------------------------------- dialect constructs


class _ListContains(FunctionElement[bool]):
    """``value`` is an element of the string-list column ``column``."""

    type = Boolean()
    inherit_cache = True


@compiles(_ListContains, "postgresql")
def _list_contains_pg(element: _ListContains, compiler: Any, **kw: Any) -> str:
    column, value = element.clauses
    return f"({compiler.process(column, **kw)} @> ARRAY[CAST({compiler.process(value, **kw)} AS TEXT)])"


@compiles(_ListContains)
def _list_contains_default(element: _ListContains, compiler: Any, **kw: Any) -> str:
    column, value = element.clauses
    return (
        f"EXISTS (SELECT 1 FROM json_each({compiler.process(column, **kw)}) "
        f"WHERE json_each.value = {compiler.process(value, **kw)} AND json_each.type = 'text')"
    )


class _ListNotEmpty(FunctionElement[bool]):
    type = Boolean()
    inherit_cache = True


@compiles(_ListNotEmpty, "postgresql")
def _list_not_empty_pg(element: _ListNotEmpty, compiler: Any, **kw: Any) -> str:
    (column,) = element.clauses
    return f"(cardinality({compiler.process(column, **kw)}) > 0)"


@compiles(_ListNotEmpty)
def _list_not_empty_default(element: _ListNotEmpty, compiler: Any, **kw: Any) -> str:
    (column,) = element.clauses
    return f"(json_array_length({compiler.process(column, **kw)}) > 0)"


class _Contains(FunctionElement[bool]):
    """Case-sensitive substring test (``LIKE`` would be case-insensitive on SQLite)."""

    type = Boolean()
    inherit_cache = True


@compiles(_Contains, "postgresql")
def _contains_pg(element: _Contains, compiler: Any, **kw: Any) -> str:
    haystack, needle = element.clauses
    return f"(strpos({compiler.process(haystack, **kw)}, {compiler.process(needle, **kw)}) > 0)"


@compiles(_Contains)
def _contains_default(element: _Contains, compiler: Any, **kw: Any) -> str:
    haystack, needle = element.clauses
    return f"(instr({compiler.process(haystack, **kw)}, {compiler.process(needle, **kw)}) > 0)"


class _JsonPart(FunctionElement[Any]):
    """One custom field of a JSON object column: its JSON type, its text or its number.

    The text and the number are NULL unless the field holds a JSON string or number.  SQL does not
    promise to evaluate a branch's value only where its guard holds (SQLite computes both sides of
    an ``AND`` outside ``WHERE``; PostgreSQL may reorder conditions), so each part is safe to
    compute on any row: no ``CAST('abc' AS DOUBLE PRECISION)``, no ``js_number`` of a JSON ``true``.

    Each part is a class of its own, so that it is part of SQLAlchemy's cache key (an attribute
    would not be, and two statements differing only in a part would share compiled SQL).
    """

    inherit_cache = True
    part: ClassVar[str]

    def __init__(self, column: Any, key: str) -> None:
        super().__init__(column, literal(key, Text()))


class _JsonType(_JsonPart):
    """``'null'`` (absent included), ``'string'``, ``'number'`` or ``'boolean'``."""

    part = "type"
    type = Text()
    inherit_cache = True


class _JsonText(_JsonPart):
    part = "text"
    type = Text()
    inherit_cache = True


class _JsonNumber(_JsonPart):
    part = "number"
    type = Double()
    inherit_cache = True


class _JsonBoolean(_JsonPart):
    part = "boolean"
    type = Boolean()
    inherit_cache = True


@compiles(_JsonPart, "postgresql")
def _json_part_pg(element: _JsonPart, compiler: Any, **kw: Any) -> str:
    column, key = (compiler.process(clause, **kw) for clause in element.clauses)
    kind = f"jsonb_typeof({column} -> {key})"
    return {
        "type": f"coalesce({kind}, 'null')",
        "text": f"(CASE WHEN {kind} = 'string' THEN {column} ->> {key} END)",
        "number": f"(CASE WHEN {kind} = 'number' THEN CAST({column} ->> {key} AS DOUBLE PRECISION) END)",
        "boolean": f"(({column} ->> {key}) = 'true')",
    }[element.part]


@compiles(_JsonPart)
def _json_part_default(element: _JsonPart, compiler: Any, **kw: Any) -> str:
    column, key = (compiler.process(clause, **kw) for clause in element.clauses)
    path = f"('$.\"' || {key} || '\"')"
    kind = f"json_type({column}, {path})"
    return {
        "type": (
            f"(CASE {kind} WHEN 'text' THEN 'string' WHEN 'integer' THEN 'number' "
            f"WHEN 'real' THEN 'number' WHEN 'true' THEN 'boolean' WHEN 'false' THEN 'boolean' "
            f"ELSE 'null' END)"
        ),
        "text": f"(CASE WHEN {kind} = 'text' THEN json_extract({column}, {path}) END)",
        "number": f"(CASE WHEN {kind} IN ('integer', 'real') THEN CAST(json_extract({column}, {path}) AS REAL) END)",
        "boolean": f"({kind} = 'true')",
    }[element.part]


def js_number(text: ColumnElement[str]) -> ColumnElement[float]:
    """JavaScript's ``Number(text)`` in SQL; NULL stands for NaN.

    The storage layer defines ``js_number`` in each database (a SQL function on PostgreSQL, a
    Python function on SQLite that calls :func:`.jsvalues.string_to_number` itself).
    """
    return func.js_number(text, type_=Double())


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Branch:
    """The field holds a value of one JavaScript type when ``when`` holds; ``value`` is it in SQL."""

    kind: str  # "null" | "string" | "number" | "boolean" | "list"
    when: ColumnElement[bool] | None  # None: always
    value: ColumnElement[Any] | None  # None for "null"


@dataclass(frozen=True)
class Field:
    """A variable of the row, as the branches it may take."""

    branches: tuple[Branch, ...]


@dataclass(frozen=True)
class _Clock:
    """A number known only when the statement runs: ``now``, ``now - N`` or ``now + N`` in SQL,
    computed in the order JavaScript computes it (so to the same double)."""

    sql: ColumnElement[float]


_LARGEST_OFFSET = 1e15
"""Seconds added to or taken from a SQL ``now`` at most (31 million years).  SQL computes ``now
± N`` in doubles, Python in ints when both are ints; below this bound (and 2**53) the two agree."""


class InstantRequired(Exception):
    """The rule uses ``now`` as more than a number to compare a field with, so its SQL needs the
    instant's value: :func:`rule_to_sql` with a SQL ``now`` cannot compile it."""


def _holds_clock(value: Any) -> bool:
    """Whether ``value`` is a :class:`_Clock` or a list holding one, at any depth."""
    return isinstance(value, _Clock) or (type(value) is list and any(_holds_clock(item) for item in value))


def _known(value: Any) -> Any:
    """``value``, which a fold is about to use: never a :class:`_Clock`, nor a list holding one."""
    if _holds_clock(value):
        raise InstantRequired("'now' is used other than compared with a field, so its value is needed")
    return value


Value = Field | _Clock | Any  # a Field, a clock, or a Python constant (a JSON value)


def _field_value(name: str, columns: Mapping[str, Any], path: str) -> Field:
    spec = lookup(name)
    if spec is None or spec.is_reserved:
        raise RuleError.at(path, f"unknown field {name!r}")
    if spec.type is FieldType.STRING:
        column = columns[name]
        return Field((Branch("null", column.is_(None), None), Branch("string", column.is_not(None), column)))
    if spec.type is FieldType.TIMESTAMP:
        column = columns[name]
        return Field((Branch("null", column.is_(None), None), Branch("number", column.is_not(None), column)))
    if spec.type is FieldType.STRING_LIST:
        return Field((Branch("list", None, columns[name]),))
    key = name.removeprefix("custom_fields.")
    column = columns["custom_fields"]
    kind = _JsonType(column, key)
    return Field(
        (
            Branch("null", kind == "null", None),
            Branch("string", kind == "string", _JsonText(column, key)),
            Branch("number", kind == "number", _JsonNumber(column, key)),
            Branch("boolean", kind == "boolean", _JsonBoolean(column, key)),
        )
    )


def _combine(parts: list[tuple[ColumnElement[bool] | None, Condition]]) -> Condition:
    """OR over branches of ``guard AND result``, folding constant results."""
    terms: list[ColumnElement[bool]] = []
    for guard, result in parts:
        if result is False:
            continue
        if result is True:
            if guard is None:
                return True
            terms.append(guard)
        else:
            terms.append(result if guard is None else and_(guard, result))
    if not terms:
        return False
    return terms[0] if len(terms) == 1 else or_(*terms)


def _sql(condition: Condition) -> ColumnElement[bool]:
    if condition is True:
        return SQL_TRUE
    if condition is False:
        return SQL_FALSE
    return condition


def _not(condition: Condition) -> Condition:
    return (not condition) if isinstance(condition, bool) else not_(condition)


def _and(conditions: list[Condition]) -> Condition:
    if any(c is False for c in conditions):
        return False
    rest = [c for c in conditions if c is not True]
    return True if not rest else rest[0] if len(rest) == 1 else and_(*rest)


def _or(conditions: list[Condition]) -> Condition:
    if any(c is True for c in conditions):
        return True
    rest = [c for c in conditions if c is not False]
    return False if not rest else rest[0] if len(rest) == 1 else or_(*rest)


def _number_of_boolean(value: ColumnElement[bool]) -> ColumnElement[float]:
    return case((value, 1.0), else_=0.0)


# --------------------------------------------------------------------------- branch operations

_SQL_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}
_JS_COMPARE = {"<": js.less_than, "<=": js.less_equal, ">": js.greater_than, ">=": js.greater_equal}


def _compare_branch(branch: Branch, op: str, constant: Any) -> Condition:
    """``field op constant`` (``op`` one of < <= > >=) within one branch."""
    if isinstance(constant, _Clock):  # a finite double, never NULL, known only in SQL
        if branch.kind == "null":
            return _SQL_OPERATORS[op](literal(0.0, Double()), constant.sql)  # null is 0 in a comparison
        return _compare_with_number(branch, op, constant.sql)
    if branch.kind == "null":
        return _JS_COMPARE[op](None, constant)
    if type(constant) in (str, list, dict):
        # Two strings would compare by UTF-16 code units, which no SQL collation promises.
        raise _unsupported(f"'{op}' with a string, array or object")
    # JavaScript compares numbers here: ToNumber of both sides.
    number = js.to_number(constant)
    if number != number:
        return False  # NaN compares false with everything
    if number in (float("inf"), float("-inf")) and branch.kind in ("number", "boolean"):
        return _JS_COMPARE[op](0, number)  # every stored number is finite
    return _compare_with_number(branch, op, bindparam(None, number, Double()))


def _compare_with_number(branch: Branch, op: str, number: ColumnElement[float]) -> Condition:
    """``field op number`` within a branch that is not null: the field as a number, in SQL."""
    compare = _SQL_OPERATORS[op]
    if branch.kind == "number":
        return compare(branch.value, number)
    if branch.kind == "boolean":
        return compare(_number_of_boolean(branch.value), number)
    if branch.kind == "string":
        return func.coalesce(compare(js_number(branch.value), number), False)
    raise _unsupported(f"'{op}' on a list")


def _loose_equal_branch(branch: Branch, constant: Any) -> Condition:
    """``field == constant`` within one branch (JavaScript's abstract equality)."""
    if branch.kind == "null":
        return js.loose_equals(None, constant)
    if constant is None or type(constant) in (list, dict):
        if type(constant) in (list, dict):
            raise _unsupported("equality with an array or object")
        return False  # only null == null, and this branch is not null
    if branch.kind == "list":
        raise _unsupported("equality on a list field")
    if branch.kind == "string" and type(constant) is str:
        return branch.value == literal(constant)
    if branch.kind == "boolean" and type(constant) is bool:
        return branch.value == literal(constant)
    # Anything else compares as numbers.
    number = js.to_number(constant)
    if number != number:
        return False
    if branch.kind == "number":
        return branch.value == bindparam(None, number, Double())
    if branch.kind == "boolean":
        return _number_of_boolean(branch.value) == bindparam(None, number, Double())
    return func.coalesce(js_number(branch.value) == bindparam(None, number, Double()), False)


def _strict_equal_branch(branch: Branch, constant: Any) -> Condition:
    if branch.kind == "null":
        return constant is None
    if type(constant) in (list, dict):
        raise _unsupported("equality with an array or object")
    if branch.kind == "list":
        raise _unsupported("equality on a list field")
    if branch.kind == "string" and type(constant) is str:
        return branch.value == literal(constant)
    if branch.kind == "number" and js.is_number(constant):
        return branch.value == bindparam(None, float(constant), Double())
    if branch.kind == "boolean" and type(constant) is bool:
        return branch.value == literal(constant)
    return False


def _member_branch(branch: Branch, choices: list) -> Condition:
    """``field in [literal, ...]``: strict equality with any element."""
    return _or([_strict_equal_branch(branch, choice) for choice in choices])


def _holds_branch(branch: Branch, needle: Any) -> Condition:
    """``constant in field``: the field is the haystack (a list or a string)."""
    if branch.kind == "list":
        return _ListContains(branch.value, literal(needle, Text())) if type(needle) is str else False
    if branch.kind == "string":
        text = js.to_string(needle)
        return and_(branch.value != "", _Contains(branch.value, literal(text, Text())))
    return False  # null, numbers and booleans have no indexOf


def _truthy_branch(branch: Branch) -> Condition:
    if branch.kind == "null":
        return False
    if branch.kind == "string":
        return branch.value != ""
    if branch.kind == "number":
        return branch.value != 0
    if branch.kind == "boolean":
        return branch.value
    return _ListNotEmpty(branch.value)


def _missing_branch(branch: Branch) -> Condition:
    if branch.kind == "null":
        return True
    if branch.kind == "string":
        return branch.value == ""
    return False


def _over_branches(field: Field, operation: Callable[[Branch], Condition]) -> Condition:
    return _combine([(branch.when, operation(branch)) for branch in field.branches])


def _unsupported(what: str) -> RuleError:
    return RuleError.at(
        ROOT, f"{what} is not supported in segment rules (the SQL compiler cannot express it)"
    )


# --------------------------------------------------------------------------- the compiler


class _SqlCompiler:
    """Compiles one rule; ``present`` are fields known to be non-null here (see :meth:`_conjuncts`)."""

    def __init__(self, columns: Mapping[str, Any], now: float | _Clock, present: frozenset[str] = frozenset()) -> None:
        self.columns = columns
        self.now = now
        self.present = present

    def field(self, name: str, path: str) -> Field:
        field = _field_value(name, self.columns, path)
        if name in self.present:
            return Field(tuple(branch for branch in field.branches if branch.kind != "null"))
        return field

    # A node is compiled either as a *value* (a Field, or a Python constant) or as a *condition*.

    def value(self, node: Any, path: str) -> Value:
        if isinstance(node, dict):
            ((op, args),) = node.items()
            args = args if isinstance(args, list) else [args]
            here = child_path(path, op)
            if op == "var":
                return self._var(args, here)
            if op in ("-", "+"):
                values = [self.value(arg, child_path(here, i)) for i, arg in enumerate(args)]
                if any(isinstance(v, Field) for v in values):
                    raise RuleError.at(here, f"'{op}' on a field is not supported in segment rules")
                if any(_holds_clock(v) for v in values):
                    return _clock_arithmetic(op, values)
                return (
                    js.subtract(*values)
                    if op == "-" and len(values) == 2
                    else (js.negate(values[0]) if op == "-" else js.add(*values))
                )
            condition = self.condition(node, path)
            if isinstance(condition, bool):
                return condition
            return Field((Branch("boolean", None, condition),))
        if isinstance(node, list):
            return [self.value(item, child_path(path, i)) for i, item in enumerate(node)]
        return node

    def _var(self, args: list, path: str) -> Value:
        name = args[0] if args else None
        if name == "now":
            return self.now  # a number, or a _Clock
        if not isinstance(name, str):
            raise RuleError.at(path, "a segment rule names its fields with literal strings")
        field = self.field(name, path)
        if len(args) > 1 and args[1] is not None and name.startswith("custom_fields."):
            raise RuleError.at(path, "a default for a custom field is not supported in segment rules")
        return field  # catalog fields are never undefined in the evaluation view: defaults never apply

    def condition(self, node: Any, path: str = ROOT) -> Condition:
        if not isinstance(node, dict):
            return js.truthy(node)  # a literal; an array's truthiness is whether it is empty
        ((op, args),) = node.items()
        args = args if isinstance(args, list) else [args]
        here = child_path(path, op)
        at = [child_path(here, i) for i in range(len(args))]
        if op == "and":
            return _and(self._conjuncts(args, at))
        if op == "or":
            return _or([self.condition(arg, p) for arg, p in zip(args, at, strict=True)])
        if op == "!":
            return _not(self.condition(args[0], at[0]))
        if op == "!!":
            return self.condition(args[0], at[0])
        if op in ("if", "?:"):
            return self._if(args, at)
        if op in ("var", "-", "+"):
            return self.truthy(self.value(node, path))
        if op in ("==", "!=", "===", "!=="):
            left, right = (self.value(arg, p) for arg, p in zip(args, at, strict=True))
            result = self._equal(left, right, strict=op in ("===", "!=="), path=here)
            return _not(result) if op.startswith("!") else result
        if op in _SQL_OPERATORS:
            values = [self.value(arg, p) for arg, p in zip(args, at, strict=True)]
            if len(values) == 3:
                return _and(
                    [
                        self._compare(values[0], op, values[1], here),
                        self._compare(values[1], op, values[2], here),
                    ]
                )
            return self._compare(values[0], op, values[1], here)
        if op == "in":
            needle, haystack = (self.value(arg, p) for arg, p in zip(args, at, strict=True))
            return self._in(needle, haystack, here)
        if op == "missing":
            return self._missing(args, here)
        if op == "missing_some":
            return self._missing_some(args, here)
        raise RuleError.at(
            here, f"'{op}' is not supported in segment rules (the SQL compiler cannot express it)"
        )

    def _conjuncts(self, args: list, at: list[str]) -> list[Condition]:
        """The conditions of an ``and``, each compiled knowing what the others guarantee.

        A conjunct that by its form is false whenever field F is null (``F``, ``!!F``,
        ``!missing F``: :func:`_non_null_where`) is an *anchor* for F.  It is compiled as usual;
        the other conjuncts are compiled as if F were never null, since on the rows where it is,
        the anchor makes the whole ``and`` false.  So the guarded
        ``{"and": [{"!!": [T]}, {"<": [T, now - N]}]}`` becomes
        ``T IS NOT NULL AND T != 0 AND T IS NOT NULL AND T < :p``, a plain index range, where
        ``T < :p`` alone must keep ``T IS NULL OR ...`` (JavaScript's ``null < x``).  Dropping a
        null branch drops a guarded term, so every conjunct stays two-valued.
        """
        anchors = [_non_null_where(arg, truthy=True) - self.present for arg in args]
        anchored = frozenset().union(*anchors)
        others = _SqlCompiler(self.columns, self.now, self.present | anchored) if anchored else self
        return [
            (self if anchor else others).condition(arg, path)
            for arg, path, anchor in zip(args, at, anchors, strict=True)
        ]

    def truthy(self, value: Value) -> Condition:
        if isinstance(value, Field):
            return _over_branches(value, _truthy_branch)
        return js.truthy(_known(value))

    def _if(self, args: list, at: list[str]) -> Condition:
        if not args:
            return False
        if len(args) == 1:
            return self.condition(args[0], at[0])
        test, then = self.condition(args[0], at[0]), self.condition(args[1], at[1])
        otherwise = self._if(args[2:], at[2:])
        if isinstance(test, bool):
            return then if test else otherwise
        return _or([_and([test, then]), _and([_not(test), otherwise])])

    def _equal(self, left: Value, right: Value, *, strict: bool, path: str) -> Condition:
        if isinstance(left, Field) and isinstance(right, Field):
            raise RuleError.at(path, "comparing two fields is not supported in segment rules")
        if not isinstance(left, Field) and not isinstance(right, Field):
            left, right = _known(left), _known(right)
            return js.strict_equals(left, right) if strict else js.loose_equals(left, right)
        field, constant = (left, _known(right)) if isinstance(left, Field) else (right, _known(left))
        branch_op = _strict_equal_branch if strict else _loose_equal_branch
        return _over_branches(field, lambda branch: branch_op(branch, constant))

    def _compare(self, left: Value, op: str, right: Value, path: str) -> Condition:
        if isinstance(left, Field) and isinstance(right, Field):
            raise RuleError.at(path, "comparing two fields is not supported in segment rules")
        if not isinstance(left, Field) and not isinstance(right, Field):
            return _JS_COMPARE[op](_known(left), _known(right))
        if isinstance(right, Field):
            left, op, right = right, _FLIPPED[op], left
        return _over_branches(left, lambda branch: _compare_branch(branch, op, right))

    def _in(self, needle: Value, haystack: Value, path: str) -> Condition:
        needle = needle if isinstance(needle, Field) else _known(needle)
        haystack = haystack if isinstance(haystack, Field) else _known(haystack)
        if isinstance(needle, Field) and isinstance(haystack, Field):
            raise RuleError.at(path, "'in' between two fields is not supported in segment rules")
        if isinstance(haystack, Field):
            return _over_branches(haystack, lambda branch: _holds_branch(branch, needle))
        if isinstance(needle, Field):
            if type(haystack) is list:
                if any(isinstance(item, Field) for item in haystack):
                    raise RuleError.at(path, "'in' a list of fields is not supported in segment rules")
                return _over_branches(needle, lambda branch: _member_branch(branch, haystack))
            if type(haystack) is str and haystack:
                raise RuleError.at(path, "a field 'in' a literal string is not supported in segment rules")
            return False
        return js.contains(needle, haystack)

    def _missing_keys(self, args: list, path: str) -> list:
        keys = [self.value(arg, child_path(path, i)) for i, arg in enumerate(args)]
        if keys and type(keys[0]) is list:
            keys = keys[0]
        if any(not isinstance(key, str) for key in keys):
            raise RuleError.at(path, "'missing' names its fields with literal strings in segment rules")
        return keys

    def _is_missing(self, key: str, path: str) -> Condition:
        if key == "now":
            return False
        return _over_branches(self.field(key, path), _missing_branch)

    def _missing(self, args: list, path: str) -> Condition:
        return _or([self._is_missing(key, path) for key in self._missing_keys(args, path)])

    def _missing_some(self, args: list, path: str) -> Condition:
        need, options = args
        if not (js.is_number(need) and isinstance(options, list)):
            raise RuleError.at(path, "'missing_some' takes a number and a list of field names")
        keys = self._missing_keys([options], path)
        absent = [self._is_missing(key, path) for key in keys]
        constant_count = sum(1 for a in absent if a is True)
        counted = [case((a, 1), else_=0) for a in absent if not isinstance(a, bool)]
        missing_count = constant_count + (sum(counted[1:], counted[0]) if counted else 0)
        present = len(keys) - missing_count
        # Truthy when fewer than `need` are present and at least one is missing.
        if isinstance(present, int):
            return present < need and present < len(keys)
        return and_(present < literal(need), present < literal(len(keys)))


_NULLABLE = (FieldType.STRING, FieldType.TIMESTAMP, FieldType.CUSTOM)


def _non_null_where(node: Any, *, truthy: bool) -> frozenset[str]:
    """Fields that cannot be null where ``node`` is truthy (or, ``truthy=False``, falsy), by its form.

    Only the forms guards take: a field's truthiness (``F``, ``!!F``, ``!F``), ``!missing``, and
    ``and`` (``or`` when falsy) of those.  Anything else guarantees nothing here.
    """
    if not isinstance(node, dict) or len(node) != 1:
        return frozenset()
    ((op, args),) = node.items()
    args = args if isinstance(args, list) else [args]
    if op == "var" and truthy and args:
        names = [args[0]]
    elif op == "missing" and not truthy:
        names = args[0] if len(args) == 1 and isinstance(args[0], list) else args
    elif op in ("!", "!!") and len(args) == 1:
        return _non_null_where(args[0], truthy=truthy == (op == "!!"))
    elif (op == "and" and truthy) or (op == "or" and not truthy):
        return frozenset().union(*(_non_null_where(arg, truthy=truthy) for arg in args))
    else:
        return frozenset()
    return frozenset(name for name in names if (spec := lookup(name)) is not None and spec.type in _NULLABLE)


def _clock_arithmetic(op: str, values: list[Any]) -> _Clock:
    """``now - N`` or ``now + N`` (the time arithmetic segment rules allow), as JavaScript computes it."""
    if len(values) == 2 and isinstance(values[0], _Clock):
        clock, amount = values
        if js.is_number(amount) and abs(amount) <= _LARGEST_OFFSET:
            seconds = bindparam(None, float(amount), Double())
            return _Clock(clock.sql - seconds if op == "-" else clock.sql + seconds)  # 0 + now + N: exact first step
    raise InstantRequired(f"'{op}' on now other than now - N or now + N needs now's value")


def rule_to_sql(rule: Any, columns: Mapping[str, Any], *, now: float | ColumnElement[float]) -> ColumnElement[bool]:
    """A SQL condition that holds for exactly the rows whose evaluation view the rule matches.

    ``columns`` maps each field of the evaluation view (``contact_view_columns()`` of the storage
    layer) to its column; ``now`` is the evaluation instant, in epoch seconds.  Raises
    :class:`RuleError` for anything segment rules do not allow.

    ``now`` may instead be a SQL expression (a bound parameter, say), never NULL: the condition
    then holds at whatever instant it takes when the statement runs, so a statement built once
    serves every instant.  A rule that uses the clock other than comparing a field with ``now`` or ``now ± N``
    (which a valid segment rule never does) raises :class:`InstantRequired`.
    """
    if isinstance(now, ColumnElement):
        clock: float | _Clock = _Clock(now)
    elif isinstance(now, int | float) and not isinstance(now, bool):
        clock = now
    else:
        raise TypeError(f"now is epoch seconds or a SQL expression, not {now!r}")
    return _sql(_SqlCompiler(columns, clock).condition(rule))
