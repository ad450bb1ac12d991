"""``Batch``: the outcomes of ``runner.map`` as an async iterator, and the work behind it.

Owns one batch's life: pulling the caller's requests at most ``max_pending`` ahead of the
consumer, starting their jobs in the batch's own task group, ordering or passing on outcomes, and
stopping. *Dropped means stopped*: leaving ``async for`` by ``break``, by an exception or by
cancellation cancels the batch's task group at once, so nothing more is submitted; its jobs clean
up (PENDING tasks are cancelled on the service) and the runner stays open for everyone else.

The work (``BatchWork``) is kept apart from the ``Batch`` object the caller iterates: the runner
and the jobs hold only the work, never the ``Batch``, so the moment the caller's loop lets go of
the iterator (``break``, an exception leaving the loop) CPython frees it and its finalizer stops
the work, synchronously, in the same step; no cyclic garbage collection is involved. Cancellation
while waiting for an outcome stops it too, and ``async with`` / ``aclose()`` stop it explicitly
and wait for the cleanup.

It reaches the runner only through ``BatchHost`` (start a job, host the batch's task group).
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable
from contextlib import aclosing
from types import TracebackType
from typing import Any, Protocol

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from .._errors import ValidationError
from .._models import Request
from ._jobs import Job, JobState, Outcome

__all__ = ["Batch", "BatchHost", "BatchWork"]


class BatchHost(Protocol):
    """What a batch needs from its runner, and no more."""

    def now(self) -> float:
        """The runner clock's time."""
        ...

    def new_job(self, index: int, request: object, key: str | None) -> JobState:
        """A job's state; raises ``ValidationError`` for something that is not a request."""
        ...

    def start_job(self, state: JobState, task_group: TaskGroup) -> None:
        """Start the job in the batch's task group."""
        ...

    def host(self, work: BatchWork) -> None:
        """Run ``work.run()`` in the runner's task group, and stop it when the runner stops."""
        ...

    def release(self, work: BatchWork) -> None:
        """The batch's work is over."""
        ...


