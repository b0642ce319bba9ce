"""Evaluation views for unit tests: every catalog field null or empty, then what a test sets."""

from __future__ import annotations

from typing import Any

from contact_segments.rules.catalog import STRING_FIELDS, STRING_LIST_FIELDS, TIMESTAMP_FIELDS


def contact_view(*, now: float, id: str = "c1", **fields: Any) -> dict[str, Any]:
    """The view of contact ``id`` at ``now``: nothing known about it but ``fields``."""
    view: dict[str, Any] = {
        "id": id,
        **dict.fromkeys((*STRING_FIELDS, *TIMESTAMP_FIELDS)),
        **{name: [] for name in STRING_LIST_FIELDS},
        "custom_fields": {},
        "now": now,
    }
    return view | fields
