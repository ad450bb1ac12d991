"""Reconciliation: what became of a submit that got no answer, judged by the task list.

Owns two rules of the runner, and nothing else:

* **Resubmit only on proof.** A lost submit may be sent again only when the service proved that
  it created no task: a complete, successful read of the task list, made at least ``grace``
  seconds after the submit was sent (long enough for a request the service processes late),
  covering everything created since the send minus a clock-skew margin, shows no candidate. A
  failed, partial or too-early read proves nothing, and neither does a read of a list that can
  no longer show the task: the whole window (the send minus the skew margin to the end of the
  grace period) must still be inside the time the service keeps tasks (``retention``, 24 h),
  as the service's clock (up to the skew margin ahead of ours) sees it. A submit sent longer
  ago than that (a journal's intent found on resume, a day later) is never proven lost. Without
  proof within ``timeout`` more seconds the job ends with ``AmbiguousSubmitError`` (model,
  sent_at, request).
* **Adopt only what can only be ours.** A candidate (a task of the model created in the window
  that no answered submit created) is adopted only when it is the only one and no other submit of
  that model that could have created it is still unanswered, in this process or in any process
  sharing the limiter: the limiter's ``SubmitRecord`` answers both questions in one atomic step.
  Anything else leaves the job ambiguous; it never guesses.

One risk remains, and no client can remove it: a task of the model created inside the window by
a program that does not share the limiter (another tool on the same account) looks exactly like
ours. Give such programs the same limiter, or keep them to other models.

It reads the task list through the ``TaskService`` and meters every page with the poll budget; it
never submits.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

import attrs

from .._clock import Clock
from .._config import TASK_RETENTION_SECONDS
from .._errors import AmbiguousSubmitError, DashScopeError
from .._limits import Limiter
from .._logging import get_logger
from .._models import Request, Task, TaskListItem
from .._submits import SubmitTicket
from .._validators import non_negative, positive
from ._service import TaskService

__all__ = ["ReconcileRules", "Reconciler"]

logger = get_logger("runner")

#: Tasks are looked for from this long before the submit was sent, for clock differences
#: between us and the service.
CLOCK_SKEW: Final = timedelta(seconds=30)


@attrs.frozen
class ReconcileRules:
    """How long reconciliation waits for proof, and how often it reads the task list.

    Attributes:
        grace: seconds after a submit was sent within which the service may still create its
            task (a request it processed late); only a list read made after that proves none.
        timeout: seconds after the grace period to keep looking before the job is reported
            ambiguous.
        interval: seconds between two reads of the task list.
        retention: seconds the service keeps a task in its list (24 h on DashScope); past that
            a read cannot show the task, so it proves nothing.
    """

    grace: float = attrs.field(
        default=30.0, validator=non_negative("reconcile_grace", unit="seconds")
    )
    timeout: float = attrs.field(
        default=60.0, validator=non_negative("reconcile_timeout", unit="seconds")
    )
    interval: float = attrs.field(default=2.0, validator=positive("interval", unit="seconds"))
    retention: float = attrs.field(
        default=float(TASK_RETENTION_SECONDS), validator=positive("task_retention", unit="seconds")
    )

    def provable_until(self, sent_at: datetime) -> datetime:
        """The last time (our wall clock) a list read can prove a submit sent at ``sent_at``
        made no task: the whole window, from the send minus the skew margin, is still kept by
        the service, whose clock may be up to the skew margin ahead of ours."""
        return sent_at - CLOCK_SKEW + timedelta(seconds=self.retention) - CLOCK_SKEW


@attrs.define
class Reconciler:
    """Settles lost submits by the rules above, for every job of one runner."""

    service: TaskService
    limiter: Limiter
    rules: ReconcileRules
    clock: Clock

    async def find(
        self,
        ticket: SubmitTicket,
        request: Request,
        *,
        last_sent_at: datetime,
        label: str,
        on_settled: Callable[[str | None], None],
    ) -> Task | None:
        """The task the ticket's submit created, or None when the service proved there is none.

        The ticket is answered either way. Raises ``AmbiguousSubmitError`` (the ticket stays
        unanswered, so nobody else adopts what may be this submit's task) without proof.
        """
        record = self.limiter.submits
        rules = self.rules
        clock = self.clock
        window_start = ticket.sent_at - CLOCK_SKEW
        grace = timedelta(seconds=rules.grace)
        # Waiting is measured on the monotonic clock; the wall clock only dates the list window.
        since_sent = (clock.wall() - last_sent_at).total_seconds()
        proof_from = clock.now() + rules.grace - since_sent
        give_up_at = proof_from + rules.timeout
        provable_until = rules.provable_until(ticket.sent_at)
        expired = (
            f"it was sent longer ago than the service keeps tasks ({rules.retention:g} s),"
            " so the task list can no longer show its task"
        )
        candidates: tuple[str, ...] = ()
        why = "no task list read succeeded"
        while True:
            if clock.wall() > provable_until:
                why = expired
                break
            read_at = clock.now()
            items = await self._read(ticket.model, window_start)
            if items is not None:
                created = [
                    item for item in items if item.created is None or item.created >= window_start
                ]
                times = [item.created for item in created if item.created is not None]
                screening = await record.screen(
                    ticket,
                    [item.task_id for item in created],
                    # Any submit that could have created one of them: sent up to `grace` before
                    # the earliest, and (with skew) until the latest was created.
                    others_from=(min(times) if times else window_start) - grace - CLOCK_SKEW,
                    others_until=(max(times) if times else clock.wall()) + CLOCK_SKEW,
                )
                candidates = screening.unknown
                if not screening.complete:
                    why = "the runner made too many tasks lately to tell its own from a new one"
                    break
                if len(candidates) == 1 and screening.others_unanswered == 0:
                    await record.answered(ticket, candidates[0])
                    on_settled(candidates[0])
                    item = next(item for item in created if item.task_id == candidates[0])
                    return Task(item.task_id, item.status, ticket.model, item.request_id)
                if not candidates and read_at >= proof_from:
                    if clock.wall() > provable_until:  # the window ran out during the read
                        why = expired
                        break
                    await record.answered(ticket, None)
                    on_settled(None)
                    logger.info("%s: the task list proves its lost submit made no task", label)
                    return None
                if len(candidates) > 1:
                    why = (
                        f"{len(candidates)} unknown {ticket.model} tasks appeared since it was sent"
                    )
                elif candidates:
                    why = "another unanswered submit could have created the task that appeared"
                else:
                    why = "the task list shows nothing yet, within the grace period"
            now = clock.now()
            if now >= give_up_at:
                break
            # Be there with a read the moment one can prove something.
            wait = min(rules.interval, proof_from - now) if now < proof_from else rules.interval
            await clock.sleep(max(min(wait, give_up_at - now), 0.001))
        raise AmbiguousSubmitError(
            f"{label}: the submit sent at {ticket.sent_at.isoformat()} got no answer and the"
            f" task list could not settle it ({why}); not resubmitted, to avoid paying twice."
            " Settle it with 'dashscope-async tasks reconcile'.",
            model=ticket.model,
            sent_at=ticket.sent_at,
            request=request,
            candidates=candidates,
        )

    async def _read(self, model: str, since: datetime) -> list[TaskListItem] | None:
        """The whole list since ``since``; None if any page failed (that proves nothing)."""
        try:
            return [
                item
                async for item in self.service.list_tasks(
                    start=since, model=model, before_page=self.limiter.poll_turn
                )
            ]
        except DashScopeError as exc:
            logger.info("a task-list read for %s failed (%s); it proves nothing", model, exc)
            return None
