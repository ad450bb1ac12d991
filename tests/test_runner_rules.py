"""The runner's rules, one test per way they were once broken, against the in-process emulator.

Each test is named for the rule it checks and is judged by what the emulator recorded: which
input created which task, and which submits reached it when. Virtual time, both backends.
"""

from __future__ import annotations

import functools
import gc
import os
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

import dashscope_async as ds
from dashscope_async.testing import Emulator, EmulatorConfig, Fault
from tests.odd_inputs import BytesPath, ChangesOnceChecked
from tests.virtual_time import run_in_virtual_time, virtual_time

REPAINT = ds.STYLE_REPAINT.name
SKETCH = ds.SKETCH_TO_IMAGE.name


def emulator_with(max_in_progress: int = 1, *, seed: int = 1, run: float = 5.0) -> Emulator:
    config = EmulatorConfig(seed=seed, render_results=False)
    return Emulator(config.with_model(SKETCH, max_in_progress=max_in_progress, run_seconds=run))


def sketch(emulator: Emulator, name: str) -> ds.SketchToImage:
    return ds.SketchToImage(emulator.sample_image_url("sketch"), prompt=name)


def tasks_of(emulator: Emulator, name: str) -> list[str]:
    """Every task the input with this prompt created (the emulator's record)."""
    return [tid for tid in emulator.tasks if emulator.input_of(tid).get("prompt") == name]


def limits(max_in_progress: int) -> ds.Limits:
    return ds.Limits.default().with_model(SKETCH, max_in_progress=max_in_progress)


# --- resubmit only on proof ------------------------------------------------------------------


@virtual_time
async def test_resubmit_only_on_proof_failing_list_reads_never_make_a_second_task() -> None:
    emulator = emulator_with()
    emulator.faults.script("submit", Fault.drop_after())  # created, answer lost
    for fault in (Fault.server_error(), Fault.throttle(), Fault.drop_before()):
        emulator.faults.chance("list_tasks", fault, 0.34)
    emulator.faults.chance("list_tasks", Fault.error(503), 1.0)  # and then for good
    started = anyio.current_time()
    async with emulator.client() as client, ds.AsyncTaskRunner(client) as runner:
        outcome = await runner.submit(sketch(emulator, "lost")).wait()
    assert len(tasks_of(emulator, "lost")) == 1  # never a second paid task
    assert len(emulator.submits_received()) == 1
    error = outcome.error
    assert isinstance(error, ds.AmbiguousSubmitError)
    assert error.model == SKETCH and error.request == sketch(emulator, "lost")
    assert error.sent_at is not None
    # Bounded: the grace period and the reconcile timeout, not for ever.
    assert anyio.current_time() - started <= 30 + 60 + 10


@virtual_time
async def test_resubmit_only_on_proof_a_list_that_recovers_gives_the_job_its_own_task() -> None:
    emulator = emulator_with()
    emulator.faults.script("submit", Fault.drop_after())
    emulator.faults.script("list_tasks", Fault.server_error(), times=4)
    async with emulator.client() as client, ds.AsyncTaskRunner(client) as runner:
        outcome = await runner.submit(sketch(emulator, "found")).wait()
    assert outcome.ok, outcome.error
    assert tasks_of(emulator, "found") == [outcome.task_id]


@virtual_time
async def test_resubmit_only_on_proof_a_submit_processed_late_is_not_duplicated() -> None:
    emulator = emulator_with()
    # The client gives up after 1 s; the service creates the task 6 s (then 25 s) after.
    emulator.faults.script("submit", Fault.late(6.0, timeout=1.0))
    emulator.faults.script("submit", Fault.late(25.0, timeout=1.0))
    async with emulator.client() as client, ds.AsyncTaskRunner(client) as runner:
        first = await runner.submit(sketch(emulator, "late-6")).wait()
        second = await runner.submit(sketch(emulator, "late-25")).wait()
    for name, outcome in (("late-6", first), ("late-25", second)):
        assert outcome.ok, outcome.error
        assert tasks_of(emulator, name) == [outcome.task_id]


