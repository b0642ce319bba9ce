"""Where follow-up work runs: inline (the embedded default) or on Celery workers.

Sending is where changes coalesce.  Each store of contacts asks for an evaluation of the
workspace's pending changes, but while one such message is queued and not yet started, another
would find nothing the first will not: so only one is sent (a short-lived Redis key marks it;
the task clears the key as it starts, and the next store sends a new one).  A burst of changes
thus becomes a few tasks of up to a thousand contacts each.  If the key outlives a lost message,
the beat's ``evaluate_all_pending`` still finds the pending changes in the database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cached_property
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from ..service import Command, InlineDispatcher
from ..service.commands import (
    CreateWorkspace,
    DeleteContact,
    DeliverEvents,
    EvaluatePending,
    RebuildSegment,
)
from ..service.settings import Settings

if TYPE_CHECKING:
    from celery import Celery

Clock = Callable[[], float]

COALESCE_SECONDS = 10


class Coalescer:
    """At most one queued message per (kind, workspace) while the key lives."""

    def __init__(self, broker_url: str | None) -> None:
        self.broker_url = broker_url

    @cached_property
    def client(self) -> Any:
        if not self.broker_url or not self.broker_url.startswith(("redis://", "rediss://")):
            return None
        import redis

        return redis.Redis.from_url(self.broker_url)

    def claim(self, kind: str, workspace_id: str) -> bool:
        """True if no message of this kind is queued for the workspace (and now one is)."""
        if self.client is None:
            return True
        return bool(self.client.set(f"segments:queued:{kind}:{workspace_id}", 1, nx=True, ex=COALESCE_SECONDS))

    def release(self, kind: str, workspace_id: str) -> None:
        """Called as the task starts: changes from now on need a message of their own."""
        if self.client is not None:
            self.client.delete(f"segments:queued:{kind}:{workspace_id}")


class CeleryDispatcher:
    """Sends each command to the workers as a task message."""

    runs_elsewhere = True

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.coalescer = Coalescer(app.conf.broker_url)

    def dispatch(self, commands: Iterable[Command]) -> None:
        for command in commands:
            match command:
                case EvaluatePending(workspace_id):
                    if self.coalescer.claim("evaluate", workspace_id):
                        self.app.send_task("segments.contact_changed", args=[workspace_id])
                case DeliverEvents(workspace_id):
                    if self.coalescer.claim("deliver", workspace_id):
                        self.app.send_task("segments.deliver_events", args=[workspace_id])
                case RebuildSegment(workspace_id, segment_id, rule_version, first_build):
                    self.app.send_task("segments.rebuild_segment", args=[workspace_id, segment_id, rule_version, first_build])
                case DeleteContact(workspace_id, contact_id):
                    self.app.send_task("segments.contact_deleted", args=[workspace_id, contact_id])
                case CreateWorkspace(workspace_id, name, timezone):
                    self.app.send_task("segments.workspace_created", args=[workspace_id, name, timezone])


def dispatcher_from_env(
    session_factory: sessionmaker[Session],
    *,
    clock: Clock,
    settings: Settings | None = None,
    deliver: Any = None,
    notify: Any = None,
) -> InlineDispatcher | CeleryDispatcher:
    """Celery when a broker is configured (``SEGMENTS_BROKER_URL``), else inline in this process."""
    settings = settings or Settings.from_env()
    if settings.broker_url:
        from .app import create_celery_app

        return CeleryDispatcher(create_celery_app(settings))
    return InlineDispatcher(session_factory, clock=clock, deliver=deliver, notify=notify)
