"""The beat schedule: every periodic job, in one place, each with an expiry.

An expired message is dropped rather than run late: the next beat sends a fresh one.
"""

from __future__ import annotations

from typing import Any

MINUTE = 60.0

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    # Apply time-based flips ("created <7 days ago" losing a contact) at the first tick after them.
    "segments-tick": {
        "task": "segments.tick_all",
        "schedule": MINUTE,
        "options": {"expires": 0.9 * MINUTE},
    },
    # Whatever a lost message (a broker restart, a killed worker) or a failed delivery left
    # undone, the database records: pending contact changes, undelivered events, unbuilt rules.
    "segments-pending-work": {
        "task": "segments.schedule_pending_work",
        "schedule": 0.5 * MINUTE,
        "options": {"expires": 0.45 * MINUTE},
    },
    # Rebuild every segment from its SQL, reporting and repairing any drift.
    "segments-consistency-sweep": {
        "task": "segments.sweep_all",
        "schedule": 60 * MINUTE,
        "options": {"expires": 50 * MINUTE},
    },
}
