"""The Redis limiter against a real redis-server: pacing, leases, cool-down and poll budget.

Several ``RedisLimiter`` instances, each with its own connection pool, stand in for several
worker processes. These tests run in real time (the pacing reads Redis's clock, which no virtual
clock can move), so the rates are high and the waits tenths of a second. redis-py is
asyncio-only: the tests run on asyncio, except the one proving the clear error under trio.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

import dashscope_async as ds
from dashscope_async._limits import Limiter, Limits, ModelLimits
from dashscope_async.redis import LimiterUnavailableError, RedisLimiter
from dashscope_async.testing import Emulator, EmulatorConfig, Fault
from tests.redis_server import RedisServer, free_port, redis_server

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

MODEL = "wanx-style-repaint-v1"
OTHER_MODEL = "wanx-sketch-to-image-lite"
RATE = 20.0  # submits/s in these tests: 50 ms apart
SPACING = 1 / RATE


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_server() as running:
        yield running


def fast_limits(*, max_in_progress: int = 1, poll_rate: float = RATE) -> Limits:
    return Limits(
        models={
            MODEL: ModelLimits(submit_rate=RATE, max_in_progress=max_in_progress),
            OTHER_MODEL: ModelLimits(submit_rate=RATE, max_in_progress=max_in_progress),
        },
        poll_rate=poll_rate,
        safety_margin=0.0,
        throttle_backoff=0.1,
        throttle_jitter=0.0,
    )


@asynccontextmanager
async def workers(
    server: RedisServer, count: int, *, limits: Limits | None = None, **options: Any
) -> AsyncIterator[list[RedisLimiter]]:
    """``count`` limiters on one namespace, each with its own connections, like processes."""
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    async with AsyncExitStack() as stack:
        made = []
        for _ in range(count):
            limiter = RedisLimiter(
                server.url, namespace=namespace, limits=limits or fast_limits(), **options
            )
            await stack.enter_async_context(limiter)
            made.append(limiter)
        yield made


async def evalsha_calls(server: RedisServer) -> int:
    async with aioredis.Redis.from_url(server.url) as admin:
        stats = await admin.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def test_is_a_limiter(server: RedisServer) -> None:
    limiter = RedisLimiter(server.url)
    assert isinstance(limiter, Limiter)


def test_repr_hides_the_password() -> None:
    limiter = RedisLimiter("redis://user:s3cret@127.0.0.1:6399/2", namespace="acme")
    assert "s3cret" not in repr(limiter)
    assert "127.0.0.1:6399/2" in repr(limiter)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("namespace", ""),
        ("namespace", "a{b}"),
        ("lease_ttl", 0),
        ("heartbeat", 5.0),
        ("outage_grace", -1.0),
        ("outage_grace", float("nan")),
        ("outage_poll_rate", 0.0),
    ],
)
def test_rejects_bad_settings(option: str, value: Any) -> None:
    options: dict[str, Any] = {"lease_ttl": 3.0, option: value}
    with pytest.raises(ValueError, match=option):
        RedisLimiter("redis://127.0.0.1:6399/0", **options)


# --- submit pacing -------------------------------------------------------------------------


async def test_submit_turns_are_spaced_across_workers(server: RedisServer) -> None:
    turns_each = 4
    granted: list[float] = []
    before = await evalsha_calls(server)

    async def submit_all(limiter: RedisLimiter) -> None:
        for _ in range(turns_each):
            await limiter.submit_turn(MODEL)
            granted.append(time.monotonic())

    async with workers(server, 3) as limiters:
        started = time.monotonic()
        async with anyio.create_task_group() as group:
            for limiter in limiters:
                group.start_soon(submit_all, limiter)

    granted.sort()
    gaps = [later - earlier for earlier, later in itertools.pairwise(granted)]
    # Spacing is exact on Redis's clock; the local readings add only a little jitter.
    assert min(gaps) >= SPACING * 0.8, gaps
    assert granted[-1] - started >= (len(granted) - 1) * SPACING * 0.95
    assert granted[-1] - started < (len(granted) - 1) * SPACING * 2 + 0.3  # no stalls
    # Waiters sleep exactly until the turn instead of polling: about one retry per turn.
    calls = await evalsha_calls(server) - before
    assert calls <= 4 * len(granted), calls


async def test_models_are_paced_independently(server: RedisServer) -> None:
    async with workers(server, 1) as (limiter,):
        await limiter.submit_turn(MODEL)
        with anyio.fail_after(SPACING / 2):
            await limiter.submit_turn(OTHER_MODEL)
        started = time.monotonic()
        await limiter.submit_turn(MODEL)
        assert time.monotonic() - started >= SPACING * 0.6


async def test_no_burst_after_idle_time(server: RedisServer) -> None:
    async with workers(server, 2) as (first, second):
        await first.submit_turn(MODEL)
        await anyio.sleep(SPACING * 4)  # idle: GCRA with no burst saves up no credit
        await first.submit_turn(MODEL)
        started = time.monotonic()
        await second.submit_turn(MODEL)
        assert time.monotonic() - started >= SPACING * 0.8


# --- task slots ----------------------------------------------------------------------------


async def test_a_slot_is_held_by_one_worker_at_a_time(server: RedisServer) -> None:
    async with workers(server, 2, slot_poll_interval=0.02) as (first, second):
        async with first.slot(MODEL) as lease:
            assert lease.model == MODEL
            assert not lease.lost
            second_got_it = False
            with anyio.move_on_after(0.2):
                async with second.slot(MODEL):
                    second_got_it = True
            assert not second_got_it
            # Another model's slot is free.
            with anyio.fail_after(0.5):
                async with second.slot(OTHER_MODEL):
                    pass
        # Released on exit: the other worker gets it within its poll interval.
        with anyio.fail_after(0.5):
            async with second.slot(MODEL) as taken:
                assert not taken.lost


async def test_slots_up_to_the_limit_across_workers(server: RedisServer) -> None:
    holding = 0
    peak = 0

    async def hold(limiter: RedisLimiter) -> None:
        nonlocal holding, peak
        async with limiter.slot(MODEL):
            holding += 1
            peak = max(peak, holding)
            await anyio.sleep(0.05)
            holding -= 1

    limits = fast_limits(max_in_progress=2)
    async with (
        workers(server, 4, limits=limits, slot_poll_interval=0.01) as limiters,
        anyio.create_task_group() as group,
    ):
        for limiter in limiters:
            group.start_soon(hold, limiter)
            group.start_soon(hold, limiter)
    assert peak == 2


def queueing_limits() -> Limits:
    return fast_limits().replace(
        models={MODEL: ModelLimits(submit_rate=RATE, max_in_progress=1, queue_ahead=1)}
    )


async def test_tasks_queued_ahead_hold_slots_across_workers(server: RedisServer) -> None:
    holding = 0
    peak = 0

    async def hold(limiter: RedisLimiter) -> None:
        nonlocal holding, peak
        async with limiter.slot(MODEL):
            holding += 1
            peak = max(peak, holding)
            await anyio.sleep(0.05)
            holding -= 1

    async with (
        workers(server, 3, limits=queueing_limits(), slot_poll_interval=0.01) as limiters,
        anyio.create_task_group() as group,
    ):
        for limiter in limiters:
            group.start_soon(hold, limiter)
            group.start_soon(hold, limiter)
    # One running and one queued ahead, counted in Redis for every worker.
    assert peak == 2


async def test_a_worker_that_stopped_queueing_ahead_takes_the_running_slot_only(
    server: RedisServer,
) -> None:
    async with workers(server, 2, limits=queueing_limits(), slot_poll_interval=0.01) as (
        stopped,
        other,
    ):
        stopped.stop_queue_ahead(MODEL)
        async with other.slot(MODEL):
            with anyio.move_on_after(0.2) as waited:
                async with stopped.slot(MODEL):
                    pass
            assert waited.cancelled_caught
            with anyio.fail_after(1):
                async with other.slot(MODEL):  # the other still queues one ahead
                    pass


async def test_waiters_in_one_process_are_served_in_arrival_order(server: RedisServer) -> None:
    order: list[int] = []

    async def take(limiter: RedisLimiter, number: int) -> None:
        async with limiter.slot(MODEL):
            order.append(number)
            await anyio.sleep(0.01)

    async with workers(server, 1) as (limiter,), anyio.create_task_group() as group:
        for number in range(5):
            group.start_soon(take, limiter, number)
            # Arrive in a known order: each waits for the slot before the next one starts.
            await anyio.wait_all_tasks_blocked()
    assert order == [0, 1, 2, 3, 4]


async def test_the_heartbeat_keeps_a_lease_past_its_ttl(server: RedisServer) -> None:
    async with (
        workers(server, 2, lease_ttl=0.3, heartbeat=0.1) as (first, second),
        first.slot(MODEL) as lease,
    ):
        second_got_it = False
        with anyio.move_on_after(0.9):  # three lease lifetimes
            async with second.slot(MODEL):
                second_got_it = True
        assert not second_got_it, "the lease expired while its heartbeat ran"
        assert not lease.lost


async def test_a_dead_workers_slot_frees_when_its_lease_expires(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dashscope_async.redis")
    async with workers(server, 2, lease_ttl=0.4, heartbeat=0.1, slot_poll_interval=0.02) as (
        frozen,
        alive,
    ):

        async def no_heartbeat(_lease: object) -> None:
            await anyio.sleep_forever()  # a worker that has stopped heartbeating (dead or hung)

        monkeypatch.setattr(frozen, "_keep_alive", no_heartbeat)
        taken_at = 0.0
        async with frozen.slot(MODEL) as stale_lease:
            started = time.monotonic()
            with anyio.fail_after(2):
                async with alive.slot(MODEL):
                    taken_at = time.monotonic() - started
        assert 0.3 <= taken_at < 1.0, taken_at
        # When the stale holder finally ends, it learns it had lost the lease, and says so.
        assert stale_lease.lost
        assert any("lost the" in record.getMessage() for record in caplog.records)


async def test_a_lease_taken_away_is_noticed_by_the_heartbeat(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dashscope_async.redis")
    async with (
        workers(server, 1, lease_ttl=0.3, heartbeat=0.05) as (limiter,),
        limiter.slot(MODEL) as lease,
    ):
        async with aioredis.Redis.from_url(server.url) as admin:
            await admin.delete(f"{{{limiter.namespace}:{MODEL}}}:slots")
        with anyio.fail_after(10):  # the next heartbeat finds the lease gone
            while not lease.lost:  # noqa: ASYNC110 - no event to wait on
                await anyio.sleep(0.01)
    assert [r.levelno for r in caplog.records if "lost the" in r.getMessage()] == [logging.WARNING]


async def test_a_cancelled_holder_releases_its_slot(server: RedisServer) -> None:
    async with workers(server, 2, slot_poll_interval=0.02) as (first, second):
        with anyio.move_on_after(0.05):
            async with first.slot(MODEL):
                await anyio.sleep_forever()
        with anyio.fail_after(0.5):
            async with second.slot(MODEL):
                pass


# --- cool-down after a 429 -----------------------------------------------------------------


async def test_a_throttle_pauses_every_worker(server: RedisServer) -> None:
    async with workers(server, 2) as (throttled, other):
        assert await throttled.throttled(MODEL, retry_after=0.3) == pytest.approx(0.3, abs=0.01)
        started = time.monotonic()
        await other.submit_turn(MODEL)
        assert time.monotonic() - started >= 0.25
        with anyio.fail_after(SPACING):  # other models are not paused
            await other.submit_turn(OTHER_MODEL)


async def test_a_pause_only_grows(server: RedisServer) -> None:
    async with workers(server, 2) as (first, second):
        await first.throttled(MODEL, retry_after=1.0)
        assert await second.throttled(MODEL, retry_after=0.1) == pytest.approx(1.0, abs=0.05)


async def test_backoff_without_retry_after_doubles_until_a_success(server: RedisServer) -> None:
    async with workers(server, 1) as (limiter,):
        pauses = [await limiter.throttled(MODEL, None) for _ in range(3)]
        assert pauses == pytest.approx([0.1, 0.2, 0.4], abs=0.01)
        limiter.submit_succeeded(MODEL)
        async with aioredis.Redis.from_url(server.url) as admin:
            await admin.delete(f"{{{limiter.namespace}:{MODEL}}}:cooldown")
        assert await limiter.throttled(MODEL, None) == pytest.approx(0.1, abs=0.01)


# --- poll budget ---------------------------------------------------------------------------


async def test_the_poll_budget_is_shared(server: RedisServer) -> None:
    granted: list[float] = []

    async def poll(limiter: RedisLimiter) -> None:
        await limiter.poll_turn()
        granted.append(time.monotonic())

    async with workers(server, 2, limits=fast_limits(poll_rate=RATE)) as limiters:
        started = time.monotonic()
        async with anyio.create_task_group() as group:
            for limiter in limiters:
                for _ in range(4):
                    group.start_soon(poll, limiter)
    assert max(granted) - started >= 7 * SPACING * 0.95
    granted.sort()
    assert min(b - a for a, b in itertools.pairwise(granted)) >= SPACING * 0.8


# --- Redis unavailable ---------------------------------------------------------------------


async def test_unreachable_redis_is_a_clear_error_before_any_submit() -> None:
    url = f"redis://user:s3cret@127.0.0.1:{free_port()}/0"
    body_ran = False
    async with RedisLimiter(url, namespace="down", outage_grace=0.5) as limiter:
        with anyio.fail_after(5):
            with pytest.raises(LimiterUnavailableError) as caught:
                async with limiter.slot(MODEL):
                    body_ran = True
            with pytest.raises(LimiterUnavailableError):
                await limiter.submit_turn(MODEL)
            await limiter.poll_turn()  # polls go on under the local budget
    assert not body_ran
    assert isinstance(caught.value, ds.DashScopeError)
    assert "nothing was submitted" in str(caught.value)
    assert "s3cret" not in str(caught.value)


async def test_redis_gone_for_good_fails_after_the_grace_then_at_once() -> None:
    with redis_server() as own_server:
        async with workers(own_server, 1, outage_grace=1.0) as (limiter,):
            await limiter.submit_turn(MODEL)
            own_server.stop()
            start = time.monotonic()
            with anyio.fail_after(10), pytest.raises(LimiterUnavailableError):
                await limiter.submit_turn(MODEL)
            assert time.monotonic() - start >= 0.9  # rode out the grace first
            # The outage is older than the grace: callers queued behind fail at their first try.
            start = time.monotonic()
            with anyio.fail_after(5), pytest.raises(LimiterUnavailableError):
                async with limiter.slot(MODEL):
                    pass
            assert time.monotonic() - start < 0.9


async def test_a_redis_blip_holds_submit_turns_and_slots_until_it_is_back() -> None:
    with redis_server(appendonly=True) as own_server:
        async with workers(own_server, 1, outage_grace=20.0) as (limiter,):
            await limiter.submit_turn(MODEL)
            own_server.stop()
            granted: list[float] = []

            async def submitter() -> None:
                async with limiter.slot(MODEL):
                    await limiter.submit_turn(MODEL)
                    granted.append(time.monotonic())

            with anyio.fail_after(20):
                async with anyio.create_task_group() as group:
                    group.start_soon(submitter)
                    await anyio.sleep(2.0)
                    assert not granted  # no turn while the shared limits cannot be checked
                    restarted = time.monotonic()
                    own_server.start()
            assert granted and granted[0] >= restarted


async def test_poll_turns_go_on_under_a_local_budget_while_redis_is_down() -> None:
    with redis_server() as own_server:
        async with workers(own_server, 1, outage_grace=0.5, outage_poll_rate=10.0) as (limiter,):
            await limiter.poll_turn()
            own_server.stop()
            start = time.monotonic()
            with anyio.fail_after(10):
                for _ in range(6):
                    await limiter.poll_turn()
            elapsed = time.monotonic() - start
    # Six turns at 10/s locally: at least five gaps of 0.1 s, and no raise.
    assert elapsed >= 0.45


async def test_poll_turns_go_on_while_redis_hangs() -> None:
    with redis_server() as own_server:
        async with workers(own_server, 1, outage_grace=30.0, outage_poll_rate=10.0) as (limiter,):
            await limiter.poll_turn()
            own_server.freeze()  # connections stay open; nothing answers
            try:
                start = time.monotonic()
                with anyio.fail_after(30):
                    for _ in range(20):
                        await limiter.poll_turn()
                hung = time.monotonic() - start
            finally:
                own_server.thaw()
            # Each probe of Redis waits a second at most, about once a second; the turns go on
            # locally at 10/s meanwhile (20 turns: 2 s), where a socket timeout is 5 s a try.
            assert hung < 12.0
            with anyio.fail_after(10):
                await limiter.submit_turn(MODEL)  # Redis answers again: the outage is over


async def test_a_retried_acquire_finds_its_own_lease(server: RedisServer) -> None:
    async with workers(server, 1) as (limiter,):
        key = limiter._model_key(MODEL, "slots")
        args = ["token-1", 1, 30_000]
        # The first answer lost, the call is sent again: the lease is ours, not a full slot.
        assert await limiter._call(limiter._acquire, [key], args) == 0
        assert await limiter._call(limiter._acquire, [key], args) == 0
        assert await limiter._call(limiter._acquire, [key], ["token-2", 1, 30_000]) > 0


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_gets_a_clear_error() -> None:
    limiter = RedisLimiter("redis://127.0.0.1:6399/0")
    with pytest.raises(RuntimeError, match="asyncio"):
        await limiter.submit_turn(MODEL)
    with pytest.raises(RuntimeError, match="asyncio"):
        async with limiter.slot(MODEL):
            pass


async def test_an_error_inside_a_slot_reaches_its_holder_as_itself(server: RedisServer) -> None:
    # The slot's heartbeat runs in a task group; the holder's error must not come out of it
    # wrapped in an ExceptionGroup (a job's typed outcome depends on it).
    async with workers(server, 1) as (limiter,):
        with pytest.raises(ds.TaskTimeoutError):
            async with limiter.slot(MODEL):
                raise ds.TaskTimeoutError("late", task_id="t", status=ds.TaskStatus.RUNNING)
        async with limiter.slot(MODEL):  # and the slot was given back
            pass


# --- the submit record: adopt only what can only be ours, across workers ---------------------


async def test_the_submit_record_is_shared_and_each_answer_is_atomic(server: RedisServer) -> None:
    async with workers(server, 2) as (one, other):
        now = datetime.now(UTC)
        theirs = await one.submits.sent(MODEL, now)
        ours = await other.submits.sent(MODEL, now)
        window = {
            "others_from": now - timedelta(minutes=1),
            "others_until": now + timedelta(minutes=1),
        }
        # Another worker's submit is still unanswered: the task may be its.
        screening = await other.submits.screen(ours, ["task-1"], **window)
        assert screening.unknown == ("task-1",) and screening.others_unanswered == 1
        await one.submits.answered(theirs, "task-1")
        screening = await other.submits.screen(ours, ["task-1", "task-2"], **window)
        assert screening.unknown == ("task-2",) and screening.others_unanswered == 0
        # Another model's record is apart; tasks earlier runs recorded are known.
        await one.submits.remember(MODEL, ["task-2"])
        screening = await other.submits.screen(ours, ["task-2"], **window)
        assert screening.unknown == ()


async def test_a_worker_never_adopts_another_workers_late_answered_task(
    server: RedisServer,
) -> None:
    config = EmulatorConfig(seed=3, render_results=False, time_scale=0.02)
    emulator = Emulator(config.with_model(MODEL, max_in_progress=2))
    emulator.faults.script("submit", Fault.slow(1.5))  # made at once, answered late
    emulator.faults.script("submit", Fault.drop_before())  # lost before the service saw it
    limits = fast_limits(max_in_progress=2)
    url = emulator.sample_image_url("portrait")
    async with emulator.client() as client, workers(server, 2, limits=limits) as (one, other):
        async with (
            ds.AsyncTaskRunner(client, limiter=one, reconcile_grace=2.0) as first,
            ds.AsyncTaskRunner(client, limiter=other, reconcile_grace=2.0) as second,
        ):
            a = first.submit(ds.StyleRepaint(f"{url}?job=a", style=1))
            with anyio.fail_after(10):  # a's submit takes the first fault (made, answered late)
                while emulator.stats.requests["submit"] < 1:  # noqa: ASYNC110 - no event to wait on
                    await anyio.sleep(0.01)
            b = second.submit(ds.StyleRepaint(f"{url}?job=b", style=1))
            outcomes = {"a": await a.wait(), "b": await b.wait()}
    for name, outcome in outcomes.items():
        assert outcome.ok, outcome.error
        assert outcome.task_id is not None
        assert emulator.input_of(outcome.task_id)["image_url"] == f"{url}?job={name}"
    assert len(emulator.tasks) == 2
