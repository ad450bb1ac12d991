"""AsyncTaskRunner: many jobs through each model's account limits, results as async iterators.

Owns the life of a job: budget, model slot, paced submit, reconciling an ambiguous submit,
polling to a terminal state, saving images, and exactly one ``Outcome``. Every background task
belongs to the runner's task group; nothing outlives ``async with``. It never decides *when* a
submit or poll may go (``_limits``, ``_polling``) and never speaks HTTP itself (``_client``).
"""

from __future__ import annotations

import enum
import math
import os
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Iterator,
)
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager, suppress
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import anyio
import anyio.lowlevel
import attrs
from anyio.abc import TaskGroup

from ._budget import Budget, BudgetLedger
from ._client import AsyncDashScope, result_or_raise
from ._errors import (
    AmbiguousSubmitError,
    BadRequestError,
    BudgetExceededError,
    DashScopeError,
    JobCanceledError,
    RateLimitError,
    RecordedFailureError,
    TaskFailedError,
    TaskNotFoundError,
    TaskTimeoutError,
    ValidationError,
)
from ._events import EventHub, EventKind, EventStream, RunnerEvent
from ._files import PreparedInputs, save_result_images
from ._journal import JobState, Journal, JournalEntry, fingerprint, job_key
from ._limits import Limiter, Limits, LocalLimiter
from ._logging import get_logger
from ._models import Request, SketchToImage, StyleRepaint, Task, TaskInfo, TaskResult, TaskStatus
from ._poll_loop import TaskPoll, poll_until_done
from ._polling import PollPlanner, PollPolicy
from ._retry import RequestKind, is_transient

__all__ = ["AsyncTaskRunner", "Batch", "Job", "JobHandle", "JobStatus", "Outcome"]

logger = get_logger("runner")

#: How long cleanup (a server-side cancel) may take once a job is being cancelled.
CLEANUP_SECONDS: Final = 10.0
#: An ambiguous submit's task is looked for in the list this long before the submit was sent,
#: to allow for clock differences between us and the service.
RECONCILE_SKEW: Final = timedelta(seconds=30)
#: Times the task list is read, ``reconcile_grace`` apart, before it counts as proof that an
#: ambiguous submit created nothing.
RECONCILE_LOOKS: Final = 3
#: Task ids this runner created are remembered this long, so reconciling never adopts them. A
#: lost submit is reconciled right away, over tasks created since it was sent, so older ids are
#: never candidates; with a journal every id is kept, as an intent from an earlier run may be
#: reconciled hours into this one.
KNOWN_TASK_MEMORY: Final = 120.0
#: At most this many ids are remembered (memory stays flat however fast the tasks go; at the
#: service's 2 submissions/s a model makes 240 in ``KNOWN_TASK_MEMORY``). If younger ids had to
#: be let go, a lost submit is not reconciled but reported, since it could not be proven.
KNOWN_TASK_LIMIT: Final = 10_000


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
        result: the task's result when the job succeeded.
        error: why it did not, when it did not.
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
        """True when the job produced a result."""
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


class _Turnstile:
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


@attrs.define(eq=False)
class _JobState:
    """One job's mutable state while the runner works on it."""

    index: int
    request: Request
    key: str | None
    queued_at: float
    scope: anyio.CancelScope = attrs.field(factory=anyio.CancelScope)
    done: anyio.Event = attrs.field(factory=anyio.Event)
    submitted: anyio.Event = attrs.field(factory=anyio.Event)
    status: JobStatus = JobStatus.QUEUED
    task_id: str | None = None
    submitted_at: float | None = None
    polls: int = 0
    outcome: Outcome | None = None
    on_done: Callable[[Outcome], None] | None = None
    ticket: int = -1
    in_batch: bool = False
    journal_key: str | None = None
    fingerprint: str = ""
    intent_recorded: bool = False
    replayed: bool = False
    result: TaskResult | None = None

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

    def __init__(self, state: _JobState) -> None:
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


