"""Choosing where follow-up work runs: inline (embedded default) or on Celery workers."""

from __future__ import annotations

import os
from collections.abc import Iterable

from sqlalchemy.orm import Session, sessionmaker

from ..service import Command, InlineDispatcher
from ..service.handlers import Clock

BROKER_URL_ENV = "SEGMENTS_BROKER_URL"


class CeleryDispatcher:
    """Sends each command to a worker as a task message."""

    def __init__(self, app) -> None:
        self.app = app

    def dispatch(self, commands: Iterable[Command]) -> None:
        from .tasks import send

        for command in commands:
            send(self.app, command)


def dispatcher_from_env(session_factory: sessionmaker[Session], *, clock: Clock):
    """Celery when ``SEGMENTS_BROKER_URL`` is set, else inline in this process."""
    if os.environ.get(BROKER_URL_ENV):
        from .app import create_celery_app

        return CeleryDispatcher(create_celery_app())
    return InlineDispatcher(session_factory, clock=clock)