@virtual_time
async def test_resubmit_only_on_proof_a_submit_that_made_nothing_is_sent_again_once_proven() -> (
    None
):
    emulator = emulator_with()
    emulator.faults.script("submit", Fault.drop_before())  # lost before the service saw it
    async with emulator.client() as client, ds.AsyncTaskRunner(client) as runner:
        started = anyio.current_time()
        outcome = await runner.submit(sketch(emulator, "again")).wait()
    assert outcome.ok, outcome.error
    assert tasks_of(emulator, "again") == [outcome.task_id]
    assert outcome.submitted_at is not None
    assert outcome.submitted_at - started >= 30  # not before the grace period had passed


@virtual_time
async def test_resubmit_only_on_proof_a_list_that_forgot_the_task_proves_nothing() -> None:
    # The service keeps a task 60 s after it ended (24 h on DashScope); the task list fails for
    # 70 s after the lost submit, and by the time it answers the task is gone from it.
    config = EmulatorConfig(seed=1, render_results=False, task_retention=60.0)
    emulator = Emulator(config.with_model(SKETCH, run_seconds=5.0))
    emulator.faults.script("submit", Fault.drop_after())  # created, answer lost
    emulator.faults.script("list_tasks", Fault.server_error(), times=35)
    async with (
        emulator.client() as client,
        ds.AsyncTaskRunner(client, task_retention=60.0, reconcile_timeout=120.0) as runner,
    ):
        outcome = await runner.submit(sketch(emulator, "forgotten")).wait()
    assert len(tasks_of(emulator, "forgotten")) == 1  # never a second paid task
    assert len(emulator.submits_received()) == 1
    error = outcome.error
    assert isinstance(error, ds.AmbiguousSubmitError), error
    assert "longer ago than the service keeps tasks" in str(error)


@virtual_time
async def test_resubmit_only_on_proof_a_list_read_while_the_task_is_kept_still_finds_it() -> None:
    # The same, with the task kept long enough: the read after the failures finds it.
    config = EmulatorConfig(seed=1, render_results=False, task_retention=300.0)
    emulator = Emulator(config.with_model(SKETCH, run_seconds=5.0))
    emulator.faults.script("submit", Fault.drop_after())
    emulator.faults.script("list_tasks", Fault.server_error(), times=35)
    async with (
        emulator.client() as client,
        ds.AsyncTaskRunner(client, task_retention=300.0, reconcile_timeout=120.0) as runner,
    ):
        outcome = await runner.submit(sketch(emulator, "kept")).wait()
    assert outcome.ok, outcome.error
    assert tasks_of(emulator, "kept") == [outcome.task_id]


# --- adopt only what can only be ours -------------------------------------------------------


@pytest.mark.parametrize("shared", ["one runner", "two runners, one limiter"])
def test_adopt_only_what_can_only_be_ours_never_another_jobs_late_answered_task(
    shared: str,
) -> None:
    @virtual_time
    async def scenario() -> None:
        emulator = emulator_with(max_in_progress=2)
        # A's submit is processed at once but answered 5 s late; B's is lost unprocessed.
        emulator.faults.script("submit", Fault.slow(5.0))
        emulator.faults.script("submit", Fault.drop_before())
        async with emulator.client() as client:
            limiter = ds.LocalLimiter(limits(2), clock=client.clock)
            async with (
                ds.AsyncTaskRunner(client, limiter=limiter) as one,
                ds.AsyncTaskRunner(client, limiter=limiter) as other,
            ):
                a = one.submit(sketch(emulator, "A"))
                await anyio.sleep(0.6)  # B goes next, at the model's pace
                b = (one if shared == "one runner" else other).submit(sketch(emulator, "B"))
                outcomes = {"A": await a.wait(), "B": await b.wait()}
        for name, outcome in outcomes.items():
            assert outcome.ok, outcome.error
            assert tasks_of(emulator, name) == [outcome.task_id]  # its own, and only one
        assert outcomes["A"].task_id != outcomes["B"].task_id

    scenario("asyncio")
    scenario("trio")


