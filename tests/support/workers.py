"""Real Celery workers for the tests: ``segments worker`` subprocesses on Redis and PostgreSQL.

Shared by the end-to-end tests (``tests/e2e``) and the fault tests (``tests/faults``):

* :func:`wait_for` polls a condition with a timeout;
* :class:`Worker` is one ``segments worker`` subprocess in a process group of its own, so a
  ``kill()`` (SIGKILL) reaches its pool children too, as a crash or an OOM kill would;
* :class:`Pipeline` is a host wired to the engine over Celery: the reference host's plugin
  manager, the workers, and the journal the workers' deliveries are written to;
* :func:`open_pipeline` builds one on a test's database and a Redis database of the tests' own,
  and tears it down (workers stopped, the Redis database flushed) afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy
import pytest
import redis
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from contact_segments.plugin import create_plugin_manager
from contact_segments.service import UnitOfWork
from contact_segments.service.settings import Settings
from contact_segments.storage import make_engine, make_session_factory
from contact_segments.tasks import CeleryDispatcher, create_celery_app
from tests.support.reference_host import FAILURES_ENV, JOURNAL_ENV, ReferenceHost

REPO = Path(__file__).resolve().parents[2]
WORKER_START_TIMEOUT = 60
TEST_BROKER_DB = 15
"""The Redis database of the end-to-end tests, flushed around each test (the fault tests use
another, so the two suites can run side by side)."""


def wait_for(condition: Callable[[], Any], *, timeout: float = 20, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll until ``condition()`` is truthy; return its value, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def with_application_name(database_url: str, application_name: str) -> str:
    """``database_url`` whose PostgreSQL connections carry ``application_name`` (so a test can
    find them in ``pg_stat_activity``, e.g. to terminate them)."""
    url = make_url(database_url).update_query_dict({"application_name": application_name})
    return url.render_as_string(hide_password=False)


@dataclass
class Worker:
    """One ``segments worker`` subprocess, in a process group of its own (so a kill reaches its
    pool children too)."""

    env: dict[str, str]
    log: Path
    concurrency: int = 2
    name: str = "worker"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _offset: int = field(default=0, repr=False)
    _terminated: bool = field(default=False, repr=False)

    def start(self, *, wait: bool = True) -> Worker:
        """Start the subprocess; with ``wait``, return once it is ready to take tasks."""
        command = [sys.executable, "-m", "contact_segments.cli", "worker",
                   f"--concurrency={self.concurrency}", "--loglevel=info"]  # fmt: skip
        self._offset = self.log.stat().st_size if self.log.exists() else 0
        self._terminated = False
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                command, env=self.env, cwd=REPO, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = WORKER_START_TIMEOUT) -> Worker:
        wait_for(self.ready, timeout=timeout, what=f"a worker to start ({self.log})")
        return self

    def ready(self) -> bool:
        """Whether the worker has said it is ready (fails the test if it exited instead)."""
        if self.process is not None and self.process.poll() is not None:
            pytest.fail(f"the worker exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
        with self.log.open("rb") as log:
            log.seek(self._offset)
            return b" ready." in log.read()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the worker and its pool children, as a crash or an OOM kill would."""
        if self.alive:
            assert self.process is not None
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def terminate(self) -> None:
        """Ask for a warm shutdown (SIGTERM, once) without waiting for it."""
        if self.alive and not self._terminated:
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            self._terminated = True

    def stop(self) -> None:
        """A warm shutdown, waited for (30 s at most, then a kill)."""
        if self.process is None:
            return
        self.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
        else:
            with suppress(ProcessLookupError):  # pool children a cut-short warm shutdown left behind
                os.killpg(self.process.pid, signal.SIGKILL)


@dataclass
class Pipeline:
    """A host wired to the engine over Celery, its workers, and the reference host's journal."""

    settings: Settings
    env: dict[str, str]
    tmp_path: Path
    session_factory: sessionmaker[Session]
    host: ReferenceHost
    hooks: pluggy.PluginManager
    workers: list[Worker] = field(default_factory=list)

    def worker(self, concurrency: int = 2, *, application_name: str | None = None) -> Worker:
        """A new worker (not started); its database connections carry ``application_name``."""
        env = dict(self.env)
        if application_name is not None:
            env["SEGMENTS_DATABASE_URL"] = with_application_name(self.settings.database_url, application_name)
        number = len(self.workers)
        worker = Worker(env, self.tmp_path / f"worker-{number}.log", concurrency, name=application_name or f"worker-{number}")
        self.workers.append(worker)
        return worker

    def start_worker(self, concurrency: int = 2, *, application_name: str | None = None, wait: bool = True) -> Worker:
        return self.worker(concurrency, application_name=application_name).start(wait=wait)

    def uow(self) -> UnitOfWork:
        """A unit of work whose follow-up work goes to the workers."""
        return UnitOfWork(self.session_factory, CeleryDispatcher(create_celery_app(self.settings)))

    @property
    def broker(self) -> redis.Redis:
        assert self.settings.broker_url is not None
        return redis.Redis.from_url(self.settings.broker_url)


@contextmanager
def open_pipeline(
    db_url: str,
    redis_url: str,
    tmp_path: Path,
    *,
    broker_db: int = TEST_BROKER_DB,
    host_class: type[ReferenceHost] = ReferenceHost,
) -> Iterator[Pipeline]:
    """A :class:`Pipeline` on ``db_url`` (PostgreSQL) and Redis database ``broker_db``, the workers
    delivering to ``host_class`` (the reference host, or a subclass); its workers are stopped and
    the Redis database flushed when the block ends."""
    broker = f"{redis_url.rsplit('/', 1)[0]}/{broker_db}"
    redis.Redis.from_url(broker).flushdb()
    journal = tmp_path / "journal.jsonl"
    env = {
        **os.environ,
        "SEGMENTS_DATABASE_URL": db_url,
        "SEGMENTS_BROKER_URL": broker,
        "SEGMENTS_HOST_PLUGINS": f"{host_class.__module__}:{host_class.__qualname__}",
        JOURNAL_ENV: str(journal),
        FAILURES_ENV: "0",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    settings = Settings(database_url=db_url, broker_url=broker)
    host = host_class(journal)
    engine = make_engine(db_url)
    state = Pipeline(
        settings, env, tmp_path, make_session_factory(engine), host, create_plugin_manager(settings, plugins=(host,))
    )
    try:
        yield state
    finally:
        for worker in state.workers:
            worker.terminate()  # all at once: they shut down side by side
        for worker in state.workers:
            worker.stop()
        engine.dispose()
        with suppress(redis.RedisError):  # a test that stopped Redis restarts it itself
            redis.Redis.from_url(broker).flushdb()
