"""The poll planner's schedules, the run-time estimator, and the retry delays after failed polls.

All pure arithmetic: no clock and no event loop, so every number is exact.
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashscope_async._config import SKETCH_TO_IMAGE, STYLE_REPAINT
from dashscope_async._errors import ValidationError
from dashscope_async._models import TaskStatus
from dashscope_async._poll_schedule import optimal_schedule
from dashscope_async._polling import (
    MAX_LOG_SIGMA,
    UNKNOWN_MODEL_RUN_SECONDS,
    UNKNOWN_MODEL_RUN_SPREAD,
    PollPlanner,
    PollPolicy,
    RunTimeEstimate,
    RunTimeStats,
)

REPAINT = STYLE_REPAINT.name
SDK_POLL_TIMES = (0.0, 1.0, 2.0, 4.0, 6.0, 8.0, 12.0, 16.0, 20.0, 25.0, 30.0, 35.0, 40.0)


class FixedStats(RunTimeStats):
    """A model whose run time is known: median 10 s, log spread 0.05, learned from 5 runs."""

    def expected(self, model: str) -> RunTimeEstimate:
        return RunTimeEstimate(model, 10.0, 0.05, 5)


def delay(planner: PollPlanner, t: float | None, **kwargs: Any) -> float:
    options: dict[str, Any] = {
        "since_submit": t if t is not None else 3.0,
        "since_running": t,
        "status": TaskStatus.RUNNING,
        "polls_so_far": 1,
    }
    options.update(kwargs)
    return planner.next_delay(REPAINT, **options)


# --- the policy ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("min_interval", 0.0),
        ("min_interval", -1.0),
        ("max_interval", math.nan),
        ("first_poll", -0.5),
        ("deadline", -1.0),
        ("polls_per_task", 0.0),
        ("polls_per_task", math.inf),
        ("cold_polls_per_task", -1.0),
        ("cold_probes", (0.5, 0.2)),
        ("cold_probes", (1.5,)),
        ("cold_probes", (0.0,)),
        ("error_backoff", 0.0),
    ],
)
def test_policy_rejects_impossible_settings(field: str, value: float) -> None:
    settings: dict[str, Any] = {field: value}
    with pytest.raises(ValidationError, match=field):
        PollPolicy(**settings)


def test_policy_rejects_max_interval_below_min_interval() -> None:
    with pytest.raises(ValidationError, match="max_interval"):
        PollPolicy(min_interval=2.0, max_interval=1.0)


# --- the planner: a model with a known run time -------------------------------------------------


def test_schedule_of_a_known_model() -> None:
    """One sleep to the first poll, the schedule's polls one after another, then the overrun."""
    planner = PollPlanner(stats=FixedStats())
    times = planner.schedule(REPAINT).times
    first = times[0]
    # The first poll lies in the early tail of the run time (median 10 s, 5 % spread), not at 0.
    assert 10.0 * math.exp(-3 * 0.05) <= first < 10.0
    # Before it: one sleep until it, longer than max_interval if need be.
    assert delay(planner, 0.0) == pytest.approx(first)
    assert delay(planner, 5.0) == pytest.approx(first - 5.0)
    # Within min_interval of it: the rest of the sleep, never less than min_interval.
    assert delay(planner, first - 0.01) == pytest.approx(0.04)
    # At each poll, the next one; a poll answered a little late still aims at the next.
    for here, there in itertools.pairwise(times):
        assert delay(planner, here) == pytest.approx(max(there - here, 0.04))
        assert delay(planner, here + 0.01) == pytest.approx(max(there - here - 0.01, 0.04))
    assert all(later - earlier >= 0.04 - 1e-12 for earlier, later in itertools.pairwise(times))
    # The poll just made at the first time, with the task's start since found 30 ms later:
    # the next is the second poll, not the first again.
    assert delay(planner, first - 0.03, last_planned=first) == pytest.approx(
        times[1] - first + 0.03
    )
    # Past the schedule (0.13 % of runs): 10 % of the time run so far, at most max_interval.
    assert times[-1] < 20.0
    assert delay(planner, 20.0) == pytest.approx(2.0)
    assert delay(planner, 40.0) == pytest.approx(4.0)
    assert delay(planner, 100.0) == pytest.approx(5.0)


