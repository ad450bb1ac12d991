"""The poll stage: poll one task until it ends, the one loop ``AsyncDashScope.wait()`` and the runner share.

Owns the loop: ask the planner when to poll, take a turn in the poll budget (when one is given),
send one ``GET /tasks/{id}`` (never retried behind the budget: a retry is the next turn), tell a
transient failure from a final one through the retry policy, back off, and stop at the deadline.
It never plans the schedule (``_polling.PollPlanner``), never decides what is transient or how
long a server may make it wait (``_retry``), and never decides what a job does when its
deadline passes (the caller catches ``TaskTimeoutError``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Final, Protocol

import anyio
import attrs

from ._clock import Clock
from ._errors import APIError, DashScopeError, TaskTimeoutError
from ._models import TaskInfo, TaskStatus
from ._polling import PollPlanner
from ._retry import RequestKind, clip_to_deadline, is_transient

__all__ = ["PollObserver", "TaskPoll", "TaskPoller", "poll_until_done"]


class TaskPoller(Protocol):
    """What the poll loop needs of the service: one task GET, sent once when asked so."""

    async def get_task(self, task_id: str, *, retry: bool = True) -> TaskInfo: ...


class PollObserver(Protocol):
    """Hears what the poll loop sees (the runner turns it into job status and events)."""

    def answered(self, poll: TaskPoll, info: TaskInfo, *, started_running: bool) -> None:
        """A poll was answered; ``started_running`` the first time it is seen RUNNING."""

    def failed(self, poll: TaskPoll, error: DashScopeError, delay: float) -> None:
        """A poll failed transiently; the next one goes after ``delay`` seconds."""


@attrs.define
class TaskPoll:
    """One task being polled, and what the loop has learned about it so far.

    Attributes:
        task_id: the task.
        model: its model (the planner learns run times per model).
        status: the last status seen (the submit's answer before the first poll).
        submitted_at: clock time the task was accepted, when known (a task submitted into a
            free slot is taken to run from then on); None for a task of unknown history.
        polls: polls answered so far.
        failures: failed polls in a row.
        running_since: clock time it is known to have been running since (None while unknown:
            a task of unknown history found RUNNING is polled at the PENDING cadence).
        seen_pending: a poll saw it PENDING (waiting behind other tasks), or it was submitted
            while its model's slots were full (queued ahead).
        seen_running: a poll saw it RUNNING.
        queued_ahead: its model queues tasks ahead (``ModelLimits.queue_ahead``): polls only
            collect results (``PollPlanner.next_delay``).
        runs_before_start: run times of the model's slots expected to pass before it starts
            (queued ahead behind others); 0 when it went into a free slot.
        planned_running: the running time the last poll was planned for (None before one was
            planned while it was known to run): the planner's place in its schedule.
    """

    task_id: str
    model: str
    status: TaskStatus = TaskStatus.PENDING
    submitted_at: float | None = None
    polls: int = 0
    failures: int = 0
    running_since: float | None = None
    seen_pending: bool = False
    seen_running: bool = False
    queued_ahead: bool = False
    runs_before_start: int = 0
    planned_running: float | None = None

    def since_running(self, now: float) -> float | None:
        if self.running_since is not None:
            return now - self.running_since
        if not self.seen_pending and self.submitted_at is not None:
            # Submitted into a free slot, a task starts at once.
            return now - self.submitted_at
        return None


async def poll_until_done(
    poll: TaskPoll,
    *,
    service: TaskPoller,
    planner: PollPlanner,
    clock: Clock,
    deadline: float | None = None,
    meter: Callable[[], Awaitable[None]] | None = None,
    observer: PollObserver | None = None,
) -> TaskInfo:
    """Poll ``poll.task_id`` until it reaches a terminal status; return that answer.

    Each poll is one request: ``meter`` (the poll budget's turn) is awaited before every one,
    and a transient failure (``_retry.is_transient`` for a poll: a throttle, a 408 or 5xx, no
    answer, a 2xx that is not the service's JSON) only schedules the next poll, after the
    planner's backoff or the server's capped ``Retry-After``. Every wait, and every request
    in flight, is clipped to ``deadline``: when the next poll would go at or after it, the loop
    waits until the deadline and gives up. A task is never given up unseen, though: if the
    deadline comes before the first poll (a deadline of 0, or one shorter than the first
    planned poll), that poll goes at the deadline and its answer decides (the result if the
    task has ended, else ``TaskTimeoutError``); it is bounded by the request's own timeout.

    Args:
        poll: the task, and what is known of it (updated as the loop goes).
        service: sends the GET (``AsyncDashScope`` or a test double).
        planner: when to poll; it learns each finished task's run time.
        clock: where time and sleeps come from.
        deadline: clock time to give up at; None polls as long as the task runs.
        meter: awaited before each request, to keep polls inside a budget.
        observer: told of every answer and failure.

    Returns:
        The terminal ``TaskInfo`` (SUCCEEDED, FAILED, CANCELED, UNKNOWN or unrecognised).

    Raises:
        TaskTimeoutError: the deadline passed first (``status`` is the last one seen).
        DashScopeError: a final failure of a poll (a refusal, a wrong key, ...).
    """
    delay: float | None = None
    # A task is never given up unseen: the first poll goes, at the latest, at the deadline.
    polled = False
    while True:
        now = clock.now()
        if delay is None:
            since_running = poll.since_running(now)
            delay = planner.next_delay(
                poll.model,
                since_submit=now - (poll.submitted_at if poll.submitted_at is not None else now),
                since_running=since_running,
                status=poll.status,
                polls_so_far=poll.polls,
                queued_ahead=poll.queued_ahead,
                runs_before_start=poll.runs_before_start,
                last_planned=poll.planned_running,
            )
            poll.planned_running = None if since_running is None else since_running + delay
        remaining = None if deadline is None else deadline - now
        last_look = False
        if remaining is not None and delay >= remaining:
            if polled:
                # The next poll would go at or after the deadline: wait out what is left.
                await clock.sleep(clip_to_deadline(delay, remaining))
                raise _timed_out(poll)
            # Not polled yet (timeout=0, or a deadline before the first planned poll): one
            # look at the deadline decides, bounded by the request's own timeout.
            delay, last_look = max(remaining, 0.0), True
        if delay > 0:
            await clock.sleep(delay)
        delay = None
        polled = True
        info: TaskInfo | None = None
        with _NO_DEADLINE if last_look else _until(deadline, clock):
            if meter is not None:
                await meter()
            try:
                info = await service.get_task(poll.task_id, retry=False)
            except DashScopeError as exc:
                if not is_transient(RequestKind.POLL, exc):
                    raise
                poll.failures += 1
                retry_after = exc.retry_after if isinstance(exc, APIError) else None
                delay = planner.after_error(poll.failures, retry_after)
                if observer is not None:
                    observer.failed(poll, exc, delay)
                continue
        if info is None:
            continue  # the deadline came while waiting for a turn or an answer
        started_running = _seen(poll, info, clock)
        if observer is not None:
            observer.answered(poll, info, started_running=started_running)
        if info.status.is_terminal:
            run_seconds = _run_seconds(poll, info, clock)
            if run_seconds is not None and info.status is TaskStatus.SUCCEEDED:
                planner.stats.observe(poll.model, run_seconds)
            return info
        if last_look:
            raise _timed_out(poll)


def _timed_out(poll: TaskPoll) -> TaskTimeoutError:
    return TaskTimeoutError(
        f"task {poll.task_id} still {poll.status.value} at its deadline",
        task_id=poll.task_id,
        status=poll.status,
    )


def _seen(poll: TaskPoll, info: TaskInfo, clock: Clock) -> bool:
    """Learn from one answer; True the first time the task is seen RUNNING."""
    poll.failures = 0
    poll.polls += 1
    poll.status = info.status
    if info.status is TaskStatus.PENDING:
        poll.seen_pending = True
    elif info.status is TaskStatus.RUNNING and not poll.seen_running:
        poll.seen_running = True
        # When the service says it was scheduled (a task submitted into a free slot still
        # waits a few tens of milliseconds for that), else from its submission, or now. A task
        # of unknown history that was never seen waiting stays at the PENDING cadence.
        if poll.seen_pending or poll.submitted_at is not None:
            poll.running_since = _started_at(poll, info, clock)
        return True
    return False


def _started_at(poll: TaskPoll, info: TaskInfo, clock: Clock) -> float:
    """The clock reading at which a task started running.

    From the service's own times: it waited ``scheduled_time - submit_time`` after its
    submission. Both are read from one clock, the service's, so a skew between its clock and
    ours does not matter. Without them, its submission if it went into a free slot, else now.
    Kept between the submission and now.
    """
    now = clock.now()
    submitted_at = poll.submitted_at
    if submitted_at is None:
        return now
    if info.scheduled_time is None or info.submit_time is None:
        return now if poll.seen_pending else submitted_at
    waited = (info.scheduled_time - info.submit_time).total_seconds()
    return min(max(submitted_at + waited, submitted_at), now)


def _run_seconds(poll: TaskPoll, info: TaskInfo, clock: Clock) -> float | None:
    """How long the task ran, by the service's times, but never longer than it has been since
    its submission by ours: a wrong ``scheduled_time`` (years ago) must not teach the planner a
    run time that makes the next task sleep for years before its first poll."""
    run_seconds = info.run_seconds
    if run_seconds is None or poll.submitted_at is None:
        return run_seconds
    return min(run_seconds, clock.now() - poll.submitted_at)


def _until(deadline: float | None, clock: Clock) -> AbstractContextManager[object, bool]:
    """The scope of one poll: it ends at ``deadline``. Without one, no cancel scope at all (one
    per poll that can never expire is pure cost)."""
    if deadline is None:
        return _NO_DEADLINE
    return anyio.move_on_after(max(deadline - clock.now(), 0.0))


class _NoDeadline(AbstractContextManager[object, bool]):
    """Stands in for the deadline's cancel scope when there is no deadline."""

    def __exit__(self, *exc_info: object) -> bool:
        return self.swallowed

    #: A cancel scope swallows its own deadline's cancellation; this one has nothing to swallow.
    swallowed: Final = False


_NO_DEADLINE: Final = _NoDeadline()
