"""Handlers: one plain function per command, and the inline dispatcher that runs them.

The inline dispatcher is the embedded default: follow-up work runs in the calling process right
after the commit that asked for it.  The Celery dispatcher (:mod:`contact_segments.tasks`) sends
the same commands to workers, which call the same handlers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from typing import ClassVar

from sqlalchemy.orm import Session, sessionmaker

from ..storage import EventCause
from .commands import (
    Command,
    CreateWorkspace,
    DeleteContact,
    DeliverEvents,
    EvaluatePending,
    RebuildSegment,
)
from .contacts import delete_contact, evaluate_pending
from .errors import NotFound
from .events import Deliver, Notify, deliver_events
from .segments import rebuild_segment
from .uow import UnitOfWork
from .workspaces import create_workspace

Clock = Callable[[], float]


def handle_rebuild(uow: UnitOfWork, command: RebuildSegment, *, now: float) -> None:
    result = rebuild_segment(
        uow,
        command.workspace_id,
        command.segment_id,
        rule_version=command.rule_version,
        now=now,
        cause=EventCause.RULE_EDITED,
        first_build=command.first_build,
        incremental=True,  # the command again, for the version already built: only what changed since
        count_members=False,
    )
    if not result.stale and uow.dispatcher is not None:
        uow.dispatcher.dispatch([DeliverEvents(command.workspace_id)])


def handle_create_workspace(uow: UnitOfWork, command: CreateWorkspace, *, now: float) -> None:
    create_workspace(uow, command.workspace_id, name=command.name, timezone=command.timezone, now=now)


def handle_delete_contact(uow: UnitOfWork, command: DeleteContact, *, now: float) -> None:
    with suppress(NotFound):  # already gone: deleting twice is deleting once
        delete_contact(uow, command.workspace_id, command.contact_id, now=now)


def handle_evaluate(uow: UnitOfWork, command: EvaluatePending, *, now: float) -> None:
    evaluate_pending(uow, command.workspace_id, now=now)


def handle_deliver(
    uow: UnitOfWork, command: DeliverEvents, *, now: float, deliver: Deliver | None, notify: Notify | None = None
) -> None:
    deliver_events(uow, command.workspace_id, deliver, notify=notify, now=now)


@dataclass
class InlineDispatcher:
    """Runs each command in this process, right away, each in its own transactions.

    ``deliver`` receives event batches and ``notify`` segment changes (the host's hooks);
    without ``deliver`` events stay in the outbox for ``segments events`` to show.  ``clock``
    gives the instant work is done at (the CLI's ``--now`` fixes it).
    """

    session_factory: sessionmaker[Session]
    clock: Clock = time.time
    deliver: Deliver | None = None
    notify: Notify | None = None
    runs_elsewhere: ClassVar[bool] = False  # a command waits for the transaction that sent it

    def unit_of_work(self) -> UnitOfWork:
        return UnitOfWork(self.session_factory, self)

    def dispatch(self, commands: Iterable[Command]) -> None:
        for command in commands:
            uow, now = self.unit_of_work(), self.clock()
            match command:
                case RebuildSegment():
                    handle_rebuild(uow, command, now=now)
                case EvaluatePending():
                    handle_evaluate(uow, command, now=now)
                case DeliverEvents():
                    handle_deliver(uow, command, now=now, deliver=self.deliver, notify=self.notify)
                case CreateWorkspace():
                    handle_create_workspace(uow, command, now=now)
                case DeleteContact():
                    handle_delete_contact(uow, command, now=now)
