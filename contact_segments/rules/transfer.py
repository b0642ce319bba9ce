"""The export format: segment definitions as one JSON document, and its validation.

An export moves segment definitions between workspaces, between staging and production, into
version control and out of other tools.  It holds definitions only, never memberships or counts::

    {
      "exported_at": "2026-01-31T09:30:00Z",
      "format": "contact-segments/export",
      "format_version": 1,
      "segments": [
        {
          "conditions": {"op": "and", "conditions": [...]},
          "description": "",
          "is_default": true,
          "name": "Country known",
          "rule": {"!!": [{"var": "country"}]}
        }
      ],
      "workspace": {"id": "acme", "timezone": "Asia/Kuala_Lumpur"}
    }

- ``format`` is always ``"contact-segments/export"``; ``format_version`` is :data:`FORMAT_VERSION`.
  A document of a newer version is refused with a message saying so, before anything else is
  checked (a newer version may add fields this one would call unknown).
- ``exported_at`` is the instant of the export, an RFC 3339 UTC string in whole seconds.
- ``workspace`` is the source workspace: its id, and its IANA time zone (in which the dates of
  ``conditions`` are read).
- ``segments`` holds 1 to :data:`MAX_SEGMENTS` segments (a workspace's limit), each with its
  ``name`` (unique in the file, compared trimmed and case-folded; at most 100 characters, one
  line), ``description`` (a string, possibly empty), ``rule`` (a segment rule, see
  :mod:`.validation`), ``conditions`` (the editor's condition group when the rule fits the
  condition model, else ``null``) and ``is_default`` (whether it began as a default segment).
- Every field is required (``conditions`` may be ``null``), and no other field is allowed, at
  any level.
- The rule is authoritative.  ``conditions`` is there for tools that show conditions; when it is
  not ``null`` it must describe the rule.  An importer keeps the rule and derives conditions
  from it.
- A file is at most :data:`MAX_EXPORT_BYTES` (16 MiB) of UTF-8 JSON; a larger one is refused by
  its size alone, before it is read or parsed.  500 segments with rules of 40 nodes make about
  2 MB (with conditions, pretty-printed), so the limit leaves room for rules eight times that.

Exports are written by :func:`dump_export` with sorted keys, two-space indentation and fixed
separators, so the same document is always the same bytes.

:func:`check_export` validates a document (text, bytes or parsed JSON) and reports **every**
problem at once, each keyed by the JSON path of the offending node: ``format_version``,
``workspace.timezone``, ``segments[3].name``, ``segments[3].rule.and[1]``,
``segments[3].conditions.conditions[0].operator``; ``$`` is the document itself.

The Marshmallow schemas below define the format; :func:`export_json_schema` generates a JSON
Schema (draft 2020-12) from them, shipped as ``fixtures/export.schema.json`` so that other tools
can check an export's structure without Python.  (JSON Schema cannot say everything: which
fields a rule may name and what may be compared with them, unique names, and that conditions
describe the rule are checked here only.)  Regenerate it with
``python -m contact_segments.rules.transfer > contact_segments/fixtures/export.schema.json``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from marshmallow import RAISE, Schema, ValidationError, fields, pre_load
from marshmallow.validate import Equal, Length, OneOf, Range

from . import jsontext
from .conditions import (
    ConditionGroupSchema,
    ConditionSchema,
    ConditionsValidationError,
    GroupMember,
    conditions_to_rule,
    load_conditions,
    rule_to_conditions,
)
from .errors import ROOT, quote
from .validation import RuleValidationError, SegmentRule, _Checker, string_problem

FORMAT = "contact-segments/export"
FORMAT_VERSION = 1
MAX_SEGMENTS = 500
MAX_EXPORT_BYTES = 16 * 1024 * 1024
MAX_NAME_LENGTH = 100
MAX_WORKSPACE_ID_LENGTH = 255
#: Past this many unknown fields in one object, the rest are not listed.
MAX_UNKNOWN = 20

Problems = dict[str, str]


class ExportValidationError(ValueError):
    """A document that is not a valid export; ``messages`` maps each JSON path to what is wrong there."""

    def __init__(self, messages: Mapping[str, str]) -> None:
        self.messages = dict(messages)
        super().__init__("; ".join(f"{path}: {message}" for path, message in self.messages.items()))


@dataclass(frozen=True)
class ExportedSegment:
    """One segment of a valid export, normalised: the name trimmed (NFC), the rule canonical,
    and ``conditions`` the canonical condition group the rule reads as (derived from the rule,
    whatever the file said)."""

    name: str
    description: str
    rule: Any
    conditions: dict[str, Any]
    is_default: bool

    @property
    def name_key(self) -> str:
        return name_key(self.name)


@dataclass(frozen=True)
class Export:
    """A valid export, loaded."""

    format_version: int
    exported_at: datetime
    workspace_id: str
    timezone: str
    segments: tuple[ExportedSegment, ...]


def name_key(name: str) -> str:
    """How segment names are compared: trimmed and case-folded (as storage compares them)."""
    return name.strip().casefold()


# --------------------------------------------------------------------------- fields

_MESSAGES = {
    "required": "required field is missing",
    "null": "must not be null",
}


def _required(**kwargs: Any) -> dict[str, Any]:
    return {"required": True, "error_messages": dict(_MESSAGES), **kwargs}


def _text(**kwargs: Any) -> dict[str, Any]:
    """A required string field's arguments."""
    return {"required": True, "error_messages": {**_MESSAGES, "invalid": "expected a string"}, **kwargs}


