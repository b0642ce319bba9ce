"""Alembic environment for contact_segments.

Run migrations through :func:`contact_segments.storage.migrate`, which hands this script an open
connection in ``config.attributes["connection"]``. Without one (e.g. ``alembic revision
--autogenerate`` with a config from :func:`contact_segments.storage.alembic_config`), it connects to
the config's ``sqlalchemy.url``.
"""

from typing import Any

from alembic import context
from sqlalchemy import Connection

from contact_segments.storage.engine import make_engine
from contact_segments.storage.models import Base


def run_migrations(connection: Connection) -> None:
    dialect = connection.dialect.name

    def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        """Leave out what the models mark as another dialect's (``postgresql_only``)."""
        only_on: str = getattr(obj, "info", {}).get("dialect", dialect)
        return only_on == dialect

    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        include_object=include_object,
        compare_server_default=True,
        render_as_batch=dialect == "sqlite",  # SQLite alters a table by copying it
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    if context.is_offline_mode():
        raise RuntimeError("contact_segments migrations run online only")
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    engine = make_engine(context.config.get_main_option("sqlalchemy.url"))
    try:
        with engine.begin() as connection:
            run_migrations(connection)
    finally:
        engine.dispose()


main()
