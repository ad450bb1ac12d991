"""The limiter: slots, the GCRA submit pacer, the cool-down after 429s, and the poll budget.

Everything timed runs in virtual time on asyncio and trio, so spacings are checked exactly.
"""

from __future__ import annotations

import itertools
import math
import random
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashscope_async._config import SKETCH_TO_IMAGE, STYLE_REPAINT
from dashscope_async._errors import ValidationError
from dashscope_async._limits import (
    Limiter,
    Limits,
    LocalLimiter,
    ModelLimits,
    ModelMeterState,
)

REPAINT = STYLE_REPAINT.name
SKETCH = SKETCH_TO_IMAGE.name
EPSILON = 1e-9


@pytest.fixture
def anyio_backend(virtual_anyio_backend: tuple[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    return virtual_anyio_backend


def no_jitter(**changes: Any) -> Limits:
    return Limits(throttle_jitter=0.0, **changes)


def max_in_any_window(starts: list[float], width: float = 1.0) -> int:
    """The most starts in any half-open window [t, t + width)."""
    starts = sorted(starts)
    most = 0
    for i, start in enumerate(starts):
        inside = sum(1 for later in starts[i:] if later < start + width - EPSILON)
        most = max(most, inside)
    return most


# --- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"submit_rate": 0}, "submit_rate"),
        ({"submit_rate": -2.0}, "submit_rate"),
        ({"submit_rate": math.nan}, "submit_rate"),
        ({"max_in_progress": 0}, "max_in_progress"),
        ({"max_in_progress": 1.5}, "max_in_progress"),
        ({"max_in_progress": True}, "max_in_progress"),
    ],
)
def test_model_limits_reject_impossible_values(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        ModelLimits(**changes)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"poll_rate": 0.0}, "poll_rate"),
        ({"safety_margin": -0.01}, "safety_margin"),
        ({"throttle_backoff": 0.0}, "throttle_backoff"),
        ({"throttle_jitter": -1.0}, "throttle_jitter"),
        ({"models": {REPAINT: 2.0}}, "models"),
    ],
)
def test_limits_reject_impossible_values(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        Limits(**changes)


def test_defaults_come_from_the_model_registry() -> None:
    limits = Limits.default()
    assert limits.for_model(REPAINT) == ModelLimits(submit_rate=2.0, max_in_progress=1)
    assert limits.for_model(SKETCH) == ModelLimits(submit_rate=2.0, max_in_progress=1)
    assert limits.for_model("a-model-we-do-not-know") == ModelLimits()
    assert limits.poll_rate == 10.0
    assert limits.submit_spacing(REPAINT) == pytest.approx(0.55)
    # A model left out of an explicit mapping still gets its registry default.
    assert Limits(models={}).for_model(SKETCH) == ModelLimits(submit_rate=2.0, max_in_progress=1)


def test_with_model_overrides_one_model_only() -> None:
    limits = Limits.default().with_model(REPAINT, max_in_progress=3)
    assert limits.for_model(REPAINT) == ModelLimits(submit_rate=2.0, max_in_progress=3)
    assert limits.for_model(SKETCH) == ModelLimits(submit_rate=2.0, max_in_progress=1)
    assert Limits.default().for_model(REPAINT).max_in_progress == 1
    assert limits != Limits.default()
    assert limits == Limits.default().with_model(REPAINT, max_in_progress=3)
    assert hash(limits) == hash(Limits.default().with_model(REPAINT, max_in_progress=3))
    with pytest.raises(ValidationError):
        limits.with_model(SKETCH, submit_rate=0)


def test_models_mapping_cannot_be_changed_in_place() -> None:
    models = {REPAINT: ModelLimits(submit_rate=5.0)}
    limits = Limits(models=models)
    models[REPAINT] = ModelLimits(submit_rate=50.0)
    assert limits.for_model(REPAINT).submit_rate == 5.0
    with pytest.raises(TypeError):
        limits.models[REPAINT] = ModelLimits()  # type: ignore[index]


def test_replace_validates() -> None:
    assert Limits.default().replace(poll_rate=4.0).poll_rate == 4.0
    with pytest.raises(ValidationError):
        Limits.default().replace(poll_rate=-1.0)


def test_local_limiter_is_a_limiter() -> None:
    assert isinstance(LocalLimiter(), Limiter)
    assert "LocalLimiter(Limits(" in repr(LocalLimiter())


# --- the submit pacer ---------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(("rate", "margin"), [(2.0, 0.05), (2.0, 0.0), (5.0, 0.01), (0.5, 0.05)])
async def test_submissions_are_spaced_by_one_over_rate_plus_margin(
    rate: float, margin: float
) -> None:
    limiter = LocalLimiter(
        Limits(models={REPAINT: ModelLimits(submit_rate=rate)}, safety_margin=margin)
    )
    start = anyio.current_time()
    starts = []
    for _ in range(8):
        await limiter.submit_turn(REPAINT)
        starts.append(anyio.current_time() - start)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert starts[0] == 0.0  # the first one goes at once
    assert all(gap >= 1 / rate + margin - EPSILON for gap in gaps)
    assert max(gaps) == pytest.approx(1 / rate + margin)  # and no slower than needed


@pytest.mark.anyio
async def test_no_burst_after_idle_time() -> None:
    limiter = LocalLimiter()
    start = anyio.current_time()
    await limiter.submit_turn(REPAINT)
    await anyio.sleep(60.0)  # a long quiet spell earns no credit
    starts = []
    for _ in range(3):
        await limiter.submit_turn(REPAINT)
        starts.append(anyio.current_time() - start)
    assert starts == pytest.approx([60.0, 60.55, 61.1])


@pytest.mark.anyio
async def test_submit_turns_are_first_come_first_served() -> None:
    limiter = LocalLimiter(Limits(models={REPAINT: ModelLimits(max_in_progress=100)}))
    granted: list[int] = []

    async def submitter(index: int) -> None:
        await anyio.sleep(index * 0.01)  # arrive in index order, all within the first gap
        await limiter.submit_turn(REPAINT)
        granted.append(index)

    async with anyio.create_task_group() as tg:
        for index in reversed(range(12)):
            tg.start_soon(submitter, index)
    assert granted == list(range(12))


class TickingClock:
    """A clock that moves 1 µs per reading (as real time does between calls) and counts sleeps."""

    def __init__(self) -> None:
        self.time = 0.0
        self.sleeps = 0

    def now(self) -> float:
        self.time += 1e-6
        return self.time

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.time += seconds
        await anyio.lowlevel.checkpoint()

    def wall(self) -> datetime:
        return datetime.now(UTC)


@pytest.mark.anyio
async def test_no_wait_means_no_sleep_but_still_a_checkpoint() -> None:
    clock = TickingClock()
    limiter = LocalLimiter(Limits.lifted(), clock=clock)
    other_ran = anyio.Event()
    ran_before_loop_ended = False

    async def busy() -> None:
        nonlocal ran_before_loop_ended
        for _ in range(200):
            async with limiter.slot(REPAINT):
                await limiter.submit_turn(REPAINT)
                await limiter.poll_turn()
        ran_before_loop_ended = other_ran.is_set()

    async def other() -> None:
        other_ran.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(busy)
        tg.start_soon(other)
    assert ran_before_loop_ended
    assert clock.sleeps == 0
    assert limiter.state(REPAINT).submits_granted == 200


@pytest.mark.anyio
async def test_a_cancelled_waiter_gives_up_its_place_without_wasting_a_turn() -> None:
    limiter = LocalLimiter(Limits(models={REPAINT: ModelLimits(max_in_progress=10)}))
    start = anyio.current_time()
    await limiter.submit_turn(REPAINT)  # t=0; the next turn is at 0.55
    granted: list[float] = []

    async def submitter() -> None:
        await limiter.submit_turn(REPAINT)
        granted.append(anyio.current_time() - start)

    async with anyio.create_task_group() as tg:
        with anyio.move_on_after(0.2):
            await limiter.submit_turn(REPAINT)  # the head of the queue, cancelled at 0.2
            pytest.fail("should have been cancelled")
        tg.start_soon(submitter)
    assert granted == pytest.approx([0.55])
    assert limiter.state(REPAINT).submits_granted == 2


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    arrivals=st.lists(st.floats(min_value=0.0, max_value=4.0), min_size=1, max_size=25),
    rate=st.sampled_from([1.0, 2.0, 3.0, 7.0]),
    margin=st.sampled_from([0.0, 0.05]),
)
@pytest.mark.anyio
async def test_no_one_second_window_holds_more_than_rate_starts(
    arrivals: list[float], rate: float, margin: float
) -> None:
    limits = Limits(
        models={REPAINT: ModelLimits(submit_rate=rate, max_in_progress=1000)},
        safety_margin=margin,
    )
    limiter = LocalLimiter(limits)
    start = anyio.current_time()
    starts: list[float] = []

    async def submitter(arrival: float) -> None:
        await anyio.sleep(arrival)
        await limiter.submit_turn(REPAINT)
        starts.append(anyio.current_time() - start)

    async with anyio.create_task_group() as tg:
        for arrival in arrivals:
            tg.start_soon(submitter, arrival)
    assert len(starts) == len(arrivals)
    assert max_in_any_window(starts) <= rate
    ordered = sorted(starts)
    assert all(b - a >= 1 / rate + margin - EPSILON for a, b in itertools.pairwise(ordered))


