"""The JSONLogic operators, each a small class in a registry object.

An operator knows its name, how many arguments it takes, and how to emit Python code for one
operation (see :mod:`contact_segments.rules.compiler`).  Most emit a call to a helper of
:mod:`contact_segments.rules.jsvalues`; the ones that segment rules use most (``var``, ``==``,
comparisons, ``in``, ``and``/``or``) also emit an inline fast path for the common types, which
falls back to the helper for everything else.

:data:`CLASSIC` holds every classic operator.  It is never changed in place: a host that needs
another operator extends a copy (``CLASSIC.with_operators(MyOperator())``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ClassVar, NamedTuple, Protocol

from . import jsvalues as js
from .syntax import Array, Literal, Node, Operation

log = logging.getLogger("contact_segments.rules")


class Expr(NamedTuple):
    """Emitted Python code and what it is known to produce.

    ``kind`` is one of ``bool``, ``str``, ``list``, ``null``, ``number`` (a finite literal),
    ``num`` (some int or float, NaN included) or ``any``.  For ``num`` and ``any`` truthiness
    needs :func:`~.jsvalues.truthy`; for the others Python's own truthiness equals JSONLogic's,
    so ``and``, ``or``, ``if`` and ``!`` test the value directly.
    """

    code: str
    kind: str = "any"

    @property
    def plain_truth(self) -> bool:
        return self.kind not in ("any", "num")

    @property
    def numeric(self) -> bool:
        return self.kind in ("number", "num")


class Emitter(Protocol):
    """What an operator may ask of the compiler while it emits code."""

    data: str

    def emit(self, node: Node) -> Expr: ...

    def bind(self, value: Any) -> str: ...

    def read(self, keys: list[str], default: str | None) -> str: ...

    def temp(self) -> str: ...

    def function(self, node: Node) -> str: ...

    def test(self, expr: Expr) -> str: ...


NUMBERS = "_NUMBERS"  # the name the compiler binds to (int, float)


class Operator:
    """Base class: a name, an arity and an ``emit`` method."""

    name: ClassVar[str]
    min_args: ClassVar[int] = 0
    max_args: ClassVar[int | None] = None

    def check_arity(self, count: int) -> str | None:
        low, high = self.min_args, self.max_args
        if low <= count and (high is None or count <= high):
            return None
        if high is None:
            expected = f"at least {low}"
        elif low == high:
            expected = f"exactly {low}"
        else:
            expected = f"{low} to {high}"
        noun = "argument" if (high or low) == 1 else "arguments"
        return f"{self.name!r} takes {expected} {noun}, got {count}"

    def emit(self, em: Emitter, node: Operation) -> Expr:
        raise NotImplementedError


class Call(Operator):
    """An operator that evaluates every argument, then calls one helper."""

    helper: ClassVar[Callable[..., Any]]
    result: ClassVar[str] = "any"

    def emit(self, em: Emitter, node: Operation) -> Expr:
        args = ", ".join(em.emit(arg).code for arg in node.args)
        return Expr(f"{em.bind(type(self).helper)}({args})", self.result)


def _literal(node: Node) -> Literal | None:
    return node if isinstance(node, Literal) else None


def _number_literal(node: Node) -> bool:
    return isinstance(node, Literal) and js.is_number(node.value)


# --------------------------------------------------------------------------- data access


class Var(Operator):
    name = "var"
    max_args = 2

    def emit(self, em: Emitter, node: Operation) -> Expr:
        if not node.args:
            return Expr(em.data)
        path, *rest = node.args
        default = em.emit(rest[0]).code if rest else None
        key = _literal(path)
        if key is not None and key.value in (None, ""):
            return Expr(em.data)  # an empty path is the data itself; the default is never used
        if key is not None and type(key.value) is str:
            return Expr(em.read(key.value.split("."), default))
        args = f"{em.data}, {em.emit(path).code}" + (f", {default}" if default else "")
        return Expr(f"{em.bind(js.lookup)}({args})")


def _as_rule(value: Any, data: Any) -> Any:
    """What json-logic-js's ``apply`` makes of a value that reached it from data: a one-key
    object is a rule (evaluated, so an unknown operator raises), an array is mapped."""
    if type(value) is list:
        return [_as_rule(item, data) for item in value]
    if type(value) is dict and len(value) == 1:
        from .compiler import apply  # runtime values only: compiled rules never get here

        return apply(value, data)
    return value


def _var_of(key: Any, data: Any) -> Any:
    """json-logic-js's ``apply({"var": key}, data)`` for a key computed at run time."""
    if type(key) not in (list, dict):
        return js.lookup(data, key)
    args = _as_rule(key if type(key) is list else [key], data)
    if not args:
        return data
    return js.lookup(data, args[0], args[1] if len(args) > 1 else None)


