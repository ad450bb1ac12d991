"""A job queue for DashScope image jobs: taskiq workers on one Redis (extra ``queue``).

Owns ``JobQueue``: the taskiq broker (a Redis stream with acks, results in the same Redis), the
ready ``generate`` task, and the per-process setup of every worker (one client, one
``RedisLimiter``, one ``RedisJournal``). A job goes in with its key, the idempotency key: however
often the queue delivers it, and whichever workers take it, it is submitted at most once and
every delivery returns its one outcome. How a request travels (JSON, URLs only) is owned here
too. It never decides when a submit may go (the limiter) or what a job has done (the journal).

Why taskiq: asyncio-native (the runner is awaited in the task itself, no thread or event loop
of its own), typed, with a Redis-streams broker that redelivers the jobs of a dead worker. Celery
and RQ run tasks in synchronous workers; arq is asyncio too but unmaintained.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, Final

import attrs

from ._budget import Budget
from ._checks import check_job_key
from ._client import AsyncDashScope
from ._errors import DashScopeError, RecordedFailureError, ValidationError
from ._files import PASS_THROUGH_SCHEMES
from ._journal import _plain, _result_from_json, _result_json
from ._limits import Limits
from ._models import Request, SketchToImage, StyleRepaint, TaskResult
from ._polling import PollPolicy
from ._runner import AsyncTaskRunner, TaskService
from .redis import RedisJournal, RedisLimiter

try:
    from taskiq import AsyncBroker, AsyncTaskiqTask, Context, TaskiqDepends, TaskiqEvents
    from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "dashscope_async.queue needs taskiq and taskiq-redis: pip install 'dashscope-async[queue]'"
    ) from exc

__all__ = ["TASK_NAME", "JobQueue", "QueuedOutcome", "decode_request", "encode_request"]

#: The name workers know the task by (code that enqueues from elsewhere sends to it).
TASK_NAME: Final = "dashscope_async.generate"
_REQUEST_TYPES: Final[dict[str, type[StyleRepaint] | type[SketchToImage]]] = {
    StyleRepaint.model: StyleRepaint,
    SketchToImage.model: SketchToImage,
}
_IMAGE_FIELDS: Final = ("image", "style_ref", "sketch")


def encode_request(request: Request) -> dict[str, Any]:
    """A request as JSON for the queue: ``{"model": ..., "fields": {...}}``.

    Image inputs must be URLs (http, https, oss, data): a local path or bytes would mean nothing
    on the worker that takes the job, so upload them first (``client.prepare``).

    Raises:
        ValidationError: an image input is not a URL.
    """
    fields: dict[str, Any] = {}
    for field in attrs.fields(type(request)):
        value = getattr(request, field.name)
        is_url = isinstance(value, str) and value.lower().startswith(PASS_THROUGH_SCHEMES)
        if field.name in _IMAGE_FIELDS and value is not None and not is_url:
            raise ValidationError(
                field.name,
                "a queued job's image must be a URL (http, https, oss, data): a local file"
                " or bytes cannot reach another host's worker",
            )
        fields[field.name] = _plain(value)
    return {"model": request.model, "fields": fields}


def decode_request(document: Mapping[str, Any]) -> Request:
    """The request ``encode_request`` wrote (validated again, as every request is).

    Raises:
        ValidationError: the document names no known model, or a field breaks its rule.
    """
    model = document.get("model")
    kind = _REQUEST_TYPES.get(model) if isinstance(model, str) else None
    fields = document.get("fields")
    if kind is None or not isinstance(fields, Mapping):
        raise ValidationError("model", f"not a queued request: model {model!r}")
    values = dict(fields)
    if isinstance(values.get("sketch_color"), list):
        values["sketch_color"] = tuple(tuple(rgb) for rgb in values["sketch_color"])
    try:
        return kind(**values)
    except TypeError as exc:
        raise ValidationError("fields", f"not a {model} request: {exc}") from None


@attrs.frozen
class QueuedOutcome:
    """How a queued job ended, as the worker that ran it (or replayed it) reported.

    Attributes:
        key: the job's key.
        result: the task's result, when the job succeeded.
        error_type: the class name of the error it ended with, when it did not.
        error_code: that error's ``code``, if any.
        error_message: that error's text.
        task_id: the service's task id, if a task was created.
        worker: ``host:pid`` of the worker that answered.

    Example:
        ```python
        with anyio.fail_after(600):
            outcome = await queue.outcome(queued)
        result = outcome.unwrap()   # TaskResult, or raises RecordedFailureError
        ```
    """

    key: str
    result: TaskResult | None
    error_type: str | None
    error_code: str | None
    error_message: str | None
    task_id: str | None
    worker: str

    @property
    def ok(self) -> bool:
        """True when the job produced a result."""
        return self.result is not None

    def unwrap(self) -> TaskResult:
        """The result, or raise the job's error (as ``RecordedFailureError``)."""
        if self.result is None:
            raise RecordedFailureError(
                f"job {self.key!r} failed: {self.error_message}",
                error_type=self.error_type or "DashScopeError",
                code=self.error_code,
                task_id=self.task_id,
            )
        return self.result


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@attrs.define(eq=False)
class _WorkerResources:
    client: TaskService
    limiter: RedisLimiter
    journal: RedisJournal


