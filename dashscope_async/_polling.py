"""When to poll a task next: the poll policy, the run-time estimator and the poll planner.

Owns the arithmetic of polling: it learns how long each model's tasks run (from the service's own
``scheduled_time`` and ``end_time``) and turns that into "wait this long before the next poll".
It never polls, never sleeps and never reads a clock: the runner measures the elapsed times, asks,
sleeps, and keeps to the account's poll budget through the limiter. Everything here is
deterministic (no randomness), so the schedules in the tests are exact.

Why adaptive: a fixed ladder (the official SDK polls at 0, 1, 2, 4, 6, 8, 12, 16, 20, 25 s) spends
polls early, when a 15 s task cannot have finished, and notices the end late (up to 4 s), while
the model's one slot sits idle. Run times of one model are tightly grouped, so once a few are
known the planner can sleep until just before the earliest likely end and then poll densely
where the end is most likely.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Final

import attrs

from ._checks import check_number, wrong_type
from ._config import MODELS
from ._errors import ValidationError
from ._models import TaskStatus
from ._poll_schedule import PollSchedule, optimal_schedule
from ._retry import backoff_delay
from ._validators import at_least_one, non_negative, positive, within

__all__ = ["PollPlanner", "PollPolicy", "RunTimeEstimate", "RunTimeStats"]

#: z-scores of a run time's likely window (``RunTimeEstimate.low``/``high``): about 2.3 % of runs
#: end before it, 2.3 % after it.
WINDOW_Z: Final = 2.0
#: Run time assumed for a model the registry does not know (only a prior: one run replaces it).
UNKNOWN_MODEL_RUN_SECONDS: Final = 15.0
#: The spread assumed for a model the registry does not know (a log standard deviation).
UNKNOWN_MODEL_RUN_SPREAD: Final = 0.15
#: Run times in a row this many spreads beyond the estimate, on one side, that say the model's
#: run time has changed (0.13 % of runs each, if it has not): the estimate starts again from them.
CHANGE_Z: Final = 3.0
CHANGE_RUNS: Final = 2
#: The widest spread ever reported (run times a factor of 150 apart per standard deviation): no
#: schedule is any better for a wider one, and its quantiles would overflow a float.
MAX_LOG_SIGMA: Final = 5.0


def _checked_priors(value: Mapping[str, float]) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise wrong_type("run_time_priors", "a mapping of model names to seconds", value)
    for model, seconds in value.items():
        check_number(f"run_time_priors[{model!r}]", seconds, unit="seconds", more_than=0)
    return dict(value)


def _frozen_priors(value: Mapping[str, float]) -> Mapping[str, float]:
    return MappingProxyType(_checked_priors(value))


def _checked_probes(value: Sequence[float]) -> tuple[float, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise wrong_type("cold_probes", "a sequence of fractions", value)
    probes = tuple(value)
    for position, fraction in enumerate(probes):
        check_number(f"cold_probes[{position}]", fraction, more_than=0, less_than=1)
    if list(probes) != sorted(set(probes)):
        raise ValidationError("cold_probes", f"must be increasing, not {probes!r}")
    return probes


@attrs.frozen
class PollPolicy:
    """How the runner polls its tasks.

    Attributes:
        first_poll: seconds after the submission for the first poll; ``None`` lets the planner
            choose (just before the earliest likely end of the task).
        min_interval: never poll one task more often than this.
        max_interval: never leave one task unpolled longer than this, except for the sleeps to
            the first planned poll and to a probe (nothing is expected before them); equal to
            ``min_interval``, it is the one gap between every two polls.
        deadline: seconds after the submission after which the runner gives up on a job (a
            PENDING task is cancelled on the server, a RUNNING one is reported with its task
            id); ``None`` waits as long as the task runs. A task not polled yet when its
            deadline comes (0, or a deadline before the first planned poll) is polled once
            then, and kept if it has ended.
        polls_per_task: the polls one task may cost on average once its model's run time is
            learned; the planner places them where they notice the end soonest (more polls:
            less idle slot time between tasks). 7 notices a learned 15 s task's end about
            0.11 to 0.12 s late when its run times spread by 5 to 6 %.
        cold_polls_per_task: ``polls_per_task`` for a model's first task, while its run time
            is the registry's guess and spread (wider, so each poll saves less), probes aside.
        cold_probes: while a model's run time is still unknown (its first task), poll at these
            fractions of the registry's typical run time before its early quantile: cheap
            insurance for a model that runs far faster than the registry says (an emulator at a
            time scale). Empty: none.
        overrun_growth: once a task runs past its likely window, wait at most this fraction of
            the time it has run so far, so a task that runs far longer than expected is still
            noticed within that fraction of its run time.
        error_backoff: the first wait after a failed poll (429, 5xx, lost connection) that
            came without ``Retry-After``; it doubles with every further failure in a row.
        error_backoff_max: the longest such wait.
        run_time_priors: typical run seconds by model, assumed until the first run time of
            that model is observed (the registry's typical run times otherwise). Useful when
            you know better, for instance against an emulator at a known time scale.

    Example:
        ```python
        poll = ds.PollPolicy(deadline=600, max_interval=3)
        async with ds.AsyncTaskRunner(client, poll=poll) as runner:
            ...
        ```
    """

    first_poll: float | None = attrs.field(
        default=None, validator=non_negative("first_poll", unit="seconds", optional=True)
    )
    min_interval: float = attrs.field(
        default=0.04, validator=positive("min_interval", unit="seconds")
    )
    max_interval: float = attrs.field(
        default=5.0, validator=positive("max_interval", unit="seconds")
    )
    deadline: float | None = attrs.field(
        default=None, validator=non_negative("deadline", unit="seconds", optional=True)
    )
    polls_per_task: float = attrs.field(default=7.0, validator=positive("polls_per_task"))
    cold_polls_per_task: float = attrs.field(
        default=4.75, validator=positive("cold_polls_per_task")
    )
    cold_probes: tuple[float, ...] = attrs.field(default=(0.1,), converter=_checked_probes)
    overrun_growth: float = attrs.field(default=0.1, validator=positive("overrun_growth"))
    error_backoff: float = attrs.field(
        default=0.5, validator=positive("error_backoff", unit="seconds")
    )
    error_backoff_max: float = attrs.field(
        default=8.0, validator=positive("error_backoff_max", unit="seconds")
    )
    run_time_priors: Mapping[str, float] = attrs.field(
        factory=dict,
        converter=_frozen_priors,
        hash=False,
        repr=lambda priors: repr(dict(priors)),
    )

    def __attrs_post_init__(self) -> None:
        if self.max_interval < self.min_interval:
            raise ValidationError(
                "max_interval",
                f"must be at least min_interval ({self.min_interval}), not {self.max_interval}",
            )


@attrs.frozen
class RunTimeEstimate:
    """What is known about one model's run time: a lognormal ``exp(N(log_median, log_sigma))``.

    Attributes:
        model: the model name.
        median: the median run time in seconds.
        log_sigma: the spread, as the standard deviation of the run times' logarithms (0.05 means
            most runs lie within about ±10 % of the median).
        observations: how many run times it was learned from (0: the registry's prior only).

    Example:
        ```python
        estimate = stats.expected("wanx-style-repaint-v1")
        estimate.low, estimate.median, estimate.high
        ```
    """

    model: str
    median: float
    log_sigma: float
    observations: int

    def quantile(self, z: float) -> float:
        """The run time ``z`` standard deviations (of the log) from the median."""
        return self.median * math.exp(z * self.log_sigma)

    @property
    def low(self) -> float:
        """An early run time: about 2.3 % of runs end sooner."""
        return self.quantile(-WINDOW_Z)

    @property
    def high(self) -> float:
        """A late run time: about 2.3 % of runs end later."""
        return self.quantile(WINDOW_Z)

    @property
    def known(self) -> bool:
        """True once at least one run time was observed."""
        return self.observations > 0


@attrs.define
class _ModelRunTimes:
    logs: deque[float]
    estimate: RunTimeEstimate | None = None
    #: Every run time observed, the ones the window forgot included.
    seen: int = 0
    #: Run times in a row beyond ``CHANGE_Z`` spreads on one side (``side``) of the estimate.
    outliers: int = 0
    side: int = 0


@attrs.define
class RunTimeStats:
    """Learns each model's run time from finished tasks (``end_time - scheduled_time``).

    The estimate is a lognormal: its median is the geometric mean of the last ``window`` run
    times, so a single observation already replaces the registry's prior (which may be far off,
    for instance against an emulator running at ten times the speed). Two run times in a row
    more than 3 spreads beyond the estimate on the same side say the model's run time has
    changed: the window starts again from those two. Its spread is the sample
    spread of the log run times, pulled towards ``prior_log_sigma`` with the weight of
    ``prior_weight`` observations, so two lucky equal run times do not make the planner
    overconfident; it never goes below ``min_log_sigma``.

    Args:
        priors: typical run seconds by model, used until a model's first run time is
            observed; the registry's ``typical_run_seconds`` for models not listed.
        window: how many recent run times per model to learn from.
        prior_log_sigma: the spread assumed before observations outweigh it (0 to 5).
        prior_weight: how many observations the assumed spread counts as (> 0).
        cold_log_sigma: the spread reported while nothing is observed (0 to 5); ``None`` (the
            default) takes the registry's ``run_time_spread`` of the model.
        min_log_sigma: the narrowest spread ever reported (0 to 5); the widest is 5, a factor
            of about 150 per standard deviation.

    Example:
        ```python
        stats = ds.RunTimeStats()
        stats.observe("wanx-style-repaint-v1", 14.2)
        stats.expected("wanx-style-repaint-v1").median  # 14.2
        ```
    """

    priors: Mapping[str, float] = attrs.field(factory=dict, converter=_checked_priors)
    window: int = attrs.field(default=64, validator=at_least_one("window"))
    prior_log_sigma: float = attrs.field(
        default=0.1, validator=within("prior_log_sigma", at_most=MAX_LOG_SIGMA)
    )
    prior_weight: float = attrs.field(default=1.0, validator=positive("prior_weight"))
    cold_log_sigma: float | None = attrs.field(
        default=None, validator=within("cold_log_sigma", at_most=MAX_LOG_SIGMA, optional=True)
    )
    min_log_sigma: float = attrs.field(
        default=0.02, validator=within("min_log_sigma", at_most=MAX_LOG_SIGMA)
    )
    _models: dict[str, _ModelRunTimes] = attrs.field(init=False, factory=dict, repr=False)

    def observe(self, model: str, run_seconds: float) -> None:
        """Learn one finished task's run time (``end_time - scheduled_time``, in seconds).

        Values that cannot be a run time (zero, negative, not finite) are ignored: they come from
        missing or skewed timestamps, not from the model.
        """
        if not (run_seconds > 0 and math.isfinite(run_seconds)):
            return
        runs = self._models.get(model)
        if runs is None:
            runs = self._models[model] = _ModelRunTimes(deque(maxlen=self.window))
        log = math.log(run_seconds)
        side = self._side(model, log) if runs.logs else 0
        runs.outliers = runs.outliers + 1 if side and side == runs.side else int(side != 0)
        runs.side = side
        runs.logs.append(log)
        if runs.outliers >= CHANGE_RUNS:
            # The run time has changed: what came before would hold the estimate back for a
            # whole window.
            recent = list(runs.logs)[-CHANGE_RUNS:]
            runs.logs.clear()
            runs.logs.extend(recent)
            runs.outliers = 0
        runs.estimate = None
        runs.seen += 1

    def _side(self, model: str, log: float) -> int:
        """-1 or 1 for a run time beyond ``CHANGE_Z`` spreads below or above the estimate."""
        estimate = self.expected(model)
        z = (log - math.log(estimate.median)) / max(estimate.log_sigma, 1e-9)
        return 0 if abs(z) <= CHANGE_Z else (1 if z > 0 else -1)

    def observations(self, model: str) -> int:
        """How many run times of ``model`` are being learned from now."""
        runs = self._models.get(model)
        return 0 if runs is None else len(runs.logs)

    def expected(self, model: str) -> RunTimeEstimate:
        """The current estimate of ``model``'s run time (the registry's prior until one is seen)."""
        runs = self._models.get(model)
        if runs is None or not runs.logs:
            return RunTimeEstimate(model, self.prior(model), self.prior_spread(model), 0)
        if runs.estimate is None:
            runs.estimate = self._estimate(model, runs.logs)
        return runs.estimate

    def _seen(self, model: str) -> int:
        runs = self._models.get(model)
        return 0 if runs is None else runs.seen

    def _latest(self, model: str) -> float | None:
        """The run time observed last, if any."""
        runs = self._models.get(model)
        return math.exp(runs.logs[-1]) if runs is not None and runs.logs else None

    def prior(self, model: str) -> float:
        """The run time assumed for ``model`` before any is observed."""
        typical = self.priors.get(model)
        if typical is not None:
            return typical
        spec = MODELS.get(model)
        return spec.typical_run_seconds if spec is not None else UNKNOWN_MODEL_RUN_SECONDS

    def prior_spread(self, model: str) -> float:
        """The run-time spread (log standard deviation) assumed before any run is observed."""
        if self.cold_log_sigma is not None:
            return self.cold_log_sigma
        spec = MODELS.get(model)
        return spec.run_time_spread if spec is not None else UNKNOWN_MODEL_RUN_SPREAD

    def _estimate(self, model: str, logs: deque[float]) -> RunTimeEstimate:
        n = len(logs)
        mean = math.fsum(logs) / n
        squares = math.fsum((x - mean) ** 2 for x in logs)
        variance = (self.prior_weight * self.prior_log_sigma**2 + squares) / (
            self.prior_weight + n - 1
        )
        sigma = min(max(math.sqrt(variance), self.min_log_sigma), MAX_LOG_SIGMA)
        return RunTimeEstimate(model, math.exp(mean), sigma, n)


class PollPlanner:
    """Decides how long to wait before polling a task again.

    For a running task of a model whose run time is estimated as a lognormal with median ``m``
    and log spread ``s`` (``RunTimeStats``), the planner keeps a schedule (``schedule()``): poll
    times counted from the task's start.

    1. **Sleep through the unlikely start.** Nothing is polled before the schedule's first
       poll, in the early tail of the run time: one sleep replaces the ladder of useless early
       polls a fixed schedule spends.
    2. **Poll where a poll saves the most.** The schedule is the one with the least expected
       delay in noticing the end for at most ``polls_per_task`` expected polls per task,
       solved exactly for the estimate (``_poll_schedule.optimal_schedule``): sparse where the
       window opens, densest as it closes. Learned 15 s runs with a 5 % spread are noticed
       about 0.12 s late for about 6.2 polls per task, where the SDK's ladder spends 8 and is
       up to 4 s late.
    3. **Back off on an overrun.** Past the schedule's last poll (0.13 % of runs), the gap is
       ``overrun_growth * t`` (10 % of the time run so far), so a task that runs unusually
       long is polled less and less often but still noticed within 10 % of its run time.
    4. **A warm first task.** Before the first run of a model is observed, the schedule is
       solved for the registry's typical run time and spread (``ModelSpec.typical_run_seconds``,
       ``ModelSpec.run_time_spread``: 15 s and 8 % for style repaint) with the smaller
       ``cold_polls_per_task``, plus one probe at a tenth of the typical run time
       (``cold_probes``) in case the model runs far faster than the registry says. A first
       15 s task costs about 5 to 6 polls (at most 10 for 19 runs in 20) and is noticed about
       0.2 s late; a far faster model is noticed at the probe or at the first poll, a far
       slower one by rule 3. One observed run replaces the guess.

    The schedule is solved again after 1, 2, 3, ... observed runs, then every 16, and at once
    after a run more than 3 spreads from the estimate it was solved for. Every gap is kept
    within ``[min_interval, max_interval]``, except the sleeps to a probe and to the first
    poll, which may be longer (nothing is expected before them), unless the two bounds are
    equal (a fixed interval). ``min_interval`` (40 ms) lets short tasks be polled densely
    where they end; with ``poll_rate`` given, a task's schedule
    spends at most half of it over the task's median run (a 1 s task: 5 polls, noticed about
    20 ms late). No delay runs past the job's deadline. A task not known to be running
    (``since_running`` is ``None``: PENDING behind another task) is polled every tenth of the
    median run time; a SUSPENDED one every ``max_interval``.

    Args:
        policy: the poll settings; ``PollPolicy()`` when omitted.
        stats: where run times are learned; when omitted, a fresh ``RunTimeStats`` with the
            policy's ``run_time_priors``. Share one between planners to share what they learn.
        poll_rate: the account's polls per second, if the planner should keep a short task's
            polls well inside it (the runner passes ``Limits.poll_rate``).

    Example:
        ```python
        planner = ds.PollPlanner()
        delay = planner.next_delay(
            "wanx-style-repaint-v1", since_submit=0.0, since_running=0.0,
            status=ds.TaskStatus.RUNNING, polls_so_far=0,
        )
        ```
    """

    __slots__ = ("_schedules", "policy", "poll_rate", "stats")

    def __init__(
        self,
        policy: PollPolicy | None = None,
        stats: RunTimeStats | None = None,
        *,
        poll_rate: float | None = None,
    ) -> None:
        self.policy = policy if policy is not None else PollPolicy()
        if stats is None:
            stats = RunTimeStats(priors=self.policy.run_time_priors)
        self.stats = stats
        self.poll_rate = poll_rate
        self._schedules: dict[str, _CachedSchedule] = {}

    def __repr__(self) -> str:
        return f"PollPlanner({self.policy!r})"

    def next_delay(
        self,
        model: str,
        *,
        since_submit: float,
        since_running: float | None,
        status: TaskStatus,
        polls_so_far: int,
        queued_ahead: bool = False,
        runs_before_start: int = 1,
        last_planned: float | None = None,
    ) -> float:
        """Seconds to wait before the next poll of one task.

        Args:
            model: the task's model.
            since_submit: seconds since the task was submitted (the runner's clock).
            since_running: seconds the task has been running, as far as the runner knows (from
                the submission when it went into a free slot, else from when a poll first saw
                it RUNNING); ``None`` when it is not known to run.
            status: the status the last poll returned (``PENDING`` before the first poll).
            polls_so_far: how many polls of this task were answered so far.
            queued_ahead: its model queues tasks ahead (``ModelLimits.queue_ahead``): the
                service starts the next task the moment this one ends, so noticing the end
                late costs the slot nothing, and polls only collect results. Once the model's
                run time is known, such a task is polled once at the late quantile ``high``
                of its run (then by rule 3), and
                while it waits PENDING, first after ``runs_before_start`` median run times
                (the tasks ahead of it), then every quarter of one.
            runs_before_start: with ``queued_ahead``, how many run times of the model's slots
                pass before a PENDING task starts (1: it waits behind the running ones).
            last_planned: the running time the previous poll was planned for, if known. The
                next poll is the schedule's one after it, even if the task's start has since
                moved a little later (the service's times showed it was scheduled after its
                submission), which makes ``since_running`` smaller than that plan.

        Returns:
            The delay in seconds (0 for a terminal status, or once the deadline has passed).
        """
        policy = self.policy
        if status.is_terminal:
            return 0.0
        if polls_so_far == 0 and policy.first_poll is not None:
            return self._before_deadline(max(policy.first_poll - since_submit, 0.0), since_submit)
        estimate = self.stats.expected(model)
        if status is TaskStatus.SUSPENDED:
            delay = policy.max_interval
        elif since_running is None:
            if queued_ahead:
                # Behind a running task: it starts when that one ends, about a run time away.
                runs = max(runs_before_start, 1) if polls_so_far == 0 else 0.25
                delay = max(runs * estimate.median, policy.min_interval)
            else:
                delay = self._clamp(0.1 * estimate.median)
        elif queued_ahead and estimate.known:
            # Only once the run time is known: noticing an end late is free only while the task
            # queued behind is still running, and a guessed run time may be far off.
            delay = self._collecting_delay(estimate, max(since_running, 0.0))
        else:
            delay = self._running_delay(
                model, estimate, max(since_running, 0.0), last_planned or 0.0
            )
        if policy.min_interval == policy.max_interval:
            # A pinned interval (``wait(poll_interval=...)``) holds for every gap, the sleeps to
            # the first poll and to a probe too.
            delay = policy.max_interval
        return self._before_deadline(delay, since_submit)

    def after_error(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait after a poll failed (429, 5xx, lost connection): try again later.

        A failed poll never fails the job; the task runs on at the service either way.

        Args:
            attempt: failures in a row for this task so far, counting this one (1, 2, ...).
            retry_after: the server's ``Retry-After`` in seconds, if it sent one (the client
                has capped it already); honoured as given.

        Returns:
            ``retry_after`` when given (but never less than ``min_interval``: a server asking
            for no wait at all must not make the loop spin), else the retry policy's backoff
            without jitter: ``error_backoff * 2**(attempt - 1)`` up to ``error_backoff_max``.
        """
        policy = self.policy
        if retry_after is not None and not math.isnan(retry_after):
            return max(retry_after, policy.min_interval)
        return backoff_delay(
            attempt - 1, jitter=0.0, base=policy.error_backoff, cap=policy.error_backoff_max
        )

    def schedule(self, model: str) -> PollSchedule:
        """Where the polls of one running task of ``model`` go now (rules 1, 2 and 4)."""
        estimate = self.stats.expected(model)
        seen = self.stats._seen(model)
        cached = self._schedules.get(model)
        if cached is None or cached.stale(seen, self.stats._latest(model)):
            policy = self.policy
            budget = policy.polls_per_task if estimate.known else policy.cold_polls_per_task
            if self.poll_rate is not None:
                # A short task spends at most half the account's polls over its run: the task
                # before it and the other models' tasks need the rest of that second.
                budget = min(budget, max(1.0, 0.5 * self.poll_rate * estimate.median))
            cached = self._schedules[model] = _CachedSchedule(
                seen,
                estimate,
                optimal_schedule(
                    estimate.median,
                    estimate.log_sigma,
                    polls=budget,
                    min_interval=policy.min_interval,
                ),
            )
        return cached.schedule

    def _running_delay(
        self, model: str, estimate: RunTimeEstimate, elapsed: float, last_planned: float
    ) -> float:
        policy = self.policy
        schedule = self.schedule(model)
        first = schedule.times[0]
        # Where the task is in its schedule: past the poll just made, even if its start moved.
        position = max(elapsed, last_planned)
        if position < first - policy.min_interval:
            return self._sleep_until(estimate, elapsed, first, position)
        upcoming = schedule.next_poll(position)
        if upcoming is None:
            return self._clamp(policy.overrun_growth * elapsed)
        return self._clamp(upcoming - elapsed)

    def _collecting_delay(self, estimate: RunTimeEstimate, elapsed: float) -> float:
        policy = self.policy
        high = estimate.high
        if elapsed < high - policy.min_interval:
            return high - elapsed
        return self._clamp(policy.overrun_growth * elapsed)

    def _sleep_until(
        self, estimate: RunTimeEstimate, elapsed: float, until: float, position: float
    ) -> float:
        """The sleep to ``until``, cut short by a first task's next probe, if one comes first
        (and is not the poll just made: ``position`` is past it)."""
        if not estimate.known:
            for fraction in self.policy.cold_probes:
                probe = fraction * estimate.median
                if position + self.policy.min_interval < probe < until:
                    return probe - elapsed
        return until - elapsed

    def _clamp(self, delay: float) -> float:
        policy = self.policy
        return min(max(delay, policy.min_interval), policy.max_interval)

    def _before_deadline(self, delay: float, since_submit: float) -> float:
        deadline = self.policy.deadline
        if deadline is None:
            return delay
        return min(delay, max(deadline - since_submit, 0.0))


@attrs.frozen
class _CachedSchedule:
    """A model's schedule, how many run times had been observed when it was solved, and the
    estimate it was solved for."""

    seen: int
    estimate: RunTimeEstimate
    schedule: PollSchedule

    def stale(self, seen: int, latest: float | None) -> bool:
        # Solved again after 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, ... runs, then every 16: a new run
        # time moves the estimate less and less, and a long batch pays a few milliseconds per
        # sixteen tasks, not per task. A run the estimate gave next to no chance (more than
        # CHANGE_Z spreads out) says the run time has changed: solved again at once, or a model
        # that got 4x slower or faster is polled by a stale plan for 16 more tasks.
        if seen == self.seen:
            return False
        estimate = self.estimate
        outside = latest is not None and not (
            estimate.quantile(-CHANGE_Z) <= latest <= estimate.quantile(CHANGE_Z)
        )
        return outside or seen - self.seen >= max(1, min(self.seen // 4, 16))
