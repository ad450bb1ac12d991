"""One job's way, top to bottom: prepare -> reserve budget -> slot -> submit -> record -> poll ->
settle -> save.

Owns the order of the stages and the small decisions between them; each stage calls its owner:
the journal (``_journaling``), the budget (``Spending``), the limiter's slots, pacing and
submit record (``_limits``, ``_submits``), reconciliation (``_reconcile``), the shared poll loop
(``_poll_loop``, with the planner of ``_polling``) and the files (``_files``).
``JobPipeline.run`` reads as the list above. It never decides what a job's outcome is
(``_lifecycle`` turns whatever ``run`` returns or raises into one) and never holds a task group.
"""

from __future__ import annotations

import secrets
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Final

import anyio
import anyio.lowlevel
import anyio.to_thread
import attrs

from .._budget import Spending
from .._client import result_or_raise
from .._clock import Clock
from .._downloads import save_result_images, unkeyed_job_hash
from .._errors import (
    AmbiguousSubmitError,
    APIConnectionError,
    BadRequestError,
    BudgetExceededError,
    DashScopeError,
    JobCanceledError,
    RateLimitError,
    TaskTimeoutError,
)
from .._events import EventHub, EventKind, RunnerEvent
from .._files import PreparedInputs
from .._journal import JobState as JournalState
from .._journal import JournalEntry
from .._limits import Limiter, SlotLease
from .._logging import get_logger
from .._models import Task, TaskInfo, TaskResult, TaskStatus
from .._poll_loop import TaskPoll, poll_until_done
from .._polling import PollPlanner, PollPolicy
from .._submits import SubmitTicket
from .._validators import non_negative
from ._jobs import JobState, JobStatus, Turnstile
from ._journaling import JobJournal
from ._queue_ahead import QueueAhead
from ._reconcile import Reconciler
from ._service import TaskService

__all__ = ["CLEANUP_SECONDS", "JobEvents", "JobPipeline"]

logger = get_logger("runner")

#: How long cleanup (a server-side cancel) may take once a job is being cancelled.
CLEANUP_SECONDS: Final = 10.0
#: Submits of one job that may be lost before the service saw them (each proven so by the task
#: list) before the job gives up: a network that loses every submit should end the job, not
#: resend it for ever.
MAX_LOST_SUBMITS: Final = 3


@attrs.define
class JobEvents:
    """Turns a job's steps into ``RunnerEvent``s for the runner's listeners, dated by ``clock``.

    With no listener it does nothing at all, not even read the clock.
    """

    hub: EventHub
    clock: Clock

    def emit(
        self,
        kind: EventKind,
        state: JobState,
        *,
        task_id: str | None = None,
        delay: float | None = None,
        error: str | None = None,
    ) -> None:
        if not self.hub.active:
            return
        self.hub.emit(
            RunnerEvent(
                kind=kind,
                index=state.index,
                model=state.model,
                at=self.clock.now(),
                key=state.key,
                task_id=task_id or state.task_id,
                delay=delay,
                error=error,
            )
        )


@attrs.define
class _Budget:
    """One job's claim on the spending cap: planned before uploads, held once it has its slot.

    ``job`` names the reservation (the job's journal key), so a job taken up by another worker
    of a fleet holds one reservation and is billed once.
    """

    spending: Spending | None
    job: str
    model: str
    images: int
    held: int = 0

    def refuse(self, state: JobState) -> BudgetExceededError:
        return BudgetExceededError(
            f"job {state.index} would pass the budget"
            f" ({self.spending.budget if self.spending else '?'}); not submitted"
        )

    async def check_affordable(self, state: JobState) -> None:
        if (
            self.images
            and self.spending is not None
            and not await self.spending.could_afford(self.model, self.images)
        ):
            raise self.refuse(state)  # before uploading anything for it

    async def fits_now(self) -> bool:
        return self.spending is None or await self.spending.fits_now(self.model, self.images)

    async def reserve(self, state: JobState) -> None:
        # Reserved once the job holds its slot, so jobs still queued never count against the cap
        # while earlier ones may yet give back what they did not spend.
        if self.images and self.spending is not None:
            if not await self.spending.try_reserve(self.job, self.model, self.images):
                raise self.refuse(state)
            self.held = self.images

    async def settle(self, billed: int) -> None:
        if self.spending is None:
            return
        try:
            # Shielded: a reservation left behind would hold the cap for everyone sharing it.
            with anyio.CancelScope(shield=True):
                await self.spending.settle(self.job, self.model, self.held, billed)
        except DashScopeError as exc:
            # The job's own outcome stands (its task may have succeeded); the reservation stays
            # held, on the safe side, until the store lets it lapse.
            logger.warning("could not settle the budget of %s: %s", self.job, exc)
        self.held = 0


