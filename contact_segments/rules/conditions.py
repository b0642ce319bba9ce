"""The editor's condition model, and its translation to and from segment rules.

The editor shows a **group** (``{"op": "and" | "or", "conditions": [...]}``) of **conditions**
and nested groups.  A condition is ``{"category", "field", "operator", "value"}``; the category
says what the field is:

- ``contact_field``: a string field (first_name, last_name, email, phone, country, language,
  assignee, conversation_status), ``created_at``, or a custom field ``custom_fields.<key>``;
- ``contact_tag``: ``tags``; ``channel``: ``channels``; ``lifecycle``: ``lifecycle``;
  ``last_interacted_channel``: ``last_interacted_channel``;
- ``last_incoming_message`` / ``last_outgoing_message``: ``last_incoming_message_at`` /
  ``last_outgoing_message_at``, the time since the last message;
- ``advanced``: no field; operator ``jsonlogic``; the value is a segment rule, shown raw.

A fixed category's ``field`` may be omitted; it loads as the category's field.  The field's type
says which operators apply (:data:`OPERATORS_BY_TYPE`): strings take is_equal_to,
is_not_equal_to, contains, does_not_contain, exists, does_not_exist, has_any_of, has_none_of;
custom fields take those and is_greater_than, is_less_than, is_between; string lists take
has_any_of, has_all_of, has_none_of, exists, does_not_exist; timestamps take exists,
does_not_exist, is_timestamp_after, is_timestamp_before, is_timestamp_between, is_more_than_ago,
is_less_than_ago.

Values: a non-empty string (a string, number or boolean for custom fields) for equality; a
non-empty string for contains; a non-empty list of those for has_*; null for exists; a number
for greater / less; ``{"from": a, "to": b}`` (a <= b) for the betweens, both ends included; a
timestamp for the timestamp operators: epoch seconds, a date ``"2026-01-31"`` (midnight in the
workspace time zone) or an ISO 8601 datetime (``"2026-01-31T09:30:00+08:00"``; without an offset
it is local to the workspace); ``{"amount": N, "unit": "minutes" | "hours" | "days"}`` for
"more / less than N ago".

**What conditions mean** (the JSONLogic each one becomes, ``V`` being ``{"var": field}``):

- A positive condition never matches a contact whose field is empty (null, absent, ``""``,
  ``[]``).  Comparisons whose JavaScript meaning would let an empty value through (``null < x``
  is true) are guarded by "exists": ``{"and": [exists, comparison]}``.  So "last incoming
  message more than 30 days ago" does not match a contact that never sent a message.
- The negative operators (is_not_equal_to, does_not_contain, has_none_of, does_not_exist) are
  the exact complements of their positive counterparts, so they *do* match empty fields: a
  contact with no country "is not equal to MY".  A segment and its negation split all contacts.
- "exists" is ``{"!!": [V]}`` (not null, not ``""``, not ``[]``); for custom fields it is
  ``{"!": [{"missing": [field]}]}``, so that ``0`` and ``false`` exist.
- Equality is strict (``===``), like ``in`` over a list of values: a custom field holding
  ``"5"`` does not equal ``5``.
- "More than N days ago" is ``V < now - N days``, "less than N days ago" is ``V > now - N
  days``: a contact exactly N days old is neither.

The encodings, with ``E`` the "exists" above: is_equal_to ``{"===": [V, x]}``; is_not_equal_to
``{"!==": [V, x]}``; contains ``{"in": [s, V]}``; does_not_contain ``{"!": [contains]}``;
does_not_exist ``{"!": [V]}`` (custom: ``{"missing": [field]}``); has_any_of over a list field
``{"or": [{"in": [x1, V]}, ...]}``, over a string field ``{"in": [V, [x1, ...]]}``; has_all_of
``{"and": [{"in": [x1, V]}, ...]}``; has_none_of ``{"!": [has_any_of]}``; is_greater_than /
is_timestamp_after ``{"and": [E, {">": [V, x]}]}``; is_less_than / is_timestamp_before
``{"and": [E, {"<": [V, x]}]}``; the betweens ``{"and": [E, {"<=": [a, V, b]}]}``;
is_more_than_ago ``{"and": [E, {"<": [V, {"-": [{"var": "now"}, seconds]}]}]}``;
is_less_than_ago the same with ``>``; advanced: its rule.  A group is ``{"and" | "or": [...]}``,
except that an empty root group is ``true`` and a root ``and`` of a single condition is that
condition alone.

**Canonical form, and the round trip.**  :func:`load_conditions` (which
:func:`conditions_to_rule` calls) returns conditions in canonical form: the fixed categories'
fields filled in, timestamps as epoch seconds (dates and datetimes resolved in the workspace time
zone), durations in the largest unit that divides them exactly (48 hours load as 2 days), an
empty root group as ``and``, advanced rules normalised.  For every canonical group ``g``,
``rule_to_conditions(conditions_to_rule(g, tz)) == g``, and for every rule ``r`` that
``conditions_to_rule`` produced, ``conditions_to_rule(rule_to_conditions(r), tz) == r``.  The only
exception is an advanced condition whose rule, alone or next to its siblings, spells out
something else (an advanced ``{"<": [V, 0]}`` after an "exists" on the same field reads back as
"timestamp before", an advanced ``true`` alone as the empty group): it reads back as that, with
the same meaning.

A rule that does not come from conditions still reads back as closely as it can: ``and`` / ``or``
become groups, recognisable parts become conditions (including the common shorthands
``{"in": ["vip", {"var": "tags"}]}`` and ``{"==": [{"var": "country"}, "MY"]}``), and any other
part becomes an advanced condition holding its JSONLogic.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import date, datetime, time
from enum import StrEnum
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validates_schema
from marshmallow.validate import Length, OneOf, Range

from .catalog import NOW, FieldSpec, FieldType, lookup
from .validation import MAX_SAFE_INTEGER, RuleValidationError, limits_problem, validate_segment_rule


class ConditionCategory(StrEnum):
    CONTACT_FIELD = "contact_field"
    CONTACT_TAG = "contact_tag"
    LIFECYCLE = "lifecycle"
    CHANNEL = "channel"
    LAST_INTERACTED_CHANNEL = "last_interacted_channel"
    LAST_INCOMING_MESSAGE = "last_incoming_message"
    LAST_OUTGOING_MESSAGE = "last_outgoing_message"
    ADVANCED = "advanced"


class ConditionOperator(StrEnum):
    IS_EQUAL_TO = "is_equal_to"
    IS_NOT_EQUAL_TO = "is_not_equal_to"
    CONTAINS = "contains"
    DOES_NOT_CONTAIN = "does_not_contain"
    EXISTS = "exists"
    DOES_NOT_EXIST = "does_not_exist"
    IS_GREATER_THAN = "is_greater_than"
    IS_LESS_THAN = "is_less_than"
    IS_BETWEEN = "is_between"
    IS_TIMESTAMP_AFTER = "is_timestamp_after"
    IS_TIMESTAMP_BEFORE = "is_timestamp_before"
    IS_TIMESTAMP_BETWEEN = "is_timestamp_between"
    HAS_ANY_OF = "has_any_of"
    HAS_ALL_OF = "has_all_of"
    HAS_NONE_OF = "has_none_of"
    IS_MORE_THAN_AGO = "is_more_than_ago"
    IS_LESS_THAN_AGO = "is_less_than_ago"
    JSONLOGIC = "jsonlogic"  #: the advanced category's only operator


Category = ConditionCategory
Op = ConditionOperator

#: The field each fixed category is about; ``contact_field`` names its field.
CATEGORY_FIELDS: Mapping[ConditionCategory, str] = {
    Category.CONTACT_TAG: "tags",
    Category.LIFECYCLE: "lifecycle",
    Category.CHANNEL: "channels",
    Category.LAST_INTERACTED_CHANNEL: "last_interacted_channel",
    Category.LAST_INCOMING_MESSAGE: "last_incoming_message_at",
    Category.LAST_OUTGOING_MESSAGE: "last_outgoing_message_at",
}
_CATEGORY_OF_FIELD = {field: category for category, field in CATEGORY_FIELDS.items()}

_EXISTENCE = frozenset({Op.EXISTS, Op.DOES_NOT_EXIST})
_TEXT_OPERATORS = frozenset(
    {Op.IS_EQUAL_TO, Op.IS_NOT_EQUAL_TO, Op.CONTAINS, Op.DOES_NOT_CONTAIN, Op.HAS_ANY_OF, Op.HAS_NONE_OF}
)

#: The condition operators each field type takes.
OPERATORS_BY_TYPE: Mapping[FieldType, frozenset[ConditionOperator]] = {
    FieldType.STRING: _EXISTENCE | _TEXT_OPERATORS,
    FieldType.STRING_LIST: _EXISTENCE | {Op.HAS_ANY_OF, Op.HAS_ALL_OF, Op.HAS_NONE_OF},
    FieldType.TIMESTAMP: _EXISTENCE
    | {
        Op.IS_TIMESTAMP_AFTER,
        Op.IS_TIMESTAMP_BEFORE,
        Op.IS_TIMESTAMP_BETWEEN,
        Op.IS_MORE_THAN_AGO,
        Op.IS_LESS_THAN_AGO,
    },
    FieldType.CUSTOM: _EXISTENCE | _TEXT_OPERATORS | {Op.IS_GREATER_THAN, Op.IS_LESS_THAN, Op.IS_BETWEEN},
}

#: Seconds per unit of "more / less than N ... ago", largest first.
TIME_UNITS: Mapping[str, int] = {"days": 86_400, "hours": 3_600, "minutes": 60}
MAX_AMOUNT = 1_000_000


class ConditionsValidationError(ValidationError):
    """Conditions that are not valid; ``messages`` has Marshmallow's nested shape."""


