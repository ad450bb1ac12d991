"""The one retry policy and the one poll loop, against the emulator in virtual time.

``client.wait()`` and the runner poll through the same loop (``_poll_loop``) and ask the same
policy (``_retry``) what is transient and how long a server may make them wait: each test here
is a defect that policy makes impossible, named for the rule it checks, and judged by what the
emulator recorded.
"""

from __future__ import annotations

from datetime import timedelta
from email.utils import format_datetime

import anyio
import pytest

import dashscope_async as ds
from dashscope_async._retry import MAX_RETRY_AFTER
from dashscope_async.testing import Emulator, EmulatorConfig, Fault
from tests.virtual_time import run_in_virtual_time, virtual_time

REPAINT = ds.STYLE_REPAINT.name
DAY = "86400"


def emulator(seed: int = 7) -> Emulator:
    return Emulator(EmulatorConfig(seed=seed, render_results=False))


def repaint(emu: Emulator, job: int = 0) -> ds.StyleRepaint:
    return ds.StyleRepaint(
        f"{emu.sample_image_url('portrait')}?job={job}", style=ds.RepaintStyle.ANIME
    )


async def one_task(emu: Emulator, client: ds.AsyncDashScope) -> ds.Task:
    return await client.submit(repaint(emu))


# --- Retry-After is capped, and clipped to the caller's deadline (defect 6) ----------------------


@virtual_time
async def test_one_retry_policy_wait_returns_at_its_timeout_whatever_retry_after_says() -> None:
    emu = emulator()
    async with emu.client() as client:
        task = await one_task(emu, client)
        emu.faults.script("get_task", Fault.throttle(retry_after=DAY), times=100)
        start = anyio.current_time()
        with pytest.raises(ds.TaskTimeoutError) as caught:
            await client.wait(task.task_id, timeout=5)
        waited = anyio.current_time() - start
    assert waited == pytest.approx(5.0)
    assert caught.value.task_id == task.task_id
    assert emu.stats.requests["get_task"] == 1  # polled at once; the next would pass the deadline


@virtual_time
async def test_one_retry_policy_a_day_long_retry_after_on_a_poll_waits_the_cap() -> None:
    emu = emulator()
    async with emu.client() as client:
        task = await one_task(emu, client)
        emu.faults.script("get_task", Fault.throttle(retry_after=DAY))
        start = anyio.current_time()
        result = await client.wait(task.task_id)
        waited = anyio.current_time() - start
    assert result.status is ds.TaskStatus.SUCCEEDED
    # The first poll is throttled: the next goes after the cap (60 s), not a day.
    assert MAX_RETRY_AFTER <= waited <= MAX_RETRY_AFTER + 5


@virtual_time
async def test_one_retry_policy_the_cap_is_configurable_on_the_client() -> None:
    emu = emulator()
    async with emu.client(max_retry_after=2.0) as client:
        assert client.max_retry_after == 2.0
        task = await one_task(emu, client)
        emu.faults.script("get_task", Fault.throttle(retry_after=DAY), times=3)
        start = anyio.current_time()
        await client.wait(task.task_id)
    # Three throttled polls cost 2 s each; with the default cap the first alone costs 60 s.
    assert anyio.current_time() - start < MAX_RETRY_AFTER


@virtual_time
async def test_one_retry_policy_a_day_long_retry_after_on_a_submit_pauses_the_model_for_the_cap() -> (
    None
):
    emu = emulator()
    emu.faults.script("submit", Fault.throttle(retry_after=DAY))
    async with emu.client() as client, ds.AsyncTaskRunner(client) as runner:
        handle = runner.submit(repaint(emu))
        outcome = await handle.wait()
    assert outcome.ok
    assert outcome.submitted_at is not None
    assert outcome.submitted_at - outcome.queued_at <= MAX_RETRY_AFTER + 1
    assert emu.stats.submissions[REPAINT] == 1


