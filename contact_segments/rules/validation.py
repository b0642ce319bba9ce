"""Validation of segment rules: the JSONLogic a segment may be filtered by.

Any classic JSONLogic runs in :func:`~contact_segments.rules.apply`, but a *segment rule* must
also compile to SQL, so it is held to a smaller, typed dialect:

- ``{"var": F}`` of a catalog field (:mod:`.catalog`), with an optional default that is a literal
  of the field's type (not for custom fields: SQL does not see an absent custom field apart from
  a null one); ``{"missing": [F, ...]}`` and ``{"missing_some": [N, [F, ...]]}`` of catalog
  fields.
- Conditions combined by ``and``, ``or`` (at least one argument), ``!``, ``!!`` and ``if``; a
  condition is one of these, a comparison, an ``in``, a ``missing``, a bare ``var`` (its
  truthiness) or ``true`` / ``false``.
- Comparisons of exactly one field with literals: ``==``, ``===``, ``!=``, ``!==`` against a
  literal the field's type allows; ``<``, ``<=``, ``>``, ``>=`` (and the between forms
  ``{"<": [low, F, high]}``, ``{"<=": [low, F, high]}``) of a timestamp against numbers or
  ``now ± N``, of a custom field against numbers.
- ``in``: a string in a string list (``{"in": ["vip", {"var": "tags"}]}``), a substring of a
  string or custom field (``{"in": ["@acme.com", {"var": "email"}]}``), or a string or custom
  field in a non-empty literal list (``{"in": [{"var": "country"}, ["MY", "SG"]]}``).
- Time: ``{"var": "now"}``, ``{"-": [{"var": "now"}, N]}`` and ``{"+": [{"var": "now"}, N]}``
  with N a number of seconds, only as an operand of an ordering comparison with a timestamp.

Literal numbers are finite and, when integers, within JavaScript's safe range (±(2**53 - 1));
booleans are never numbers.  Literal strings hold neither NUL nor lone surrogates (no database
stores them).  JSON text is parsed strictly (:mod:`.jsontext`): no ``NaN``, no duplicate keys.

**Limits**, checked before anything recursive runs: at most 64 KiB of JSON (the text as given,
or the compact UTF-8 encoding of a Python value), 2,000 JSON values, and 32 levels of nested
arrays and objects (``{"!!": [{"var": "tags"}]}`` is 3 levels deep).  The canonical form is held
to the same limits, so that a valid rule stays valid when validated again.

**Canonical form.**  Validation returns the rule normalised, with the same meaning in every
JSONLogic implementation:

- operator arguments are always arrays: ``{"!!": {"var": "x"}}`` becomes ``{"!!": [{"var": "x"}]}``;
- ``var`` is a plain string unless it has a default: ``{"var": ["x"]}`` and ``{"var": ["x", null]}``
  become ``{"var": "x"}``;
- ``{"missing": [["a", "b"]]}`` becomes ``{"missing": ["a", "b"]}``, and ``?:`` becomes ``if``;
- whole floats become integers (``30.0`` becomes ``30``).

Errors are collected, never stopping at the first, and raised together as a
:class:`RuleValidationError` whose ``messages`` map JSON paths to what is wrong there, e.g.
``{"$.and[1].==[0].var": "unknown field 'contry'"}``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, ClassVar, Literal, cast

from marshmallow import RAISE, Schema, ValidationError, fields

from . import jsontext
from .catalog import EQUALITY, NOW, ORDERING, FieldSpec, FieldType, ValueKind, lookup
from .errors import ROOT, child_path, quote

MAX_DEPTH = 32
MAX_NODES = 2_000
MAX_BYTES = 64 * 1024
MAX_SAFE_INTEGER = 2**53 - 1

#: Classic JSONLogic operators that segment rules refuse: the SQL compiler has no translation.
SQL_UNSUPPORTED = frozenset(
    {"max", "min", "*", "/", "%"}  # arithmetic
    | {"cat", "substr", "merge"}  # strings and arrays
    | {"all", "some", "none", "map", "filter", "reduce"}  # iteration
    | {"log"}
)

_IN_SHAPES = (
    '\'in\' takes a string and a field ({"in": ["vip", {"var": "tags"}]}) '
    'or a field and a list of values ({"in": [{"var": "country"}, ["MY", "SG"]]})'
)


class RuleValidationError(ValidationError):
    """A segment rule that is not valid. ``messages`` maps each JSON path to what is wrong there."""

    messages: dict[str, str]

    def __init__(self, messages: Mapping[str, str]) -> None:
        super().__init__(dict(messages))


# --------------------------------------------------------------------------- the Marshmallow API


class SegmentRule(fields.Field[Any]):
    """A segment rule, given as a JSON value or as JSON text; loads as its canonical form.

    Use it in any schema that holds a rule; its errors are keyed by JSON path below the field's
    name, e.g. ``{"rule": {"$.and[0]": "..."}}``.
    """

    default_error_messages: ClassVar[dict[str, str]] = {"null": "a segment rule cannot be null"}

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> Any:
        return normalise_rule(value)

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return value


class SegmentRuleSchema(Schema):
    """``{"rule": <segment rule>}``."""

    class Meta:
        unknown = RAISE

    rule = SegmentRule(required=True)


_SCHEMA = SegmentRuleSchema()


def validate_segment_rule(doc: Any) -> Any:
    """Validate a segment rule (a JSON value, or JSON text) and return its canonical form.

    Raises :class:`RuleValidationError` listing every problem by JSON path.
    """
    try:
        return _SCHEMA.load({"rule": doc})["rule"]
    except ValidationError as error:
        messages = cast(dict[str, Any], error.messages)["rule"]
        if isinstance(messages, list):  # Marshmallow's own: "a segment rule cannot be null"
            messages = {ROOT: " ".join(messages)}
        raise RuleValidationError(messages) from None


def normalise_rule(doc: Any) -> Any:
    """The work behind :class:`SegmentRule`: limits first, then the typed walk."""
    if isinstance(doc, str | bytes | bytearray):
        doc = parse_rule_text(doc)
    problem = limits_problem(doc)
    if problem:
        raise RuleValidationError({ROOT: problem})
    checker = _Checker()
    rule = checker.condition(doc, ROOT)
    if checker.problems:
        raise RuleValidationError(checker.problems)
    problem = limits_problem(rule)  # expanding the unary shorthand adds arrays
    if problem:
        raise RuleValidationError({ROOT: problem})
    return rule


# --------------------------------------------------------------------------- limits, without recursion


def parse_rule_text(text: str | bytes | bytearray) -> Any:
    """Parse JSON text, refusing oversized, deeply nested or non-standard JSON before parsing it
    (strictly: see :mod:`.jsontext`)."""
    too_large = RuleValidationError({ROOT: f"the rule is too large: more than {MAX_BYTES} bytes of JSON"})
    if len(text) > MAX_BYTES:  # a character is at least one byte
        raise too_large
    if not isinstance(text, str):
        try:
            text = jsontext.decode(text)
        except jsontext.JSONTextError:
            raise RuleValidationError({ROOT: "the rule is not UTF-8 text"}) from None
    elif len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise too_large
    if not text.strip(" \t\r\n"):
        raise RuleValidationError({ROOT: "the rule is empty: give a JSONLogic rule, e.g. true"})
    if _bracket_depth(text) > MAX_DEPTH:
        raise RuleValidationError({ROOT: _too_deep()})
    try:
        return jsontext.loads(text)
    except jsontext.JSONTextError as error:
        raise RuleValidationError({ROOT: f"the rule is not valid JSON: {error}"}) from None


def limits_problem(doc: Any, *, subject: str = "the rule") -> str | None:
    """What limit a JSON value exceeds (depth, node count, encoded size), or ``None``.

    Walks with an explicit stack and stops at the first limit passed, so a 100,000-level or
    10 MB document costs no more than a document at the limits.
    """
    nodes, size = 1, 0
    stack: list[tuple[Any, int]] = [(doc, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            depth += 1
            if depth > MAX_DEPTH:
                return _too_deep(subject)
            nodes += len(value)
            if nodes > MAX_NODES:
                return f"{subject} is too large: more than {MAX_NODES} JSON values"
            size += 1 + max(len(value), 1)  # brackets and commas
            if isinstance(value, dict):
                for key in value:
                    size += 1 + _scalar_size(key, MAX_BYTES - size)  # the key and its colon
                    if size > MAX_BYTES:
                        break
                stack.extend((item, depth) for item in value.values())
            else:
                stack.extend((item, depth) for item in value)
        else:
            size += _scalar_size(value, MAX_BYTES - size)
        if size > MAX_BYTES:
            return f"{subject} is too large: more than {MAX_BYTES} bytes of JSON"
    return None


def _too_deep(subject: str = "the rule") -> str:
    return f"{subject} is nested too deeply: more than {MAX_DEPTH} levels of arrays and objects"


#: A string JSON writes as itself between quotes: printable ASCII without ``"`` or ``\``.
_PLAIN_STRING = re.compile(r'[ !#-\[\]-~]*')


def _scalar_size(value: Any, budget: int) -> int:
    """Bytes of ``value`` in compact UTF-8 JSON; anything above ``budget`` is just "too many"."""
    if isinstance(value, str):
        if len(value) > budget:
            return budget + 1
        if _PLAIN_STRING.fullmatch(value):  # most strings: no need to encode them
            return len(value) + 2
        return len(json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    if value is None or value is True:
        return 4
    if value is False:
        return 5
    if isinstance(value, int):
        return len(str(value)) if value.bit_length() <= 64 else value.bit_length() * 3 // 10
    if isinstance(value, float):
        return len(repr(value))
    return 1  # not JSON at all: the walk reports it


_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def _bracket_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON text, brackets inside strings aside."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(1 if char in "[{" else -1 for char in brackets), default=0)


# --------------------------------------------------------------------------- the typed walk


@dataclass(frozen=True, slots=True)
class _Operand:
    """A comparison operand: a catalog field, a literal, a literal list, or now (± N)."""

    kind: Literal["field", "literal", "list", "time"]
    node: Any  # normalised
    path: str
    field: FieldSpec | None = None


def _kind(value: Any) -> ValueKind | None:
    if value is None:
        return ValueKind.NULL
    if isinstance(value, bool):
        return ValueKind.BOOLEAN
    if isinstance(value, int | float):
        return ValueKind.NUMBER
    if isinstance(value, str):
        return ValueKind.STRING
    return None


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return f"an operation {quote(next(iter(value)))}" if len(value) == 1 else "an object"
    if isinstance(value, list):
        return "a list"
    kind = _kind(value)
    if kind is ValueKind.NULL:
        return "null"
    if kind is not None:
        return f"a {kind}"
    return f"a Python {type(value).__name__}"


def _expected(kinds: frozenset[ValueKind]) -> str:
    words = ["null" if kind is ValueKind.NULL else f"a {kind}" for kind in ValueKind if kind in kinds]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _field_label(spec: FieldSpec) -> str:
    return f"'{spec.name}' ({spec.type})"


def _unsupported(op: str) -> str:
    if op in SQL_UNSUPPORTED:
        return f"'{op}' is valid JSONLogic but not supported in segment rules: the SQL compiler cannot evaluate it"
    if op in ("+", "-"):
        return (
            f"'{op}' is supported only as time arithmetic, "
            f'{{"{op}": [{{"var": "now"}}, N]}} with N a number of seconds, compared with a timestamp'
        )
    return f"unknown operator {quote(op)}"


def string_problem(text: str) -> str | None:
    """Why a string cannot be kept (``None``: it can): databases store neither NUL nor lone surrogates."""
    if "\x00" in text:
        return "a string must not contain NUL (\\u0000): databases cannot store it"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            return f"a string must not contain a lone surrogate ({quote(error.object[error.start])}): it is not valid Unicode"
    return None


_Args = list[tuple[Any, str]]

#: What :meth:`_Checker.scalar` returns for a value it reported.
_INVALID: Any = object()


class _Checker:
    """Walks a rule within the limits, collecting problems by path and building the canonical form."""

    def __init__(self) -> None:
        self.problems: dict[str, str] = {}

    def report(self, path: str, message: str) -> None:
        known = self.problems.get(path)
        self.problems[path] = f"{known}; {message}" if known else message

    # ---- structure

    def split(self, node: dict[Any, Any], path: str) -> tuple[str, Any, str] | None:
        """An operation's operator, raw arguments and path, or ``None`` (reported) if malformed."""
        if len(node) != 1:
            if not node:
                self.report(path, "an empty object is not an operation")
            else:
                keys = ", ".join(quote(key) for key in list(node)[:5])
                self.report(
                    path, f"an operation is an object with exactly one key, found {len(node)}: {keys}"
                )
            return None
        ((op, raw),) = node.items()
        if not isinstance(op, str):
            self.report(path, f"object keys must be strings, found {_describe(op)}")
            return None
        return op, raw, child_path(path, op)

    @staticmethod
    def args(raw: Any, op_path: str) -> _Args:
        """Arguments with their paths; a non-array is the unary shorthand for a one-element array."""
        if isinstance(raw, list):
            return [(arg, child_path(op_path, index)) for index, arg in enumerate(raw)]
        return [(raw, op_path)]

    def arity(self, op: str, args: _Args, op_path: str, counts: tuple[int, ...], what: str) -> bool:
        if len(args) in counts:
            return True
        self.report(op_path, f"'{op}' takes {what}, found {len(args)} argument{'s' * (len(args) != 1)}")
        return False

    # ---- conditions

    def condition(self, node: Any, path: str) -> Any:
        if isinstance(node, bool):
            return node
        if not isinstance(node, dict):
            self.report(path, f"expected a condition, found {_describe(node)}")
            return node
        split = self.split(node, path)
        if split is None:
            return node
        op, raw, op_path = split
        if op == "var":
            spec, var = self.var(raw, op_path)
            if spec is not None and spec.is_reserved:
                self.report(op_path, "'now' is not a condition: compare a timestamp field with it")
            return var
        handler = self._CONDITIONS.get(op)
        if handler is None:
            self.report(op_path, _unsupported(op))
            return node
        return handler(self, op, self.args(raw, op_path), op_path)

    def logical(self, op: str, args: _Args, op_path: str) -> Any:
        if not args:
            self.report(op_path, f"'{op}' needs at least one condition")
        return {op: [self.condition(arg, path) for arg, path in args]}

    def negation(self, op: str, args: _Args, op_path: str) -> Any:
        self.arity(op, args, op_path, (1,), "1 argument")
        return {op: [self.condition(arg, path) for arg, path in args]}

    def if_(self, op: str, args: _Args, op_path: str) -> Any:
        if len(args) < 2:
            self.report(
                op_path,
                f"'{op}' takes a condition, a result and optionally more of both and an else, found {len(args)}",
            )
        return {"if": [self.condition(arg, path) for arg, path in args]}

    def missing(self, op: str, args: _Args, op_path: str) -> Any:
        if len(args) == 1 and isinstance(args[0][0], list):  # {"missing": [["a", "b"]]}
            args = self.args(*args[0])
        if not args:
            self.report(op_path, "'missing' needs at least one field name")
        for name, path in args:
            self.field_name(name, path)
        return {"missing": [name for name, _ in args]}

    def missing_some(self, op: str, args: _Args, op_path: str) -> Any:
        if not self.arity(op, args, op_path, (2,), "2 arguments, [how many, [field, ...]]"):
            return {op: [arg for arg, _ in args]}
        (need, need_path), (names, names_path) = args
        if not isinstance(names, list) or not names:
            self.report(names_path, f"expected a non-empty list of field names, found {_describe(names)}")
            names = []
        for name, path in self.args(names, names_path):
            self.field_name(name, path)
        need = self.number(need, need_path)
        if names and need is not None and not (isinstance(need, int) and 1 <= need <= len(names)):
            self.report(need_path, f"how many fields must be present: a whole number from 1 to {len(names)}")
        return {op: [need, names]}

    def field_name(self, name: Any, path: str) -> None:
        if not isinstance(name, str):
            self.report(path, f"expected a field name, found {_describe(name)}")
            return
        spec = lookup(name)
        if spec is None:
            self.report(path, f"unknown field {quote(name)}")
        elif spec.is_reserved:
            self.report(path, "'now' is always present: it cannot be missing")

    # ---- comparisons

    def equality(self, op: str, args: _Args, op_path: str) -> Any:
        if not self.arity(op, args, op_path, (2,), "2 arguments"):
            return {op: [arg for arg, _ in args]}
        operands = [self.operand(arg, path) for arg, path in args]
        field, others = self.one_field(op, operands, op_path)
        if field is not None and field.field is not None:
            spec = field.field
            if op not in spec.operators:
                self.report(field.path, f"'{op}' cannot be applied to {_field_label(spec)}")
                others = []
            for other in others:
                if other.kind == "literal":
                    self.literal_of(spec, other.node, other.path)
                elif other.kind == "time":
                    self.report(
                        other.path, "now can only be compared with a timestamp field by <, <=, > or >="
                    )
                elif other.kind == "list":
                    self.report(other.path, "a list of values can only be the second argument of 'in'")
        return {op: self.nodes(operands, args)}

    def ordering(self, op: str, args: _Args, op_path: str) -> Any:
        between = op in ("<", "<=")
        counts, what = ((2, 3), "2 arguments, or 3 for a between") if between else ((2,), "2 arguments")
        if not self.arity(op, args, op_path, counts, what):
            return {op: [arg for arg, _ in args]}
        operands = [self.operand(arg, path) for arg, path in args]
        field, others = self.one_field(op, operands, op_path)
        if field is not None and field.field is not None:
            spec = field.field
            if len(operands) == 3 and operands[1] is not field:
                self.report(
                    op_path,
                    f"in the 3-argument form of '{op}' the field goes in the middle: [low, field, high]",
                )
            if op not in spec.operators:
                self.report(field.path, f"'{op}' cannot be applied to {_field_label(spec)}")
            else:
                timestamp = spec.type is FieldType.TIMESTAMP
                for other in others:
                    ok = (other.kind == "literal" and _kind(other.node) is ValueKind.NUMBER) or (
                        timestamp and other.kind == "time"
                    )
                    if not ok:
                        expected = "a number or now ± N seconds" if timestamp else "a number"
                        self.report(
                            other.path,
                            f"{_field_label(spec)} is ordered against {expected}, not {_describe(other.node)}",
                        )
        return {op: self.nodes(operands, args)}

    def in_(self, op: str, args: _Args, op_path: str) -> Any:
        if not self.arity(op, args, op_path, (2,), "2 arguments"):
            return {op: [arg for arg, _ in args]}
        operands = [self.operand(arg, path) for arg, path in args]
        needle, haystack = operands
        if needle is not None and haystack is not None:
            self.membership(needle, haystack, op_path)
        return {op: self.nodes(operands, args)}

    def membership(self, needle: _Operand, haystack: _Operand, op_path: str) -> None:
        """``in``: a string in a field (an element of a list, or a substring), or a field in a list."""
        if haystack.kind == "field" and haystack.field is not None:
            spec = haystack.field
            if "in" not in spec.operators:
                self.report(haystack.path, f"'in' cannot look inside {_field_label(spec)}")
            elif not (needle.kind == "literal" and isinstance(needle.node, str)):
                what = _describe(needle.node)
                self.report(needle.path, f"'in' looks for a string in {_field_label(spec)}, not {what}")
        elif needle.kind == "field" and needle.field is not None and haystack.kind == "list":
            spec = needle.field
            if "in" not in spec.operators or spec.type is FieldType.STRING_LIST:
                self.report(needle.path, f"{_field_label(spec)} cannot be looked up in a list of values")
            elif not haystack.node:
                self.report(haystack.path, "the list of values is empty")
            else:
                for index, item in enumerate(haystack.node):
                    self.literal_of(spec, item, child_path(haystack.path, index))
        else:
            self.report(op_path, _IN_SHAPES)

    def one_field(
        self, op: str, operands: list[_Operand | None], op_path: str
    ) -> tuple[_Operand | None, list[_Operand]]:
        """The one field a comparison is about, and the other operands; reports anything else."""
        if None in operands:
            return None, []
        present = [operand for operand in operands if operand is not None]
        found = [operand for operand in present if operand.kind == "field"]
        if len(found) != 1:
            what = "no field" if not found else f"{len(found)} fields"
            self.report(op_path, f"'{op}' compares one field with values, found {what}")
            return None, []
        return found[0], [operand for operand in present if operand is not found[0]]

    def literal_of(self, spec: FieldSpec, value: Any, path: str) -> None:
        if _kind(value) not in spec.literals:
            self.report(
                path,
                f"{_field_label(spec)} can be compared with {_expected(spec.literals)}, not {_describe(value)}",
            )

    @staticmethod
    def nodes(operands: list[_Operand | None], args: _Args) -> list[Any]:
        return [operand.node if operand else arg for operand, (arg, _) in zip(operands, args, strict=True)]

    # ---- operands

    def operand(self, node: Any, path: str) -> _Operand | None:
        """Classify a comparison operand, or report why it cannot be one and return ``None``."""
        if isinstance(node, list):
            items = [self.scalar(item, child_path(path, index)) for index, item in enumerate(node)]
            return None if _INVALID in items else _Operand("list", items, path)
        if not isinstance(node, dict):
            value = self.scalar(node, path)
            return None if value is _INVALID else _Operand("literal", value, path)
        split = self.split(node, path)
        if split is None:
            return None
        op, raw, op_path = split
        if op == "var":
            spec, var = self.var(raw, op_path)
            if spec is None:
                return None
            return _Operand("time" if spec.is_reserved else "field", var, path, spec)
        if op in ("+", "-"):
            return self.time_arithmetic(op, self.args(raw, op_path), op_path, path)
        if op in self._CONDITIONS:
            self.report(op_path, f"{_describe(node)} cannot be compared: compare a field with values")
        else:
            self.report(op_path, _unsupported(op))
        return None

    def time_arithmetic(self, op: str, args: _Args, op_path: str, path: str) -> _Operand | None:
        if len(args) != 2:
            self.report(op_path, _unsupported(op))
            return None
        (first, first_path), (amount, amount_path) = args
        ok = True
        now = self.operand(first, first_path) if isinstance(first, dict) else None
        if now is None or now.node != {"var": NOW}:
            self.report(first_path, f'time arithmetic starts from now: {{"{op}": [{{"var": "now"}}, N]}}')
            ok = False
        if _kind(amount) is not ValueKind.NUMBER:
            self.report(
                amount_path,
                f"the seconds added to or taken from now must be a number, not {_describe(amount)}",
            )
            return None
        seconds = self.number(amount, amount_path)
        if not ok or seconds is None:
            return None
        return _Operand("time", {op: [{"var": NOW}, seconds]}, path)

    def var(self, raw: Any, op_path: str) -> tuple[FieldSpec | None, Any]:
        """Resolve ``{"var": ...}``: the field's spec (``None`` if reported) and the canonical node."""
        name, name_path, default = raw, op_path, None
        if isinstance(raw, list):
            if not 1 <= len(raw) <= 2:
                self.report(
                    op_path, f"'var' takes a field name and an optional default, found {len(raw)} arguments"
                )
                return None, {"var": raw}
            name, name_path = raw[0], child_path(op_path, 0)
            default = raw[1] if len(raw) == 2 else None
        if not isinstance(name, str):
            self.report(name_path, f"a field name must be a string, found {_describe(name)}")
            return None, {"var": raw}
        spec = lookup(name)
        if spec is None:
            self.report(
                name_path,
                f"unknown field {quote(name)}" if name else "name a field: an empty name reads the whole contact",
            )
        if default is None or spec is None:
            return spec, {"var": name}
        default_path = child_path(op_path, 1)
        allowed = spec.literals - {ValueKind.NULL}
        if spec.is_custom:  # the SQL compiler cannot tell an absent custom field from a null one
            self.report(default_path, "a default for a custom field is not supported in segment rules")
        elif not allowed:
            self.report(default_path, f"{_field_label(spec)} takes no default")
        elif _kind(default) not in allowed:
            self.report(
                default_path,
                f"the default of {name!r} must be {_expected(allowed)}, not {_describe(default)}",
            )
        else:
            default = self.scalar(default, default_path)
        return spec, {"var": [name, default]}

    # ---- literals

    def scalar(self, value: Any, path: str) -> Any:
        """A literal scalar, checked and normalised (whole floats become ints), or ``_INVALID``."""
        kind = _kind(value)
        if kind is ValueKind.NUMBER:
            number = self.number(value, path)
            return _INVALID if number is None else number
        if kind is ValueKind.STRING and (problem := string_problem(value)):
            self.report(path, problem)
            return _INVALID
        if kind is None:
            what = _describe(value)
            self.report(
                path,
                f"expected a literal, found {what}"
                if isinstance(value, dict | list)
                else f"{what} is not JSON",
            )
            return _INVALID
        return value

    def number(self, value: Any, path: str) -> int | float | None:
        if _kind(value) is not ValueKind.NUMBER:
            self.report(path, f"expected a number, found {_describe(value)}")
            return None
        if isinstance(value, float):
            if not math.isfinite(value):
                self.report(path, "NaN and Infinity are not JSON numbers")
                return None
            return int(value) if value.is_integer() and abs(value) <= MAX_SAFE_INTEGER else value
        if abs(value) > MAX_SAFE_INTEGER:
            self.report(path, "integers beyond ±(2**53 - 1) lose precision in JavaScript")
            return None
        return int(value)

    _CONDITIONS: ClassVar[Mapping[str, Callable[[_Checker, str, _Args, str], Any]]] = {
        "and": logical,
        "or": logical,
        "!": negation,
        "!!": negation,
        "if": if_,
        "?:": if_,
        "missing": missing,
        "missing_some": missing_some,
        **dict.fromkeys(EQUALITY, equality),
        **dict.fromkeys(ORDERING, ordering),
        "in": in_,
    }
