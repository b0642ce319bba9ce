"""The contact snapshot a host sends, and its validation.

A snapshot is a JSON object: ``id``, ``version`` (a number that grows with every change in the
host), the catalog's string fields, ``tags``, ``channels``, the three timestamps as ISO-8601
strings with a zone offset (or null), and ``custom_fields``.  Loading it gives the row the
storage layer keeps: the contact's evaluation view (timestamps as epoch seconds) plus its version.

Everything a database or a JavaScript evaluator could not hold faithfully is refused here, with
the field named: NUL characters and lone surrogates (PostgreSQL text cannot store them), numbers
outside ±2**53 or not finite, over-long strings and lists, custom field keys outside the
catalog's pattern.  Sizes are checked before contents, so a huge document is refused as cheaply
as a small one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate

from ..rules.catalog import CUSTOM_KEY, STRING_FIELDS, STRING_LIST_FIELDS, TIMESTAMP_FIELDS
from ..rules.errors import quote
from .errors import InvalidInput

MAX_TEXT = 1_000
MAX_LIST = 1_000
MAX_CUSTOM_FIELDS = 200
SAFE_INTEGER = 2**53 - 1
#: Beyond this many unknown fields, a snapshot is refused naming a few (not a million).
MAX_UNKNOWN = 20
#: A valid snapshot holds at most ~2,220 JSON values (18 fields, 1,000 tags, 1,000 channels, 200
#: custom fields).  Text holding more than this is refused before it is parsed
#: (:func:`~contact_segments.rules.jsontext.more_values_than`): a million values would cost
#: ~250 MB of Python objects, and seconds, only to be refused.
MAX_VALUES = 10_000


def _storable(value: str) -> None:
    if "\x00" in value:
        raise ValidationError("must not contain NUL characters")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError("must not contain lone surrogates (it is not valid Unicode)") from None


def _text_rules(min_length: int | None, max_length: int) -> Callable[[str], None]:
    length = validate.Length(min=min_length, max=max_length)

    def check(value: str) -> None:
        length(value)  # first, and alone: an over-long string is not read any further
        _storable(value)

    return check


class Text(fields.String):
    """A string of at most ``MAX_TEXT`` characters, without NUL or lone surrogates."""

    def __init__(self, *, max_length: int = MAX_TEXT, min_length: int | None = None, **kwargs: Any) -> None:
        super().__init__(validate=_text_rules(min_length, max_length), **kwargs)


class TextList(fields.List):
    """A list of at most ``MAX_LIST`` texts, its length checked before its items (so a million
    items cost no more to refuse than a thousand and one, and make one message, not a million)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(Text(), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[Any]:
        if isinstance(value, list) and len(value) > MAX_LIST:
            raise ValidationError(f"at most {MAX_LIST:,} items, found {len(value):,}")
        return super()._deserialize(value, attr, data, **kwargs)


class CustomFields(fields.Dict):
    """At most ``MAX_CUSTOM_FIELDS`` custom fields, counted before any is read."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict[str, Any]:
        if isinstance(value, Mapping) and len(value) > MAX_CUSTOM_FIELDS:
            raise ValidationError(f"at most {MAX_CUSTOM_FIELDS} custom fields, found {len(value):,}")
        return super()._deserialize(value, attr, data, **kwargs)


class Timestamp(fields.Field):
    """An ISO-8601 instant with a zone offset, loaded as epoch seconds."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        if not isinstance(value, str) or len(value) > 64 or not (value.isascii() and value.isprintable()):
            raise ValidationError("must be an ISO-8601 timestamp string, e.g. 2026-01-31T09:30:00+08:00")
        try:
            instant = datetime.fromisoformat(value)
        except ValueError:
            raise ValidationError(f"{value!r} is not an ISO-8601 timestamp") from None
        if instant.tzinfo is None:
            raise ValidationError(f"{value!r} has no zone offset (add Z or +HH:MM)")
        return instant.timestamp()

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return value


class Scalar(fields.Field):
    """A custom field value: a string, a finite number within ±2**53, a boolean, or null."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str):
            Text()._validate(value)
            return value
        if isinstance(value, int):
            if abs(value) > SAFE_INTEGER:
                raise ValidationError("integers must lie within ±2**53 (what JavaScript can hold)")
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ValidationError("must be a finite number")
            return value
        raise ValidationError("must be a string, a number, a boolean or null")

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return value


_FIELDS: dict[str, fields.Field] = {
    "id": Text(required=True, min_length=1, max_length=255),
    "version": fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=SAFE_INTEGER)),
    **{name: Text(allow_none=True, load_default=None) for name in STRING_FIELDS},
    **{
        name: TextList(load_default=list) for name in STRING_LIST_FIELDS
    },
    **{name: Timestamp(allow_none=True, load_default=None) for name in TIMESTAMP_FIELDS},
    "custom_fields": CustomFields(
        keys=fields.String(validate=validate.Regexp(rf"{CUSTOM_KEY.pattern}\Z", error="must match [A-Za-z0-9_]{{1,64}}")),
        values=Scalar(allow_none=True),
        load_default=dict,
    ),
}


class ContactSnapshotSchema(Schema.from_dict(_FIELDS)):  # type: ignore[misc]
    """A host's contact snapshot; loads to the stored row (evaluation view plus ``version``)."""

    class Meta:
        unknown = RAISE

    @post_load
    def _dedupe_lists(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        for name in STRING_LIST_FIELDS:
            data[name] = list(dict.fromkeys(data[name]))  # tags are a set, kept in the host's order
        return data


_SCHEMA = ContactSnapshotSchema()


def load_snapshot(document: Any) -> dict[str, Any]:
    """Validate one snapshot; raise :class:`InvalidInput` naming every bad field."""
    if not isinstance(document, dict):
        raise InvalidInput("a contact snapshot must be a JSON object")
    loaded = _load_plain(document)
    if loaded is not None:
        return loaded
    if len(document) > len(_FIELDS) + MAX_UNKNOWN:  # Marshmallow takes ~10 µs per unknown field
        unknown = [key for key in document if key not in _FIELDS]
        names = ", ".join(quote(key, 40) for key in unknown[:5])
        raise InvalidInput(
            f"invalid contact snapshot {quote(document.get('id'))}",
            {"unknown fields": [f"{len(unknown):,} of them, e.g. {names}"]},
        )
    try:
        return _SCHEMA.load(document)
    except ValidationError as error:
        raise InvalidInput(f"invalid contact snapshot {quote(document.get('id'))}", error.messages_dict) from None


# --------------------------------------------------------------------------- the plain path
#
# Marshmallow takes ~85 µs to load a typical snapshot: the largest single cost of a host's save.
# Almost every snapshot is plain (JSON types exactly, every value valid), and for those the
# function below gives the same row in a fraction of that.  At the first thing it is not sure
# of it gives up (None) and the schema decides, and says what is wrong.  A property test holds
# the two to the same result (tests/unit/test_fuzz.py, "the plain path").

_NULLABLE_TEXT = frozenset(STRING_FIELDS)
_TEXT_LISTS = frozenset(STRING_LIST_FIELDS)
_TIMESTAMPS = frozenset(TIMESTAMP_FIELDS)
_CUSTOM_KEY = re.compile(rf"{CUSTOM_KEY.pattern}\Z")
_DEFAULTS: dict[str, Any] = {
    **dict.fromkeys(STRING_FIELDS),
    **dict.fromkeys(TIMESTAMP_FIELDS),
}


def _plain_text(value: Any, max_length: int = MAX_TEXT) -> bool:
    return (
        type(value) is str
        and len(value) <= max_length
        and "\x00" not in value
        and (value.isascii() or _encodable(value))
    )


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _plain_instant(value: Any) -> float | None:
    if type(value) is not str or len(value) > 64 or not (value.isascii() and value.isprintable()):
        return None
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        return None
    return None if instant.tzinfo is None else instant.timestamp()


def _plain_scalar(value: Any) -> bool:
    kind = type(value)
    if value is None or kind is bool:
        return True
    if kind is str:
        return _plain_text(value)
    if kind is int:
        return abs(value) <= SAFE_INTEGER
    return kind is float and math.isfinite(value)


def _load_plain(document: dict[str, Any]) -> dict[str, Any] | None:
    """What :data:`_SCHEMA` loads from ``document`` if it is plain, else None (undecided)."""
    ident, version = document.get("id"), document.get("version")
    if not (_plain_text(ident, 255) and ident and type(version) is int and 0 <= version <= SAFE_INTEGER):
        return None
    loaded: dict[str, Any] = {**_DEFAULTS, "id": ident, "version": version, "tags": [], "channels": [], "custom_fields": {}}
    for name, value in document.items():
        if name in _NULLABLE_TEXT:
            if value is not None and not _plain_text(value):
                return None
            loaded[name] = value
        elif name in _TIMESTAMPS:
            if value is not None:
                value = _plain_instant(value)
                if value is None:
                    return None
            loaded[name] = value
        elif name in _TEXT_LISTS:
            if type(value) is not list or len(value) > MAX_LIST or not all(_plain_text(item) for item in value):
                return None
            loaded[name] = list(dict.fromkeys(value))
        elif name == "custom_fields":
            if type(value) is not dict or len(value) > MAX_CUSTOM_FIELDS:
                return None
            for key, item in value.items():
                if type(key) is not str or not _CUSTOM_KEY.match(key) or not _plain_scalar(item):
                    return None
            loaded[name] = dict(value)
        elif name not in ("id", "version"):
            return None  # unknown: the schema names it
    return loaded
