"""The journal's part of a job: claim it, replay it, and write each step it takes.

Owns what the runner writes to a job store (``JobStore``: the SQLite ``Journal``, or a store a
fleet shares such as ``RedisJournal``) and when: the job's key held while it runs here, the entry
it starts from (replayed when final, re-attached when its task is known, reconciled when an
earlier run's submit went unanswered), the intent written before a submit is sent, the task id
once accepted, and how the job ended. A job ended ambiguous stays an intent: a person or a later
run settles it. Without a journal every step is a no-op. It never talks to the service.

A journaled submit's ticket in the submit record is named after the job and its send time
(``ticket_token``), so whoever takes the job up after a crash settles that same ticket.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Final

import anyio

from .._budget import BudgetLedger
from .._errors import (
    AmbiguousSubmitError,
    BadRequestError,
    DashScopeError,
    JobCanceledError,
    JournalError,
    RecordedFailureError,
    TaskFailedError,
    TaskNotFoundError,
    TaskTimeoutError,
    ValidationError,
)
from .._journal import JobState as JournalState
from .._journal import JournalEntry, fingerprint, job_key
from .._logging import get_logger
from .._models import TaskResult, TaskStatus
from .._store import JobStore
from .._submits import SubmitRecord, SubmitTicket
from ._jobs import JobState

__all__ = ["JobJournal"]

logger = get_logger("runner")

#: The claim of a job no journal records: nothing to hold, no entry.
_NOTHING_TO_CLAIM: Final[AbstractAsyncContextManager[None]] = nullcontext()


class JobJournal:
    """The runner's journal steps; every method is a no-op when there is no journal."""

    def __init__(self, journal: JobStore | None) -> None:
        self.journal = journal
        #: Tickets for the submits earlier runs sent and never heard back from, by job key.
        self._resumed: dict[str, SubmitTicket] = {}

    async def start(self, record: SubmitRecord, ledger: BudgetLedger | None) -> None:
        """Tell the submit record and the budget what earlier runs did.

        A shared store needs nothing told: the workers writing to it share a limiter, whose
        record already holds every ticket they sent and every task they were answered with.
        """
        journal = self.journal
        if journal is None or journal.shared:
            return
        by_model: dict[str, list[str]] = {}
        for entry in await journal.entries():
            if entry.task_id:
                by_model.setdefault(entry.model, []).append(entry.task_id)
            elif entry.state is JournalState.INTENT and entry.sent_at is not None:
                # Still unanswered: a task one of them made is no one else's to adopt, until its
                # own job reconciles it.
                token = ticket_token(entry.key, entry.sent_at)
                self._resumed[entry.key] = await record.sent(entry.model, entry.sent_at, token)
        # Tasks earlier runs created are someone's: never adopt one for a lost submit.
        for model, task_ids in by_model.items():
            await record.remember(model, task_ids)
        if ledger is not None:
            # What earlier runs of the batch spent counts against the cap.
            for model, images in (await journal.spent()).items():
                ledger.record(model, images)

    def resumed_ticket(self, state: JobState) -> SubmitTicket | None:
        """The ticket of a submit an earlier run sent for this job, if its answer never came."""
        return None if state.journal_key is None else self._resumed.pop(state.journal_key, None)

    async def learn_known_tasks(self, record: SubmitRecord, model: str) -> None:
        """Before a taken-up intent is reconciled: every task id the fleet's store holds is
        someone's (the shared record forgets ids after an hour; the store keeps them longer)."""
        if self.journal is not None and self.journal.shared:
            await record.remember(model, await self.journal.task_ids())

    def submit_token(self, state: JobState, sent_at: datetime) -> str | None:
        """The name of this job's submit ticket (None: a random one, for an unjournaled job)."""
        return None if state.journal_key is None else ticket_token(state.journal_key, sent_at)

    def claim(self, state: JobState) -> AbstractAsyncContextManager[JournalEntry | None]:
        """Name the job, hold its key while the block runs, and read what earlier runs did.

        With a store a fleet shares, a second worker given the same job waits here until the
        first ends it (then replays its outcome) or dies (then takes it up). Without a journal
        (or for a job it does not record) there is nothing to claim: the block gets None.
        """
        if self.journal is None or (state.key is None and not state.in_batch):
            return _NOTHING_TO_CLAIM
        return self._claim(state, self.journal)

    @asynccontextmanager
    async def _claim(
        self, state: JobState, journal: JobStore
    ) -> AsyncIterator[JournalEntry | None]:
        await self._name(state)
        assert state.journal_key is not None
        async with journal.claim(state.journal_key) as entry:
            yield self._checked(state, entry)

    async def _name(self, state: JobState) -> None:
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

    def _checked(self, state: JobState, entry: JournalEntry | None) -> JournalEntry | None:
        # Replaying another request's result under a reused key would be wrong.
        if entry is not None and state.key is not None and state.fingerprint != entry.fingerprint:
            raise ValidationError(
                f"jobs[{state.index}].key",
                f"{state.key!r} is recorded in the journal for a different request;"
                " give the changed job a new key, or start a new journal",
            )
        if entry is not None:
            state.intent_recorded = True  # the journal knows the job: record how it ends
        if entry is not None and entry.state is JournalState.INTENT and entry.sent_at is not None:
            # A submit sent and never answered (here or by a worker that died): settle its ticket.
            self._resumed[entry.key] = SubmitTicket(
                entry.model, entry.sent_at, ticket_token(entry.key, entry.sent_at)
            )
        return entry

    async def replay(
        self,
        state: JobState,
        entry: JournalEntry,
        save: Callable[[JobState, TaskResult], Awaitable[tuple[Path, ...]]],
        *,
        download: bool,
    ) -> tuple[TaskResult, tuple[Path, ...]]:
        """A job an earlier run finished: its outcome again, with no request to the service."""
        state.replayed = True
        state.task_id = entry.task_id
        if entry.state is JournalState.FAILED or entry.result is None:
            raise RecordedFailureError(
                f"job {state.index} failed in an earlier run: {entry.error_message}",
                error_type=entry.error_type or "DashScopeError",
                code=entry.error_code,
                task_id=entry.task_id,
            )
        state.result = entry.result
        files = tuple(Path(name) for name in entry.files)
        if download and not await anyio.to_thread.run_sync(
            lambda: bool(files) and all(path.is_file() for path in files)
        ):
            files = await save(state, entry.result)
            if self.journal is not None and state.journal_key is not None:
                await self.journal.record_files(state.journal_key, [str(f) for f in files])
        return entry.result, files

    async def intent(self, state: JobState, sent_at: datetime) -> None:
        """Written before a submit is sent: a crash after this is reconciled on resume."""
        if self.journal is None or state.journal_key is None:
            return
        await self.journal.record_intent(
            state.journal_key,
            index=state.index,
            model=state.model,
            fingerprint=state.fingerprint,
            sent_at=sent_at,
        )
        state.intent_recorded = True

    async def submitted(self, state: JobState, task_id: str) -> None:
        """The service accepted the job's submit (or its task was found).

        A store that cannot take the record (Redis gone) does not stop the job: its task runs,
        billed, and is still collected. The entry stays an intent, so a later run reconciles it.
        """
        if self.journal is not None and state.journal_key is not None:
            try:
                await self.journal.record_submitted(state.journal_key, task_id)
            except JournalError as exc:
                logger.warning(
                    "job %d: task %s could not be recorded: %s", state.index, task_id, exc
                )

    async def finished(
        self,
        state: JobState,
        result: TaskResult | None,
        files: tuple[Path, ...],
        error: DashScopeError | None,
    ) -> None:
        """Write how the job ended, so a later run replays it or takes it up again."""
        journal, key = self.journal, state.journal_key
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
            return  # a task may exist: it stays an intent, listed as ambiguous, never resubmitted
        elif state.task_id is None and state.submit_unanswered:
            return  # cancelled while its lost submit was being settled: a task may exist
        elif state.task_id is None or isinstance(error, JobCanceledError | TaskTimeoutError):
            # Nothing runs on the service for it (never created, or cancelled while PENDING).
            await journal.record_canceled(key)


def ticket_token(key: str, sent_at: datetime) -> str:
    """The submit ticket's name for job ``key``'s submit sent at ``sent_at``: the same in every
    process that reads the job's intent."""
    text = f"dashscope_async.ticket.v1\n{key}\n{sent_at.isoformat()}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]
