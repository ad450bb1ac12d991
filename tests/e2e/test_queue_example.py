"""The job-queue example end to end: a batch through two taskiq workers, one Redis, the emulator.

Starts a throwaway ``redis-server``, the emulator on loopback (at the service's limits: 2 submits/s
and 1 task in progress per model; tasks 50 times faster), and two ``taskiq worker`` processes of
``examples/queue_worker`` pointed at both. Then enqueues a batch with the example's own
``enqueue_and_wait`` and checks the results and what the emulator saw: every job done, each
submitted once, both workers used, and the account's limits kept across them.

Asyncio only (taskiq and redis-py); about 10 seconds.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import redis

import dashscope_async as ds
from dashscope_async._wire import RepaintInput
from dashscope_async.testing import Emulator, EmulatorConfig, RunningServer
from tests.redis_server import RedisServer, redis_server

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(60)]

REPO = Path(__file__).resolve().parents[2]
REPAINT = ds.STYLE_REPAINT.name
TIME_SCALE = 0.02
JOBS = 10
WORKERS = 2


@pytest.fixture
def redis_service() -> Iterator[RedisServer]:
    with redis_server() as running:
        yield running


@pytest.fixture
def emulator_server() -> Iterator[RunningServer]:
    config = EmulatorConfig(time_scale=TIME_SCALE, seed=5, render_results=False)
    with Emulator(config).serve_sync() as server:
        yield server


def _start_workers(
    redis_service: RedisServer, server: RunningServer, namespace: str, log: Path
) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "QUEUE_REDIS_URL": redis_service.url,
        "LIMITER_NAMESPACE": namespace,
        "DASHSCOPE_API_KEY": server.api_key,
        "DASHSCOPE_HTTP_BASE_URL": server.base_url,
        "EMULATOR_TIME_SCALE": str(TIME_SCALE),
    }
    command = [
        sys.executable,
        "-m",
        "taskiq",
        "worker",
        "examples.queue_worker.worker:broker",
        "--workers",
        "1",
        "--log-level",
        "WARNING",
        "--shutdown-timeout",
        "2",
    ]
    with log.open("ab") as output:
        # Each in a session of its own: taskiq forks its worker child, and the cleanup below
        # ends that group, which holds only what this test started.
        return [
            subprocess.Popen(
                command,
                cwd=REPO,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            for _ in range(WORKERS)
        ]


def _wait_until_listening(
    redis_service: RedisServer, workers: list[subprocess.Popen[bytes]], log: Path
) -> None:
    """Wait until every worker reads the stream (one blocked XREADGROUP each), so the batch
    is shared between them rather than taken by the first one up."""
    deadline = time.monotonic() + 30
    with redis.Redis.from_url(redis_service.url) as store:
        while True:
            for process in workers:
                assert process.poll() is None, log.read_text(errors="replace")
            # (A consumer shows in XINFO only once it read something; a blocked read shows here.)
            listening = [c for c in store.client_list() if c.get("cmd") == "xreadgroup"]
            if len(listening) >= WORKERS:
                return
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.05)


def _stop(workers: list[subprocess.Popen[bytes]]) -> None:
    # Ask politely, then end the group: taskiq's main process can take 15 s over a graceful
    # stop, and every job is acked by now (a job still running would be redelivered anyway).
    for process in workers:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 3
    for process in workers:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_two_taskiq_workers_process_a_batch_within_the_limits(
    redis_service: RedisServer, emulator_server: RunningServer, tmp_path: Path
) -> None:
    from examples.queue_worker.enqueue import enqueue_and_wait
    from examples.queue_worker.worker import make_queue

    namespace = f"queue-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "workers.log"
    images = [f"{emulator_server.result_url}/samples/portrait.png?job={n}" for n in range(JOBS)]
    workers = _start_workers(redis_service, emulator_server, namespace, log)
    try:
        _wait_until_listening(redis_service, workers, log)
        enqueue = functools.partial(
            enqueue_and_wait,
            images,
            style=int(ds.RepaintStyle.ANIME),
            wait_seconds=30,
            queue=make_queue(redis_service.url, namespace),
        )
        outcomes = anyio.run(enqueue, backend="asyncio")
    finally:
        _stop(workers)

    assert [o.error_message for o in outcomes] == [None] * JOBS, log.read_text(errors="replace")
    results = [o.unwrap() for o in outcomes]
    assert all(r.images for r in results)
    emulator = emulator_server.emulator
    assert {r.task_id for r in results} == set(emulator.tasks)
    # Each job submitted once: one task per image, no body sent twice.
    sent = Counter(
        task.body.input.image_url
        for task in emulator.tasks.values()
        if isinstance(task.body.input, RepaintInput)
    )
    assert sent == Counter(images)
    assert emulator.stats.total_duplicates == 0
    # Both workers took jobs, and together they kept the account's limits.
    assert len({o.worker for o in outcomes}) == WORKERS
    stats = emulator.stats
    assert stats.peak_in_progress[REPAINT] == 1
    assert stats.throttled_submits[REPAINT] == 0
    assert stats.max_submits_in_any_window(REPAINT, 1.0) <= 2
