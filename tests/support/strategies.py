"""Hypothesis strategies for classic JSONLogic rules and the JSON data they read.

The rules use every classic operator with the argument counts our compiler accepts (a dict rule has
exactly one key, a known operator and a fitting arity), nest to a bounded depth, and read variables
that the data is likely to hold. The values lean on JavaScript's awkward corners: null, ``""``,
``[]``, numeric strings (``" 2 "``, ``"1e3"``, ``"0x10"``, ``"-0"``), booleans, ``-0.0``, floats that
print in exponent form, and characters outside the BMP (JavaScript strings count UTF-16 units).

Entry points: ``operations(depth)`` for whole rules, ``data_objects()`` for the documents they read.
Inside ``filter``, ``map``, ``all``, ``some`` and ``none`` a rule reads an element of the array, and
inside ``reduce`` the ``{"current", "accumulator"}`` pair: :class:`Scope` picks the variables to match.
"""

from __future__ import annotations

from enum import Enum
from functools import cache
from typing import Any

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

#: Generated integers stay well inside +-2**53 (where JavaScript numbers are exact), so that the
#: sums and differences of a few of them, nested, stay exact too.
MAX_INTEGER = 2**48

# ----------------------------------------------------------------------------- values

#: The values most rules and data share, so that comparisons sometimes succeed.
COMMON: list[Any] = [None, True, False, 0, 1, 2, -1, 0.5, "", "a", "abc", "0", "1", " 2 ", "1e3"]
NUMBERS: list[int | float] = [
    0, 1, 2, 3, -1, -2, 7, 10, 100, 0.5, -1.5, 2.5, 0.1, -0.0, 1e-7, 1e21, 1e16, 123.456,
]  # fmt: skip
STRINGS = [
    "", "a", "b", "abc", "apple", "A", " ", "true", "null", "a,b", "[object Object]", "😀", "a😀b",
    "1", "2", "0", "-0", " 2 ", "1e3", "0x10", "-0x10", "0b1", "0o7", "1.5", ".5", "5.", "+1", "-1", "1e",
    "Infinity", "-Infinity", "infinity", "inf", "NaN", "1_0", "\u00a03", "\ufeff4", "\u0663",
    "1,2", "3abc",
]  # fmt: skip

#: Object keys of the data, also the segments of variable paths.
KEYS = ["a", "b", "x", "name", "qty", "tags", "items", "0", "1"]
#: Keys of the records in ``items``, read by the array operators.
RECORD_KEYS = ["qty", "a", "name"]
#: Path segments that only arrays and strings answer, and ones a Python port may read wrongly.
ODD_SEGMENTS = ["length", "2", "-1", "01", " 1", "1e0", "\u0661", "\u00b2", ""]

numbers: SearchStrategy[int | float] = st.one_of(
    st.sampled_from(NUMBERS),
    st.integers(-MAX_INTEGER, MAX_INTEGER),
    st.floats(allow_nan=False, allow_infinity=False),
)
strings: SearchStrategy[str] = st.one_of(st.sampled_from(STRINGS), st.sampled_from(KEYS), st.text(max_size=4))
common = st.sampled_from(COMMON)
scalars: SearchStrategy[Any] = st.one_of(
    common, common, common, st.sampled_from(NUMBERS), numbers, st.sampled_from(STRINGS), strings
)


def json_values(max_leaves: int = 8) -> SearchStrategy[Any]:
    """Any JSON value, nested lists and objects included."""
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.sampled_from(KEYS + ["current", ""]), children, max_size=4)
        ),
        max_leaves=max_leaves,
    )


