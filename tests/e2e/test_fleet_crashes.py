"""A fleet on one shared job store: workers SIGKILLed at every step, Redis restarted or lost.

Each worker is a real OS process (this file run as a script) with its own ``AsyncDashScope``,
``RedisLimiter``, ``RedisJournal`` and ``AsyncTaskRunner``, all talking to ONE emulator server
served by this test process on loopback. Jobs are delivered at least once, as a queue does: every
worker is handed its list, some jobs are handed to two workers at once (a redelivery race), and a
killed worker is started again with its whole list (its jobs delivered again). The emulator is the
judge: which job created which task (each job's key is in its request body), and how many.

- Chosen kills, one per start of worker 0, each on a job of its own: right after the intent is
  recorded; after the submit was sent and before its answer was read; right after the answer and
  before it was recorded; while polling; while downloading the result. Then kills at random
  moments, of random workers, sent by this test. 33 jobs over 3 workers (some given to two at
  once), a shared budget of exactly one image per job: every job ends with one outcome the whole
  fleet agrees on, the emulator sees at most one task per job, and the images billed never pass
  the cap.
- Two workers given the same 12 jobs at once, in opposite orders, with a budget of 9 images:
  one task per job, 9 tasks in all, and both workers report the same outcome for each job.
- Redis restarted mid-batch (data kept with appendonly): jobs go on or are taken up again,
  nothing is doubled.
- Redis lost for good: the jobs not yet submitted end with a clear error, the tasks running are
  still collected, nothing is doubled.

Not about the account's real limits (tests/e2e/test_scale_out.py is): both models run at 10
submits/s on both sides and tasks run 50 times faster than the service's (a repaint in 0.3 s),
so a batch with a dozen kills takes seconds, not minutes. Asyncio only (redis-py).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import dashscope_async as ds
from dashscope_async._journal import JobState
from dashscope_async.redis import RedisJournal, RedisLimiter
from dashscope_async.testing import Emulator, EmulatorConfig, RunningServer
from tests.e2e.test_scale_out import job_of, job_request
from tests.redis_server import RedisServer, redis_server

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(150)]

REPAINT = ds.STYLE_REPAINT.name
SKETCH = ds.SKETCH_TO_IMAGE.name
TIME_SCALE = 0.02
RATE = 10.0
REPO = Path(__file__).resolve().parents[2]
CHOSEN_MOMENTS = ("after_intent", "before_answer", "after_answer", "polling", "downloading")


# --- the worker process --------------------------------------------------------------------


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install_kill(
    client: ds.AsyncDashScope, journal: RedisJournal, kill: dict[str, str] | None
) -> None:
    """Arrange for this process to SIGKILL itself at ``kill["moment"]`` of job ``kill["key"]``."""
    if kill is None:
        return
    key, moment = kill["key"], kill["moment"]
    tasks_of_key: set[str] = set()
    submit, get_task, record_intent = client.submit, client.get_task, journal.record_intent

    async def record_intent_then_die(job: str, **options: Any) -> None:
        await record_intent(job, **options)
        if job == key and moment == "after_intent":
            _die()

    async def submit_and_note(request: ds.Request, **options: Any) -> ds.Task:
        task = await submit(request, **options)
        if _key_in(request) == key:
            if moment == "after_answer":
                _die()
            tasks_of_key.add(task.task_id)
        return task

    async def get_task_and_note(task_id: str, *, retry: bool = True) -> ds.TaskInfo:
        info = await get_task(task_id, retry=retry)
        if task_id in tasks_of_key and moment == "polling":
            _die()
        return info

    async def on_response(response: httpx.Response) -> None:
        # The service answered (its task exists); the runner has not read the answer yet.
        request = response.request
        if moment == "before_answer" and request.method == "POST" and _sent_key(request) == key:
            _die()

    async def on_request(request: httpx.Request) -> None:
        if moment == "downloading" and any(t in request.url.path for t in tasks_of_key):
            _die()

    setattr(journal, "record_intent", record_intent_then_die)  # noqa: B010
    setattr(client, "submit", submit_and_note)  # noqa: B010 - an instance override
    setattr(client, "get_task", get_task_and_note)  # noqa: B010
    client.http.event_hooks["response"].append(on_response)
    client.http.event_hooks["request"].append(on_request)


def _sent_key(request: httpx.Request) -> str | None:
    try:
        body = json.loads(request.content)
    except ValueError:
        return None
    text = json.dumps(body)
    for marker in ("?job=", "a tree for job "):
        if marker in text:
            return text.split(marker, 1)[1].split('"', 1)[0]
    return None


def _key_in(request: ds.Request) -> str:
    if isinstance(request, ds.StyleRepaint):
        return str(request.image).split("?job=", 1)[1]
    assert isinstance(request, ds.SketchToImage)
    return request.prompt.removeprefix("a tree for job ")


async def _work(settings: dict[str, Any]) -> None:
    client = ds.AsyncDashScope(
        api_key=os.environ["DASHSCOPE_API_KEY"], base_url=settings["base_url"]
    )
    model_limits = ds.ModelLimits(submit_rate=RATE, max_in_progress=1)
    limits = ds.Limits(
        models={REPAINT: model_limits, SKETCH: model_limits}, poll_rate=15.0, safety_margin=0.02
    )
    limiter = RedisLimiter(
        settings["redis_url"],
        namespace=settings["namespace"],
        limits=limits,
        lease_ttl=settings["lease_ttl"],
        slot_poll_interval=0.05,
        outage_grace=settings["outage_grace"],
    )
    journal = RedisJournal(
        settings["redis_url"],
        namespace=settings["namespace"],
        claim_ttl=settings["lease_ttl"],
        claim_poll_interval=0.05,
        outage_grace=settings["outage_grace"],
    )
    _install_kill(client, journal, settings.get("kill"))
    poll = ds.PollPolicy(
        min_interval=0.02,
        max_interval=0.2,
        run_time_priors={REPAINT: 15 * TIME_SCALE, SKETCH: 25 * TIME_SCALE},
    )
    jobs = [
        ds.Job(job_request(key, model, settings["result_url"]), key=key)
        for key, model in settings["jobs"]
    ]
    budget = None if settings.get("budget") is None else ds.Budget(images=settings["budget"])
    async with (
        limiter,
        journal,
        client,
        ds.AsyncTaskRunner(
            client,
            limiter=limiter,
            journal=journal,
            poll=poll,
            budget=budget,
            download_dir=settings["download_dir"],
            reconcile_grace=0.3,
            reconcile_timeout=2.0,
        ) as runner,
        await anyio.open_file(settings["outcomes"], "a") as out,
    ):
        async for outcome in runner.map(jobs):
            record = {
                "worker": settings["worker"],
                "run": settings["run"],
                "key": outcome.key,
                "ok": outcome.ok,
                "task_id": outcome.task_id,
                "error": None if outcome.error is None else type(outcome.error).__name__,
                "message": None if outcome.error is None else str(outcome.error),
            }
            await out.write(json.dumps(record) + "\n")
            await out.flush()


def _worker_main() -> None:
    settings = json.loads(sys.argv[1])
    anyio.run(_work, settings, backend="asyncio")


# --- the test side -------------------------------------------------------------------------


@contextmanager
def serving() -> Iterator[RunningServer]:
    config = EmulatorConfig(time_scale=TIME_SCALE, seed=13, render_results=False)
    for model in (REPAINT, SKETCH):
        config = config.with_model(model, submit_rate=RATE, max_in_progress=1)
    with Emulator(config).serve_sync() as server:
        yield server


class Fleet:
    """Worker processes, started again whenever they are killed, until every one finishes."""

    def __init__(
        self,
        redis: RedisServer,
        server: RunningServer,
        tmp_path: Path,
        jobs: dict[int, list[tuple[str, str]]],
        **settings: Any,
    ) -> None:
        self.server = server
        self.outcomes = tmp_path / "outcomes.jsonl"
        self.log = tmp_path / "workers.log"
        self.settings: dict[str, Any] = {
            "redis_url": redis.url,
            "namespace": f"fleet-{uuid.uuid4().hex[:8]}",
            "base_url": server.base_url,
            "result_url": server.result_url,
            "outcomes": str(self.outcomes),
            "download_dir": str(tmp_path / "images"),
            "lease_ttl": 1.0,
            "outage_grace": 30.0,
            **settings,
        }
        self.jobs = jobs
        self.runs: Counter[int] = Counter()
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.finished: dict[int, int] = {}  # worker -> its run that finished
        self.kills = 0
        self.plans: dict[int, dict[str, str] | None] = {}  # worker -> the kill its run carries
        self.deaths: list[tuple[int, int, str]] = []  # (worker, run, chosen moment or "random")

    def start(self, worker: int, kill: dict[str, str] | None = None) -> None:
        self.runs[worker] += 1
        self.plans[worker] = kill
        own = {
            **self.settings,
            "worker": worker,
            "run": self.runs[worker],
            "jobs": self.jobs[worker],
            "kill": kill,
        }
        # The key goes through the environment, never the command line.
        env = {**os.environ, "PYTHONPATH": str(REPO), "DASHSCOPE_API_KEY": self.server.api_key}
        with self.log.open("ab") as log:
            self.processes[worker] = subprocess.Popen(
                [sys.executable, __file__, json.dumps(own)],
                env=env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self, worker: int) -> bool:
        process = self.processes.get(worker)
        if process is None or process.poll() is not None:
            return False
        process.send_signal(signal.SIGKILL)
        return True

    def run(
        self,
        timeout: float,
        *,
        chosen: dict[int, list[dict[str, str]]] | None = None,
        random_kills: Sequence[tuple[float, int]] = (),
        on_tick: Callable[[float], None] | None = None,
    ) -> None:
        """Start every worker, restart the killed ones, until all finish (exit 0)."""
        chosen = {w: list(k) for w, k in (chosen or {}).items()}
        pending_random = sorted(random_kills)
        started = time.monotonic()
        for worker in self.jobs:
            plan = chosen.get(worker)
            self.start(worker, plan.pop(0) if plan else None)
        try:
            while len(self.finished) < len(self.jobs):
                now = time.monotonic() - started
                assert now < timeout, self.log.read_text(errors="replace")[-4000:]
                while pending_random and pending_random[0][0] <= now:
                    _, worker = pending_random.pop(0)
                    self.kill(worker)
                if on_tick is not None:
                    on_tick(now)
                for worker, process in list(self.processes.items()):
                    code = process.poll()
                    if code is None or worker in self.finished:
                        continue
                    if code == 0:
                        self.finished[worker] = self.runs[worker]
                        continue
                    assert code == -signal.SIGKILL, self.log.read_text(errors="replace")[-4000:]
                    self.kills += 1
                    carried = self.plans[worker]
                    self.deaths.append(
                        (
                            worker,
                            self.runs[worker],
                            "random" if carried is None else carried["moment"],
                        )
                    )
                    plan = chosen.get(worker)
                    self.start(worker, plan.pop(0) if plan else None)
                time.sleep(0.02)
        finally:
            for process in self.processes.values():
                if process.poll() is None:
                    process.kill()
                    process.wait()

    def reports(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.outcomes.read_text().splitlines()]

    def final_reports(self) -> list[dict[str, Any]]:
        """What each worker's last run, the one that finished, said of its jobs."""
        return [r for r in self.reports() if self.finished.get(r["worker"]) == r["run"]]