def test_first_task_schedule_starts_from_the_registry() -> None:
    planner = PollPlanner()
    times = planner.schedule(REPAINT).times
    # One probe at a tenth of the registry's typical 15 s ...
    assert delay(planner, 0.0) == pytest.approx(1.5)
    assert delay(planner, 1.0) == pytest.approx(0.5)
    # Once it is sent (and even if the service's times start the task a little later), the
    # probe is not planned again.
    assert delay(planner, 1.44, last_planned=1.5) == pytest.approx(times[0] - 1.44)
    # ... then a sleep to the first poll of the schedule for 15 s and the registry's 8 % ...
    assert 15.0 * math.exp(-3 * 0.08) <= times[0] < 15.0
    assert delay(planner, 1.47) == pytest.approx(times[0] - 1.47)
    assert delay(planner, 5.0) == pytest.approx(times[0] - 5.0)
    # ... spending the first task's smaller budget, then 10 % of the time run so far.
    assert planner.schedule(REPAINT).expected_polls <= PollPolicy().cold_polls_per_task
    assert delay(planner, 30.0) == pytest.approx(3.0)


def test_one_observed_run_replaces_the_registry_s_schedule() -> None:
    stats = RunTimeStats()
    planner = PollPlanner(stats=stats)
    cold = planner.schedule(REPAINT)
    stats.observe(REPAINT, 5.0)
    warm = planner.schedule(REPAINT)
    assert warm.times[0] < 5.0 < warm.times[-1]
    assert cold.times[0] > 10.0
    assert warm.expected_polls <= PollPolicy().polls_per_task


def test_the_schedule_is_solved_again_less_and_less_often() -> None:
    stats = RunTimeStats()
    planner = PollPlanner(stats=stats)
    solved = []
    schedule = planner.schedule(REPAINT)
    for run in range(1, 101):
        stats.observe(REPAINT, 10.0 + (run % 7) * 0.1)
        if planner.schedule(REPAINT) is not schedule:
            schedule = planner.schedule(REPAINT)
            solved.append(run)
    assert solved[:7] == [1, 2, 3, 4, 5, 6, 7]
    assert solved[-1] > 90
    # Every 16 runs once the estimate has settled, not after every one.
    assert len(solved) < 25
    assert all(b - a <= 16 for a, b in itertools.pairwise(solved))


@pytest.mark.parametrize("now_runs", [1.0, 60.0])
def test_a_run_far_outside_the_estimate_solves_the_schedule_again_at_once(now_runs: float) -> None:
    """A model that got 15x faster (or 4x slower) is not polled by a stale plan for 16 tasks."""
    stats = RunTimeStats()
    planner = PollPlanner(stats=stats)
    for run in range(40):
        stats.observe(REPAINT, 15.0 + (run % 5) * 0.1)
    settled = planner.schedule(REPAINT)
    stats.observe(REPAINT, 15.2)  # a likely run: the cadence stands
    assert planner.schedule(REPAINT) is settled
    stats.observe(REPAINT, now_runs)
    fresh = planner.schedule(REPAINT)
    assert fresh is not settled
    estimate = stats.expected(REPAINT)
    assert fresh == optimal_schedule(
        estimate.median,
        estimate.log_sigma,
        polls=PollPolicy().polls_per_task,
        min_interval=PollPolicy().min_interval,
    )


def test_run_times_far_apart_still_give_a_finite_schedule() -> None:
    stats = RunTimeStats()
    for run in range(10):
        stats.observe(REPAINT, 1e-300 if run % 2 else 1e300)
    assert stats.expected(REPAINT).log_sigma == MAX_LOG_SIGMA
    schedule = PollPlanner(stats=stats).schedule(REPAINT)
    assert all(math.isfinite(t) for t in schedule.times)


