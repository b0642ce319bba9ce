"""Contacts: store the host's snapshots, keep their memberships right.

Storing and evaluating are two steps, so a host's request thread can do the first and a worker
the second:

* :func:`store_snapshots` keeps each snapshot only if its version is newer than the stored one
  (a stale or duplicate snapshot is a no-op) and records which fields changed as *pending*;
* :func:`evaluate_pending` takes the contacts' rows under lock, re-evaluates only the segments
  whose rules read a pending field, writes the membership diff and its events, and clears the
  pending fields - all in one transaction.

Pending fields accumulate across snapshots until an evaluation clears them, so coalescing a burst
of changes into one evaluation of the newest snapshot loses nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import count
from typing import Any

from ..rules.catalog import STRING_FIELDS, STRING_LIST_FIELDS, TIMESTAMP_FIELDS
from ..storage import EventCause
from ..storage import pending_changes
from ..storage import queries as q
from .commands import DeliverEvents, EvaluateContacts
from .errors import InvalidInput, NotFound
from .membership import Diff, evaluate_contacts
from .segments import get_workspace
from .snapshots import load_snapshot
from .uow import UnitOfWork

VIEW_FIELDS = STRING_FIELDS + STRING_LIST_FIELDS + TIMESTAMP_FIELDS


def load_snapshots(documents: Iterable[Any], labels: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Validate snapshots; the first bad one raises :class:`InvalidInput` naming where it is
    (its label, e.g. "line 7", or its position)."""
    loaded = []
    places = iter(labels) if labels is not None else (f"snapshot #{n}" for n in count(1))
    for place, document in zip(places, documents, strict=False):
        try:
            loaded.append(load_snapshot(document))
        except InvalidInput as error:
            raise InvalidInput(f"{place}: {error.message}", error.messages) from None
    return loaded


def changed_fields(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> frozenset[str] | None:
    """The evaluation-view fields whose value differs; None (all of them) for a new contact.

    Custom fields are named ``custom_fields.<key>``, as rules read them.
    """
    if before is None:
        return None
    changed = {name for name in VIEW_FIELDS if before.get(name) != after.get(name)}
    old_custom, new_custom = before.get("custom_fields") or {}, after.get("custom_fields") or {}
    changed.update(
        f"custom_fields.{key}" for key in old_custom.keys() | new_custom.keys() if old_custom.get(key) != new_custom.get(key)
    )
    return frozenset(changed)


def store_snapshots(uow: UnitOfWork, workspace_id: str, snapshots: list[dict[str, Any]], *, now: float) -> dict[str, int]:
    """Store the newer snapshots in the current transaction; return the stored ids' versions.

    Schedules their evaluation (:class:`EvaluateContacts`) for after the commit.
    """
    before = q.load_contact_views(uow.session, workspace_id, [s["id"] for s in snapshots], for_update=True)
    stored = set(q.upsert_contacts(uow.session, workspace_id, snapshots, now=now))
    newest: dict[str, dict[str, Any]] = {}
    for snapshot in snapshots:
        if snapshot["id"] in stored and snapshot["version"] >= newest.get(snapshot["id"], {"version": -1})["version"]:
            newest[snapshot["id"]] = snapshot
    pending = {contact_id: changed_fields(before.get(contact_id), s) for contact_id, s in newest.items()}
    pending_changes.add(uow.session, workspace_id, pending)
    versions = {contact_id: snapshot["version"] for contact_id, snapshot in newest.items()}
    if versions:
        uow.add_command(EvaluateContacts(workspace_id, tuple(sorted(versions.items()))))
    return versions


def upsert_contacts(uow: UnitOfWork, workspace_id: str, documents: Iterable[Any], *, now: float) -> dict[str, int]:
    """Validate, store and schedule the evaluation of snapshots, in one transaction."""
    return upsert_snapshots(uow, workspace_id, load_snapshots(documents), now=now)


def upsert_snapshots(uow: UnitOfWork, workspace_id: str, snapshots: list[dict[str, Any]], *, now: float) -> dict[str, int]:
    """Store validated snapshots (see :func:`load_snapshots`) and schedule their evaluation."""
    with uow:
        get_workspace(uow, workspace_id)
        versions = store_snapshots(uow, workspace_id, snapshots, now=now)
        uow.commit()
    return versions


def evaluate_pending(
    uow: UnitOfWork, workspace_id: str, versions: Mapping[str, int], *, now: float
) -> Diff:
    """Evaluate the contacts' pending changes against the segments that read them.

    A contact whose stored version is older than asked for has not been stored yet (another
    worker's transaction): it is left for the command that follows that store.  The instant of
    evaluation is never earlier than the workspace's last tick, so a flip the tick applied is
    never undone by an evaluation that started before it.
    """
    with uow:
        workspace = get_workspace(uow, workspace_id)
        now = max(now, workspace.last_tick_at or now)
        pending = pending_changes.take(uow.session, workspace_id, versions)
        if not pending:
            return Diff()
        diff = evaluate_contacts(uow.session, workspace_id, pending, now=now, cause=EventCause.CONTACT_CHANGED, changed=pending)
        if diff:
            uow.add_command(DeliverEvents(workspace_id))
        uow.commit()
    return diff


def delete_contact(uow: UnitOfWork, workspace_id: str, contact_id: str, *, now: float) -> Diff:
    """Delete a contact: it exits every segment, with an event for each."""
    with uow:
        get_workspace(uow, workspace_id)
        if not q.delete_contacts(uow.session, workspace_id, [contact_id]):
            raise NotFound("contact", contact_id, workspace_id)
        diff = evaluate_contacts(uow.session, workspace_id, [contact_id], now=now, cause=EventCause.CONTACT_DELETED)
        if diff:
            uow.add_command(DeliverEvents(workspace_id))
        uow.commit()
    return diff
