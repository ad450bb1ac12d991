"""The optimal poll schedule: exact against brute force, honest about its own expectations,
and better than evenly spaced polls for the same number of polls."""

from __future__ import annotations

import bisect
import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashscope_async._poll_schedule import PollSchedule, _Grid, optimal_schedule


def cost_of(grid: _Grid, picked: list[int], price: float) -> float:
    """Expected lag plus price per poll sent, for polls at grid indices ``picked``."""
    total = 0.0
    previous = 0
    for index in picked:
        alive = 1.0 if previous == 0 else grid.survival[previous]
        total += price * alive
        total += grid.times[index] * (grid.mass[index] - grid.mass[previous])
        total -= grid.moment[index] - grid.moment[previous]
        previous = index
    return total


@settings(max_examples=40, deadline=None)
@given(
    sigma=st.floats(0.02, 0.3),
    price_fraction=st.floats(1e-4, 0.2),
    gap=st.sampled_from([0.0, 0.04, 0.3]),
)
def test_the_solution_is_the_cheapest_of_every_possible_schedule(
    sigma: float, price_fraction: float, gap: float
) -> None:
    grid = _Grid.lognormal(10.0, sigma, points=9)
    price = price_fraction * 10.0
    solved = grid.solve(price, gap)
    picked = [grid.times.index(t) for t in solved.times]
    best = math.inf
    last = len(grid.times) - 1
    for size in range(len(grid.times) - 1):
        for middle in itertools.combinations(range(1, last), size):
            indices = [*middle, last]
            if any(grid.times[b] - grid.times[a] < gap for a, b in itertools.pairwise(indices)):
                continue
            best = min(best, cost_of(grid, indices, price))
    assert cost_of(grid, picked, price) <= best + 1e-9
    assert solved.expected_lag + price * solved.expected_polls == pytest.approx(
        cost_of(grid, picked, price), abs=1e-9
    )


def simulate(schedule: PollSchedule, ends: list[float]) -> tuple[float, float]:
    polls = lags = 0.0
    for end in ends:
        index = bisect.bisect_left(schedule.times, end)
        assert index < len(schedule.times), "every sampled end lies inside the grid"
        polls += index + 1
        lags += schedule.times[index] - end
    return polls / len(ends), lags / len(ends)


@pytest.mark.parametrize(("median", "sigma"), [(15.0, 0.05), (15.0, 0.08), (1.0, 0.06)])
def test_the_expected_polls_and_lag_are_what_runs_of_that_spread_get(
    median: float, sigma: float
) -> None:
    schedule = optimal_schedule(median, sigma, polls=6.5, min_interval=0.04)
    rng = random.Random(1)
    ends = [median * math.exp(max(min(rng.gauss(0, sigma), 2.99 * sigma), -2.99 * sigma))]
    ends += [median * math.exp(min(rng.gauss(0, sigma), 2.99 * sigma)) for _ in range(20_000)]
    polls, lag = simulate(schedule, ends)
    assert polls == pytest.approx(schedule.expected_polls, rel=0.03)
    assert lag == pytest.approx(schedule.expected_lag, rel=0.05)
    assert schedule.expected_polls <= 6.5


def test_more_polls_buy_less_lag_and_the_budget_is_kept() -> None:
    lags = []
    for budget in (2.0, 3.0, 4.0, 6.0, 8.0, 12.0):
        schedule = optimal_schedule(15.0, 0.05, polls=budget, min_interval=0.04)
        assert schedule.expected_polls <= budget + 1e-9
        lags.append(schedule.expected_lag)
    assert lags == sorted(lags, reverse=True)
    assert lags[-1] < 0.1 < 0.3 < lags[0]
    # Below what any schedule spends: the most frugal one (one poll, and one more for the
    # latest ends).
    assert optimal_schedule(15.0, 0.05, polls=0.5, min_interval=0.04).expected_polls < 1.1


def test_a_budget_no_poll_is_worth_is_not_spent() -> None:
    # Twenty polls a task would save less than a millionth of the run time each: not sent.
    schedule = optimal_schedule(15.0, 0.001, polls=1000.0, min_interval=0.04)
    assert schedule.expected_polls < 10


@pytest.mark.parametrize("shape", ["lognormal 5 %", "uniform 10 %"])
def test_the_schedule_beats_evenly_spaced_polls_for_as_many_polls(shape: str) -> None:
    rng = random.Random(4)
    if shape.startswith("lognormal"):
        ends = [15.0 * math.exp(rng.gauss(0, 0.05)) for _ in range(20_000)]
        sigma = 0.05
    else:
        ends = [15.0 * rng.uniform(0.9, 1.1) for _ in range(20_000)]
        sigma = 0.2 / math.sqrt(12)  # the spread a lognormal fit of those runs finds
    schedule = optimal_schedule(15.0, sigma, polls=6.5, min_interval=0.04)
    ours = simulate(schedule, [min(end, schedule.times[-1]) for end in ends])
    # Evenly spaced from the earliest end to the latest (which no poller knows in advance),
    # with at least as many polls: far behind for lognormal run times, at best level with
    # the schedule for uniform ones (where even spacing over the exact range is the best).
    start, stop = min(ends), max(ends)
    for count in range(2, 60):
        even = PollSchedule(
            tuple(start + (stop - start) * k / count for k in range(1, count + 1)), 0.0, 0.0
        )
        polls, lag = simulate(even, ends)
        if polls >= ours[0]:
            break
    assert ours[0] <= polls
    assert ours[1] < (0.85 if shape.startswith("lognormal") else 1.0) * lag


@settings(max_examples=60, deadline=None)
@given(
    median=st.floats(1e-3, 1e5),
    sigma=st.floats(1e-4, 2.0),
    budget=st.floats(0.1, 100.0),
    gap=st.floats(1e-4, 10.0),
)
def test_any_estimate_gives_a_usable_schedule(
    median: float, sigma: float, budget: float, gap: float
) -> None:
    schedule = optimal_schedule(median, sigma, polls=budget, min_interval=gap)
    times = schedule.times
    assert times
    assert all(math.isfinite(t) and t > 0 for t in times)
    assert all(later - earlier >= gap * (1 - 1e-9) for earlier, later in itertools.pairwise(times))
    assert math.isfinite(schedule.expected_lag)
    assert schedule.expected_lag >= 0
    frugal = optimal_schedule(median, sigma, polls=0.0, min_interval=gap).expected_polls
    assert 1.0 <= schedule.expected_polls <= max(budget, frugal) + 1e-9