class SegmentName(fields.String):
    """A segment name: loads NFC-normalised and trimmed; 1-100 characters, one line, no control
    characters (the rules of ``service.segments.clean_name``)."""

    default_error_messages: ClassVar[dict[str, str]] = {
        "invalid": "expected a string",
        "empty": "a segment name must not be empty",
        "long": "a segment name has at most {max} characters, this one {length}",
        "control": "a segment name must not contain control characters, line breaks or lone surrogates",
    }

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> str:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        cleaned = unicodedata.normalize("NFC", value).strip()
        if not cleaned:
            raise self.make_error("empty")
        if len(cleaned) > MAX_NAME_LENGTH:
            raise self.make_error("long", max=MAX_NAME_LENGTH, length=len(cleaned))
        if any(unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") for ch in cleaned):
            raise self.make_error("control")
        return cleaned

    def json_schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "string",
            "minLength": 1,
            "pattern": r"\S",
            "description": (
                f"Unique in the file and in a workspace, compared trimmed and case-folded; at most "
                f"{MAX_NAME_LENGTH} characters once trimmed; no control characters or line breaks."
            ),
        }


class Description(fields.String):
    """Free text, possibly empty, that a database can store (no NUL, no lone surrogates)."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if problem := string_problem(text):
            raise ValidationError(problem)
        return text

    def json_schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        return {"type": "string"}


class StrictBoolean(fields.Boolean):
    """``true`` or ``false``, nothing that merely looks like one."""

    default_error_messages: ClassVar[dict[str, str]] = {"invalid": "expected true or false"}

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class FormatVersion(fields.Field[int]):
    """The format version: a whole number from 1 to :data:`FORMAT_VERSION`."""

    default_error_messages: ClassVar[dict[str, str]] = {
        "invalid": f"expected a whole number (the format version, {FORMAT_VERSION})",
        "old": f"format versions start at 1; this contact-segments reads versions 1 to {FORMAT_VERSION}",
        "newer": (
            "this export is format version {version}, newer than this contact-segments understands "
            f"(versions up to {FORMAT_VERSION}): upgrade contact-segments to read it"
        ),
    }

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.make_error("invalid")
        if value < 1:
            raise self.make_error("old")
        if value > FORMAT_VERSION:
            raise self.make_error("newer", version=value)
        return value

    def json_schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        return {"type": "integer", "minimum": 1, "maximum": FORMAT_VERSION}


class ExportInstant(fields.AwareDateTime):
    """An instant with a zone offset (RFC 3339, e.g. ``2026-01-31T09:30:00Z``)."""

    default_error_messages: ClassVar[dict[str, str]] = {
        "invalid": "expected an RFC 3339 date-time, e.g. 2026-01-31T09:30:00Z",
        "invalid_awareness": "expected a date-time with a zone offset, e.g. 2026-01-31T09:30:00Z",
    }

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> datetime:
        if isinstance(value, str) and not (value.isascii() and value.isprintable()):
            raise self.make_error("invalid")  # datetime.fromisoformat reads "...Z\x00" as "...Z"
        return super()._deserialize(value, attr, data, **kwargs)

    def json_schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        return {"type": "string", "format": "date-time"}


class TimeZoneName(fields.String):
    """An IANA time zone name known to this machine's zone database."""

    default_error_messages: ClassVar[dict[str, str]] = {
        "invalid": "expected an IANA time zone name, e.g. Asia/Kuala_Lumpur",
        "unknown": "unknown time zone {name!r} (use an IANA name, e.g. Asia/Kuala_Lumpur)",
    }

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> str:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        if not value or len(value) > 64 or ".." in value or value.startswith("/"):
            raise self.make_error("unknown", name=value)
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise self.make_error("unknown", name=value) from None
        return value

    def json_schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        return {"type": "string", "minLength": 1, "maxLength": 64, "description": "An IANA time zone name."}


