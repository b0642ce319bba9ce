"""A workspace with chosen segments, run inline: the starting point of the property tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine

from contact_segments import service
from contact_segments.service import InlineDispatcher, UnitOfWork
from contact_segments.storage import make_session_factory


def workspace_with_segments(
    engine: Engine, rules: Mapping[str, Any], *, now: float, workspace_id: str = "ws"
) -> tuple[UnitOfWork, dict[str, int]]:
    """A new workspace (its defaults seeded) plus one segment per named rule, everything run
    inline at ``now``; the unit of work, and each rule's segment id by name."""
    factory = make_session_factory(engine)
    uow = UnitOfWork(factory, InlineDispatcher(factory, clock=lambda: now))
    service.create_workspace(uow, workspace_id, now=now)
    ids = {
        name: service.create_segment(uow, workspace_id, name=name, rule=service.RuleInput(rule=rule), now=now).id
        for name, rule in rules.items()
    }
    return uow, ids