@virtual_time
async def test_adopt_only_what_can_only_be_ours_two_lost_submits_are_both_ambiguous() -> None:
    emulator = emulator_with(max_in_progress=2)
    # Both answers lost while both were in flight, one task made: either job's, no telling whose.
    emulator.faults.script("submit", Fault.late(0.0, timeout=2.0))
    emulator.faults.script("submit", Fault.drop_before())
    async with (
        emulator.client() as client,
        ds.AsyncTaskRunner(client, limits=limits(2)) as runner,
    ):
        handles = [runner.submit(sketch(emulator, name)) for name in ("X", "Y")]
        outcomes = [await handle.wait() for handle in handles]
    assert all(isinstance(o.error, ds.AmbiguousSubmitError) for o in outcomes)
    assert len(emulator.tasks) == 1  # and nobody sent a second one
    assert len(emulator.submits_received()) == 2


# --- dropped means stopped ------------------------------------------------------------------


@pytest.mark.parametrize("leave", ["break", "move_on_after", "exception"])
def test_dropped_means_stopped_leaving_map_with_the_runner_open(leave: str) -> None:
    @virtual_time
    async def scenario() -> None:
        emulator = emulator_with(max_in_progress=3, run=20.0)
        async with (
            emulator.client() as client,
            ds.AsyncTaskRunner(client, limits=limits(3)) as runner,
        ):
            requests = [sketch(emulator, f"job {i}") for i in range(10)]
            if leave == "break":
                async for _ in runner.map(requests):
                    break
            elif leave == "move_on_after":
                with anyio.move_on_after(3.0):
                    async for _ in runner.map(requests):
                        pass
            else:
                with pytest.raises(KeyError):
                    async for _ in runner.map(requests):
                        raise KeyError("the caller's own error")
            left_at = anyio.current_time()
            submitted = len(emulator.tasks)
            await anyio.sleep(120)
            assert emulator.submits_received(since=left_at) == ()  # nothing more was sent
            assert len(emulator.tasks) == submitted
            assert all(emulator.status(t) is not ds.TaskStatus.PENDING for t in emulator.tasks)
            # The runner is still open for everyone else.
            assert (await runner.run(sketch(emulator, "after"))).images

    scenario("asyncio")
    scenario("trio")


@pytest.mark.parametrize("leave", ["break", "move_on_after", "cancelled in the body", "exception"])
def test_dropped_means_stopped_by_reference_counting_alone_with_the_collector_off(
    leave: str,
) -> None:
    # The service runs one task at a time (the others wait PENDING there) while the runner may
    # keep three in progress. With the cyclic garbage collector off, only reference counting can
    # free the batch: a reference cycle through it (a traceback, the event hub, a job) would
    # keep it alive, and the rest of the batch would be submitted.
    @virtual_time
    async def scenario() -> None:
        emulator = emulator_with(max_in_progress=1, run=20.0)
        events: list[ds.RunnerEvent] = []
        async with (
            emulator.client() as client,
            ds.AsyncTaskRunner(client, limits=limits(3), on_event=events.append) as runner,
        ):
            requests = [sketch(emulator, f"job {i}") for i in range(10)]
            was_enabled = gc.isenabled()
            gc.disable()
            try:
                if leave == "break":
                    async for _ in runner.map(requests):
                        break
                elif leave == "move_on_after":
                    with anyio.move_on_after(30.0):
                        async for _ in runner.map(requests):
                            pass
                elif leave == "cancelled in the body":
                    with anyio.move_on_after(30.0):
                        async for _ in runner.map(requests):
                            await anyio.sleep(1000)  # the cancellation lands here, not in the batch
                else:
                    with pytest.raises(KeyError):
                        async for _ in runner.map(requests):
                            raise KeyError("the caller's own error")
                left_at = anyio.current_time()
                submitted = len(emulator.tasks)
                waiting = [t for t in emulator.tasks if emulator.status(t) is ds.TaskStatus.PENDING]
                await anyio.sleep(120)
            finally:
                if was_enabled:
                    gc.enable()
            assert 1 < submitted < 10
            assert emulator.submits_received(since=left_at) == ()  # nothing more was sent
            assert len(emulator.tasks) == submitted
            statuses = [emulator.status(t) for t in emulator.tasks]
            assert ds.TaskStatus.PENDING not in statuses
            # The tasks waiting on the service when the loop was left were cancelled there.
            assert waiting
            assert all(emulator.status(t) is ds.TaskStatus.CANCELED for t in waiting)
            # The runner is still open for everyone else.
            assert (await runner.run(sketch(emulator, "after"))).images

    scenario("asyncio")
    scenario("trio")