# --- slots --------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("max_in_progress", [1, 3])
async def test_slot_limit_is_never_exceeded(max_in_progress: int) -> None:
    limiter = LocalLimiter(Limits.default().with_model(REPAINT, max_in_progress=max_in_progress))
    durations = random.Random(5).choices([0.1, 0.5, 1.3, 2.0], k=20)
    holding = 0
    peak = 0
    order: list[int] = []

    async def job(index: int, duration: float) -> None:
        nonlocal holding, peak
        await anyio.sleep(index * 0.001)
        async with limiter.slot(REPAINT) as lease:
            assert lease.model == REPAINT
            assert not lease.lost
            order.append(index)
            holding += 1
            peak = max(peak, holding)
            assert limiter.in_progress(REPAINT) == holding
            await anyio.sleep(duration)
            holding -= 1

    async with anyio.create_task_group() as tg:
        for index, duration in enumerate(durations):
            tg.start_soon(job, index, duration)
    assert peak == max_in_progress
    assert order == list(range(20))  # first come, first served
    assert limiter.in_progress(REPAINT) == 0


@pytest.mark.anyio
async def test_cancelled_holder_frees_the_slot_for_the_next_waiter() -> None:
    limiter = LocalLimiter()
    start = anyio.current_time()
    got_it_at: list[float] = []

    async def holder(scope: anyio.CancelScope) -> None:
        with scope:
            async with limiter.slot(REPAINT):
                await anyio.sleep_forever()

    async def waiter() -> None:
        async with limiter.slot(REPAINT):
            got_it_at.append(anyio.current_time() - start)

    holder_scope = anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        tg.start_soon(holder, holder_scope)
        await anyio.sleep(0.5)
        tg.start_soon(waiter)
        await anyio.sleep(0.5)
        assert limiter.state(REPAINT).waiting_for_slot == 1
        assert limiter.in_progress(REPAINT) == 1
        holder_scope.cancel()
    assert got_it_at == pytest.approx([1.0])
    assert limiter.in_progress(REPAINT) == 0


