"""A job as the runner sees it: what you hand in (``Job``), what you get back (``Outcome``,
``JobHandle``), where it is (``JobStatus``), and the state the runner keeps while it works on it.

Owns these types and the per-model ``Turnstile`` that serves a model's jobs in hand-in order. It
does no work on a job: the stages live in ``_pipeline``, the lifecycle in ``_lifecycle``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import anyio
import attrs

from .._errors import DashScopeError
from .._models import Request, TaskResult

__all__ = ["Job", "JobHandle", "JobState", "JobStatus", "Outcome", "Turnstile"]


class JobStatus(enum.StrEnum):
    """Where a job is: on our side (QUEUED, SUBMITTING) or on the service.

    Example:
        ```python
        handle = runner.submit(request)
        print(handle.status)  # JobStatus.QUEUED, then SUBMITTING, PENDING, RUNNING, ...
        ```
    """

    QUEUED = "queued"
    SUBMITTING = "submitting"
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)


@attrs.frozen
class Job:
    """A request with a key of your choosing (for journals and result files).

    Example:
        ```python
        jobs = [ds.Job(ds.StyleRepaint(url, style=ds.RepaintStyle.ANIME), key=name) for name, url in photos]
        async for outcome in runner.map(jobs):
            print(outcome.key, outcome.ok)
        ```
    """

    request: Request
    key: str | None = None


@attrs.frozen
class Outcome:
    """How one job ended: a result, or a typed error. Every job gets exactly one.

    Attributes:
        index: the job's position in its batch (0 for ``run`` and ``submit``).
        request: the request.
        result: the task's result when its task succeeded: also when the job then failed or
            was cancelled while saving the images (``error`` says so; the task is billed).
        error: why the job did not succeed, when it did not.
        task_id: the service's task id, if a task was created.
        key: the job's key, when given.
        files: images saved under ``download_dir``.
        queued_at: runner clock time the job was handed in.
        submitted_at: runner clock time the service accepted it.
        finished_at: runner clock time the job ended.
        polls: polls spent on it.

    Example:
        ```python
        async for outcome in runner.map(requests):
            if outcome.ok:
                print(outcome.index, outcome.result.images[0].url)
            else:
                print(outcome.index, "failed:", outcome.error)
        ```
    """

    index: int
    request: Request
    result: TaskResult | None = None
    error: DashScopeError | None = None
    task_id: str | None = None
    key: str | None = None
    files: tuple[Path, ...] = ()
    queued_at: float = 0.0
    submitted_at: float | None = None
    finished_at: float = 0.0
    polls: int = 0

    @property
    def ok(self) -> bool:
        """True when the job succeeded: its result, and no error (its images saved, if asked)."""
        return self.error is None and self.result is not None

    @property
    def seconds(self) -> float:
        """From being handed in to ending, in seconds."""
        return self.finished_at - self.queued_at

    def unwrap(self) -> TaskResult:
        """The result, or raise the job's error."""
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class Turnstile:
    """Lets a model's jobs ask for its slot in the order they were handed in.

    A job takes a ticket when it is handed in (synchronously), and waits for its turn before
    asking the limiter for a slot; the turn passes on once it holds the slot or gives up. Task
    start order alone is not enough: trio, for one, runs newly started tasks in any order.
    """

    __slots__ = ("_done", "_issued", "_serving", "_waiters")

    def __init__(self) -> None:
        self._issued = 0
        self._serving = 0
        self._done: set[int] = set()
        self._waiters: dict[int, anyio.Event] = {}

    def ticket(self) -> int:
        self._issued += 1
        return self._issued - 1

    async def wait(self, ticket: int) -> None:
        if ticket != self._serving:
            event = self._waiters[ticket] = anyio.Event()
            try:
                await event.wait()
            finally:
                self._waiters.pop(ticket, None)

    def passed(self, ticket: int) -> None:
        """The holder of ``ticket`` is through (it has its slot, or gave up): serve the next.

        Idempotent: a job passes once it holds its slot, and again, harmlessly, when it ends.
        """
        if ticket < self._serving:
            return
        self._done.add(ticket)
        while self._serving in self._done:
            self._done.discard(self._serving)
            self._serving += 1
        waiter = self._waiters.get(self._serving)
        if waiter is not None:
            waiter.set()


class Signal:
    """A one-time event, like ``anyio.Event``, that makes its event only once someone waits
    (a job's ``done`` and ``submitted``: most jobs of a batch are never waited on)."""

    __slots__ = ("_event", "_set")

    def __init__(self) -> None:
        self._set = False
        self._event: anyio.Event | None = None

    def set(self) -> None:
        self._set = True
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        if self._event is None:
            self._event = anyio.Event()
            if self._set:
                self._event.set()
        await self._event.wait()


@attrs.define(eq=False)
class JobState:
    """One job's mutable state while the runner works on it."""

    index: int
    request: Request
    key: str | None
    queued_at: float
    scope: anyio.CancelScope = attrs.field(factory=anyio.CancelScope)
    done: Signal = attrs.field(factory=Signal)
    submitted: Signal = attrs.field(factory=Signal)
    status: JobStatus = JobStatus.QUEUED
    task_id: str | None = None
    submitted_at: float | None = None
    polls: int = 0
    outcome: Outcome | None = None
    on_done: Callable[[Outcome], None] | None = None
    turn: int = -1
    in_batch: bool = False
    journal_key: str | None = None
    fingerprint: str = ""
    intent_recorded: bool = False
    #: A submit was sent and its fate is not settled yet: a task may exist.
    submit_unanswered: bool = False
    replayed: bool = False
    result: TaskResult | None = None
    #: Its task (sent, adopted or known) is counted by the runner's ``QueueAhead``.
    counted: bool = False
    #: Its submit went while the model's running slots were full: it waits PENDING behind
    #: this many run times of the slots (0: it went into a free slot).
    queued_ahead: int = 0

    @property
    def model(self) -> str:
        return self.request.model


class JobHandle:
    """A job started with ``runner.submit``: await it for the result.

    Example:
        ```python
        handle = runner.submit(request)
        task_id = await handle.wait_submitted()   # known as soon as the service accepts it
        result = await handle                     # TaskResult, or raises the job's error
        ```
    """

    __slots__ = ("_state",)

    def __init__(self, state: JobState) -> None:
        self._state = state

    @property
    def task_id(self) -> str | None:
        """The service's task id, once the submit was accepted."""
        return self._state.task_id

    @property
    def status(self) -> JobStatus:
        """Where the job is now."""
        return self._state.status

    @property
    def done(self) -> bool:
        """True once the job has its outcome."""
        return self._state.outcome is not None

    @property
    def outcome(self) -> Outcome | None:
        """The outcome, once the job ended."""
        return self._state.outcome

    def cancel(self) -> None:
        """Cancel the job: dropped if not yet submitted, cancelled on the service if PENDING."""
        self._state.scope.cancel()

    async def wait_submitted(self) -> str | None:
        """Wait until the task exists (its id) or the job ended without one (None)."""
        await self._state.submitted.wait()
        return self._state.task_id

    async def wait(self) -> Outcome:
        """Wait for the outcome (never raises the job's error)."""
        await self._state.done.wait()
        assert self._state.outcome is not None
        return self._state.outcome

    async def _result(self) -> TaskResult:
        return (await self.wait()).unwrap()

    def __await__(self) -> Generator[Any, None, TaskResult]:
        return self._result().__await__()

    def __repr__(self) -> str:
        return f"<JobHandle index={self._state.index} status={self.status.value} task_id={self.task_id}>"