def missing_of(data: Any, args: list) -> list:
    """``missing``: keys given as arguments, or as one array argument.

    json-logic-js reads each key as ``{"var": key}``: a key that is an array is ``var``'s
    argument list, one that is an object a rule.  Plain keys take the direct path.
    """
    keys = args[0] if args and type(args[0]) is list else args
    if all(type(key) not in (list, dict) for key in keys):
        return js.missing(data, keys)
    return [key for key in keys if (value := _var_of(key, data)) is None or value == ""]


def missing_some_of(data: Any, need: Any, options: Any) -> list:
    """``missing_some``: nothing, if at least ``need`` of ``options`` are present.

    json-logic-js evaluates ``{"missing": options}`` as a rule, so the options are read once
    more as rules before they are keys.
    """
    keys = _as_rule(options, data) if type(options) is list else [options]
    absent = missing_of(data, keys)
    size = js.property_of(options, "length")
    present = js.subtract(size, len(absent)) if size is not js.UNDEFINED else float("nan")
    return [] if js.greater_equal(present, need) else absent


class Missing(Operator):
    name = "missing"

    def emit(self, em: Emitter, node: Operation) -> Expr:
        args = ", ".join(em.emit(arg).code for arg in node.args)
        return Expr(f"{em.bind(missing_of)}({em.data}, [{args}])", "list")


class MissingSome(Operator):
    name = "missing_some"
    min_args = max_args = 2

    def emit(self, em: Emitter, node: Operation) -> Expr:
        need, options = (em.emit(arg).code for arg in node.args)
        return Expr(f"{em.bind(missing_some_of)}({em.data}, {need}, {options})", "list")


# --------------------------------------------------------------------------- logic


class If(Operator):
    """``if`` / ``?:``: condition, value pairs, then an optional else; null when none applies."""

    name = "if"

    def emit(self, em: Emitter, node: Operation) -> Expr:
        args = list(node.args)
        tail = em.emit(args.pop()) if len(args) % 2 else Expr("None", "null")
        kinds = {tail.kind}
        code = tail.code
        for condition, value in reversed(list(zip(args[::2], args[1::2], strict=True))):
            then = em.emit(value)
            kinds.add(then.kind)
            code = f"({then.code} if {em.test(em.emit(condition))} else {code})"
        return Expr(code, kinds.pop() if len(kinds) == 1 else "any")


class Ternary(If):
    name = "?:"


class And(Operator):
    """``and``: the first falsy value, or the last value."""

    name = "and"
    min_args = 1
    stop_on_truthy: ClassVar[bool] = False

    def emit(self, em: Emitter, node: Operation) -> Expr:
        parts = [em.emit(arg) for arg in node.args]
        joiner = "or" if self.stop_on_truthy else "and"
        code = parts[-1].code
        for part in reversed(parts[:-1]):
            if part.plain_truth:  # Python's own and/or return the same value
                code = f"({part.code} {joiner} {code})"
                continue
            name = em.temp()
            test = em.test(Expr(f"({name} := {part.code})"))
            code = f"({name} if {test} else {code})" if self.stop_on_truthy else f"({code} if {test} else {name})"
        kinds = {part.kind for part in parts}
        return Expr(code, kinds.pop() if len(kinds) == 1 else "any")


