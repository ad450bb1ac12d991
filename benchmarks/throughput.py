"""Client throughput and memory with every limit lifted, against the in-process emulator.

Throughput: jobs per second through submit, poll and result, on one core, with the emulator's
tasks ending almost at once, so what is measured is the client's own cost per job (and the
emulator's, which runs in the same process and is counted against us).

Memory: the peak resident memory of a process that runs 100,000 jobs pulled lazily from a
generator, above the same process's resident memory before the batch.
"""

from __future__ import annotations

import gc
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import attrs
import httpx

import dashscope_async as ds
from dashscope_async.testing import Emulator, EmulatorConfig

MODEL = ds.SKETCH_TO_IMAGE.name


@attrs.frozen
class ThroughputFigures:
    jobs: int
    seconds: float
    emulator_seconds: float
    polls: int

    @property
    def jobs_per_second(self) -> float:
        """Everything in the process counted: our client and the emulator answering it."""
        return self.jobs / self.seconds

    @property
    def client_jobs_per_second(self) -> float:
        """The emulator's own time taken out: the client's cost alone."""
        return self.jobs / (self.seconds - self.emulator_seconds)


class TimedTransport(httpx.AsyncBaseTransport):
    """Counts the time spent inside the emulator, so it can be told apart from ours."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.seconds = 0.0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        started = time.perf_counter()
        try:
            return await self.inner.handle_async_request(request)
        finally:
            self.seconds += time.perf_counter() - started


@attrs.frozen
class MemoryFigures:
    jobs: int
    baseline_mb: float
    peak_mb: float

    @property
    def above_baseline_mb(self) -> float:
        return self.peak_mb - self.baseline_mb


def lifted_emulator() -> Emulator:
    config = EmulatorConfig(
        time_scale=1e-6, seed=1, render_results=False, task_qps=None, upload_policy_qps=None
    )
    for model in ds.MODELS:
        config = config.with_model(model, submit_rate=None, max_in_progress=None)
    return Emulator(config)


def lifted_poll() -> ds.PollPolicy:
    """Polls as a client with no limit to keep would: the first at once after the submit (as
    the bare side of the overhead benchmark does), the tasks' microseconds of run time known."""
    return ds.PollPolicy(first_poll=0.0, min_interval=1e-4, run_time_priors={MODEL: 1e-5})


def requests(emulator: Emulator, count: int) -> Iterator[ds.SketchToImage]:
    url = emulator.sample_image_url("sketch")
    for i in range(count):
        yield ds.SketchToImage(url, prompt=f"tree {i}")


async def run_batch(count: int, max_pending: int) -> tuple[Emulator, float, float]:
    emulator = lifted_emulator()
    transport = TimedTransport(emulator.transport())
    http = httpx.AsyncClient(transport=transport)
    async with (
        emulator.client(max_retries=0, http_client=http) as client,
        ds.AsyncTaskRunner(
            client, limits=ds.Limits.lifted(), poll=lifted_poll(), max_pending=max_pending
        ) as runner,
    ):
        started = time.perf_counter()
        done = 0
        async for outcome in runner.map(requests(emulator, count)):
            if not outcome.ok:
                raise RuntimeError(f"job {outcome.index} failed: {outcome.error}")
            done += 1
        seconds = time.perf_counter() - started
    if done != count:
        raise RuntimeError(f"{done} outcomes for {count} jobs")
    return emulator, seconds, transport.seconds


def throughput(count: int = 20_000, backend: str = "asyncio") -> ThroughputFigures:
    async def main() -> ThroughputFigures:
        emulator, seconds, emulator_seconds = await run_batch(count, max_pending=1000)
        return ThroughputFigures(
            jobs=count,
            seconds=seconds,
            emulator_seconds=emulator_seconds,
            polls=sum(emulator.stats.polls.values()),
        )

    return anyio.run(main, backend=backend)


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


@contextmanager
def served_emulator() -> Iterator[tuple[str, str]]:
    """A limit-free emulator in a process of its own, so its memory is not counted as ours."""
    command = [sys.executable, "-m", "dashscope_async.testing", "--port", "0", "--no-limits"]
    command += ["--time-scale", "0.000001"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        found: dict[str, str] = {}
        for line in process.stdout:
            name, _, value = line.strip().partition(":")
            if name in ("base URL", "API key"):
                found[name] = value.strip()
            if len(found) == 2:
                break
        yield found["base URL"], found["API key"]
    finally:
        process.terminate()
        process.wait(timeout=10)


def memory(count: int = 100_000) -> MemoryFigures:
    """Peak resident memory for ``count`` jobs from a generator, over loopback HTTP.

    Run it in a fresh process (``python -m benchmarks memory``) for a clean baseline.
    """

    async def batch(base_url: str, api_key: str, jobs: int, sample: list[float]) -> None:
        url = f"{base_url.rsplit('/api/v1', 1)[0]}/not-fetched.png"
        async with (
            ds.AsyncDashScope(api_key=api_key, base_url=base_url, max_retries=0) as client,
            ds.AsyncTaskRunner(client, limits=ds.Limits.lifted(), poll=lifted_poll()) as runner,
        ):
            gen = (ds.SketchToImage(url, prompt=f"tree {i}") for i in range(jobs))
            async for outcome in runner.map(gen):
                if outcome.index % 1000 == 0:
                    sample.append(_rss_mb())  # noqa: PERF401 - one sample per 1,000 jobs

    with served_emulator() as (base_url, api_key):
        warm: list[float] = []
        anyio.run(batch, base_url, api_key, 500, warm)  # every code path imported and used once
        gc.collect()
        baseline = _rss_mb()
        samples: list[float] = [baseline]
        anyio.run(batch, base_url, api_key, count, samples)
    # VmHWM, not ru_maxrss: the latter keeps the peak of the parent this process was forked
    # from (until exec), which is not ours.
    peak = max(*samples, _peak_rss_mb())
    return MemoryFigures(jobs=count, baseline_mb=baseline, peak_mb=peak)
