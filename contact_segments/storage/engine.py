"""Engines and sessions. Nothing here connects until a factory is called."""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from contact_segments.rules.jsvalues import string_to_number

DATABASE_URL_ENV = "SEGMENTS_DATABASE_URL"
DEFAULT_DATABASE_URL = "sqlite:///segments.db"
"""The embedded default: a SQLite file in the working directory."""

SQLITE_BUSY_TIMEOUT_MS = 10_000


def database_url_from_env() -> str:
    """``$SEGMENTS_DATABASE_URL``, or the embedded default."""
    return os.environ.get(DATABASE_URL_ENV) or DEFAULT_DATABASE_URL


def normalize_url(url: str | URL) -> URL:
    """Parse ``url``; a bare ``postgresql://`` (or ``postgres://``) gets the psycopg 3 driver."""
    if isinstance(url, str) and url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(url: str | URL | None = None, **options: Any) -> Engine:
    """An engine for ``url`` (default: :func:`database_url_from_env`).

    ``options`` go to :func:`sqlalchemy.create_engine`. On SQLite every connection gets WAL,
    ``foreign_keys=ON``, a busy timeout, and transactions that start with ``BEGIN IMMEDIATE``.
    """
    parsed = normalize_url(url if url is not None else database_url_from_env())
    if parsed.get_backend_name() == "postgresql":
        options.setdefault("pool_pre_ping", True)
    engine = create_engine(parsed, **options)
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    elif engine.dialect.driver == "psycopg":
        _configure_psycopg(engine)
    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine``; objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def _configure_psycopg(engine: Engine) -> None:
    from psycopg.types.array import ListBinaryDumper  # here: SQLite needs no psycopg

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Lists (ids, pairs: thousands of values per batch) go to the server in binary.  The
        # text format quotes them value by value in Python, three times slower.
        dbapi_connection.adapters.register_dumper(list, ListBinaryDumper)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # SQLAlchemy, not the sqlite3 module, decides where transactions begin (see _on_begin).
        dbapi_connection.isolation_level = None
        dbapi_connection.create_function("js_number", 1, _js_number, deterministic=True)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            _enable_wal(cursor)
            cursor.execute("PRAGMA synchronous=NORMAL")  # durable enough with WAL, much faster
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # Take the write lock up front. A deferred transaction that reads and then writes cannot
        # wait for a concurrent writer (SQLite fails it with SQLITE_BUSY at once); an immediate one
        # queues on busy_timeout. This serialises transactions, readers' included: fine for the
        # embedded default; PostgreSQL is the answer to concurrency.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _js_number(text: object) -> float | None:
    """SQL ``js_number(text)``: JavaScript's ``Number(text)``, NULL for NaN (see rules.sql).

    SQLite may call it on rows a surrounding type test excludes (it does not promise to
    short-circuit), so anything but text gives NULL instead of raising.
    """
    if not isinstance(text, str):
        return None
    number = string_to_number(text)
    return None if number != number else number


def _enable_wal(cursor: sqlite3.Cursor) -> None:
    """Put the database in WAL mode (it stays so; for ``:memory:`` this is a no-op).

    On a new file, connections opened together may find another one mid-transaction; SQLite then
    refuses the switch at once instead of waiting (waiting could deadlock), so retry a while.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            busy = error.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY  # any extended BUSY code
            if not busy or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