class EditorConditions(fields.Raw):
    """The editor's condition group, or ``null``.  Whether it is a valid group that describes the
    rule is checked with the rule (see :func:`check_export`), within the rules' limits."""

    default_error_messages: ClassVar[dict[str, str]] = {
        "invalid": 'expected a condition group ({{"op": "and", "conditions": [...]}}) or null',
    }

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> Any:
        if not isinstance(value, dict):
            raise self.make_error("invalid")
        return value

    def json_schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        return {"anyOf": [{"type": "null"}, _schema_ref(ConditionGroupSchema, defs)]}


# --------------------------------------------------------------------------- schemas


class _Strict(Schema):
    class Meta:
        unknown = RAISE

    error_messages: ClassVar[dict[str, str]] = {  # type: ignore[misc]
        "type": "expected a JSON object",
        "unknown": "unknown field",
    }

    @pre_load
    def _few_unknown_fields(self, data: Any, **kwargs: Any) -> Any:
        """Past :data:`MAX_UNKNOWN` unknown fields, name a few and stop: Marshmallow reports each
        one, at ~25 µs apiece (a million would take half a minute)."""
        if isinstance(data, Mapping) and len(data) > len(self.load_fields) + MAX_UNKNOWN:
            known = {schema_field.data_key or name for name, schema_field in self.load_fields.items()}
            unknown = [key for key in data if key not in known]
            raise ValidationError(
                f"{len(unknown):,} unknown fields, e.g. {', '.join(quote(key, 40) for key in unknown[:5])}"
            )
        return data


class WorkspaceSchema(_Strict):
    """The source workspace."""

    id = fields.String(
        **_text(
            validate=Length(
                min=1,
                max=MAX_WORKSPACE_ID_LENGTH,
                error=f"a workspace id has 1 to {MAX_WORKSPACE_ID_LENGTH} characters",
            )
        ),
        metadata={"description": "The source workspace's id."},
    )
    timezone = TimeZoneName(
        **_required(),
        metadata={
            "description": "The source workspace's IANA time zone, in which dates in conditions are read."
        },
    )


class SegmentSchema(_Strict):
    """One segment's definition."""

    name = SegmentName(**_required())
    description = Description(**_text(), metadata={"description": "Free text; may be empty."})
    rule = SegmentRule(
        **_required(),
        metadata={
            "description": "The segment rule: JSONLogic over the contact evaluation view (authoritative)."
        },
    )
    conditions = EditorConditions(
        **_required(allow_none=True),
        metadata={
            "description": "The editor's condition group when the rule fits the condition model, else null; "
            "when given it must describe the rule."
        },
    )
    is_default = StrictBoolean(
        **_required(), metadata={"description": "Whether the segment began as one of the default segments."}
    )


class ExportSchema(_Strict):
    """A contact-segments export: segment definitions, without memberships or counts."""

    format = fields.String(**_text(validate=Equal(FORMAT, error=f"expected {FORMAT!r}")))
    format_version = FormatVersion(**_required())
    exported_at = ExportInstant(**_required(), metadata={"description": "When the export was made (UTC)."})
    workspace = fields.Nested(WorkspaceSchema, **_required())
    segments = fields.List(
        fields.Nested(SegmentSchema),
        **_required(
            validate=Length(
                min=1,
                max=MAX_SEGMENTS,
                error=f"an export holds 1 to {MAX_SEGMENTS} segments, this one {{length}}",
            )
        ),
    )


_ENVELOPE = ExportSchema(exclude=("segments",))
_WORKSPACE = WorkspaceSchema()
_SEGMENT = SegmentSchema()

