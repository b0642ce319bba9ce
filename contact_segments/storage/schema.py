"""Schema migrations: Alembic scripts shipped inside the package, run without an ``alembic.ini``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.engine import URL

from contact_segments.storage.engine import make_engine, normalize_url

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

_MIGRATION_LOCK_ID = 0x5E6_3E47
"""PostgreSQL advisory lock key: workers starting together migrate one at a time."""

Bind = Engine | Connection | str | URL
"""Where to migrate: an engine, an open connection (its transaction is used, the caller commits),
or a database URL."""


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic config for the packaged migrations (for ``alembic.command`` calls).

    With ``url``, Alembic connects there itself; :func:`migrate` passes a connection instead.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if url is not None:
        rendered = normalize_url(url).render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


def migrate(bind: Bind, revision: str = "head") -> None:
    """Upgrade the schema to ``revision`` (default: the newest). Safe to run concurrently."""
    _run(command.upgrade, bind, revision)


def downgrade(bind: Bind, revision: str = "base") -> None:
    """Downgrade the schema to ``revision`` (default: no tables at all)."""
    _run(command.downgrade, bind, revision)


def current_revision(bind: Bind) -> str | None:
    """The revision the database is at, or ``None`` if it was never migrated."""
    with _connection(bind) as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    """The newest revision the package ships."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _run(alembic_command: Callable[[Config, str], None], bind: Bind, revision: str) -> None:
    with _connection(bind) as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK_ID)))
        config = alembic_config()
        config.attributes["connection"] = connection
        alembic_command(config, revision)


@contextmanager
def _connection(bind: Bind) -> Iterator[Connection]:
    if isinstance(bind, Connection):
        yield bind
        return
    engine = bind if isinstance(bind, Engine) else make_engine(bind)
    try:
        with engine.begin() as connection:
            yield connection
    finally:
        if engine is not bind:
            engine.dispose()