def _jobs(count: int, workers: int, shared_every: int) -> dict[int, list[tuple[str, str]]]:
    """Job ``n`` goes to worker ``n % workers``, and each ``shared_every``-th (from the second)
    to the next worker too. Even jobs are repaints, odd ones sketches."""
    lists: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for number in range(count):
        job = (f"job-{number:03d}", REPAINT if number % 2 == 0 else SKETCH)
        lists[number % workers].append(job)
        if number % shared_every == 1:
            lists[(number + 1) % workers].append(job)
    return dict(lists)


def _store_entries(redis: RedisServer, namespace: str) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        async with RedisJournal(redis.url, namespace=namespace) as journal:
            entries = {entry.key: entry for entry in await journal.entries()}
            totals = await journal.spending(ds.Budget()).totals()
            return {"entries": entries, "totals": totals}

    return anyio.run(read, backend="asyncio")


def _judge(fleet: Fleet, redis: RedisServer, *, budget: int | None) -> dict[str, int]:
    """The figures, after checking every rule; the figures that must be 0 are asserted so."""
    emulator = fleet.server.emulator
    expected = {key for jobs in fleet.jobs.values() for key, _ in jobs}
    tasks_per_job = Counter(job_of(task) for task in emulator.tasks.values())
    duplicates = sum(n - 1 for n in tasks_per_job.values() if n > 1)
    assert duplicates == 0, {k: n for k, n in tasks_per_job.items() if n > 1}
    assert emulator.stats.total_duplicates == 0

    # Each finished run reported every job it was given exactly once.
    final = fleet.final_reports()
    per_run = Counter((r["worker"], r["key"]) for r in final)
    assert set(per_run.values()) == {1}
    given = {(w, key) for w, jobs in fleet.jobs.items() for key, _ in jobs}
    lost = len(given - set(per_run))
    assert lost == 0

    # The fleet agrees on each job's outcome: one task id for a job that succeeded anywhere.
    store = _store_entries(redis, fleet.settings["namespace"])
    outcome_of: dict[str, set[tuple[bool, str | None, str | None]]] = defaultdict(set)
    for report in final:
        outcome_of[report["key"]].add((report["ok"], report["task_id"], report["error"]))
    assert set(outcome_of) == expected
    for key, outcomes in outcome_of.items():
        assert len(outcomes) == 1, (key, outcomes)
        ((ok, task_id, error),) = outcomes
        if ok:
            entry = store["entries"][key]
            assert entry.task_id == task_id and entry.state is JobState.SUCCEEDED
            assert tasks_per_job[key] == 1
        else:
            assert error in ("BudgetExceededError", "AmbiguousSubmitError"), (key, error)
            assert tasks_per_job[key] <= 1
    billed = len(emulator.tasks)  # every emulated task succeeds: one image each
    crossings = 0 if budget is None else int(billed > budget)
    assert crossings == 0, (billed, budget)
    if budget is not None:
        assert store["totals"].spent_images == billed
        assert store["totals"].reserved_images == 0
    return {
        "jobs": len(expected),
        "kills": fleet.kills,
        "duplicates": duplicates,
        "lost": lost,
        "crossings": crossings,
        "succeeded": sum(1 for o in outcome_of.values() if next(iter(o))[0]),
        "tasks": billed,
    }


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with redis_server(appendonly=True) as running:
        yield running


