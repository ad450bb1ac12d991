"""``AsyncTaskRunner``'s lifecycle: open, take jobs in, turn each job's end into its outcome, close.

Owns the runner's task group (every batch's task group and every single job runs inside it;
nothing outlives ``async with``), the public entry points (``map``, ``submit``, ``run``) and the
rule *everything that happens inside a job is that job's outcome*: ``_run_job`` turns whatever
the pipeline returns or raises into exactly one ``Outcome``; only cancellation from outside
propagates. The job's stages are ``_pipeline``'s, a batch's life is ``_batch``'s.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterable, Callable, Iterable
from pathlib import Path
from types import TracebackType

import anyio
from anyio.abc import TaskGroup

from .._budget import Budget, BudgetLedger, LocalSpending
from .._checks import check_instance, check_seconds, check_whole_number, wrong_type
from .._config import TASK_RETENTION_SECONDS
from .._errors import DashScopeError, JobCanceledError, JobError, ValidationError
from .._events import EventHub, EventKind, EventStream, RunnerEvent
from .._journal import Journal
from .._limits import Limiter, Limits, LocalLimiter
from .._logging import get_logger
from .._models import Request, SketchToImage, StyleRepaint, TaskResult
from .._polling import PollPlanner, PollPolicy
from .._store import JobStore
from ._batch import Batch, BatchWork
from ._jobs import Job, JobHandle, JobState, JobStatus, Outcome, Turnstile
from ._journaling import JobJournal
from ._pipeline import JobEvents, JobPipeline
from ._queue_ahead import QueueAhead
from ._reconcile import Reconciler, ReconcileRules
from ._service import TaskService

__all__ = ["AsyncTaskRunner"]

logger = get_logger("runner")


class AsyncTaskRunner:
    """Runs many jobs through each model's account limits, as fast as the limits allow.

    Per model it keeps at most ``max_in_progress`` tasks submitted and not yet ended (default 1),
    paces submissions at ``submit_rate`` per second with no bursts (default 2), pauses a model
    for everyone in the process after a 429, and keeps polls inside an account-wide budget.

    Args:
        client: the client to send requests with (any ``TaskService``).
        limits: per-model limits and the poll budget, for accounts with raised quotas.
        limiter: a shared limiter (such as ``dashscope_async.redis.RedisLimiter``) instead of the
            in-process one; its limits apply and ``limits`` is ignored.
        poll: when to poll, and a per-job deadline.
        download_dir: save every result image here as it finishes.
        journal: an SQLite file (or an open ``Journal``) recording what every job has done, so a
            batch run again after a crash replays finished jobs, re-attaches to tasks in
            progress and submits nothing twice. Jobs need a key to be journaled: ``map``
            derives one from the request and its position; give ``Job(key=...)`` otherwise.
            A store a fleet shares (``dashscope_async.redis.RedisJournal``, with a
            ``RedisLimiter`` on the same Redis) gives the same guarantees across every worker:
            a job key runs in one worker at a time, and a job any worker recorded is never
            submitted again.
        budget: a spending cap; jobs beyond it end with ``BudgetExceededError``. With a shared
            store it holds across every worker on it (give each the same cap).
        on_event: called with every ``RunnerEvent`` (progress bars, metrics): a plain function,
            not awaited (an async one is refused; iterate ``runner.events()`` instead). What it
            raises is logged and never fails a job.
        max_pending: jobs of one ``map`` started ahead of the consumer (bounds memory).
        reconcile_grace: seconds after a submit that got no answer within which the service
            may still create its task; only a task-list read made after that can prove there
            is none, and so allow a resubmit.
        reconcile_timeout: seconds after the grace period to keep looking before such a job
            ends with ``AmbiguousSubmitError`` (listed by ``dashscope-async journal``).
        task_retention: seconds the service keeps a task in its list (24 h on DashScope). A
            submit that got no answer and was sent longer ago than that (less two clock-skew
            margins of 30 s) is never proven lost: it ends with ``AmbiguousSubmitError``.
        throttle_timeout: seconds a job may go on being refused for throttling (429 on its
            submit) before it ends with ``RateLimitError`` (no task created, nothing spent; the
            other jobs go on); ``None`` waits for ever. Five minutes by default.

    Example:
        ```python
        async with ds.AsyncDashScope() as client, ds.AsyncTaskRunner(client) as runner:
            async for outcome in runner.map(requests):
                print(outcome.index, outcome.ok)
        ```
    """

    def __init__(
        self,
        client: TaskService,
        *,
        limits: Limits | None = None,
        limiter: Limiter | None = None,
        poll: PollPolicy | None = None,
        download_dir: str | os.PathLike[str] | None = None,
        journal: str | os.PathLike[str] | JobStore | None = None,
        budget: Budget | None = None,
        on_event: Callable[[RunnerEvent], object] | None = None,
        max_pending: int = 256,
        reconcile_grace: float = 30.0,
        reconcile_timeout: float = 60.0,
        task_retention: float = float(TASK_RETENTION_SECONDS),
        throttle_timeout: float | None = 300.0,
    ) -> None:
        check_instance("limits", limits, (Limits, type(None)), "a ds.Limits")
        check_instance("poll", poll, (PollPolicy, type(None)), "a ds.PollPolicy")
        check_instance("budget", budget, (Budget, type(None)), "a ds.Budget")
        check_instance(
            "download_dir", download_dir, (str, os.PathLike, type(None)), "a folder path"
        )
        check_instance(
            "journal", journal, (str, os.PathLike, JobStore, type(None)), "a path or a ds.JobStore"
        )
        check_whole_number("max_pending", max_pending, minimum=1)
        check_seconds("reconcile_grace", reconcile_grace)
        check_seconds("reconcile_timeout", reconcile_timeout)
        _check_on_event(on_event)
        rules = ReconcileRules(
            grace=reconcile_grace,
            timeout=reconcile_timeout,
            interval=min(2.0, max(reconcile_grace, 0.05)),
            retention=task_retention,
        )
        self._client = client
        self._clock = client.clock
        self._own_limiter = limiter is None
        self._limiter: Limiter = limiter or LocalLimiter(limits, clock=self._clock)
        if (
            isinstance(journal, JobStore)
            and journal.shared
            and isinstance(self._limiter, LocalLimiter)
        ):
            raise ValidationError(
                "limiter",
                "a job store shared by several processes needs a limiter they share too"
                " (dashscope_async.redis.RedisLimiter on the same Redis): only it knows every"
                " worker's submits, without which a lost submit could adopt another's task",
            )
        self._journal_source = journal
        self._journal: JobStore | None = None if isinstance(journal, str | os.PathLike) else journal
        self._budget = budget
        self._ledger: BudgetLedger | None = None
        self._events = EventHub(() if on_event is None else (on_event,))
        self._max_pending = max_pending
        self._job_journal = JobJournal(self._journal)
        poll_policy = poll or PollPolicy()
        self._pipeline = JobPipeline(
            service=client,
            limiter=self._limiter,
            journal=self._job_journal,
            reconciler=Reconciler(client, self._limiter, rules, self._clock),
            spending=None,
            poll_policy=poll_policy,
            planner=PollPlanner(poll_policy, poll_rate=self._limiter.limits.poll_rate),
            download_dir=None if download_dir is None else Path(download_dir),
            events=JobEvents(self._events, self._clock),
            queue_ahead=QueueAhead(self._limiter),
            throttle_timeout=throttle_timeout,
        )
        self._task_group: TaskGroup | None = None
        self._active: set[JobState] = set()
        self._batches: set[BatchWork] = set()
        self._batch_host = _RunnerBatchHost(self)
        self._closing = False

    # --- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncTaskRunner:
        if self._task_group is not None:
            raise RuntimeError("this AsyncTaskRunner is already running")
        if isinstance(self._journal_source, str | os.PathLike):
            self._journal = await Journal.open(self._journal_source)
            self._job_journal.journal = self._journal
        if self._budget is not None:
            # Kept by the store when a fleet shares it; otherwise in this process.
            shared = None if self._journal is None else self._journal.spending(self._budget)
            if shared is None:
                self._ledger = BudgetLedger(self._budget)
                shared = LocalSpending(self._ledger)
            self._pipeline.spending = shared
        await self._job_journal.start(self._limiter.submits, self._ledger)
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        self._closing = False
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._closing = True
        # No one iterates a batch once the runner leaves: drop them, outcomes and all.
        for work in tuple(self._batches):
            work.drop()
        self.cancel_all()
        task_group, self._task_group = self._task_group, None
        try:
            assert task_group is not None
            return await task_group.__aexit__(exc_type, exc, tb)
        finally:
            self._events.close()
            if self._own_limiter:
                await self._limiter.aclose()
            if self._journal is not None and isinstance(self._journal_source, str | os.PathLike):
                await self._journal.aclose()

    def cancel_all(self) -> None:
        """Cancel every job and batch of this runner (PENDING tasks are cancelled on the service).

        Batches start nothing more, and a batch still being iterated hands out the outcome of
        every job it had started (a task left RUNNING says so), then ends.
        """
        for work in tuple(self._batches):
            work.cancel()
        for state in tuple(self._active):
            state.scope.cancel()

    @property
    def limiter(self) -> Limiter:
        """The limiter this runner meters with."""
        return self._limiter

    @property
    def journal(self) -> JobStore | None:
        """The journal this runner records to, while it runs."""
        return self._journal

    @property
    def ledger(self) -> BudgetLedger | None:
        """What has been spent and reserved against the budget, if one is kept in this process.

        With a shared store the fleet's figures are the store's (``RedisSpending.totals``).
        """
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
            stop early, leave the loop (``break``); ``async with runner.map(...) as outcomes:``
            or ``aclose()`` also waits until the cleanup is done.

        Example:
            ```python
            async with runner.map(requests, ordered=True) as outcomes:
                async for outcome in outcomes:
                    print(outcome.index, outcome.ok)
            ```
        """
        self._require_running()
        if max_pending is not None:
            check_whole_number("max_pending", max_pending, minimum=1)
        return Batch(
            BatchWork(
                self._batch_host,
                requests,
                ordered=ordered,
                stop_on_error=stop_on_error,
                max_pending=max_pending or self._max_pending,
            )
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
        self._start(state, self._task_group)
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

    def _new_state(self, index: int, request: object, key: str | None) -> JobState:
        if not isinstance(request, StyleRepaint | SketchToImage):
            raise wrong_type(
                f"requests[{index}]", "a ds.StyleRepaint, ds.SketchToImage or ds.Job", request
            )
        if key is not None and not isinstance(key, str):
            raise wrong_type(f"jobs[{index}].key", "a string", key)
        return JobState(index=index, request=request, key=key, queued_at=self._clock.now())

    def _start(self, state: JobState, task_group: TaskGroup | None) -> None:
        assert task_group is not None
        turnstiles = self._pipeline.turnstiles
        turnstile = turnstiles.get(state.model)
        if turnstile is None:
            turnstile = turnstiles[state.model] = Turnstile()
        state.turn = turnstile.ticket()
        self._active.add(state)
        self._emit(EventKind.QUEUED, state)
        task_group.start_soon(self._run_job, state)

    async def _run_job(self, state: JobState) -> None:
        """One job from start to outcome: whatever happens inside it becomes its outcome."""
        pipeline = self._pipeline
        result: TaskResult | None = None
        error: DashScopeError | None = None
        files: tuple[Path, ...] = ()
        try:
            with state.scope:
                try:
                    result, files = await pipeline.run(state)
                except DashScopeError as exc:
                    error = exc
                except Exception as exc:
                    # Not the service's error, but still this job's alone: never the batch's.
                    error = _job_error(state, exc)
            if result is None and error is None:
                error = await pipeline.canceled_error(state)
            await self._record_end(state, result, files, error)
        except anyio.get_cancelled_exc_class():
            # Cancelled from outside the job (its batch dropped, the runner leaving, the
            # caller's scope): clean up all the same.
            with anyio.CancelScope(shield=True):
                error = await pipeline.canceled_error(state)
                await self._record_end(state, None, (), error)
            raise
        finally:
            # A job that ended before asking for its slot (replayed, bad input) lets the next go.
            pipeline.turnstiles[state.model].passed(state.turn)
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
                    # A task that succeeded is billed whatever came after (saving its images
                    # failed or was cancelled): the outcome says so with its result.
                    result=result if result is not None else state.result,
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

    async def _record_end(
        self,
        state: JobState,
        result: TaskResult | None,
        files: tuple[Path, ...],
        error: DashScopeError | None,
    ) -> None:
        try:
            await self._job_journal.finished(state, result, files, error)
        except Exception:
            # The outcome stands; a resumed run re-attaches to the task the journal last knew.
            logger.exception("job %d: recording how it ended in the journal failed", state.index)

    def _finish(self, state: JobState, outcome: Outcome) -> None:
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

    def _emit(self, kind: EventKind, state: JobState, *, error: str | None = None) -> None:
        self._pipeline.events.emit(kind, state, error=error)


def _job_error(state: JobState, exc: Exception) -> JobError:
    where = f" (task {state.task_id})" if state.task_id else ""
    return JobError(
        f"job {state.index}{where} failed inside the runner: {type(exc).__name__}: {exc}",
        cause=exc,
        task_id=state.task_id,
    )


class _RunnerBatchHost:
    """The runner as a batch sees it (``BatchHost``): a narrow door, no private attributes."""

    def __init__(self, runner: AsyncTaskRunner) -> None:
        self._runner = runner

    def now(self) -> float:
        return self._runner._clock.now()

    def new_job(self, index: int, request: object, key: str | None) -> JobState:
        return self._runner._new_state(index, request, key)

    def start_job(self, state: JobState, task_group: TaskGroup) -> None:
        self._runner._start(state, task_group)

    def host(self, work: BatchWork) -> None:
        runner = self._runner
        runner._require_running()
        assert runner._task_group is not None
        runner._batches.add(work)
        runner._task_group.start_soon(work.run)

    def release(self, work: BatchWork) -> None:
        self._runner._batches.discard(work)


def _check_on_event(on_event: object) -> None:
    """``on_event`` is called synchronously: an async one would only make coroutines that are
    never awaited, so it is refused before anything runs."""
    if on_event is None:
        return
    if not callable(on_event):
        raise wrong_type("on_event", "a function taking a RunnerEvent", on_event)
    # A function, a method or a partial of one; or an object whose __call__ is async.
    calls = (on_event, type(on_event).__call__)
    if any(inspect.iscoroutinefunction(c) or inspect.isasyncgenfunction(c) for c in calls):
        raise ValidationError(
            "on_event",
            "must be a plain function, not an async one (it is called for each event without"
            " being awaited); use runner.events() to consume events asynchronously",
        )
