"""Compiling a JSONLogic rule to one Python function.

A rule is parsed once (:mod:`.syntax`), then each operator emits a Python expression for its
node (:mod:`.operators`); the expressions nest into the source of one function, which Python
compiles to bytecode.  Evaluating a compiled rule then costs about what the same predicate
written by hand costs, instead of a tree walk per evaluation.

The generated source only ever contains ``repr`` of JSON scalars, names of temporaries and names
bound by the compiler itself: no text of the rule is pasted into code, and values reach Python
only as literals.  Data is read with dict lookups and list indexes, never attributes.
"""

from __future__ import annotations

import json
from functools import lru_cache
from itertools import count
from typing import Any, Protocol

from . import jsvalues as js
from .errors import RuleError
from .operators import CLASSIC, NUMBERS, Expr, OperatorRegistry
from .syntax import Array, Literal, Node, Operation, parse

#: Expressions deeper than this go into a function of their own, which keeps every generated
#: function well inside the limits of Python's parser.
_NESTING_PER_FUNCTION = 16

_LITERAL_KINDS = {type(None): "null", bool: "bool", int: "number", float: "number", str: "str"}


class CompiledRule(Protocol):
    """A rule compiled to a Python function: call it with the data to evaluate.

    It is a plain function (no wrapper call on the hot path) carrying the ``rule`` it came from
    and the generated ``source``, for reading and debugging.
    """

    rule: Any
    source: str

    def __call__(self, data: Any = None, /) -> Any: ...


