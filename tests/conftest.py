"""Shared fixtures: databases (SQLite and PostgreSQL) and Redis.

Every test that takes ``db_url``, ``engine`` or ``blank_db_url`` runs once per backend: SQLite (a
temporary file) and PostgreSQL (a schema of its own, chosen through ``search_path`` in the URL, so
subprocesses given the URL see the same data). A missing PostgreSQL or Redis skips the tests that
need it, unless ``SEGMENTS_REQUIRE_SERVICES=1`` (CI), where it fails them.

Environment: ``SEGMENTS_TEST_POSTGRES_URL`` (default: postgres on 127.0.0.1:5432, database ``test``)
and ``SEGMENTS_TEST_REDIS_URL`` (default: redis on 127.0.0.1:6379, db 0).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from contact_segments.storage import Base, make_engine, make_session_factory, migrate, normalize_url

POSTGRES_URL = os.environ.get(
    "SEGMENTS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("SEGMENTS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def _unavailable(service: str, reason: object) -> NoReturn:
    if os.environ.get("SEGMENTS_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{service} is required (SEGMENTS_REQUIRE_SERVICES=1) but unavailable: {reason}")
    pytest.skip(f"{service} unavailable: {reason}")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by the services their fixtures need, so ``-m "not redis"`` and the like work."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "redis_url" in fixtures:
            item.add_marker(pytest.mark.redis)
        if "postgres_url" in fixtures and "backend" not in fixtures:
            item.add_marker(pytest.mark.postgres)


# --- services ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_url() -> URL:
    """The PostgreSQL server's URL, once it answers (checked once per session)."""
    url = normalize_url(POSTGRES_URL)
    engine = make_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as error:
        _unavailable(f"PostgreSQL at {url.render_as_string()}", error.orig)
    finally:
        engine.dispose()
    return url


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis server's URL, once it answers (checked once per session)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as error:
        _unavailable(f"Redis at {REDIS_URL}", error)
    finally:
        client.close()
    return REDIS_URL


# --- databases --------------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend under test: "sqlite" or "postgresql"."""
    name: str = request.param
    return name


@pytest.fixture
def blank_db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A URL of an empty database: no tables, not migrated."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'blank.db'}"
        return
    with _postgres_schema(request.getfixturevalue("postgres_url")) as url:
        yield url


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A URL of a migrated database with empty tables, this test's alone.

    On PostgreSQL the schema is the session's, emptied before each test: change the schema itself
    (e.g. downgrade) only in ``blank_db_url``.
    """
    if backend == "sqlite":
        path = tmp_path / "segments.db"
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), path)
        return f"sqlite:///{path}"
    shared: Engine = request.getfixturevalue("_postgres_migrated_schema")
    _empty_tables(shared)
    return shared.url.render_as_string(hide_password=False)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on this test's migrated, empty database."""
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file; each test gets a copy (much faster than migrating)."""
    path = tmp_path_factory.mktemp("template") / "segments.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()  # the last connection checkpoints the WAL into the file
    return path


@pytest.fixture(scope="session")
def _postgres_migrated_schema(postgres_url: URL) -> Iterator[Engine]:
    """A migrated schema shared by the session's tests (``db_url`` empties it before each)."""
    with _postgres_schema(postgres_url) as url:
        engine = make_engine(url)
        migrate(engine)
        yield engine
        engine.dispose()


@contextmanager
def _postgres_schema(server_url: URL) -> Iterator[str]:
    """A new schema, dropped afterwards; yields a URL whose connections use it (``search_path``)."""
    schema = f"segments_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = make_engine(server_url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = server_url.update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text("SET LOCAL lock_timeout = '10s'"))  # a leaked transaction fails loudly
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _empty_tables(engine: Engine) -> None:
    """Delete every row and restart the id sequences: ~3 ms, where TRUNCATE takes ~15."""
    with engine.begin() as connection:
        connection.execute(text("SET LOCAL lock_timeout = '10s'"))  # a leaked transaction fails loudly
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())
            if (column := table.autoincrement_column) is not None:
                sequence = func.pg_get_serial_sequence(table.name, column.name)
                connection.execute(select(func.setval(sequence, 1, False)))
