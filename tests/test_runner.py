"""The runner's rules, one by one, against a scripted fake service in virtual time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import anyio
import pytest

import dashscope_async as ds
from dashscope_async._submits import LocalSubmitRecord
from tests.fake_service import FakeClient, server_error
from tests.virtual_time import virtual_time

REPAINT = ds.STYLE_REPAINT.name
SKETCH = ds.SKETCH_TO_IMAGE.name


def repaint(i: int = 0) -> ds.StyleRepaint:
    return ds.StyleRepaint(f"https://example.com/{i}.jpg", style=ds.RepaintStyle.ANIME)


def sketch(prompt: str = "a tree") -> ds.SketchToImage:
    return ds.SketchToImage("https://example.com/s.png", prompt=prompt)


async def collect(batch: ds.Batch) -> list[ds.Outcome]:
    return [outcome async for outcome in batch]


def peak_in_progress(fake: FakeClient, model: str) -> int:
    moments = [t.created for t in fake.tasks.values() if t.request.model == model]
    return max((fake.in_progress(model, at) for at in moments), default=0)


@virtual_time
async def test_every_job_gets_one_outcome_within_the_limits() -> None:
    fake = FakeClient(run_seconds=3.0)
    async with ds.AsyncTaskRunner(fake.as_client()) as runner:
        outcomes = await collect(runner.map([repaint(i) for i in range(6)] + [sketch()] * 3))
    assert sorted(o.index for o in outcomes) == list(range(9))
    assert all(o.ok and o.task_id for o in outcomes)
    assert len(fake.tasks) == 9
    assert peak_in_progress(fake, REPAINT) == 1
    assert peak_in_progress(fake, SKETCH) == 1


@virtual_time
async def test_models_run_side_by_side() -> None:
    fake = FakeClient(run_seconds=10.0)
    poll = ds.PollPolicy(run_time_priors={REPAINT: 10.0, SKETCH: 10.0})
    start = anyio.current_time()
    async with ds.AsyncTaskRunner(fake.as_client(), poll=poll) as runner:
        await collect(runner.map([repaint(), sketch()]))
    # One slot per model, not one in total: both finish in about one run time.
    assert anyio.current_time() - start < 12.0


@virtual_time
async def test_submissions_are_paced_without_bursts() -> None:
    fake = FakeClient(run_seconds=0.01)
    limits = ds.Limits.default().with_model(REPAINT, submit_rate=2, max_in_progress=100)
    async with ds.AsyncTaskRunner(fake.as_client(), limits=limits) as runner:
        await collect(runner.map([repaint(i) for i in range(20)]))
    gaps = [b - a for a, b in zip(fake.submit_times, fake.submit_times[1:], strict=False)]
    assert min(gaps) >= 0.5
    for start in fake.submit_times:
        assert sum(1 for t in fake.submit_times if start <= t < start + 1.0) <= 2


@virtual_time
async def test_ordered_yields_in_input_order() -> None:
    fake = FakeClient(run_seconds=lambda request: 10.0 if "0.jpg" in str(request) else 1.0)
    limits = ds.Limits.default().with_model(REPAINT, max_in_progress=10)
    async with ds.AsyncTaskRunner(fake.as_client(), limits=limits) as runner:
        unordered = [o.index for o in await collect(runner.map([repaint(i) for i in range(4)]))]
        ordered = [
            o.index for o in await collect(runner.map([repaint(i) for i in range(4)], ordered=True))
        ]
    assert unordered[-1] == 0
    assert ordered == [0, 1, 2, 3]


@virtual_time
async def test_a_failed_task_is_an_outcome_not_an_exception() -> None:
    fake = FakeClient()
    fake.failing_prompts.add("bad")
    async with ds.AsyncTaskRunner(fake.as_client()) as runner:
        outcomes = await collect(runner.map([sketch("bad"), sketch("good")], ordered=True))
    assert isinstance(outcomes[0].error, ds.TaskFailedError)
    assert outcomes[0].error.code == "InternalError.Algo"
    assert outcomes[1].ok


@virtual_time
async def test_stop_on_error_cancels_the_rest() -> None:
    fake = FakeClient()
    fake.failing_prompts.add("bad")
    async with ds.AsyncTaskRunner(fake.as_client()) as runner:
        outcomes = await collect(
            runner.map([sketch("bad")] + [sketch(f"p{i}") for i in range(5)], stop_on_error=True)
        )
    assert len(outcomes) == 1 and not outcomes[0].ok
    assert len(fake.tasks) < 6


@virtual_time
async def test_a_throttled_submit_pauses_and_is_retried() -> None:
    fake = FakeClient()
    fake.submit_faults.extend(["throttle", "throttle"])
    events: list[ds.RunnerEvent] = []
    async with ds.AsyncTaskRunner(fake.as_client(), on_event=events.append) as runner:
        result = await runner.run(repaint())
    assert result.images
    assert len(fake.submit_times) == 3
    assert len(fake.tasks) == 1
    assert [e.kind for e in events].count(ds.EventKind.THROTTLED) == 2
    assert fake.submit_times[1] - fake.submit_times[0] >= 1.0  # the service's Retry-After


@virtual_time
async def test_an_ambiguous_submit_that_created_a_task_is_adopted() -> None:
    fake = FakeClient()
    fake.submit_faults.append("lost-created")
    async with ds.AsyncTaskRunner(fake.as_client()) as runner:
        outcome = await runner.submit(repaint()).wait()
    assert outcome.ok
    assert len(fake.tasks) == 1
    assert outcome.task_id == next(iter(fake.tasks))


@virtual_time
async def test_an_ambiguous_submit_that_created_nothing_is_resubmitted_once_proven() -> None:
    fake = FakeClient()
    fake.submit_faults.append("lost-not-created")
    async with ds.AsyncTaskRunner(fake.as_client(), reconcile_grace=1.0) as runner:
        outcome = await runner.submit(repaint()).wait()
    assert outcome.ok
    assert len(fake.submit_times) == 2
    assert len(fake.tasks) == 1
    assert fake.list_calls >= 2  # looked more than once before calling it proof


@virtual_time
async def test_an_ambiguous_submit_with_several_candidates_is_never_resubmitted() -> None:
    fake = FakeClient()
    fake.submit_faults.append("lost-created")
    fake.add_stranger_task(repaint(99))
    async with ds.AsyncTaskRunner(fake.as_client()) as runner:
        outcome = await runner.submit(repaint()).wait()
    assert isinstance(outcome.error, ds.AmbiguousSubmitError)
    assert len(fake.submit_times) == 1


@virtual_time
async def test_poll_errors_are_retried_not_failures() -> None:
    fake = FakeClient(run_seconds=2.0)
    fake.poll_faults.extend([server_error(), server_error()])
    async with ds.AsyncTaskRunner(fake.as_client()) as runner:
        result = await runner.run(repaint())
    assert result.images


@virtual_time
async def test_a_deadline_cancels_a_pending_task_on_the_service() -> None:
    fake = FakeClient(pending_seconds=100.0)
    poll = ds.PollPolicy(deadline=5.0)
    async with ds.AsyncTaskRunner(fake.as_client(), poll=poll) as runner:
        outcome = await runner.submit(repaint()).wait()
    assert isinstance(outcome.error, ds.TaskTimeoutError)
    assert outcome.error.status is ds.TaskStatus.PENDING
    assert outcome.task_id is not None and fake.cancels == [outcome.task_id]
    assert fake.tasks[outcome.task_id].canceled


@virtual_time
async def test_a_deadline_on_a_running_task_reports_its_id() -> None:
    fake = FakeClient(run_seconds=100.0)
    async with ds.AsyncTaskRunner(fake.as_client(), poll=ds.PollPolicy(deadline=5.0)) as runner:
        outcome = await runner.submit(repaint()).wait()
    assert isinstance(outcome.error, ds.TaskTimeoutError)
    assert outcome.error.status is ds.TaskStatus.RUNNING
    assert outcome.task_id is not None and outcome.task_id in str(outcome.error)


@virtual_time
async def test_cancelling_a_handle_cancels_the_pending_task() -> None:
    fake = FakeClient(pending_seconds=100.0)
    async with ds.AsyncTaskRunner(fake.as_client()) as runner:
        handle = runner.submit(repaint())
        task_id = await handle.wait_submitted()
        handle.cancel()
        outcome = await handle.wait()
    assert isinstance(outcome.error, ds.JobCanceledError)
    assert outcome.error.canceled_on_service
    assert fake.cancels == [task_id]
    with pytest.raises(ds.JobCanceledError):
        await handle


@virtual_time
async def test_leaving_the_runner_drops_unsubmitted_and_cancels_pending() -> None:
    fake = FakeClient(pending_seconds=100.0)
    async with ds.AsyncTaskRunner(fake.as_client()) as runner:
        handles = [runner.submit(repaint(i)) for i in range(3)]
        await handles[0].wait_submitted()
    outcomes = [h.outcome for h in handles]
    assert all(o is not None and isinstance(o.error, ds.JobCanceledError) for o in outcomes), (
        outcomes
    )
    assert len(fake.tasks) == 1  # one slot: the others never went
    assert all(task.canceled for task in fake.tasks.values())


@virtual_time
async def test_leaving_a_batch_early_cancels_the_rest() -> None:
    fake = FakeClient(pending_seconds=3.0, run_seconds=1.0)
    async with ds.AsyncTaskRunner(fake.as_client()) as runner:
        async with runner.map([repaint(i) for i in range(10)]) as outcomes:
            async for _ in outcomes:
                break
        submitted_after_break = len(fake.tasks)
        await anyio.sleep(60)
        assert len(fake.tasks) == submitted_after_break
    assert submitted_after_break <= 3
    pending = [t for t in fake.tasks.values() if t.created + 3.0 > max(fake.submit_times)]
    assert all(t.canceled for t in pending[1:])


@virtual_time
async def test_the_budget_stops_submissions() -> None:
    fake = FakeClient()
    async with ds.AsyncTaskRunner(fake.as_client(), budget=ds.Budget(images=2)) as runner:
        outcomes = await collect(runner.map([repaint(i) for i in range(4)], ordered=True))
    assert [o.ok for o in outcomes] == [True, True, False, False]
    assert all(isinstance(o.error, ds.BudgetExceededError) for o in outcomes[2:])
    assert len(fake.tasks) == 2


@virtual_time
async def test_a_failed_task_gives_its_reservation_back() -> None:
    fake = FakeClient()
    fake.failing_prompts.add("bad")
    budget = ds.Budget(cny="0.06")  # one sketch image
    async with ds.AsyncTaskRunner(fake.as_client(), budget=budget) as runner:
        outcomes = await collect(runner.map([sketch("bad"), sketch("good")], ordered=True))
        assert runner.ledger is not None and runner.ledger.spent_images == 1
    assert [o.ok for o in outcomes] == [False, True]


@virtual_time
async def test_input_is_pulled_lazily() -> None:
    fake = FakeClient(run_seconds=0.5)
    pulled = 0

    def requests() -> Iterator[ds.StyleRepaint]:
        nonlocal pulled
        for i in range(1000):
            pulled += 1
            yield repaint(i)

    async with ds.AsyncTaskRunner(fake.as_client(), max_pending=4) as runner:
        async with runner.map(requests()) as outcomes:
            seen = 0
            async for _ in outcomes:
                seen += 1
                if seen == 3:
                    break
    assert pulled <= 3 + 4 + 1


@virtual_time
async def test_async_iterables_and_jobs_with_keys() -> None:
    fake = FakeClient()

    async def jobs() -> AsyncIterator[ds.Job]:
        for i in range(3):
            yield ds.Job(repaint(i), key=f"photo-{i}")

    async with ds.AsyncTaskRunner(fake.as_client()) as runner:
        outcomes = await collect(runner.map(jobs(), ordered=True))
    assert [o.key for o in outcomes] == ["photo-0", "photo-1", "photo-2"]


@virtual_time
async def test_bad_items_become_validation_outcomes() -> None:
    fake = FakeClient()
    async with ds.AsyncTaskRunner(fake.as_client()) as runner:
        outcomes = await collect(runner.map([repaint(), "not a request"], ordered=True))  # type: ignore[list-item]
    assert outcomes[0].ok
    assert isinstance(outcomes[1].error, ds.ValidationError)
    assert outcomes[1].error.field == "requests[1]"
    assert len(fake.tasks) == 1


@virtual_time
async def test_an_iterable_that_raises_ends_the_batch_with_its_error() -> None:
    fake = FakeClient()

    def requests() -> Iterator[ds.StyleRepaint]:
        yield repaint()
        raise RuntimeError("manifest broke")

    async with ds.AsyncTaskRunner(fake.as_client()) as runner:
        seen: list[ds.Outcome] = []
        with pytest.raises(RuntimeError, match="manifest broke"):
            async for outcome in runner.map(requests()):
                seen.append(outcome)  # noqa: PERF401 - the loop must keep what came before the error
    assert len(seen) == 1 and seen[0].ok


@virtual_time
async def test_concurrent_run_callers_are_served_first_come_first_served() -> None:
    fake = FakeClient(run_seconds=1.0)
    finished: list[int] = []

    async def caller(runner: ds.AsyncTaskRunner, i: int) -> None:
        await runner.run(repaint(i))
        finished.append(i)

    async with ds.AsyncTaskRunner(fake.as_client()) as runner, anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(caller, runner, i)
            await anyio.sleep(0.01)
    assert finished == [0, 1, 2, 3, 4]


@virtual_time
async def test_cancelling_a_run_caller_cancels_its_job() -> None:
    fake = FakeClient(pending_seconds=100.0)
    async with ds.AsyncTaskRunner(fake.as_client()) as runner:
        with anyio.move_on_after(5):
            await runner.run(repaint())
    assert len(fake.tasks) == 1
    assert next(iter(fake.tasks.values())).canceled


@virtual_time
async def test_events_stream_reports_the_life_of_a_job() -> None:
    fake = FakeClient()
    async with ds.AsyncTaskRunner(fake.as_client()) as runner:
        async with runner.events() as events:
            await runner.run(repaint())
            kinds = []
            async for event in events:
                kinds.append(event.kind)
                if event.kind is ds.EventKind.SUCCEEDED:
                    break
    assert kinds[0] is ds.EventKind.QUEUED
    assert ds.EventKind.SUBMITTED in kinds
    assert kinds[-1] is ds.EventKind.SUCCEEDED


@virtual_time
async def test_the_runner_learns_run_times_and_polls_little() -> None:
    fake = FakeClient(run_seconds=15.0)
    async with ds.AsyncTaskRunner(fake.as_client()) as runner:
        outcomes = await collect(runner.map([repaint(i) for i in range(10)]))
    polls = [o.polls for o in outcomes]
    # The official SDK needs about 8 polls for a 15 s task.
    assert sum(polls[3:]) / len(polls[3:]) < 8


@virtual_time
async def test_using_the_runner_outside_its_block_is_an_error() -> None:
    runner = ds.AsyncTaskRunner(FakeClient().as_client())
    with pytest.raises(RuntimeError, match="async with"):
        runner.submit(repaint())


@virtual_time
async def test_a_runner_that_forgot_recent_tasks_reports_a_lost_submit_instead_of_guessing() -> (
    None
):
    fake = FakeClient(run_seconds=0.1)
    record = LocalSubmitRecord(fake.clock.wall, limit=2)
    limiter = ds.LocalLimiter(clock=fake.clock, submits=record)
    async with ds.AsyncTaskRunner(fake.as_client(), limiter=limiter) as runner:
        await collect(runner.map([repaint(i) for i in range(4)]))
        fake.submit_faults.append("lost-created")
        outcome = await runner.submit(repaint(9)).wait()
    assert isinstance(outcome.error, ds.AmbiguousSubmitError)
    assert len(fake.submit_times) == 5  # never resubmitted


@virtual_time
async def test_a_job_over_budget_uploads_nothing() -> None:
    fake = FakeClient()
    async with ds.AsyncTaskRunner(fake.as_client(), budget=ds.Budget(images=1)) as runner:
        outcomes = await collect(runner.map([repaint(0), repaint(1)], ordered=True))
    assert outcomes[0].ok and isinstance(outcomes[1].error, ds.BudgetExceededError)
    assert fake.prepared == [repaint(0)]