class Or(And):
    """``or``: the first truthy value, or the last value."""

    name = "or"
    stop_on_truthy = True


class Not(Operator):
    name = "!"
    min_args = max_args = 1

    def emit(self, em: Emitter, node: Operation) -> Expr:
        return Expr(f"(not {em.test(em.emit(node.args[0]))})", "bool")


class DoubleNot(Operator):
    name = "!!"
    min_args = max_args = 1

    def emit(self, em: Emitter, node: Operation) -> Expr:
        inner = em.emit(node.args[0])
        if inner.kind == "bool":
            return inner
        if inner.plain_truth:
            return Expr(f"(not not {inner.code})", "bool")
        return Expr(f"{em.bind(js.truthy)}({inner.code})", "bool")


# --------------------------------------------------------------------------- equality


class Equals(Operator):
    """``==``, with an inline path when one side is a string or number literal of the same type
    as the other side's value."""

    name = "=="
    min_args = max_args = 2
    helper: ClassVar[Callable[[Any, Any], bool]] = staticmethod(js.loose_equals)
    negate: ClassVar[bool] = False

    def emit(self, em: Emitter, node: Operation) -> Expr:
        left, right = node.args
        if _literal(left) is not None and _literal(right) is None:
            left, right = right, left  # equality is symmetric; keep the literal on the right
        literal = _literal(right)
        helper = em.bind(type(self).helper)
        other = em.emit(left)
        op, neg = ("!=", "not ") if self.negate else ("==", "")
        if literal is not None and type(literal.value) is str:
            name = em.temp()
            fast = f"({name} {op} {literal.value!r} if type({name} := {other.code}) is str"
            return Expr(f"{fast} else {neg}{helper}({name}, {literal.value!r}))", "bool")
        if literal is not None and js.is_number(literal.value):
            name = em.temp()
            fast = f"({name} {op} {literal.value!r} if type({name} := {other.code}) in {NUMBERS}"
            return Expr(f"{fast} else {neg}{helper}({name}, {literal.value!r}))", "bool")
        call = f"{helper}({other.code}, {em.emit(right).code})"
        return Expr(f"(not {call})" if self.negate else call, "bool")


class NotEquals(Equals):
    name = "!="
    negate = True


class StrictEquals(Equals):
    name = "==="
    helper = staticmethod(js.strict_equals)


class StrictNotEquals(StrictEquals):
    name = "!=="
    negate = True


# --------------------------------------------------------------------------- comparisons


class Compare(Operator):
    """``<``, ``<=``, ``>``, ``>=``: numbers compare inline, anything else through the helper."""

    min_args = max_args = 2
    symbol: ClassVar[str]
    helper: ClassVar[Callable[[Any, Any], bool]]

    def emit(self, em: Emitter, node: Operation) -> Expr:
        if len(node.args) == 3:
            return self._between(em, node)
        left, right = (em.emit(arg) for arg in node.args)
        return Expr(self._pair(em, left, right), "bool")

    def _pair(self, em: Emitter, left: Expr, right: Expr) -> str:
        helper = em.bind(type(self).helper)
        left_number, right_number = left.numeric, right.numeric
        if left_number and right_number:
            return f"({left.code} {self.symbol} {right.code})"
        if right_number or left_number:
            name = em.temp()
            checked = f"({name} := {(left if right_number else right).code})"
            a, b = (name, right.code) if right_number else (left.code, name)
            return f"({a} {self.symbol} {b} if type{checked} in {NUMBERS} else {helper}({a}, {b}))"
        a, b = em.temp(), em.temp()
        both = f"(type({a} := {left.code}) in {NUMBERS}) & (type({b} := {right.code}) in {NUMBERS})"
        return f"({a} {self.symbol} {b} if {both} else {helper}({a}, {b}))"

    def _between(self, em: Emitter, node: Operation) -> Expr:
        low, middle, high = (em.emit(arg) for arg in node.args)
        helper = em.bind(type(self).helper)
        name = em.temp()
        return Expr(f"({helper}({low.code}, {name} := {middle.code}) and {helper}({name}, {high.code}))", "bool")


