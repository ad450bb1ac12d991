"""A runner sharing a ``RedisLimiter`` rides out a Redis blip, and stops cleanly when Redis is gone.

Against a real ``redis-server`` (append-only, so a restart keeps the shared state) that the tests
stop and start again, and the in-process emulator at a small time scale, in real time (Redis's
clock cannot be moved). Judged by what the emulator recorded: which input created which task,
when submits arrived, how many tasks ran at once. redis-py is asyncio-only, so these run on
asyncio.
"""

from __future__ import annotations

import time
import uuid

import anyio
import httpx
import pytest

import dashscope_async as ds
from dashscope_async.redis import RedisLimiter
from dashscope_async.testing import Emulator, EmulatorConfig, Fault
from tests.redis_server import RedisServer, redis_server

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

REPAINT = ds.STYLE_REPAINT.name
JOBS = 6


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def quick_emulator() -> Emulator:
    # A 15 s repaint runs 0.6 s here: a batch of six spans a few seconds.
    return Emulator(EmulatorConfig(time_scale=0.04, seed=11, render_results=False))


def jobs(emulator: Emulator) -> list[ds.StyleRepaint]:
    url = emulator.sample_image_url("portrait")
    return [ds.StyleRepaint(f"{url}?job={i}", style=ds.RepaintStyle.ANIME) for i in range(JOBS)]


def tasks_per_input(emulator: Emulator) -> list[int]:
    return [
        len(emulator.tasks_created_by(emulator.input_of(task_id))) for task_id in emulator.tasks
    ]


def limiter_for(server: RedisServer, **options: float) -> RedisLimiter:
    return RedisLimiter(
        server.url,
        namespace=f"blip-{uuid.uuid4().hex[:8]}",
        lease_ttl=30.0,
        **options,  # type: ignore[arg-type]
    )


async def stop_after_submits(emulator: Emulator, server: RedisServer, submits: int) -> float:
    """Stop Redis once the emulator has accepted ``submits`` submits; return when (loop time)."""
    while sum(emulator.stats.submissions.values()) < submits:  # noqa: ASYNC110 - no event to wait on
        await anyio.sleep(0.01)
    server.stop()
    return anyio.current_time()


async def test_a_redis_blip_mid_batch_is_ridden_out_with_nothing_doubled() -> None:
    emulator = quick_emulator()
    with redis_server(appendonly=True) as server:
        limiter = limiter_for(server, outage_grace=30.0)
        outcomes: list[ds.Outcome] = []
        down_at = up_at = 0.0
        with anyio.fail_after(60):
            async with (
                limiter,
                emulator.client() as client,
                ds.AsyncTaskRunner(client, limiter=limiter) as runner,
                anyio.create_task_group() as group,
            ):

                async def blip() -> None:
                    nonlocal down_at, up_at
                    down_at = await stop_after_submits(emulator, server, 2)
                    await anyio.sleep(4.0)
                    up_at = anyio.current_time()
                    server.start()

                group.start_soon(blip)
                outcomes = [outcome async for outcome in runner.map(jobs(emulator))]
    assert len(outcomes) == JOBS
    assert all(outcome.ok for outcome in outcomes), [o.error for o in outcomes if not o.ok]
    stats = emulator.stats
    assert stats.submissions[REPAINT] == JOBS
    assert stats.total_duplicates == 0
    assert tasks_per_input(emulator) == [1] * JOBS
    assert stats.peak_in_progress[REPAINT] == 1
    # No submit went while the shared limits could not be checked.
    assert not [t for t in stats.submit_times[REPAINT] if down_at < t < up_at]


async def test_redis_gone_for_good_ends_unsubmitted_jobs_and_collects_running_tasks() -> None:
    emulator = quick_emulator()
    with redis_server() as server:
        limiter = limiter_for(server, outage_grace=2.0)
        down_at = 0.0
        with anyio.fail_after(60):
            async with (
                limiter,
                emulator.client() as client,
                ds.AsyncTaskRunner(client, limiter=limiter) as runner,
                anyio.create_task_group() as group,
            ):

                async def outage() -> None:
                    nonlocal down_at
                    down_at = await stop_after_submits(emulator, server, 1)

                group.start_soon(outage)
                started = time.monotonic()
                outcomes = [outcome async for outcome in runner.map(jobs(emulator))]
                elapsed = time.monotonic() - started
    assert len(outcomes) == JOBS  # every job has its one outcome: nothing escaped
    succeeded = [o for o in outcomes if o.ok]
    unavailable = [o for o in outcomes if isinstance(o.error, ds.LimiterUnavailableError)]
    assert len(succeeded) + len(unavailable) == JOBS
    # The task running when Redis went is collected; nothing is submitted after.
    assert succeeded and all(o.task_id for o in succeeded)
    assert all(o.task_id is None for o in unavailable)
    stats = emulator.stats
    assert stats.submissions[REPAINT] == len(succeeded)
    assert not [t for t in stats.submit_times[REPAINT] if t > down_at]
    assert stats.total_duplicates == 0
    assert tasks_per_input(emulator) == [1] * len(succeeded)
    # The queued jobs fail after the one grace, not a grace each.
    assert elapsed < 2.0 * JOBS


async def test_a_lost_submit_with_redis_gone_ends_ambiguous_never_adopted_or_doubled() -> None:
    emulator = quick_emulator()
    # The first submit creates its task, but its answer is lost.
    emulator.faults.script("submit", Fault.drop_after())
    with redis_server() as server:

        class RedisDiesWithTheSubmit(httpx.AsyncBaseTransport):
            """Stops Redis the moment the submit goes out: its answer can never be recorded."""

            def __init__(self) -> None:
                self.inner = emulator.transport()

            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                if request.method == "POST" and "/services/" in request.url.path:
                    server.stop()
                return await self.inner.handle_async_request(request)

        limiter = limiter_for(server, outage_grace=0.5)
        with anyio.fail_after(60):
            async with (
                limiter,
                httpx.AsyncClient(transport=RedisDiesWithTheSubmit()) as http,
                emulator.client(http_client=http) as client,
                ds.AsyncTaskRunner(
                    client, limiter=limiter, reconcile_grace=1.0, reconcile_timeout=2.0
                ) as runner,
            ):
                outcome = await runner.submit(jobs(emulator)[0]).wait()
    # Without the shared record nothing can be proven ours: reported, never adopted by guess,
    # and never submitted again.
    assert isinstance(outcome.error, ds.AmbiguousSubmitError), outcome.error
    assert emulator.stats.submissions[REPAINT] == 1
    assert tasks_per_input(emulator) == [1]