@virtual_time
async def test_one_retry_policy_a_day_long_retry_after_on_a_runner_poll_waits_the_cap() -> None:
    emu = emulator()
    async with emu.client() as client, ds.AsyncTaskRunner(client) as runner:
        handle = runner.submit(repaint(emu))
        await handle.wait_submitted()
        emu.faults.script("get_task", Fault.throttle(retry_after=DAY), times=2)
        outcome = await handle.wait()
    assert outcome.ok and outcome.submitted_at is not None
    assert outcome.finished_at - outcome.submitted_at <= 2 * MAX_RETRY_AFTER + 30


@virtual_time
async def test_one_retry_policy_a_runner_poll_backing_off_keeps_the_jobs_deadline() -> None:
    emu = emulator()
    poll = ds.PollPolicy(deadline=10)
    async with emu.client() as client, ds.AsyncTaskRunner(client, poll=poll) as runner:
        handle = runner.submit(repaint(emu))
        await handle.wait_submitted()
        emu.faults.script("get_task", Fault.throttle(retry_after=DAY), times=1000)
        outcome = await handle.wait()
    assert isinstance(outcome.error, ds.TaskTimeoutError)
    assert outcome.submitted_at is not None
    assert outcome.finished_at - outcome.submitted_at == pytest.approx(10.0, abs=0.5)


@virtual_time
async def test_one_retry_policy_an_http_date_retry_after_is_capped_too() -> None:
    emu = emulator()
    async with emu.client() as client:
        task = await one_task(emu, client)
        later = format_datetime(client.clock.wall() + timedelta(days=2), usegmt=True)
        emu.faults.script("get_task", Fault.throttle(retry_after=later))
        start = anyio.current_time()
        await client.wait(task.task_id)
    assert anyio.current_time() - start <= MAX_RETRY_AFTER + 5


@virtual_time
async def test_one_retry_policy_no_poll_in_flight_outlives_the_wait() -> None:
    emu = emulator()
    async with emu.client() as client:
        task = await one_task(emu, client)
        emu.faults.script("get_task", Fault.slow(120), times=5)
        start = anyio.current_time()
        with pytest.raises(ds.TaskTimeoutError):
            await client.wait(task.task_id, timeout=5)
    assert anyio.current_time() - start == pytest.approx(5.0)


# --- one poll loop: the client and the runner agree on every fault (defect 7) --------------------

TRANSIENT_POLL_FAULTS = [
    pytest.param(Fault.html_200(), id="200-html"),
    pytest.param(Fault.malformed_json(), id="200-cut-json"),
    pytest.param(Fault.error(408, "RequestTimeOut"), id="408"),
    pytest.param(Fault.throttle(), id="429"),
    pytest.param(Fault.server_error(), id="500"),
    pytest.param(Fault.bare_500(), id="500-html"),
    pytest.param(Fault.error(502), id="502"),
    pytest.param(Fault.error(503), id="503"),
    pytest.param(Fault.drop_before(), id="dropped"),
    pytest.param(Fault.timeout_after(), id="timeout"),
]


@pytest.mark.parametrize("fault", TRANSIENT_POLL_FAULTS)
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_one_retry_policy_generate_rides_out_a_bad_poll(backend: str, fault: Fault) -> None:
    async def scenario() -> None:
        emu = emulator()
        # Every poll but the first few fails that way once, retries included.
        emu.faults.script("get_task", fault, times=3)
        async with emu.client() as client:
            result = await client.generate(repaint(emu))
        assert result.status is ds.TaskStatus.SUCCEEDED
        assert emu.stats.submissions[REPAINT] == 1
        assert emu.stats.faults_injected["get_task"] == 3

    run_in_virtual_time(scenario, backend)


