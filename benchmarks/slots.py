"""Slot utilisation, polls per task and detection lag: our runner against the official SDK's way.

Both run the same jobs against their own emulator server (the same seed, so the same run times),
side by side, over loopback HTTP at the service's real limits (2 submissions/s, 1 in progress).
The official SDK's natural one-task-at-a-time use is ``await BaseAsyncAioApi.call(...)`` in a
loop: submit, then its fixed 1, 1, 2, 2, 2, 4, ... s polling ladder, then the next job.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import anyio
import attrs

import dashscope_async as ds
from dashscope_async.testing import Emulator, EmulatorConfig, RunningServer

MODEL = ds.STYLE_REPAINT.name


@attrs.frozen
class SlotFigures:
    """What one client achieved on one emulator."""

    client: str
    time_scale: float
    jobs: int
    makespan: float
    utilisation: float
    polls_per_task: float
    polls_p95: float
    lag_median: float
    lag_p95: float
    throttled: int
    peak_in_progress: int
    max_submits_per_second: int
    lags: tuple[float, ...] = ()


def _quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def figures(client: str, emulator: Emulator, time_scale: float, jobs: int) -> SlotFigures:
    stats = emulator.stats
    polls = [float(count) for count in stats.polls.values()]
    lags = list(stats.detection_lag.values())
    return SlotFigures(
        client=client,
        time_scale=time_scale,
        jobs=jobs,
        makespan=stats.makespan(MODEL),
        utilisation=stats.utilisation(MODEL),
        polls_per_task=statistics.fmean(polls) if polls else float("nan"),
        polls_p95=_quantile(polls, 0.95),
        lag_median=statistics.median(lags) if lags else float("nan"),
        lag_p95=_quantile(lags, 0.95),
        throttled=stats.throttled_submits[MODEL] + stats.throttled_task_requests,
        peak_in_progress=stats.peak_in_progress[MODEL],
        max_submits_per_second=stats.max_submits_in_any_window(MODEL, 1.0),
        lags=tuple(lags),
    )


def emulator_for(time_scale: float) -> Emulator:
    return Emulator(EmulatorConfig(time_scale=time_scale, seed=11, render_results=False))


def requests_for(emulator: Emulator, jobs: int) -> list[ds.StyleRepaint]:
    url = emulator.sample_image_url("portrait")
    return [
        ds.StyleRepaint(f"{url}?job={i}", style=ds.RepaintStyle.CLAY_WORLD) for i in range(jobs)
    ]


async def run_ours(server: RunningServer, requests: list[ds.StyleRepaint]) -> None:
    async with (
        ds.AsyncDashScope(api_key=server.api_key, base_url=server.base_url) as client,
        ds.AsyncTaskRunner(client) as runner,
    ):
        async for outcome in runner.map(requests):
            if not outcome.ok:
                raise RuntimeError(f"job {outcome.index} failed: {outcome.error}")


async def run_official_sdk(server: RunningServer, requests: list[ds.StyleRepaint]) -> None:
    import dashscope
    from dashscope.client.base_api import BaseAsyncAioApi

    dashscope.base_http_api_url = server.base_url
    for request in requests:
        response: Any = await BaseAsyncAioApi.call(
            model=MODEL,
            input={"image_url": request.image, "style_index": request.style_index},
            task_group="aigc",
            task="image-generation",
            function="generation",
            api_key=server.api_key,
        )
        if response.status_code != 200 or response.output["task_status"] != "SUCCEEDED":
            raise RuntimeError(f"the official SDK's job failed: {response}")
    # The SDK's stub declares this synchronous; it is a coroutine function.
    await dashscope.close_shared_aio_session()  # type: ignore[func-returns-value,misc]


async def measure(time_scale: float, jobs: int) -> tuple[SlotFigures, SlotFigures]:
    """Run ours and the official SDK's way side by side, each on its own emulator server."""
    ours, theirs = emulator_for(time_scale), emulator_for(time_scale)
    async with ours.serve() as our_server, theirs.serve() as their_server:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_ours, our_server, requests_for(ours, jobs))
            tg.start_soon(run_official_sdk, their_server, requests_for(theirs, jobs))
    return (
        figures("dashscope_async", ours, time_scale, jobs),
        figures("official SDK", theirs, time_scale, jobs),
    )