# --------------------------------------------------------------------------- value fields


class JsonNumber(fields.Field[int | float]):
    """A finite JSON number; never a boolean; an integer within JavaScript's safe range."""

    default_error_messages: ClassVar[dict[str, str]] = {"invalid": "expected a number"}

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> int | float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or (isinstance(value, int) and abs(value) > MAX_SAFE_INTEGER)
        ):
            raise self.make_error("invalid")
        return value


class CustomValue(fields.Field[str | int | float | bool]):
    """What a custom field is compared with: a non-empty string, a number or a boolean."""

    default_error_messages: ClassVar[dict[str, str]] = {
        "invalid": "expected a non-empty string, a number or a boolean"
    }

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> Any:
        if isinstance(value, bool) or (isinstance(value, str) and value):
            return value
        try:
            return JsonNumber().deserialize(value)
        except ValidationError:
            raise self.make_error("invalid") from None


_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class Timestamp(fields.Field[int | str]):
    """Epoch seconds, a date ``YYYY-MM-DD`` or an ISO 8601 datetime, in whole seconds.

    Loads as given: dates and datetimes become epoch seconds once the workspace time zone is
    known (:func:`load_conditions`).
    """

    default_error_messages: ClassVar[dict[str, str]] = {
        "invalid": "expected epoch seconds, a date (YYYY-MM-DD) or an ISO 8601 datetime",
        "fraction": "timestamps are whole seconds",
    }

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> int | str:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_SAFE_INTEGER:
            return value
        if not isinstance(value, str):
            raise self.make_error("invalid")
        try:
            moment = date.fromisoformat(value) if _DATE.fullmatch(value) else datetime.fromisoformat(value)
        except ValueError:
            raise self.make_error("invalid") from None
        if isinstance(moment, datetime) and moment.microsecond:
            raise self.make_error("fraction")
        return value