#: At most this many problems are listed; the entry :data:`MORE` then says how many more there were.
MAX_PROBLEMS = 100
MORE = "…"
#: Unknown fields listed per object (a million unknown fields is one problem, not a million).
MAX_UNKNOWN_LISTED = 10


# --------------------------------------------------------------------------- checking


def check_export(document: Any) -> tuple[Export | None, Problems]:
    """Validate an export given as JSON text (``str``), UTF-8 bytes, or an already parsed value.

    Returns the loaded export and no problems, or ``None`` and every problem found, keyed by JSON
    path in document order.  Never raises for bad input.
    """
    problems: Problems = {}
    if isinstance(document, str | bytes | bytearray):
        document = _parse(document, problems)
        if problems:
            return None, problems
    if not isinstance(document, dict):
        return None, {
            ROOT: f'not an export: expected a JSON object with "format": {json.dumps(FORMAT)}, found {_describe(document)}'
        }
    fmt = document.get("format")
    if fmt != FORMAT and "segments" not in document:
        what = 'no "format"' if "format" not in document else f'"format": {_short(fmt)}'
        return None, {
            ROOT: f'not a contact-segments export: expected "format": {json.dumps(FORMAT)}, found {what}'
        }
    version = document.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        return None, {"format_version": FormatVersion().error_messages["newer"].format(version=version)}

    envelope_data = _known_only(_ENVELOPE, document, "", problems, also=("segments",))
    envelope_data.pop("segments", None)
    if isinstance(envelope_data.get("workspace"), dict):
        envelope_data["workspace"] = _known_only(
            _WORKSPACE, envelope_data["workspace"], "workspace", problems
        )
    envelope = _load(_ENVELOPE, envelope_data, "", problems)
    segments = _check_segments(document, envelope, problems)
    if problems or envelope is None or segments is None:
        return None, _ordered(problems)
    return Export(
        format_version=envelope["format_version"],
        exported_at=envelope["exported_at"],
        workspace_id=envelope["workspace"]["id"],
        timezone=envelope["workspace"]["timezone"],
        segments=tuple(segments),
    ), {}


def load_export(document: Any) -> Export:
    """:func:`check_export`, raising :class:`ExportValidationError` with every problem."""
    export, problems = check_export(document)
    if export is None:
        raise ExportValidationError(problems)
    return export


def _parse(text: str | bytes | bytearray, problems: Problems) -> Any:
    size = len(text) if not isinstance(text, str) else _utf8_length(text)
    if size > MAX_EXPORT_BYTES:
        problems[ROOT] = too_large_message(size)
        return None
    try:
        return jsontext.loads(text if isinstance(text, str) else jsontext.decode(text))
    except jsontext.JSONTextError as error:
        problems[ROOT] = f"not JSON: {error}"
    return None


def _utf8_length(text: str) -> int:
    """The length of ``text`` in UTF-8, without a copy for ASCII (or hopelessly long) text."""
    if text.isascii() or len(text) > MAX_EXPORT_BYTES:
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def too_large_message(size: int) -> str:
    return (
        f"the file is too large: {size:,} bytes, more than the {MAX_EXPORT_BYTES // (1024 * 1024)} MiB "
        f"({MAX_EXPORT_BYTES:,} bytes) an export may have"
    )


def _check_segments(
    document: dict[str, Any], envelope: Any, problems: Problems
) -> list[ExportedSegment] | None:
    if "segments" not in document:
        problems["segments"] = _MESSAGES["required"]
        return None
    items = document["segments"]
    if not isinstance(items, list):
        problems["segments"] = f"expected a list of segments, found {_describe(items)}"
        return None
    if not items or len(items) > MAX_SEGMENTS:
        # Over the limit the items are not checked at all: a huge list costs no more than a small one.
        problems["segments"] = (
            "an export holds at least one segment, this one none"
            if not items
            else f"an export holds at most {MAX_SEGMENTS} segments (a workspace's limit), this one {len(items):,}"
        )
        return None
    timezone = envelope["workspace"]["timezone"] if envelope is not None else "UTC"
    segments: list[ExportedSegment] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        path = f"segments[{index}]"
        if isinstance(item, dict):
            item = _known_only(_SEGMENT, item, path, problems)
        loaded = _load(_SEGMENT, item, path, problems)
        if loaded is None:  # still check what can be checked alone
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                _check_duplicate(item["name"], index, seen, problems)
            if isinstance(item, dict) and f"{path}.conditions" not in problems:
                given = item.get("conditions")
                if isinstance(given, dict):
                    _check_conditions(given, None, None, timezone, f"{path}.conditions", problems)
            continue
        _check_duplicate(loaded["name"], index, seen, problems)
        conditions = rule_to_conditions(loaded["rule"], canonical=True)  # SegmentRule validated it
        if loaded["conditions"] is not None:
            _check_conditions(
                loaded["conditions"], loaded["rule"], conditions, timezone, f"{path}.conditions", problems
            )
        segments.append(
            ExportedSegment(
                name=loaded["name"],
                description=loaded["description"],
                rule=loaded["rule"],
                conditions=conditions,
                is_default=loaded["is_default"],
            )
        )
    return segments