@virtual_time
async def test_everything_inside_a_job_is_its_outcome_an_event_handler_that_raises() -> None:
    # The caller's own progress callback fails on every event, with an error that is not ours:
    # the jobs it reports on do not fail with it, and each gets its one outcome.
    emulator = emulator_with(max_in_progress=2)
    calls: list[ds.EventKind] = []

    def broken_progress_bar(event: ds.RunnerEvent) -> None:
        calls.append(event.kind)
        raise ZeroDivisionError("the caller's progress bar")

    async with (
        emulator.client() as client,
        ds.AsyncTaskRunner(client, limits=limits(2), on_event=broken_progress_bar) as runner,
    ):
        outcomes = [o async for o in runner.map([sketch(emulator, f"job {i}") for i in range(3)])]
        single = await runner.run(sketch(emulator, "single"))
    assert sorted(o.index for o in outcomes) == [0, 1, 2]
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert single.images
    assert calls.count(ds.EventKind.SUCCEEDED) == 4  # it was called for every event, to the end
    for i in range(3):
        assert len(tasks_of(emulator, f"job {i}")) == 1


@pytest.mark.parametrize("leave", ["break", "move_on_after", "exception"])
def test_dropped_means_stopped_two_runners_sharing_one_limiter(leave: str) -> None:
    # Two runners share one limiter (one task in progress, one submit turn at a time); the
    # first runner's batch is left while it holds the slot. The second runner's batch is not
    # held up by it, and nothing of the first is submitted after (collector off, as above).
    @virtual_time
    async def scenario() -> None:
        emulator = emulator_with(max_in_progress=1, run=5.0)
        async with emulator.client() as client:
            limiter = ds.LocalLimiter(limits(1), clock=client.clock)
            async with (
                ds.AsyncTaskRunner(client, limiter=limiter) as first,
                ds.AsyncTaskRunner(client, limiter=limiter) as second,
            ):
                left_at: list[float] = []

                async def leave_early() -> None:
                    requests = [sketch(emulator, f"first {i}") for i in range(6)]
                    if leave == "break":
                        async for _ in first.map(requests):
                            break
                    elif leave == "move_on_after":
                        with anyio.move_on_after(7.0):
                            async for _ in first.map(requests):
                                pass
                    else:
                        with pytest.raises(KeyError):
                            async for _ in first.map(requests):
                                raise KeyError("the caller's own error")
                    left_at.append(anyio.current_time())

                async def run_to_the_end() -> list[ds.Outcome]:
                    requests = [sketch(emulator, f"second {i}") for i in range(4)]
                    return [o async for o in second.map(requests)]

                was_enabled = gc.isenabled()
                gc.disable()
                try:
                    results: list[list[ds.Outcome]] = []
                    async with anyio.create_task_group() as group:
                        group.start_soon(leave_early)

                        async def collect() -> None:
                            results.append(await run_to_the_end())

                        group.start_soon(collect)
                finally:
                    if was_enabled:
                        gc.enable()
                await anyio.sleep(60)
            (outcomes,) = results
            assert all(o.ok for o in outcomes), [o.error for o in outcomes]
            for i in range(4):
                assert len(tasks_of(emulator, f"second {i}")) == 1
            late = [
                r
                for r in emulator.submits_received(since=left_at[0] + 1e-9)
                if str(r.get("prompt", "")).startswith("first")
            ]
            assert late == []
            assert sum(len(tasks_of(emulator, f"first {i}")) for i in range(6)) < 6
            statuses = {emulator.status(t) for t in emulator.tasks}
            assert ds.TaskStatus.PENDING not in statuses

    scenario("asyncio")
    scenario("trio")