class _Function:
    """One generated function being emitted."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.fast = True  # emitting the fast body (direct reads) or the general one
        self.reads = False
        self.depth = 0


class _Compiler:
    """Emits the source of a rule; the :class:`~.operators.Emitter` that operators talk to.

    Each generated function has two bodies.  The fast one reads data with plain subscripts,
    ``data['tags']``, which is what a contact's evaluation view (an object holding every field)
    always allows.  Anything else (a missing key, data that is not an object) raises
    ``KeyError``, ``TypeError`` or ``AttributeError`` there, and the function falls back to the
    general body, which reads through :func:`~.jsvalues.lookup` with full JavaScript semantics.
    Both bodies come from the same operator code, so they cannot drift apart.
    """

    data = "data"

    def __init__(self, registry: OperatorRegistry) -> None:
        self.registry = registry
        self.namespace: dict[str, Any] = {
            "__builtins__": {"type": type, "str": str, "dict": dict, "list": list},
            NUMBERS: (int, float),
            "_LIST_OR_STR": (list, str),
            "_FALLBACK": (KeyError, TypeError, AttributeError),
        }
        self._bound: dict[int, str] = {}
        self._functions: dict[int, str] = {}
        self._names = count(1)
        self._definitions: list[str] = []
        self._stack: list[_Function] = []

    # -- the Emitter protocol ------------------------------------------------------------

    def emit(self, node: Node) -> Expr:
        frame = self._stack[-1]
        if frame.depth >= _NESTING_PER_FUNCTION and isinstance(node, Operation):
            return Expr(f"{self.function(node)}({self.data})")
        frame.depth += 1
        try:
            return self._emit(node)
        finally:
            frame.depth -= 1

    def bind(self, value: Any) -> str:
        """A global name for ``value`` in the generated code (helpers and constants)."""
        name = self._bound.get(id(value))
        if name is None:
            name = getattr(value, "__name__", "_const")
            name = f"_{name.lstrip('_')}_{next(self._names)}"
            self.namespace[name] = value
            self._bound[id(value)] = name
        return name

    def read(self, keys: list[str], default: str | None) -> str:
        """Code reading the dotted path ``keys`` from the current data, as ``var`` does."""
        frame = self._stack[-1]
        frame.reads = True
        if not frame.fast:
            args = f"{self.data}, {'.'.join(keys)!r}" + (f", {default}" if default else "")
            return f"{self.bind(js.lookup)}({args})"
        *steps, last = keys
        code = self.data + "".join(f"[{step!r}]" for step in steps)
        if default:
            return f"{code}.get({last!r}, {default})"
        return f"{code}.get({last!r})" if steps else f"{code}[{last!r}]"

    def temp(self) -> str:
        return f"_t{next(self._names)}"

    def function(self, node: Node, *, predicate: bool = False) -> str:
        """Emit ``node`` as a function of its own data; return the function's name.

        A ``predicate`` function returns the JSONLogic truthiness of the node, as a bool.
        """
        name = self._functions.get(id(node))
        if name is not None:
            return name
        frame = _Function(f"_f{next(self._names)}")
        self._functions[id(node)] = frame.name
        self._stack.append(frame)
        body = self._truth if predicate else self._emit
        try:
            fast = body(node).code
            frame.fast = False
            general = body(node).code if frame.reads else fast
        finally:
            self._stack.pop()
        header = f"def {frame.name}({self.data}):\n"
        if fast == general:
            self._definitions.append(f"{header}    return {fast}\n")
        else:
            self._definitions.append(
                f"{header}    try:\n        return {fast}\n    except _FALLBACK:\n        return {general}\n"
            )
        return frame.name

    def test(self, expr: Expr) -> str:
        return expr.code if expr.plain_truth else f"{self.bind(js.truthy)}({expr.code})"

    # -- nodes ---------------------------------------------------------------------------

    def _truth(self, node: Node) -> Expr:
        expr = self._emit(node)
        if expr.kind == "bool":
            return expr
        if expr.plain_truth:
            return Expr(f"(not not {expr.code})", "bool")
        return Expr(f"{self.bind(js.truthy)}({expr.code})", "bool")

    def _emit(self, node: Node) -> Expr:
        if isinstance(node, Literal):
            return Expr(repr(node.value), _LITERAL_KINDS[type(node.value)])
        if isinstance(node, Array):
            return Expr("[" + ", ".join(self.emit(item).code for item in node.items) + "]", "list")
        return self.registry[node.op].emit(self, node)

    def compile(self, rule: Any, tree: Node, *, predicate: bool = False) -> CompiledRule:
        entry = self.function(tree, predicate=predicate)
        source = "\n".join(self._definitions)
        exec(compile(source, "<jsonlogic>", "exec"), self.namespace)  # noqa: S102 - our own codegen
        function = self.namespace[entry]
        function.rule, function.source = rule, source
        return function


def compile_rule(rule: Any, registry: OperatorRegistry = CLASSIC) -> CompiledRule:
    """Compile a JSONLogic rule once, for evaluating it many times.

    Raises :class:`RuleError` naming every problem (unknown operator, wrong argument count, an
    object with several keys, a value that is not JSON, nesting too deep) with its JSON path.
    """
    tree = parse(rule, registry)
    return _Compiler(registry).compile(rule, tree)


def compile_predicate(rule: Any, registry: OperatorRegistry = CLASSIC) -> CompiledRule:
    """Compile a rule to a function returning whether it holds: the truthiness of its value.

    This is what segment membership is: a contact is a member when the rule's value is truthy.
    """
    tree = parse(rule, registry)
    return _Compiler(registry).compile(rule, tree, predicate=True)


@lru_cache(maxsize=1024)
def _compile_cached(text: str) -> CompiledRule:
    return compile_rule(json.loads(text))


def apply(rule: Any, data: Any = None) -> Any:
    """Evaluate a classic JSONLogic rule, with the meaning json-logic-js 2.0.5 gives it.

    The compiled form of each distinct rule is kept in a bounded cache.
    """
    try:
        key = json.dumps(rule, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return compile_rule(rule)(data)  # not JSON: compiling reports where
    except RecursionError:
        raise RuleError.at("$", "the rule nests too deeply to read") from None
    return _compile_cached(key)(data)