def _reservation_name(state: JobState, spending: Spending | None) -> str:
    """The name of the job's budget reservation: its journal key, else a random one (none is
    needed without a budget)."""
    if state.journal_key is not None:
        return state.journal_key
    return "" if spending is None else f"unkeyed:{secrets.token_hex(12)}"


@attrs.define
class JobPipeline:
    """The stages every job goes through, with what they need from the runner."""

    service: TaskService
    limiter: Limiter
    journal: JobJournal
    reconciler: Reconciler
    spending: Spending | None
    poll_policy: PollPolicy
    planner: PollPlanner
    download_dir: Path | None
    events: JobEvents
    queue_ahead: QueueAhead
    #: Seconds a job may go on being refused for throttling (429) before it ends with
    #: ``RateLimitError``; None waits for ever.
    throttle_timeout: float | None = attrs.field(
        default=300.0, validator=non_negative("throttle_timeout", unit="seconds", optional=True)
    )
    turnstiles: dict[str, Turnstile] = attrs.field(factory=dict)

    def _emit(
        self,
        kind: EventKind,
        state: JobState,
        *,
        task_id: str | None = None,
        delay: float | None = None,
        error: str | None = None,
    ) -> None:
        self.events.emit(kind, state, task_id=task_id, delay=delay, error=error)

    # --- the way ------------------------------------------------------------------------------

    async def run(self, state: JobState) -> tuple[TaskResult, tuple[Path, ...]]:
        """Take one job from handed in to saved images; raises the job's error."""
        async with self.journal.claim(state) as entry:
            if entry is not None and entry.state.is_final:
                if self.spending is not None and state.journal_key and entry.result is not None:
                    # A worker that died after recording the outcome may not have settled.
                    await self.spending.settle_replayed(
                        state.journal_key, state.model, entry.result.billed_images
                    )
                return await self.journal.replay(
                    state, entry, self.save, download=self.download_dir is not None
                )
            known = self._known_task(state, entry)
            budget = _Budget(
                self.spending,
                _reservation_name(state, self.spending),
                state.model,
                0 if known else state.request.images_requested,
            )
            await budget.check_affordable(state)
            fits = known is None and await budget.fits_now()
            prepared = await self.prepare(state) if fits else None
            async with self.slot(state):
                if known is None:
                    known = await self.settle_earlier_submit(state)
                if known is None:
                    await budget.reserve(state)
                billed = 0
                try:
                    if known is None:
                        task = await self.submit(state, prepared or await self.prepare(state))
                    else:
                        task = known
                        self._count(state)
                    await self.record(state, task)
                    info = await self.poll(state, task)
                    billed = info.billed_images
                finally:
                    self._uncount(state)
                    await budget.settle(billed)
            result = state.result = result_or_raise(info)
            return result, await self.save(state, result)

    # --- the stages ---------------------------------------------------------------------------

    def _known_task(self, state: JobState, entry: JournalEntry | None) -> Task | None:
        """An earlier run's task for this job: re-attach to it, never resubmit."""
        if entry is not None and entry.state is JournalState.SUBMITTED and entry.task_id:
            return Task(entry.task_id, TaskStatus.PENDING, state.model)
        return None

    async def prepare(self, state: JobState) -> PreparedInputs:
        """Check and upload the job's local inputs (before the slot: its time is the service's)."""
        return await self.service.prepare(state.request)

    def slot(self, state: JobState) -> _Slot:
        """The model's slot, asked for in the order the jobs were handed in."""
        return _Slot(self.turnstiles[state.model], self.limiter, state)

    async def settle_earlier_submit(self, state: JobState) -> Task | None:
        """A submit an earlier run sent and never heard back from: find its task first."""
        ticket = self.journal.resumed_ticket(state)
        if ticket is None:
            return None
        state.submit_unanswered = True
        await self.journal.learn_known_tasks(self.limiter.submits, state.model)
        return await self._reconcile(state, ticket, ticket.sent_at)

    async def submit(self, state: JobState, prepared: PreparedInputs) -> Task:
        """Send the submit at the model's pace; settle a lost answer by the reconcile rules."""
        model = state.model
        record = self.limiter.submits
        lost = 0
        first_refused: float | None = None
        while True:
            await self.queue_ahead.wait_for_turn(model)
            await self.limiter.submit_turn(model)
            # A job cancelled while it waited (its batch was dropped) sends nothing.
            await anyio.lowlevel.checkpoint_if_cancelled()
            if self.queue_ahead.blocked(model):
                continue  # another job took the running slot that freed meanwhile
            # Written after the turn, just before the send: a ticket is unanswered only while
            # its submit may really be on its way (one round trip to a shared record).
            sent_at = self.service.clock.wall()
            await self.journal.intent(state, sent_at)
            ticket = await record.sent(model, sent_at, self.journal.submit_token(state, sent_at))
            state.status = JobStatus.SUBMITTING
            self._count(state)
            try:
                # Once sent, a submit must finish: only its answer tells whether a task exists.
                with anyio.CancelScope(shield=True):
                    state.submit_unanswered = True
                    task = await self.service.submit(
                        state.request, retry_throttled=False, prepared=prepared
                    )
            except RateLimitError as exc:
                await self._no_task(ticket, state)
                state.status = JobStatus.QUEUED
                if state.queued_ahead:
                    # Refused while the slots were full: a service that does not queue. No
                    # pause for everyone; this job waits for a running slot of its own.
                    state.queued_ahead = 0
                    if self.queue_ahead.refused(model):
                        self._emit(EventKind.QUEUE_AHEAD_OFF, state, error=str(exc))
                    continue
                pause = await self.limiter.throttled(model, exc.retry_after)
                now = self.service.clock.now()
                first_refused = now if first_refused is None else first_refused
                limit = self.throttle_timeout
                if limit is not None and now + pause - first_refused > limit:
                    # Every wait is bounded: no task was created, so ending here loses nothing.
                    raise RateLimitError(
                        f"job {state.index}: the service refused its submit for throttling for"
                        f" {now - first_refused:.0f} s (throttle_timeout={limit:g}); not"
                        " submitted, no task was created",
                        status_code=exc.status_code,
                        code=exc.code,
                        request_id=exc.request_id,
                        retry_after=exc.retry_after,
                    ) from exc
                self._emit(EventKind.THROTTLED, state, delay=pause)
                continue
            except AmbiguousSubmitError as exc:
                adopted = await self._reconcile(state, ticket, exc.sent_at)
                if adopted is None:
                    self._uncount(state)
                    lost += 1
                    if lost >= MAX_LOST_SUBMITS:
                        raise APIConnectionError(
                            f"job {state.index}: {lost} submits in a row were lost before the"
                            " service saw them (the task list proves none made a task); giving up"
                        ) from exc
                    state.status = JobStatus.QUEUED
                    continue
                task = adopted
            except (DashScopeError, ValueError, TypeError):
                # The service refused it, or the body could not even be built: no task.
                await self._no_task(ticket, state)
                raise
            else:
                with anyio.CancelScope(shield=True):
                    try:
                        await record.answered(ticket, task.task_id)
                    except DashScopeError as exc:
                        # The task exists and is billed: collect it. The ticket stays
                        # unanswered in the record, the safe side (no one adopts a task near it).
                        logger.warning(
                            "job %d: task %s could not be marked answered in the submit record: %s",
                            state.index,
                            task.task_id,
                            exc,
                        )
                state.submit_unanswered = False
            self.limiter.submit_succeeded(model)
            return task

    async def _no_task(self, ticket: SubmitTicket, state: JobState) -> None:
        with anyio.CancelScope(shield=True):
            await self.limiter.submits.answered(ticket, None)
        state.submit_unanswered = False
        self._uncount(state)

    def _count(self, state: JobState) -> None:
        """The job's task exists or may exist from now on: count it for queue-ahead."""
        if not state.counted:
            state.counted = True
            state.queued_ahead = self.queue_ahead.sending(state.model)

    def _uncount(self, state: JobState) -> None:
        if state.counted:
            state.counted = False
            self.queue_ahead.gone(state.model)

    async def _reconcile(
        self, state: JobState, ticket: SubmitTicket, last_sent: datetime
    ) -> Task | None:
        def settled(task_id: str | None) -> None:
            state.submit_unanswered = False
            self._emit(EventKind.RECONCILED, state, task_id=task_id)

        return await self.reconciler.find(
            ticket,
            state.request,
            last_sent_at=max(last_sent, ticket.sent_at),
            label=f"job {state.index}",
            on_settled=settled,
        )

    async def record(self, state: JobState, task: Task) -> None:
        """The job has a task on the service: record it, tell the listeners."""
        state.task_id = task.task_id
        state.submitted_at = self.service.clock.now()
        state.status = JobStatus.PENDING
        await self.journal.submitted(state, task.task_id)
        state.submitted.set()
        self._emit(EventKind.SUBMITTED, state)
        logger.debug("job %d has task %s", state.index, task.task_id)

    async def poll(self, state: JobState, task: Task) -> TaskInfo:
        """Poll the task to a terminal state: the poll loop ``client.wait()`` runs too, inside
        the poll budget and the job's deadline."""
        assert state.submitted_at is not None
        deadline = self.poll_policy.deadline
        try:
            return await poll_until_done(
                TaskPoll(
                    task.task_id,
                    state.model,
                    task.status,
                    submitted_at=state.submitted_at,
                    # A task queued ahead waits PENDING: it does not run from its submission.
                    seen_pending=state.queued_ahead > 0,
                    queued_ahead=self.queue_ahead.enabled(state.model),
                    runs_before_start=state.queued_ahead,
                ),
                service=self.service,
                planner=self.planner,
                clock=self.service.clock,
                deadline=None if deadline is None else state.submitted_at + deadline,
                meter=self.limiter.poll_turn,
                observer=_JobPollObserver(self, state),
            )
        except TaskTimeoutError as exc:
            assert deadline is not None
            await self._give_up(state, exc.status, deadline)
            raise

    async def save(self, state: JobState, result: TaskResult) -> tuple[Path, ...]:
        """Save the result's images under ``download_dir``, if one was given."""
        if self.download_dir is None:
            return ()
        job = state.key if state.key is not None else state.index
        request_hash = state.fingerprint
        if state.key is None and not request_hash:
            request_hash = await anyio.to_thread.run_sync(
                unkeyed_job_hash, state.request, result.task_id
            )
        return tuple(
            await save_result_images(
                self.service.http,
                result,
                self.download_dir,
                job,
                fingerprint=None if state.key is not None else request_hash,
                limits=self.service.download_limits,
                clock=self.service.clock,
            )
        )

    # --- stopping -----------------------------------------------------------------------------

    async def _give_up(self, state: JobState, status: TaskStatus, deadline: float) -> None:
        assert state.task_id is not None
        if status is TaskStatus.PENDING and await self.cancel_on_service(state):
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

    async def cancel_on_service(self, state: JobState) -> bool:
        """Ask the service to cancel the job's task; True if it was cancelled (it was PENDING)."""
        assert state.task_id is not None
        with anyio.move_on_after(CLEANUP_SECONDS, shield=True):
            try:
                # Every attempt, retries included, takes its own turn in the poll budget.
                await self.service.cancel_task(state.task_id, meter=self.limiter.poll_turn)
            except BadRequestError:
                return False  # UnsupportedOperation: it had already left PENDING
            except DashScopeError as exc:
                logger.warning("could not cancel task %s: %s", state.task_id, exc)
                return False
            return True
        return False

    async def canceled_error(self, state: JobState) -> JobCanceledError:
        """The outcome of a cancelled job, after cancelling its task on the service if PENDING."""
        if state.task_id is None:
            if state.submit_unanswered:
                return JobCanceledError(
                    f"job {state.index} was cancelled while its unanswered submit was being"
                    " settled: a task may exist (its journal lists it as ambiguous)"
                )
            return JobCanceledError(f"job {state.index} was cancelled before it was submitted")
        if state.result is not None:
            return JobCanceledError(
                f"job {state.index} was cancelled while saving its images; task {state.task_id}"
                " had succeeded (billed)",
                task_id=state.task_id,
                task_succeeded=True,
            )
        if state.status in (
            JobStatus.PENDING,
            JobStatus.SUBMITTING,
        ) and await self.cancel_on_service(state):
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


