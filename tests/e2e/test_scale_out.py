"""Scale-out: several worker processes, one Redis, one account's limits kept by all of them.

Each worker is a real OS process (this file run as a script) with its own ``RedisLimiter``. It
takes a model's slot, waits for its submit turn, then "submits": it records the submission on
Redis's clock and counts the task in progress until the task ends, as the service would see it.
The checks read that record: at most 1 task in progress per model, no one-second window with
more than 2 submissions, the aggregate submit rate near the limit when slots are plentiful, a
worker killed with SIGKILL while holding a slot, and workers whose clocks are skewed.

Runs in real time (the limits are kept on Redis's clock) and on asyncio only (redis-py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from dashscope_async._limits import Limits, ModelLimits
from dashscope_async.redis import RedisLimiter
from tests.redis_server import RedisServer, redis_server

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(110)]

MODEL = "wanx-style-repaint-v1"
REPO = Path(__file__).resolve().parents[2]
#: Count a task in progress and keep the peak, atomically (as the service's own counter would).
_TASK_STARTED = """
local n = redis.call('INCR', KEYS[1])
if n > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], n) end
return n
"""


# --- the worker process --------------------------------------------------------------------


def _skew_clocks(seconds: float) -> None:
    # Every clock this process could read is off by ``seconds``; only Redis's clock is right.
    real_time, real_time_ns = time.time, time.time_ns
    real_monotonic = time.monotonic
    time.time = lambda: real_time() + seconds
    time.time_ns = lambda: real_time_ns() + int(seconds * 1e9)
    time.monotonic = lambda: real_monotonic() + seconds


async def _work(settings: dict[str, Any]) -> None:
    limits = Limits(
        models={
            MODEL: ModelLimits(
                submit_rate=settings["submit_rate"], max_in_progress=settings["max_in_progress"]
            )
        },
        safety_margin=settings["safety_margin"],
    )
    ns = settings["namespace"]
    worker = settings["worker"]
    store = redis.asyncio.Redis.from_url(settings["url"])
    task_started = store.register_script(_TASK_STARTED)
    skip = set(settings.get("skip", ()))

    async def job(number: int) -> None:
        async with limiter.slot(MODEL):
            await limiter.submit_turn(MODEL)
            seconds, micros = await store.time()
            await task_started(keys=[f"{ns}:in-progress", f"{ns}:peak"])
            await store.rpush(f"{ns}:submits", json.dumps([worker, number, seconds + micros / 1e6]))
            if number == settings.get("hang_at"):
                await anyio.Path(settings["holding_flag"]).touch()
                await anyio.sleep_forever()  # killed here, while holding the slot
            await anyio.sleep(settings["task_seconds"])
            await store.decr(f"{ns}:in-progress")
            await store.rpush(f"{ns}:done", f"{worker}:{number}")

    async with (
        RedisLimiter(
            settings["url"],
            namespace=ns,
            limits=limits,
            lease_ttl=settings["lease_ttl"],
            heartbeat=settings["lease_ttl"] / 4,
            slot_poll_interval=0.05,
        ) as limiter,
        anyio.create_task_group() as group,
    ):
        for number in range(settings["jobs"]):
            if number not in skip:
                group.start_soon(job, number)
    await store.aclose()  # type: ignore[attr-defined]  # types-redis predates aclose


def _worker_main() -> None:
    settings = json.loads(sys.argv[1])
    if settings.get("skew"):
        _skew_clocks(settings["skew"])
    anyio.run(_work, settings, backend="asyncio")


# --- the test side -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_server() as running:
        yield running


def _settings(server: RedisServer, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "url": server.url,
        "namespace": f"scale-{uuid.uuid4().hex[:8]}",
        "jobs": 10,
        "submit_rate": 2.0,
        "max_in_progress": 1,
        "safety_margin": 0.05,
        "task_seconds": 0.05,
        "lease_ttl": 2.0,
    }
    settings.update(overrides)
    return settings


def _start(settings: dict[str, Any], worker: int, **overrides: Any) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    own = {**settings, "worker": worker, **overrides}
    return subprocess.Popen([sys.executable, __file__, json.dumps(own)], env=env, cwd=REPO)


def _run_workers(settings: dict[str, Any], count: int, timeout: float, **per_worker: Any) -> None:
    workers = [
        _start(settings, worker, **{k: v[worker] for k, v in per_worker.items()})
        for worker in range(count)
    ]
    deadline = time.monotonic() + timeout
    try:
        for process in workers:
            assert process.wait(timeout=max(deadline - time.monotonic(), 0.1)) == 0
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
                process.wait()


def _submits(server: RedisServer, namespace: str) -> list[tuple[int, int, float]]:
    with redis.Redis.from_url(server.url) as store:
        rows = [json.loads(row) for row in store.lrange(f"{namespace}:submits", 0, -1)]
    return sorted(((int(w), int(n), float(t)) for w, n, t in rows), key=lambda row: row[2])


def _peak(server: RedisServer, namespace: str) -> int:
    with redis.Redis.from_url(server.url) as store:
        return int(store.get(f"{namespace}:peak") or 0)


def _busiest_second(times: list[float]) -> int:
    """The most submissions in any one-second sliding window."""
    most, start = 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


def test_four_workers_keep_the_accounts_limits(server: RedisServer) -> None:
    settings = _settings(server, jobs=8)
    _run_workers(settings, 4, timeout=60)
    submits = _submits(server, settings["namespace"])
    assert len(submits) == 32
    assert len({(w, n) for w, n, _ in submits}) == 32  # each job submitted once
    assert _peak(server, settings["namespace"]) == 1
    assert _busiest_second([t for _, _, t in submits]) <= 2


def test_with_slots_raised_the_workers_reach_the_submit_rate(server: RedisServer) -> None:
    rate = 10.0
    settings = _settings(
        server, jobs=50, submit_rate=rate, max_in_progress=1000, safety_margin=0.005
    )
    _run_workers(settings, 4, timeout=60)
    times = [t for _, _, t in _submits(server, settings["namespace"])]
    assert len(times) == 200
    achieved = (len(times) - 1) / (times[-1] - times[0])
    print(f"aggregate submit rate {achieved:.2f}/s of {rate}/s")  # noqa: T201
    assert achieved >= 0.9 * rate
    assert _busiest_second(times) <= rate


def test_a_killed_workers_slot_frees_and_no_job_is_lost_or_run_twice(
    server: RedisServer, tmp_path: Path
) -> None:
    settings = _settings(server, jobs=6, lease_ttl=1.5)
    holding = tmp_path / "holding"
    victim = _start(settings, 0, hang_at=2, holding_flag=str(holding))
    deadline = time.monotonic() + 20
    while not holding.exists():
        assert time.monotonic() < deadline and victim.poll() is None
        time.sleep(0.02)
    others = [_start(settings, worker) for worker in (1, 2)]
    time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    killed_at = time.time()
    victim.wait()
    for process in others:
        assert process.wait(timeout=40) == 0
    submits = _submits(server, settings["namespace"])
    # The others waited out the dead worker's lease, then carried on with all their jobs.
    first_other = min(t for w, _, t in submits if w != 0)
    assert first_other >= killed_at - 0.2 + 1.0, "a slot was taken while its lease was alive"
    assert sorted((w, n) for w, n, _ in submits if w != 0) == [
        (w, n) for w in (1, 2) for n in range(6)
    ]
    # The victim's unsubmitted jobs were never sent; a restarted worker runs exactly those.
    sent_by_victim = {n for w, n, _ in submits if w == 0}
    assert 2 in sent_by_victim
    with redis.Redis.from_url(server.url) as store:
        store.decr(f"{settings['namespace']}:in-progress")  # the orphaned task ended
    _run_workers(settings, 1, timeout=30, skip=[sorted(sent_by_victim)])
    final = _submits(server, settings["namespace"])
    assert sorted((w, n) for w, n, _ in final) == [(w, n) for w in (0, 1, 2) for n in range(6)]


def test_workers_with_skewed_clocks_still_keep_the_limits(server: RedisServer) -> None:
    settings = _settings(server, jobs=4)
    skews = [0.0, 90.0, -90.0, 3600.0]
    _run_workers(settings, 4, timeout=40, skew=skews)
    submits = _submits(server, settings["namespace"])
    assert len(submits) == 16
    assert _peak(server, settings["namespace"]) == 1
    assert _busiest_second([t for _, _, t in submits]) <= 2


if __name__ == "__main__":
    _worker_main()
