"""The default-segment registry: the segments every workspace starts with.

The definitions are data (``fixtures/default_segments.json``), with a registry version.  Seeding
records each default's key in the workspace's registry table before creating its segment, so:

* seeding twice changes nothing;
* a default the user renamed, edited or deleted is never recreated (its key is recorded);
* a default added in a later release (a new key) reaches existing workspaces once, on their
  next seeding.

Once seeded, a default is an ordinary segment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from sqlalchemy import delete

from ..storage import DefaultRegistryEntry
from ..storage import queries as q
from .commands import RebuildSegment
from .errors import DuplicateName, LimitReached
from .segments import RuleInput, _insert_segment, resolve_rule
from .uow import UnitOfWork


@dataclass(frozen=True)
class DefaultSegment:
    key: str
    name: str
    rule: Any
    conditions: Any


@dataclass(frozen=True)
class DefaultRegistry:
    version: int
    segments: tuple[DefaultSegment, ...]


@cache
def default_registry() -> DefaultRegistry:
    """The registry shipped with the package."""
    text = resources.files("contact_segments.fixtures").joinpath("default_segments.json").read_text("utf-8")
    document = json.loads(text)
    return DefaultRegistry(
        version=document["version"],
        segments=tuple(
            DefaultSegment(item["key"], item["name"], item["rule"], item.get("conditions"))
            for item in document["segments"]
        ),
    )


def seed_defaults(uow: UnitOfWork, workspace_id: str, timezone: str, *, now: float, registry: DefaultRegistry | None = None) -> list[int]:
    """Create the defaults the workspace has never had, in the current transaction.

    Returns the new segments' ids; their first builds follow the commit.  A default whose name
    is already taken by a segment of the user's is recorded but not created.  A default that
    finds the workspace full (500 segments) is neither: it comes at a later seeding, once there
    is room, and a full workspace is no error.
    """
    registry = registry or default_registry()
    claimed = set(q.claim_defaults(uow.session, workspace_id, [d.key for d in registry.segments], registry_version=registry.version))
    created = []
    for default in registry.segments:
        if default.key not in claimed:
            continue
        rule, conditions = resolve_rule(RuleInput(rule=default.rule), timezone)
        savepoint = uow.session.begin_nested()  # a user's concurrent segment of that name fails this insert alone
        try:
            segment = _insert_segment(uow, workspace_id, default.name, rule, conditions, "", now, default_key=default.key)
        except DuplicateName:
            savepoint.rollback()
            continue
        except LimitReached:
            savepoint.rollback()
            uow.session.execute(
                delete(DefaultRegistryEntry).where(
                    DefaultRegistryEntry.workspace_id == workspace_id, DefaultRegistryEntry.default_key == default.key
                )
            )
            continue
        savepoint.commit()
        q.link_default_segment(uow.session, workspace_id, default.key, segment.id)
        uow.add_command(RebuildSegment(workspace_id, segment.id, segment.rule_version, first_build=True))
        created.append(segment.id)
    return created