def _check_duplicate(name: str, index: int, seen: dict[str, int], problems: Problems) -> None:
    key = name_key(unicodedata.normalize("NFC", name))
    if not key:
        return
    first = seen.setdefault(key, index)
    if first != index:
        _report(
            problems,
            f"segments[{index}].name",
            f"duplicate name {quote(name.strip())}: segments[{first}] has the same name "
            "(names are compared trimmed and case-insensitively)",
        )


def _check_conditions(
    given: Any, rule: Any, derived: dict[str, Any] | None, tz: str, path: str, problems: Problems
) -> None:
    """``given`` must be a valid condition group that describes ``rule`` (whose group is
    ``derived``); without a rule (it is invalid), only that it is a valid group.

    ``given == derived`` is safe for any ``given``: the comparison goes no deeper than
    ``derived``, which is within the rules' limits; :func:`load_conditions` checks the limits
    before it walks anything."""
    if derived is not None and given == derived:  # what an export writes: no need to load it
        return
    try:
        loaded = load_conditions(given, tz)
    except ConditionsValidationError as error:
        _flatten(error.messages, path, problems)
        return
    if derived is None or loaded == derived:
        return
    try:
        meaning = conditions_to_rule(loaded, tz)
    except (ConditionsValidationError, RuleValidationError):
        meaning = None
    if meaning == rule:
        return
    described = "" if meaning is None else f" (they mean {_short(meaning, 120)})"
    _report(
        problems,
        path,
        f"the conditions do not describe the rule{described}: the rule is what is imported; "
        "correct the conditions, or set them to null",
    )


# --------------------------------------------------------------------------- errors by path


def _known_only(
    schema: Schema, data: dict[Any, Any], path: str, problems: Problems, also: tuple[str, ...] = ()
) -> dict[Any, Any]:
    """``data`` without the fields ``schema`` does not know, each reported (the first few by
    name, then how many more), so that Marshmallow never builds an error per unknown field."""
    known = {schema_field.data_key or name for name, schema_field in schema.load_fields.items()} | set(also)
    if all(key in known for key in data):
        return dict(data)
    unknown = [key for key in data if key not in known]
    for key in unknown[:MAX_UNKNOWN_LISTED]:
        _report(problems, _join(path, key if isinstance(key, str) else repr(key)), "unknown field")
    if len(unknown) > MAX_UNKNOWN_LISTED:
        _report(problems, path or ROOT, f"{len(unknown) - MAX_UNKNOWN_LISTED:,} more unknown fields")
    return {key: data[key] for key in known if key in data}


def _load(schema: Schema, data: Any, path: str, problems: Problems) -> Any:
    try:
        return schema.load(data)
    except ValidationError as error:
        _flatten(error.messages, path, problems)
        return None


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _join(path: str, key: str | int) -> str:
    """``path.key``, ``path[3]``, or ``path['odd key']`` for a key that is not a short plain name
    (a file's own keys are echoed escaped and cut short)."""
    if isinstance(key, int):
        return f"{path}[{key}]" if path else f"[{key}]"
    if not _PLAIN_KEY.fullmatch(key):
        return f"{path or ROOT}[{quote(key, 40)}]"
    return f"{path}.{key}" if path else key


