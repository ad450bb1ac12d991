"""Tasks and the per-model lanes they run in: queueing, slots and lazily derived state.

Owns when a task starts and ends. Nothing runs in the background: the core calls ``advance(now)``
before it looks at anything, and the lanes replay every start and end up to ``now`` in time order,
so a test's virtual clock drives the whole service. No I/O, no HTTP, no JSON here.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from typing import Final

import attrs

from .._models import TaskStatus
from .._wire import RepaintBody, SketchBody
from ._config import ModelBehaviour
from ._faults import TaskFault
from ._stats import EmulatorStats

__all__ = ["EmulatedTask", "InputProblem", "Lane"]


@attrs.frozen
class InputProblem:
    """Why the service refused a task's input after queueing."""

    code: str
    message: str


@attrs.define(eq=False)
class EmulatedTask:
    """One task as the emulator keeps it. Tests read these through ``Emulator.task``.

    Attributes:
        task_id: the id the submit answered.
        model: the model name.
        body: the submitted body, parsed into the wire shape.
        raw_body: the submitted JSON, exactly as sent.
        request_id: the submit's request id.
        api_key_id: a stable id of the key that submitted it (never the key).
        workspace: the ``X-DashScope-WorkSpace`` header, if any.
        oss_resolve: whether the submit carried ``X-DashScope-OssResourceResolve: enable``.
        images: images asked for (``n``; 1 for repaint).
        run_seconds: how long it runs once started (scaled).
        submitted_at: clock time of the submit.
        scheduling_seconds: from a slot coming free to the task RUNNING: the few tens of
            milliseconds between the service's ``submit_time`` and ``scheduled_time`` (scaled).
        start_lag_seconds: from ``scheduled_time`` to a repaint's ``start_time`` (scaled).
        started_at: clock time it starts or started RUNNING (None while it waits for a slot).
        ended_at: clock time it ends or ended (None while it waits for a slot).
        canceled: whether it was cancelled while PENDING.
        fault: an injected failure, if any.
        input_problem: the service's objection to its inputs, found when it started.
    """

    task_id: str
    model: str
    body: RepaintBody | SketchBody
    raw_body: dict[str, object] = attrs.field(repr=False)
    request_id: str
    api_key_id: str
    workspace: str | None
    oss_resolve: bool
    images: int
    run_seconds: float
    submitted_at: float
    scheduling_seconds: float = 0.0
    start_lag_seconds: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None
    canceled: bool = False
    fault: TaskFault | None = None
    input_problem: InputProblem | None = None
    result_urls: list[str] | None = attrs.field(default=None, repr=False)

    def status_at(self, now: float) -> TaskStatus:
        """The status at clock time ``now`` (``Lane.advance`` must have run up to ``now``)."""
        if self.canceled:
            return TaskStatus.CANCELED
        if self.started_at is None or now < self.started_at:
            return TaskStatus.PENDING  # waiting for a slot, or being scheduled into one
        assert self.ended_at is not None
        if self.ended_at > now:
            return TaskStatus.RUNNING
        return TaskStatus.SUCCEEDED if self.succeeded_images > 0 else TaskStatus.FAILED

    @property
    def failed_indexes(self) -> frozenset[int]:
        """Indexes of the images that fail once the task ends."""
        if self.input_problem is not None or (
            self.fault is not None and self.fault.failed_images is None
        ):
            return frozenset(range(self.images))
        if self.fault is None or self.fault.failed_images is None:
            return _NONE
        failed = min(self.fault.failed_images, self.images)
        return frozenset(range(self.images - failed, self.images))

    @property
    def succeeded_images(self) -> int:
        return self.images - len(self.failed_indexes)

    @property
    def failure(self) -> tuple[str, str] | None:
        """The task's ``code`` and ``message`` if it fails as a whole."""
        if self.input_problem is not None:
            return self.input_problem.code, self.input_problem.message
        if self.fault is not None and self.succeeded_images == 0:
            return self.fault.code, self.fault.message
        return None


_NONE: Final[frozenset[int]] = frozenset()

InputCheck = Callable[[EmulatedTask, float], InputProblem | None]


@attrs.define
class Lane:
    """One model's queue and slots: tasks beyond ``max_in_progress`` wait and start in order."""

    model: str
    behaviour: ModelBehaviour
    stats: EmulatorStats
    check_inputs: InputCheck
    input_failure_seconds: float
    waiting: deque[EmulatedTask] = attrs.field(factory=deque)
    # (end, sequence, task): the sequence keeps ties in start order.
    running: list[tuple[float, int, EmulatedTask]] = attrs.field(factory=list)
    in_progress: int = 0
    recent_submits: deque[float] = attrs.field(factory=deque)
    _sequence: int = 0

    def advance(self, now: float) -> None:
        """Replay every end (and the starts it allows) up to ``now``, in time order."""
        running = self.running
        while running and running[0][0] <= now:
            end, _, _ = heapq.heappop(running)
            self.in_progress -= 1
            self._start_waiting(end)

    def submit(self, task: EmulatedTask, now: float) -> None:
        """Take a new task at ``now``: it starts at once if a slot is free, else waits."""
        self.in_progress += 1
        model = self.model
        if self.in_progress > self.stats.peak_in_progress[model]:
            self.stats.peak_in_progress[model] = self.in_progress
        self.waiting.append(task)
        self._start_waiting(now)

    def cancel(self, task: EmulatedTask, now: float) -> None:
        """Cancel a waiting task."""
        self.waiting.remove(task)
        task.canceled = True
        task.ended_at = now
        self.in_progress -= 1

    def is_full(self) -> bool:
        """True when ``max_in_progress`` tasks are submitted and not finished."""
        limit = self.behaviour.max_in_progress
        return limit is not None and self.in_progress >= limit

    def _start_waiting(self, at: float) -> None:
        limit = self.behaviour.max_in_progress
        while self.waiting and (limit is None or len(self.running) < limit):
            self._start(self.waiting.popleft(), at)

    def _start(self, task: EmulatedTask, at: float) -> None:
        # The slot is the task's from ``at``; it runs once the service has scheduled it.
        task.input_problem = self.check_inputs(task, at)
        run = self.input_failure_seconds if task.input_problem else task.run_seconds
        task.started_at = at + task.scheduling_seconds
        task.ended_at = task.started_at + run
        self._sequence += 1
        heapq.heappush(self.running, (task.ended_at, self._sequence, task))
        self.stats.busy_intervals.setdefault(self.model, []).append(
            (task.started_at, task.ended_at)
        )
        self.stats.held_intervals.setdefault(self.model, []).append((at, task.ended_at))
        if len(self.running) > self.stats.peak_running[self.model]:
            self.stats.peak_running[self.model] = len(self.running)
