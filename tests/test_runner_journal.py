"""The runner with a journal: resume without submitting twice, replay, reconcile, budget.

Real time with short tasks: the journal works in a worker thread, and virtual clocks jump while
a thread works. Runs stop at a chosen event, not after a chosen time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

import dashscope_async as ds
from dashscope_async._journal import JobState, Journal, job_key
from dashscope_async._runner._pipeline import JobPipeline
from tests.fake_service import FakeClient

BATCH = [
    ds.StyleRepaint(f"https://example.com/{i}.jpg", style=ds.RepaintStyle.ANIME) for i in range(6)
]
MODEL = ds.STYLE_REPAINT.name
FAST: dict[str, Any] = {
    "limits": ds.Limits.default().with_model(MODEL, submit_rate=50),
    "poll": ds.PollPolicy(min_interval=0.01, run_time_priors={MODEL: 0.1}),
}

pytestmark = pytest.mark.anyio


def submits_per_request(fake: FakeClient) -> dict[str, int]:
    counts: dict[str, int] = {}
    for task in fake.tasks.values():
        image = str(getattr(task.request, "image", ""))
        counts[image] = counts.get(image, 0) + 1
    return counts


async def run_batch(
    fake: FakeClient, path: Path, *, stop_after_submits: int | None = None, **options: Any
) -> list[ds.Outcome]:
    """Run BATCH; with ``stop_after_submits``, leave the runner as that many tasks exist."""
    outcomes: list[ds.Outcome] = []
    with anyio.CancelScope() as scope:

        def on_event(event: ds.RunnerEvent) -> None:
            if (
                stop_after_submits is not None
                and event.kind is ds.EventKind.SUBMITTED
                and len(fake.tasks) >= stop_after_submits
            ):
                scope.cancel()

        async with ds.AsyncTaskRunner(
            fake.as_client(), journal=path, on_event=on_event, **{**FAST, **options}
        ) as runner:
            outcomes.extend([o async for o in runner.map(BATCH, ordered=True)])
    return outcomes


async def test_a_stopped_batch_resumes_without_submitting_anything_twice(tmp_path: Path) -> None:
    path = tmp_path / "batch.sqlite"
    fake = FakeClient(run_seconds=0.1)
    await run_batch(fake, path, stop_after_submits=3)
    assert len(fake.tasks) == 3
    polls_before = fake.polls

    outcomes = await run_batch(fake, path)
    assert [o.ok for o in outcomes] == [True] * len(BATCH)
    assert set(submits_per_request(fake).values()) == {1}
    # The first two finished in the first run and are replayed without a poll.
    assert [o.polls for o in outcomes[:2]] == [0, 0]
    assert fake.polls > polls_before
    async with await Journal.open(path) as journal:
        counts = await journal.counts()
    assert counts[JobState.SUCCEEDED] == len(BATCH)


@pytest.mark.parametrize("task_exists", [True, False])
async def test_an_intent_without_a_task_id_is_reconciled_first(
    tmp_path: Path, task_exists: bool
) -> None:
    path = tmp_path / "batch.sqlite"
    fake = FakeClient(run_seconds=0.1)
    request = BATCH[0]
    key = job_key(request, 0)
    # A crash right after the submit was sent, before its answer was recorded.
    async with await Journal.open(path) as journal:
        await journal.record_intent(
            key, index=0, model=MODEL, fingerprint=key.split(":")[0], sent_at=fake.clock.wall()
        )
    if task_exists:
        fake._create(request)
    async with ds.AsyncTaskRunner(
        fake.as_client(), journal=path, reconcile_grace=0.05, **FAST
    ) as runner:
        outcomes = [o async for o in runner.map([request])]
    assert outcomes[0].ok
    assert len(fake.tasks) == 1
    assert len(fake.submit_times) == (0 if task_exists else 1)


async def test_a_failed_job_is_replayed_not_paid_again(tmp_path: Path) -> None:
    path = tmp_path / "batch.sqlite"
    fake = FakeClient(run_seconds=0.05)
    fake.failing_prompts.add("bad")
    request = ds.SketchToImage("https://example.com/s.png", prompt="bad")
    for run in range(2):
        async with ds.AsyncTaskRunner(fake.as_client(), journal=path, **FAST) as runner:
            (outcome,) = [o async for o in runner.map([request])]
        if run == 0:
            assert isinstance(outcome.error, ds.TaskFailedError)
    assert isinstance(outcome.error, ds.RecordedFailureError)
    assert outcome.error.error_type == "TaskFailedError"
    assert outcome.error.code == "InternalError.Algo"
    assert len(fake.submit_times) == 1


async def test_a_task_expired_before_resume_is_an_outcome_that_says_so(tmp_path: Path) -> None:
    path = tmp_path / "batch.sqlite"
    fake = FakeClient(run_seconds=100.0)
    await run_batch(fake, path, stop_after_submits=1)
    (running,) = fake.tasks
    fake.forget(running)  # 24 hours later the service no longer knows it
    fake._run_seconds = 0.05
    outcomes = await run_batch(fake, path)
    assert isinstance(outcomes[0].error, ds.TaskNotFoundError)
    assert outcomes[0].task_id == running
    assert str(BATCH[0].image) not in submits_per_request(fake)  # never resubmitted
    assert all(o.ok for o in outcomes[1:])


async def test_what_earlier_runs_spent_counts_against_the_budget(tmp_path: Path) -> None:
    path = tmp_path / "batch.sqlite"
    fake = FakeClient(run_seconds=0.05)
    budget = ds.Budget(images=4)
    async with ds.AsyncTaskRunner(fake.as_client(), journal=path, budget=budget, **FAST) as runner:
        first = [o async for o in runner.map(BATCH[:3], ordered=True)]
    assert all(o.ok for o in first)
    outcomes = await run_batch(fake, path, budget=budget)
    assert [o.ok for o in outcomes] == [True, True, True, True, False, False]
    assert all(isinstance(o.error, ds.BudgetExceededError) for o in outcomes[4:])
    assert len(fake.tasks) == 4


async def test_cancelled_pending_jobs_run_again_on_resume(tmp_path: Path) -> None:
    path = tmp_path / "batch.sqlite"
    fake = FakeClient(run_seconds=0.05, pending_seconds=100.0)
    await run_batch(fake, path, stop_after_submits=1)
    (first,) = fake.tasks.values()
    assert first.canceled  # left while PENDING: cancelled on the service, not billed
    fake.pending_seconds = 0.0
    outcomes = await run_batch(fake, path)
    assert all(o.ok for o in outcomes)
    assert submits_per_request(fake)[str(BATCH[0].image)] == 2


async def test_a_changed_request_under_a_recorded_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "batch.sqlite"
    fake = FakeClient(run_seconds=0.05)
    first = ds.Job(BATCH[0], key="portrait-1")
    async with ds.AsyncTaskRunner(fake.as_client(), journal=path, **FAST) as runner:
        assert all(o.ok for o in [o async for o in runner.map([first])])
    changed = ds.Job(BATCH[1], key="portrait-1")
    async with ds.AsyncTaskRunner(fake.as_client(), journal=path, **FAST) as runner:
        (outcome,) = [o async for o in runner.map([changed])]
    assert isinstance(outcome.error, ds.ValidationError)
    assert outcome.error.field == "jobs[0].key"
    assert len(fake.tasks) == 1  # nothing replayed or sent for the changed job


@pytest.mark.parametrize("journaled", [False, True])
async def test_cancel_all_hands_out_every_started_job_and_a_succeeded_task_stays_billed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, journaled: bool
) -> None:
    fake = FakeClient(pending_seconds=0.05, run_seconds=0.05)
    saving = anyio.Event()

    async def save_forever(self: JobPipeline, state: Any, result: ds.TaskResult) -> Any:
        saving.set()
        await anyio.sleep_forever()

    monkeypatch.setattr(JobPipeline, "save", save_forever)
    journal = tmp_path / "journal.sqlite"
    async with ds.AsyncTaskRunner(
        fake.as_client(), download_dir=tmp_path, journal=journal if journaled else None, **FAST
    ) as runner:

        async def stop_while_saving() -> None:
            await saving.wait()
            runner.cancel_all()

        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_while_saving)
            async with runner.map(BATCH[:3]) as batch:
                outcomes = {o.index: o async for o in batch}
    # The batch was still being iterated: every job it started says how it ended.
    assert sorted(outcomes) == [0, 1, 2]
    saved = outcomes[0]
    assert isinstance(saved.error, ds.JobCanceledError) and saved.error.task_succeeded
    assert not saved.ok and not saved.error.canceled_on_service
    assert saved.task_id is not None and saved.error.task_id == saved.task_id
    assert fake.tasks[saved.task_id].status(fake.clock.now()) is ds.TaskStatus.SUCCEEDED
    assert saved.result is not None and saved.result.task_id == saved.task_id
    for later in (outcomes[1], outcomes[2]):
        assert isinstance(later.error, ds.JobCanceledError) and not later.error.task_succeeded
        assert later.result is None
        if later.error.canceled_on_service:
            assert later.task_id is not None and fake.tasks[later.task_id].canceled
    if journaled:
        async with await Journal.open(journal) as opened:
            (entry,) = await opened.entries(JobState.SUCCEEDED)
        assert entry.task_id == saved.task_id and entry.result == saved.result