def _flatten(messages: Any, path: str, problems: Problems) -> None:
    """Marshmallow's nested error messages as ``{json path: message}``; a segment rule's own
    paths (``$.and[1]``) continue the path of the field that holds the rule."""
    if isinstance(messages, dict):
        for key, value in messages.items():
            if key == "_schema":
                _flatten(value, path, problems)
            elif isinstance(key, str) and key.startswith(ROOT) and isinstance(value, str):
                _report(problems, (path or ROOT) + key[len(ROOT) :], value)
            else:
                _flatten(value, _join(path, key), problems)
    elif isinstance(messages, list | tuple):
        for message in messages:
            _flatten(message, path, problems)
    else:
        _report(problems, path or ROOT, str(messages))


def _report(problems: Problems, path: str, message: str) -> None:
    known = problems.get(path)
    problems[path] = f"{known}; {message}" if known and message not in known.split("; ") else message


_ENVELOPE_ORDER = ("$", "format", "format_version", "exported_at", "workspace", "segments")


def _ordered(problems: Problems) -> Problems:
    """Problems in document order: the envelope first, then the segments by index."""

    def key(path: str) -> tuple[Any, ...]:
        head = path.split(".", 1)[0].split("[", 1)[0]
        rank = _ENVELOPE_ORDER.index(head) if head in _ENVELOPE_ORDER else len(_ENVELOPE_ORDER)
        index = -1
        if path.startswith("segments["):
            index = int(path[len("segments[") : path.index("]")])
        return rank, index

    ordered = sorted(problems.items(), key=lambda item: key(item[0]))
    if len(ordered) <= MAX_PROBLEMS:
        return dict(ordered)
    more = len(ordered) - MAX_PROBLEMS
    return dict(ordered[:MAX_PROBLEMS]) | {MORE: f"and {more:,} more problem{'s' * (more != 1)}"}


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return f"a {type(value).__name__}"


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- writing


