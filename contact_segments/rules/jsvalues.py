"""JavaScript value semantics for JSON values, as json-logic-js 2.0.5 inherits them.

JSONLogic means what JavaScript means: ``null < 5`` is true, ``"1" == 1`` is true, ``[]`` is
falsy (the one JSONLogic exception to JavaScript), ``1 / 0`` is Infinity.  Values here are what
``json.loads`` produces: ``None``, ``bool``, ``int``, ``float``, ``str``, ``list`` and ``dict``.
``None`` stands for both ``null`` and ``undefined``; json-logic-js never lets the difference
reach a result.

Every helper takes values and returns a value; none reads a clock or touches I/O.  The compiler
(:mod:`contact_segments.rules.compiler`) inlines the common number cases and calls these for the
rest.
"""

from __future__ import annotations

import math
import re
from typing import Any

NUMBER_TYPES = (int, float)


class _Undefined:
    """JavaScript's ``undefined``, where it must be told apart from ``null``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "undefined"


UNDEFINED = _Undefined()
_ABSENT = UNDEFINED

# JavaScript's StrWhiteSpaceChar: WhiteSpace and LineTerminator.
_JS_WHITESPACE = " \t\n\v\f\r\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"

_DECIMAL = r"[+-]?(?:Infinity|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"  # ASCII digits only
_NUMBER_LITERAL = re.compile(rf"(?:{_DECIMAL}|0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+)")
_DECIMAL_PREFIX = re.compile(_DECIMAL)


def is_number(value: Any) -> bool:
    """True for JavaScript numbers: ints and floats, never bools."""
    kind = type(value)
    return kind is int or kind is float


def truthy(value: Any) -> bool:
    """JSONLogic truthiness: JavaScript's, except that an empty array is falsy."""
    kind = type(value)
    if kind is float:
        return value == value and value != 0.0  # NaN and ±0 are falsy
    if kind is dict:
        return True  # every object is truthy in JavaScript, even {}
    return bool(value)


# --------------------------------------------------------------------------- conversions


def _float_from_text(text: str) -> float:
    if text.endswith("Infinity"):
        return -math.inf if text.startswith("-") else math.inf
    return float(text)


def string_to_number(text: str) -> float:
    """``Number(text)``: the whole string, trimmed, must be a numeric literal, else NaN."""
    text = text.strip(_JS_WHITESPACE)
    if not text:
        return 0.0
    if not _NUMBER_LITERAL.fullmatch(text):
        return math.nan
    if text[:2] in ("0x", "0X"):
        return float(int(text[2:], 16))
    if text[:2] in ("0o", "0O"):
        return float(int(text[2:], 8))
    if text[:2] in ("0b", "0B"):
        return float(int(text[2:], 2))
    return _float_from_text(text)


def to_number(value: Any) -> float | int:
    """JavaScript ``ToNumber``."""
    kind = type(value)
    if kind is int or kind is float:
        return value
    if value is None:
        return 0  # null -> 0 (undefined would be NaN; json-logic-js hands operators null)
    if kind is bool:
        return 1 if value else 0
    if kind is str:
        return string_to_number(value)
    return string_to_number(to_primitive(value))


def parse_float(value: Any) -> float:
    """JavaScript ``parseFloat``: the longest numeric prefix of ``String(value)``, else NaN."""
    if type(value) in NUMBER_TYPES:
        return float(value)
    text = to_string(value).lstrip(_JS_WHITESPACE)
    match = _DECIMAL_PREFIX.match(text)
    return _float_from_text(match.group()) if match else math.nan


def number_to_string(number: float | int) -> str:
    """JavaScript ``Number.prototype.toString()`` (shortest round-trip digits)."""
    if type(number) is int:
        if abs(number) < 10**21:
            return str(number)
        number = float(number)
    if number != number:
        return "NaN"
    if number in (math.inf, -math.inf):
        return "Infinity" if number > 0 else "-Infinity"
    if number == 0:
        return "0"
    sign = "-" if number < 0 else ""
    digits, exponent = _shortest_digits(abs(number))
    point = exponent + 1  # position of the decimal point relative to the digits
    if len(digits) <= point <= 21:
        return sign + digits + "0" * (point - len(digits))
    if 0 < point <= 21:
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * -point + digits
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{mantissa}e{'+' if point - 1 >= 0 else '-'}{abs(point - 1)}"


def _shortest_digits(number: float) -> tuple[str, int]:
    """The shortest decimal digits that round-trip ``number``, and its decimal exponent."""
    mantissa, _, exponent_text = repr(number).partition("e")
    integer, _, fraction = mantissa.partition(".")
    digits = integer + fraction
    significant = digits.lstrip("0")
    exponent = int(exponent_text or 0) + len(integer) - 1 - (len(digits) - len(significant))
    return significant.rstrip("0") or "0", exponent


def to_string(value: Any) -> str:
    """JavaScript ``String(value)``."""
    kind = type(value)
    if kind is str:
        return value
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is int or kind is float:
        return number_to_string(value)
    return to_primitive(value)