def data_objects() -> SearchStrategy[Any]:
    """The data a rule reads: mostly objects keyed like our variables, sometimes any JSON value.

    ``tags`` tends to hold a list of scalars and ``items`` a list of records, for the array operators.
    """
    record = st.fixed_dictionaries({}, optional=dict.fromkeys(RECORD_KEYS, scalars))
    field = st.one_of(scalars, scalars, st.lists(scalars, max_size=4), json_values())
    fields = {
        **dict.fromkeys(KEYS, field),
        "tags": st.one_of(st.lists(scalars, max_size=4), field),
        "items": st.one_of(st.lists(record, max_size=4), field),
    }
    sparse = st.fixed_dictionaries({}, optional=fields)
    usual = ["a", "name", "qty", "tags", "items"]
    dense = st.fixed_dictionaries(
        {key: fields[key] for key in usual}, optional={key: fields[key] for key in fields if key not in usual}
    )
    return st.one_of(sparse, dense, dense, json_values())  # an object three times in four


# ----------------------------------------------------------------------------- variable paths


class Scope(Enum):
    """What ``{"var": ...}`` reads: the data, an array element (filter, map, ...), or reduce's pair."""

    DATA = "data"
    ELEMENT = "element"
    REDUCE = "reduce"


def _dotted(segments: SearchStrategy[str]) -> SearchStrategy[str]:
    return st.lists(segments, min_size=1, max_size=3).map(".".join)


@cache
def paths(scope: Scope) -> SearchStrategy[Any]:
    """Arguments of ``var`` and keys of ``missing``: dotted strings, indexes, and the whole-data forms."""
    key = st.sampled_from(KEYS)
    segment = key | st.sampled_from(ODD_SEGMENTS)
    into_data = st.one_of(key, key, _dotted(key), _dotted(segment), st.sampled_from([0, 1, -1, 1.5]))
    if scope is Scope.ELEMENT:
        element = st.sampled_from(["", None, "0", "length", *RECORD_KEYS])
        return st.one_of(element, element, into_data)
    if scope is Scope.REDUCE:
        pair = st.sampled_from(["current", "accumulator"])
        return st.one_of(pair, st.tuples(pair, _dotted(segment)).map(".".join), st.just(""), into_data)
    return st.one_of(into_data, into_data, into_data, into_data, st.sampled_from(["", None]))


# ----------------------------------------------------------------------------- rules


def _call(op: str, args: SearchStrategy[list[Any]]) -> SearchStrategy[dict[str, Any]]:
    """``{op: args}``, written ``{op: arg}`` at times when there is one argument that is not a list."""

    def build(args_and_sugar: tuple[list[Any], bool]) -> dict[str, Any]:
        arguments, sugar = args_and_sugar
        if sugar and len(arguments) == 1 and not isinstance(arguments[0], list):
            return {op: arguments[0]}
        return {op: arguments}

    return st.tuples(args, st.booleans()).map(build)


def _n(child: SearchStrategy[Any], low: int, high: int) -> SearchStrategy[list[Any]]:
    return st.lists(child, min_size=low, max_size=high)


def _fixed(*children: SearchStrategy[Any]) -> SearchStrategy[list[Any]]:
    return st.tuples(*children).map(list)


@cache
def rules(depth: int = 3, scope: Scope = Scope.DATA) -> SearchStrategy[Any]:
    """A rule: a literal, a variable, an operation of at most ``depth`` levels or an array of rules."""
    if depth <= 0:
        return leaves(scope)
    # deferred: keeps the strategy's repr short (Hypothesis would spell out the whole tree).
    return st.deferred(
        lambda: st.one_of(
            leaves(scope),
            operations(depth, scope),
            st.lists(rules(depth - 1, scope), max_size=3),  # an array of rules evaluates each
        )
    )


@cache
def leaves(scope: Scope) -> SearchStrategy[Any]:
    variable = variables(0, scope)
    return st.one_of(scalars, variable, variable, variable, st.lists(scalars, max_size=3))


@cache
def conditions(scope: Scope) -> SearchStrategy[dict[str, Any]]:
    """What segment rules mostly say: a variable compared with a value, in a range, or tested."""
    variable = variables(0, scope)
    value = st.one_of(scalars, variable)
    comparison = st.sampled_from(["==", "===", "!=", "!==", ">", ">=", "<", "<="])
    operands = st.one_of(_fixed(variable, value), _fixed(value, variable))
    return st.one_of(
        st.tuples(comparison, operands).map(lambda c: {c[0]: c[1]}),
        *(_call(op, _fixed(value, variable, value)) for op in ["<", "<="]),
        _call("in", _fixed(value, st.one_of(variable, _n(scalars, 0, 4)))),
        *(_call(op, _fixed(variable)) for op in ["!", "!!"]),
    )


