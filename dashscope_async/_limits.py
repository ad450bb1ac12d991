"""The account's limits, metered in process: when a submission or a poll may go.

Owns the ``Limits`` settings, the ``Limiter`` protocol (so a shared limiter, such as the Redis one,
can stand in) and ``LocalLimiter``, the anyio implementation. It decides when a submission or a
poll may go; it never sends one, never reads a response and never retries anything itself.

Each metering idea is a small class, composed per model as aiometer composes its meters::

    slot pool (tasks in progress, FIFO)  ->  cool-down (after a 429)  ->  GCRA pacer (no burst)

and, for the account's polls, one sliding-window meter: at most ``poll_rate`` in any second,
in bursts where the planner wants them (the few tenths of a second a short task may end in).

The runner takes a model's slot first (``async with limiter.slot(model)``), then waits for a submit
turn (``await limiter.submit_turn(model)``), then sends. Holding the slot while waiting for the turn
is what keeps invariant 2 (tasks in progress never exceed the limit) and invariant 3 (no one-second
window holds more than ``submit_rate`` submissions) at the same time.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from types import MappingProxyType, TracebackType
from typing import Any, Protocol, runtime_checkable

import anyio
import anyio.lowlevel
import attrs

from ._checks import check_instance, wrong_type
from ._clock import SYSTEM_CLOCK, Clock
from ._config import MODELS
from ._retry import backoff_delay
from ._submits import LocalSubmitRecord, SubmitRecord
from ._validators import at_least_one, fraction, non_negative, positive, whole_number

__all__ = [
    "Limiter",
    "Limits",
    "LocalLimiter",
    "ModelLimits",
    "ModelMeterState",
    "SlotLease",
]


@attrs.frozen
class ModelLimits:
    """One model's account limits: how fast tasks may be submitted and how many may be in progress.

    The service's defaults are 2 submissions per second and 1 task in progress for each model;
    raise them only if Alibaba Cloud raised your account's quota.

    Attributes:
        submit_rate: submissions per second (paced evenly, never in bursts).
        max_in_progress: tasks running at once, at most (the service's concurrency limit).
        queue_ahead: tasks that may wait PENDING on the service beyond ``max_in_progress``
            (default 0: none). The service queues a task submitted while the model's slots
            are full and starts it the moment one frees, so with 1 the slot never waits for
            the client to notice an end; a service that refuses instead (429) turns it off for
            the rest of the run. Every task queued ahead is a real, billed task.

    Example:
        ```python
        ds.ModelLimits(submit_rate=5, max_in_progress=3)
        ds.ModelLimits(queue_ahead=1)
        ```
    """

    submit_rate: float = attrs.field(default=2.0, validator=positive("submit_rate"))
    max_in_progress: int = attrs.field(default=1, validator=at_least_one("max_in_progress"))
    queue_ahead: int = attrs.field(default=0, validator=whole_number("queue_ahead"))

    @property
    def slots(self) -> int:
        """Tasks that may be outstanding at once: running plus queued ahead."""
        return self.max_in_progress + self.queue_ahead


def _registry_limits() -> dict[str, ModelLimits]:
    return {
        name: ModelLimits(submit_rate=spec.submit_rate, max_in_progress=spec.max_in_progress)
        for name, spec in MODELS.items()
    }


def _frozen_models(value: Mapping[str, ModelLimits]) -> Mapping[str, ModelLimits]:
    check_instance("models", value, Mapping, "a mapping of model names to ds.ModelLimits")
    for name, limits in value.items():
        if not isinstance(limits, ModelLimits):
            raise wrong_type(f"models[{name!r}]", "a ds.ModelLimits", limits)
    return MappingProxyType(dict(value))


@attrs.frozen
class Limits:
    """The limits a runner keeps: per model (slots and submit rate), and one poll budget.

    Attributes:
        models: each model's limits, by model name; the registry's defaults unless replaced. A
            model missing here gets its registry default, or ``ModelLimits()`` if it is unknown.
        poll_rate: get, list and cancel calls in any one second for the whole account (the
            service allows 20; the default leaves half for other programs on the same account).
        safety_margin: seconds added to every gap between two submissions of one model, so that
            network jitter cannot bring ``submit_rate + 1`` of them into one second at the
            server. At rate ``r`` the margin tolerates ``r * safety_margin`` seconds of jitter
            (100 ms at the default 2/s); lower it if your quota is much higher.
        throttle_backoff: the first pause after a 429 that carries no ``Retry-After``; it
            doubles with every further 429 in a row.
        throttle_backoff_max: the longest such pause.
        throttle_jitter: up to this fraction of the pause is taken off at random, so that
            several processes sharing an account do not retry in step. A ``Retry-After``
            replaces the backoff, honoured up to the client's ``max_retry_after`` (60 s).

    Example:
        ```python
        limits = ds.Limits.default().with_model("wanx-style-repaint-v1", max_in_progress=3)
        async with ds.AsyncTaskRunner(client, limits=limits) as runner:
            ...
        # Keep one task waiting on the service behind the running one (opt-in):
        limits = ds.Limits.default().with_model("wanx-style-repaint-v1", queue_ahead=1)
        ```
    """

    models: Mapping[str, ModelLimits] = attrs.field(
        factory=_registry_limits,
        converter=_frozen_models,
        hash=False,
        repr=lambda models: repr(dict(models)),
    )
    poll_rate: float = attrs.field(default=10.0, validator=positive("poll_rate"))
    safety_margin: float = attrs.field(
        default=0.05, validator=non_negative("safety_margin", unit="seconds")
    )
    throttle_backoff: float = attrs.field(
        default=1.0, validator=positive("throttle_backoff", unit="seconds")
    )
    throttle_backoff_max: float = attrs.field(
        default=30.0, validator=positive("throttle_backoff_max", unit="seconds")
    )
    throttle_jitter: float = attrs.field(default=0.25, validator=fraction("throttle_jitter"))

    @classmethod
    def default(cls) -> Limits:
        """The service's default limits for every known model, and a 10/s poll budget."""
        return cls()

    @classmethod
    def lifted(cls) -> Limits:
        """Limits so high they never wait: for benchmarks and emulator tests, never the service.

        Example:
            ```python
            runner = ds.AsyncTaskRunner(emulated_client, limits=ds.Limits.lifted())
            ```
        """
        unlimited = ModelLimits(submit_rate=1e9, max_in_progress=10**6)
        return cls(
            models=dict.fromkeys(MODELS, unlimited),
            poll_rate=1e9,
            safety_margin=0.0,
        )

    def for_model(self, model: str) -> ModelLimits:
        """One model's limits: as configured, else the registry's default, else ``ModelLimits()``."""
        configured = self.models.get(model)
        if configured is not None:
            return configured
        spec = MODELS.get(model)
        if spec is not None:
            return ModelLimits(submit_rate=spec.submit_rate, max_in_progress=spec.max_in_progress)
        return ModelLimits()

    def with_model(
        self,
        model: str,
        *,
        submit_rate: float | None = None,
        max_in_progress: int | None = None,
        queue_ahead: int | None = None,
    ) -> Limits:
        """A copy with one model's limits changed; unspecified values keep their current setting.

        Example:
            ```python
            ds.Limits.default().with_model("wanx-sketch-to-image-lite", submit_rate=5)
            ds.Limits.default().with_model("wanx-style-repaint-v1", queue_ahead=1)
            ```
        """
        current = self.for_model(model)
        changed = ModelLimits(
            submit_rate=current.submit_rate if submit_rate is None else submit_rate,
            max_in_progress=current.max_in_progress if max_in_progress is None else max_in_progress,
            queue_ahead=current.queue_ahead if queue_ahead is None else queue_ahead,
        )
        return attrs.evolve(self, models={**self.models, model: changed})

    def replace(self, **changes: Any) -> Limits:
        """A copy with some settings changed (``attrs.evolve``), validated like a new one."""
        return attrs.evolve(self, **changes)

    def submit_spacing(self, model: str) -> float:
        """Seconds between two submissions of ``model``: ``1 / submit_rate + safety_margin``."""
        return 1.0 / self.for_model(model).submit_rate + self.safety_margin


# --- the protocol ------------------------------------------------------------------------------


class SlotLease(Protocol):
    """A held task-in-progress slot of one model.

    Example:
        ```python
        async with limiter.slot("wanx-style-repaint-v1") as lease:
            ...
            if lease.lost:
                print("a shared limiter lost this lease")
        ```
    """

    @property
    def model(self) -> str:
        """The model whose slot this is."""
        ...

    @property
    def lost(self) -> bool:
        """True if the slot was taken away (a shared limiter's lease expired); never in process."""
        ...


@runtime_checkable
class Limiter(Protocol):
    """Decides when a submission or a poll may go. ``LocalLimiter`` is the in-process one.

    The runner's order for one submission: ``async with limiter.slot(model)``, then
    ``await limiter.submit_turn(model)``, then send; on a 429 ``await limiter.throttled(...)``
    and wait for a turn again (still holding the slot); on success ``submit_succeeded(model)``.
    Before every get, list or cancel call: ``await limiter.poll_turn()``.

    Example:
        ```python
        from dashscope_async.redis import RedisLimiter

        runner = ds.AsyncTaskRunner(client, limiter=RedisLimiter("redis://127.0.0.1:6379/0"))
        ```
    """

    def slot(self, model: str) -> AbstractAsyncContextManager[SlotLease]:
        """Wait (first come, first served per model) for a task-in-progress slot; free it on exit."""
        ...

    async def submit_turn(self, model: str) -> None:
        """Wait until a submission of ``model`` may be sent now, and reserve that turn."""
        ...

    async def throttled(self, model: str, retry_after: float | None) -> float:
        """Pause ``model``'s submissions for everyone after a 429; return the pause in seconds."""
        ...

    def submit_succeeded(self, model: str) -> None:
        """A submission was accepted: the next 429 starts the backoff afresh."""
        ...

    async def poll_turn(self) -> None:
        """Wait for a turn in the account-wide budget of get, list and cancel calls."""
        ...

    def stop_queue_ahead(self, model: str) -> None:
        """The service refused a task queued ahead: from now on hand out ``max_in_progress``
        slots of ``model`` only (``ModelLimits.queue_ahead`` no longer counts)."""
        ...

    @property
    def limits(self) -> Limits:
        """The limits it keeps."""
        ...

    @property
    def submits(self) -> SubmitRecord:
        """The record of unanswered submits and known tasks, shared by all who use this limiter."""
        ...

    async def aclose(self) -> None:
        """Release whatever the limiter holds."""
        ...


# --- the meters --------------------------------------------------------------------------------


class GcraPacer:
    """Generic cell rate algorithm with no burst: starts at least ``spacing`` seconds apart.

    It keeps one number, the theoretical arrival time of the next start. A start may go once the
    clock reaches it; starting moves it to ``max(now, next_start) + spacing``. After idle time no
    credit piles up, so there is never a burst (aiometer's ``RateLimitMeter``).
    """

    __slots__ = ("next_start", "spacing")

    def __init__(self, spacing: float) -> None:
        self.spacing = spacing
        self.next_start = -math.inf

    def ready_at(self) -> float:
        """The earliest clock reading at which the next start may go."""
        return self.next_start

    def started(self, now: float) -> None:
        """Record a start at ``now``."""
        self.next_start = max(now, self.next_start) + self.spacing


class WindowPacer:
    """A sliding window: at most ``count`` starts in any ``window`` seconds, bursts allowed.

    It keeps the last ``count`` start times; a start may go once the oldest of them is
    ``window`` seconds old. ``rate`` per second becomes ``floor(rate)`` starts per second, so
    no one-second window ever holds more than ``rate`` (a rate below 1: one start per
    ``1 / rate`` seconds; above ``MAX_WINDOW_STARTS``: that many per ``MAX_WINDOW_STARTS /
    rate`` seconds, to keep the record small). None of the budget is lost to even pacing when
    starts are wanted close together.
    """

    __slots__ = ("_starts", "count", "window")

    MAX_WINDOW_STARTS = 1000

    def __init__(self, rate: float) -> None:
        self.count = max(1, min(math.floor(rate), self.MAX_WINDOW_STARTS))
        self.window = 1.0 if 1.0 <= rate <= self.MAX_WINDOW_STARTS else self.count / rate
        self._starts: deque[float] = deque(maxlen=self.count)

    def ready_at(self) -> float:
        """The earliest clock reading at which the next start may go."""
        if len(self._starts) < self.count:
            return -math.inf
        return self._starts[0] + self.window

    def started(self, now: float) -> None:
        """Record a start at ``now``."""
        self._starts.append(now)


class CoolDown:
    """A model's pause after 429s: until when, and how many 429s in a row so far.

    Without ``Retry-After`` the pause is the retry policy's backoff: ``throttle_backoff * 2**n``
    (``n`` = 429s in a row before this one), capped at ``throttle_backoff_max``, less up to
    ``throttle_jitter`` of it at random. A ``Retry-After`` comes capped from the client. A pause
    only ever extends the current one; a successful submit resets ``n``.
    """

    __slots__ = ("_base", "_cap", "_jitter", "_random", "consecutive", "until")

    def __init__(self, limits: Limits, rng: random.Random) -> None:
        self._base = limits.throttle_backoff
        self._cap = limits.throttle_backoff_max
        self._jitter = limits.throttle_jitter
        self._random = rng
        self.until = -math.inf
        self.consecutive = 0

    def backoff(self, consecutive: int, jitter: float = 0.0) -> float:
        """The pause after ``consecutive`` earlier 429s in a row (``jitter`` in [0, 1))."""
        return backoff_delay(
            consecutive, jitter=jitter, base=self._base, cap=self._cap, spread=self._jitter
        )

    def pause(self, now: float, retry_after: float | None) -> float:
        """Start or extend the pause after a 429; return its length from ``now``."""
        if retry_after is not None and not math.isnan(retry_after):
            seconds = max(retry_after, 0.0)
        else:
            seconds = self.backoff(self.consecutive, self._random.random() if self._jitter else 0.0)
        self.consecutive += 1
        self.until = max(self.until, now + seconds)
        return seconds

    def reset(self) -> None:
        """A submission got through: the next 429 starts from the first backoff again."""
        self.consecutive = 0

    def remaining(self, now: float) -> float:
        """Seconds of pause left at ``now`` (0 when not paused)."""
        return max(self.until - now, 0.0)


@attrs.frozen
class _LocalLease:
    """A slot held in this process: it cannot be lost."""

    model: str

    @property
    def lost(self) -> bool:
        return False


class SlotPool(AbstractAsyncContextManager[SlotLease]):
    """A model's task slots (``ModelLimits.slots`` of them), handed out first come first served.

    The pool is its own context manager (one lease object per model), so taking a slot allocates
    nothing; anyio's semaphore queues waiters in order on both backends, and frees a slot when
    the holder leaves, cancelled or not. ``shrink`` takes slots away for good: free ones at once,
    held ones as their holders leave.
    """

    __slots__ = ("_debt", "_lease", "_semaphore", "capacity")

    def __init__(self, model: str, capacity: int) -> None:
        self.capacity = capacity
        self._semaphore = anyio.Semaphore(capacity)
        self._lease = _LocalLease(model)
        self._debt = 0

    @property
    def in_use(self) -> int:
        """Slots held now: tasks of this model in progress (or about to be submitted)."""
        return self.capacity + self._debt - self._semaphore.value

    def shrink(self, capacity: int) -> None:
        """From now on hand out at most ``capacity`` slots (never fewer than 1; never grows)."""
        capacity = max(capacity, 1)
        while self.capacity > capacity:
            self.capacity -= 1
            try:
                self._semaphore.acquire_nowait()  # a free slot goes at once ...
            except anyio.WouldBlock:
                self._debt += 1  # ... a held one when its holder leaves

    @property
    def waiting(self) -> int:
        """Callers queued for a slot."""
        return self._semaphore.statistics().tasks_waiting

    async def __aenter__(self) -> SlotLease:
        semaphore = self._semaphore
        if semaphore.value and not semaphore.statistics().tasks_waiting:
            # A free slot nobody queues for: taken without a trip through the event loop (the
            # submit turn that follows yields); still a cancellation point.
            await anyio.lowlevel.checkpoint_if_cancelled()
            semaphore.acquire_nowait()
        else:
            await semaphore.acquire()
        return self._lease

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._debt:
            self._debt -= 1
        else:
            self._semaphore.release()


class _ModelMeter:
    """Everything metered for one model: slots, a FIFO turnstile, the cool-down and the pacer."""

    __slots__ = ("cool_down", "granted", "pacer", "slots", "throttles", "turnstile")

    def __init__(self, model: str, limits: Limits, rng: random.Random) -> None:
        self.slots = SlotPool(model, limits.for_model(model).slots)
        # A fair lock: the first caller waits out the pacer and the cool-down, the rest queue
        # behind it in arrival order.
        self.turnstile = anyio.Lock()
        self.pacer = GcraPacer(limits.submit_spacing(model))
        self.cool_down = CoolDown(limits, rng)
        self.granted = 0
        self.throttles = 0


@attrs.frozen
class ModelMeterState:
    """A reading of one model's meters, for progress displays and metrics.

    Attributes:
        model: the model name.
        in_progress: slots held (tasks in progress or about to be submitted).
        max_in_progress: the slot limit.
        waiting_for_slot: callers queued for a slot.
        waiting_to_submit: callers holding a slot and queued for a submit turn.
        cool_down_remaining: seconds left of a pause after a 429 (0 when not paused).
        consecutive_throttles: 429s in a row since the last accepted submission.
        submits_granted: submit turns handed out so far.
        throttles: 429s reported so far.
    """

    model: str
    in_progress: int
    max_in_progress: int
    waiting_for_slot: int
    waiting_to_submit: int
    cool_down_remaining: float
    consecutive_throttles: int
    submits_granted: int
    throttles: int


class LocalLimiter:
    """The in-process ``Limiter``: anyio primitives only, state per model created on first use.

    Args:
        limits: the limits to keep; ``Limits()`` (the service's defaults) when omitted.
        clock: where time comes from (tests pass a virtual one).
        rng: the randomness behind backoff jitter (seed one for reproducible runs).
        submits: the record of unanswered submits and known tasks (a fresh in-process one by
            default).

    Example:
        ```python
        limiter = ds.LocalLimiter(ds.Limits.default())
        async with limiter.slot("wanx-style-repaint-v1"):
            await limiter.submit_turn("wanx-style-repaint-v1")
            task = await client.submit(request)
        ```
    """

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        submits: SubmitRecord | None = None,
    ) -> None:
        self.limits = limits if limits is not None else Limits()
        self._clock = clock
        self._random = rng if rng is not None else random.Random()
        self._meters: dict[str, _ModelMeter] = {}
        self._poll_pacer = WindowPacer(self.limits.poll_rate)
        self._poll_turnstile: anyio.Lock | None = None
        self._polls_granted = 0
        #: Unanswered submits and known tasks of every runner using this limiter.
        self.submits: SubmitRecord = submits or LocalSubmitRecord(clock.wall)

    def __repr__(self) -> str:
        return f"LocalLimiter({self.limits!r})"

    def _meter(self, model: str) -> _ModelMeter:
        meter = self._meters.get(model)
        if meter is None:
            meter = self._meters[model] = _ModelMeter(model, self.limits, self._random)
        return meter

    # --- the Limiter protocol ---

    def slot(self, model: str) -> AbstractAsyncContextManager[SlotLease]:
        """Wait for one of ``model``'s task-in-progress slots, first come first served.

        Leaving the ``async with`` block frees the slot, also when the holder is cancelled. Hold it
        from before the submission until the task is terminal (or known not to exist).
        """
        return self._meter(model).slots

    async def submit_turn(self, model: str) -> None:
        """Wait until a submission of ``model`` may go now, then reserve it.

        Waits out the model's cool-down and the pacer (at least ``1 / submit_rate +
        safety_margin`` after the previous turn, with no burst after idle time), queued in
        arrival order behind other callers of the same model. Other models never wait here.
        Returns without sleeping when nothing needs waiting for; it still yields to the event
        loop once, so a busy caller cannot starve the others.
        """
        meter = self._meter(model)
        clock = self._clock
        if not meter.turnstile.locked():
            # The fast path: nobody queued and nothing to wait for; the turn is taken before
            # the one yield (a cancelled caller leaves it unused, which only errs on the safe
            # side).
            now = clock.now()
            if max(meter.pacer.next_start, meter.cool_down.until) <= now:
                meter.pacer.started(now)
                meter.granted += 1
                await anyio.lowlevel.checkpoint()
                return
        async with meter.turnstile:
            while True:
                now = clock.now()
                ready_at = max(meter.pacer.next_start, meter.cool_down.until)
                if ready_at <= now:
                    break
                # Loop, not a single sleep: a 429 elsewhere may extend the cool-down meanwhile.
                await clock.sleep(ready_at - now)
            meter.pacer.started(now)
            meter.granted += 1

    async def throttled(self, model: str, retry_after: float | None) -> float:
        """Pause ``model``'s submissions for every caller after a 429; return the pause applied.

        Args:
            model: the model whose submission was throttled.
            retry_after: the server's ``Retry-After`` in seconds, if it sent one; honoured as is.
                Without it the pause backs off exponentially (with jitter) with every 429 in a
                row, until ``submit_succeeded`` resets it.

        Returns:
            Seconds from now until that model's submissions may go again (at the earliest).
        """
        meter = self._meter(model)
        meter.throttles += 1
        return meter.cool_down.pause(self._clock.now(), retry_after)

    def submit_succeeded(self, model: str) -> None:
        """A submission of ``model`` was accepted: the backoff after 429s starts afresh."""
        meter = self._meters.get(model)
        if meter is not None:
            meter.cool_down.reset()

    def stop_queue_ahead(self, model: str) -> None:
        """Hand out ``max_in_progress`` slots of ``model`` from now on (free ones go at once,
        held ones as their holders leave)."""
        self._meter(model).slots.shrink(self.limits.for_model(model).max_in_progress)

    async def poll_turn(self) -> None:
        """Wait for a turn in the account-wide budget for get, list and cancel calls.

        At most ``Limits.poll_rate`` turns in any one second (``WindowPacer``), first come
        first served. Unlike submissions, turns may come in bursts: the service's window for
        these calls is twice the default budget, and a short task's end is best watched densely.
        """
        turnstile = self._poll_turnstile
        if turnstile is None:
            turnstile = self._poll_turnstile = anyio.Lock()
        pacer = self._poll_pacer
        clock = self._clock
        if not turnstile.locked():
            now = clock.now()
            if pacer.ready_at() <= now:  # the fast path, as in submit_turn
                pacer.started(now)
                self._polls_granted += 1
                await anyio.lowlevel.checkpoint()
                return
        async with turnstile:
            while True:
                now = clock.now()
                ready_at = pacer.ready_at()
                if ready_at <= now:
                    break
                await clock.sleep(ready_at - now)
            pacer.started(now)
            self._polls_granted += 1

    async def aclose(self) -> None:
        """Nothing to release in process; present for the protocol."""

    async def __aenter__(self) -> LocalLimiter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- read-only introspection ---

    @property
    def models(self) -> tuple[str, ...]:
        """The models metered so far, in first-use order."""
        return tuple(self._meters)

    @property
    def polls_granted(self) -> int:
        """Poll turns handed out so far."""
        return self._polls_granted

    def in_progress(self, model: str) -> int:
        """Slots of ``model`` held now."""
        meter = self._meters.get(model)
        return 0 if meter is None else meter.slots.in_use

    def cool_down_remaining(self, model: str) -> float:
        """Seconds left of ``model``'s pause after a 429 (0 when it is not paused)."""
        meter = self._meters.get(model)
        return 0.0 if meter is None else meter.cool_down.remaining(self._clock.now())

    def state(self, model: str) -> ModelMeterState:
        """A reading of ``model``'s meters (all zero for a model not used yet)."""
        meter = self._meters.get(model)
        if meter is None:
            return ModelMeterState(
                model=model,
                in_progress=0,
                max_in_progress=self.limits.for_model(model).max_in_progress,
                waiting_for_slot=0,
                waiting_to_submit=0,
                cool_down_remaining=0.0,
                consecutive_throttles=0,
                submits_granted=0,
                throttles=0,
            )
        return ModelMeterState(
            model=model,
            in_progress=meter.slots.in_use,
            max_in_progress=meter.slots.capacity,
            waiting_for_slot=meter.slots.waiting,
            waiting_to_submit=meter.turnstile.statistics().tasks_waiting
            + int(meter.turnstile.locked()),
            cool_down_remaining=meter.cool_down.remaining(self._clock.now()),
            consecutive_throttles=meter.cool_down.consecutive,
            submits_granted=meter.granted,
            throttles=meter.throttles,
        )
