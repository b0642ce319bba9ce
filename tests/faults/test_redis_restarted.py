"""Redis restarted during steady load: queued messages, unacknowledged ones and coalescing keys
all vanish (the server keeps nothing: ``--save ""``, no AOF), workers and the host's calls lose
their connections.  Nothing that matters may be lost: the database records what is due, and the
beat's re-sending (:func:`.harness.recover`) finds it again.

Redis is restarted with ``SHUTDOWN NOSAVE`` and the exact command CI starts it with; whatever
happens, it is running again when the test ends.
"""

from __future__ import annotations

import subprocess
import time
from contextlib import suppress

import pytest
import redis

from tests.support.workers import Pipeline, wait_for

from .conftest import POSTGRESQL_ONLY
from .harness import FaultConfig, Load, check_outcomes, reclaim_broker_db, recover, report, start_workers

_config = FaultConfig.from_env()
pytestmark = [pytest.mark.worker_faults, pytest.mark.redis, pytest.mark.timeout(300 + 3 * _config.seconds + 30 * _config.redis_restarts)]

REDIS_SERVER = [
    "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
    "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log",
]  # fmt: skip
"""The command CI (``.ci/run``) and DESIGN.md start Redis with, argument for argument."""


def answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def start_redis(client: redis.Redis) -> None:
    subprocess.run(REDIS_SERVER, check=True, capture_output=True, timeout=30)
    wait_for(lambda: answers(client), timeout=30, interval=0.05, what="Redis to answer PING")


def restart_redis(client: redis.Redis) -> float:
    """SHUTDOWN NOSAVE, then start it again; return how long it was away (seconds)."""
    began = time.monotonic()
    with suppress(redis.ConnectionError):  # the server closes the connection as it goes
        client.shutdown(nosave=True)
    wait_for(lambda: not answers(client), timeout=30, interval=0.02, what="Redis to stop")
    start_redis(client)
    return time.monotonic() - began


@POSTGRESQL_ONLY
def test_redis_restarted_under_load(
    fault_pipeline: Pipeline, fault_config: FaultConfig, redis_url: str, fault_broker_db: int
) -> None:
    pipeline, config = fault_pipeline, fault_config
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=5)
    workers = start_workers(pipeline, 2)
    load = Load(pipeline, config)
    load.setup()
    downtime: list[float] = []
    try:
        load.start(edits_per_second=1.0, ballast_every=3.0)
        pause = config.seconds / (config.redis_restarts + 1)
        for _ in range(config.redis_restarts):
            time.sleep(pause)
            load.edit()  # a rebuild in flight, or its message queued, when Redis goes
            load.ballast_change()
            downtime.append(restart_redis(client))
            reclaim_broker_db(redis_url, fault_broker_db)  # the restart forgot our claim on the database
        time.sleep(pause)
    finally:
        try:
            load.stop()
        finally:
            if not answers(client):  # never leave the machine without its Redis
                start_redis(client)
    for worker in workers:  # a worker must ride out a broker restart, not exit
        assert worker.alive, f"{worker.name} exited when Redis restarted:\n{worker.log.read_text()[-3000:]}"
    figures = {
        "Redis restarts survived": len(downtime),
        "Redis away (s, longest)": round(max(downtime, default=0.0), 2),
    }
    figures |= recover(pipeline, load.workspace_id)
    figures |= check_outcomes(pipeline, load, redeliveries_allowed=False)
    report("redis_restarted", figures)