# --- every wait is bounded -------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [60.0, None])
def test_every_wait_is_bounded_a_service_that_throttles_every_submit_for_good(
    timeout: float | None,
) -> None:
    @virtual_time
    async def scenario() -> None:
        emulator = emulator_with()
        emulator.faults.chance("submit", Fault.throttle(), 1.0)
        started = anyio.current_time()
        async with (
            emulator.client() as client,
            ds.AsyncTaskRunner(client, throttle_timeout=timeout) as runner,
        ):
            handles = [runner.submit(sketch(emulator, f"refused {i}")) for i in range(2)]
            if timeout is None:
                with anyio.move_on_after(3600):
                    await handles[0].wait()
                assert not handles[0].done  # waited out for ever, as asked
                return
            outcomes = [await handle.wait() for handle in handles]
        for outcome in outcomes:
            assert isinstance(outcome.error, ds.RateLimitError), outcome.error
            assert "throttle_timeout" in str(outcome.error)
        assert not tasks_of(emulator, "refused 0") and not tasks_of(emulator, "refused 1")
        # Each job gives up once refused for the timeout, then the next has its turn.
        assert anyio.current_time() - started <= 2 * (timeout + 30) + 10

    scenario("asyncio")
    scenario("trio")


@pytest.mark.parametrize("lost_answer", [False, True])
def test_exactly_one_outcome_a_job_cancelled_at_each_step_of_its_way(lost_answer: bool) -> None:
    # The job is cancelled after k steps, for every k until it ends by itself: the first steps
    # are scheduler checkpoints (the awaits that take no time: the slot, the submit turn, the
    # shielded submit), the later ones 0.2 s of virtual time each (reconciliation, the polls).
    # Each time: one outcome, at most one task, nothing sent after the cancel, and no task left
    # PENDING on the service. (No journal or download folder: their worker threads would race
    # the virtual clock.)
    async def scenario() -> None:
        statuses: set[str] = set()
        k = 0
        while True:
            emulator = emulator_with(run=5.0)
            if lost_answer:
                emulator.faults.script("submit", Fault.drop_after())
                emulator.faults.script("list_tasks", Fault.server_error(), times=3)
            events: list[ds.RunnerEvent] = []

            async with (
                emulator.client() as client,
                ds.AsyncTaskRunner(client, on_event=events.append) as runner,
            ):
                handle = runner.submit(ds.Job(sketch(emulator, "job"), key="job"))
                for step in range(k):
                    await (anyio.lowlevel.checkpoint() if step < 30 else anyio.sleep(0.2))
                finished_first = handle.done
                statuses.add(handle.status.value)
                handle.cancel()
                cancelled_at = anyio.current_time()
                outcome = await handle.wait()
                await anyio.sleep(60)
            assert outcome is handle.outcome
            final = (ds.EventKind.SUCCEEDED, ds.EventKind.FAILED, ds.EventKind.CANCELED)
            assert sum(e.kind in final for e in events) == 1, (k, events)
            tasks = tasks_of(emulator, "job")
            assert len(tasks) <= 1, k
            assert outcome.task_id is None or outcome.task_id in tasks
            assert all(emulator.status(t) is not ds.TaskStatus.PENDING for t in tasks)
            if not finished_first:
                assert emulator.submits_received(since=cancelled_at + 1e-9) == (), k
            if finished_first:
                assert outcome.ok, outcome.error
                # The cancels met the job waiting its turn (a warm planner may sleep through the
                # task's whole run, so "running" need not be seen between two polls).
                assert "queued" in statuses, statuses
                # Reconciling after the lost answer, or with the task waiting on the service.
                assert ("submitting" if lost_answer else "pending") in statuses, statuses
                return
            k += 1
            assert k < 1000  # the job ends by itself long before

    for backend in ("asyncio", "trio"):
        run_in_virtual_time(scenario, backend)


# --- everything that happens inside a job is that job's outcome ------------------------------


def test_odd_inputs_seen_when_the_request_is_built_never_reach_a_batch() -> None:
    odd: list[Callable[[], ds.Request]] = [
        lambda: ds.SketchToImage("https://example.com/a.png", prompt="lone \ud800 surrogate"),
        lambda: ds.StyleRepaint("/tmp/a\0b.png", style=1),
        lambda: ds.StyleRepaint(BytesPath(), style=1),  # type: ignore[arg-type]
    ]
    for build, field in zip(odd, ("prompt", "image", "image"), strict=True):
        with pytest.raises(ds.ValidationError, match=field):
            build()


