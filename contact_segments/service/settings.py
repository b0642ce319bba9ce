"""Configuration, from the environment: where the database is, where the broker is."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ..storage import DATABASE_URL_ENV, database_url_from_env

BROKER_URL_ENV = "SEGMENTS_BROKER_URL"


@dataclass(frozen=True)
class Settings:
    """``database_url``: SQLAlchemy URL (default: the embedded SQLite file).
    ``broker_url``: Celery broker (Redis); None runs follow-up work inline, in-process."""

    database_url: str
    broker_url: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        database_url = env.get(DATABASE_URL_ENV) or database_url_from_env()
        return cls(database_url=database_url, broker_url=env.get(BROKER_URL_ENV) or None)
