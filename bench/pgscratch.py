"""Scratch PostgreSQL schemas for the benchmarks: each works in a schema of its own, dropped after."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, make_url, text

from contact_segments.storage import make_engine


def schema_url(url: str, schema: str) -> str:
    """``url`` with connections in ``schema`` (``search_path``), named after it
    (``application_name``, so their server processes' CPU time can be found)."""
    query = {"options": f"-csearch_path={schema}", "application_name": schema}
    return make_url(url).update_query_dict(query).render_as_string(hide_password=False)


def reset_schema(url: str, schema: str, *, create: bool = True) -> None:
    """Drop ``schema`` with everything in it, and (with ``create``) make it anew."""
    engine = make_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            if create:
                connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    finally:
        engine.dispose()


def execute(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.begin() as connection:
        return connection.execute(text(sql), params)


def vacuum(engine: Engine, *tables: str) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text(f"VACUUM (ANALYZE) {', '.join(tables)}"))
