"""Scale-out: worker processes, one Redis, one emulated service; the account's limits hold.

Each worker is a real OS process (this file run as a script) with its own ``AsyncDashScope``,
``RedisLimiter`` and ``AsyncTaskRunner``; every worker's client talks to ONE emulator server that
this test process serves on loopback. The emulator is the judge: it reads its own monotonic
clock, so its records are the ground truth whatever the workers' clocks say. The checks read
those records: at most 1 task in progress per model, no one-second window with more than 2
submissions (and no submit the emulator had to refuse), no job submitted twice, and every job's
outcome present (workers write them to a file).

- 4 workers x 10 jobs (both models) at the service's limits. Not 50 each: at 2 submits/s per
  model, 200 jobs take at least 50 s of real time, and the limits are already exercised by 40
  jobs spread over 4 processes (20 per model, one slot each).
- 4 workers x 50 jobs with the slot limit lifted and the submit rate raised to 10/s on both
  sides (the emulator and our limits): 200 submissions in about 20 s instead of 100 s at 2/s,
  and no window exceeds the rate. How close the workers come to the rate is a speed figure, so
  it is measured by ``python -m benchmarks.scale_out``, not asserted here.
- A worker killed with SIGKILL while it holds the slot: the others wait out its lease, then
  carry on; a restarted worker resumes its journal. No job lost, none submitted twice.
- Workers whose clocks are off by minutes or an hour, or run fast or slow: the limits still hold
  (the limiter decides on Redis's clock).

Runs in real time and on asyncio only (redis-py); tasks run at ``TIME_SCALE`` (a repaint takes
0.3 s, a sketch 0.5 s).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

import dashscope_async as ds
from dashscope_async.redis import RedisLimiter
from dashscope_async.testing import Emulator, EmulatorConfig, RunningServer
from tests.redis_server import RedisServer, redis_server

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(110)]

REPAINT = ds.STYLE_REPAINT.name
SKETCH = ds.SKETCH_TO_IMAGE.name
TIME_SCALE = 0.02
REPO = Path(__file__).resolve().parents[2]


# --- the worker process --------------------------------------------------------------------


def _skew_clocks(offset: float, rate: float) -> None:
    # Every clock this process reads (asyncio's loop reads time.monotonic) is off by ``offset``
    # seconds and runs ``rate`` times as fast as real time; only Redis's clock is right.
    real_time, real_monotonic = time.time, time.monotonic
    start_time, start_monotonic = real_time(), real_monotonic()

    def skewed_time() -> float:
        return start_time + offset + (real_time() - start_time) * rate

    def skewed_monotonic() -> float:
        return start_monotonic + offset + (real_monotonic() - start_monotonic) * rate

    time.time = skewed_time
    time.time_ns = lambda: int(skewed_time() * 1e9)
    time.monotonic = skewed_monotonic


def job_request(key: str, model: str, result_url: str) -> ds.Request:
    """A request only this job sends (its key is in the body), so a resubmission shows."""
    if model == REPAINT:
        return ds.StyleRepaint(
            f"{result_url}/samples/portrait.png?job={key}", style=ds.RepaintStyle.ANIME
        )
    return ds.SketchToImage(f"{result_url}/samples/sketch.png", prompt=f"a tree for job {key}")


def job_of(task: Any) -> str:
    """Which job an emulated task came from (the key ``job_request`` put in its body)."""
    if task.model == REPAINT:
        query = urllib.parse.urlsplit(task.body.input.image_url).query
        return str(urllib.parse.parse_qs(query)["job"][0])
    return str(task.body.input.prompt).removeprefix("a tree for job ")


def _limits(settings: dict[str, Any]) -> ds.Limits:
    model = ds.ModelLimits(
        submit_rate=settings["submit_rate"], max_in_progress=settings["max_in_progress"]
    )
    return ds.Limits(
        models={REPAINT: model, SKETCH: model},
        poll_rate=settings["poll_rate"],
        safety_margin=settings["safety_margin"],
    )


async def _work(settings: dict[str, Any]) -> None:
    client = ds.AsyncDashScope(
        api_key=os.environ["DASHSCOPE_API_KEY"], base_url=settings["base_url"]
    )
    get_task = client.get_task
    submit = client.submit
    hang_at = settings.get("hang_at")
    hanging: set[str] = set()

    hang_key = f"w{settings['worker']}-j{hang_at}"

    async def submit_and_note(request: ds.Request, **options: Any) -> ds.Task:
        task = await submit(request, **options)
        if hang_at is not None and _key_in(request).endswith(hang_key):
            hanging.add(task.task_id)
            await anyio.Path(settings["holding_flag"]).touch()
        return task

    async def get_task_or_hang(task_id: str, *, retry: bool = True) -> ds.TaskInfo:
        if task_id in hanging:
            await anyio.sleep_forever()  # killed here, holding the slot: the task never ends
        return await get_task(task_id, retry=retry)

    setattr(client, "submit", submit_and_note)  # noqa: B010 - an instance override
    setattr(client, "get_task", get_task_or_hang)  # noqa: B010
    poll = ds.PollPolicy(
        min_interval=0.02,
        max_interval=0.2,
        run_time_priors={REPAINT: 15 * TIME_SCALE, SKETCH: 25 * TIME_SCALE},
    )
    worker = settings["worker"]
    jobs = [
        ds.Job(
            job_request(f"w{worker}-j{number}", model, settings["result_url"]),
            key=f"w{worker}-j{number}",
        )
        for number, model in enumerate(settings["models"])
    ]
    limiter = RedisLimiter(
        settings["redis_url"],
        namespace=settings["namespace"],
        limits=_limits(settings),
        lease_ttl=settings["lease_ttl"],
        heartbeat=settings["lease_ttl"] / 4,
        slot_poll_interval=0.05,
    )
    async with (
        limiter,
        client,
        ds.AsyncTaskRunner(
            client, limiter=limiter, poll=poll, journal=settings.get("journal"), reconcile_grace=0.2
        ) as runner,
        await anyio.open_file(settings["outcomes"], "a") as out,
    ):
        await _ready_set_go(settings)
        async for outcome in runner.map(jobs):
            record = {
                "key": outcome.key,
                "ok": outcome.ok,
                "task_id": outcome.task_id,
                "error": None if outcome.error is None else repr(outcome.error),
            }
            await out.write(json.dumps(record) + "\n")
            await out.flush()


async def _ready_set_go(settings: dict[str, Any]) -> None:
    # Started together, the workers would still be importing on a busy CPU when the first of
    # them submits, and that delay reaches the service as jitter; so all start at one signal:
    # each says it is ready, then waits for a line on its stdin.
    ready = settings.get("ready")
    if ready is None:
        return
    await anyio.Path(ready).touch()
    with anyio.fail_after(30):
        await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)


def _key_in(request: ds.Request) -> str:
    # Both kinds of body end with the job's key (see ``job_request``).
    if isinstance(request, ds.StyleRepaint):
        return str(request.image)
    assert isinstance(request, ds.SketchToImage)
    return request.prompt


def _worker_main() -> None:
    settings = json.loads(sys.argv[1])
    if settings.get("skew"):
        _skew_clocks(*settings["skew"])
    anyio.run(_work, settings, backend="asyncio")


# --- the test side -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as running:
        yield running


@contextmanager
def serving(
    *, submit_rate: float = 2.0, max_in_progress: int | None = 1
) -> Iterator[RunningServer]:
    """The emulator on loopback, both models with the given limits, placeholder images."""
    config = EmulatorConfig(time_scale=TIME_SCALE, seed=3, render_results=False)
    for model in (REPAINT, SKETCH):
        config = config.with_model(model, submit_rate=submit_rate, max_in_progress=max_in_progress)
    with Emulator(config).serve_sync() as server:
        yield server


def _settings(
    redis: RedisServer, server: RunningServer, tmp_path: Path, **overrides: Any
) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "redis_url": redis.url,
        "namespace": f"scale-{uuid.uuid4().hex[:8]}",
        "base_url": server.base_url,
        "result_url": server.result_url,
        "outcomes": str(tmp_path / "outcomes.jsonl"),
        "models": [REPAINT, SKETCH] * 5,
        "submit_rate": 2.0,
        "max_in_progress": 1,
        "poll_rate": 10.0,
        "safety_margin": 0.05,
        "lease_ttl": 2.0,
    }
    settings.update(overrides)
    return settings


def _start(
    settings: dict[str, Any], server: RunningServer, worker: int, **overrides: Any
) -> subprocess.Popen[bytes]:
    # The key goes through the environment, never the command line.
    env = {**os.environ, "PYTHONPATH": str(REPO), "DASHSCOPE_API_KEY": server.api_key}
    own = {**settings, "worker": worker, **overrides}
    # A worker given a ready file waits for its start signal on stdin.
    stdin = subprocess.PIPE if own.get("ready") else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, __file__, json.dumps(own)], env=env, cwd=REPO, stdin=stdin
    )


def _wait_all(workers: Sequence[subprocess.Popen[bytes]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    try:
        for process in workers:
            assert process.wait(timeout=max(deadline - time.monotonic(), 0.1)) == 0
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
                process.wait()


def _ready_then_go(workers: Sequence[subprocess.Popen[bytes]], ready: Sequence[Path]) -> None:
    """Wait until every worker says it is ready (its runner built), then start them all."""
    deadline = time.monotonic() + 30
    while not all(path.exists() for path in ready):
        assert all(process.poll() is None for process in workers), "a worker died"
        assert time.monotonic() < deadline, "the workers did not get ready"
        time.sleep(0.01)
    for process in workers:
        assert process.stdin is not None
        process.stdin.write(b"go\n")
        process.stdin.close()  # the line stays in the pipe until read


def _run_workers(
    settings: dict[str, Any], server: RunningServer, count: int, timeout: float, **per_worker: Any
) -> None:
    ready = [
        Path(settings["outcomes"]).with_name(f"ready-{uuid.uuid4().hex}") for _ in range(count)
    ]
    workers = [
        _start(
            settings,
            server,
            worker,
            ready=str(ready[worker]),
            **{k: v[worker] for k, v in per_worker.items()},
        )
        for worker in range(count)
    ]
    try:
        _ready_then_go(workers, ready)
    finally:
        for process in workers:
            if process.stdin is not None:
                process.stdin.close()
        _wait_all(workers, timeout)


def _outcomes(settings: dict[str, Any]) -> list[dict[str, Any]]:
    lines = Path(settings["outcomes"]).read_text().splitlines()
    return [json.loads(line) for line in lines]


def _expected_keys(settings: dict[str, Any], workers: int) -> set[str]:
    return {f"w{w}-j{n}" for w in range(workers) for n in range(len(settings["models"]))}


def assert_every_job_done_once(
    server: RunningServer, expected: set[str], outcomes: list[dict[str, Any]]
) -> None:
    """Every job has a successful outcome, and the emulator saw each job submitted once.

    A resumed worker reports again the jobs its journal had finished: the same task, replayed.
    """
    task_of: dict[str, str] = {}
    for outcome in outcomes:
        assert task_of.setdefault(outcome["key"], outcome["task_id"]) == outcome["task_id"]
    assert set(task_of) == expected
    assert [o for o in outcomes if not o["ok"]] == []
    emulator = server.emulator
    per_job = Counter(job_of(task) for task in emulator.tasks.values())
    assert set(per_job) == expected
    assert set(per_job.values()) == {1}, [key for key, n in per_job.items() if n > 1]
    assert emulator.stats.total_duplicates == 0
    assert set(task_of.values()) == set(emulator.tasks)


def assert_limits_kept(
    server: RunningServer, models: Sequence[str], *, rate: int = 2, in_progress: int = 1
) -> None:
    """As the emulator saw it: no refused submit, no window over ``rate``, slots kept."""
    stats = server.emulator.stats
    for model in models:
        assert stats.throttled_submits[model] == 0, model  # nothing sent over the rate
        assert stats.max_submits_in_any_window(model, 1.0) <= rate, model
        assert stats.peak_in_progress[model] <= in_progress, model


def test_four_workers_keep_the_accounts_limits(redis: RedisServer, tmp_path: Path) -> None:
    with serving() as server:
        settings = _settings(redis, server, tmp_path)
        _run_workers(settings, server, 4, timeout=60)
        expected = _expected_keys(settings, 4)
        assert_every_job_done_once(server, expected, _outcomes(settings))
        assert_limits_kept(server, [REPAINT, SKETCH])
        stats = server.emulator.stats
        assert stats.peak_in_progress[REPAINT] == stats.peak_in_progress[SKETCH] == 1
        assert stats.throttled == 0  # the shared poll budget kept the task endpoints' 20 QPS


def run_at_raised_rate(
    redis: RedisServer, tmp_path: Path, *, rate: int = 10, safety_margin: float = 0.05
) -> list[float]:
    """4 workers x 50 jobs, slots lifted, ``rate`` submits/s; the emulator's submit times.

    The limits kept and every job done once are checked here; ``benchmarks.scale_out`` reads
    the times for the rate reached (with a thinner ``safety_margin``, to come close to the rate:
    a test keeps the library's default, so a loaded machine's transit jitter is not a failure).
    """
    with serving(submit_rate=rate, max_in_progress=None) as server:
        settings = _settings(
            redis,
            server,
            tmp_path,
            models=[REPAINT] * 50,
            submit_rate=float(rate),
            max_in_progress=1000,
            poll_rate=100.0,
            safety_margin=safety_margin,
        )
        _run_workers(settings, server, 4, timeout=60)
        assert_every_job_done_once(server, _expected_keys(settings, 4), _outcomes(settings))
        assert_limits_kept(server, [REPAINT], rate=rate, in_progress=1000)
        return list(server.emulator.stats.submit_times[REPAINT])


def test_with_slots_lifted_the_workers_keep_a_raised_submit_rate(
    redis: RedisServer, tmp_path: Path
) -> None:
    assert len(run_at_raised_rate(redis, tmp_path)) == 200


def test_a_killed_workers_slot_frees_and_no_job_is_lost_or_run_twice(
    redis: RedisServer, tmp_path: Path
) -> None:
    lease_ttl, heartbeat = 1.5, 1.5 / 4
    with serving() as server:
        settings = _settings(redis, server, tmp_path, models=[REPAINT] * 6, lease_ttl=lease_ttl)
        journals = [str(tmp_path / f"journal-{worker}.sqlite") for worker in range(3)]
        holding = tmp_path / "holding"
        victim = _start(
            settings, server, 0, hang_at=2, holding_flag=str(holding), journal=journals[0]
        )
        try:
            deadline = time.monotonic() + 20
            while not holding.exists():
                assert time.monotonic() < deadline and victim.poll() is None
                time.sleep(0.02)
            ready = [tmp_path / f"ready-{w}" for w in (1, 2)]
            others = [
                _start(settings, server, w, journal=journals[w], ready=str(ready[w - 1]))
                for w in (1, 2)
            ]
            # Both are up and start at once, so they wait for the slot when the victim dies
            # however long a loaded machine takes to start them.
            _ready_then_go(others, ready)
            killed_at = time.monotonic()  # the emulator's clock (the real monotonic one)
            victim.send_signal(signal.SIGKILL)
            assert victim.wait(timeout=5) == -signal.SIGKILL
            _wait_all(others, timeout=40)
        finally:
            if victim.poll() is None:
                victim.kill()
                victim.wait()
        times = server.emulator.stats.submit_times[REPAINT]
        # The victim sent jobs 0-2 and held the slot; nobody else submitted while it lived.
        assert sum(t < killed_at for t in times) == 3
        # The others waited out its lease (renewed at most a heartbeat before the kill), then
        # carried on at once.
        first_after = min(t for t in times if t >= killed_at)
        assert first_after >= killed_at + lease_ttl - heartbeat - 0.1
        assert first_after <= killed_at + lease_ttl + 1.0
        # A restarted worker resumes the victim's journal: it waits for the task it had sent
        # and submits only the jobs it never sent.
        _run_workers(settings, server, 1, timeout=30, journal=[journals[0]])
        assert_every_job_done_once(server, _expected_keys(settings, 3), _outcomes(settings))
        assert_limits_kept(server, [REPAINT])


def test_workers_with_skewed_clocks_still_keep_the_limits(
    redis: RedisServer, tmp_path: Path
) -> None:
    # (offset seconds, rate): right, ahead, behind, an hour ahead and fast, behind and slow.
    skews = [(0.0, 1.0), (90.0, 1.0), (-3600.0, 0.8), (3600.0, 1.25)]
    with serving() as server:
        settings = _settings(redis, server, tmp_path, models=[REPAINT, SKETCH] * 3)
        _run_workers(settings, server, 4, timeout=40, skew=skews)
        assert_every_job_done_once(server, _expected_keys(settings, 4), _outcomes(settings))
        assert_limits_kept(server, [REPAINT, SKETCH])


if __name__ == "__main__":
    _worker_main()