class BatchWork:
    """A batch's jobs and outcomes: its task group runs the feeder and every job."""

    def __init__(
        self,
        host: BatchHost,
        requests: Iterable[Request | Job] | AsyncIterable[Request | Job],
        *,
        ordered: bool,
        stop_on_error: bool,
        max_pending: int,
    ) -> None:
        self._host = host
        self._requests = requests
        self._ordered = ordered
        self._stop_on_error = stop_on_error
        self._window = anyio.Semaphore(max_pending)
        # None marks the end of the input.
        self._send, self._receive = anyio.create_memory_object_stream[Outcome | None](math.inf)
        self._task_group: TaskGroup | None = None
        self._finished = anyio.Event()
        self._buffer: dict[int, Outcome] = {}
        self._next_index = 0
        self._total: int | None = None
        self._yielded = 0
        self._input_error: BaseException | None = None
        self.started = False
        self.dropped = False
        self.canceled = False

    # --- the runner's side --------------------------------------------------------------------

    def start(self) -> None:
        if not self.started:
            self.started = True
            self._host.host(self)

    async def run(self) -> None:
        """The batch's task group: the feeder and every job; returns when all have ended."""
        try:
            async with anyio.create_task_group() as task_group:
                self._task_group = task_group
                if self.dropped or self.canceled:
                    task_group.cancel_scope.cancel()
                await self._feed(task_group)
        finally:
            self._finished.set()
            self._host.release(self)

    async def _feed(self, task_group: TaskGroup) -> None:
        index = 0
        requests = self._requests
        try:
            if isinstance(requests, AsyncIterable):
                async with aclosing(_as_async_iter(requests)) as items:
                    async for item in items:
                        await self._window.acquire()
                        self._launch(task_group, index, item)
                        index += 1
            else:
                for item in requests:
                    # A checkpoint for every item (anyio's acquire always is one), so a long
                    # synchronous generator cannot starve the jobs it feeds.
                    await self._window.acquire()
                    self._launch(task_group, index, item)
                    index += 1
        except Exception as exc:
            # The caller's iterable failed: the batch ends with that error after the jobs
            # already started have their outcomes.
            self._input_error = exc
        finally:
            self._total = index
            self._deliver(None)

    def _launch(self, task_group: TaskGroup, index: int, item: Request | Job) -> None:
        request, key = (item.request, item.key) if isinstance(item, Job) else (item, None)
        try:
            state = self._host.new_job(index, request, key)
        except ValidationError as exc:
            self._deliver(
                Outcome(
                    index=index,
                    request=request,
                    error=exc,
                    key=key,
                    finished_at=self._host.now(),
                )
            )
            return
        state.on_done = self._deliver
        state.in_batch = True
        self._host.start_job(state, task_group)

    def _deliver(self, outcome: Outcome | None) -> None:
        # Jobs cancelled after the consumer left still finish; their outcomes go nowhere.
        if not self.dropped:
            self._send.send_nowait(outcome)

    # --- stopping -----------------------------------------------------------------------------

    def cancel(self) -> None:
        """Cancel the jobs and start no more, for a consumer still iterating: every job the
        batch started still hands out its outcome (how far its task got), then the batch ends."""
        self.canceled = True
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()

    def drop(self) -> None:
        """Stop now: nothing more is started or submitted; the jobs clean up in the background."""
        if self.dropped:
            return
        self.dropped = True
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()
        self._send.close()
        self._receive.close()

    async def wait_finished(self) -> None:
        if self.started:
            with anyio.CancelScope(shield=True):
                await self._finished.wait()

    # --- the consumer's side ------------------------------------------------------------------

    async def next_outcome(self) -> Outcome:
        while True:
            if self.dropped:
                raise StopAsyncIteration
            if self._ordered and self._next_index in self._buffer:
                return self._hand_out(self._buffer.pop(self._next_index))
            if self._total is not None and self._yielded >= self._total:
                await self._end()
            try:
                outcome = await self._receive.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                raise StopAsyncIteration from None
            if outcome is None:
                continue
            if self._ordered and outcome.index != self._next_index:
                self._buffer[outcome.index] = outcome
                continue
            return self._hand_out(outcome)

    def _hand_out(self, outcome: Outcome) -> Outcome:
        self._yielded += 1
        self._next_index = outcome.index + 1 if self._ordered else self._next_index
        self._window.release()
        if self._stop_on_error and not outcome.ok:
            self.drop()
        return outcome

    async def _end(self) -> None:
        self.dropped = True  # every outcome is out: nothing left to stop
        self._send.close()
        self._receive.close()
        await self.wait_finished()
        if self._input_error is not None:
            error, self._input_error = self._input_error, None
            raise error
        raise StopAsyncIteration


class Batch:
    """The outcomes of ``runner.map``: an async iterator, also usable with ``async with``.

    Leaving the ``async for`` loop early (``break``, an exception, cancellation) stops the batch
    at once: jobs not yet submitted are dropped, PENDING tasks are cancelled on the service, and
    nothing more is sent. ``async with`` (or ``aclose()``) does the same and also waits until that
    cleanup is done. Keep no other reference to a batch you leave without ``async with``: it stops
    when the loop lets go of it.

    Example:
        ```python
        async with runner.map(requests, stop_on_error=True) as outcomes:
            async for outcome in outcomes:
                print(outcome.index, outcome.ok)
        ```
    """

    __slots__ = ("__weakref__", "_stop", "_work")

    def __init__(self, work: BatchWork) -> None:
        self._work = work
        # Runs the moment this object is freed (the loop let go of it); holds only the work.
        self._stop = weakref.finalize(self, _drop_quietly, work)
        self._stop.atexit = False

    def __aiter__(self) -> AsyncIterator[Outcome]:
        return self

    async def __anext__(self) -> Outcome:
        work = self._work
        work.start()
        try:
            return await work.next_outcome()
        except anyio.get_cancelled_exc_class():
            work.drop()  # the consumer was cancelled while waiting: it has left the loop
            raise

    async def aclose(self) -> None:
        """Stop what is still going and wait until it has been cleaned up."""
        self._work.drop()
        await self._work.wait_finished()

    async def __aenter__(self) -> Batch:
        self._work.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _drop_quietly(work: BatchWork) -> None:
    # If the event loop is already gone, the batch's work went with it.
    with contextlib.suppress(RuntimeError):
        work.drop()


async def _as_async_iter(items: AsyncIterable[Any]) -> AsyncGenerator[Any, None]:
    async for item in items:
        yield item