@settings(max_examples=60, deadline=None)
@given(
    # Any run time two service timestamps can give: a microsecond to the span of a datetime.
    runs=st.lists(st.floats(1e-6, 3.2e11), max_size=12),
    elapsed=st.floats(0.0, 1e6),
    last_planned=st.none() | st.floats(0.0, 1e6),
)
def test_any_run_times_give_a_finite_wait(
    runs: list[float], elapsed: float, last_planned: float | None
) -> None:
    planner = PollPlanner()
    for seconds in runs:
        planner.stats.observe(REPAINT, seconds)
        times = planner.schedule(REPAINT).times
        assert all(math.isfinite(t) for t in times)
        assert list(times) == sorted(times)
    wait = delay(planner, elapsed, since_submit=elapsed, last_planned=last_planned)
    assert math.isfinite(wait)
    assert wait >= planner.policy.min_interval


@pytest.mark.parametrize(
    ("status", "since_running", "expected"),
    [
        (TaskStatus.SUCCEEDED, 10.0, 0.0),
        (TaskStatus.FAILED, 10.0, 0.0),
        (TaskStatus.UNKNOWN, None, 0.0),
        # Not known to run (queued behind another task): every tenth of the median run time.
        (TaskStatus.PENDING, None, 1.0),
        (TaskStatus.SUSPENDED, None, 5.0),
        (TaskStatus.SUSPENDED, 4.0, 5.0),
    ],
)
def test_schedule_by_status(
    status: TaskStatus, since_running: float | None, expected: float
) -> None:
    planner = PollPlanner(stats=FixedStats())
    assert delay(planner, since_running, status=status) == pytest.approx(expected)


def test_min_interval_bounds_the_gap_of_a_fast_model() -> None:
    stats = RunTimeStats()
    for seconds in (1.0, 1.0, 1.0):
        stats.observe(REPAINT, seconds)
    times = PollPlanner(stats=stats).schedule(REPAINT).times
    assert min(b - a for a, b in itertools.pairwise(times)) >= 0.04 - 1e-12
    finer = PollPlanner(PollPolicy(min_interval=0.001), stats=stats).schedule(REPAINT)
    assert min(b - a for a, b in zip(finer.times, finer.times[1:], strict=False)) < 0.04


def test_a_short_task_spends_at_most_half_the_account_s_polls_over_its_run() -> None:
    stats = RunTimeStats()
    for seconds in (0.6, 0.6, 0.6):
        stats.observe(REPAINT, seconds)
    free = PollPlanner(stats=stats).schedule(REPAINT)
    capped = PollPlanner(stats=stats, poll_rate=10.0).schedule(REPAINT)
    assert capped.expected_polls <= 0.5 * 10.0 * 0.6 < free.expected_polls
    # A long task is not held back: 10 polls a second is far more than it spends.
    stats.observe(SKETCH_TO_IMAGE.name, 25.0)
    assert PollPlanner(stats=stats, poll_rate=10.0).schedule(SKETCH_TO_IMAGE.name) == PollPlanner(
        stats=stats
    ).schedule(SKETCH_TO_IMAGE.name)


def test_first_poll_setting_fixes_the_first_poll_only() -> None:
    planner = PollPlanner(PollPolicy(first_poll=2.0), stats=FixedStats())
    assert delay(planner, 0.5, since_submit=0.5, polls_so_far=0) == 1.5
    assert delay(planner, 3.0, since_submit=3.0, polls_so_far=0) == 0.0
    first = planner.schedule(REPAINT).times[0]
    assert delay(planner, 2.0, since_submit=2.0, polls_so_far=1) == pytest.approx(first - 2.0)


def test_no_delay_runs_past_the_deadline() -> None:
    planner = PollPlanner(PollPolicy(deadline=8.0), stats=FixedStats())
    assert delay(planner, 0.0, since_submit=0.0) == 8.0
    assert delay(planner, 7.5, since_submit=7.5) == 0.5
    assert delay(planner, 9.0, since_submit=9.0) == 0.0
    # The deadline counts from the submission, not from the start of running.
    assert delay(planner, 1.0, since_submit=7.0) == 1.0


