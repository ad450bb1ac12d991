"""A model-based test of the runner over the whole fault space, judged by the emulator's records.

Hypothesis draws a world (tasks in progress allowed 1-4, one runner or two sharing a limiter, a
download folder or a file in its place) and a schedule: faults on every route (lost submit
answers before and after creation, submits processed past the client's timeout, list reads that
fail once, several times or for good with 5xx, 429 and drops, 408s, 200s that are not JSON, a
``Retry-After`` of a day, submits throttled for good, redirect loops on result URLs), and steps started at drawn times
(batches of ordinary and odd jobs, left by ``break``, by a timeout or never; single jobs
cancelled at a drawn moment). Every schedule runs on asyncio and on trio, in virtual time.

After each run the emulator's records must show:

* every job handed in got exactly one outcome;
* no input ever produced more than one task;
* every task a job reported (adopted or not) was created by that job's own input;
* no exception escaped the runner;
* no submit of a dropped batch's or cancelled job's input reached the service after it was
  dropped or cancelled.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import attrs
import hypothesis.strategies as st
import trio.testing
from hypothesis import HealthCheck, given, settings

import dashscope_async as ds
from dashscope_async.testing import Emulator, EmulatorConfig, Fault
from tests.odd_inputs import ChangesOnceChecked
from tests.virtual_time import VirtualTimeEventLoop

SKETCH = ds.SKETCH_TO_IMAGE.name
REPAINT = ds.STYLE_REPAINT.name

#: Totals over every schedule run, printed with ``DS_STATEFUL_REPORT=1`` (and checked: all 0).
TOTALS: Counter[str] = Counter()

FOREVER = -1

ROUTE_FAULTS: dict[str, list[Fault]] = {
    "submit": [
        Fault.drop_before(),
        Fault.drop_after(),
        Fault.late(2.0, timeout=1.0),
        Fault.late(6.0, timeout=1.0),
        Fault.late(25.0, timeout=1.0),
        Fault.malformed_json(),
        Fault.html_200(),
        Fault.error(503),
        Fault.error(408),
        Fault.throttle(retry_after="86400"),
        Fault.throttle(),
    ],
    "get_task": [
        Fault.throttle(retry_after="86400"),
        Fault.error(408),
        Fault.error(503),
        Fault.bare_500(),
        Fault.html_200(),
        Fault.malformed_json(),
        Fault.drop_before(),
        Fault.slow(3.0),
    ],
    "list_tasks": [
        Fault.server_error(),
        Fault.throttle(retry_after="86400"),
        Fault.drop_before(),
        Fault.error(408),
        Fault.html_200(),
        Fault.malformed_json(),
    ],
    "cancel_task": [Fault.error(503), Fault.drop_before()],
    "result": [Fault.redirect_loop()],
}

faults = st.lists(
    st.sampled_from(
        [(route, fault) for route, kinds in ROUTE_FAULTS.items() for fault in kinds]
    ).flatmap(
        # For good included: a service that throttles every submit for ever is waited out for
        # ``throttle_timeout``, then each job ends with RateLimitError.
        lambda pair: st.tuples(
            st.just(pair[0]), st.just(pair[1]), st.sampled_from([1, 2, 4, FOREVER])
        )
    ),
    max_size=5,
)


@attrs.frozen
class BatchStep:
    at: float
    runner: int
    jobs: int
    odd: tuple[int, ...]
    leave: str  # "never", "break", "timeout"
    after: float  # outcomes before a break / seconds before a timeout


@attrs.frozen
class SingleStep:
    at: float
    runner: int
    cancel_after: float | None


steps = st.lists(
    st.one_of(
        st.builds(
            BatchStep,
            at=st.sampled_from([0.0, 0.3, 2.0, 7.0]),
            runner=st.integers(0, 1),
            jobs=st.integers(1, 4),
            odd=st.lists(st.integers(0, 3), max_size=2).map(tuple),
            leave=st.sampled_from(["never", "never", "break", "timeout"]),
            after=st.sampled_from([0.0, 1.0, 2.0, 5.0]),
        ),
        st.builds(
            SingleStep,
            at=st.sampled_from([0.0, 1.0, 4.0]),
            runner=st.integers(0, 1),
            cancel_after=st.sampled_from([None, None, 0.5, 3.0, 12.0]),
        ),
    ),
    min_size=1,
    max_size=5,
)


def odd_request(kind: int, marker: str) -> ds.Request:
    # Each passes the request's checks, then turns odd when the job reads it.
    later: tuple[str | bytes | None, ...] = (
        f"/tmp/{marker} \ud800.png",  # a lone surrogate
        f"/tmp/{marker}\0.png",  # NUL in a path
        b"/tmp/portrait.png",  # bytes
        None,  # an exception that is not ours
    )
    return ds.StyleRepaint(ChangesOnceChecked(later[kind]), style=1)


@attrs.define
class World:
    """What the test knows the runner was asked to do, to judge the emulator's records by."""

    emulator: Emulator
    queued: Counter[str] = attrs.field(factory=Counter)
    ended: Counter[str] = attrs.field(factory=Counter)
    reported: dict[str, set[str]] = attrs.field(factory=dict)
    stopped_at: dict[str, float] = attrs.field(factory=dict)
    markers: list[str] = attrs.field(factory=list)
    jobs: int = 0

    def on_event(self, event: ds.RunnerEvent) -> None:
        assert event.key is not None
        if event.kind is ds.EventKind.QUEUED:
            self.queued[event.key] += 1
        elif event.kind in (
            ds.EventKind.SUCCEEDED,
            ds.EventKind.FAILED,
            ds.EventKind.CANCELED,
        ):
            self.ended[event.key] += 1
        if event.task_id is not None:
            self.reported.setdefault(event.key, set()).add(event.task_id)
        if event.kind is ds.EventKind.RECONCILED:
            TOTALS["adopted" if event.task_id else "proven absent, resubmitted"] += 1
        if event.kind is ds.EventKind.FAILED and "could not settle it" in (event.error or ""):
            TOTALS["ambiguous"] += 1
        if event.kind is ds.EventKind.FAILED and "throttle_timeout" in (event.error or ""):
            TOTALS["refused for throttling, given up"] += 1

    def new_job(self, request: ds.Request, marker: str) -> ds.Job:
        self.jobs += 1
        self.markers.append(marker)
        return ds.Job(request, key=marker)