class AsyncTaskRunner:
    """Runs many jobs through each model's account limits, as fast as the limits allow.

    Per model it keeps at most ``max_in_progress`` tasks submitted and not yet ended (default 1),
    paces submissions at ``submit_rate`` per second with no bursts (default 2), pauses a model
    for everyone in the process after a 429, and keeps polls inside an account-wide budget.

    Args:
        client: the client to send requests with.
        limits: per-model limits and the poll budget, for accounts with raised quotas.
        limiter: a shared limiter (such as ``dashscope_async.redis.RedisLimiter``) instead of the
            in-process one; its limits apply and ``limits`` is ignored.
        poll: when to poll, and a per-job deadline.
        download_dir: save every result image here as it finishes.
        journal: an SQLite file (or an open ``Journal``) recording what every job has done, so a
            batch run again after a crash replays finished jobs, re-attaches to tasks in
            progress and submits nothing twice. Jobs need a key to be journaled: ``map``
            derives one from the request and its position; give ``Job(key=...)`` otherwise.
        budget: a spending cap; jobs beyond it end with ``BudgetExceededError``.
        on_event: called with every ``RunnerEvent`` (progress bars, metrics).
        max_pending: jobs of one ``map`` started ahead of the consumer (bounds memory).
        reconcile_grace: seconds between looks at the task list when reconciling.

    Example:
        ```python
        async with ds.AsyncDashScope() as client, ds.AsyncTaskRunner(client) as runner:
            async for outcome in runner.map(requests):
                print(outcome.index, outcome.ok)
        ```
    """

    def __init__(
        self,
        client: AsyncDashScope,
        *,
        limits: Limits | None = None,
        limiter: Limiter | None = None,
        poll: PollPolicy | None = None,
        download_dir: str | os.PathLike[str] | None = None,
        journal: str | os.PathLike[str] | Journal | None = None,
        budget: Budget | None = None,
        on_event: Callable[[RunnerEvent], object] | None = None,
        max_pending: int = 256,
        reconcile_grace: float = 2.0,
    ) -> None:
        if max_pending < 1:
            raise ValidationError("max_pending", f"must be at least 1, not {max_pending}")
        self._client = client
        self._clock = client.clock
        self._own_limiter = limiter is None
        self._limiter: Limiter = limiter or LocalLimiter(limits, clock=self._clock)
        self._poll_policy = poll or PollPolicy()
        self._planner = PollPlanner(self._poll_policy)
        self._download_dir = None if download_dir is None else Path(download_dir)
        self._journal_source = journal
        self._journal: Journal | None = journal if isinstance(journal, Journal) else None
        self._ledger = None if budget is None else BudgetLedger(budget)
        self._events = EventHub(() if on_event is None else (on_event,))
        self._max_pending = max_pending
        self._reconcile_grace = reconcile_grace
        self._task_group: TaskGroup | None = None
        self._active: set[_JobState] = set()
        self._batches: set[Batch] = set()
        self._known_task_ids: set[str] = set()
        self._known_order: deque[tuple[float, str]] = deque()
        self._turnstiles: dict[str, _Turnstile] = {}
        self._forgot_recent_at = -math.inf
        self._closing = False

    # --- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncTaskRunner:
        if self._task_group is not None:
            raise RuntimeError("this AsyncTaskRunner is already running")
        if self._journal is None and self._journal_source is not None:
            assert not isinstance(self._journal_source, Journal)
            self._journal = await Journal.open(self._journal_source)
        if self._journal is not None:
            # Tasks earlier runs of the batch created are ours: never adopt one for a lost submit.
            for task_id in await self._journal.task_ids():
                self._remember(task_id)
        if self._journal is not None and self._ledger is not None:
            # What earlier runs of the batch spent counts against the cap.
            for model, images in (await self._journal.spent()).items():
                self._ledger.record(model, images)
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._closing = True
        self.cancel_all()
        task_group, self._task_group = self._task_group, None
        try:
            assert task_group is not None
            return await task_group.__aexit__(exc_type, exc, tb)
        finally:
            self._events.close()
            if self._own_limiter:
                await self._limiter.aclose()
            if self._journal is not None and not isinstance(self._journal_source, Journal):
                await self._journal.aclose()

    def cancel_all(self) -> None:
        """Cancel every job and batch of this runner (PENDING tasks are cancelled on the service)."""
        for batch in tuple(self._batches):
            batch._cancel()
        for state in tuple(self._active):
            state.scope.cancel()

    @property
    def limiter(self) -> Limiter:
        """The limiter this runner meters with."""
        return self._limiter

    @property
    def journal(self) -> Journal | None:
        """The journal this runner records to, while it runs."""
        return self._journal

    @property
    def ledger(self) -> BudgetLedger | None:
        """What has been spent and reserved against the budget, if one was set."""
        return self._ledger

    def events(self, *, max_buffer: int = 1000) -> EventStream:
        """Subscribe to this runner's events as an async iterator.

        A subscriber that falls more than ``max_buffer`` events behind loses events (counted
        in ``stream.dropped``) rather than slowing the jobs.
        """
        return self._events.subscribe(max_buffer)

    # --- public entry points ------------------------------------------------------------------

    def map(
        self,
        requests: Iterable[Request | Job] | AsyncIterable[Request | Job],
        *,
        ordered: bool = False,
        stop_on_error: bool = False,
        max_pending: int | None = None,
    ) -> Batch:
        """Run many jobs; iterate their outcomes as they finish.

        The input is pulled lazily, at most ``max_pending`` jobs ahead of the consumer, so a
        generator of 100,000 requests needs memory only for the jobs in progress.

        Args:
            requests: requests or ``Job``s, as an iterable or an async iterable.
            ordered: yield outcomes in input order instead of completion order.
            stop_on_error: end the batch after the first failed outcome (the rest are cancelled).
            max_pending: look-ahead for this batch (default: the runner's).

        Returns:
            A ``Batch``: iterate it with ``async for``. To cancel the rest promptly when you
            stop early, use it as ``async with runner.map(...) as outcomes:`` or call
            ``aclose()``; otherwise it is cancelled when the batch is dropped or the runner exits.

        Example:
            ```python
            async with runner.map(requests, ordered=True) as outcomes:
                async for outcome in outcomes:
                    print(outcome.index, outcome.ok)
            ```
        """
        self._require_running()
        return Batch(
            self,
            requests,
            ordered=ordered,
            stop_on_error=stop_on_error,
            max_pending=max_pending or self._max_pending,
        )

    def submit(self, request: Request | Job, *, key: str | None = None) -> JobHandle:
        """Start one job now; returns a handle to await, inspect or cancel.

        Example:
            ```python
            handle = runner.submit(request)
            result = await handle
            ```
        """
        self._require_running()
        if isinstance(request, Job):
            key = key or request.key
            request = request.request
        state = self._new_state(0, request, key)
        self._start(state)
        return JobHandle(state)

    async def run(self, request: Request | Job, *, key: str | None = None) -> TaskResult:
        """Run one job within the runner's limits and return its result.

        Concurrent callers are served first come, first served per model. Cancelling the
        caller cancels the job (a PENDING task is cancelled on the service).

        Raises:
            DashScopeError: the job's error (``TaskFailedError``, ``BudgetExceededError``, ...).

        Example:
            ```python
            result = await runner.run(ds.StyleRepaint(url, style=ds.RepaintStyle.ANIME))
            ```
        """
        handle = self.submit(request, key=key)
        try:
            outcome = await handle.wait()
        except anyio.get_cancelled_exc_class():
            handle.cancel()
            with anyio.CancelScope(shield=True):
                await handle.wait()
            raise
        return outcome.unwrap()

    # --- job life -----------------------------------------------------------------------------

    def _require_running(self) -> None:
        if self._task_group is None or self._closing:
            raise RuntimeError(
                "use the runner inside 'async with AsyncTaskRunner(client) as runner:'"
            )

    def _new_state(self, index: int, request: object, key: str | None) -> _JobState:
        if not isinstance(request, StyleRepaint | SketchToImage):
            raise ValidationError(
                f"requests[{index}]",
                f"expected a StyleRepaint, SketchToImage or Job, not {type(request).__name__}",
            )
        return _JobState(index=index, request=request, key=key, queued_at=self._clock.now())

    def _start(self, state: _JobState) -> None:
        assert self._task_group is not None
        turnstile = self._turnstiles.get(state.model)
        if turnstile is None:
            turnstile = self._turnstiles[state.model] = _Turnstile()
        state.ticket = turnstile.ticket()
        self._active.add(state)
        self._emit(EventKind.QUEUED, state)
        self._task_group.start_soon(self._run_job, state)

    async def _run_job(self, state: _JobState) -> None:
        result: TaskResult | None = None
        error: DashScopeError | None = None
        files: tuple[Path, ...] = ()
        try:
            with state.scope:
                try:
                    result, files = await self._drive(state)
                except DashScopeError as exc:
                    error = exc
            if result is None and error is None:
                error = await self._canceled_error(state)
            await self._record(state, result, files, error)
        except anyio.get_cancelled_exc_class():
            # Cancelled from outside the runner (the caller's scope): clean up all the same.
            with anyio.CancelScope(shield=True):
                error = await self._canceled_error(state)
                await self._record(state, None, (), error)
            raise
        finally:
            # A job that ended before asking for its slot (replayed, bad input) lets the next go.
            self._turnstiles[state.model].passed(state.ticket)
            # Even when the whole runner is torn down, every job ends with an outcome.
            if result is None and error is None:
                error = JobCanceledError(
                    f"job {state.index} was stopped with the runner", task_id=state.task_id
                )
            self._finish(
                state,
                Outcome(
                    index=state.index,
                    request=state.request,
                    result=result,
                    error=error,
                    task_id=state.task_id,
                    key=state.key,
                    files=files,
                    queued_at=state.queued_at,
                    submitted_at=state.submitted_at,
                    finished_at=self._clock.now(),
                    polls=state.polls,
                ),
            )

    def _finish(self, state: _JobState, outcome: Outcome) -> None:
        state.outcome = outcome
        if outcome.ok:
            state.status = JobStatus.SUCCEEDED
            self._emit(EventKind.SUCCEEDED, state)
        elif isinstance(outcome.error, JobCanceledError):
            state.status = JobStatus.CANCELED
            self._emit(EventKind.CANCELED, state)
        else:
            state.status = JobStatus.FAILED
            self._emit(EventKind.FAILED, state, error=str(outcome.error))
        self._active.discard(state)
        state.submitted.set()
        state.done.set()
        if state.on_done is not None:
            state.on_done(outcome)

    async def _drive(self, state: _JobState) -> tuple[TaskResult, tuple[Path, ...]]:
        request = state.request
        model = request.model
        entry = await self._journal_entry(state)
        if entry is not None:
            if entry.state.is_final:
                return await self._replay(state, entry)
            state.intent_recorded = True  # the journal knows the job: record how it ends
        known: Task | None = None
        if entry is not None and entry.state is JobState.SUBMITTED and entry.task_id:
            known = Task(entry.task_id, TaskStatus.PENDING, model)  # re-attach: never resubmit
        reserved = request.images_requested if known is None else 0
        if reserved and self._ledger is not None and not self._ledger.could_afford(model, reserved):
            raise self._over_budget(state)  # before uploading anything for it
        # Uploads happen before the slot is taken: the slot's time belongs to the service. A job
        # that fits the budget only if an earlier one gives images back uploads once it knows.
        prepared: PreparedInputs | None = None
        if known is None and (self._ledger is None or self._ledger.fits_now(model, reserved)):
            prepared = await self._client.prepare(request)
        turnstile = self._turnstiles[model]
        try:
            await turnstile.wait(state.ticket)
            slot = self._limiter.slot(model)
            await slot.__aenter__()
        finally:
            turnstile.passed(state.ticket)
        async with _entered(slot):
            if known is None and entry is not None and entry.state is JobState.INTENT:
                # A submit was sent in an earlier run and its answer never recorded.
                with anyio.CancelScope(shield=True):
                    known = await self._reconcile(state, entry.model, entry.sent_at, cause=None)
            if known is not None:
                reserved = 0  # found by reconciling: already running, nothing new to pay for
            # Reserved once the job holds its slot, so jobs still queued never count against
            # the cap while earlier ones may yet give back what they did not spend.
            if (
                reserved
                and self._ledger is not None
                and not self._ledger.try_reserve(model, reserved)
            ):
                raise self._over_budget(state)
            billed = 0
            try:
                if known is None:
                    if prepared is None:
                        prepared = await self._client.prepare(request)
                    task = await self._submit(state, prepared)
                else:
                    task = known
                    await self._accepted(state, task)
                info = await self._poll_to_end(state, task)
                billed = info.usage.image_count if info.usage is not None else len(info.images)
            finally:
                if self._ledger is not None:
                    self._ledger.settle(model, reserved, billed)
        result = state.result = result_or_raise(info)
        return result, await self._save(state, result)

    def _over_budget(self, state: _JobState) -> BudgetExceededError:
        assert self._ledger is not None
        return BudgetExceededError(
            f"job {state.index} would pass the budget ({self._ledger.budget}); not submitted"
        )

    async def _save(self, state: _JobState, result: TaskResult) -> tuple[Path, ...]:
        if self._download_dir is None:
            return ()
        stem = state.key if state.key is not None else f"{state.index:06d}"
        return tuple(await save_result_images(self._client.http, result, self._download_dir, stem))

    # --- the journal --------------------------------------------------------------------------

    async def _journal_entry(self, state: _JobState) -> JournalEntry | None:
        """Name the job in the journal and read what earlier runs did with it."""
        if self._journal is None or (state.key is None and not state.in_batch):
            return None
        state.journal_key = await anyio.to_thread.run_sync(
            job_key, state.request, state.index, state.key
        )
        # A derived key is "<fingerprint>:<index>"; a key of the user's choosing says nothing
        # of the request, so its fingerprint is worked out (once) to check and record.
        state.fingerprint = (
            state.journal_key.rsplit(":", 1)[0]
            if state.key is None
            else await anyio.to_thread.run_sync(fingerprint, state.request)
        )
        entry = await self._journal.lookup(state.journal_key)
        # Replaying another request's result under a reused key would be wrong.
        if entry is not None and state.key is not None and state.fingerprint != entry.fingerprint:
            raise ValidationError(
                f"jobs[{state.index}].key",
                f"{state.key!r} is recorded in the journal for a different request;"
                " give the changed job a new key, or start a new journal",
            )
        return entry

    async def _replay(
        self, state: _JobState, entry: JournalEntry
    ) -> tuple[TaskResult, tuple[Path, ...]]:
        """A job an earlier run finished: its outcome again, with no request to the service."""
        state.replayed = True
        state.task_id = entry.task_id
        if entry.state is JobState.FAILED or entry.result is None:
            raise RecordedFailureError(
                f"job {state.index} failed in an earlier run: {entry.error_message}",
                error_type=entry.error_type or "DashScopeError",
                code=entry.error_code,
                task_id=entry.task_id,
            )
        state.result = entry.result
        files = tuple(Path(name) for name in entry.files)
        if self._download_dir is not None and not await anyio.to_thread.run_sync(
            lambda: bool(files) and all(path.is_file() for path in files)
        ):
            files = await self._save(state, entry.result)
            if self._journal is not None and state.journal_key is not None:
                await self._journal.record_files(state.journal_key, [str(f) for f in files])
        return entry.result, files

    async def _record(
        self,
        state: _JobState,
        result: TaskResult | None,
        files: tuple[Path, ...],
        error: DashScopeError | None,
    ) -> None:
        """Write how the job ended, so a later run replays it or takes it up again."""
        journal, key = self._journal, state.journal_key
        if journal is None or key is None or state.replayed or not state.intent_recorded:
            return
        done = result if result is not None else state.result
        if done is not None:
            # The task succeeded even if saving its images failed (those are retried on resume).
            await journal.record_succeeded(key, done, [str(f) for f in files])
        elif isinstance(error, TaskFailedError | TaskNotFoundError | BadRequestError):
            await journal.record_failed(key, error)
        elif (
            isinstance(error, JobCanceledError) and state.task_id and not error.canceled_on_service
        ):
            return  # still running on the service: a resumed run re-attaches to it
        elif isinstance(error, TaskTimeoutError) and error.status is not TaskStatus.PENDING:
            return  # likewise
        elif isinstance(error, AmbiguousSubmitError):
            return  # a task may exist: a resumed run reconciles again before any submit
        elif state.task_id is None or isinstance(error, JobCanceledError | TaskTimeoutError):
            # Nothing runs on the service for it (never created, or cancelled while PENDING).
            await journal.record_canceled(key)

    async def _submit(self, state: _JobState, prepared: PreparedInputs) -> Task:
        model = state.model
        while True:
            await self._limiter.submit_turn(model)
            state.status = JobStatus.SUBMITTING
            if self._journal is not None and state.journal_key is not None:
                # Written before sending: a crash after this line is reconciled on resume.
                await self._journal.record_intent(
                    state.journal_key,
                    index=state.index,
                    model=model,
                    fingerprint=state.fingerprint,
                    sent_at=self._clock.wall(),
                )
                state.intent_recorded = True
            try:
                # Once sent, a submit must finish: only its answer tells whether a task exists.
                with anyio.CancelScope(shield=True):
                    task = await self._client.submit(
                        state.request, retry_throttled=False, prepared=prepared
                    )
            except RateLimitError as exc:
                pause = await self._limiter.throttled(model, exc.retry_after)
                state.status = JobStatus.QUEUED
                self._emit(EventKind.THROTTLED, state, delay=pause)
                continue
            except AmbiguousSubmitError as exc:
                # Shielded too: a cancelled job must still learn whether its task exists.
                with anyio.CancelScope(shield=True):
                    adopted = await self._reconcile(state, exc.model, exc.sent_at, cause=exc)
                if adopted is None:
                    state.status = JobStatus.QUEUED
                    continue
                task = adopted
            self._limiter.submit_succeeded(model)
            await self._accepted(state, task)
            return task

    async def _accepted(self, state: _JobState, task: Task) -> None:
        """The job has a task on the service: remember it, record it, tell the listeners."""
        self._remember(task.task_id)
        state.task_id = task.task_id
        state.submitted_at = self._clock.now()
        state.status = JobStatus.PENDING
        if self._journal is not None and state.journal_key is not None:
            await self._journal.record_submitted(state.journal_key, task.task_id)
        state.submitted.set()
        self._emit(EventKind.SUBMITTED, state)
        logger.debug("job %d has task %s", state.index, task.task_id)

    def _remember(self, task_id: str) -> None:
        self._known_task_ids.add(task_id)
        if self._journal is not None:
            return
        now = self._clock.now()
        self._known_order.append((now, task_id))
        while self._known_order[0][0] < now - KNOWN_TASK_MEMORY:
            self._known_task_ids.discard(self._known_order.popleft()[1])
        if len(self._known_order) > KNOWN_TASK_LIMIT:
            self._forgot_recent_at = now
            self._known_task_ids.discard(self._known_order.popleft()[1])

    async def _reconcile(
        self,
        state: _JobState,
        model: str,
        sent_at: datetime | None,
        *,
        cause: AmbiguousSubmitError | None,
    ) -> Task | None:
        """Find the task an ambiguous submit may have created; None means it created none.

        While this job holds its model's slot no other job of ours can create a task of that
        model, so a task of that model created since the submit was sent, and not one of ours,
        is this job's. (Across processes the same holds when they share a limiter.)
        """
        if sent_at is None:
            return None  # no submit was ever sent
        if self._clock.now() - self._forgot_recent_at < KNOWN_TASK_MEMORY:
            raise AmbiguousSubmitError(
                f"job {state.index}: the submit got no answer, and this runner made too many"
                " tasks lately to tell its own from a new one; not resubmitted, to avoid paying"
                " twice. Check the task list.",
                model=model,
                sent_at=sent_at,
            ) from cause
        since = sent_at - RECONCILE_SKEW
        for look in range(RECONCILE_LOOKS):
            if look:
                await self._clock.sleep(self._reconcile_grace)
            candidates: list[Task] = []
            pages = self._client.list_tasks(
                start=since, model=model, before_page=self._limiter.poll_turn
            )
            try:
                async for item in pages:
                    if item.task_id in self._known_task_ids:
                        continue
                    if item.created is not None and item.created < since:
                        continue
                    candidates.append(Task(item.task_id, item.status, model, item.request_id))
            except DashScopeError as exc:
                if not is_transient(RequestKind.LIST, exc):
                    raise
                continue
            if len(candidates) == 1:
                self._emit(EventKind.RECONCILED, state, task_id=candidates[0].task_id)
                return candidates[0]
            if len(candidates) > 1:
                raise AmbiguousSubmitError(
                    f"job {state.index}: the submit got no answer and {len(candidates)} unknown"
                    f" {model} tasks appeared since it was sent; not resubmitted, to avoid"
                    " paying twice. Check the task list.",
                    model=model,
                    sent_at=sent_at,
                ) from cause
        self._emit(EventKind.RECONCILED, state)
        logger.info(
            "job %d: the task list shows no task from its lost submit; resubmitting", state.index
        )
        return None

    async def _poll_to_end(self, state: _JobState, task: Task) -> TaskInfo:
        assert state.submitted_at is not None
        deadline = self._poll_policy.deadline
        try:
            return await poll_until_done(
                TaskPoll(task.task_id, state.model, task.status, submitted_at=state.submitted_at),
                service=self._client,
                planner=self._planner,
                clock=self._clock,
                deadline=None if deadline is None else state.submitted_at + deadline,
                meter=self._limiter.poll_turn,
                observer=_JobPollObserver(self, state),
            )
        except TaskTimeoutError as exc:
            assert deadline is not None
            await self._give_up(state, exc.status, deadline)
            raise

    async def _give_up(self, state: _JobState, status: TaskStatus, deadline: float) -> None:
        assert state.task_id is not None
        if status is TaskStatus.PENDING and await self._cancel_on_service(state):
            raise TaskTimeoutError(
                f"task {state.task_id} was still PENDING after {deadline:g} s; cancelled on the service",
                task_id=state.task_id,
                status=status,
            )
        raise TaskTimeoutError(
            f"task {state.task_id} was still {status.value} after {deadline:g} s; it may still"
            " finish and be billed: look it up by its id",
            task_id=state.task_id,
            status=status,
        )

    async def _cancel_on_service(self, state: _JobState) -> bool:
        """Ask the service to cancel the job's task; True if it was cancelled (it was PENDING)."""
        assert state.task_id is not None
        with anyio.move_on_after(CLEANUP_SECONDS, shield=True):
            try:
                # Every attempt, retries included, takes its own turn in the poll budget.
                await self._client.cancel_task(state.task_id, meter=self._limiter.poll_turn)
            except BadRequestError:
                return False  # UnsupportedOperation: it had already left PENDING
            except DashScopeError as exc:
                logger.warning("could not cancel task %s: %s", state.task_id, exc)
                return False
            return True
        return False

    async def _canceled_error(self, state: _JobState) -> JobCanceledError:
        if state.task_id is None:
            return JobCanceledError(f"job {state.index} was cancelled before it was submitted")
        if state.status in (
            JobStatus.PENDING,
            JobStatus.SUBMITTING,
        ) and await self._cancel_on_service(state):
            return JobCanceledError(
                f"job {state.index} was cancelled; task {state.task_id} was cancelled on the service",
                task_id=state.task_id,
                canceled_on_service=True,
            )
        return JobCanceledError(
            f"job {state.index} was cancelled while task {state.task_id} was running; it may"
            " still finish and be billed",
            task_id=state.task_id,
        )

    def _emit(
        self,
        kind: EventKind,
        state: _JobState,
        *,
        task_id: str | None = None,
        delay: float | None = None,
        error: str | None = None,
    ) -> None:
        if not self._events.active:
            return
        self._events.emit(
            RunnerEvent(
                kind=kind,
                index=state.index,
                model=state.model,
                at=self._clock.now(),
                key=state.key,
                task_id=task_id or state.task_id,
                delay=delay,
                error=error,
            )
        )


