"""The typed field catalog: which variables a segment rule may name, and what may be done with them.

A segment rule sees a contact through its *evaluation view*, a JSON object with a fixed shape::

    {"id": str,
     "first_name", "last_name", "email", "phone", "country", "language", "lifecycle", "assignee",
     "conversation_status", "last_interacted_channel": str | null,
     "channels", "tags": [str],
     "created_at", "last_incoming_message_at", "last_outgoing_message_at": epoch seconds | null,
     "custom_fields": {key: str | number | bool | null},
     "now": epoch seconds (the evaluation instant, reserved)}

The catalog describes that view as data: one frozen :class:`FieldSpec` per field, in
:data:`FIELDS`, plus one spec per custom field, made on demand by :func:`lookup` for any name
``custom_fields.<key>`` whose key is 1-64 ASCII letters, digits or underscores.

A name is resolved only by looking it up in this catalog, never by reaching into objects, so
``__class__``, ``a.__dict__`` or ``custom_fields.__proto__`` are simply unknown fields.  Custom
keys that start with ``__`` or name a member of JavaScript's ``Object.prototype`` are reserved
for the same reason: a rule runs unchanged in json-logic-js, where ``custom_fields.constructor``
would reach a function instead of a field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class FieldType(StrEnum):
    """The type of a field in the evaluation view."""

    STRING = "string"  #: str or null
    STRING_LIST = "string list"  #: a list of strings (possibly empty)
    TIMESTAMP = "timestamp"  #: epoch seconds or null
    CUSTOM = "custom field"  #: str, number, bool or null; absent when the contact lacks it
    NOW = "now"  #: the evaluation instant, epoch seconds; never null


class ValueKind(StrEnum):
    """The kinds of JSON literal a field can be compared with."""

    STRING = "string"
    NUMBER = "number"
    BOOLEAN = "boolean"
    NULL = "null"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One variable a segment rule may read.

    ``operators`` are the JSONLogic operators that may take the field itself as an operand;
    every field but ``now`` may also be tested for truthiness (``!``, ``!!``, a bare ``var``)
    and named in ``missing`` / ``missing_some``.  ``literals`` are the kinds of literal it may be
    compared with by equality (``==``, ``===``, ``!=``, ``!==``, ``in`` a literal list) and the
    kinds its ``var`` default may have (``null`` aside, which is no default at all).  Ordering
    comparisons (``<``, ``<=``, ``>``, ``>=``) always take numbers, and for timestamps also
    ``now`` or ``now ± N``.
    """

    name: str
    type: FieldType
    operators: frozenset[str]
    literals: frozenset[ValueKind]

    @property
    def is_custom(self) -> bool:
        return self.type is FieldType.CUSTOM

    @property
    def is_reserved(self) -> bool:
        """True for ``now``: it can be compared with, but is not a contact field."""
        return self.type is FieldType.NOW


EQUALITY = frozenset({"==", "===", "!=", "!=="})
ORDERING = frozenset({"<", "<=", ">", ">="})
TIME_ARITHMETIC = frozenset({"+", "-"})

_OPERATORS: Mapping[FieldType, frozenset[str]] = {
    FieldType.STRING: EQUALITY | {"in"},
    FieldType.STRING_LIST: frozenset({"in"}),
    FieldType.TIMESTAMP: EQUALITY | ORDERING,
    FieldType.CUSTOM: EQUALITY | ORDERING | {"in"},
    FieldType.NOW: ORDERING | TIME_ARITHMETIC,
}

_LITERALS: Mapping[FieldType, frozenset[ValueKind]] = {
    FieldType.STRING: frozenset({ValueKind.STRING, ValueKind.NULL}),
    FieldType.STRING_LIST: frozenset(),
    FieldType.TIMESTAMP: frozenset({ValueKind.NUMBER, ValueKind.NULL}),
    FieldType.CUSTOM: frozenset(ValueKind),
    FieldType.NOW: frozenset(),
}


def _spec(name: str, type_: FieldType) -> FieldSpec:
    return FieldSpec(name, type_, _OPERATORS[type_], _LITERALS[type_])


NOW = "now"
CUSTOM_FIELD_PREFIX = "custom_fields."
CUSTOM_KEY = re.compile(r"[A-Za-z0-9_]{1,64}")

STRING_FIELDS = (
    "first_name",
    "last_name",
    "email",
    "phone",
    "country",
    "language",
    "lifecycle",
    "assignee",
    "conversation_status",
    "last_interacted_channel",
)
STRING_LIST_FIELDS = ("channels", "tags")
TIMESTAMP_FIELDS = ("created_at", "last_incoming_message_at", "last_outgoing_message_at")

#: Every fixed field of the evaluation view a rule may read, ``now`` included.
FIELDS: Mapping[str, FieldSpec] = MappingProxyType(
    {
        **{name: _spec(name, FieldType.STRING) for name in STRING_FIELDS},
        **{name: _spec(name, FieldType.STRING_LIST) for name in STRING_LIST_FIELDS},
        **{name: _spec(name, FieldType.TIMESTAMP) for name in TIMESTAMP_FIELDS},
        NOW: _spec(NOW, FieldType.NOW),
    }
)

#: Custom field keys a rule may not name: Python dunders and the members of JavaScript's
#: ``Object.prototype`` (which a JavaScript evaluator would find on every object).
RESERVED_CUSTOM_KEYS = frozenset(
    {
        "constructor",
        "hasOwnProperty",
        "isPrototypeOf",
        "propertyIsEnumerable",
        "toLocaleString",
        "toString",
        "valueOf",
    }
)


def is_custom_key(key: str) -> bool:
    """Whether ``key`` may name a custom field: ``[A-Za-z0-9_]{1,64}``, not reserved."""
    return (
        CUSTOM_KEY.fullmatch(key) is not None and not key.startswith("__") and key not in RESERVED_CUSTOM_KEYS
    )


def lookup(var_path: object) -> FieldSpec | None:
    """The spec of the field a ``var`` path names, or ``None`` if the catalog has no such field."""
    if type(var_path) is not str:
        return None
    spec = FIELDS.get(var_path)
    if spec is not None:
        return spec
    if var_path.startswith(CUSTOM_FIELD_PREFIX) and is_custom_key(var_path[len(CUSTOM_FIELD_PREFIX) :]):
        return _spec(var_path, FieldType.CUSTOM)
    return None
