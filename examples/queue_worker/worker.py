"""A distributed job queue for DashScope image jobs: taskiq workers sharing one RedisLimiter.

Run Redis, then any number of worker processes, on any number of hosts (from the repository
root: the example is the package ``examples.queue_worker``)::

    taskiq worker examples.queue_worker.worker:broker --workers 4 --max-async-tasks 8
    python -m examples.queue_worker.enqueue https://example.com/a.jpg https://example.com/b.jpg

Every worker process has one ``AsyncDashScope`` client and one ``RedisLimiter``; each job runs
through an ``AsyncTaskRunner`` on that limiter, so the account's limits (2 submits/s and 1 task
in progress per model) hold across all workers together.

Delivery is at least once (a Redis stream with acks: a job whose worker died is handed to
another worker), and submission is at most once: a job records its task id in Redis as soon as
the service accepts it, and a job that finds a recorded task id waits for that task instead of
submitting again. The one gap left is a worker dying between the service's answer and that
record (milliseconds); DashScope has no idempotency key to close it.

Settings (environment): ``QUEUE_REDIS_URL`` (broker, limiter and task-id records; default
``redis://127.0.0.1:6379/0``), ``LIMITER_NAMESPACE`` (default ``dashscope``), ``DASHSCOPE_API_KEY``
and ``DASHSCOPE_HTTP_BASE_URL`` (read by the client), ``EMULATOR_TIME_SCALE`` (only against the
emulator: its time scale, so the workers poll when its shortened tasks end).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import redis.asyncio as aioredis
from taskiq import AsyncBroker, Context, TaskiqDepends, TaskiqEvents, TaskiqState
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

import dashscope_async as ds
from dashscope_async.redis import RedisLimiter

logger = logging.getLogger("queue_worker")

REDIS_URL = os.environ.get("QUEUE_REDIS_URL", "redis://127.0.0.1:6379/0")
NAMESPACE = os.environ.get("LIMITER_NAMESPACE", "dashscope")
#: Where each job's task id is recorded once the service accepted it (one key per job id).
TASK_ID_KEY = NAMESPACE + ":queue:task-id:{job_id}"
#: Records outlive the service's 24-hour task retention by a little.
TASK_ID_TTL_SECONDS = 25 * 3600

#: Which worker ran a job (reported with its result).
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


def make_broker(redis_url: str, namespace: str) -> AsyncBroker:
    """The job queue: a Redis stream with acks, and results kept in the same Redis.

    Workers use the module's ``broker``; code that enqueues from elsewhere (another Redis URL
    or namespace read at run time) can make its own and send through it with
    ``generate.kicker().with_broker(...)``: a job goes by its task name.
    """
    stream: AsyncBroker = RedisStreamBroker(
        redis_url,
        queue_name=f"{namespace}:queue:jobs",
        # "0": a new consumer group also sees jobs enqueued before any worker started.
        consumer_id="0",
        # One message per read, so jobs spread over the workers instead of the first one taking all.
        xread_count=1,
        # A job whose worker died is handed to another worker after this long without an ack.
        idle_timeout=int(os.environ.get("QUEUE_IDLE_TIMEOUT_MS", "600000")),
    )
    return stream.with_result_backend(RedisAsyncResultBackend(redis_url, result_ex_time=24 * 3600))


broker = make_broker(REDIS_URL, NAMESPACE)


def poll_policy() -> ds.PollPolicy:
    """The service's run times, or the emulator's when ``EMULATOR_TIME_SCALE`` says so."""
    scale = float(os.environ.get("EMULATOR_TIME_SCALE", "1"))
    return ds.PollPolicy(
        run_time_priors={name: spec.typical_run_seconds * scale for name, spec in ds.MODELS.items()}
    )


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def open_worker(state: TaskiqState) -> None:
    """One client, one shared limiter and one Redis connection pool per worker process."""
    state.client = ds.AsyncDashScope()
    state.limiter = RedisLimiter(REDIS_URL, namespace=NAMESPACE)
    state.records = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    state.poll = poll_policy()


@broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
async def close_worker(state: TaskiqState) -> None:
    await state.client.aclose()
    await state.limiter.aclose()
    await state.records.aclose()


def build_request(spec: dict[str, Any]) -> ds.Request:
    """A request from its JSON form: ``{"model": "repaint", "image": ..., "style": 2}`` or
    ``{"model": "sketch", "sketch": ..., "prompt": ...}``."""
    if spec["model"] == "repaint":
        return ds.StyleRepaint(spec["image"], style=ds.RepaintStyle(spec.get("style", 2)))
    if spec["model"] == "sketch":
        return ds.SketchToImage(spec["sketch"], prompt=spec["prompt"])
    raise ValueError(f"unknown model kind {spec['model']!r}")


@broker.task(task_name="dashscope.generate")
async def generate(
    job_id: str,
    spec: dict[str, Any],
    context: Context = TaskiqDepends(),  # noqa: B008 - taskiq's injection idiom
) -> dict[str, Any]:
    """Run one image job; return its task id, image URLs and the worker that ran it.

    ``job_id`` is the caller's id for the job (unique per job): it is what makes a redelivered
    job wait for its existing task instead of submitting a second, billed one.
    """
    state = context.state
    records: aioredis.Redis[str] = state.records
    record_key = TASK_ID_KEY.format(job_id=job_id)
    known_task_id = await records.get(record_key)
    if known_task_id:
        # Submitted by a worker that died: wait for that task, never submit again.
        logger.info("job %s resumes its task %s", job_id, known_task_id)
        result = await state.client.wait(known_task_id)
    else:
        request = build_request(spec)
        async with ds.AsyncTaskRunner(
            state.client, limiter=state.limiter, poll=state.poll
        ) as runner:
            handle = runner.submit(request, key=job_id)
            task_id = await handle.wait_submitted()
            if task_id is not None:
                await records.set(record_key, task_id, ex=TASK_ID_TTL_SECONDS)
            result = await handle
    return {
        "job_id": job_id,
        "task_id": result.task_id,
        "images": [image.url for image in result.images],
        "worker": WORKER_ID,
    }
