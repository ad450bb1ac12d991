"""Progress events of the runner: what happened to which job, delivered to callbacks and streams.

Owns the event type and its fan-out. Never blocks the runner: a subscriber that falls behind
loses events (counted), it does not slow the jobs down.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable
from types import TracebackType

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._logging import get_logger

__all__ = ["EventKind", "EventStream", "RunnerEvent"]

logger = get_logger("runner")


class EventKind(enum.StrEnum):
    """What happened to a job.

    Example:
        ```python
        def on_event(event: ds.RunnerEvent) -> None:
            if event.kind is ds.EventKind.THROTTLED:
                print("paused for", event.delay, "s")
        ```
    """

    QUEUED = "queued"
    """Handed to the runner; waiting for its model's slot."""
    SUBMITTED = "submitted"
    """The service accepted it; ``task_id`` is set."""
    RUNNING = "running"
    """A poll saw it running."""
    THROTTLED = "throttled"
    """A submit got 429; the model's submissions pause for ``delay`` seconds."""
    RETRIED = "retried"
    """A poll failed for a passing reason and will be retried after ``delay`` seconds."""
    QUEUE_AHEAD_OFF = "queue_ahead_off"
    """The service refused a task queued behind running ones (429 while the model's slots were
    full): queue-ahead is off for that model for the rest of the run; ``error`` has the answer.
    The job is submitted again once a slot is free."""
    RECONCILED = "reconciled"
    """An ambiguous submit was matched (or proven absent) through the task list."""
    SUCCEEDED = "succeeded"
    """Finished with images (maybe a partial success)."""
    FAILED = "failed"
    """Finished without images; ``error`` says why."""
    CANCELED = "canceled"
    """Cancelled by the caller or by leaving the runner."""


@attrs.frozen
class RunnerEvent:
    """One step of one job.

    Attributes:
        kind: what happened.
        index: the job's position in its batch (0 for single jobs).
        key: the job's key, when it has one.
        model: the model the job runs on.
        at: the runner clock's time.
        task_id: the service's task id, once known.
        delay: for THROTTLED and RETRIED, the pause in seconds.
        error: for FAILED, a short description.

    Example:
        ```python
        def show(event: ds.RunnerEvent) -> None:
            print(event.kind, event.index, event.task_id)

        async with ds.AsyncTaskRunner(client, on_event=show) as runner:
            ...
        ```
    """

    kind: EventKind
    index: int
    model: str
    at: float
    key: str | None = None
    task_id: str | None = None
    delay: float | None = None
    error: str | None = None


class EventStream:
    """An async iterator of runner events; close it (or leave its ``async with``) to unsubscribe.

    Example:
        ```python
        async with runner.events() as events:
            async for event in events:
                print(event.kind, event.task_id)
        ```
    """

    def __init__(self, hub: EventHub, max_buffer: int) -> None:
        send, receive = anyio.create_memory_object_stream[RunnerEvent](max_buffer)
        self._hub = hub
        self._send: MemoryObjectSendStream[RunnerEvent] = send
        self._receive: MemoryObjectReceiveStream[RunnerEvent] = receive
        self.dropped = 0
        """Events lost because this subscriber fell behind."""

    def _offer(self, event: RunnerEvent) -> None:
        try:
            self._send.send_nowait(event)
        except anyio.WouldBlock:
            self.dropped += 1
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._hub.unsubscribe(self)

    def _finish(self) -> None:
        self._send.close()

    def __aiter__(self) -> AsyncIterator[RunnerEvent]:
        return self

    async def __anext__(self) -> RunnerEvent:
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Stop receiving events."""
        self._hub.unsubscribe(self)
        self._send.close()
        self._receive.close()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class EventHub:
    """Delivers each event to the callbacks and the open streams, in order, without waiting."""

    def __init__(self, callbacks: tuple[Callable[[RunnerEvent], object], ...] = ()) -> None:
        self._callbacks = list(callbacks)
        self._streams: list[EventStream] = []

    def subscribe(self, max_buffer: int) -> EventStream:
        stream = EventStream(self, max_buffer)
        self._streams.append(stream)
        return stream

    def unsubscribe(self, stream: EventStream) -> None:
        if stream in self._streams:
            self._streams.remove(stream)

    @property
    def active(self) -> bool:
        """Whether anyone listens; lets the runner skip building events nobody reads."""
        return bool(self._callbacks or self._streams)

    def emit(self, event: RunnerEvent) -> None:
        for callback in self._callbacks:
            try:
                callback(event)
            except Exception:
                # A broken progress display must not fail the jobs it displays.
                logger.exception("an on_event callback raised; the event was %s", event.kind)
        for stream in tuple(self._streams):
            stream._offer(event)

    def close(self) -> None:
        for stream in self._streams:
            stream._finish()
        self._streams.clear()