@pytest.mark.anyio
async def test_a_cancelled_slot_waiter_takes_no_slot() -> None:
    limiter = LocalLimiter()
    async with limiter.slot(REPAINT):
        with anyio.move_on_after(1.0) as scope:
            async with limiter.slot(REPAINT):
                pytest.fail("two slots of a one-slot model")
        assert scope.cancelled_caught
        assert limiter.in_progress(REPAINT) == 1
    assert limiter.in_progress(REPAINT) == 0
    async with limiter.slot(REPAINT):
        assert limiter.in_progress(REPAINT) == 1


@pytest.mark.anyio
async def test_models_have_their_own_slots_and_pacers() -> None:
    limiter = LocalLimiter()
    start = anyio.current_time()
    async with limiter.slot(REPAINT):
        await limiter.submit_turn(REPAINT)
        # Repaint's slot is taken and its pacer just used: sketch waits for neither.
        with anyio.fail_after(EPSILON + 1e-6):
            async with limiter.slot(SKETCH):
                await limiter.submit_turn(SKETCH)
    assert anyio.current_time() == start
    assert limiter.models == (REPAINT, SKETCH)


# --- cool-down after 429s -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_429_pauses_every_waiter_of_that_model_only() -> None:
    limiter = LocalLimiter(no_jitter().with_model(REPAINT, max_in_progress=10))
    start = anyio.current_time()
    repaint_starts: list[float] = []
    sketch_starts: list[float] = []

    async def submit(model: str, starts: list[float]) -> None:
        await limiter.submit_turn(model)
        starts.append(anyio.current_time() - start)

    await limiter.submit_turn(REPAINT)
    pause = await limiter.throttled(REPAINT, retry_after=3.0)
    assert pause == 3.0
    assert limiter.cool_down_remaining(REPAINT) == 3.0
    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(submit, REPAINT, repaint_starts)
        tg.start_soon(submit, SKETCH, sketch_starts)
    # After the pause, paced again: no burst of the queued submissions.
    assert repaint_starts == pytest.approx([3.0, 3.55, 4.1])
    assert sketch_starts == [0.0]
    assert limiter.cool_down_remaining(REPAINT) == 0.0


