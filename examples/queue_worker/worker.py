"""A distributed job queue for DashScope image jobs: taskiq workers on ``dashscope_async.queue``.

Run Redis, then any number of worker processes, on any number of hosts (from the repository
root: the example is the package ``examples.queue_worker``)::

    taskiq worker examples.queue_worker.worker:broker --workers 4 --max-async-tasks 8
    python -m examples.queue_worker.enqueue https://example.com/a.jpg https://example.com/b.jpg

``JobQueue`` gives each worker process one ``AsyncDashScope`` client, one ``RedisLimiter`` and one
``RedisJournal``; each job runs through an ``AsyncTaskRunner`` on them, so the account's limits
(2 submits/s and 1 task in progress per model) hold across all workers together, and a job is
submitted at most once however often the queue delivers it: its key is the idempotency key.

Settings (environment): ``QUEUE_REDIS_URL`` (broker, limiter and job store; default
``redis://127.0.0.1:6379/0``), ``LIMITER_NAMESPACE`` (default ``dashscope``),
``QUEUE_IDLE_TIMEOUT_MS`` (when a silent worker's job goes to another; default 10 minutes),
``DASHSCOPE_API_KEY`` and ``DASHSCOPE_HTTP_BASE_URL`` (read by the client),
``EMULATOR_TIME_SCALE`` (only against the emulator: its time scale, so the workers poll when its
shortened tasks end).
"""

from __future__ import annotations

import os

import dashscope_async as ds
from dashscope_async.queue import JobQueue

REDIS_URL = os.environ.get("QUEUE_REDIS_URL", "redis://127.0.0.1:6379/0")
NAMESPACE = os.environ.get("LIMITER_NAMESPACE", "dashscope")


def poll_policy() -> ds.PollPolicy:
    """The service's run times, or the emulator's when ``EMULATOR_TIME_SCALE`` says so."""
    scale = float(os.environ.get("EMULATOR_TIME_SCALE", "1"))
    return ds.PollPolicy(
        run_time_priors={name: spec.typical_run_seconds * scale for name, spec in ds.MODELS.items()}
    )


def make_queue(redis_url: str, namespace: str) -> JobQueue:
    """The queue as workers and senders see it; senders elsewhere make their own the same way."""
    return JobQueue(
        redis_url,
        namespace=namespace,
        poll=poll_policy(),
        redelivery_after=int(os.environ.get("QUEUE_IDLE_TIMEOUT_MS", "600000")) / 1000,
    )


queue = make_queue(REDIS_URL, NAMESPACE)
#: What ``taskiq worker`` runs.
broker = queue.broker