@attrs.frozen
class _JobPollObserver:
    """Turns what the poll loop sees into the job's status, poll count and events."""

    runner: AsyncTaskRunner
    state: _JobState

    def answered(self, poll: TaskPoll, info: TaskInfo, *, started_running: bool) -> None:
        self.state.polls = poll.polls
        if info.status is TaskStatus.PENDING:
            self.state.status = JobStatus.PENDING
        elif started_running:
            self.state.status = JobStatus.RUNNING
            self.runner._emit(EventKind.RUNNING, self.state)

    def failed(self, poll: TaskPoll, error: DashScopeError, delay: float) -> None:
        self.runner._emit(EventKind.RETRIED, self.state, delay=delay, error=str(error))


class Batch:
    """The outcomes of ``runner.map``: an async iterator, also usable with ``async with``.

    Leaving its ``async with`` block, or calling ``aclose()``, cancels the jobs still going
    (dropping those not submitted, cancelling PENDING tasks on the service) and waits for that
    cleanup. A batch dropped without closing is cancelled at once, and any still going when the
    runner exits are cancelled then.

    Example:
        ```python
        async with runner.map(requests, stop_on_error=True) as outcomes:
            async for outcome in outcomes:
                print(outcome.index, outcome.ok)
        ```
    """

    def __init__(
        self,
        runner: AsyncTaskRunner,
        requests: Iterable[Request | Job] | AsyncIterable[Request | Job],
        *,
        ordered: bool,
        stop_on_error: bool,
        max_pending: int,
    ) -> None:
        self._runner = runner
        self._requests = requests
        self._ordered = ordered
        self._stop_on_error = stop_on_error
        self._window = anyio.Semaphore(max_pending)
        # None marks the end of the input.
        send, receive = anyio.create_memory_object_stream[Outcome | None](math.inf)
        self._send = send
        self._receive = receive
        self._feeder_scope = anyio.CancelScope()
        self._feeder_done = anyio.Event()
        self._jobs: dict[int, _JobState] = {}
        self._buffer: dict[int, Outcome] = {}
        self._next_index = 0
        self._total: int | None = None
        self._yielded = 0
        self._input_error: BaseException | None = None
        self._started = False
        self._closed = False

    def _start(self) -> None:
        if self._started:
            return
        self._started = True
        runner = self._runner
        runner._require_running()
        runner._batches.add(self)
        assert runner._task_group is not None
        runner._task_group.start_soon(self._feed)

    async def _feed(self) -> None:
        index = 0
        try:
            with self._feeder_scope:
                async with aclosing(_as_async_iter(self._requests)) as items:
                    async for item in items:
                        await self._window.acquire()
                        self._launch(index, item)
                        index += 1
        except Exception as exc:
            # The caller's iterable failed: the batch ends with that error after the jobs
            # already started have their outcomes.
            self._input_error = exc
        finally:
            self._total = index
            self._feeder_done.set()
            self._deliver(None)

    def _launch(self, index: int, item: Request | Job) -> None:
        runner = self._runner
        request, key = (item.request, item.key) if isinstance(item, Job) else (item, None)
        try:
            state = runner._new_state(index, request, key)
        except ValidationError as exc:
            self._deliver(
                Outcome(
                    index=index,
                    request=request,
                    error=exc,
                    key=key,
                    finished_at=runner._clock.now(),
                )
            )
            return
        state.on_done = self._deliver
        state.in_batch = True
        self._jobs[index] = state
        runner._start(state)

    def _deliver(self, outcome: Outcome | None) -> None:
        # Jobs cancelled after the consumer left still finish; their outcomes go nowhere.
        if not self._closed:
            self._send.send_nowait(outcome)

    def _close_streams(self) -> None:
        self._closed = True
        self._send.close()
        self._receive.close()

    def __aiter__(self) -> AsyncIterator[Outcome]:
        return self

    async def __anext__(self) -> Outcome:
        self._start()
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._ordered and self._next_index in self._buffer:
                return self._hand_out(self._buffer.pop(self._next_index))
            if self._total is not None and self._yielded >= self._total:
                await self._end()
            outcome = await self._receive.receive()
            if outcome is None:
                continue
            if self._ordered and outcome.index != self._next_index:
                self._buffer[outcome.index] = outcome
                continue
            return self._hand_out(outcome)

    def _hand_out(self, outcome: Outcome) -> Outcome:
        self._jobs.pop(outcome.index, None)
        self._yielded += 1
        self._next_index = outcome.index + 1 if self._ordered else self._next_index
        self._window.release()
        if self._stop_on_error and not outcome.ok:
            self._cancel()
            self._close_streams()
        return outcome

    async def _end(self) -> None:
        self._close_streams()
        self._runner._batches.discard(self)
        if self._input_error is not None:
            error, self._input_error = self._input_error, None
            raise error
        raise StopAsyncIteration

    def _cancel(self) -> None:
        self._feeder_scope.cancel()
        for state in tuple(self._jobs.values()):
            state.scope.cancel()

    async def aclose(self) -> None:
        """Cancel what is still going and wait until it has been cleaned up."""
        self._close_streams()
        self._cancel()
        with anyio.CancelScope(shield=True):
            if self._started:
                await self._feeder_done.wait()
            for state in tuple(self._jobs.values()):
                await state.done.wait()
        self._runner._batches.discard(self)

    async def __aenter__(self) -> Batch:
        self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # A batch abandoned mid-iteration (``break`` without ``async with``) stops its work now.
        if getattr(self, "_started", False) and not self._closed:
            # If the event loop is already gone, the batch's work went with it.
            with suppress(RuntimeError):
                self._cancel()
        if hasattr(self, "_send"):
            self._close_streams()


@asynccontextmanager
async def _entered(manager: AbstractAsyncContextManager[Any]) -> AsyncIterator[None]:
    """Exit an async context manager that was already entered, as ``async with`` would."""
    try:
        yield
    except BaseException as exc:
        if not await manager.__aexit__(type(exc), exc, exc.__traceback__):
            raise
    else:
        await manager.__aexit__(None, None, None)


async def _as_async_iter(items: Iterable[Any] | AsyncIterable[Any]) -> AsyncGenerator[Any, None]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
        return
    iterator: Iterator[Any] = iter(items)
    for item in iterator:
        yield item
        # Yield to the event loop between items of a plain iterable, so a long synchronous
        # generator cannot starve the jobs it feeds.
        await anyio.lowlevel.checkpoint()