def simulate(planner: PollPlanner, run_seconds: float) -> tuple[int, float]:
    """Poll one task (running from t=0, ending at run_seconds) as the runner would: polls, lag."""
    t = 0.0
    polls = 0
    while True:
        t += planner.next_delay(
            REPAINT, since_submit=t, since_running=t, status=TaskStatus.RUNNING, polls_so_far=polls
        )
        polls += 1
        if t >= run_seconds:
            return polls, t - run_seconds


def simulate_sdk(run_seconds: float) -> tuple[int, float]:
    for polls, t in enumerate(SDK_POLL_TIMES, start=1):
        if t >= run_seconds:
            return polls, t - run_seconds
    raise AssertionError("run longer than the ladder")


def test_learned_schedule_beats_the_sdk_ladder_on_polls_and_lag() -> None:
    """15 s tasks with a 5 % spread: fewer polls than the SDK, and the end noticed sooner."""
    rng = random.Random(7)
    stats = RunTimeStats()
    planner = PollPlanner(stats=stats)
    runs = [15.0 * math.exp(rng.gauss(0.0, 0.05)) for _ in range(60)]
    ours: list[tuple[int, float]] = []
    for index, run in enumerate(runs):
        result = simulate(planner, run)
        if index >= 10:  # after the model's run time is learned
            ours.append(result)
        stats.observe(REPAINT, run)
    sdk = [simulate_sdk(run) for run in runs[10:]]
    mean_polls = sum(p for p, _ in ours) / len(ours)
    mean_lag = sum(lag for _, lag in ours) / len(ours)
    assert mean_polls < 7.0 < sum(p for p, _ in sdk) / len(sdk)
    # About 1 % of the run time, against the SDK's seconds.
    assert mean_lag < 0.2
    assert mean_lag * 5 < sum(lag for _, lag in sdk) / len(sdk)
    assert max(lag for _, lag in ours) < 1.0


def test_fast_tasks_are_noticed_within_min_interval() -> None:
    """1.5 s tasks (time_scale 0.1): the gap is min_interval near the end, a handful of polls."""
    rng = random.Random(3)
    stats = RunTimeStats()
    planner = PollPlanner(stats=stats)
    results = []
    for index in range(40):
        run = 1.5 * math.exp(rng.gauss(0.0, 0.05))
        polls, lag = simulate(planner, run)
        if index >= 5:
            results.append((polls, lag))
        stats.observe(REPAINT, run)
    assert max(lag for _, lag in results) <= 0.08
    assert sum(lag for _, lag in results) / len(results) < 0.03
    assert max(polls for polls, _ in results) <= 10


@pytest.mark.parametrize("shape", ["lognormal 5 %", "uniform 10 %"])
def test_short_tasks_are_watched_densely_within_the_poll_budget(shape: str) -> None:
    """1 s tasks: noticed about 20 ms late (2 % of the slot) with fewer than 10 polls a second."""
    rng = random.Random(17)
    stats = RunTimeStats()
    planner = PollPlanner(stats=stats)
    results = []
    for index in range(60):
        run = (
            math.exp(rng.gauss(0.0, 0.05))
            if shape.startswith("lognormal")
            else rng.uniform(0.9, 1.1)
        )
        polls, lag = simulate(planner, run)
        if index >= 3:
            results.append((polls, lag, run))
        stats.observe(REPAINT, run)
    assert sum(lag for _, lag, _ in results) / len(results) <= 0.025
    assert max(lag for _, lag, _ in results) <= 0.08
    # One slot, one task at a time: the polls of one task are the account's polls per second.
    assert sum(polls for polls, _, _ in results) / sum(run for _, _, run in results) < 10
    assert max(polls for polls, _, _ in results) <= 9


def emulated_runs(shape: str, count: int, seed: int) -> list[float]:
    """Run times of the emulator's default repaint task (15 s) in one of its shapes."""
    rng = random.Random(seed)
    if shape == "lognormal 5 %":
        return [15.0 * math.exp(rng.gauss(0.0, 0.05)) for _ in range(count)]
    return [15.0 * rng.uniform(0.9, 1.1) for _ in range(count)]