@pytest.mark.parametrize("fault", TRANSIENT_POLL_FAULTS)
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_one_retry_policy_the_runner_rides_out_the_same_bad_polls(
    backend: str, fault: Fault
) -> None:
    async def scenario() -> None:
        emu = emulator()
        async with emu.client() as client, ds.AsyncTaskRunner(client) as runner:
            handle = runner.submit(repaint(emu))
            await handle.wait_submitted()
            emu.faults.script("get_task", fault, times=3)
            outcome = await handle.wait()
        assert outcome.ok, outcome.error
        assert emu.stats.submissions[REPAINT] == 1
        assert emu.stats.faults_injected["get_task"] == 3

    run_in_virtual_time(scenario, backend)


FINAL_POLL_FAULTS = [
    pytest.param(Fault.error(401, "InvalidApiKey"), ds.AuthenticationError, id="401"),
    pytest.param(Fault.error(403, "AccessDenied"), ds.PermissionDeniedError, id="403"),
    pytest.param(Fault.error(400, "InvalidParameter"), ds.BadRequestError, id="400"),
]


@pytest.mark.parametrize(("fault", "error"), FINAL_POLL_FAULTS)
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_one_retry_policy_client_and_runner_both_stop_on_a_refused_poll(
    backend: str, fault: Fault, error: type[ds.APIError]
) -> None:
    async def scenario() -> None:
        emu = emulator()
        async with emu.client() as client:
            task = await one_task(emu, client)
            emu.faults.script("get_task", fault)
            with pytest.raises(error):
                await client.wait(task.task_id)
            assert emu.stats.requests["get_task"] == 1  # never retried
            async with ds.AsyncTaskRunner(client) as runner:
                handle = runner.submit(repaint(emu, 1))
                await handle.wait_submitted()
                emu.faults.script("get_task", fault)
                outcome = await handle.wait()
        assert isinstance(outcome.error, error)

    run_in_virtual_time(scenario, backend)


# --- metered requests are never retried behind the poll budget (defect 8) ------------------------


def task_endpoint_requests(emu: Emulator) -> int:
    return sum(emu.stats.requests[route] for route in ("get_task", "list_tasks", "cancel_task"))


@virtual_time
async def test_one_retry_policy_each_retried_list_page_takes_its_own_budget_turn() -> None:
    emu = emulator()
    limiter = ds.LocalLimiter()
    # The submit's answer is lost after the task was created; reading the list fails twice.
    emu.faults.script("submit", Fault.drop_after())
    emu.faults.script("list_tasks", Fault.server_error(), times=2)
    async with emu.client() as client, ds.AsyncTaskRunner(client, limiter=limiter) as runner:
        outcome = await runner.submit(repaint(emu)).wait()
    assert outcome.task_id is not None
    assert emu.stats.requests["list_tasks"] >= 3
    assert task_endpoint_requests(emu) == limiter.polls_granted


@virtual_time
async def test_one_retry_policy_each_retried_cancel_takes_its_own_budget_turn() -> None:
    emu = emulator()
    limiter = ds.LocalLimiter()
    async with emu.client() as client:
        # Another program's task holds the model's one slot, so the runner's task waits PENDING.
        await one_task(emu, client)
        poll = ds.PollPolicy(deadline=2)
        async with ds.AsyncTaskRunner(client, limiter=limiter, poll=poll) as runner:
            handle = runner.submit(repaint(emu, 1))
            await handle.wait_submitted()
            emu.faults.script("cancel_task", Fault.server_error(), times=2)
            outcome = await handle.wait()
    assert isinstance(outcome.error, ds.TaskTimeoutError)
    assert emu.stats.requests["cancel_task"] == 3  # two failures, then the cancel that worked
    assert task_endpoint_requests(emu) == limiter.polls_granted