@attrs.frozen
class _JobPollObserver:
    """Turns what the poll loop sees into the job's status, poll count and events."""

    pipeline: JobPipeline
    state: JobState

    def answered(self, poll: TaskPoll, info: TaskInfo, *, started_running: bool) -> None:
        self.state.polls = poll.polls
        # Queue-ahead may have been turned off meanwhile: then noticing the end counts again.
        poll.queued_ahead = self.pipeline.queue_ahead.enabled(self.state.model)
        if info.status is TaskStatus.PENDING:
            self.state.status = JobStatus.PENDING
        elif started_running:
            self.state.status = JobStatus.RUNNING
            self.pipeline._emit(EventKind.RUNNING, self.state)

    def failed(self, poll: TaskPoll, error: DashScopeError, delay: float) -> None:
        self.pipeline._emit(EventKind.RETRIED, self.state, delay=delay, error=str(error))


class _Slot:
    """``async with``: wait for the model's turn, then hold the limiter's slot until exit."""

    def __init__(self, turnstile: Turnstile, limiter: Limiter, state: JobState) -> None:
        self._turnstile = turnstile
        self._state = state
        self._lease: AbstractAsyncContextManager[SlotLease] = limiter.slot(state.model)

    async def __aenter__(self) -> None:
        state = self._state
        try:
            await self._turnstile.wait(state.turn)
            await self._lease.__aenter__()
        finally:
            self._turnstile.passed(state.turn)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self._lease.__aexit__(exc_type, exc, tb)