class LessThan(Compare):
    name, symbol, helper = "<", "<", staticmethod(js.less_than)
    min_args, max_args = 2, 3


class LessEqual(Compare):
    name, symbol, helper = "<=", "<=", staticmethod(js.less_equal)
    min_args, max_args = 2, 3


class GreaterThan(Compare):
    name, symbol, helper = ">", ">", staticmethod(js.greater_than)


class GreaterEqual(Compare):
    name, symbol, helper = ">=", ">=", staticmethod(js.greater_equal)


# --------------------------------------------------------------------------- membership


class In(Operator):
    """``in``: a substring of a string, or an element of an array (strict equality)."""

    name = "in"
    min_args = max_args = 2

    def emit(self, em: Emitter, node: Operation) -> Expr:
        needle, haystack = node.args
        helper = em.bind(js.contains)
        if isinstance(haystack, Array) and haystack.items and all(
            isinstance(item, Literal) and type(item.value) is str for item in haystack.items
        ):
            # A literal list of strings: a string is in it exactly when it is in the set.
            choices = em.bind(frozenset(item.value for item in haystack.items))  # type: ignore[union-attr]
            name = em.temp()
            return Expr(f"(type({name} := {em.emit(needle).code}) is str and {name} in {choices})", "bool")
        literal = _literal(needle)
        if literal is not None and type(literal.value) is str and literal.value:
            # A non-empty string: Python's ``in`` agrees for both lists and strings.
            name = em.temp()
            fast = f"({literal.value!r} in {name} if type({name} := {em.emit(haystack).code}) in _LIST_OR_STR"
            return Expr(f"{fast} else {helper}({literal.value!r}, {name}))", "bool")
        return Expr(f"{helper}({em.emit(needle).code}, {em.emit(haystack).code})", "bool")


# --------------------------------------------------------------------------- arithmetic


class Plus(Call):
    name = "+"
    helper = staticmethod(js.add)
    result = "num"


class Minus(Operator):
    name = "-"
    min_args, max_args = 1, 2

    def emit(self, em: Emitter, node: Operation) -> Expr:
        if len(node.args) == 1:
            return Expr(f"{em.bind(js.negate)}({em.emit(node.args[0]).code})", "num")
        left, right = node.args
        helper = em.bind(js.subtract)
        if _number_literal(right):
            name, amount = em.temp(), em.emit(right).code
            return Expr(
                f"({name} - {amount} if type({name} := {em.emit(left).code}) in {NUMBERS}"
                f" else {helper}({name}, {amount}))",
                "num",
            )
        return Expr(f"{helper}({em.emit(left).code}, {em.emit(right).code})", "num")


class Times(Call):
    name = "*"
    min_args = 1
    helper = staticmethod(js.multiply)


class Divide(Call):
    name = "/"
    min_args = max_args = 2
    helper = staticmethod(js.divide)
    result = "num"


class Modulo(Call):
    name = "%"
    min_args = max_args = 2
    helper = staticmethod(js.modulo)
    result = "num"


class Min(Call):
    name = "min"
    helper = staticmethod(js.minimum)
    result = "num"


class Max(Call):
    name = "max"
    helper = staticmethod(js.maximum)
    result = "num"


# --------------------------------------------------------------------------- strings and arrays


class Cat(Call):
    name = "cat"
    helper = staticmethod(js.concatenate)
    result = "str"


class Substr(Call):
    name = "substr"
    min_args, max_args = 1, 3
    helper = staticmethod(js.substring)
    result = "str"


class Merge(Call):
    name = "merge"
    helper = staticmethod(js.merge)
    result = "list"


