"""What the emulator saw: submissions, throttles, polls, lags, busy slots, duplicates, leaks.

Owns the records and the questions a test asks of them (``max_submits_in_any_window``,
``busy_time``, ...). The core writes here; nothing here decides anything. Times are readings of
the emulator's clock (monotonic seconds).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter

import attrs

__all__ = ["CredentialLeak", "EmulatorStats"]


@attrs.frozen
class CredentialLeak:
    """A request that reached an upload or result host carrying a credential header.

    Attributes:
        host: ``"upload"`` or ``"result"``.
        header: the header's name (lower case); its value is never recorded.
        method: the HTTP method.
        path: the path, without the query (which holds a signature).
    """

    host: str
    header: str
    method: str
    path: str


@attrs.define
class EmulatorStats:
    """The emulator's records. Read them in tests; they only grow.

    Attributes:
        submissions: accepted submissions (tasks created) per model.
        submit_times: the time of every accepted submission per model, in order.
        throttled_submits: submissions answered 429 by a limit, per model.
        throttled_task_requests: get/list/cancel requests answered 429 by the 20 QPS limit.
        throttled_upload_policies: policy requests answered 429.
        peak_in_progress: the most tasks submitted and not yet finished at once, per model.
        peak_running: the most tasks RUNNING at once, per model.
        polls: ``GET /tasks/{id}`` requests per task id.
        task_request_times: the time of every accepted get/list/cancel request.
        detection_lag: per task, the time from its end to the first poll that saw it finished.
        busy_intervals: per model, the (start, end) of every task that ran.
        held_intervals: per model, the (slot taken, end) of every task that ran: from the
            moment the service gave it a slot, which it then spends a few tens of milliseconds
            scheduling (no client can shorten that), to its end.
        duplicate_submissions: per model, accepted submissions whose body equalled an earlier
            one's (a duplicate task: billed twice).
        credential_leaks: every request to an upload or result host that carried credentials.
        requests: requests per route.
        faults_injected: injected faults per route.
        uploads: objects stored by the upload host.
        downloads: result images served.

    Example:
        ```python
        assert emulator.stats.max_submits_in_any_window("wanx-style-repaint-v1", 1.0) <= 2
        assert emulator.stats.credential_leaks == []
        ```
    """

    submissions: Counter[str] = attrs.field(factory=Counter)
    submit_times: dict[str, list[float]] = attrs.field(factory=dict)
    throttled_submits: Counter[str] = attrs.field(factory=Counter)
    throttled_task_requests: int = 0
    throttled_upload_policies: int = 0
    peak_in_progress: Counter[str] = attrs.field(factory=Counter)
    peak_running: Counter[str] = attrs.field(factory=Counter)
    polls: Counter[str] = attrs.field(factory=Counter)
    task_request_times: list[float] = attrs.field(factory=list)
    detection_lag: dict[str, float] = attrs.field(factory=dict)
    busy_intervals: dict[str, list[tuple[float, float]]] = attrs.field(factory=dict)
    held_intervals: dict[str, list[tuple[float, float]]] = attrs.field(factory=dict)
    duplicate_submissions: Counter[str] = attrs.field(factory=Counter)
    credential_leaks: list[CredentialLeak] = attrs.field(factory=list)
    requests: Counter[str] = attrs.field(factory=Counter)
    faults_injected: Counter[str] = attrs.field(factory=Counter)
    uploads: int = 0
    downloads: int = 0

    @property
    def throttled(self) -> int:
        """Every request a limit answered with 429 (injected faults not counted)."""
        return (
            sum(self.throttled_submits.values())
            + self.throttled_task_requests
            + self.throttled_upload_policies
        )

    def max_submits_in_any_window(self, model: str, window: float = 1.0) -> int:
        """The most accepted submissions of ``model`` inside any half-open window of ``window`` s."""
        return _max_in_window(self.submit_times.get(model, []), window)

    def max_task_requests_in_any_window(self, window: float = 1.0) -> int:
        """The most accepted get/list/cancel requests inside any window of ``window`` seconds."""
        return _max_in_window(self.task_request_times, window)

    def busy_time(self, model: str) -> float:
        """Seconds during which at least one task of ``model`` was running."""
        return _covered(self.busy_intervals.get(model, []))

    def held_time(self, model: str) -> float:
        """Seconds during which at least one slot of ``model`` was held by a task."""
        return _covered(self.held_intervals.get(model, []))

    def makespan(self, model: str) -> float:
        """Seconds from the first accepted submission of ``model`` to its last task's end."""
        times = self.submit_times.get(model)
        intervals = self.busy_intervals.get(model)
        if not times or not intervals:
            return 0.0
        return max(end for _, end in intervals) - times[0]

    def utilisation(self, model: str) -> float:
        """``busy_time / makespan``: the share of the run during which a task was running."""
        span = self.makespan(model)
        return self.busy_time(model) / span if span > 0 else 0.0

    def slot_utilisation(self, model: str) -> float:
        """``held_time / makespan``: how well a client kept the model's slot busy (0 to 1).

        What the client's pacing, polling and queueing decided: the service's scheduling of
        each task, inside the slot, counts as held.
        """
        span = self.makespan(model)
        return self.held_time(model) / span if span > 0 else 0.0

    @property
    def total_duplicates(self) -> int:
        """Duplicate submissions over all models."""
        return sum(self.duplicate_submissions.values())


def _covered(intervals: list[tuple[float, float]]) -> float:
    """Seconds inside at least one of the intervals."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


def _max_in_window(times: list[float], window: float) -> int:
    # Times are appended in clock order, so each window's count is one binary search.
    best = 0
    for index, moment in enumerate(times):
        first = bisect_left(times, moment - window + 1e-9, 0, index + 1)
        best = max(best, index - first + 1)
    return best