class NullValue(fields.Field[None]):
    """No value at all (``exists``, ``does_not_exist``)."""

    default_error_messages: ClassVar[dict[str, str]] = {"invalid": "this operator takes no value: use null"}

    def __init__(self) -> None:
        super().__init__(allow_none=True)

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> None:
        raise self.make_error("invalid")


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class NumberRangeSchema(_Strict):
    low = JsonNumber(data_key="from", required=True)
    high = JsonNumber(data_key="to", required=True)

    @validates_schema
    def _ordered(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data["low"] > data["high"]:
            raise ValidationError("'from' must not be after 'to'")

    @post_load
    def _shape(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {"from": data["low"], "to": data["high"]}


class TimestampRangeSchema(NumberRangeSchema):
    low = Timestamp(data_key="from", required=True)
    high = Timestamp(data_key="to", required=True)

    @validates_schema
    def _ordered(self, data: dict[str, Any], **kwargs: Any) -> None:
        low, high = data["low"], data["high"]
        if isinstance(low, int) and isinstance(high, int) and low > high:  # the rest once the zone is known
            raise ValidationError("'from' must not be after 'to'")


class DurationSchema(_Strict):
    """``{"amount": N, "unit": "minutes" | "hours" | "days"}``, loaded in the largest exact unit."""

    amount = fields.Integer(strict=True, required=True, validate=Range(min=1, max=MAX_AMOUNT))
    unit = fields.String(required=True, validate=OneOf(list(TIME_UNITS)))

    @post_load
    def _largest_unit(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return _duration(data["amount"] * TIME_UNITS[data["unit"]]) or data


def _duration(seconds: Any) -> dict[str, Any] | None:
    """``seconds`` as ``{"amount", "unit"}`` in the largest unit that divides it, if any does."""
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds <= 0:
        return None
    for unit, size in TIME_UNITS.items():
        if seconds % size == 0:
            return {"amount": seconds // size, "unit": unit}
    return None


_TEXT = fields.String(validate=Length(min=1))
_NUMBER = JsonNumber()
_NUMBER_RANGE = fields.Nested(NumberRangeSchema)
_TIMESTAMP = Timestamp()
_TIMESTAMP_RANGE = fields.Nested(TimestampRangeSchema)
_DURATION = fields.Nested(DurationSchema)
_NULL = NullValue()
_TEXTS = fields.List(_TEXT, validate=Length(min=1))
_CUSTOM_VALUE = CustomValue()
_CUSTOM_VALUES = fields.List(_CUSTOM_VALUE, validate=Length(min=1))


def _value_field(spec: FieldSpec, operator: ConditionOperator) -> fields.Field[Any]:
    custom = spec.is_custom
    match operator:
        case Op.EXISTS | Op.DOES_NOT_EXIST:
            return _NULL
        case Op.IS_EQUAL_TO | Op.IS_NOT_EQUAL_TO:
            return _CUSTOM_VALUE if custom else _TEXT
        case Op.CONTAINS | Op.DOES_NOT_CONTAIN:
            return _TEXT
        case Op.HAS_ANY_OF | Op.HAS_ALL_OF | Op.HAS_NONE_OF:
            return _CUSTOM_VALUES if custom else _TEXTS
        case Op.IS_GREATER_THAN | Op.IS_LESS_THAN:
            return _NUMBER
        case Op.IS_BETWEEN:
            return _NUMBER_RANGE
        case Op.IS_TIMESTAMP_AFTER | Op.IS_TIMESTAMP_BEFORE:
            return _TIMESTAMP
        case Op.IS_TIMESTAMP_BETWEEN:
            return _TIMESTAMP_RANGE
        case _:
            return _DURATION


# --------------------------------------------------------------------------- conditions and groups


class ConditionSchema(_Strict):
    """One condition: ``{"category", "field", "operator", "value"}``, checked as a whole."""

    category = fields.String(required=True, validate=OneOf([c.value for c in Category]))
    field = fields.String(load_default=None, allow_none=True)
    operator = fields.String(required=True, validate=OneOf([o.value for o in Op]))
    value = fields.Raw(load_default=None, allow_none=True)

    @post_load
    def _condition(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        category, name, operator, value = (data[key] for key in ("category", "field", "operator", "value"))
        if category == Category.ADVANCED:
            return _advanced(name, operator, value)
        spec = _field_of(category, name)
        if operator not in OPERATORS_BY_TYPE[spec.type]:
            raise ValidationError(
                {"operator": [f"{operator!r} does not apply to {spec.name!r} ({spec.type})"]}
            )
        try:
            value = _value_field(spec, Op(operator)).deserialize(value)
        except ValidationError as error:
            raise ValidationError({"value": error.messages}) from None
        return _condition(spec.name, Op(operator), value)


def _advanced(name: Any, operator: str, value: Any) -> dict[str, Any]:
    problems: dict[str, Any] = {}
    if name is not None:
        problems["field"] = ["an advanced condition has no field"]
    if operator != Op.JSONLOGIC:
        problems["operator"] = [f"an advanced condition's operator is {Op.JSONLOGIC.value!r}"]
    try:
        value = validate_segment_rule(value)
    except RuleValidationError as error:
        problems["value"] = error.messages
    if problems:
        raise ValidationError(problems)
    return {
        "category": Category.ADVANCED.value,
        "field": None,
        "operator": Op.JSONLOGIC.value,
        "value": value,
    }


def _field_of(category: str, name: str | None) -> FieldSpec:
    implied = CATEGORY_FIELDS.get(Category(category))
    if implied is not None:
        if name not in (None, implied):
            raise ValidationError({"field": [f"the {category!r} category is about {implied!r}"]})
        name = implied
    elif name is None:
        raise ValidationError({"field": ["a contact field condition names its field"]})
    elif name in _CATEGORY_OF_FIELD:
        raise ValidationError(
            {"field": [f"{name!r} has a category of its own: {_CATEGORY_OF_FIELD[name].value!r}"]}
        )
    spec = lookup(name)
    if spec is None or spec.is_reserved:
        raise ValidationError({"field": [f"unknown field {name!r}"]})
    return spec


def _condition(name: str, operator: ConditionOperator, value: Any) -> dict[str, Any]:
    category = _CATEGORY_OF_FIELD.get(name, Category.CONTACT_FIELD)
    return {"category": category.value, "field": name, "operator": operator.value, "value": value}


class GroupMember(fields.Field[dict[str, Any]]):
    """An item of a group: a condition (it has a ``category``) or a non-empty nested group."""

    default_error_messages: ClassVar[dict[str, str]] = {
        "invalid": "expected a condition (with a 'category') or a group (with 'op' and 'conditions')",
        "empty": "a nested group needs at least one condition",
    }

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> dict[str, Any]:
        if not isinstance(value, dict) or not ({"category", "op", "conditions"} & value.keys()):
            raise self.make_error("invalid")
        if "category" in value:
            return ConditionSchema().load(value)
        group = ConditionGroupSchema().load(value)
        if not group["conditions"]:
            raise ValidationError({"conditions": [self.error_messages["empty"]]})
        return group


class ConditionGroupSchema(_Strict):
    """``{"op": "and" | "or", "conditions": [condition or group, ...]}``."""

    op = fields.String(required=True, validate=OneOf(["and", "or"]))
    conditions = fields.List(GroupMember(), required=True)


# --------------------------------------------------------------------------- loading


def load_conditions(group: Any, tz: str | ZoneInfo) -> dict[str, Any]:
    """Validate a condition group and return it in canonical form (see the module's doc).

    ``tz`` is the workspace's IANA time zone, for timestamps given as dates or local datetimes.
    Raises :class:`ConditionsValidationError`.
    """
    zone = _zone(tz)
    problem = limits_problem(group, subject="the condition group")
    if problem:
        raise ConditionsValidationError({"_schema": [problem]})
    try:
        loaded = ConditionGroupSchema().load(group)
    except ValidationError as error:
        raise ConditionsValidationError(error.messages) from None
    errors: dict[str, Any] = {}
    loaded = _resolve_timestamps(loaded, zone, errors)
    if errors:
        raise ConditionsValidationError(errors)
    if not loaded["conditions"]:
        loaded["op"] = "and"
    return loaded


def _zone(tz: str | ZoneInfo) -> ZoneInfo:
    if isinstance(tz, ZoneInfo):
        return tz
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConditionsValidationError({"tz": [f"unknown time zone {tz!r}"]}) from None


def _to_epoch(value: int | str, zone: ZoneInfo) -> int:
    if isinstance(value, int):
        return value
    if _DATE.fullmatch(value):
        moment = datetime.combine(date.fromisoformat(value), time(), tzinfo=zone)
    else:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=zone)
    return int(moment.timestamp())


def _resolve_timestamps(item: dict[str, Any], zone: ZoneInfo, errors: dict[str, Any]) -> dict[str, Any]:
    """``item`` with its timestamps as epoch seconds; problems go to ``errors``, shaped like Marshmallow's."""
    if "op" in item:
        members = []
        for index, member in enumerate(item["conditions"]):
            member_errors: dict[str, Any] = {}
            members.append(_resolve_timestamps(member, zone, member_errors))
            if member_errors:
                errors.setdefault("conditions", {})[index] = member_errors
        return {"op": item["op"], "conditions": members}
    operator, value = item["operator"], item["value"]
    if operator in (Op.IS_TIMESTAMP_AFTER, Op.IS_TIMESTAMP_BEFORE):
        return {**item, "value": _to_epoch(value, zone)}
    if operator == Op.IS_TIMESTAMP_BETWEEN:
        low, high = _to_epoch(value["from"], zone), _to_epoch(value["to"], zone)
        if low > high:
            errors["value"] = {"_schema": ["'from' must not be after 'to'"]}
        return {**item, "value": {"from": low, "to": high}}
    return item


# --------------------------------------------------------------------------- conditions -> rule


def conditions_to_rule(group: Any, tz: str | ZoneInfo) -> Any:
    """The segment rule a condition group means.

    An empty group is ``true`` (every contact); a root ``and`` group of one condition is that
    condition's rule alone; any other group is ``{"and" | "or": [member, ...]}``.

    Raises :class:`ConditionsValidationError` for invalid conditions, or for conditions too
    large for a segment rule (``{"rule": {json path: message}}``).
    """
    loaded = load_conditions(group, tz)
    members = loaded["conditions"]
    if not members:
        rule: Any = True
    elif loaded["op"] == "and" and len(members) == 1 and "op" not in members[0]:
        rule = _encode(members[0])  # one condition needs no group around it
    else:
        rule = _encode(loaded)
    try:
        return validate_segment_rule(rule)
    except RuleValidationError as error:
        raise ConditionsValidationError({"rule": error.messages}) from None


def _encode(item: dict[str, Any]) -> Any:
    if "op" in item:
        return {item["op"]: [_encode(member) for member in item["conditions"]]}
    return _encode_condition(item)


def _encode_condition(condition: dict[str, Any]) -> Any:
    operator, name, value = condition["operator"], condition["field"], condition["value"]
    if operator == Op.JSONLOGIC:
        return value
    spec = lookup(name)
    assert spec is not None, name
    var = {"var": name}
    exists = {"!": [{"missing": [name]}]} if spec.is_custom else {"!!": [var]}

    def guarded(comparison: dict[str, Any]) -> dict[str, Any]:
        return {"and": [exists, comparison]}

    match operator:
        case Op.IS_EQUAL_TO:
            return {"===": [var, value]}
        case Op.IS_NOT_EQUAL_TO:
            return {"!==": [var, value]}
        case Op.CONTAINS:
            return {"in": [value, var]}
        case Op.DOES_NOT_CONTAIN:
            return {"!": [{"in": [value, var]}]}
        case Op.EXISTS:
            return exists
        case Op.DOES_NOT_EXIST:
            return {"missing": [name]} if spec.is_custom else {"!": [var]}
        case Op.HAS_ANY_OF:
            return _any_of(spec, value)
        case Op.HAS_ALL_OF:
            return {"and": [{"in": [item, var]} for item in value]}
        case Op.HAS_NONE_OF:
            return {"!": [_any_of(spec, value)]}
        case Op.IS_GREATER_THAN | Op.IS_TIMESTAMP_AFTER:
            return guarded({">": [var, value]})
        case Op.IS_LESS_THAN | Op.IS_TIMESTAMP_BEFORE:
            return guarded({"<": [var, value]})
        case Op.IS_BETWEEN | Op.IS_TIMESTAMP_BETWEEN:
            return guarded({"<=": [value["from"], var, value["to"]]})
        case Op.IS_MORE_THAN_AGO:
            return guarded({"<": [var, _ago(value)]})
        case Op.IS_LESS_THAN_AGO:
            return guarded({">": [var, _ago(value)]})
    raise AssertionError(operator)


def _any_of(spec: FieldSpec, values: list[Any]) -> dict[str, Any]:
    var = {"var": spec.name}
    if spec.type is FieldType.STRING_LIST:
        return {"or": [{"in": [item, var]} for item in values]}
    return {"in": [var, list(values)]}


def _ago(duration: dict[str, Any]) -> dict[str, Any]:
    return {"-": [{"var": NOW}, duration["amount"] * TIME_UNITS[duration["unit"]]]}


# --------------------------------------------------------------------------- rule -> conditions


def rule_to_conditions(rule: Any, *, canonical: bool = False) -> dict[str, Any]:
    """The condition group a segment rule reads as in the editor (canonical form).

    The rule is validated first (:class:`~.validation.RuleValidationError` if it is not a segment
    rule), unless ``canonical`` says it is already what :func:`validate_segment_rule` returned.
    ``true`` reads as the empty group.
    """
    if not canonical:
        rule = validate_segment_rule(rule)
    if rule is True:
        return {"op": "and", "conditions": []}
    condition = _decode_condition(rule)
    if condition is not None:
        return {"op": "and", "conditions": [condition]}
    if _group_op(rule):
        return _decode_group(rule)
    return {"op": "and", "conditions": [_advanced_condition(rule)]}


def filter_count(rule: Any) -> int:
    """The number on the filter badge: how many conditions the rule reads as, in all its groups."""
    count, stack = 0, [rule_to_conditions(rule)]
    while stack:
        item = stack.pop()
        if "op" in item:
            stack.extend(item["conditions"])
        else:
            count += 1
    return count


def _group_op(node: Any) -> str | None:
    if isinstance(node, dict) and len(node) == 1:
        ((op, args),) = node.items()
        if op in ("and", "or") and isinstance(args, list) and args:
            return op
    return None


def _decode_group(node: dict[str, Any]) -> dict[str, Any]:
    ((op, args),) = node.items()
    return {"op": op, "conditions": [_decode(arg) for arg in args]}


def _decode(node: Any) -> dict[str, Any]:
    condition = _decode_condition(node)
    if condition is not None:
        return condition
    if _group_op(node):
        return _decode_group(node)
    return _advanced_condition(node)


def _advanced_condition(node: Any) -> dict[str, Any]:
    return {"category": Category.ADVANCED.value, "field": None, "operator": Op.JSONLOGIC.value, "value": node}


_CONDITION_SCHEMA = ConditionSchema()


def _decode_condition(node: Any) -> dict[str, Any] | None:
    """The condition ``node`` encodes exactly, or means in a known shorthand; else ``None``.

    Guesses by shape, then accepts the guess only if it is a valid, canonical condition that
    encodes back to ``node`` itself: so what is decoded always means what the rule said.
    """
    candidate = _guess(node)
    if candidate is not None:
        try:
            loaded = _CONDITION_SCHEMA.load(candidate)
        except ValidationError:
            loaded = None
        if loaded == candidate and _encode_condition(candidate) == node:
            return candidate
    tidy = _tidy(node)
    return _decode_condition(tidy) if tidy != node else None


def _tidy(node: Any) -> Any:
    """Rewrite a common shorthand into the form conditions use, with exactly the same meaning.

    ``{"in": [s, tags]}`` is ``{"or": [{"in": [s, tags]}]}`` (``or`` of one value is that value);
    ``==`` and ``!=`` between a string field and a string are ``===`` and ``!==`` (JavaScript's
    loose and strict equality agree on strings and null).
    """
    split = _split(node)
    if split is None:
        return node
    op, args = split
    if op == "!" and len(args) == 1:
        return {"!": [_tidy(args[0])]}
    if op == "in" and len(args) == 2 and isinstance(args[0], str) and _field(args[1], FieldType.STRING_LIST):
        return {"or": [node]}
    if (
        op in ("==", "!=")
        and len(args) == 2
        and isinstance(args[1], str)
        and _field(args[0], FieldType.STRING)
    ):
        return {_STRICT[op]: args}
    return node


_STRICT = {"==": "===", "!=": "!=="}


def _split(node: Any) -> tuple[str, list[Any]] | None:
    if isinstance(node, dict) and len(node) == 1:
        ((op, args),) = node.items()
        if isinstance(args, list):
            return op, args
    return None


def _field(node: Any, *types: FieldType) -> FieldSpec | None:
    """The spec of a plain ``{"var": name}`` node, if it is of one of ``types`` (any, if none given)."""
    if not (isinstance(node, dict) and len(node) == 1 and isinstance(node.get("var"), str)):
        return None
    spec = lookup(node["var"])
    if spec is None or spec.is_reserved or (types and spec.type not in types):
        return None
    return spec


_NEGATIONS = {Op.CONTAINS: Op.DOES_NOT_CONTAIN, Op.HAS_ANY_OF: Op.HAS_NONE_OF, Op.DOES_NOT_EXIST: Op.EXISTS}


def _guess(node: Any) -> dict[str, Any] | None:
    """A condition ``node`` looks like, by shape alone (:func:`_decode_condition` checks it)."""
    split = _split(node)
    if split is None:
        return None
    op, args = split
    match op, args:
        case "===" | "!==", [var, value] if spec := _field(var):
            return _condition(spec.name, Op.IS_EQUAL_TO if op == "===" else Op.IS_NOT_EQUAL_TO, value)
        case "in", [str() as needle, var] if spec := _field(var, FieldType.STRING, FieldType.CUSTOM):
            return _condition(spec.name, Op.CONTAINS, needle)
        case "in", [var, list() as values] if spec := _field(var):
            return _condition(spec.name, Op.HAS_ANY_OF, values)
        case "or" | "and", [_, *_]:
            members = _guess_members(Op.HAS_ANY_OF if op == "or" else Op.HAS_ALL_OF, args)
            return members or _guess_guarded(args)
        case "!!", [var] if spec := _field(var):
            return _condition(spec.name, Op.EXISTS, None)
        case "missing", [str() as name] if spec := _field({"var": name}):
            return _condition(spec.name, Op.DOES_NOT_EXIST, None)
        case "!", [var] if spec := _field(var):
            return _condition(spec.name, Op.DOES_NOT_EXIST, None)
        case "!", [inner]:
            positive = _guess(inner)
            negation = _NEGATIONS.get(positive["operator"]) if positive else None
            if positive and negation:
                return {**positive, "operator": negation.value}
    return None


def _guess_members(operator: ConditionOperator, args: list[Any]) -> dict[str, Any] | None:
    """``{"or" | "and": [{"in": [s, V]}, ...]}`` over one string list field."""
    names, values = set(), []
    for arg in args:
        match _split(arg):
            case "in", [str() as value, var] if spec := _field(var, FieldType.STRING_LIST):
                names.add(spec.name)
                values.append(value)
            case _:
                return None
    return _condition(names.pop(), operator, values) if len(names) == 1 else None


def _guess_guarded(args: list[Any]) -> dict[str, Any] | None:
    """``{"and": [exists, comparison]}``: a comparison that an empty value must not pass."""
    if len(args) != 2 or (split := _split(args[1])) is None:
        return None
    op, operands = split
    match op, operands:
        case ">" | "<", [var, {"-": [{"var": "now"}, seconds]}] if spec := _field(var, FieldType.TIMESTAMP):
            operator = Op.IS_LESS_THAN_AGO if op == ">" else Op.IS_MORE_THAN_AGO
            return _condition(spec.name, operator, _duration(seconds))
        case ">" | "<", [var, value] if spec := _field(var, FieldType.TIMESTAMP, FieldType.CUSTOM):
            timestamp = spec.type is FieldType.TIMESTAMP
            operator = {
                (">", True): Op.IS_TIMESTAMP_AFTER,
                ("<", True): Op.IS_TIMESTAMP_BEFORE,
                (">", False): Op.IS_GREATER_THAN,
                ("<", False): Op.IS_LESS_THAN,
            }[op, timestamp]
            return _condition(spec.name, operator, value)
        case "<=", [low, var, high] if spec := _field(var, FieldType.TIMESTAMP, FieldType.CUSTOM):
            operator = Op.IS_TIMESTAMP_BETWEEN if spec.type is FieldType.TIMESTAMP else Op.IS_BETWEEN
            return _condition(spec.name, operator, {"from": low, "to": high})
    return None
