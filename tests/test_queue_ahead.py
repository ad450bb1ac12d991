"""Queue-ahead: tasks waiting PENDING on the service behind the running one, and its fallback.

Judged by the emulator's records (which input created which task, what ran when, what was
throttled or cancelled), in virtual time on asyncio and trio, against both of the emulator's
behaviours when a model is busy: queue the task (the service's documented way) or refuse it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import anyio
import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

import dashscope_async as ds
from dashscope_async._journal import JobState, Journal
from dashscope_async._models import TaskStatus
from dashscope_async._polling import PollPlanner, RunTimeEstimate, RunTimeStats
from dashscope_async.testing import Emulator, EmulatorConfig, Fault
from tests.virtual_time import virtual_time

REPAINT = ds.STYLE_REPAINT.name
QUEUE_AHEAD = ds.Limits.default().with_model(REPAINT, queue_ahead=1)


def repaints(emulator: Emulator, count: int) -> list[ds.StyleRepaint]:
    url = emulator.sample_image_url("portrait")
    return [ds.StyleRepaint(f"{url}?job={i}", style=ds.RepaintStyle.ANIME) for i in range(count)]


def emulator_for(
    *, run_seconds: float = 15.0, when_busy: str = "queue", uniform: bool = False, seed: int = 3
) -> Emulator:
    config = EmulatorConfig(seed=seed, render_results=False).with_model(
        REPAINT, run_seconds=run_seconds, when_busy=when_busy
    )
    if uniform:
        config = config.with_model(REPAINT, run_distribution="uniform", run_jitter=0.1)
    return Emulator(config)


def each_input_made_one_task(emulator: Emulator, requests: list[ds.StyleRepaint]) -> bool:
    return all(
        len(emulator.tasks_created_by({"image_url": r.image, "style_index": r.style_index})) == 1
        for r in requests
    )


async def run_all(
    emulator: Emulator, count: int, **options: Any
) -> tuple[list[ds.Outcome], list[ds.RunnerEvent]]:
    events: list[ds.RunnerEvent] = []
    options.setdefault("limits", QUEUE_AHEAD)
    async with (
        emulator.client() as client,
        ds.AsyncTaskRunner(client, on_event=events.append, **options) as runner,
    ):
        outcomes = [o async for o in runner.map(repaints(emulator, count))]
    return outcomes, events


# --- the settings -------------------------------------------------------------------------------


def test_queue_ahead_is_off_by_default_and_set_per_model() -> None:
    default = ds.Limits.default()
    assert default.for_model(REPAINT).queue_ahead == 0
    assert default.for_model(REPAINT).slots == 1
    assert QUEUE_AHEAD.for_model(REPAINT) == ds.ModelLimits(queue_ahead=1)
    assert QUEUE_AHEAD.for_model(REPAINT).slots == 2
    assert QUEUE_AHEAD.for_model(ds.SKETCH_TO_IMAGE.name).queue_ahead == 0
    # Changing another setting keeps it.
    assert QUEUE_AHEAD.with_model(REPAINT, submit_rate=1).for_model(REPAINT).queue_ahead == 1


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1", None])
def test_queue_ahead_must_be_a_whole_number(bad: Any) -> None:
    with pytest.raises(ds.ValidationError, match="queue_ahead"):
        ds.ModelLimits(queue_ahead=bad)


# --- a service that queues ----------------------------------------------------------------------


@virtual_time
async def test_one_task_queued_ahead_keeps_the_slot_busy_with_few_polls() -> None:
    await _keeps_the_slot_busy(emulator_for())


@virtual_time
async def test_one_task_queued_ahead_keeps_the_slot_busy_for_uniform_run_times() -> None:
    await _keeps_the_slot_busy(emulator_for(uniform=True))


async def _keeps_the_slot_busy(emulator: Emulator) -> None:
    outcomes, events = await run_all(emulator, 20)
    stats = emulator.stats
    assert all(o.ok for o in outcomes) and len(outcomes) == 20
    assert emulator.stats.slot_utilisation(REPAINT) >= 0.998
    assert sum(stats.polls.values()) / 20 <= 3
    # One running, one waiting behind it; never more, never a throttle, paced as always.
    assert stats.peak_running[REPAINT] == 1
    assert stats.peak_in_progress[REPAINT] == 2
    assert stats.throttled == 0
    assert stats.max_submits_in_any_window(REPAINT, 1.0) <= 2
    assert each_input_made_one_task(emulator, [o.request for o in outcomes])  # type: ignore[misc]
    assert not any(e.kind is ds.EventKind.QUEUE_AHEAD_OFF for e in events)


@virtual_time
async def test_short_tasks_queued_ahead_keep_the_slot_99_percent_busy() -> None:
    emulator = emulator_for(run_seconds=1.0, uniform=True)
    poll = ds.PollPolicy(run_time_priors={REPAINT: 1.0})
    outcomes, _ = await run_all(emulator, 20, poll=poll)
    assert all(o.ok for o in outcomes)
    assert emulator.stats.slot_utilisation(REPAINT) >= 0.99
    assert sum(emulator.stats.polls.values()) / 20 <= 3


@virtual_time
async def test_breaking_out_cancels_the_task_queued_ahead_on_the_service() -> None:
    emulator = emulator_for(run_seconds=30.0)
    async with (
        emulator.client() as client,
        ds.AsyncTaskRunner(client, limits=QUEUE_AHEAD) as runner,
    ):
        # Leave while the first runs and the second waits behind it.
        with anyio.move_on_after(5.0):
            async with runner.map(repaints(emulator, 6)) as outcomes:
                async for _ in outcomes:
                    pass
        at_exit = [emulator.status(task_id) for task_id in emulator.tasks]
        await anyio.sleep(120)
        assert len(emulator.tasks) == len(at_exit) == 2  # nothing more was sent
    # The running one cannot be cancelled; the one queued behind it was, while PENDING, so
    # it is never billed.
    assert at_exit == [TaskStatus.RUNNING, TaskStatus.CANCELED]
    assert emulator.stats.peak_running[REPAINT] == 1


@virtual_time
async def test_a_deadline_cancels_a_task_still_queued_ahead() -> None:
    emulator = emulator_for(run_seconds=60.0)
    poll = ds.PollPolicy(deadline=40.0)
    outcomes, _ = await run_all(emulator, 2, poll=poll)
    by_index = {o.index: o for o in outcomes}
    assert isinstance(by_index[1].error, ds.TaskTimeoutError)
    task_id = by_index[1].error.task_id
    assert task_id is not None and emulator.status(task_id) is TaskStatus.CANCELED


# --- a service that refuses ---------------------------------------------------------------------


@virtual_time
async def test_a_refused_task_turns_queue_ahead_off_and_is_retried_once() -> None:
    await _refused_then_off(15.0)


@virtual_time
async def test_a_refused_short_task_turns_queue_ahead_off_and_is_retried_once() -> None:
    await _refused_then_off(1.0)


async def _refused_then_off(run_seconds: float) -> None:
    emulator = emulator_for(run_seconds=run_seconds, when_busy="reject")
    poll = ds.PollPolicy(run_time_priors={REPAINT: run_seconds})
    outcomes, events = await run_all(emulator, 12, poll=poll)
    stats = emulator.stats
    # Every job ends once, each input made exactly one task: nothing lost, nothing doubled.
    assert sorted(o.index for o in outcomes) == list(range(12))
    assert all(o.ok for o in outcomes)
    assert stats.submissions[REPAINT] == 12
    assert each_input_made_one_task(emulator, [o.request for o in outcomes])  # type: ignore[misc]
    # The one refusal that told the runner; after it, nothing is sent while the slot is busy.
    assert stats.throttled_submits[REPAINT] == 1
    assert stats.peak_in_progress[REPAINT] == 1
    off = [e for e in events if e.kind is ds.EventKind.QUEUE_AHEAD_OFF]
    assert len(off) == 1 and off[0].model == REPAINT and off[0].error


@virtual_time
async def test_several_queued_ahead_on_several_slots() -> None:
    config = EmulatorConfig(seed=5, render_results=False).with_model(REPAINT, max_in_progress=2)
    emulator = Emulator(config)
    limits = ds.Limits.default().with_model(REPAINT, max_in_progress=2, queue_ahead=3)
    outcomes, _ = await run_all(emulator, 24, limits=limits)
    stats = emulator.stats
    assert all(o.ok for o in outcomes)
    assert stats.peak_running[REPAINT] == 2
    assert stats.peak_in_progress[REPAINT] == 5
    assert emulator.stats.slot_utilisation(REPAINT) >= 0.998
    # Each waits about as many run times as there are tasks before it: few PENDING polls.
    assert sum(stats.polls.values()) / 24 <= 3.5


@virtual_time
async def test_a_refusal_with_several_queued_ahead_costs_one_429() -> None:
    emulator = emulator_for(when_busy="reject")
    limits = ds.Limits.default().with_model(REPAINT, queue_ahead=3)
    outcomes, events = await run_all(emulator, 10, limits=limits)
    assert all(o.ok for o in outcomes)
    assert emulator.stats.submissions[REPAINT] == 10
    assert emulator.stats.throttled_submits[REPAINT] == 1
    assert [e.kind for e in events].count(ds.EventKind.QUEUE_AHEAD_OFF) == 1


@virtual_time
async def test_after_a_refusal_the_model_is_polled_closely_again() -> None:
    emulator = emulator_for(when_busy="reject")
    await run_all(emulator, 8)
    # Without queue-ahead the slot waits for the end to be noticed: the default schedule.
    assert emulator.stats.slot_utilisation(REPAINT) >= 0.98


# --- the budget, the journal and the Redis limiter -----------------------------------------------


@virtual_time
async def test_the_budget_reserves_tasks_queued_ahead() -> None:
    emulator = emulator_for()
    # Room for 3 images: a fourth job is refused, queued ahead or not.
    outcomes, _ = await run_all(emulator, 5, budget=ds.Budget(images=3))
    assert sum(o.ok for o in outcomes) == 3
    assert emulator.stats.submissions[REPAINT] == 3
    refused = [o for o in outcomes if not o.ok]
    assert all(isinstance(o.error, ds.BudgetExceededError) for o in refused)


@pytest.mark.anyio
async def test_the_journal_records_tasks_queued_ahead(tmp_path: Path) -> None:
    # Real time (the journal works in a thread), short tasks.
    emulator = Emulator(EmulatorConfig(time_scale=0.07, seed=1, render_results=False))
    poll = ds.PollPolicy(run_time_priors={REPAINT: 1.05})
    path = tmp_path / "batch.sqlite"
    with anyio.fail_after(30):
        async with (
            emulator.client() as client,
            ds.AsyncTaskRunner(client, limits=QUEUE_AHEAD, poll=poll, journal=path) as runner,
        ):
            outcomes = [o async for o in runner.map(repaints(emulator, 3))]
    assert all(o.ok for o in outcomes)
    assert emulator.stats.peak_in_progress[REPAINT] == 2
    async with await Journal.open(path) as journal:
        entries = await journal.entries()
    assert [e.state for e in entries] == [JobState.SUCCEEDED] * 3
    assert {e.task_id for e in entries} == set(emulator.tasks)


# --- the planner ---------------------------------------------------------------------------------


class KnownStats(RunTimeStats):
    """A model whose run time is known: median 10 s, log spread 0.05."""

    def expected(self, model: str) -> RunTimeEstimate:
        return RunTimeEstimate(model, 10.0, 0.05, 5)


def collecting_delay(
    since_running: float | None, polls: int = 1, runs_before_start: int = 1
) -> float:
    return PollPlanner(stats=KnownStats()).next_delay(
        REPAINT,
        since_submit=0.0 if since_running is None else since_running,
        since_running=since_running,
        status=TaskStatus.PENDING if since_running is None else TaskStatus.RUNNING,
        polls_so_far=polls,
        queued_ahead=True,
        runs_before_start=runs_before_start,
    )


def test_a_task_queued_ahead_is_polled_to_collect_its_result() -> None:
    high = 10.0 * math.exp(0.1)
    # Waiting behind a running task: first after about one run time, then every quarter.
    assert collecting_delay(None, polls=0) == 10.0
    assert collecting_delay(None, polls=1) == 2.5
    # Behind three run times of the slot: first after three.
    assert collecting_delay(None, polls=0, runs_before_start=3) == 30.0
    # Running: one sleep to the late quantile, then 10 % of the time run so far.
    assert collecting_delay(2.0) == pytest.approx(high - 2.0)
    assert collecting_delay(high) == pytest.approx(0.1 * high)


# --- under faults ---------------------------------------------------------------------------------

FAULTS = st.sampled_from(
    [
        ("submit", Fault.throttle()),
        ("submit", Fault.server_error()),
        ("submit", Fault.drop_before()),
        ("submit", Fault.drop_after()),
        ("get_task", Fault.throttle()),
        ("get_task", Fault.error(503)),
        ("get_task", Fault.drop_before()),
        ("get_task", Fault.malformed_json()),
        ("list_tasks", Fault.error(503)),
        ("cancel_task", Fault.error(503)),
    ]
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    schedule=st.lists(st.tuples(FAULTS, st.integers(1, 3)), max_size=5),
    when_busy=st.sampled_from(["queue", "reject"]),
    leave_after=st.none() | st.floats(1.0, 20.0),
    seed=st.integers(0, 2**16),
    backend=st.sampled_from(["asyncio", "trio"]),
)
def test_under_faults_every_job_ends_once_and_no_input_makes_two_tasks(
    schedule: list[tuple[tuple[str, Fault], int]],
    when_busy: str,
    leave_after: float | None,
    seed: int,
    backend: str,
) -> None:
    @virtual_time
    async def scenario() -> None:
        config = EmulatorConfig(time_scale=0.2, seed=seed, render_results=False).with_model(
            REPAINT, when_busy=when_busy
        )
        emulator = Emulator(config)
        for (route, fault), times in schedule:
            emulator.faults.script(route, fault, times=times)  # type: ignore[arg-type]
        requests = repaints(emulator, 6)
        outcomes: list[ds.Outcome] = []
        async with emulator.client(max_retries=1) as client:
            async with ds.AsyncTaskRunner(
                client, limits=QUEUE_AHEAD, reconcile_grace=0.5
            ) as runner:
                with anyio.move_on_after(math.inf if leave_after is None else leave_after):
                    async with runner.map(requests) as batch:
                        outcomes.extend([o async for o in batch])
            await anyio.sleep(30)  # anything left running ends; nothing more may be sent
        stats = emulator.stats
        if leave_after is None:
            assert sorted(o.index for o in outcomes) == list(range(len(requests)))
        assert len({o.index for o in outcomes}) == len(outcomes)
        for request in requests:
            body = {"image_url": request.image, "style_index": request.style_index}
            assert len(emulator.tasks_created_by(body)) <= 1
        assert stats.peak_running[REPAINT] <= 1
        assert stats.peak_in_progress[REPAINT] <= 2
        assert stats.max_submits_in_any_window(REPAINT, 1.0) <= 2
        for outcome in outcomes:
            if outcome.ok:
                assert outcome.task_id in emulator.tasks
            else:
                assert isinstance(outcome.error, ds.DashScopeError)
        # Nothing is left waiting on the service once the runner is gone.
        assert all(emulator.status(task_id) is not TaskStatus.PENDING for task_id in emulator.tasks)

    scenario(backend)


def test_a_first_task_is_watched_closely_even_when_queueing_ahead() -> None:
    """A guessed run time may be far off: only a known one lets the polls relax."""
    planner = PollPlanner()
    options: dict[str, Any] = {
        "since_submit": 13.0,
        "since_running": 13.0,
        "status": TaskStatus.RUNNING,
        "polls_so_far": 2,
    }
    closely = planner.next_delay(REPAINT, **options)
    assert planner.next_delay(REPAINT, queued_ahead=True, **options) == closely
    assert closely < 1.0
