"""What a poll budget buys: slot utilisation against polls per task, over many batches.

A batch is 20 style-repaint jobs (about 15 s each) through the runner with its defaults but for
``PollPolicy.polls_per_task``, on the in-process emulator at the service's limits, in trio's
virtual time (no real time passes, so dozens of batches take about a minute). Each batch
starts from nothing learned, as a new process does: its first task runs on the registry's run
time, the next ones on what the batch has seen so far. The spread between batches (different
seeds, different run times) is the point: one lucky batch proves little. Long runs are the
same 100-job batches, where the learning is paid once.

Figures are read from the emulator's records: slot utilisation (``slot_utilisation``: held time
over makespan, the service's scheduling counted as held), every poll of the batch, the first
task's included.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import anyio
import attrs
import trio.testing

import dashscope_async as ds
from dashscope_async.testing import Emulator, EmulatorConfig

MODEL = ds.STYLE_REPAINT.name
BUDGETS = (5.0, 7.0, 8.5, 10.0)
SHAPES = ("lognormal", "uniform")


@attrs.frozen
class BudgetFigures:
    """Batches of one shape and one budget: utilisation and polls, batch by batch."""

    shape: str
    polls_per_task: float
    jobs: int
    utilisation: tuple[float, ...]
    polls: tuple[float, ...]
    lag_median: float

    @property
    def batches(self) -> int:
        return len(self.utilisation)

    def share_at_least(self, floor: float) -> float:
        return sum(u >= floor for u in self.utilisation) / self.batches


def _config(shape: str, seed: int) -> EmulatorConfig:
    config = EmulatorConfig(seed=seed, render_results=False)
    if shape == "uniform":
        return config.with_model(MODEL, run_distribution="uniform", run_jitter=0.1)
    return config


async def _batch(shape: str, seed: int, budget: float, jobs: int) -> tuple[float, float, float]:
    emulator = Emulator(_config(shape, seed))
    url = emulator.sample_image_url("portrait")
    requests = [ds.StyleRepaint(f"{url}?job={i}", style=ds.RepaintStyle.ANIME) for i in range(jobs)]
    poll = ds.PollPolicy(polls_per_task=budget)
    async with emulator.client() as client, ds.AsyncTaskRunner(client, poll=poll) as runner:
        outcomes = [outcome async for outcome in runner.map(requests)]
    if not all(outcome.ok for outcome in outcomes):
        raise RuntimeError(f"{shape} seed {seed}: a job failed")
    stats = emulator.stats
    if stats.throttled:
        raise RuntimeError(f"{shape} seed {seed}: {stats.throttled} requests were throttled")
    return (
        stats.slot_utilisation(MODEL),
        sum(stats.polls.values()) / jobs,
        statistics.median(stats.detection_lag.values()),
    )


def measure(shape: str, budget: float, *, batches: int = 12, jobs: int = 20) -> BudgetFigures:
    """``batches`` batches of ``jobs`` jobs, seeds 0, 1, ..., in virtual time."""
    used: list[float] = []
    polls: list[float] = []
    lags: list[float] = []
    for seed in range(batches):
        clock = trio.testing.MockClock(autojump_threshold=0)
        utilisation, per_task, lag = anyio.run(
            _batch, shape, seed, budget, jobs, backend="trio", backend_options={"clock": clock}
        )
        used.append(utilisation)
        polls.append(per_task)
        lags.append(lag)
    return BudgetFigures(shape, budget, jobs, tuple(used), tuple(polls), statistics.median(lags))


def run_budgets(
    budgets: Sequence[float] = BUDGETS, *, batches: int = 12, long_batches: int = 6
) -> list[BudgetFigures]:
    """Every budget on 20-job batches, and the default budget on 100-job batches."""
    figures = [measure(shape, b, batches=batches) for shape in SHAPES for b in budgets]
    default = ds.PollPolicy().polls_per_task
    figures += [measure(shape, default, batches=long_batches, jobs=100) for shape in SHAPES]
    return figures
