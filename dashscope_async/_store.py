"""The job-store protocol: what the runner needs from a journal, local or shared by a fleet.

Owns the contract only. ``Journal`` (``_journal``, one SQLite file, one process) and
``RedisJournal`` (``_redis_journal``, one Redis, every worker of an account) implement it; the
runner talks to nothing else. A store records what the runner tells it and answers lookups; it
never sends a request and never decides whether a job runs.

The order the runner keeps, for every keyed job:

1. ``claim(key)``: hold the job's key for as long as the job runs here. A second holder (another
   worker given the same job) waits until the first ends the job or dies, and then sees what it
   recorded. A store used by one process at a time (the SQLite journal) has nothing to wait for.
2. ``record_intent`` before a submit is sent: a crash after it is reconciled, never resubmitted
   blindly.
3. ``record_submitted`` once the service answered with a task id: a later run re-attaches.
4. ``record_succeeded`` / ``record_failed`` / ``record_canceled`` at the end.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol, runtime_checkable

from ._budget import Budget, Spending
from ._journal import JobState, JournalEntry
from ._models import TaskResult

__all__ = ["JobStore"]


@runtime_checkable
class JobStore(Protocol):
    """What the runner records each keyed job in, and reads back from when it meets it again.

    Example:
        ```python
        store: JobStore = await ds.Journal.open("batch.sqlite")    # one process
        store = RedisJournal("redis://127.0.0.1:6379/0", namespace="acme")  # a fleet
        async with ds.AsyncTaskRunner(client, journal=store) as runner:
            ...
        ```
    """

    @property
    def shared(self) -> bool:
        """True when other processes write to the store while this one runs (a fleet)."""
        ...

    def claim(self, key: str) -> AbstractAsyncContextManager[JournalEntry | None]:
        """Hold the job ``key`` while the block runs; yields what is recorded for it (or None).

        Waits while another holder runs the same job. If that holder finished it, the entry
        yielded is final and the caller replays it; the key is then not held.
        """
        ...

    async def lookup(self, key: str) -> JournalEntry | None:
        """The entry of one job, or None if the store has never seen it."""
        ...

    async def lookup_many(self, keys: Sequence[str]) -> dict[str, JournalEntry]:
        """The entries of many jobs at once, by key; keys never seen are left out."""
        ...

    async def entries(self, state: JobState | None = None) -> list[JournalEntry]:
        """Every entry (or those in ``state``), in batch order."""
        ...

    async def counts(self) -> dict[JobState, int]:
        """How many jobs are in each state (every state present, zeros included)."""
        ...

    async def spent(self) -> dict[str, int]:
        """Images billed so far, by model."""
        ...

    async def task_ids(self) -> set[str]:
        """Every task id the store holds (never adopted for another job's lost submit)."""
        ...

    async def record_intent(
        self, key: str, *, index: int, model: str, fingerprint: str, sent_at: datetime
    ) -> None:
        """Record that a submit is about to be sent (before sending it)."""
        ...

    async def record_submitted(self, key: str, task_id: str) -> None:
        """Record that the service accepted the job's submit as task ``task_id``."""
        ...

    async def record_succeeded(
        self, key: str, result: TaskResult, files: Sequence[str | os.PathLike[str]] = ()
    ) -> None:
        """Record the job's result (and the images saved for it)."""
        ...

    async def record_failed(self, key: str, error: BaseException) -> None:
        """Record the error the job ended with."""
        ...

    async def record_canceled(self, key: str) -> None:
        """Record that the job was cancelled before it ran (run again later)."""
        ...

    async def record_files(self, key: str, files: Sequence[str | os.PathLike[str]]) -> None:
        """Record the images saved for the job."""
        ...

    def spending(self, budget: Budget) -> Spending | None:
        """Where ``budget`` is kept when the store is shared by a fleet; None: in this process."""
        ...

    async def aclose(self) -> None:
        """Release the store (connections, files)."""
        ...
