"""The record of submits: which were sent and are still unanswered, and which tasks are known.

Owns the evidence reconciliation judges by. Every submit the runner sends is written here before
it goes (a ``SubmitTicket``) and answered when its answer is known: with the task id it created
(the task is then *known*: it belongs to someone, never to a lost submit) or with none. A task of
a model is adopted by a lost submit only when the record shows it is not known and that no other
submit of that model that could have created it is still unanswered (see ``_runner._reconcile``).

The record lives with the limiter, because "could another submit have created it?" must be asked
of everyone who shares the account's limits: ``LocalLimiter`` keeps a ``LocalSubmitRecord`` in
process; ``dashscope_async.redis.RedisLimiter`` keeps the same record in Redis for every worker.
It never sends a request and never decides anything about a job.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Final, Protocol

import attrs

__all__ = ["LocalSubmitRecord", "Screening", "SubmitRecord", "SubmitTicket"]

#: How long a known task id or an unanswered ticket is remembered. Reconciling only ever looks
#: at tasks created around one submit (its grace period plus the reconcile timeout), so an hour
#: is ample; a ticket left unanswered (its job ended ambiguous, or its process died) keeps
#: blocking adoption of tasks created around it for that long, which is what it should do.
RECORD_MEMORY: Final = timedelta(hours=1)
#: At most this many known ids are kept in process (memory stays flat at any rate). Should
#: younger ids have to go, the record says so and a lost submit is reported, not reconciled.
KNOWN_TASK_LIMIT: Final = 100_000


@attrs.frozen
class SubmitTicket:
    """One submit, written to the record before it was sent.

    Attributes:
        model: the model it is for.
        sent_at: our wall clock when it was (about to be) sent.
        token: tells it apart from every other ticket.
    """

    model: str
    sent_at: datetime
    token: str = attrs.field(factory=lambda: secrets.token_hex(12))


@attrs.frozen
class Screening:
    """What the record says about the candidates a task-list read found for a lost submit.

    Attributes:
        unknown: the candidates no answered submit created (the only ones that may be adopted).
        others_unanswered: other submits of the model, sent in the window asked about, whose
            answers are still missing: while there is one, no candidate can be proven ours.
        complete: False when the record had to forget ids younger than the window, so
            ``unknown`` may hold tasks that are someone's.
    """

    unknown: tuple[str, ...]
    others_unanswered: int
    complete: bool = True


class SubmitRecord(Protocol):
    """The known-task and unanswered-submit record a limiter keeps for everyone sharing it.

    ``screen`` is one atomic step: an answer recorded while a task-list read was in flight
    either still shows as unanswered or has made its task known, never neither.
    """

    async def sent(self, model: str, sent_at: datetime) -> SubmitTicket:
        """Write a submit about to be sent; return its ticket."""
        ...

    async def answered(self, ticket: SubmitTicket, task_id: str | None) -> None:
        """The submit's answer: the task it created (now known), or None for no task."""
        ...

    async def remember(self, model: str, task_ids: Iterable[str]) -> None:
        """Mark tasks of ``model`` as known (those an earlier run recorded in its journal)."""
        ...

    async def screen(
        self,
        ticket: SubmitTicket,
        candidates: Sequence[str],
        *,
        others_from: datetime,
        others_until: datetime,
    ) -> Screening:
        """Which candidates are unknown, and how many other submits sent between the two moments
        are unanswered (``ticket`` itself not counted)."""
        ...


class LocalSubmitRecord:
    """The in-process ``SubmitRecord`` of ``LocalLimiter``: two dictionaries, pruned by age.

    Args:
        wall: the wall clock tickets and ids are dated by.
        limit: the most known ids kept (the oldest go first).
    """

    def __init__(self, wall: Callable[[], datetime], *, limit: int = KNOWN_TASK_LIMIT) -> None:
        self._wall = wall
        self._limit = limit
        self._known: dict[str, datetime] = {}
        self._unanswered: dict[str, SubmitTicket] = {}
        self._forgot_until: datetime | None = None

    async def sent(self, model: str, sent_at: datetime) -> SubmitTicket:
        ticket = SubmitTicket(model, sent_at)
        self._unanswered[ticket.token] = ticket
        return ticket

    async def answered(self, ticket: SubmitTicket, task_id: str | None) -> None:
        # Known first, then answered: nothing can see the task neither known nor in flight.
        if task_id is not None:
            self._know(task_id)
        self._unanswered.pop(ticket.token, None)

    async def remember(self, model: str, task_ids: Iterable[str]) -> None:
        for task_id in task_ids:
            self._know(task_id)

    async def screen(
        self,
        ticket: SubmitTicket,
        candidates: Sequence[str],
        *,
        others_from: datetime,
        others_until: datetime,
    ) -> Screening:
        self._prune()
        others = sum(
            1
            for other in self._unanswered.values()
            if other.token != ticket.token
            and other.model == ticket.model
            and others_from <= other.sent_at <= others_until
        )
        forgot = self._forgot_until
        return Screening(
            unknown=tuple(task_id for task_id in candidates if task_id not in self._known),
            others_unanswered=others,
            complete=forgot is None or forgot < others_from,
        )

    @property
    def unanswered(self) -> int:
        """Submits sent and not answered yet (for tests and metrics)."""
        return len(self._unanswered)

    def _know(self, task_id: str) -> None:
        self._known.pop(task_id, None)
        self._known[task_id] = self._wall()
        if len(self._known) > self._limit:
            oldest = next(iter(self._known))
            self._forgot_until = self._known.pop(oldest)

    def _prune(self) -> None:
        horizon = self._wall() - RECORD_MEMORY
        while self._known:
            oldest = next(iter(self._known))
            if self._known[oldest] >= horizon:
                break
            del self._known[oldest]
        for token in [t for t, ticket in self._unanswered.items() if ticket.sent_at < horizon]:
            del self._unanswered[token]