async def run_schedule(
    max_in_progress: int,
    two_runners: bool,
    download: str,
    schedule: list[tuple[str, Fault, int]],
    plan: list[BatchStep | SingleStep],
    seed: int,
    folder: Path,
    throttled_for_good: bool = False,
) -> None:
    config = EmulatorConfig(seed=seed, time_scale=0.05, render_results=False)
    for model in (SKETCH, REPAINT):
        config = config.with_model(model, max_in_progress=max_in_progress)
    emulator = Emulator(config)
    for route, fault, times in schedule:
        if times == FOREVER:
            emulator.faults.chance(route, fault, 1.0)  # type: ignore[arg-type]
        else:
            emulator.faults.script(route, fault, times=times)  # type: ignore[arg-type]
    world = World(emulator)
    if throttled_for_good:
        # Every submit refused for ever: waited out for ``throttle_timeout``, then each job ends
        # with RateLimitError (drawn apart so that it is sure to be tried often).
        emulator.faults.chance("submit", Fault.throttle(), 1.0)
        TOTALS["schedules throttling every submit for good"] += 1
    TOTALS["steps"] += len(plan)
    url = emulator.sample_image_url("sketch")
    download_dir: Path | None = None
    if download == "file":
        download_dir = folder / "a-file"
        download_dir.write_bytes(b"not a folder")
    elif download == "folder":
        download_dir = folder / "images"
    limits = ds.Limits.default()
    for model in (SKETCH, REPAINT):
        limits = limits.with_model(model, max_in_progress=max_in_progress)
    counter = iter(range(10_000))

    def marker() -> str:
        return f"job-{next(counter)}"

    async def batch(runner: ds.AsyncTaskRunner, step: BatchStep) -> None:
        await anyio.sleep(step.at)
        jobs = []
        names = []
        for i in range(step.jobs + len(step.odd)):
            name = marker()
            names.append(name)
            request = (
                odd_request(step.odd[i - step.jobs], name)
                if i >= step.jobs
                else ds.SketchToImage(url, prompt=name)
            )
            jobs.append(world.new_job(request, name))
        seen = 0
        if step.leave == "timeout":
            with anyio.move_on_after(step.after) as scope:
                async for _ in runner.map(jobs):
                    seen += 1
            if scope.cancelled_caught:
                left = anyio.current_time()
                world.stopped_at.update(dict.fromkeys(names, left))
            return
        async for _ in runner.map(jobs):
            seen += 1
            if step.leave == "break" and seen > step.after:
                break
        else:
            assert seen == len(jobs)  # every job of a batch left alone gives one outcome
            return
        world.stopped_at.update(dict.fromkeys(names, anyio.current_time()))

    async def single(runner: ds.AsyncTaskRunner, step: SingleStep) -> None:
        await anyio.sleep(step.at)
        name = marker()
        handle = runner.submit(world.new_job(ds.SketchToImage(url, prompt=name), name))
        if step.cancel_after is not None:
            with anyio.move_on_after(step.cancel_after):
                await handle.wait()
            if not handle.done:
                handle.cancel()
                world.stopped_at[name] = anyio.current_time()
        outcome = await handle.wait()
        assert outcome.key == name

    async with emulator.client(max_retries=1) as client:
        limiter = ds.LocalLimiter(limits, clock=client.clock)
        runners = [
            ds.AsyncTaskRunner(
                client,
                limiter=limiter,
                on_event=world.on_event,
                download_dir=download_dir,
                # Polls that fail for good would poll for ever: every job has a deadline.
                poll=ds.PollPolicy(deadline=120),
                throttle_timeout=120,
            )
            for _ in range(2 if two_runners else 1)
        ]
        try:
            async with AsyncExitStack() as stack:
                chosen = [await stack.enter_async_context(runner) for runner in runners]
                async with anyio.create_task_group() as steps_group:
                    for step in plan:
                        runner = chosen[step.runner % len(chosen)]
                        if isinstance(step, BatchStep):
                            steps_group.start_soon(batch, runner, step)
                        else:
                            steps_group.start_soon(single, runner, step)
        except BaseException as exc:  # pragma: no cover - reported as a property failure
            TOTALS["escaped exceptions"] += 1
            raise AssertionError(f"an exception escaped the runner: {exc!r}") from exc
        await anyio.sleep(60)  # anything still sent would arrive now

    judge(world)


