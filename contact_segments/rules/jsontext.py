"""Strict JSON text: what RFC 8259 allows, with one clear message for anything else.

``json.loads`` accepts more than JSON, and fails in ways that are not a ``JSONDecodeError``:

- the tokens ``NaN``, ``Infinity`` and ``-Infinity``, and numbers beyond a double (``1e400``
  becomes ``inf``), which no database column or JavaScript evaluator holds faithfully;
- duplicate keys, the last one winning, where other parsers keep the first: the same document
  would mean two things;
- integers of more than 4,300 digits raise a bare ``ValueError``, and deep nesting a
  ``RecursionError``;
- a byte order mark, with advice meant for Python programmers.

:func:`loads` refuses all of these with :class:`JSONTextError` (a ``ValueError``), and
:func:`decode` turns bytes into text the same way, so a boundary reading a file needs to catch one
exception.  Limits of size and depth belong to each document type (a rule is at most 64 KiB);
:func:`more_values_than` lets a reader apply one before parsing: a million tiny values cost
~250 MB as Python objects, and seconds to build.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .errors import quote

BOM = "\ufeff"


class JSONTextError(ValueError):
    """Text that is not strict JSON; ``str()`` says why (and where, for a syntax error)."""


def decode(data: bytes | bytearray) -> str:
    """UTF-8 bytes as text; invalid UTF-8 raises :class:`JSONTextError` naming the first bad byte."""
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as error:
        raise JSONTextError(
            f"not UTF-8 text: byte 0x{error.object[error.start]:02x} at offset {error.start} is invalid"
        ) from None


def loads(text: str) -> Any:
    """Parse strict JSON text; raise :class:`JSONTextError` for anything that is not."""
    if text.startswith(BOM):
        raise JSONTextError("it starts with a byte order mark (BOM): save it as UTF-8 without a BOM")
    try:
        return json.loads(
            text, parse_constant=_refuse_constant, parse_float=_finite_float, object_pairs_hook=_unique_keys
        )
    except JSONTextError:
        raise
    except json.JSONDecodeError as error:
        raise JSONTextError(str(error)) from None
    except RecursionError:
        raise JSONTextError("it is nested too deeply to read") from None
    except ValueError:  # int(): "Exceeds the limit (4300 digits) for integer string conversion"
        raise JSONTextError("it holds a number with too many digits") from None


def more_values_than(text: str, limit: int) -> bool:
    """Whether JSON text holds more than ``limit`` values, told without parsing it (from below: the
    commas outside strings, each of which separates two values).  A count of the text's commas
    answers most texts; only one with more commas than ``limit`` at all is scanned for strings."""
    if text.count(",") <= limit:
        return False
    return _STRING.sub("", text).count(",") > limit


_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"', re.DOTALL)


def _refuse_constant(name: str) -> Any:
    raise JSONTextError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONTextError(f"the number {quote(text, 40)} is out of range (beyond ±1.8e308)")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JSONTextError(f"duplicate key {quote(key)}")
            seen.add(key)
    return result