@pytest.mark.parametrize("shape", ["lognormal 5 %", "uniform 10 %"])
def test_a_first_task_costs_at_most_10_polls_and_half_a_second(shape: str) -> None:
    """Nothing learned yet: the registry's 15 s and 8 % spread make the first task cheap."""
    results = [simulate(PollPlanner(), run) for run in emulated_runs(shape, 400, seed=5)]
    polls = sorted(p for p, _ in results)
    lags = sorted(lag for _, lag in results)
    p95 = int(0.95 * len(results))
    assert sum(polls) / len(polls) <= 7
    assert polls[p95] <= 10
    assert sum(lags) / len(lags) <= 0.3
    assert lags[p95] <= 0.5


@pytest.mark.parametrize(
    ("run_seconds", "noticed_by"),
    [
        # Far faster than the registry says: noticed by the probe at 1.5 s ...
        (0.03, 1.5),
        (1.4, 1.5),
        # ... or at the first poll of the registry's schedule (13.73 s).
        (3.0, 13.74),
        # Far slower: within 10 % of its run time.
        (40.0, 44.0),
        (120.0, 132.0),
    ],
)
def test_a_first_task_far_from_the_registry_is_still_noticed(
    run_seconds: float, noticed_by: float
) -> None:
    polls, lag = simulate(PollPlanner(), run_seconds)
    assert run_seconds + lag <= noticed_by
    assert polls <= 50


def test_overrun_backs_off() -> None:
    planner = PollPlanner(stats=FixedStats())
    gaps = [delay(planner, t) for t in (11.0, 12.0, 16.0, 25.0, 49.0)]
    assert gaps == sorted(gaps)
    assert gaps[-1] == 4.9


# --- retries after failed polls -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "retry_after", "expected"),
    [
        (1, None, 0.5),
        (2, None, 1.0),
        (3, None, 2.0),
        (5, None, 8.0),
        (50, None, 8.0),
        (10_000, None, 8.0),
        (1, 3.0, 3.0),
        (4, 0.25, 0.25),
        (2, 0.0, 0.04),  # never more often than min_interval
        (2, -1.0, 0.04),
        (2, math.nan, 1.0),
    ],
)
def test_after_error_honours_retry_after_else_backs_off(
    attempt: int, retry_after: float | None, expected: float
) -> None:
    assert PollPlanner().after_error(attempt, retry_after) == expected


# --- the run-time estimator ---------------------------------------------------------------------


def test_prior_comes_from_the_registry_then_from_priors() -> None:
    stats = RunTimeStats(priors={SKETCH_TO_IMAGE.name: 2.5})
    assert stats.expected(REPAINT) == RunTimeEstimate(REPAINT, 15.0, 0.08, 0)
    assert stats.expected("some-new-model").log_sigma == UNKNOWN_MODEL_RUN_SPREAD
    assert RunTimeStats(cold_log_sigma=0.3).expected(REPAINT).log_sigma == 0.3
    assert stats.expected(SKETCH_TO_IMAGE.name).median == 2.5
    assert stats.expected("some-new-model").median == UNKNOWN_MODEL_RUN_SECONDS
    assert not stats.expected(REPAINT).known


def test_priors_must_be_run_times() -> None:
    with pytest.raises(ValidationError, match="priors"):
        RunTimeStats(priors={REPAINT: 0.0})


def test_one_observation_replaces_the_prior_median() -> None:
    stats = RunTimeStats()
    stats.observe(REPAINT, 1.6)
    estimate = stats.expected(REPAINT)
    assert estimate.median == pytest.approx(1.6)
    # One run says nothing about the spread: the prior spread stands.
    assert estimate.log_sigma == pytest.approx(0.1)
    assert estimate.known
    assert stats.expected(SKETCH_TO_IMAGE.name).observations == 0