def test_workers_killed_at_every_step_pay_for_no_job_twice(
    redis: RedisServer, tmp_path: Path
) -> None:
    jobs = _jobs(33, 3, shared_every=4)
    # Worker 0's chosen kills, one per start, each on a repaint only it was given: one model,
    # so a run reaches its victim only after the victims before it (the model's jobs go in
    # order), and at most one of them has a submit left unanswered at a time.
    elsewhere = {key for worker in (1, 2) for key, _ in jobs[worker]}
    victims = [key for key, model in jobs[0] if model == REPAINT and key not in elsewhere]
    victims = victims[: len(CHOSEN_MOMENTS)]
    # First in its list, so each restart reaches its next kill before the budget runs out.
    jobs[0].sort(key=lambda job: job[0] not in victims)
    chosen = [
        {"key": key, "moment": moment} for key, moment in zip(victims, CHOSEN_MOMENTS, strict=True)
    ]
    rng = random.Random(20261201)
    random_kills = sorted((rng.uniform(1.0, 8.0), 1 + number % 2) for number in range(4))
    # The cap is exact: every job's one image fits, and any second task would have to pass it.
    budget = 33
    started = time.monotonic()
    with serving() as server:
        fleet = Fleet(redis, server, tmp_path, jobs, budget=budget)
        fleet.run(120, chosen={0: chosen}, random_kills=random_kills)
        figures = _judge(fleet, redis, budget=budget)
    figures["seconds"] = round(time.monotonic() - started)
    print("fleet under kills:", figures, fleet.deaths)  # noqa: T201
    assert [moment for worker, _, moment in fleet.deaths if worker == 0] == list(CHOSEN_MOMENTS)
    assert figures["succeeded"] == figures["tasks"] == budget