@pytest.mark.anyio
async def test_a_429_reaches_a_submitter_already_waiting() -> None:
    limiter = LocalLimiter(no_jitter())
    start = anyio.current_time()
    await limiter.submit_turn(REPAINT)
    granted: list[float] = []

    async def submitter() -> None:
        await limiter.submit_turn(REPAINT)  # waiting for 0.55 when the 429 arrives
        granted.append(anyio.current_time() - start)

    async with anyio.create_task_group() as tg:
        tg.start_soon(submitter)
        await anyio.sleep(0.3)
        await limiter.throttled(REPAINT, retry_after=2.0)
    assert granted == pytest.approx([2.3])


@pytest.mark.anyio
async def test_backoff_doubles_with_429s_in_a_row_and_resets_after_a_success() -> None:
    limiter = LocalLimiter(no_jitter(throttle_backoff=1.0, throttle_backoff_max=10.0))
    pauses = [await limiter.throttled(REPAINT, None) for _ in range(6)]
    assert pauses == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert limiter.state(REPAINT).consecutive_throttles == 6
    assert await limiter.throttled(SKETCH, None) == 1.0  # models back off independently
    limiter.submit_succeeded(REPAINT)
    assert await limiter.throttled(REPAINT, None) == 1.0


@pytest.mark.anyio
async def test_retry_after_is_honoured_and_counts_as_a_429_in_a_row() -> None:
    limiter = LocalLimiter(no_jitter())
    assert await limiter.throttled(REPAINT, 0.7) == 0.7
    assert await limiter.throttled(REPAINT, -5.0) == 0.0
    assert await limiter.throttled(REPAINT, math.nan) == 4.0  # third in a row, no usable header


@pytest.mark.anyio
async def test_a_shorter_pause_never_cuts_a_longer_one_short() -> None:
    limiter = LocalLimiter(no_jitter())
    start = anyio.current_time()
    await limiter.throttled(REPAINT, 5.0)
    await limiter.throttled(REPAINT, 1.0)
    await limiter.submit_turn(REPAINT)
    assert anyio.current_time() - start == pytest.approx(5.0)


@pytest.mark.anyio
async def test_jitter_takes_off_up_to_a_quarter_and_is_reproducible() -> None:
    first = LocalLimiter(rng=random.Random(1))
    second = LocalLimiter(rng=random.Random(1))
    a = [await first.throttled(REPAINT, None) for _ in range(8)]
    b = [await second.throttled(REPAINT, None) for _ in range(8)]
    assert a == b
    for n, pause in enumerate(a):
        # The cap is a true cap: jitter only ever shortens the pause.
        base = min(2.0**n, 30.0)
        assert base * 0.75 <= pause <= base
    assert a != [min(2.0**n, 30.0) for n in range(8)]


