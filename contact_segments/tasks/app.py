"""The Celery app factory: nothing connects until a worker, beat or dispatcher uses the app."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import Celery

from ..service.settings import Settings
from .schedule import BEAT_SCHEDULE


def create_celery_app(settings: Settings | None = None, config: Mapping[str, Any] | None = None) -> Celery:
    """A Celery app with our tasks registered and our delivery settings.

    Every task acknowledges late and is re-queued if its worker dies (``acks_late``,
    ``reject_on_worker_lost``): every task is idempotent, so running one twice is safe.
    """
    from .tasks import register_tasks
    from .worker import WorkerRuntime

    settings = settings or Settings.from_env()
    app = Celery("contact_segments", set_as_current=False)
    app.conf.update(
        broker_url=settings.broker_url,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=4,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": 300},
        beat_schedule=BEAT_SCHEDULE,
        timezone="UTC",
    )
    if config:
        app.conf.update(dict(config))
    app.segments_runtime = WorkerRuntime(app, settings)  # built lazily, in each worker process
    register_tasks(app)
    return app