def test_two_workers_given_the_same_jobs_at_once_make_one_task_each(
    redis: RedisServer, tmp_path: Path
) -> None:
    shared = [(f"job-{n:03d}", REPAINT if n % 2 else SKETCH) for n in range(12)]
    with serving() as server:
        # Both get every job, in opposite orders; the budget is 3 images short.
        fleet = Fleet(redis, server, tmp_path, {0: shared, 1: shared[::-1]}, budget=9)
        fleet.run(60)
        figures = _judge(fleet, redis, budget=9)
    print("two workers, the same jobs:", figures)  # noqa: T201
    assert figures["tasks"] == figures["succeeded"] == 9


def _submit_times(server: RunningServer) -> list[float]:
    stats = server.emulator.stats
    return sorted([*stats.submit_times[REPAINT], *stats.submit_times[SKETCH]])


def test_redis_restarting_mid_batch_is_waited_out_and_doubles_nothing(
    redis: RedisServer, tmp_path: Path
) -> None:
    jobs = _jobs(18, 3, shared_every=3)
    restarted: list[float] = []  # the emulator's clock: the real monotonic one

    def restart_once(now: float) -> None:
        if not restarted and len(server.emulator.tasks) >= 4:
            restarted.append(time.monotonic())
            redis.restart(down_for=1.0)  # appendonly: every record survives

    with serving() as server:
        # Leases and claims outlive the outage: this test is about waiting, not taking over.
        fleet = Fleet(redis, server, tmp_path, jobs, lease_ttl=4.0)
        fleet.run(90, on_tick=restart_once)
        figures = _judge(fleet, redis, budget=None)
        times = _submit_times(server)
    print("fleet through a Redis restart:", figures)  # noqa: T201
    assert restarted
    assert times[0] < restarted[0] < times[-1]  # mid-batch
    # Every worker waited for Redis and went on: all jobs done in their first run.
    assert figures["succeeded"] == 18
    assert set(fleet.finished.values()) == {1}