class JobQueue:
    """DashScope image jobs through a taskiq queue on Redis, run by any number of workers.

    Every worker process shares one account's limits (``RedisLimiter``) and one job store
    (``RedisJournal``) through the same Redis and namespace, so a job given twice, redelivered
    after its worker died, or taken by two workers at once is submitted at most once, and the
    ``budget``, if any, holds across all of them.

    Args:
        redis_url: the Redis of the queue, the limiter and the store.
        namespace: the prefix of every key (the queue's stream too).
        limits: the account's limits (the service's by default); the same in every worker.
        poll: when to poll (shorter run-time priors against the emulator).
        budget: a spending cap over every worker (the same in each).
        client_factory: makes each worker's client (default ``AsyncDashScope()``, which reads
            ``DASHSCOPE_API_KEY`` and ``DASHSCOPE_HTTP_BASE_URL``); closed with the worker if
            it has ``aclose``.
        redelivery_after: how long a job taken by a worker that went silent waits before the
            stream hands it to another worker.
        result_ttl: how long outcomes are kept for ``outcome``.
        claim_ttl: how long a dead worker's job stays claimed (see ``RedisJournal``).

    Example:
        ```python
        # worker.py: run with `taskiq worker worker:broker`
        from dashscope_async.queue import JobQueue

        queue = JobQueue("redis://127.0.0.1:6379/0", namespace="acme")
        broker = queue.broker

        # anywhere else
        await queue.broker.startup()
        queued = await queue.enqueue(ds.StyleRepaint(url, style=ds.RepaintStyle.ANIME), key="order-1")
        result = (await queue.outcome(queued)).unwrap()
        ```
    """

    def __init__(
        self,
        redis_url: str,
        *,
        namespace: str = "dashscope",
        limits: Limits | None = None,
        poll: PollPolicy | None = None,
        budget: Budget | None = None,
        client_factory: Callable[[], TaskService] = AsyncDashScope,
        redelivery_after: float = 600.0,
        result_ttl: timedelta = timedelta(hours=24),
        claim_ttl: float = 30.0,
    ) -> None:
        if redelivery_after <= 0:
            raise ValueError(f"redelivery_after must be positive: {redelivery_after!r}")
        self.redis_url = redis_url
        self.namespace = namespace
        self.limits = limits
        self.poll = poll
        self.budget = budget
        self.claim_ttl = claim_ttl
        self._client_factory = client_factory
        stream = RedisStreamBroker(
            redis_url,
            queue_name=f"{namespace}:queue:jobs",
            # "0": a new consumer group also sees jobs enqueued before any worker started.
            consumer_id="0",
            # One message per read, so jobs spread over the workers.
            xread_count=1,
            idle_timeout=round(redelivery_after * 1000),
        )
        self.broker: AsyncBroker = stream.with_result_backend(
            RedisAsyncResultBackend(redis_url, result_ex_time=round(result_ttl.total_seconds()))
        )
        self.broker.add_event_handler(TaskiqEvents.WORKER_STARTUP, self._open_worker)
        self.broker.add_event_handler(TaskiqEvents.WORKER_SHUTDOWN, self._close_worker)
        self.generate = self.broker.task(task_name=TASK_NAME)(self._make_task())

    def __repr__(self) -> str:
        return f"<JobQueue namespace={self.namespace!r}>"

    # --- the sending side ---------------------------------------------------------------------

    async def enqueue(self, request: Request, *, key: str) -> AsyncTaskiqTask[dict[str, Any]]:
        """Put a job on the queue under ``key`` (the broker must be started).

        Enqueueing the same key again is safe: the job runs once, and both return its outcome.

        Raises:
            ValidationError: ``key`` is empty, or an image input is not a URL.
        """
        check_job_key("key", key)
        return await self.generate.kiq(key, encode_request(request))

    async def outcome(self, queued: AsyncTaskiqTask[dict[str, Any]]) -> QueuedOutcome:
        """Wait for a queued job's outcome (bound the wait with ``anyio.fail_after``)."""
        answer = await queued.wait_result()
        if answer.is_err:
            raise RecordedFailureError(
                f"the queued job's task raised: {answer.error!r}", error_type="QueueError"
            )
        return _outcome_from_json(answer.return_value)

    # --- the worker side ----------------------------------------------------------------------

    async def _open_worker(self, state: Any) -> None:
        state.dashscope = _WorkerResources(
            client=self._client_factory(),
            limiter=RedisLimiter(self.redis_url, namespace=self.namespace, limits=self.limits),
            journal=RedisJournal(
                self.redis_url, namespace=self.namespace, claim_ttl=self.claim_ttl
            ),
        )

    async def _close_worker(self, state: Any) -> None:
        resources: _WorkerResources = state.dashscope
        close = getattr(resources.client, "aclose", None)
        if close is not None:
            await close()
        await resources.limiter.aclose()
        await resources.journal.aclose()

    def _make_task(self) -> Callable[..., Any]:
        queue = self

        async def generate(
            key: str,
            request: dict[str, Any],
            context: Context = TaskiqDepends(),  # noqa: B008 - taskiq's injection idiom
        ) -> dict[str, Any]:
            """Run one image job by its key; answer its outcome as JSON."""
            return await queue.run_job(context.state.dashscope, key, request)

        return generate

    async def run_job(
        self, resources: _WorkerResources, key: str, document: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Run (or replay, or take up) the job ``key`` in this worker; its outcome as JSON."""
        try:
            request = decode_request(document)
        except ValidationError as exc:
            return _error_json(key, exc, None)
        async with AsyncTaskRunner(
            resources.client,
            limiter=resources.limiter,
            journal=resources.journal,
            poll=self.poll,
            budget=self.budget,
        ) as runner:
            outcome = await runner.submit(request, key=key).wait()
        if outcome.result is not None:
            return {
                "key": key,
                "result": _result_json(outcome.result),
                "task_id": outcome.task_id,
                "worker": _worker_id(),
            }
        assert outcome.error is not None
        return _error_json(key, outcome.error, outcome.task_id)


def _error_json(key: str, error: DashScopeError, task_id: str | None) -> dict[str, Any]:
    code = getattr(error, "code", None)
    return {
        "key": key,
        "error_type": (
            error.error_type if isinstance(error, RecordedFailureError) else type(error).__name__
        ),
        "error_code": None if code is None else str(code),
        "error_message": str(error),
        "task_id": task_id,
        "worker": _worker_id(),
    }


def _outcome_from_json(document: Mapping[str, Any]) -> QueuedOutcome:
    text = document.get("result")
    return QueuedOutcome(
        key=str(document["key"]),
        result=None if text is None else _result_from_json(str(text)),
        error_type=document.get("error_type"),
        error_code=document.get("error_code"),
        error_message=document.get("error_message"),
        task_id=document.get("task_id"),
        worker=str(document.get("worker", "")),
    )