def test_estimator_converges_to_the_true_distribution() -> None:
    rng = random.Random(11)
    stats = RunTimeStats()
    for _ in range(200):
        stats.observe(REPAINT, 15.0 * math.exp(rng.gauss(0.0, 0.05)))
    estimate = stats.expected(REPAINT)
    assert estimate.observations == 64  # the window
    assert estimate.median == pytest.approx(15.0, rel=0.03)
    assert estimate.log_sigma == pytest.approx(0.05, rel=0.25)
    assert estimate.low == pytest.approx(15.0 * math.exp(-0.1), rel=0.05)
    assert estimate.high == pytest.approx(15.0 * math.exp(0.1), rel=0.05)


def test_estimator_follows_a_change_in_run_time() -> None:
    stats = RunTimeStats(window=8)
    for _ in range(8):
        stats.observe(REPAINT, 15.0)
    for _ in range(8):
        stats.observe(REPAINT, 30.0)
    assert stats.expected(REPAINT).median == pytest.approx(30.0)


@pytest.mark.parametrize("now_runs", [1.0, 60.0])
def test_estimator_starts_again_when_the_run_time_changes(now_runs: float) -> None:
    """Two runs in a row far outside the estimate replace the window: a model that became 15x
    faster is not planned for from 64 stale run times (a geometric mean near 15 s for dozens
    of tasks)."""
    stats = RunTimeStats()
    for run in range(40):
        stats.observe(REPAINT, 15.0 + (run % 5) * 0.1)
    stats.observe(REPAINT, now_runs)
    assert stats.observations(REPAINT) == 41  # one outlier is just that
    stats.observe(REPAINT, now_runs * 1.02)
    estimate = stats.expected(REPAINT)
    assert estimate.observations == 2
    assert estimate.median == pytest.approx(now_runs * math.sqrt(1.02))


def test_outliers_on_both_sides_or_apart_keep_the_window() -> None:
    stats = RunTimeStats()
    for run in range(40):
        stats.observe(REPAINT, 15.0 + (run % 5) * 0.1)
    for seconds in (60.0, 1.0, 15.1, 60.0, 15.2, 1.0):
        stats.observe(REPAINT, seconds)
    assert stats.observations(REPAINT) == 46


def test_spread_shrinks_from_the_prior_as_runs_agree() -> None:
    stats = RunTimeStats()
    sigmas = []
    for seconds in (15.0, 15.5, 14.6, 15.2, 14.9, 15.1):
        stats.observe(REPAINT, seconds)
        sigmas.append(stats.expected(REPAINT).log_sigma)
    assert sigmas[0] == pytest.approx(0.1)
    assert sigmas[-1] < sigmas[1] < sigmas[0]
    assert sigmas[-1] >= stats.min_log_sigma


@pytest.mark.parametrize("bad", [0.0, -3.0, math.inf, math.nan])
def test_impossible_run_times_are_ignored(bad: float) -> None:
    stats = RunTimeStats()
    stats.observe(REPAINT, bad)
    assert stats.observations(REPAINT) == 0
    assert not stats.expected(REPAINT).known


def test_estimate_is_recomputed_only_after_a_new_observation() -> None:
    stats = RunTimeStats()
    stats.observe(REPAINT, 10.0)
    first = stats.expected(REPAINT)
    assert stats.expected(REPAINT) is first
    stats.observe(REPAINT, 12.0)
    assert stats.expected(REPAINT) is not first
    assert stats.expected(REPAINT).median == pytest.approx(math.sqrt(120.0))


def test_policy_priors_seed_the_planner() -> None:
    policy = PollPolicy(run_time_priors={REPAINT: 1.5})
    planner = PollPlanner(policy)
    assert planner.stats.expected(REPAINT).median == 1.5
    assert planner.stats.expected(SKETCH_TO_IMAGE.name).median == 25.0
    assert policy == PollPolicy(run_time_priors={REPAINT: 1.5})
    hash(policy)
    with pytest.raises(ValidationError, match="priors"):
        PollPolicy(run_time_priors={REPAINT: -1.0})
    # Seeded near the truth, the first task is noticed much sooner than from the registry's 15 s.
    _, seeded_lag = simulate(planner, 1.55)
    _, registry_lag = simulate(PollPlanner(), 1.55)
    assert seeded_lag < 0.1 < registry_lag
