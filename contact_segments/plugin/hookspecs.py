"""The hook specifications: how a host and the segments engine talk.

Every hook name carries the ``segments_`` prefix.  Two directions:

* **The host tells the engine** what happened in the platform (a workspace created, a contact
  saved or deleted, a message received or sent).  The engine implements these
  (:mod:`contact_segments.plugin.engine`); the host calls them through its plugin manager.
  They only store and enqueue: evaluation runs on workers (or inline, in the embedded default).
* **The engine tells the host** what happened to segments (contacts entered or exited, a
  segment created, renamed, edited or deleted).  The host implements these.

Nothing here runs; these are the contracts.
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "segments"

hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec(historic=True)
def segments_configure(pluginmanager: pluggy.PluginManager, settings: Any) -> None:
    """Called once, when the plugin manager is created, and replayed to plugins registered later.

    ``settings`` is a :class:`contact_segments.plugin.Settings` (database URL, broker URL).
    The engine keeps the plugin manager to call the host's hooks.
    """


# --------------------------------------------------------------------------- host -> engine


@hookspec
def segments_workspace_created(workspace_id: str, name: str | None, timezone: str) -> None:
    """A workspace was created in the host: create it here and seed its default segments (in
    the call, idempotently; their first builds are enqueued)."""


@hookspec
def segments_contact_saved(workspace_id: str, snapshot: dict[str, Any]) -> None:
    """A contact was created or changed: ``snapshot`` is its full snapshot with a ``version``.

    The snapshot is stored if its version is newer than the stored one (a stale or duplicate
    one is a no-op, and so is one no newer than a deleted contact's last version: it stays
    deleted), and its evaluation is enqueued.  Raises
    :class:`contact_segments.service.InvalidInput` for a snapshot that does not validate.
    """


@hookspec
def segments_contacts_saved(workspace_id: str, snapshots: list[dict[str, Any]]) -> None:
    """Many contacts were saved at once (an import): like :func:`segments_contact_saved`, in
    one transaction."""


@hookspec
def segments_contact_deleted(workspace_id: str, contact_id: str) -> None:
    """A contact was deleted: it exits every segment (in the call, with an "exited" event per
    segment; their delivery is enqueued).  Deleting an unknown contact is a no-op."""


@hookspec
def segments_message_received(workspace_id: str, contact_id: str, at: float) -> None:
    """The contact sent a message (epoch seconds ``at``): moves ``last_incoming_message_at``."""


@hookspec
def segments_message_sent(workspace_id: str, contact_id: str, at: float) -> None:
    """The contact was sent a message (epoch seconds ``at``): moves ``last_outgoing_message_at``."""


# --------------------------------------------------------------------------- engine -> host


@hookspec
def segments_membership_changed(events: list[dict[str, Any]]) -> None:
    """Contacts entered or exited segments.

    ``events`` is a batch in outbox order (so in order per contact).  Each event is a dict with
    ``event_id`` (unique: deliveries are at least once, drop ids you have seen), ``kind``
    (``entered``, ``exited``, or ``built`` with a ``member_count`` after a segment's first
    build), ``workspace_id``, ``segment_id``, ``contact_id``, ``cause`` (``contact_changed``,
    ``contact_deleted``, ``rule_edited``, ``time_passed``, ``sweep``, ``built``),
    ``rule_version`` and ``occurred_at`` (epoch seconds).  If an implementation raises, the
    batch is delivered again later, with the same ids.
    """


@hookspec
def segments_segment_changed(workspace_id: str, segment: dict[str, Any], change: str, change_id: str) -> None:
    """A segment was ``created``, ``renamed``, ``edited`` or ``deleted``.

    ``segment`` has at least ``id``, ``name`` and ``rule_version`` (as they were after the
    change).  Notifications come from an outbox, in order, at least once: if an implementation
    raises, it and those after it are delivered again later, each with the same ``change_id``
    (unique per notification: drop ids you have seen; an implementation that does not need it
    may leave the argument out).  A segment's notifications reach the host before membership
    events written after them (its "created" before its "built").
    """
