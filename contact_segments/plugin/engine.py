"""The engine's side of the hooks: what the host's calls do.

Each hook translates its call into a service call and returns.  With a broker configured
(``SEGMENTS_BROKER_URL``) a hook only writes to the database and enqueues: evaluation and
delivery run on workers.  Without one (the embedded default) follow-up work runs inline, in the
caller's thread.
"""

from __future__ import annotations

import time
from functools import cached_property
from typing import Any

import pluggy

from .. import service
from ..service.commands import CreateWorkspace, DeleteContact
from ..service.handlers import handle_create_workspace, handle_delete_contact
from ..service.settings import Settings
from ..storage import make_engine, make_session_factory
from .hookspecs import PROJECT

hookimpl = pluggy.HookimplMarker(PROJECT)


class SegmentsEngine:
    """The segments engine as a pluggy plugin.  Configured by ``segments_configure``."""

    def __init__(self) -> None:
        self.settings: Settings | None = None
        self.pluginmanager: pluggy.PluginManager | None = None

    @hookimpl
    def segments_configure(self, pluginmanager: pluggy.PluginManager, settings: Settings) -> None:
        self.pluginmanager, self.settings = pluginmanager, settings
        for name in ("session_factory", "dispatcher"):
            self.__dict__.pop(name, None)

    # -- wiring ----------------------------------------------------------------------------

    @cached_property
    def session_factory(self):
        return make_session_factory(make_engine(self._settings.database_url))

    @cached_property
    def dispatcher(self) -> service.Dispatcher:
        from ..tasks import dispatcher_from_env

        return dispatcher_from_env(
            self.session_factory, clock=time.time, settings=self._settings, deliver=self._deliver, notify=self._notify
        )

    @property
    def _settings(self) -> Settings:
        if self.settings is None:
            raise RuntimeError("the segments engine is not configured: create it with create_plugin_manager()")
        return self.settings

    def uow(self) -> service.UnitOfWork:
        return service.UnitOfWork(self.session_factory, self.dispatcher)

    def _deliver(self, events: list[service.EventView]) -> None:
        assert self.pluginmanager is not None
        from ..tasks.worker import event_payloads

        self.pluginmanager.hook.segments_membership_changed(events=event_payloads(events))

    def _notify(self, workspace_id: str, segment: dict[str, Any], change: str, change_id: str) -> None:
        assert self.pluginmanager is not None
        self.pluginmanager.hook.segments_segment_changed(
            workspace_id=workspace_id, segment=segment, change=change, change_id=change_id
        )

    # -- host -> engine ----------------------------------------------------------------------

    # Like a save, a workspace's creation and a contact's deletion are written to the database
    # in the host's call: a message to a worker could be lost with the broker's queue (Redis
    # keeps nothing on disk), and nothing would recover it.  What follows them (the defaults'
    # first builds, the exit events' delivery) is recorded there too, so the beat recovers it.

    @hookimpl
    def segments_workspace_created(self, workspace_id: str, name: str | None, timezone: str) -> None:
        handle_create_workspace(self.uow(), CreateWorkspace(workspace_id, name, timezone), now=time.time())

    @hookimpl
    def segments_contact_saved(self, workspace_id: str, snapshot: dict[str, Any]) -> None:
        service.upsert_contacts(self.uow(), workspace_id, [snapshot], now=time.time())

    @hookimpl
    def segments_contacts_saved(self, workspace_id: str, snapshots: list[dict[str, Any]]) -> None:
        service.upsert_contacts(self.uow(), workspace_id, snapshots, now=time.time())

    @hookimpl
    def segments_contact_deleted(self, workspace_id: str, contact_id: str) -> None:
        handle_delete_contact(self.uow(), DeleteContact(workspace_id, contact_id), now=time.time())

    @hookimpl
    def segments_message_received(self, workspace_id: str, contact_id: str, at: float) -> None:
        service.record_message(self.uow(), workspace_id, contact_id, direction="incoming", at=at)

    @hookimpl
    def segments_message_sent(self, workspace_id: str, contact_id: str, at: float) -> None:
        service.record_message(self.uow(), workspace_id, contact_id, direction="outgoing", at=at)


engine = SegmentsEngine()
"""The instance the ``contact_segments`` entry point names; it connects to nothing until configured."""
