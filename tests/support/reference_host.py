"""A reference host: the smallest platform that plugs the segments engine in.

It is what the README shows anyone wiring us into a platform: a pluggy plugin implementing the
engine's outbound hooks, plus the calls a platform makes when its contacts change.  It records
every event it receives in a JSON Lines journal (one file, shared by every process of a test,
so events delivered by Celery workers reach the test), and it can be told to fail its first N
deliveries, to prove that nothing is lost when a host hook raises.

Wiring it up (workers find it through ``SEGMENTS_HOST_PLUGINS=tests.support.reference_host:ReferenceHost``)::

    host = ReferenceHost("events.jsonl")
    pm = create_plugin_manager(plugins=(host,))
    pm.hook.segments_workspace_created(workspace_id="ws", name="Acme", timezone="UTC")
    pm.hook.segments_contact_saved(workspace_id="ws", snapshot={"id": "c1", "version": 1, "tags": ["promotion"]})
    host.events()  # [{"kind": "entered", "contact_id": "c1", ...}, ...] once the workers got to it

Configuration, by environment:

* ``REFERENCE_HOST_JOURNAL``: the journal file (required);
* ``REFERENCE_HOST_FAILURES``: how many deliveries to fail first (default 0).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from contact_segments.plugin import hookimpl

JOURNAL_ENV = "REFERENCE_HOST_JOURNAL"
FAILURES_ENV = "REFERENCE_HOST_FAILURES"


class HostRejected(RuntimeError):
    """What the reference host raises when told to fail a delivery."""


class ReferenceHost:
    """Receives the engine's events and records them; calls the engine when contacts change."""

    def __init__(self, journal: str | os.PathLike[str] | None = None) -> None:
        self.journal = Path(journal or os.environ[JOURNAL_ENV])
        self.failures_file = self.journal.with_suffix(".failures")

    # -- what the engine calls ----------------------------------------------------------------

    @hookimpl
    def segments_membership_changed(self, events: list[dict[str, Any]]) -> None:
        with self._locked():
            if self._fail_this_delivery():
                self._append({"type": "delivery_failed", "event_ids": [e["event_id"] for e in events]})
                raise HostRejected(f"reference host told to fail ({len(events)} events refused)")
            for event in events:
                self._append({"type": "event", **event})

    @hookimpl
    def segments_segment_changed(self, workspace_id: str, segment: dict[str, Any], change: str, change_id: str) -> None:
        with self._locked():
            self._append(
                {
                    "type": "segment_changed",
                    "workspace_id": workspace_id,
                    "segment": segment,
                    "change": change,
                    "change_id": change_id,
                }
            )

    # -- reading the journal ------------------------------------------------------------------

    def records(self) -> list[dict[str, Any]]:
        if not self.journal.exists():
            return []
        with self.journal.open(encoding="utf-8") as lines:
            return [json.loads(line) for line in lines if line.strip()]

    def events(self) -> list[dict[str, Any]]:
        return [record for record in self.records() if record["type"] == "event"]

    # -- internals ----------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        lock = self.journal.with_suffix(".lock")
        with lock.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _append(self, record: dict[str, Any]) -> None:
        with self.journal.open("a", encoding="utf-8") as journal:
            journal.write(json.dumps(record) + "\n")
            journal.flush()
            os.fsync(journal.fileno())

    def _fail_this_delivery(self) -> bool:
        allowed = int(os.environ.get(FAILURES_ENV, "0"))
        failed = int(self.failures_file.read_text()) if self.failures_file.exists() else 0
        if failed >= allowed:
            return False
        self.failures_file.write_text(str(failed + 1))
        return True