# --- the poll budget ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_polls_keep_to_the_account_budget() -> None:
    limiter = LocalLimiter(Limits(poll_rate=10.0))
    start = anyio.current_time()
    turns: list[float] = []

    async def poller(index: int) -> None:
        for _ in range(5):
            await limiter.poll_turn()
            turns.append(anyio.current_time() - start)

    async with anyio.create_task_group() as tg:
        for index in range(6):
            tg.start_soon(poller, index)
    assert len(turns) == 30
    assert max_in_any_window(turns) == 10
    # Bursts are allowed: ten at once, then the next ten a second later.
    ordered = sorted(turns)
    assert ordered[9] == pytest.approx(0.0)
    assert ordered[10] == pytest.approx(1.0)
    assert ordered[-1] == pytest.approx(2.0)
    assert limiter.polls_granted == 30


@pytest.mark.anyio
@pytest.mark.parametrize(("rate", "window_seconds", "allowed"), [(2.5, 1.0, 2), (0.5, 2.0, 1)])
async def test_a_fractional_poll_rate_is_kept_in_every_window(
    rate: float, window_seconds: float, allowed: int
) -> None:
    limiter = LocalLimiter(Limits(poll_rate=rate))
    start = anyio.current_time()
    turns: list[float] = []
    for _ in range(12):
        await limiter.poll_turn()
        turns.append(anyio.current_time() - start)
    assert max_in_any_window(turns, window_seconds) <= allowed
    # The budget is used, not paced away: a burst of what the window allows, then a wait.
    assert turns[:allowed] == [0.0] * allowed
    assert turns[allowed] == pytest.approx(window_seconds)


@pytest.mark.anyio
async def test_polls_and_submissions_do_not_wait_for_each_other() -> None:
    limiter = LocalLimiter()
    start = anyio.current_time()
    await limiter.submit_turn(REPAINT)
    await limiter.poll_turn()
    await limiter.poll_turn()
    assert anyio.current_time() - start == pytest.approx(0.0)


# --- introspection ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_state_reports_slots_waiters_and_cool_down() -> None:
    limiter = LocalLimiter(no_jitter())
    assert limiter.state(SKETCH) == ModelMeterState(
        model=SKETCH,
        in_progress=0,
        max_in_progress=1,
        waiting_for_slot=0,
        waiting_to_submit=0,
        cool_down_remaining=0.0,
        consecutive_throttles=0,
        submits_granted=0,
        throttles=0,
    )
    assert limiter.models == ()  # reading creates no state

    async def wait_for_slot() -> None:
        async with limiter.slot(REPAINT):
            pass

    async with limiter.slot(REPAINT):
        await limiter.submit_turn(REPAINT)
        await limiter.throttled(REPAINT, 2.0)
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_for_slot)
            tg.start_soon(wait_for_slot)
            await anyio.sleep(0.5)
            state = limiter.state(REPAINT)
            assert state.in_progress == 1
            assert state.waiting_for_slot == 2
            assert state.cool_down_remaining == pytest.approx(1.5)
            assert state.consecutive_throttles == 1
            assert state.submits_granted == 1
            assert state.throttles == 1
            tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_limiter_closes_as_a_context_manager() -> None:
    async with LocalLimiter() as limiter:
        await limiter.submit_turn(REPAINT)
    await limiter.aclose()  # closing twice is harmless


# --- queue-ahead slots --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_slots_count_tasks_queued_ahead_and_shrink_when_it_stops() -> None:
    limits = Limits.default().with_model(REPAINT, queue_ahead=2)
    limiter = LocalLimiter(limits)
    async with limiter.slot(REPAINT), limiter.slot(REPAINT):
        assert limiter.state(REPAINT).in_progress == 2
        # One free slot left of three: shrinking to one takes it at once, and one held slot
        # when its holder leaves.
        limiter.stop_queue_ahead(REPAINT)
        assert limiter.state(REPAINT).max_in_progress == 1
        assert limiter.state(REPAINT).in_progress == 2
        with anyio.move_on_after(0.1) as waited:
            async with limiter.slot(REPAINT):
                pass
        assert waited.cancelled_caught
    assert limiter.state(REPAINT).in_progress == 0
    async with limiter.slot(REPAINT):
        with anyio.move_on_after(0.1) as waited:
            async with limiter.slot(REPAINT):
                pass
        assert waited.cancelled_caught  # one slot from now on
