"""The shared poll loop: when a task that waited PENDING is taken to have started (from the
service's own times, whatever the skew between its clock and ours)."""

from __future__ import annotations

from datetime import timedelta

import attrs
import pytest

from dashscope_async._models import TaskInfo, TaskStatus
from dashscope_async._poll_loop import TaskPoll, poll_until_done
from dashscope_async._polling import PollPlanner, RunTimeEstimate, RunTimeStats
from tests.mock_service import WALL_START, RecordingClock

pytestmark = pytest.mark.anyio

MODEL = "wanx-style-repaint-v1"


class KnownStats(RunTimeStats):
    """Median 10 s, log spread 0.05, learned."""

    def expected(self, model: str) -> RunTimeEstimate:
        return RunTimeEstimate(model, 10.0, 0.05, 5)


@attrs.define
class Answers:
    """Answers polls from a script; each answer is built at the clock time it is asked."""

    clock: RecordingClock
    started_at: float
    ends_at: float
    submitted_at: float = 0.0
    skew: float = 3.7
    asked_at: list[float] = attrs.field(factory=list)

    async def get_task(self, task_id: str, *, retry: bool = True) -> TaskInfo:
        now = self.clock.now()
        self.asked_at.append(now)
        # The service's clock runs an hour and a bit off ours: only its own differences count.
        service = WALL_START + timedelta(hours=1, seconds=self.skew)
        submitted = service + timedelta(seconds=self.submitted_at)
        scheduled = service + timedelta(seconds=self.started_at)
        if now < self.started_at:
            return TaskInfo(task_id, TaskStatus.PENDING, submit_time=submitted)
        if now < self.ends_at:
            return TaskInfo(
                task_id, TaskStatus.RUNNING, submit_time=submitted, scheduled_time=scheduled
            )
        end = service + timedelta(seconds=self.ends_at)
        return TaskInfo(
            task_id,
            TaskStatus.SUCCEEDED,
            submit_time=submitted,
            scheduled_time=scheduled,
            end_time=end,
        )


@pytest.mark.parametrize("queued_ahead", [False, True])
async def test_a_task_that_waited_runs_from_the_service_s_scheduled_time(
    queued_ahead: bool,
) -> None:
    clock = RecordingClock()
    # Submitted at 0 behind another task; it started at 7.5 s and ends at 17.5 s.
    answers = Answers(clock, started_at=7.5, ends_at=17.5)
    planner = PollPlanner(stats=KnownStats())
    poll = TaskPoll("t-1", MODEL, submitted_at=0.0, seen_pending=True, queued_ahead=queued_ahead)
    info = await poll_until_done(poll, service=answers, planner=planner, clock=clock)
    assert info.status is TaskStatus.SUCCEEDED
    assert poll.running_since == pytest.approx(7.5)
    # Once seen running, the next poll is planned from 7.5 s, not from when it was seen: the
    # early quantile of 10 s after 7.5 s (or, collecting, the late one).
    seen_running = next(t for t in answers.asked_at if t >= 7.5)
    after = answers.asked_at[answers.asked_at.index(seen_running) + 1]
    estimate = KnownStats().expected(MODEL)
    first = planner.schedule(MODEL).times[0]
    expected = 7.5 + (estimate.high if queued_ahead else first)
    assert after == pytest.approx(expected)


async def test_a_start_out_of_reach_is_clipped_to_the_submission() -> None:
    clock = RecordingClock()
    # Scheduled before it was submitted, by the service's own times: impossible, so clipped.
    answers = Answers(clock, started_at=-50.0, ends_at=12.0)
    poll = TaskPoll("t-1", MODEL, submitted_at=0.0, seen_pending=True)
    await poll_until_done(
        poll, service=answers, planner=PollPlanner(stats=KnownStats()), clock=clock
    )
    assert poll.running_since == 0.0


async def test_a_task_in_a_free_slot_runs_from_the_service_s_scheduled_time() -> None:
    """Never seen PENDING, it still waited for the service to schedule it (40 ms here)."""
    clock = RecordingClock()
    answers = Answers(clock, started_at=0.04, ends_at=10.04)
    planner = PollPlanner(stats=KnownStats())
    poll = TaskPoll("t-1", MODEL, submitted_at=0.0)
    await poll_until_done(poll, service=answers, planner=planner, clock=clock)
    assert poll.running_since == pytest.approx(0.04)
    # Every poll after the first is planned from the real start: the schedule, shifted by it.
    times = planner.schedule(MODEL).times
    assert answers.asked_at[0] == pytest.approx(times[0])
    assert answers.asked_at[1] == pytest.approx(0.04 + times[1])


async def test_a_task_in_a_free_slot_without_service_times_runs_from_its_submission() -> None:
    clock = RecordingClock()

    class Timeless(Answers):
        async def get_task(self, task_id: str, *, retry: bool = True) -> TaskInfo:
            info = await super().get_task(task_id, retry=retry)
            return attrs.evolve(info, submit_time=None, scheduled_time=None)

    answers = Timeless(clock, started_at=0.04, ends_at=10.04)
    poll = TaskPoll("t-1", MODEL, submitted_at=0.0)
    await poll_until_done(
        poll, service=answers, planner=PollPlanner(stats=KnownStats()), clock=clock
    )
    assert poll.running_since == 0.0


async def test_a_run_time_longer_than_the_wait_since_submission_is_not_learned() -> None:
    """A ``scheduled_time`` decades before the submission would teach a run time of decades:
    the next task would sleep that long before its first poll."""
    clock = RecordingClock()
    answers = Answers(clock, started_at=-1e9, ends_at=12.0)
    planner = PollPlanner()
    poll = TaskPoll("t-1", MODEL, submitted_at=0.0)
    await poll_until_done(poll, service=answers, planner=planner, clock=clock)
    learned = planner.stats.expected(MODEL)
    assert learned.known
    assert 12.0 <= learned.median <= clock.now()
