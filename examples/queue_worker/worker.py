"""A distributed job queue for DashScope image jobs: taskiq workers sharing one RedisLimiter.

Run Redis, then any number of worker processes, on any number of hosts::

    taskiq worker worker:broker --workers 4 --max-async-tasks 8    # in examples/queue_worker/
    python enqueue.py photo1.jpg-url photo2.jpg-url ...

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
and ``DASHSCOPE_HTTP_BASE_URL`` (read by the client).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import redis.asyncio as aioredis
from taskiq import Context, TaskiqDepends, TaskiqEvents, TaskiqState
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

broker = RedisStreamBroker(
    REDIS_URL,
    queue_name=f"{NAMESPACE}:queue:jobs",
    # "0": a new consumer group also sees jobs enqueued before any worker started.
    consumer_id="0",
    # One message per read, so jobs spread over the workers instead of the first one taking all.
    xread_count=1,
    # A job whose worker died is handed to another worker after this long without an ack.
    idle_timeout=int(os.environ.get("QUEUE_IDLE_TIMEOUT_MS", "600000")),
).with_result_backend(RedisAsyncResultBackend(REDIS_URL, result_ex_time=24 * 3600))


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def open_worker(state: TaskiqState) -> None:
    """One client, one shared limiter and one Redis connection pool per worker process."""
    state.client = ds.AsyncDashScope()
    state.limiter = RedisLimiter(REDIS_URL, namespace=NAMESPACE)
    state.records = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)


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
    """Run one image job; return its task id and image URLs.

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
        async with ds.AsyncTaskRunner(state.client, limiter=state.limiter) as runner:
            handle = runner.submit(request, key=job_id)
            task_id = await handle.wait_submitted()
            if task_id is not None:
                await records.set(record_key, task_id, ex=TASK_ID_TTL_SECONDS)
            result = await handle
    return {
        "job_id": job_id,
        "task_id": result.task_id,
        "images": [image.url for image in result.images],
    }
