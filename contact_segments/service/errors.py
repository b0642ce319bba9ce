"""What a user (or a host) did wrong, as exceptions the boundaries turn into messages.

Every error here is a :class:`SegmentsError`; the CLI prints its message and exits with status 2,
a task drops the message, a hook re-raises it to the host.  ``messages`` has Marshmallow's shape
(a dict keyed by field or JSON path) so every problem in an input is reported at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import islice
from typing import Any

from ..rules.errors import quote


class SegmentsError(Exception):
    """A user error: bad input, an unknown id, a broken product rule."""

    def __init__(self, message: str, messages: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.messages = dict(messages or {})

    def __str__(self) -> str:
        if not self.messages:
            return self.message
        lines = [f"  {_label(where)}: {_flatten(what)}" for where, what in islice(self.messages.items(), MAX_SHOWN)]
        if len(self.messages) > MAX_SHOWN:
            lines.append(f"  … and {len(self.messages) - MAX_SHOWN:,} more")
        return "\n".join([self.message, *lines])


#: How many problems a message shows at each level (a million bad items make one short message).
MAX_SHOWN = 50


def _label(key: Any) -> str:
    """A key of ``messages`` as shown: as is when it is printable text of a sane length (a field
    name, a JSON path), else quoted, escaped and shortened (it may be a hostile document's key)."""
    if isinstance(key, str) and 0 < len(key) <= 1000 and key.isprintable():
        return key
    return quote(key)


def _flatten(what: Any) -> str:
    if isinstance(what, list | tuple):
        parts = [_flatten(item) for item in islice(what, MAX_SHOWN)]
        more = len(what) - MAX_SHOWN
    elif isinstance(what, dict):
        parts = [f"{_label(key)}: {_flatten(value)}" for key, value in islice(what.items(), MAX_SHOWN)]
        more = len(what) - MAX_SHOWN
    else:
        return str(what)
    if more > 0:
        parts.append(f"… and {more:,} more")
    return "; ".join(parts)


class NotFound(SegmentsError):
    """No such workspace, segment or contact, or not in this workspace (the same to the caller)."""

    def __init__(self, kind: str, ident: Any, workspace_id: str | None = None) -> None:
        where = f" in workspace {workspace_id!r}" if workspace_id is not None else ""
        super().__init__(f"no {kind} {ident!r}{where}")
        self.kind = kind
        self.ident = ident


class DuplicateName(SegmentsError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"a segment named {name.strip()!r} already exists in this workspace "
            "(names are compared trimmed and case-insensitively)"
        )


class LimitReached(SegmentsError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"this workspace already has {limit} segments, the most it may hold")


class InvalidInput(SegmentsError):
    """A rule, condition group, snapshot or file that does not validate."""
