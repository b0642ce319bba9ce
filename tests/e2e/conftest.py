"""Real Celery workers: subprocesses on the Redis broker and the test's PostgreSQL schema."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy
import pytest
import redis
from sqlalchemy.orm import Session, sessionmaker

from contact_segments.plugin import create_plugin_manager
from contact_segments.service import UnitOfWork
from contact_segments.service.settings import Settings
from contact_segments.storage import make_engine, make_session_factory
from contact_segments.tasks import CeleryDispatcher, create_celery_app
from tests.support.reference_host import FAILURES_ENV, JOURNAL_ENV, ReferenceHost

REPO = Path(__file__).resolve().parents[2]
WORKER_START_TIMEOUT = 60
TEST_BROKER_DB = 15  # a Redis database of the tests' own, flushed around each test


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


@dataclass
class Worker:
    """One ``segments worker`` subprocess, in a process group of its own (so a kill reaches its
    pool children too)."""

    env: dict[str, str]
    log: Path
    concurrency: int = 2
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> Worker:
        command = [sys.executable, "-m", "contact_segments.cli", "worker",
                   f"--concurrency={self.concurrency}", "--loglevel=info"]  # fmt: skip
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                command, env=self.env, cwd=REPO, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(lambda: self._ready(offset), timeout=WORKER_START_TIMEOUT, what=f"a worker to start ({self.log})")
        return self

    def _ready(self, offset: int) -> bool:
        if self.process is not None and self.process.poll() is not None:
            pytest.fail(f"the worker exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
        with self.log.open("rb") as log:
            log.seek(offset)
            return b" ready." in log.read()

    def kill(self) -> None:
        """SIGKILL the worker and its pool children, as a crash or an OOM kill would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


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

    def start_worker(self, concurrency: int = 2) -> Worker:
        worker = Worker(dict(self.env), self.tmp_path / f"worker-{len(self.workers)}.log", concurrency)
        self.workers.append(worker)
        return worker.start()

    def uow(self) -> UnitOfWork:
        """A unit of work whose follow-up work goes to the workers."""
        return UnitOfWork(self.session_factory, CeleryDispatcher(create_celery_app(self.settings)))


@pytest.fixture
def pipeline(backend: str, db_url: str, redis_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    if backend != "postgresql":
        pytest.skip("the Celery pipeline is tested on PostgreSQL")
    broker = f"{redis_url.rsplit('/', 1)[0]}/{TEST_BROKER_DB}"
    redis.Redis.from_url(broker).flushdb()
    journal = tmp_path / "journal.jsonl"
    env = {
        **os.environ,
        "SEGMENTS_DATABASE_URL": db_url,
        "SEGMENTS_BROKER_URL": broker,
        "SEGMENTS_HOST_PLUGINS": "tests.support.reference_host:ReferenceHost",
        JOURNAL_ENV: str(journal),
        FAILURES_ENV: "0",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    settings = Settings(database_url=db_url, broker_url=broker)
    host = ReferenceHost(journal)
    engine = make_engine(db_url)
    state = Pipeline(
        settings, env, tmp_path, make_session_factory(engine), host, create_plugin_manager(settings, plugins=(host,))
    )
    try:
        yield state
    finally:
        for worker in state.workers:
            worker.stop()
        engine.dispose()
        redis.Redis.from_url(broker).flushdb()
