"""The real-time engine through a real broker and a real ``celery worker`` process.

The worker is a subprocess pointed at this run's (committed: transactional tests) test
database; events go in through the API, and the test waits for the downstream tags.
Also: a worker process killed in the middle of a task — its message is requeued
(``acks_late`` + ``task_reject_on_worker_lost``) and the end state is the same.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from tags.models import TagValue
from tests.tags.test_realtime import Chain, expected, purchase

REPO = Path(__file__).resolve().parents[2]
REDIS = os.environ.get("TAGWEAVE_TEST_REDIS", "redis://127.0.0.1:6379/13")
RABBIT = os.environ.get("TAGWEAVE_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//")
pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _reachable(url: str) -> bool:
    import socket
    from urllib.parse import urlparse

    parsed = urlparse(url)
    try:
        socket.create_connection((parsed.hostname, parsed.port), timeout=1).close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def worker(broker: str, tmp_path: Path):
    """A celery worker (prefork, one process) on ``broker`` and this run's test database."""
    from config.celery import app

    queue = f"tw_test_{uuid.uuid4().hex[:8]}"
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "CELERY_BROKER_URL": broker,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "1",
        "LOG_LEVEL": "INFO",
    }
    log = tmp_path / "worker.log"
    command = [sys.executable, "-m", "celery", "-A", "config", "worker", "-P", "prefork", "-c", "1", "-Q", queue]
    command += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO"]
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    saved = {k: app.conf[k] for k in ("broker_url", "task_always_eager", "task_default_queue")}
    app.conf.update(broker_url=broker, task_always_eager=False, task_default_queue=queue)
    _reset_pool(app)
    try:
        _wait(lambda: "ready" in log.read_text(), 60, lambda: log.read_text())
        yield process, log
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
        app.conf.update(**saved)
        _reset_pool(app)


def _reset_pool(app) -> None:
    """Forget broker connections and producers (kombu keeps a global registry of them)."""
    from kombu import pools

    pools.reset()
    app._pool = None
    app.amqp._producer_pool = None


def _wait(condition, seconds: float, describe=lambda: "") -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {seconds}s: {describe()}")


def _values(tag) -> dict:
    return dict(TagValue.objects.filter(tag=tag).values_list("subject_id", "value"))


def _round_trip(api, chain, broker, tmp_path) -> None:
    m = chain.members
    with worker(broker, tmp_path) as (_, log):
        started = time.monotonic()
        response = api.post(
            "/api/v1/events/batch/", {"items": [purchase(m[0], 1, 150), purchase(m[0], 2, 90)]}, format="json"
        )
        assert response.status_code == 200, response.json()
        _wait(lambda: _values(chain.region_hv).get(chain.w.shanghai.id) not in (None, 0), 30, log.read_text)
        elapsed = time.monotonic() - started
        assert _values(chain.high)[m[0].id] is True
        for tag in chain.computed():
            assert _values(tag) == expected(tag), tag.code
        assert "tags.refresh" in log.read_text()
    assert elapsed < 30


@pytest.fixture
def live_chain(world):
    return Chain(world)


def test_events_through_redis_and_a_worker(api, live_chain, tmp_path):
    if not _reachable(REDIS):
        pytest.skip(f"no Redis at {REDIS}")
    _round_trip(api, live_chain, REDIS, tmp_path)


def test_events_through_rabbitmq_and_a_worker(api, live_chain, tmp_path):
    if not _reachable(RABBIT):
        pytest.skip(f"no RabbitMQ at {RABBIT}")
    _round_trip(api, live_chain, RABBIT, tmp_path)


def test_a_worker_killed_mid_task_converges(api, live_chain, tmp_path):
    """The task blocks on a row we lock; its process is killed; the requeued task finishes the job."""
    if not _reachable(REDIS):
        pytest.skip(f"no Redis at {REDIS}")
    chain, m = live_chain, live_chain.members
    db = connection.settings_dict
    dsn = f"host={db['HOST'] or '127.0.0.1'} port={db['PORT'] or 5432} user={db['USER']} dbname={db['NAME']}"
    with worker(REDIS, tmp_path) as (process, log), psycopg.connect(dsn) as blocker:
        blocker.execute(
            "SELECT 1 FROM tags_tagvalue WHERE tag_id = %s AND subject_id = %s FOR UPDATE",
            [chain.clinic_hv.pk, chain.c1.id],
        )
        response = api.post("/api/v1/events/batch/", {"items": [purchase(m[1], 1, 500)]}, format="json")
        assert response.status_code == 200
        with psycopg.connect(dsn, autocommit=True) as probe:
            _wait(
                lambda: (
                    probe.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
                        [db["NAME"]],
                    ).fetchone()[0]
                    > 0
                ),
                30,
                log.read_text,
            )
        children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
        assert children, "no pool process"
        for child in children:
            os.kill(int(child), signal.SIGKILL)
        time.sleep(0.5)
        blocker.rollback()  # release the row: the requeued task can now finish
        _wait(lambda: _values(chain.clinic_hv).get(chain.c1.id) not in (None, 0), 60, log.read_text)
        _wait(lambda: all(_values(t) == expected(t) for t in chain.computed()), 30, log.read_text)
        text = log.read_text()
        assert "WorkerLostError" in text or "signal 9" in text, text
    assert _values(chain.high)[m[1].id] is True
