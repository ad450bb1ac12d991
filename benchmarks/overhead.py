"""Client overhead as a ratio: our cost per job against the bare httpx requests the job makes.

Both sides run in one process against the same kind of in-process emulator (every limit lifted,
tasks ending almost at once), measured in CPU seconds of this process, so the load other
programs put on the machine does not count. The bare side is the least any client must do: for
each job, ``POST`` the submit and ``GET`` the task until it is finished, reading each answer's
JSON, one job after another, with no validation, no limits, no planner and no outcome objects.
Everything on both sides is counted, the emulator's own work included, so the ratio is what a
user would see: how much more CPU a job costs through the runner than through hand-written
requests.
"""

from __future__ import annotations

import statistics
import time

import anyio
import attrs
import httpx

import dashscope_async as ds
from benchmarks.throughput import lifted_emulator, lifted_poll, requests

MODEL = ds.SKETCH_TO_IMAGE.name
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN"}


@attrs.frozen
class OverheadFigures:
    """CPU seconds per job through the runner and through bare requests, with request counts."""

    backend: str
    jobs: int
    ours_seconds: float
    ours_requests: int
    bare_seconds: float
    bare_requests: int
    client_seconds: float

    @property
    def ours_per_job_ms(self) -> float:
        return 1000 * self.ours_seconds / self.jobs

    @property
    def bare_per_job_ms(self) -> float:
        return 1000 * self.bare_seconds / self.jobs

    @property
    def client_per_job_ms(self) -> float:
        return 1000 * self.client_seconds / self.jobs

    @property
    def ratio(self) -> float:
        """Our CPU per job over the bare requests' CPU per job (target: at most 1.5)."""
        return self.ours_seconds / self.bare_seconds

    @property
    def client_ratio(self) -> float:
        """``AsyncDashScope`` alone (submit, then get_task), without the runner, over bare."""
        return self.client_seconds / self.bare_seconds


async def _ours(jobs: int) -> tuple[float, int]:
    emulator = lifted_emulator()
    async with (
        emulator.client(max_retries=0) as client,
        ds.AsyncTaskRunner(client, limits=ds.Limits.lifted(), poll=lifted_poll()) as runner,
    ):
        started = time.process_time()
        done = 0
        async for outcome in runner.map(requests(emulator, jobs)):
            if not outcome.ok:
                raise RuntimeError(f"job {outcome.index} failed: {outcome.error}")
            done += 1
        seconds = time.process_time() - started
    if done != jobs:
        raise RuntimeError(f"{done} outcomes for {jobs} jobs")
    return seconds, sum(emulator.stats.requests.values())


async def _client_only(jobs: int) -> tuple[float, int]:
    emulator = lifted_emulator()
    async with emulator.client(max_retries=0) as client:
        started = time.process_time()
        for request in requests(emulator, jobs):
            task = await client.submit(request)
            while not (await client.get_task(task.task_id, retry=False)).status.is_terminal:
                pass
        seconds = time.process_time() - started
    return seconds, sum(emulator.stats.requests.values())


async def _bare(jobs: int) -> tuple[float, int]:
    emulator = lifted_emulator()
    headers = {"Authorization": f"Bearer {emulator.api_key}", "X-DashScope-Async": "enable"}
    path = ds.SKETCH_TO_IMAGE.submit_path.lstrip("/")
    async with httpx.AsyncClient(
        transport=emulator.transport(), base_url=f"{emulator.base_url}/", headers=headers
    ) as http:
        started = time.process_time()
        for request in requests(emulator, jobs):
            body = {
                "model": MODEL,
                "input": {"sketch_image_url": request.sketch, "prompt": request.prompt},
                "parameters": {"n": 1},
            }
            answer = await http.post(path, json=body)
            task_id = answer.json()["output"]["task_id"]
            while True:
                info = await http.get(f"tasks/{task_id}")
                if info.json()["output"]["task_status"] in TERMINAL:
                    break
        seconds = time.process_time() - started
    return seconds, sum(emulator.stats.requests.values())


def overhead(jobs: int = 5000, backend: str = "asyncio", *, rounds: int = 40) -> OverheadFigures:
    """Measure the three sides in ``rounds`` short rounds, taking turns, and keep the medians.

    A shared virtual machine's CPU speed drifts by tens of percent over seconds; one long run
    per side measures the drift as much as the code. Rounds of ``jobs / rounds`` jobs, each side
    in turn (the order rotating from round to round), see the same drift, and the median round
    of each side leaves out the rounds a burst of load hit.
    """

    async def main() -> OverheadFigures:
        await _bare(200)  # warm every path: imports, caches
        await _ours(200)
        await _client_only(200)
        per_round = max(jobs // rounds, 1)
        sides = {"bare": _bare, "ours": _ours, "client": _client_only}
        names = list(sides)
        seconds: dict[str, list[float]] = {name: [] for name in names}
        made = dict.fromkeys(names, 0)
        for index in range(rounds):
            for name in names[index % 3 :] + names[: index % 3]:
                spent, count = await sides[name](per_round)
                seconds[name].append(spent)
                made[name] += count
        done = per_round * rounds
        return OverheadFigures(
            backend=backend,
            jobs=done,
            ours_seconds=statistics.median(seconds["ours"]) * rounds,
            ours_requests=made["ours"],
            bare_seconds=statistics.median(seconds["bare"]) * rounds,
            bare_requests=made["bare"],
            client_seconds=statistics.median(seconds["client"]) * rounds,
        )

    return anyio.run(main, backend=backend)
