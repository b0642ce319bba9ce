"""Work that follows a committed change, as plain data.

A service operation commits its own change, then returns the follow-up work as commands; the
caller hands them to a dispatcher: :class:`InlineDispatcher` runs them in the calling process
(the embedded default), the Celery dispatcher of :mod:`contact_segments.tasks` sends each to a
worker.  Every command carries ids plus a version or watermark, so a stale one is a no-op.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class RebuildSegment:
    """Rebuild a segment set-wise; stale once the segment's rule version has moved past this one."""

    workspace_id: str
    segment_id: int
    rule_version: int
    first_build: bool = False


@dataclass(frozen=True)
class EvaluatePending:
    """Evaluate the workspace's contacts with pending changes (none left: a no-op).

    Many stores coalesce into one of these: a burst of changes to one contact is evaluated once,
    on its newest snapshot, and many contacts' changes are evaluated in batches.
    """

    workspace_id: str


@dataclass(frozen=True)
class DeliverEvents:
    """Deliver the workspace's undelivered events to the host."""

    workspace_id: str


@dataclass(frozen=True)
class CreateWorkspace:
    """Create a workspace and seed its defaults (idempotent)."""

    workspace_id: str
    name: str | None
    timezone: str


@dataclass(frozen=True)
class DeleteContact:
    """Delete a contact; it exits every segment (a no-op once it is gone)."""

    workspace_id: str
    contact_id: str


Command = RebuildSegment | EvaluatePending | DeliverEvents | CreateWorkspace | DeleteContact


class Dispatcher(Protocol):
    """Runs or sends the follow-up work of a committed change (and work already waiting in
    committed rows, see :meth:`.UnitOfWork.add_waiting`)."""

    runs_elsewhere: bool
    """Whether the work runs in other processes (workers), so that work already waiting may be
    sent while a transaction is still open; an inline dispatcher runs it in this one, where it
    must wait for the transaction to end.  A dispatcher without the attribute is taken to run
    work inline."""

    def dispatch(self, commands: Iterable[Command]) -> None: ...