def test_redis_lost_for_good_stops_submissions_with_a_clear_error(
    redis: RedisServer, tmp_path: Path
) -> None:
    jobs = _jobs(18, 3, shared_every=1000)
    lost: list[float] = []

    def lose_once(now: float) -> None:
        if not lost and len(server.emulator.tasks) >= 4:
            lost.append(time.monotonic())
            redis.stop()

    with serving() as server:
        fleet = Fleet(redis, server, tmp_path, jobs, outage_grace=1.0)
        fleet.run(90, on_tick=lose_once)
        emulator = server.emulator
        tasks_per_job = Counter(job_of(task) for task in emulator.tasks.values())
        times = _submit_times(server)
    reports = fleet.final_reports()
    assert sorted(r["key"] for r in reports) == sorted(k for js in jobs.values() for k, _ in js)
    errors = Counter(r["error"] for r in reports if not r["ok"])
    print("fleet losing Redis:", dict(errors), "tasks:", len(emulator.tasks))  # noqa: T201
    assert lost and errors
    assert set(errors) <= {"LimiterUnavailableError", "JournalError"}
    assert set(tasks_per_job.values()) <= {1}  # nothing doubled
    # Nothing was submitted once Redis had gone (but a submit already on its way).
    assert all(t < lost[0] + 0.5 for t in times)
    # A job without a task ended with the error, never submitted later; every task that was
    # running was still collected (polled under the limiter's local budget).
    assert all(r["error"] for r in reports if r["key"] not in tasks_per_job)
    assert all(r["ok"] for r in reports if r["key"] in tasks_per_job)


if __name__ == "__main__":
    _worker_main()