def judge(world: World) -> None:
    emulator = world.emulator
    by_marker: dict[str, list[str]] = {}
    for task_id in emulator.tasks:
        prompt = str(emulator.input_of(task_id).get("prompt", ""))
        by_marker.setdefault(prompt, []).append(task_id)
    duplicates = sum(len(ids) - 1 for ids in by_marker.values() if len(ids) > 1)
    lost = sum(1 for key in world.queued if world.ended[key] != 1)
    # A batch left early never pulled the rest of its input: those were never handed in.
    never_handed_in = [m for m in world.markers if m not in world.queued]
    lost += sum(1 for m in never_handed_in if m not in world.stopped_at)
    wrong = sum(
        1
        for key, task_ids in world.reported.items()
        for task_id in task_ids
        if str(emulator.input_of(task_id).get("prompt", "")) != key
    )
    late = 0
    for key, stopped in world.stopped_at.items():
        late += sum(
            1
            for request in emulator.submits_received(since=stopped + 1e-9)
            if request.get("prompt") == key
        )
    TOTALS["schedules"] += 1
    TOTALS["faults injected"] += sum(emulator.stats.faults_injected.values())
    TOTALS["jobs"] += world.jobs
    TOTALS["duplicate tasks"] += duplicates
    TOTALS["wrong adoptions"] += wrong
    TOTALS["lost outcomes"] += lost
    TOTALS["jobs handed in"] += len(world.queued)
    TOTALS["submits after a drop"] += late
    TOTALS["tasks"] += len(emulator.tasks)
    assert lost == 0, f"jobs without exactly one outcome: {lost}"
    assert duplicates == 0, f"inputs with more than one task: {by_marker}"
    assert wrong == 0, "a job reported a task another input created"
    assert late == 0, "a dropped or cancelled job's input was submitted after it stopped"


@settings(
    max_examples=int(os.environ.get("DS_STATEFUL_EXAMPLES", "150")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    max_in_progress=st.integers(1, 4),
    two_runners=st.booleans(),
    download=st.sampled_from(["none", "none", "file", "folder"]),
    schedule=faults,
    plan=steps,
    seed=st.integers(0, 2**16),
    throttled_for_good=st.sampled_from([False, False, False, True]),
)
def test_under_every_fault_each_job_ends_once_and_nothing_is_paid_twice(
    max_in_progress: int,
    two_runners: bool,
    download: str,
    schedule: list[tuple[str, Fault, int]],
    plan: list[BatchStep | SingleStep],
    seed: int,
    throttled_for_good: bool,
) -> None:
    for backend in ("asyncio", "trio"):
        options: dict[str, Any] = (
            {"clock": trio.testing.MockClock(autojump_threshold=0)}
            if backend == "trio"
            else {"loop_factory": VirtualTimeEventLoop}
        )
        with tempfile.TemporaryDirectory() as folder:
            anyio.run(
                run_schedule,
                max_in_progress,
                two_runners,
                download,
                schedule,
                plan,
                seed,
                Path(folder),
                throttled_for_good,
                backend=backend,
                backend_options=options,
            )
    if os.environ.get("DS_STATEFUL_REPORT"):
        sys.stderr.write(f"{dict(TOTALS)}\n")
