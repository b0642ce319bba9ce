"""What a user (or a host) did wrong, as exceptions the boundaries turn into messages.

Every error here is a :class:`SegmentsError`; the CLI prints its message and exits with status 2,
a task drops the message, a hook re-raises it to the host.  ``messages`` has Marshmallow's shape
(a dict keyed by field or JSON path) so every problem in an input is reported at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class SegmentsError(Exception):
    """A user error: bad input, an unknown id, a broken product rule."""

    def __init__(self, message: str, messages: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.messages = dict(messages or {})

    def __str__(self) -> str:
        if not self.messages:
            return self.message
        details = "\n".join(f"  {where}: {_flatten(what)}" for where, what in self.messages.items())
        return f"{self.message}\n{details}"


def _flatten(what: Any) -> str:
    if isinstance(what, list | tuple):
        return "; ".join(_flatten(item) for item in what)
    if isinstance(what, dict):
        return "; ".join(f"{key}: {_flatten(value)}" for key, value in what.items())
    return str(what)


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