def to_primitive(value: Any) -> Any:
    """JavaScript ``ToPrimitive`` for JSON values: arrays join with commas, objects are opaque."""
    kind = type(value)
    if kind is list:
        return ",".join("" if item is None else to_string(item) for item in value)
    if kind is dict:
        return "[object Object]"
    return value


# --------------------------------------------------------------------------- equality


def strict_equals(a: Any, b: Any) -> bool:
    """JavaScript ``===``: same type and value; arrays and objects by identity."""
    kind_a, kind_b = type(a), type(b)
    if kind_a in NUMBER_TYPES and kind_b in NUMBER_TYPES:
        return a == b
    if kind_a is not kind_b:
        return False
    if kind_a is list or kind_a is dict:
        return a is b
    return a == b


def loose_equals(a: Any, b: Any) -> bool:
    """JavaScript ``==`` (the Abstract Equality Comparison)."""
    kind_a, kind_b = type(a), type(b)
    if kind_a in NUMBER_TYPES and kind_b in NUMBER_TYPES:
        return a == b
    if kind_a is kind_b:
        return a is b if kind_a is list or kind_a is dict else a == b
    if a is None or b is None:
        return False  # null == undefined only, and both are None here
    if kind_a is bool:
        return loose_equals(1 if a else 0, b)
    if kind_b is bool:
        return loose_equals(a, 1 if b else 0)
    if kind_a is str and kind_b in NUMBER_TYPES:
        return string_to_number(a) == b
    if kind_b is str and kind_a in NUMBER_TYPES:
        return a == string_to_number(b)
    if kind_a is list or kind_a is dict:
        return kind_b is not list and kind_b is not dict and loose_equals(to_primitive(a), b)
    if kind_b is list or kind_b is dict:
        return loose_equals(a, to_primitive(b))
    return False


# --------------------------------------------------------------------------- relational


def _utf16(text: str) -> bytes:
    return text.encode("utf-16-be", "surrogatepass")


def _compare_primitives(a: Any, b: Any) -> int | None:
    """-1, 0 or 1 as JavaScript orders two primitives, or None when NaN makes them unordered."""
    if type(a) is str and type(b) is str:
        if a == b:
            return 0
        if max(a, default="\0") > "\uffff" or max(b, default="\0") > "\uffff":
            return -1 if _utf16(a) < _utf16(b) else 1  # JavaScript orders UTF-16 code units
        return -1 if a < b else 1
    x, y = to_number(a), to_number(b)
    if x != x or y != y:
        return None
    return (x > y) - (x < y)


def less_than(a: Any, b: Any) -> bool:
    if type(a) in NUMBER_TYPES and type(b) in NUMBER_TYPES:
        return a < b
    order = _compare_primitives(to_primitive(a), to_primitive(b))
    return order is not None and order < 0


def less_equal(a: Any, b: Any) -> bool:
    if type(a) in NUMBER_TYPES and type(b) in NUMBER_TYPES:
        return a <= b
    order = _compare_primitives(to_primitive(a), to_primitive(b))
    return order is not None and order <= 0


def greater_than(a: Any, b: Any) -> bool:
    return less_than(b, a)


def greater_equal(a: Any, b: Any) -> bool:
    return less_equal(b, a)


# --------------------------------------------------------------------------- arithmetic


def add(*values: Any) -> float:
    """``+``: parseFloat of every argument, summed from 0."""
    total: float = 0
    for value in values:
        total = total + parse_float(value)
    return total


def multiply(*values: Any) -> Any:
    """``*``: a reduce without an initial value, so one argument comes back unconverted."""
    result = values[0]
    for value in values[1:]:
        result = parse_float(result) * parse_float(value)
    return result


def subtract(a: Any, b: Any) -> float | int:
    return to_number(a) - to_number(b)


def negate(a: Any) -> float | int:
    number = to_number(a)
    return -number if number != 0 else -float(number)  # JavaScript's -0


def divide(a: Any, b: Any) -> float:
    x, y = to_number(a), to_number(b)
    if y == 0:
        if x != x or x == 0:
            return math.nan
        return math.copysign(math.inf, x) * math.copysign(1, y)
    try:
        return x / y
    except OverflowError:
        return math.copysign(math.inf, x) * math.copysign(1, y)


def modulo(a: Any, b: Any) -> float | int:
    """``%``: the remainder takes the dividend's sign, as ``math.fmod`` does."""
    x, y = to_number(a), to_number(b)
    if y == 0 or x != x or y != y or x in (math.inf, -math.inf):
        return math.nan
    if y in (math.inf, -math.inf):
        return x
    remainder = math.fmod(x, y)
    if remainder == 0:
        return math.copysign(0.0, x)  # the dividend's sign, -0 included
    return int(remainder) if type(x) is int and type(y) is int else remainder


def _extreme(values: tuple[Any, ...], pick: Any, empty: float, zero_sign: float) -> float | int:
    """``Math.min`` / ``Math.max``: NaN wins, and -0 orders below +0."""
    numbers = [to_number(v) for v in values]
    if any(n != n for n in numbers):
        return math.nan
    result = pick(numbers, default=empty)
    if result == 0 and any(n == 0 and math.copysign(1, n) == zero_sign for n in numbers):
        return math.copysign(0.0, zero_sign)
    return result