def export_document(
    *, workspace_id: str, timezone: str, exported_at: float, segments: list[dict[str, Any]]
) -> dict[str, Any]:
    """An export's document: ``segments`` as given (each with name, description, rule,
    conditions and is_default), ``exported_at`` in epoch seconds, written in whole UTC seconds."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "exported_at": format_instant(exported_at),
        "workspace": {"id": workspace_id, "timezone": timezone},
        "segments": segments,
    }


def format_instant(epoch: float) -> str:
    """Epoch seconds as RFC 3339 UTC in whole seconds: ``2026-01-31T09:30:00Z``."""
    return datetime.fromtimestamp(int(epoch // 1), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def dump_export(document: Mapping[str, Any]) -> str:
    """An export as text: sorted keys, two-space indentation, fixed separators, UTF-8, a final newline.
    The same document always gives the same text."""
    return json.dumps(document, ensure_ascii=False, sort_keys=True, indent=2, separators=(",", ": ")) + "\n"


# --------------------------------------------------------------------------- JSON Schema

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

#: The operators a segment rule may use anywhere (conditions, and the operands ``var``, ``+``, ``-``).
RULE_OPERATORS: tuple[str, ...] = tuple(sorted({*_Checker._CONDITIONS, "var", "+", "-"}))


def _rule_defs(defs: dict[str, Any]) -> dict[str, Any]:
    if "rule" not in defs:
        defs["rule"] = {
            "description": (
                "A segment rule: JSONLogic (json-logic-js 2.0.5 semantics) over the contact evaluation view. "
                "JSON Schema checks its shape only; `segments validate` checks fields, types and limits."
            ),
            "anyOf": [{"type": "boolean"}, {"$ref": "#/$defs/operation"}],
        }
        defs["operation"] = {
            "type": "object",
            "minProperties": 1,
            "maxProperties": 1,
            "propertyNames": {"enum": list(RULE_OPERATORS)},
            "additionalProperties": {"$ref": "#/$defs/argument"},
        }
        defs["argument"] = {
            "anyOf": [
                {"type": ["string", "number", "boolean", "null"]},
                {"type": "array", "items": {"$ref": "#/$defs/argument"}},
                {"$ref": "#/$defs/operation"},
            ]
        }
    return {"$ref": "#/$defs/rule"}


def _schema_name(schema: type[Schema]) -> str:
    name = schema.__name__.removesuffix("Schema")
    return "".join(("_" + ch.lower()) if ch.isupper() else ch for ch in name).lstrip("_")


def _schema_ref(schema: type[Schema], defs: dict[str, Any]) -> dict[str, Any]:
    name = _schema_name(schema)
    if name not in defs:
        defs[name] = {}  # placeholder: recursive schemas refer to themselves
        defs[name] = _object_schema(schema, defs)
    return {"$ref": f"#/$defs/{name}"}


def _object_schema(schema: type[Schema], defs: dict[str, Any]) -> dict[str, Any]:
    instance = schema()
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, schema_field in instance.load_fields.items():
        key = schema_field.data_key or name
        properties[key] = _field_schema(schema_field, defs)
        if schema_field.required:
            required.append(key)
    result: dict[str, Any] = {"type": "object"}
    if schema.__doc__:
        result["description"] = " ".join(schema.__doc__.split()).replace("``", "`")
    result |= {"properties": properties, "required": required, "additionalProperties": False}
    return result


def _field_schema(schema_field: fields.Field[Any], defs: dict[str, Any]) -> dict[str, Any]:
    custom = getattr(schema_field, "json_schema", None)
    if custom is not None:
        result = custom(defs)
    elif isinstance(schema_field, SegmentRule):
        result = _rule_defs(defs)
    elif isinstance(schema_field, GroupMember):
        result = {"anyOf": [_schema_ref(ConditionSchema, defs), _schema_ref(ConditionGroupSchema, defs)]}
    elif isinstance(schema_field, fields.Nested):
        nested = schema_field.nested
        assert isinstance(nested, type) and issubclass(nested, Schema), nested
        result = _schema_ref(nested, defs)
    elif isinstance(schema_field, fields.List):
        result = {"type": "array", "items": _field_schema(schema_field.inner, defs)}
    elif isinstance(schema_field, fields.String):
        result = {"type": "string"}
    elif isinstance(schema_field, fields.Integer):
        result = {"type": "integer"}
    elif isinstance(schema_field, fields.Boolean):
        result = {"type": "boolean"}
    elif type(schema_field) is fields.Raw:
        result = {}
    else:
        raise TypeError(f"no JSON Schema for {type(schema_field).__name__}")
    for validator in schema_field.validators:
        result |= _validator_schema(validator, array=result.get("type") == "array")
    description = schema_field.metadata.get("description")
    if description:
        result = {**result, "description": description}
    if schema_field.allow_none and "anyOf" not in result and result:
        if isinstance(result.get("type"), str) and set(result) <= {"type", "description"}:
            result["type"] = [result["type"], "null"]
        else:
            result = {"anyOf": [{"type": "null"}, result]}
    return result


def _validator_schema(validator: Any, *, array: bool) -> dict[str, Any]:
    if isinstance(validator, Length):
        low, high = ("minItems", "maxItems") if array else ("minLength", "maxLength")
        bounds = {low: validator.min, high: validator.max}
        if validator.equal is not None:
            bounds = {low: validator.equal, high: validator.equal}
        return {key: value for key, value in bounds.items() if value is not None}
    if isinstance(validator, OneOf):
        return {"enum": list(validator.choices)}
    if isinstance(validator, Equal):
        return {"const": validator.comparable}
    if isinstance(validator, Range):
        return {
            key: value
            for key, value in (("minimum", validator.min), ("maximum", validator.max))
            if value is not None
        }
    raise TypeError(f"no JSON Schema for the validator {validator!r}")


def export_json_schema() -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of the export format, generated from the Marshmallow schemas."""
    defs: dict[str, Any] = {}
    root = _object_schema(ExportSchema, defs)
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"urn:contact-segments:export:{FORMAT_VERSION}",
        "title": f"contact-segments export, format version {FORMAT_VERSION}",
        **root,
        "$comment": (
            "Generated from contact_segments.rules.transfer (python -m contact_segments.rules.transfer); "
            "do not edit. Files are at most "
            f"{MAX_EXPORT_BYTES} bytes of UTF-8 JSON."
        ),
        "$defs": dict(sorted(defs.items())),
    }


def export_json_schema_text() -> str:
    """The JSON Schema as shipped in ``fixtures/export.schema.json``."""
    return json.dumps(export_json_schema(), ensure_ascii=False, indent=2, sort_keys=True) + "\n"


def iter_problems(problems: Problems) -> Iterator[dict[str, str]]:
    """Problems as ``{"path", "message"}`` items, for JSON output."""
    for path, message in problems.items():
        yield {"path": path, "message": message}


if __name__ == "__main__":  # pragma: no cover
    print(export_json_schema_text(), end="")