@virtual_time
async def test_one_retry_policy_a_metered_client_call_takes_a_turn_per_attempt() -> None:
    emu = emulator()
    turns = 0

    async def meter() -> None:
        nonlocal turns
        turns += 1

    async with emu.client() as client:
        task = await one_task(emu, client)
        emu.faults.script("get_task", Fault.server_error(), times=2)
        await client.get_task(task.task_id, meter=meter)
        emu.faults.script("list_tasks", Fault.throttle(), times=2)
        async for _ in client.list_tasks(model=REPAINT, before_page=meter):
            pass
    assert turns == task_endpoint_requests(emu) == 6


# --- a deadline of 0 polls once: the same edge in wait(), generate() and the runner --------------


@virtual_time
async def test_wait_with_timeout_0_returns_a_task_that_has_ended() -> None:
    emu = emulator()
    async with emu.client() as client:
        task = await one_task(emu, client)
        await anyio.sleep(120)  # the task ends long before this
        start = anyio.current_time()
        result = await client.wait(task.task_id, timeout=0)
    assert result.status is ds.TaskStatus.SUCCEEDED and result.task_id == task.task_id
    assert anyio.current_time() == start
    assert emu.stats.requests["get_task"] == 1


@virtual_time
async def test_wait_with_timeout_0_raises_for_a_task_still_running_after_one_poll() -> None:
    emu = emulator()
    async with emu.client() as client:
        task = await one_task(emu, client)
        with pytest.raises(ds.TaskTimeoutError) as caught:
            await client.wait(task.task_id, timeout=0)
    assert caught.value.task_id == task.task_id
    assert caught.value.status in (ds.TaskStatus.PENDING, ds.TaskStatus.RUNNING)
    assert emu.stats.requests["get_task"] == 1


@virtual_time
async def test_wait_with_timeout_0_after_a_throttled_poll_gives_up_at_once() -> None:
    emu = emulator()
    async with emu.client() as client:
        task = await one_task(emu, client)
        emu.faults.script("get_task", Fault.throttle(retry_after=DAY), times=10)
        start = anyio.current_time()
        with pytest.raises(ds.TaskTimeoutError):
            await client.wait(task.task_id, timeout=0)
    assert anyio.current_time() == start
    assert emu.stats.requests["get_task"] == 1  # the one look; the server's wait is not spent


@virtual_time
async def test_generate_with_timeout_0_submits_and_polls_once() -> None:
    emu = emulator()
    async with emu.client() as client:
        with pytest.raises(ds.TaskTimeoutError) as caught:
            await client.generate(repaint(emu), timeout=0)
    assert caught.value.status in (ds.TaskStatus.PENDING, ds.TaskStatus.RUNNING)
    assert emu.stats.submissions[REPAINT] == 1
    assert emu.stats.requests["get_task"] == 1


@virtual_time
async def test_a_runner_deadline_of_0_polls_each_task_once() -> None:
    emu = emulator()
    poll = ds.PollPolicy(deadline=0)
    async with emu.client() as client, ds.AsyncTaskRunner(client, poll=poll) as runner:
        outcome = await runner.submit(repaint(emu)).wait()
    assert isinstance(outcome.error, ds.TaskTimeoutError)
    assert outcome.error.task_id is not None
    assert emu.stats.requests["get_task"] == 1


@virtual_time
async def test_a_runner_deadline_before_the_first_planned_poll_still_looks_at_the_task() -> None:
    # Tasks of ~3 s; the planner, still on the registry's ~15 s guess, plans its first poll
    # after 10 s: the deadline at 5 s comes first, and the one look there finds the result.
    emu = Emulator(EmulatorConfig(seed=7, render_results=False, time_scale=0.2))
    poll = ds.PollPolicy(deadline=5, cold_probes=())
    async with emu.client() as client, ds.AsyncTaskRunner(client, poll=poll) as runner:
        outcome = await runner.submit(repaint(emu)).wait()
    assert outcome.ok, outcome.error
    assert outcome.submitted_at is not None
    assert outcome.finished_at - outcome.submitted_at == pytest.approx(5.0, abs=0.1)
    assert emu.stats.requests["get_task"] == 1