def log_value(value: Any) -> Any:
    """``log``: json-logic-js prints to the console; we log, and pass the value through."""
    log.info("jsonlogic log: %r", value)
    return value


class Log(Call):
    name = "log"
    min_args = max_args = 1
    helper = staticmethod(log_value)


# --------------------------------------------------------------------------- iteration


def all_of(items: Any, test: Callable[[Any], Any]) -> bool:
    if type(items) is not list or not items:
        return False  # "all" of nothing is false in JSONLogic
    return all(js.truthy(test(item)) for item in items)


def some_of(items: Any, test: Callable[[Any], Any]) -> bool:
    return type(items) is list and any(js.truthy(test(item)) for item in items)


def none_of(items: Any, test: Callable[[Any], Any]) -> bool:
    return not some_of(items, test)


def filter_of(items: Any, test: Callable[[Any], Any]) -> list:
    return [item for item in items if js.truthy(test(item))] if type(items) is list else []


def map_of(items: Any, function: Callable[[Any], Any]) -> list:
    return [function(item) for item in items] if type(items) is list else []


def reduce_of(items: Any, function: Callable[[Any], Any], initial: Any) -> Any:
    if type(items) is not list:
        return initial
    accumulator = initial
    for item in items:
        accumulator = function({"current": item, "accumulator": accumulator})
    return accumulator


class Iteration(Operator):
    """An operator whose second argument is a rule applied to each element of the first."""

    min_args = max_args = 2
    helper: ClassVar[Callable[..., Any]]
    result: ClassVar[str] = "any"

    def emit(self, em: Emitter, node: Operation) -> Expr:
        items, logic, *initial = node.args
        extra = f", {em.emit(initial[0]).code}" if initial else ""
        if self.name == "reduce" and not initial:
            extra = ", None"
        call = f"{em.bind(type(self).helper)}({em.emit(items).code}, {em.function(logic)}{extra})"
        return Expr(call, self.result)


class All(Iteration):
    name, helper, result = "all", staticmethod(all_of), "bool"


class Some(Iteration):
    name, helper, result = "some", staticmethod(some_of), "bool"


class NoneOf(Iteration):
    name, helper, result = "none", staticmethod(none_of), "bool"


class Filter(Iteration):
    name, helper, result = "filter", staticmethod(filter_of), "list"


class Map(Iteration):
    name, helper, result = "map", staticmethod(map_of), "list"


class Reduce(Iteration):
    name, helper = "reduce", staticmethod(reduce_of)
    max_args = 3


# --------------------------------------------------------------------------- the registry


class OperatorRegistry(Mapping[str, Operator]):
    """An immutable name -> operator mapping.  Extend it through a copy."""

    def __init__(self, operators: Iterable[Operator] = ()) -> None:
        self._operators = {op.name: op for op in operators}

    def __getitem__(self, name: str) -> Operator:
        return self._operators[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._operators)

    def __len__(self) -> int:
        return len(self._operators)

    def with_operators(self, *operators: Operator) -> OperatorRegistry:
        """A copy of this registry with ``operators`` added (or replacing same-named ones)."""
        return OperatorRegistry([*self._operators.values(), *operators])

    def without(self, *names: str) -> OperatorRegistry:
        """A copy of this registry without the named operators."""
        return OperatorRegistry(op for name, op in self._operators.items() if name not in names)

    def __repr__(self) -> str:
        return f"OperatorRegistry({sorted(self._operators)})"


CLASSIC = OperatorRegistry(
    cls()
    for cls in (
        Var, Missing, MissingSome, If, Ternary, And, Or, Not, DoubleNot,
        Equals, NotEquals, StrictEquals, StrictNotEquals,
        LessThan, LessEqual, GreaterThan, GreaterEqual, In,
        Plus, Minus, Times, Divide, Modulo, Min, Max, Cat, Substr, Merge, Log,
        All, Some, NoneOf, Filter, Map, Reduce,
    )
)  # fmt: skip