def minimum(*values: Any) -> float | int:
    return _extreme(values, min, math.inf, -1.0)


def maximum(*values: Any) -> float | int:
    return _extreme(values, max, -math.inf, 1.0)


# --------------------------------------------------------------------------- strings and arrays


def contains(needle: Any, haystack: Any) -> bool:
    """``in``: substring of a string, or strict membership in an array."""
    if type(haystack) is str:
        return haystack != "" and to_string(needle) in haystack
    if type(haystack) is list:
        return any(strict_equals(item, needle) for item in haystack)
    return False


def concatenate(*values: Any) -> str:
    """``cat``: ``Array.prototype.join`` with no separator; null joins as the empty string."""
    return "".join("" if value is None else to_string(value) for value in values)


def _to_integer(value: Any) -> float:
    number = to_number(value)
    if number != number:
        return 0
    if number in (math.inf, -math.inf):
        return number
    return math.trunc(number)


def _js_substr(text: str, start: Any, length: Any = _ABSENT) -> str:
    """``String.prototype.substr`` over UTF-16 code units."""
    wide = any(ch > "\uffff" for ch in text)
    units: Any = _utf16(text) if wide else text
    size = len(units) // 2 if wide else len(units)
    begin = _to_integer(start)
    if begin < 0:
        begin = max(size + begin, 0)
    begin = min(begin, size)
    count = size - begin if length is _ABSENT else min(max(_to_integer(length), 0), size - begin)
    if count <= 0:
        return ""
    begin, count = int(begin), int(count)
    if wide:
        return units[2 * begin : 2 * (begin + count)].decode("utf-16-be", "surrogatepass")
    return units[begin : begin + count]


def substring(source: Any, *bounds: Any) -> str:
    """``substr``: JavaScript's ``substr``, where a negative length drops characters at the end.

    ``bounds`` is ``()``, ``(start,)`` or ``(start, length)``: an absent length (to the end)
    differs from a null one (zero characters).
    """
    text = to_string(source)
    start = bounds[0] if bounds else None
    if len(bounds) < 2:
        return _js_substr(text, start)
    length = bounds[1]
    if less_than(length, 0):
        rest = _js_substr(text, start)
        return _js_substr(rest, 0, plus(_utf16_len(rest), length))
    return _js_substr(text, start, length)


def plus(a: Any, b: Any) -> Any:
    """JavaScript's binary ``+``: string concatenation if either side is a string after
    ``ToPrimitive``, numeric addition otherwise."""
    a, b = to_primitive(a), to_primitive(b)
    if type(a) is str or type(b) is str:
        return to_string(a) + to_string(b)
    return to_number(a) + to_number(b)


def _utf16_len(text: str) -> int:
    return len(text) + sum(1 for ch in text if ch > "\uffff")


def merge(*values: Any) -> list:
    """``merge``: arrays are flattened one level; anything else is appended."""
    result: list = []
    for value in values:
        if type(value) is list:
            result.extend(value)
        else:
            result.append(value)
    return result


# --------------------------------------------------------------------------- data access


def property_of(container: Any, key: str) -> Any:
    """``container[key]`` as JavaScript reads it from JSON data, or ``UNDEFINED``.

    Only JSON structure is reachable: object keys, array indexes and the ``length`` of arrays
    and strings.  Nothing ever reaches a Python attribute.
    """
    kind = type(container)
    if kind is dict:
        return container.get(key, UNDEFINED)
    if kind is list or kind is str:
        if key == "length":
            return len(container) if kind is list else _utf16_len(container)
        if key.isascii() and key.isdigit() and (key == "0" or key[0] != "0"):
            index = int(key)
            if kind is list:
                return container[index] if index < len(container) else UNDEFINED
            return _utf16_unit(container, index)
    return UNDEFINED


def _utf16_unit(text: str, index: int) -> Any:
    """``text[index]`` in JavaScript: one UTF-16 code unit (half a surrogate pair, maybe)."""
    if all(ch <= "\uffff" for ch in text):
        return text[index] if index < len(text) else UNDEFINED
    units = _utf16(text)
    if 2 * index >= len(units):
        return UNDEFINED
    return units[2 * index : 2 * index + 2].decode("utf-16-be", "surrogatepass")


def lookup(data: Any, path: Any, default: Any = None) -> Any:
    """``var``: the value at a dotted path, or ``default`` where the path is undefined.

    A stored ``null`` is a value, not undefined: it comes back as is.  A null or empty path
    gives the whole data.
    """
    if path is None or path == "":
        return data
    for key in to_string(path).split("."):
        if data is None:
            return default
        data = property_of(data, key)
        if data is UNDEFINED:
            return default
    return data


def missing(data: Any, keys: Any) -> list:
    """``missing``: the keys whose value is null, undefined or the empty string."""
    found = []
    for key in keys:
        value = lookup(data, key)
        if value is None or (type(value) is str and value == ""):
            found.append(key)
    return found
