"""The Celery tasks: each named, thin, idempotent, taking ids plus a version or watermark.

A task translates its message into one service call.  A stale message (a rebuild whose rule
version has moved on, a tick not after the watermark, an evaluation with nothing pending) does
nothing.  Transient database and broker errors are retried with exponential backoff; so is a
host hook that raised while receiving events.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import kombu.exceptions
import redis.exceptions
import sqlalchemy.exc

from .. import service
from ..service.commands import (
    CreateWorkspace,
    DeleteContact,
    DeliverEvents,
    EvaluatePending,
    RebuildSegment,
)
from ..service.events import DeliveryFailed
from ..service.handlers import (
    handle_create_workspace,
    handle_delete_contact,
    handle_deliver,
    handle_evaluate,
    handle_rebuild,
)
from ..service.maintenance import schedule_pending_work, sweep, workspace_ids

if TYPE_CHECKING:
    from celery import Celery

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,  # connection lost, deadlock, serialization failure
    sqlalchemy.exc.InterfaceError,
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)

RETRYING = {
    "bind": True,
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": 0.5,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": None,
}


def register_tasks(app: Celery) -> None:
    """Define our tasks on ``app`` (names are explicit: they are the wire format)."""
    runtime = app.segments_runtime

    @app.task(name="segments.contact_changed", **RETRYING)
    def contact_changed(self, workspace_id: str) -> None:
        """Contacts of the workspace were stored: evaluate the pending ones (coalesced)."""
        runtime.dispatcher.coalescer.release("evaluate", workspace_id)
        handle_evaluate(runtime.uow(), EvaluatePending(workspace_id), now=time.time())

    @app.task(name="segments.contact_deleted", **RETRYING)
    def contact_deleted(self, workspace_id: str, contact_id: str) -> None:
        handle_delete_contact(runtime.uow(), DeleteContact(workspace_id, contact_id), now=time.time())

    @app.task(name="segments.rebuild_segment", **RETRYING)
    def rebuild_segment(self, workspace_id: str, segment_id: int, rule_version: int, first_build: bool = False) -> None:
        command = RebuildSegment(workspace_id, segment_id, rule_version, first_build)
        handle_rebuild(runtime.uow(), command, now=time.time())

    @app.task(name="segments.workspace_created", **RETRYING)
    def workspace_created(self, workspace_id: str, name: str | None, timezone: str) -> None:
        command = CreateWorkspace(workspace_id, name, timezone)
        handle_create_workspace(runtime.uow(), command, now=time.time())

    @app.task(name="segments.tick", **RETRYING)
    def tick(self, workspace_id: str, now: float) -> None:
        service.tick(runtime.uow(), workspace_id, now=now)

    @app.task(name="segments.deliver_events", **(RETRYING | {"autoretry_for": (*TRANSIENT_ERRORS, DeliveryFailed)}))
    def deliver_events(self, workspace_id: str) -> None:
        runtime.dispatcher.coalescer.release("deliver", workspace_id)
        command = DeliverEvents(workspace_id)
        handle_deliver(runtime.uow(), command, now=time.time(), deliver=runtime.deliver, notify=runtime.notify)

    # -- the beat's jobs: fan out one message per workspace ------------------------------

    @app.task(name="segments.tick_all", **RETRYING)
    def tick_all(self) -> None:
        now = time.time()
        for workspace_id in workspace_ids(runtime.uow()):
            tick.delay(workspace_id, now)

    @app.task(name="segments.schedule_pending_work", **RETRYING)
    def pending_work(self) -> None:
        """What a lost message left undone: the database knows (pending, undelivered, unbuilt)."""
        schedule_pending_work(runtime.uow(), now=time.time())

    @app.task(name="segments.sweep", **RETRYING)
    def sweep_workspace(self, workspace_id: str) -> None:
        sweep(runtime.uow(), workspace_id, now=time.time())

    @app.task(name="segments.sweep_all", **RETRYING)
    def sweep_all(self) -> None:
        for workspace_id in workspace_ids(runtime.uow()):
            sweep_workspace.delay(workspace_id)
