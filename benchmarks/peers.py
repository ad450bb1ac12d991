"""The clients compared, each a coroutine that pushes the same jobs through one emulator server.

Each peer is written the way its users would write it, at the service's real limits:

- the official SDK's natural loop: ``await BaseAsyncAioApi.call(...)`` one job after another
  (submit, then its fixed 1, 1, 2, 2, 2, 4, ... s polling ladder);
- the official SDK under ``asyncio.gather``: every job at once, as an asyncio user might try
  first; the SDK does not retry a throttled submit, so only some of them succeed;
- httpx with aiometer: ``aiometer.run_on_each(job, jobs, max_at_once=1, max_per_second=2)``,
  each job a POST and then a GET every ``interval`` seconds (1 s, or the 3 s the docs suggest);
  a faithful do-it-yourself client;
- ours: ``AsyncTaskRunner.map`` with its defaults (and ``queue_ahead`` when asked).

A peer returns how many of its jobs succeeded; the emulator records everything else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import attrs
import httpx

import dashscope_async as ds
from dashscope_async.testing import RunningServer

MODEL = ds.STYLE_REPAINT.name
SUBMIT_PATH = ds.STYLE_REPAINT.submit_path
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN"}

Peer = Callable[[RunningServer, list[ds.StyleRepaint]], Awaitable[int]]


@attrs.frozen
class PeerSpec:
    """One client of the comparison: a name, how to run it, and whether it is ours."""

    name: str
    run: Peer
    ours: bool = False


def _sdk_input(request: ds.StyleRepaint) -> dict[str, Any]:
    return {"image_url": request.image, "style_index": request.style_index}


async def _sdk_call(server: RunningServer, request: ds.StyleRepaint) -> bool:
    from dashscope.client.base_api import BaseAsyncAioApi

    response: Any = await BaseAsyncAioApi.call(
        model=MODEL,
        input=_sdk_input(request),
        task_group="aigc",
        task="image-generation",
        function="generation",
        api_key=server.api_key,
        base_address=server.base_url,
    )
    return bool(response.status_code == 200 and response.output["task_status"] == "SUCCEEDED")


async def close_sdk_session() -> None:
    """Close the official SDK's shared aiohttp session (once, after every SDK peer ended)."""
    import dashscope

    # The SDK's stub declares this synchronous; it is a coroutine function.
    await dashscope.close_shared_aio_session()  # type: ignore[func-returns-value,misc]


async def official_sdk_loop(server: RunningServer, requests: list[ds.StyleRepaint]) -> int:
    """The official SDK's natural use: one ``call`` after another."""
    done = 0
    for request in requests:
        done += await _sdk_call(server, request)
    return done


async def official_sdk_gather(server: RunningServer, requests: list[ds.StyleRepaint]) -> int:
    """Every job at once through the official SDK, under ``asyncio.gather``."""
    import asyncio

    results = await asyncio.gather(
        *(_sdk_call(server, request) for request in requests), return_exceptions=True
    )
    return sum(result is True for result in results)


def aiometer_peer(interval: float) -> Peer:
    """httpx + aiometer: one job at once, 2 submissions/s, a poll every ``interval`` seconds."""

    async def run(server: RunningServer, requests: list[ds.StyleRepaint]) -> int:
        import aiometer

        done = 0
        headers = {"Authorization": f"Bearer {server.api_key}", "X-DashScope-Async": "enable"}
        async with httpx.AsyncClient(base_url=server.base_url, headers=headers) as http:

            async def job(request: ds.StyleRepaint) -> None:
                nonlocal done
                body = {"model": MODEL, "input": _sdk_input(request)}
                submitted = await http.post(SUBMIT_PATH.lstrip("/"), json=body)
                if submitted.status_code != 200:
                    return
                task_id = submitted.json()["output"]["task_id"]
                while True:
                    await anyio.sleep(interval)
                    answer = await http.get(f"tasks/{task_id}")
                    status = answer.json()["output"]["task_status"]
                    if status in TERMINAL:
                        done += status == "SUCCEEDED"
                        return

            await aiometer.run_on_each(job, requests, max_at_once=1, max_per_second=2)
        return done

    return run


def ours(*, queue_ahead: int | None = None, priors: dict[str, float] | None = None) -> Peer:
    """Our runner with its defaults, optionally queueing ahead or told the run time."""

    async def run(server: RunningServer, requests: list[ds.StyleRepaint]) -> int:
        limits = ds.Limits.default()
        if queue_ahead is not None:
            limits = limits.with_model(MODEL, queue_ahead=queue_ahead)
        poll = ds.PollPolicy(run_time_priors=priors or {})
        done = 0
        async with (
            ds.AsyncDashScope(api_key=server.api_key, base_url=server.base_url) as client,
            ds.AsyncTaskRunner(client, limits=limits, poll=poll) as runner,
        ):
            async for outcome in runner.map(requests):
                done += outcome.ok
        return done

    return run


def peers(*, priors: dict[str, float] | None, queue_ahead: bool) -> list[PeerSpec]:
    """Every client of the comparison, in table order."""
    specs = [
        PeerSpec("official SDK, loop", official_sdk_loop),
        PeerSpec("official SDK, gather", official_sdk_gather),
        PeerSpec("httpx + aiometer, 3 s polls", aiometer_peer(3.0)),
        PeerSpec("httpx + aiometer, 1 s polls", aiometer_peer(1.0)),
        PeerSpec("dashscope_async", ours(priors=priors), ours=True),
    ]
    if queue_ahead:
        specs.append(
            PeerSpec("dashscope_async, queue_ahead=1", ours(priors=priors, queue_ahead=1), True)
        )
    return specs