@virtual_time
async def test_everything_inside_a_job_is_its_outcome_odd_jobs_never_crash_the_batch() -> None:
    emulator = emulator_with(run=1.0)
    odd: list[ds.Request] = [
        ds.StyleRepaint(ChangesOnceChecked("/tmp/lone \ud800 surrogate.png"), style=1),
        ds.StyleRepaint(ChangesOnceChecked("/tmp/a\0b.png"), style=1),
        ds.StyleRepaint(ChangesOnceChecked(b"/tmp/portrait.png"), style=1),
        ds.StyleRepaint(ChangesOnceChecked(None), style=1),
    ]
    good = [sketch(emulator, f"good {i}") for i in range(2)]
    async with emulator.client() as client, ds.AsyncTaskRunner(client) as runner:
        outcomes = [o async for o in runner.map([good[0], *odd, good[1]])]
    assert sorted(o.index for o in outcomes) == list(range(6))
    by_index = {o.index: o for o in outcomes}
    assert by_index[0].ok and by_index[5].ok
    for index in range(1, 5):
        assert isinstance(by_index[index].error, ds.DashScopeError), by_index[index]
    assert isinstance(by_index[4].error, ds.JobError)
    assert isinstance(by_index[4].error.cause, RuntimeError)


@virtual_time
async def test_everything_inside_a_job_is_its_outcome_downloads_that_cannot_be_saved() -> None:
    emulator = Emulator(EmulatorConfig(seed=2, time_scale=0.05))
    emulator.faults.script("result", Fault.redirect_loop(), times=50)
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"ds-i12-{os.getpid()}-{anyio.current_time()}"
    tmp.write_bytes(b"a file, not a folder")
    try:
        async with emulator.client() as client:
            async with ds.AsyncTaskRunner(client, download_dir=tmp) as runner:
                in_a_file = await runner.submit(sketch(emulator, "file")).wait()
            async with ds.AsyncTaskRunner(client, download_dir=tmp.with_suffix(".d")) as runner:
                looping = await runner.submit(sketch(emulator, "loop")).wait()
    finally:
        tmp.unlink()
    for outcome in (in_a_file, looping):
        assert not outcome.ok
        assert isinstance(outcome.error, ds.DashScopeError)
        assert outcome.task_id is not None  # the task ran (and was billed): say which


async def _async_progress_bar(event: ds.RunnerEvent) -> None:
    pass


class _AsyncProgressBar:
    async def __call__(self, event: ds.RunnerEvent) -> None:
        pass


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("reconcile_grace", -1.0),
        ("reconcile_grace", float("nan")),
        ("reconcile_grace", float("inf")),
        ("max_pending", 0),
        ("task_retention", 0),
        ("throttle_timeout", -1.0),
        ("on_event", "print"),
        ("on_event", _async_progress_bar),
        ("on_event", functools.partial(_async_progress_bar)),
        ("on_event", _AsyncProgressBar()),
    ],
)
def test_the_reconcile_settings_are_checked_when_the_runner_is_built(
    option: str, value: object
) -> None:
    emulator = emulator_with()
    with pytest.raises(ds.ValidationError, match=option):
        ds.AsyncTaskRunner(emulator.client(), **{option: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("option", "value"),
    [("reconcile_timeout", "60"), ("reconcile_grace", "2"), ("max_pending", "5")],
)
def test_reconcile_settings_of_the_wrong_type_are_a_type_error_naming_them(
    option: str, value: object
) -> None:
    emulator = emulator_with()
    with pytest.raises(TypeError, match=option):
        ds.AsyncTaskRunner(emulator.client(), **{option: value})  # type: ignore[arg-type]


@virtual_time
async def test_a_task_whose_answer_cannot_be_recorded_is_still_collected() -> None:
    """The submit record (Redis, for a fleet) goes away between the submit and its answer: the
    task exists and is billed, so the job polls it to its result instead of ending in error."""
    emulator = emulator_with()
    async with emulator.client() as client, ds.AsyncTaskRunner(client) as runner:
        record = runner._limiter.submits

        async def gone(ticket: object, task_id: str | None) -> None:
            raise ds.LimiterUnavailableError("the submit record is unreachable")

        record.answered = gone  # type: ignore[method-assign]
        outcomes = [o async for o in runner.map([sketch(emulator, "kept")])]
    assert [o.ok for o in outcomes] == [True]
    assert tasks_of(emulator, "kept") == [outcomes[0].task_id]
