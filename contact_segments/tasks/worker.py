"""What a worker process needs to run tasks: the database, the host's hooks, a dispatcher.

Built lazily, on the first task a process runs (so after Celery forks its children), never at
import time.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import fields
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ..service import EventView, UnitOfWork
from ..service.settings import Settings
from ..storage import make_engine, make_session_factory

if TYPE_CHECKING:
    import pluggy
    from celery import Celery

    from .dispatch import CeleryDispatcher


_EVENT_FIELDS = tuple(field.name for field in fields(EventView))


def event_payloads(events: Iterable[EventView]) -> list[dict[str, Any]]:
    """The events as the host's hook receives them: what ``EventView.to_dict`` gives.

    Every field of an event is a scalar, so a shallow copy is all ``dataclasses.asdict`` (which
    ``to_dict`` uses) amounts to; but asdict walks and deep-copies each value, which cost about
    13 us an event here, a third of what delivering it costs the worker.
    """
    return [{name: getattr(event, name) for name in _EVENT_FIELDS} for event in events]


class WorkerRuntime:
    def __init__(self, app: Celery, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self._pid: int | None = None

    def _fresh(self) -> None:
        """Drop what the parent process built: connections must not cross a fork."""
        if self._pid != os.getpid():
            for name in ("engine", "session_factory", "hooks", "dispatcher"):
                self.__dict__.pop(name, None)
            self._pid = os.getpid()

    @cached_property
    def engine(self):
        return make_engine(self.settings.database_url)

    @cached_property
    def session_factory(self):
        return make_session_factory(self.engine)

    @cached_property
    def hooks(self) -> pluggy.PluginManager:
        """The host's hooks, loaded from entry points and ``SEGMENTS_HOST_PLUGINS``."""
        from ..plugin import create_plugin_manager

        return create_plugin_manager(self.settings)

    @cached_property
    def dispatcher(self) -> CeleryDispatcher:
        from .dispatch import CeleryDispatcher

        return CeleryDispatcher(self.app)

    def uow(self) -> UnitOfWork:
        self._fresh()
        return UnitOfWork(self.session_factory, self.dispatcher)

    def deliver(self, events: list[Any]) -> None:
        self._fresh()
        self.hooks.hook.segments_membership_changed(events=event_payloads(events))

    def notify(self, workspace_id: str, segment: dict[str, Any], change: str, change_id: str) -> None:
        self._fresh()
        self.hooks.hook.segments_segment_changed(
            workspace_id=workspace_id, segment=segment, change=change, change_id=change_id
        )
