"""Crash and resume: a batch killed with SIGKILL, run again with its journal, pays for nothing twice.

A child process (this file run as a script) runs a 30-job batch (15 repaints with keys, 15 sketches
without) against the emulator served on loopback, with a journal, and dies by SIGKILL at a chosen
moment: right after a submit was sent and before the journal learned its task id, right before a
submit was sent, right after the journal recorded a task id, or at a random time. The test then
runs the same batch again in-process with the same journal and checks the emulator's record:
every job submitted exactly once, all 30 outcomes present, images on disk when ``download_dir``
is set, and the API key nowhere in the journal. Also: tasks expired before the resume (UNKNOWN),
result URLs expired before the download, and a budget kept across the crash.

The emulator runs at a small time scale (a repaint takes 75 ms), with its submit rate raised so
a batch takes seconds, and one task in progress per model as on the service.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

import dashscope_async as ds
from dashscope_async._journal import JobState, Journal, JournalEntry
from dashscope_async.testing import Emulator, EmulatorConfig, RunningServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

REPAINT = ds.STYLE_REPAINT.name
SKETCH = ds.SKETCH_TO_IMAGE.name
TIME_SCALE = 0.005
JOBS = 30
# A realistic key, so that a leak into the journal would be caught.
API_KEY = "sk-crashtest0123456789abcdef012345"
REPO = Path(__file__).resolve().parents[2]
STYLES = list(ds.RepaintStyle)


# --- the batch, the same in the child and in the test ------------------------------------------


def batch(result_url: str) -> list[ds.Job | ds.Request]:
    """30 distinct jobs, the models interleaved: repaints keyed by name, sketches by content."""
    portrait = f"{result_url}/samples/portrait.png"
    sketch = f"{result_url}/samples/sketch.png"
    jobs: list[ds.Job | ds.Request] = []
    for i in range(JOBS // 2):
        jobs.append(ds.Job(ds.StyleRepaint(portrait, style=STYLES[i]), key=f"portrait-{i:02d}"))
        jobs.append(ds.SketchToImage(sketch, prompt=f"a tree, variant {i}"))
    return jobs


def runner_options(settings: dict[str, Any]) -> dict[str, Any]:
    fast = ds.ModelLimits(submit_rate=40, max_in_progress=1)
    budget = settings.get("budget_images")
    return {
        "limits": ds.Limits(models={REPAINT: fast, SKETCH: fast}, poll_rate=200),
        "poll": ds.PollPolicy(
            min_interval=0.01,
            max_interval=0.1,
            error_backoff=0.05,
            run_time_priors={REPAINT: 15 * TIME_SCALE, SKETCH: 25 * TIME_SCALE},
        ),
        "journal": settings["journal"],
        "download_dir": settings.get("download_dir"),
        "budget": None if budget is None else ds.Budget(images=budget),
        "reconcile_grace": 0.05,
        "task_retention": settings.get("task_retention", 24 * 3600.0),
    }


def job_identity(body: Any) -> str:
    """Which job of the batch a submitted body is."""
    if hasattr(body.input, "style_index"):
        return f"repaint style {body.input.style_index}"
    return f"sketch {body.input.prompt}"


def request_identity(request: ds.Request) -> str:
    """Which job of the batch a request is (as ``job_identity`` names it)."""
    if isinstance(request, ds.StyleRepaint):
        return f"repaint style {request.style_index}"
    return f"sketch {request.prompt}"


# --- the child process -----------------------------------------------------------------------


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


async def child(settings: dict[str, Any]) -> None:
    """Run the batch and die as ``settings["kill"]`` says: ``[moment, count]``."""
    moment, count = settings.get("kill") or (None, 0)
    client = ds.AsyncDashScope(api_key=settings["api_key"], base_url=settings["base_url"])
    submit = client.submit
    sends = 0

    async def submit_then_maybe_die(*args: Any, **kwargs: Any) -> ds.Task:
        nonlocal sends
        sends += 1
        number = sends  # submits of the two models overlap
        if moment == "before-send" and number == count:
            die()  # the intent is recorded; nothing was sent
        task = await submit(*args, **kwargs)
        if moment == "after-send" and number == count:
            die()  # the task exists; the journal does not know its id
        return task

    setattr(client, "submit", submit_then_maybe_die)  # noqa: B010 - an instance override
    seen: Counter[str] = Counter()

    def on_event(event: ds.RunnerEvent) -> None:
        seen[event.kind.value] += 1
        if moment == event.kind.value and seen[moment] == count:
            die()

    async with (
        client,
        ds.AsyncTaskRunner(client, on_event=on_event, **runner_options(settings)) as runner,
    ):
        say("ready")
        async for outcome in runner.map(batch(settings["result_url"])):
            say(json.dumps({"index": outcome.index, "ok": outcome.ok}))


# --- the test's side ---------------------------------------------------------------------------


def emulator_config(**changes: Any) -> EmulatorConfig:
    config = EmulatorConfig(time_scale=TIME_SCALE, seed=7, task_qps=None, render_results=False)
    for model in (REPAINT, SKETCH):
        config = config.with_model(model, submit_rate=50)
    # (EmulatorConfig's api_keys converter reads as a generic Iterable to mypy.)
    keys: Any = (API_KEY,)
    return attrs.evolve(config, api_keys=keys, **changes)


@asynccontextmanager
async def served(**changes: Any) -> AsyncIterator[RunningServer]:
    async with Emulator(emulator_config(**changes)).serve() as server:
        yield server


def child_settings(
    server: RunningServer, tmp_path: Path, backend: str, **more: Any
) -> dict[str, Any]:
    return {
        "api_key": server.api_key,
        "base_url": server.base_url,
        "result_url": server.result_url,
        "journal": str(tmp_path / "journal.sqlite"),
        "backend": backend,
        **more,
    }


async def run_child(settings: dict[str, Any], *, kill_after: float | None = None) -> int:
    """Run a child to its end (or SIGKILL it ``kill_after`` seconds after it is ready)."""
    command = [sys.executable, __file__, json.dumps(settings)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = await anyio.open_process(command, env=env, stderr=subprocess.STDOUT)
    output = b""
    try:
        assert process.stdout is not None
        with anyio.fail_after(30):
            async for chunk in process.stdout:
                output += chunk
                if kill_after is not None and b"ready" in output:
                    await anyio.sleep(kill_after)
                    process.send_signal(signal.SIGKILL)
                    break
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with anyio.CancelScope(shield=True):
                await process.wait()
        await process.aclose()
    if code not in (0, -signal.SIGKILL):
        pytest.fail(f"the child failed ({code}):\n{output.decode(errors='replace')}")
    return code


async def resume(
    server: RunningServer, settings: dict[str, Any]
) -> tuple[list[ds.Outcome], list[JournalEntry]]:
    """Run the batch again in this process, with the same journal; its outcomes and journal."""
    # A batch runs in about 3 s: a stuck resume fails here, not at the test timeout.
    with anyio.fail_after(20):
        async with ds.AsyncDashScope(api_key=server.api_key, base_url=server.base_url) as client:
            async with ds.AsyncTaskRunner(client, **runner_options(settings)) as runner:
                outcomes = [outcome async for outcome in runner.map(batch(server.result_url))]
    async with await Journal.open(settings["journal"]) as journal:
        entries = await journal.entries()
    return outcomes, entries


async def crash_then_wait(
    settings: dict[str, Any], kill: list[Any], *, seconds: float
) -> dict[int, JournalEntry]:
    """Run a child that dies as ``kill`` says; the journal it left, by index, ``seconds`` later."""
    assert await run_child({**settings, "kill": kill}) == -signal.SIGKILL
    async with await Journal.open(settings["journal"]) as journal:
        entries = {entry.index: entry for entry in await journal.entries()}
    await anyio.sleep(seconds)
    return entries


def submissions_per_job(server: RunningServer) -> Counter[str]:
    return Counter(job_identity(task.body) for task in server.emulator.tasks.values())


def assert_key_not_in_journal(path: str) -> None:
    journal = Path(path)
    for file in journal.parent.glob(journal.name + "*"):
        assert API_KEY.encode() not in file.read_bytes(), file


def assert_every_job_done_once(
    server: RunningServer, outcomes: Sequence[ds.Outcome], entries: Sequence[JournalEntry]
) -> None:
    assert sorted(outcome.index for outcome in outcomes) == list(range(JOBS))
    failed = {o.index: o.error for o in outcomes if not o.ok}
    assert not failed
    per_job = submissions_per_job(server)
    assert len(per_job) == JOBS
    assert set(per_job.values()) == {1}, per_job
    assert not server.emulator.stats.duplicate_submissions
    assert Counter(entry.state for entry in entries) == {JobState.SUCCEEDED: JOBS}
    assert {entry.task_id for entry in entries} == set(server.emulator.tasks)


# Each scenario: the kills in order; each is (moment, count) for a child that kills itself, or
# ("random", seconds) for one the test kills that long after it started the batch.
SCENARIOS = {
    "after the first submit was sent, before its task id was recorded": [("after-send", 1)],
    "mid-batch, after a submit was sent, before its task id was recorded": [("after-send", 9)],
    "after an intent, before its submit was sent": [("before-send", 6)],
    "right after the first task id was recorded": [("submitted", 1)],
    "at random moments, three times in a row": [
        ("random", 0.25),
        ("random", 0.6),
        ("random", 0.15),
    ],
}


@pytest.mark.anyio
@pytest.mark.parametrize("kills", list(SCENARIOS.values()), ids=list(SCENARIOS))
async def test_a_killed_batch_resumes_without_paying_twice(
    anyio_backend: str, tmp_path: Path, kills: list[tuple[str, float]]
) -> None:
    rng = random.Random(str(kills))
    async with served() as server:
        settings = child_settings(
            server, tmp_path, anyio_backend, download_dir=str(tmp_path / "out")
        )
        for moment, when in kills:
            if moment == "random":
                delay = when * rng.uniform(0.5, 1.5)
                # A batch takes about 3 s: the kill comes well before its end.
                assert await run_child(settings, kill_after=delay) == -signal.SIGKILL, delay
            else:
                code = await run_child({**settings, "kill": [moment, when]})
                assert code == -signal.SIGKILL
        outcomes, entries = await resume(server, settings)
        assert_every_job_done_once(server, outcomes, entries)
        for outcome in outcomes:
            assert outcome.files, outcome.index
            for file in outcome.files:
                assert file.is_file() and file.stat().st_size > 0
        # (A download cut short by the kill may leave a hidden partial file; never an image.)
        images = sorted((tmp_path / "out").glob("[!.]*.png"))
        assert len(images) == JOBS
        assert_key_not_in_journal(settings["journal"])
        assert not server.emulator.stats.credential_leaks


@pytest.mark.anyio
@pytest.mark.parametrize("kill", [["submitted", 12], ["after-send", 12]])
async def test_a_batch_resumed_after_its_tasks_expired_says_so(
    anyio_backend: str, tmp_path: Path, kill: list[Any]
) -> None:
    # Tasks read UNKNOWN one second after they end (the service: 24 hours), and the runner is
    # told so: a submit the child sent and never heard back from can no longer be proven lost.
    async with served(task_retention=1.0) as server:
        settings = child_settings(server, tmp_path, anyio_backend, task_retention=1.0)
        before = await crash_then_wait(settings, kill, seconds=1.5)
        waiting = {i for i, e in before.items() if e.state is JobState.SUBMITTED}
        unanswered = {i for i, e in before.items() if e.state is JobState.INTENT}
        # The job whose task id was just recorded, or whose submit was just sent, at least.
        assert waiting if kill[0] == "submitted" else unanswered
        outcomes, _ = await resume(server, settings)
    by_index = {outcome.index: outcome for outcome in outcomes}
    assert sorted(by_index) == list(range(JOBS))
    for index in waiting:
        error = by_index[index].error
        assert isinstance(error, ds.TaskNotFoundError), (index, error)
        assert error.task_id == before[index].task_id
    for index in unanswered:
        # Its task, if the service made one, is gone from the task list: that proves nothing.
        error = by_index[index].error
        assert isinstance(error, ds.AmbiguousSubmitError), (index, error)
        assert "longer ago than the service keeps tasks" in str(error)
    assert all(o.ok for i, o in by_index.items() if i not in waiting | unanswered)
    # Never submitted twice: an expired task may have been billed.
    assert max(submissions_per_job(server).values()) == 1
    assert set(submissions_per_job(server)) >= {
        request_identity(o.request) for i, o in by_index.items() if i not in unanswered
    }


@pytest.mark.anyio
async def test_result_urls_that_expired_before_the_download_say_so(
    anyio_backend: str, tmp_path: Path
) -> None:
    # Result URLs live two seconds, to the whole second as OSS signs them (the service: 24 hours).
    async with served(result_url_lifetime=2.0) as server:
        settings = child_settings(server, tmp_path, anyio_backend)  # no download_dir at first
        before = await crash_then_wait(settings, ["succeeded", 8], seconds=2.5)
        assert sum(e.state is JobState.SUCCEEDED for e in before.values()) >= 8
        # Every task created before the crash (recorded or not) ended over two seconds ago.
        expired = {job_identity(task.body) for task in server.emulator.tasks.values()}
        resumed = {**settings, "download_dir": str(tmp_path / "out")}
        outcomes, entries = await resume(server, resumed)
    assert sorted(outcome.index for outcome in outcomes) == list(range(JOBS))
    for outcome in outcomes:
        if request_identity(outcome.request) in expired:
            assert isinstance(outcome.error, ds.ResultExpiredError), outcome
        else:
            assert outcome.ok and outcome.files, (outcome.index, outcome.error)
    # The results themselves stay recorded; only the images are lost.
    assert Counter(entry.state for entry in entries) == {JobState.SUCCEEDED: JOBS}
    assert set(submissions_per_job(server).values()) == {1}


@pytest.mark.anyio
async def test_a_budget_holds_across_a_crash(anyio_backend: str, tmp_path: Path) -> None:
    async with served() as server:
        settings = child_settings(server, tmp_path, anyio_backend, budget_images=20)
        await crash_then_wait(settings, ["succeeded", 9], seconds=0)
        outcomes, entries = await resume(server, settings)
        billed = sum(task.images for task in server.emulator.tasks.values())
    assert sorted(outcome.index for outcome in outcomes) == list(range(JOBS))
    assert billed == 20
    assert sum(outcome.ok for outcome in outcomes) == 20
    stopped = [o for o in outcomes if isinstance(o.error, ds.BudgetExceededError)]
    assert len(stopped) == 10
    assert Counter(entry.state for entry in entries)[JobState.SUCCEEDED] == 20
    assert set(submissions_per_job(server).values()) == {1}


if __name__ == "__main__":
    options = json.loads(sys.argv[1])
    anyio.run(child, options, backend=options["backend"])
