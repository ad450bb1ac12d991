"""A scripted stand-in for ``AsyncDashScope`` in the runner's unit tests.

Not a second emulator: it has no HTTP, no validation and no limits. Tasks live on the test's
clock (virtual time), and a script makes the next submits throttle, fail or lose their answer,
so each runner rule can be tested exactly. End-to-end behaviour is tested against the emulator.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Literal

import attrs
import httpx

from dashscope_async import (
    AmbiguousSubmitError,
    BadRequestError,
    GeneratedImage,
    RateLimitError,
    Request,
    ServerError,
    Task,
    TaskInfo,
    TaskListItem,
    TaskMetrics,
    TaskResult,
    TaskService,
    TaskStatus,
    Usage,
)
from dashscope_async._clock import SYSTEM_CLOCK, Clock
from dashscope_async._files import PreparedInputs

SubmitFault = Literal[
    "throttle",  # 429: no task
    "lost-created",  # the task is created but the answer is lost
    "lost-not-created",  # the answer is lost and no task was created
    "bad-request",  # 400: no task
]


@attrs.define
class FakeTask:
    task_id: str
    request: Request
    created: float
    starts: float
    ends: float
    outcome: Literal["succeed", "fail"] = "succeed"
    canceled: bool = False

    def status(self, now: float) -> TaskStatus:
        if self.canceled:
            return TaskStatus.CANCELED
        if now < self.starts:
            return TaskStatus.PENDING
        if now < self.ends:
            return TaskStatus.RUNNING
        return TaskStatus.SUCCEEDED if self.outcome == "succeed" else TaskStatus.FAILED


class FakeClient:
    """Submit, get_task, cancel_task and list_tasks on a clock, with scripted faults."""

    def __init__(
        self,
        *,
        run_seconds: float | Callable[[Request], float] = 1.0,
        pending_seconds: float = 0.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.clock = clock
        # Result URLs point nowhere: tests that download use the emulator.
        self.http = httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(404)))
        self._run_seconds = run_seconds
        self.pending_seconds = pending_seconds
        self.tasks: dict[str, FakeTask] = {}
        self.submit_times: list[float] = []
        #: Every request whose inputs were prepared (uploaded), in order.
        self.prepared: list[Request] = []
        self.submit_faults: deque[SubmitFault] = deque()
        self.poll_faults: deque[Exception] = deque()
        self.failing_prompts: set[str] = set()
        self.polls = 0
        self.cancels: list[str] = []
        self.list_calls = 0
        self.stranger_tasks = 0
        self._ids = itertools.count(1)
        self._origin = clock.now()
        self._wall_origin = clock.wall()

    def as_client(self) -> TaskService:
        return self

    def wall(self, at: float) -> datetime:
        return self._wall_origin + timedelta(seconds=at - self._origin)

    def run_seconds(self, request: Request) -> float:
        return self._run_seconds(request) if callable(self._run_seconds) else self._run_seconds

    def _create(self, request: Request) -> FakeTask:
        now = self.clock.now()
        starts = now + self.pending_seconds
        task = FakeTask(
            task_id=f"task-{next(self._ids)}",
            request=request,
            created=now,
            starts=starts,
            ends=starts + self.run_seconds(request),
            outcome="fail"
            if getattr(request, "prompt", None) in self.failing_prompts
            else "succeed",
        )
        self.tasks[task.task_id] = task
        return task

    def forget(self, task_id: str) -> None:
        """The service forgets a task, as it does after 24 hours."""
        del self.tasks[task_id]

    def add_stranger_task(self, request: Request) -> None:
        """A task of the same model made by someone else on the account."""
        self.stranger_tasks += 1
        self._create(request)

    def in_progress(self, model: str, at: float) -> int:
        return sum(
            1
            for task in self.tasks.values()
            if task.request.model == model
            and task.created <= at
            and not task.canceled
            and at < task.ends
        )

    async def prepare(self, request: Request) -> PreparedInputs:
        self.prepared.append(request)
        return PreparedInputs(urls={}, oss_resolve=False)

    async def submit(
        self,
        request: Request,
        *,
        retry_throttled: bool = True,
        prepared: PreparedInputs | None = None,
    ) -> Task:
        now = self.clock.now()
        self.submit_times.append(now)
        fault = self.submit_faults.popleft() if self.submit_faults else None
        sent_at = self.wall(now)
        if fault == "throttle":
            raise RateLimitError(
                "Requests rate limit exceeded",
                status_code=429,
                code="Throttling.RateQuota",
                retry_after=1.0,
            )
        if fault == "bad-request":
            raise BadRequestError("bad", status_code=400, code="InvalidParameter")
        if fault == "lost-not-created":
            raise AmbiguousSubmitError("lost", model=request.model, sent_at=sent_at)
        task = self._create(request)
        if fault == "lost-created":
            raise AmbiguousSubmitError("lost", model=request.model, sent_at=sent_at)
        return Task(task.task_id, TaskStatus.PENDING, request.model, "req")

    async def get_task(self, task_id: str, *, retry: bool = True) -> TaskInfo:
        self.polls += 1
        if self.poll_faults:
            raise self.poll_faults.popleft()
        task = self.tasks.get(task_id)
        if task is None:
            return TaskInfo(task_id=task_id, status=TaskStatus.UNKNOWN)
        now = self.clock.now()
        status = task.status(now)
        common = {
            "task_id": task_id,
            "status": status,
            "submit_time": self.wall(task.created),
            "scheduled_time": self.wall(task.starts) if now >= task.starts else None,
            "end_time": self.wall(task.ends) if status.is_terminal else None,
        }
        if status is TaskStatus.SUCCEEDED:
            return TaskResult(
                **common,  # type: ignore[arg-type]
                images=(GeneratedImage(url=f"http://127.0.0.1:9/{task_id}.png"),),
                metrics=TaskMetrics(total=1, succeeded=1),
                usage=Usage(image_count=1),
            )
        if status is TaskStatus.FAILED:
            return TaskInfo(
                **common,  # type: ignore[arg-type]
                code="InternalError.Algo",
                message="failed",
                usage=Usage(image_count=0),
            )
        return TaskInfo(**common)  # type: ignore[arg-type]

    async def cancel_task(
        self, task_id: str, *, meter: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        if meter is not None:
            await meter()
        self.cancels.append(task_id)
        task = self.tasks[task_id]
        if task.status(self.clock.now()) is not TaskStatus.PENDING:
            raise BadRequestError("not pending", status_code=400, code="UnsupportedOperation")
        task.canceled = True

    def list_tasks(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        model: str | None = None,
        status: TaskStatus | str | None = None,
        page_size: int = 50,
        *,
        before_page: Callable[[], Awaitable[None]] | None = None,
    ) -> AsyncIterator[TaskListItem]:
        self.list_calls += 1
        items = [
            TaskListItem(
                task_id=task.task_id,
                status=task.status(self.clock.now()),
                model=task.request.model,
                created=self.wall(task.created),
            )
            for task in self.tasks.values()
            if (model is None or task.request.model == model)
            and (start is None or self.wall(task.created) >= start)
        ]

        async def generate() -> AsyncIterator[TaskListItem]:
            for item in items:
                yield item

        return generate()


def server_error() -> ServerError:
    return ServerError("boom", status_code=500, code="InternalError")
