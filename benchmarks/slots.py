"""Slot utilisation, polls per task and detection lag: every client side by side, in one run.

Each client (``benchmarks.peers``) pushes the same jobs through its own emulator server, all of
them built from one configuration and one seed (so the k-th task of every client runs equally
long), concurrently in one process, over loopback HTTP at the service's real limits
(2 submissions/s, 1 task in progress). The emulators record every submission, poll, start and
end; the figures are read from those records, never from what a client believes it did.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AsyncExitStack
from typing import Any

import anyio
import attrs

import dashscope_async as ds
from benchmarks.peers import MODEL, PeerSpec, close_sdk_session, peers
from dashscope_async.testing import Emulator, EmulatorConfig, RunningServer

#: Every scenario ends within this many seconds of its expected length, or fails.
SLACK_SECONDS = 120.0


@attrs.frozen
class Scenario:
    """Jobs of one run-time shape, run through every client side by side.

    Attributes:
        name: how the table names it.
        run_seconds: the tasks' mean run time, after the time scale.
        time_scale: the emulator's time scale (1: real run times).
        distribution: ``"lognormal"`` (5 % spread) or ``"uniform"`` (±10 %).
        jobs: how many jobs each client runs.
        told_run_time: our runner is given the emulator's run time as a prior; the registry's
            run time is the real service's, which a scaled emulator does not keep.
    """

    name: str
    run_seconds: float
    time_scale: float
    distribution: str
    jobs: int = 20
    told_run_time: bool = False

    def config(self) -> EmulatorConfig:
        behaviour: dict[str, object] = {"run_seconds": self.run_seconds / self.time_scale}
        if self.distribution == "uniform":
            behaviour |= {"run_distribution": "uniform", "run_jitter": 0.1}
        return EmulatorConfig(time_scale=self.time_scale, seed=11, render_results=False).with_model(
            MODEL, **behaviour
        )

    def priors(self) -> dict[str, float] | None:
        return {MODEL: self.run_seconds} if self.told_run_time else None

    @property
    def bound_seconds(self) -> float:
        """The longest the slowest client may take: twice sequential, plus slack."""
        return 2 * self.jobs * (self.run_seconds + 5.0) + SLACK_SECONDS


@attrs.frozen
class SlotFigures:
    """What one client achieved on its emulator."""

    client: str
    scenario: str
    jobs: int
    succeeded: int
    makespan: float
    utilisation: float
    polls_per_task: float
    polls_p95: float
    first_task_polls: int
    first_task_lag: float
    lag_median: float
    lag_p95: float
    throttled: int
    peak_in_progress: int
    max_submits_per_second: int
    ours: bool = False
    lags: tuple[float, ...] = ()


def _quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def figures(peer: PeerSpec, scenario: Scenario, emulator: Emulator, succeeded: int) -> SlotFigures:
    stats = emulator.stats
    polls = [float(count) for count in stats.polls.values()]
    lags = list(stats.detection_lag.values())
    first_task = min(emulator.tasks.values(), key=lambda task: task.submitted_at, default=None)
    first_id = first_task.task_id if first_task is not None else ""
    return SlotFigures(
        client=peer.name,
        scenario=scenario.name,
        jobs=scenario.jobs,
        succeeded=succeeded,
        makespan=stats.makespan(MODEL),
        utilisation=stats.slot_utilisation(MODEL),
        polls_per_task=statistics.fmean(polls) if polls else float("nan"),
        polls_p95=_quantile(polls, 0.95),
        first_task_polls=stats.polls.get(first_id, 0),
        first_task_lag=stats.detection_lag.get(first_id, float("nan")),
        lag_median=statistics.median(lags) if lags else float("nan"),
        lag_p95=_quantile(lags, 0.95),
        throttled=stats.throttled_submits[MODEL] + stats.throttled_task_requests,
        peak_in_progress=stats.peak_in_progress[MODEL],
        max_submits_per_second=stats.max_submits_in_any_window(MODEL, 1.0),
        ours=peer.ours,
        lags=tuple(lags),
    )


def requests_for(emulator: Emulator, jobs: int) -> list[ds.StyleRepaint]:
    url = emulator.sample_image_url("portrait")
    return [
        ds.StyleRepaint(f"{url}?job={i}", style=ds.RepaintStyle.CLAY_WORLD) for i in range(jobs)
    ]


async def measure(scenario: Scenario, *, queue_ahead: bool = False) -> list[SlotFigures]:
    """Run every client side by side, each on its own emulator server, and read the records."""
    specs = peers(priors=scenario.priors(), queue_ahead=queue_ahead)
    emulators = [Emulator(scenario.config()) for _ in specs]
    succeeded = [0] * len(specs)

    async def run(index: int, server: RunningServer) -> None:
        requests = requests_for(emulators[index], scenario.jobs)
        succeeded[index] = await specs[index].run(server, requests)

    with anyio.fail_after(scenario.bound_seconds):
        await _serve_all(emulators, run)
    await close_sdk_session()
    return [
        figures(spec, scenario, emulator, done)
        for spec, emulator, done in zip(specs, emulators, succeeded, strict=True)
    ]


async def _serve_all(
    emulators: list[Emulator], run: Callable[[int, RunningServer], Coroutine[Any, Any, None]]
) -> None:
    async with AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(e.serve()) for e in emulators]
        async with anyio.create_task_group() as tg:
            for index, server in enumerate(servers):
                tg.start_soon(run, index, server)
