"""Workspaces: created with their default segments, listed."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select, update

from ..storage import Workspace
from ..storage import queries as q
from .defaults import seed_defaults
from .errors import InvalidInput, NotFound
from .segments import get_workspace
from .uow import UnitOfWork


@dataclass(frozen=True)
class WorkspaceView:
    id: str
    name: str
    timezone: str
    segment_count: int
    created_at: float

    @classmethod
    def of(cls, workspace: Workspace) -> WorkspaceView:
        return cls(workspace.id, workspace.name, workspace.timezone, workspace.segment_count, workspace.created_at)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_timezone(name: Any) -> str:
    if not isinstance(name, str) or not name or len(name) > 64 or ".." in name or name.startswith("/"):
        raise InvalidInput(f"{name!r} is not an IANA time zone name (e.g. Asia/Kuala_Lumpur)")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"unknown time zone {name!r} (use an IANA name, e.g. Asia/Kuala_Lumpur)") from None
    return name


def create_workspace(
    uow: UnitOfWork, workspace_id: str, *, name: str | None = None, timezone: str = "UTC", now: float
) -> WorkspaceView:
    """Create a workspace (idempotent) and seed the default segments it has never had."""
    if not isinstance(workspace_id, str) or not workspace_id.strip() or len(workspace_id) > 255 or "\x00" in workspace_id:
        raise InvalidInput("a workspace id is a non-empty string of at most 255 characters")
    check_timezone(timezone)
    with uow:
        created = q.ensure_workspace(uow.session, workspace_id, name=name or workspace_id, timezone=timezone, now=now)
        if created:
            # Time-based flips are counted from here: the first tick covers (creation, tick].
            uow.session.execute(update(Workspace).where(Workspace.id == workspace_id).values(last_tick_at=now))
        workspace = get_workspace(uow, workspace_id)
        seed_defaults(uow, workspace_id, workspace.timezone, now=now)
        uow.commit()
    with uow:
        return WorkspaceView.of(get_workspace(uow, workspace_id))


def delete_workspace(uow: UnitOfWork, workspace_id: str, *, missing_ok: bool = False) -> None:
    """Delete a workspace with everything in it: contacts, segments, memberships, events."""
    with uow:
        workspace = uow.session.get(Workspace, workspace_id)
        if workspace is None:
            if missing_ok:
                return
            raise NotFound("workspace", workspace_id)
        q.delete_workspace_rows(uow.session, workspace_id)
        uow.commit()


def list_workspaces(uow: UnitOfWork) -> list[WorkspaceView]:
    with uow:
        return [WorkspaceView.of(w) for w in uow.session.scalars(select(Workspace).order_by(Workspace.id))]