@cache
def variables(depth: int, scope: Scope) -> SearchStrategy[dict[str, Any]]:
    """``var`` in all its forms: a path, with a default, no argument, or a computed path."""
    default = rules(depth - 1, scope) if depth > 0 else scalars
    path = _call("var", _fixed(paths(scope)))
    forms = [path, path, path, _call("var", _fixed(paths(scope), default)), st.just({"var": []})]
    if depth > 0:
        computed = st.one_of(
            _call("cat", _n(st.sampled_from(KEYS + [".", "length"]), 1, 3)),
            _call("if", _fixed(rules(depth - 1, scope), paths(scope), paths(scope))),
            rules(depth - 1, scope),
        )
        forms.append(_call("var", _n(computed, 1, 2)))
    return st.one_of(forms)


@cache
def arrays(depth: int, scope: Scope) -> SearchStrategy[Any]:
    """The first argument of the array operators: usually an array, not always."""
    listed = _call("var", _fixed(st.sampled_from(["tags", "items"] if scope is Scope.DATA else ["", "tags"])))
    return st.one_of(
        listed,
        listed,
        _call("var", _fixed(paths(scope))),
        st.lists(scalars, max_size=4),  # an object in a rule is an operation: objects come from the data
        _call("merge", _n(rules(depth, scope), 0, 3)),
        rules(depth, scope),
    )


@cache
def operations(depth: int = 3, scope: Scope = Scope.DATA) -> SearchStrategy[dict[str, Any]]:
    """One operation over sub-rules of lower depth, any classic operator, arity as the compiler wants."""
    child = rules(depth - 1, scope)
    keys = st.one_of(paths(scope), child)
    key_lists = st.one_of(
        _n(keys, 0, 3),
        _call("merge", _n(st.one_of(keys, _n(keys, 0, 2)), 0, 3)),
        _call("if", _fixed(child, _n(keys, 0, 2), _n(keys, 0, 2))),
    )
    index = st.one_of(st.integers(-4, 8), child)
    element = rules(depth - 1, Scope.ELEMENT)
    source = arrays(depth - 1, scope)

    def call(op: str, low: int, high: int) -> SearchStrategy[dict[str, Any]]:
        return _call(op, _n(child, low, high))

    return st.one_of(
        variables(depth, scope),
        conditions(scope),
        conditions(scope),
        *(_call(op, _n(conditions(scope) | child, 1, 4)) for op in ["and", "or"]),
        _call("missing", st.one_of(_n(keys, 0, 3), key_lists.map(lambda k: [k]), _fixed(key_lists, keys))),
        _call("missing_some", _fixed(st.one_of(st.integers(0, 3), child), key_lists)),
        call("if", 0, 5),
        call("?:", 3, 3),
        *(call(op, 2, 2) for op in ["==", "===", "!=", "!==", ">", ">=", "in", "/", "%"]),
        *(call(op, 2, 3) for op in ["<", "<="]),
        *(call(op, 1, 1) for op in ["!", "!!", "log"]),
        *(call(op, 1, 4) for op in ["and", "or", "*"]),
        *(call(op, 0, 4) for op in ["max", "min", "+", "cat", "merge"]),
        call("-", 1, 2),
        _call("in", _fixed(child, st.one_of(st.sampled_from(STRINGS), _n(scalars, 0, 4), source))),
        _call("substr", st.one_of(_fixed(child), _fixed(child, index), _fixed(child, index, index))),
        *(_call(op, _fixed(source, element)) for op in ["all", "some", "none", "map", "filter"]),
        _call("reduce", _fixed(source, rules(depth - 1, Scope.REDUCE))),
        _call("reduce", _fixed(source, rules(depth - 1, Scope.REDUCE), child)),
    )
