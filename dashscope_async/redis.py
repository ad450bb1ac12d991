"""One account's limits shared by every worker process and host, kept in Redis (extra ``redis``).

Owns ``RedisLimiter``, the ``Limiter`` the runner uses when several processes submit for the same
account: per-model submit pacing (GCRA), per-model task slots (leases with a heartbeat), the shared
cool-down after a 429, and the account-wide poll budget. Every decision is one Lua script that
reads Redis's own clock (``TIME``), so workers on hosts with skewed clocks still agree. It decides
when a submission may go; it never sends one, and it never talks to DashScope.

A Redis blip is ridden out: every Redis call goes through one retry wrapper (``_with_retries``,
on ``_redis_common.Outage``, which the job store uses too) that backs off (the retry policy's formula) for up to ``outage_grace`` seconds of an outage
before it raises ``LimiterUnavailableError``. Meanwhile no submit turn or slot is granted (the
shared limits cannot be checked), while poll turns go on under a conservative local budget, so
tasks already running are still collected.

Asyncio only: redis-py's client is built on asyncio, so this module cannot run under trio (it
says so with a clear error). The in-process limiter works on both.

Keys (``ns`` is the namespace, every key of one model shares a hash tag, so each script touches
one cluster slot):

```
{ns:MODEL}:pace       string  the model's GCRA theoretical arrival time (microseconds, Redis time)
{ns:MODEL}:cooldown   string  present while the model is paused after a 429 (PX = the pause)
{ns:MODEL}:slots      zset    lease tokens of tasks in progress, scored by expiry (ms, Redis time)
{ns:MODEL}:unanswered zset    tickets of submits sent and not answered yet, scored by send time (ms)
{ns:MODEL}:known      zset    task ids some worker's submit created, scored by when recorded (ms)
{ns}:polls            string  the account's poll-budget GCRA arrival time
```
"""

from __future__ import annotations

import math
import random
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import anyio
import attrs

from ._errors import LimiterUnavailableError
from ._limits import CoolDown, GcraPacer, Limits
from ._logging import get_logger
from ._redis_common import Outage, beside, connect, require_asyncio
from ._redis_journal import BudgetTotals, RedisJournal, RedisSpending
from ._submits import RECORD_MEMORY, Screening, SubmitTicket

try:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "dashscope_async.redis needs redis-py: pip install 'dashscope-async[redis]'"
    ) from exc

__all__ = [
    "BudgetTotals",
    "LimiterUnavailableError",
    "RedisJournal",
    "RedisLimiter",
    "RedisSlotLease",
    "RedisSpending",
    "RedisSubmitRecord",
]

logger = get_logger("redis")

T = TypeVar("T")

#: GCRA with no burst: go only when the theoretical arrival time (TAT) has come, then push it
#: one interval past now. Answers 0 (go: the turn is taken) or how many ms to wait.
PACE_SCRIPT: Final = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
if KEYS[2] then
  local cooling = redis.call('PTTL', KEYS[2])
  if cooling > 0 then return cooling end
end
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat > now then
  return math.ceil((tat - now) / 1000)
end
redis.call('SET', KEYS[1], string.format('%.0f', now + interval),
           'PX', math.ceil(interval / 1000) + 1000)
return 0
"""

#: Pause a model for everyone: extend the cool-down key, never shorten it. Answers the pause now
#: in force, in ms.
COOLDOWN_SCRIPT: Final = """
local pause = tonumber(ARGV[1])
local current = redis.call('PTTL', KEYS[1])
if current < pause then
  redis.call('SET', KEYS[1], '1', 'PX', pause)
  return pause
end
return current
"""

#: Take a task slot: drop expired leases (dead workers), then add ours if there is room.
#: Answers 0 (taken) or ms until the earliest lease would expire.
ACQUIRE_SCRIPT: Final = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
-- Already ours: a retried acquire whose first answer was lost must not wait for itself.
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  local expiry = now + tonumber(ARGV[3])
  redis.call('ZADD', KEYS[1], string.format('%.0f', expiry), ARGV[1])
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', tonumber(last[2]) + 1000))
  return 0
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(first[2]) - now)
"""

#: Extend our lease if we still hold it. Answers 1 (renewed) or 0 (lost: it expired or was taken).
RENEW_SCRIPT: Final = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not expiry) or tonumber(expiry) <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', string.format('%.0f', now + tonumber(ARGV[2])), ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', tonumber(last[2]) + 1000))
return 1
"""

#: Compare-and-delete: remove only our own token. Answers 1 if we still held it, else 0.
RELEASE_SCRIPT: Final = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
if expiry and tonumber(expiry) > now then return 1 end
return 0
"""

#: A submit's answer: its task becomes known and its ticket goes, in one step (so a reader sees
#: the task either still unanswered-for or known, never neither). ARGV: token, task id or "",
#: now (ms), memory (ms).
ANSWER_SCRIPT: Final = """
local now = tonumber(ARGV[3])
local memory = tonumber(ARGV[4])
if ARGV[2] ~= '' then
  redis.call('ZADD', KEYS[1], now, ARGV[2])
  redis.call('PEXPIRE', KEYS[1], memory)
end
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

#: Screen a lost submit's candidates: which are not known, and how many other submits sent in the
#: window are unanswered. ARGV: token, from (ms), until (ms), now (ms), memory (ms), ids...
#: Answers {others, unknown ids...}.
SCREEN_SCRIPT: Final = """
local now = tonumber(ARGV[4])
local horizon = now - tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. horizon)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. horizon)
local others = redis.call('ZCOUNT', KEYS[2], ARGV[2], ARGV[3])
local own = redis.call('ZSCORE', KEYS[2], ARGV[1])
if own and tonumber(own) >= tonumber(ARGV[2]) and tonumber(own) <= tonumber(ARGV[3]) then
  others = others - 1
end
local answer = {others}
for i = 6, #ARGV do
  if not redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    table.insert(answer, ARGV[i])
  end
end
return answer
"""

#: How long a release may take when the slot's owner is being cancelled.
_RELEASE_TIMEOUT: Final = 5.0
#: While Redis is down, a poll turn asks it again at most this often (else it goes locally).
_OUTAGE_PROBE_INTERVAL: Final = 1.0
#: A poll turn waits this long at most for one answer from Redis (less while it is known to be
#: down): a hung Redis must not stall the polls of running tasks, which go on locally instead.
_POLL_ATTEMPT_TIMEOUT: Final = 1.0
_OUTAGE_PROBE_TIMEOUT: Final = 0.25


@attrs.define(eq=False)
class RedisSlotLease:
    """A task slot held in Redis; ``lost`` turns true if the lease expired or was taken.

    A lease is lost when its heartbeat could not renew it in time (the process stalled, or Redis
    was unreachable for longer than the lease's life). Another worker may then hold the slot, so
    the service may see one more task in progress than the limit; a warning is logged.

    Attributes:
        model: the model whose slot this is.
    """

    model: str
    token: str = attrs.field(repr=False)
    _lost: bool = attrs.field(default=False, alias="lost")

    @property
    def lost(self) -> bool:
        """True once the lease is known to be no longer held."""
        return self._lost

    def mark_lost(self, reason: str) -> None:
        if not self._lost:
            self._lost = True
            logger.warning("lost the %s task slot lease: %s", self.model, reason)


def _require_asyncio(operation: str) -> None:
    require_asyncio("RedisLimiter", operation)


class RedisLimiter:
    """The runner's limits, shared through Redis by every process that uses the same account.

    Give each worker process its own ``RedisLimiter`` on the same Redis and namespace; together
    they keep each model's submit rate and tasks-in-progress limit, share one poll budget, and
    back off together after a 429. Pacing reads Redis's clock, so hosts need not agree on time.
    A worker that dies frees its task slot when the lease expires (``lease_ttl``).

    Asyncio only (redis-py is built on asyncio). A Redis that cannot be reached is retried with
    backoff for up to ``outage_grace`` seconds: meanwhile no slot or submit turn is granted,
    and poll turns go on under a local budget of ``outage_poll_rate`` per second, so running
    tasks are still collected. After that, waiting for a slot or a submit turn raises
    ``LimiterUnavailableError`` (before anything is submitted), until Redis answers again.

    Args:
        url_or_client: a Redis URL (``redis://host:6379/0``, ``rediss://...``), or a
            ``redis.asyncio.Redis`` client you own (it is not closed by ``aclose``).
        namespace: the prefix of every key; workers of one account must use the same one.
        limits: the account's limits; by default the service's (2 submits/s, 1 task in
            progress per model, a poll budget of 10/s). Every worker must use the same limits.
        lease_ttl: seconds a task slot stays held without a heartbeat; a dead worker's slot
            frees after at most this long.
        heartbeat: seconds between lease renewals; by default a third of ``lease_ttl``.
        slot_poll_interval: the longest a worker waits before asking again for a busy slot
            (a slot freed in the same process is handed over at once).
        outage_grace: seconds of a Redis outage every call rides out (retrying with backoff)
            before it raises ``LimiterUnavailableError``.
        outage_poll_rate: poll turns per second this process grants itself while Redis is
            down; by default 1 (or the poll budget, if lower), so a fleet of workers stays far
            below the account's 20 task queries per second.

    Example:
        ```python
        import dashscope_async as ds
        from dashscope_async.redis import RedisLimiter

        limiter = RedisLimiter("redis://127.0.0.1:6379/0", namespace="acme-prod")
        async with ds.AsyncDashScope() as client, ds.AsyncTaskRunner(
            client, limiter=limiter
        ) as runner:
            async for outcome in runner.map(requests):
                print(outcome.index, outcome.ok)
        await limiter.aclose()
        ```
    """

    def __init__(
        self,
        url_or_client: str | aioredis.Redis[Any],
        *,
        namespace: str = "dashscope",
        limits: Limits | None = None,
        lease_ttl: float = 30.0,
        heartbeat: float | None = None,
        slot_poll_interval: float = 0.25,
        outage_grace: float = 30.0,
        outage_poll_rate: float | None = None,
    ) -> None:
        if not namespace or any(c in namespace for c in "{}"):
            raise ValueError(f"namespace must be non-empty and free of braces: {namespace!r}")
        if lease_ttl <= 0:
            raise ValueError(f"lease_ttl must be positive: {lease_ttl!r}")
        heartbeat = lease_ttl / 3 if heartbeat is None else heartbeat
        if not 0 < heartbeat < lease_ttl:
            raise ValueError(f"heartbeat must be between 0 and lease_ttl: {heartbeat!r}")
        if slot_poll_interval <= 0:
            raise ValueError(f"slot_poll_interval must be positive: {slot_poll_interval!r}")
        outage = Outage(outage_grace, "the shared limiter's Redis")
        self._redis, self._owns_client, self._address = connect(url_or_client)
        self.namespace = namespace
        self.limits = limits if limits is not None else Limits()
        self._queue_ahead_stopped: set[str] = set()
        self.lease_ttl = lease_ttl
        self.heartbeat = heartbeat
        self.slot_poll_interval = slot_poll_interval
        self.outage_grace = outage_grace
        if outage_poll_rate is None:
            outage_poll_rate = min(1.0, self.limits.poll_rate)
        if not outage_poll_rate > 0:
            raise ValueError(f"outage_poll_rate must be positive: {outage_poll_rate!r}")
        self.outage_poll_rate = outage_poll_rate
        self._outage = outage
        self._last_probe = -math.inf
        self._outage_polls = GcraPacer(1.0 / outage_poll_rate)
        self._pace = self._redis.register_script(PACE_SCRIPT)
        self._cooldown = self._redis.register_script(COOLDOWN_SCRIPT)
        self._acquire = self._redis.register_script(ACQUIRE_SCRIPT)
        self._renew = self._redis.register_script(RENEW_SCRIPT)
        self._release = self._redis.register_script(RELEASE_SCRIPT)
        #: Unanswered submits and known tasks of every worker sharing this limiter.
        self.submits = RedisSubmitRecord(self)
        # One waiter per model per process talks to Redis; the rest queue here in FIFO order.
        self._slot_queues: dict[str, anyio.Lock] = {}
        self._submit_queues: dict[str, anyio.Lock] = {}
        self._poll_queue: anyio.Lock | None = None
        self._slot_freed: dict[str, anyio.Event] = {}
        self._cool_downs: dict[str, CoolDown] = {}
        self._random = random.Random()

    def __repr__(self) -> str:
        return f"RedisLimiter({self._address!r}, namespace={self.namespace!r})"

    # -- keys ---------------------------------------------------------------------------------

    def _model_key(self, model: str, what: str) -> str:
        return f"{{{self.namespace}:{model}}}:{what}"

    @property
    def _poll_key(self) -> str:
        return f"{{{self.namespace}}}:polls"

    # -- the Limiter protocol -----------------------------------------------------------------

    def slot(self, model: str) -> AbstractAsyncContextManager[RedisSlotLease]:
        """Wait for one of the model's task slots and hold it (with a heartbeat) until exit.

        Raises:
            LimiterUnavailableError: Redis could not be reached while waiting.
        """
        return self._slot(model)

    @asynccontextmanager
    async def _slot(self, model: str) -> AsyncIterator[RedisSlotLease]:
        _require_asyncio("slot")
        lease = RedisSlotLease(model=model, token=secrets.token_hex(16))
        await self._take_slot(lease)
        try:
            async with beside(lambda: self._keep_alive(lease)):
                yield lease
        finally:
            await self._give_back(lease)

    async def submit_turn(self, model: str) -> None:
        """Wait until a submission for ``model`` may go now (cool-down, then GCRA spacing).

        Raises:
            LimiterUnavailableError: Redis could not be reached.
        """
        _require_asyncio("submit_turn")
        interval_us = round(1e6 * self.limits.submit_spacing(model))
        keys = [self._model_key(model, "pace"), self._model_key(model, "cooldown")]
        queue = self._submit_queues.setdefault(model, anyio.Lock())
        async with queue:
            await self._paced(keys, interval_us)

    async def throttled(self, model: str, retry_after: float | None) -> float:
        """A submit got 429: pause the model's submissions for every worker.

        Uses the service's Retry-After when it gave one, otherwise ``Limits.throttle_backoff``
        doubling with each 429 in a row seen by this process (with jitter, capped at
        ``Limits.throttle_backoff_max``). The shared pause only ever grows.

        Returns:
            The pause now in force for every worker, in seconds.

        Raises:
            LimiterUnavailableError: Redis could not be reached.
        """
        _require_asyncio("throttled")
        cool_down = self._cool_downs.get(model)
        if cool_down is None:
            cool_down = self._cool_downs[model] = CoolDown(self.limits, self._random)
        pause = cool_down.pause(anyio.current_time(), retry_after)
        in_force_ms = await self._call(
            self._cooldown, [self._model_key(model, "cooldown")], [max(1, round(pause * 1000))]
        )
        logger.info("%s throttled: every worker pauses %.3f s", model, in_force_ms / 1000)
        return in_force_ms / 1000

    def stop_queue_ahead(self, model: str) -> None:
        """This worker takes ``max_in_progress`` slots of ``model`` at most from now on (a slot
        already held is kept until its holder leaves)."""
        self._queue_ahead_stopped.add(model)

    def submit_succeeded(self, model: str) -> None:
        """A submit was accepted: the next 429 starts the backoff afresh (in this process)."""
        cool_down = self._cool_downs.get(model)
        if cool_down is not None:
            cool_down.reset()

    async def poll_turn(self) -> None:
        """Wait for a turn in the account-wide poll budget (GCRA, shared by every worker).

        While Redis cannot be reached the turn is granted by a local budget of
        ``outage_poll_rate`` per second instead (asking Redis again about once a second), so
        polls of running tasks go on through an outage; it never raises for Redis's sake.
        """
        _require_asyncio("poll_turn")
        interval_us = round(1e6 / self.limits.poll_rate)
        if self._poll_queue is None:
            self._poll_queue = anyio.Lock()
        async with self._poll_queue:
            in_outage = self._outage.ongoing
            if not in_outage or anyio.current_time() - self._last_probe >= _OUTAGE_PROBE_INTERVAL:
                try:
                    await self._paced(
                        [self._poll_key],
                        interval_us,
                        patient=False,
                        attempt_timeout=_OUTAGE_PROBE_TIMEOUT
                        if in_outage
                        else _POLL_ATTEMPT_TIMEOUT,
                    )
                except LimiterUnavailableError:
                    self._last_probe = anyio.current_time()
                else:
                    return
            await self._local_poll_turn()

    async def aclose(self) -> None:
        """Close the Redis connections, if this limiter opened them (it was given a URL)."""
        if self._owns_client:
            # types-redis predates redis-py 5, which renamed close() to aclose().
            await self._redis.aclose()  # type: ignore[attr-defined]

    async def __aenter__(self) -> RedisLimiter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- internals ----------------------------------------------------------------------------

    async def _call(
        self,
        script: Any,
        keys: list[str],
        args: list[Any],
        *,
        patient: bool = True,
        attempt_timeout: float | None = None,
    ) -> int:
        return int(
            await self._with_retries(
                lambda: script(keys=keys, args=args),
                patient=patient,
                attempt_timeout=attempt_timeout,
            )
        )

    async def _with_retries(
        self,
        operation: Callable[[], Awaitable[T]],
        *,
        patient: bool = True,
        attempt_timeout: float | None = None,
    ) -> T:
        """Run one Redis call, retrying it through an outage of up to ``outage_grace`` seconds.

        The grace is counted from the first failure of the outage, not of this call, so once
        Redis has been gone that long every call fails at its first attempt (callers queued
        behind each other do not wait a grace each), and succeeds again as soon as Redis is
        back. ``patient=False`` makes one attempt (the heartbeat and poll turns have their own
        fallbacks); ``attempt_timeout`` counts an attempt unanswered that long as failed. Every
        failure is raised as ``LimiterUnavailableError``.
        """
        try:
            return await self._outage.call(
                operation, patient=patient, attempt_timeout=attempt_timeout
            )
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc

    async def _local_poll_turn(self) -> None:
        """A poll turn while Redis is down: this process's own conservative budget."""
        pacer = self._outage_polls
        # One sleep is enough: the poll queue lets one caller at a time through.
        wait = pacer.ready_at() - anyio.current_time()
        if wait > 0:
            await anyio.sleep(wait)
        pacer.started(anyio.current_time())

    def _unavailable(self, exc: BaseException) -> LimiterUnavailableError:
        return LimiterUnavailableError(
            f"the shared limiter's Redis at {self._address} is unavailable ({exc}); "
            "nothing was submitted"
        )

    async def _paced(
        self,
        keys: list[str],
        interval_us: int,
        *,
        patient: bool = True,
        attempt_timeout: float | None = None,
    ) -> None:
        # Sleep exactly as long as Redis says, then ask again: another worker may win the turn.
        while True:
            wait_ms = await self._call(
                self._pace, keys, [interval_us], patient=patient, attempt_timeout=attempt_timeout
            )
            if not wait_ms:
                return
            await anyio.sleep(wait_ms / 1000)

    async def _take_slot(self, lease: RedisSlotLease) -> None:
        spec = self.limits.for_model(lease.model)
        key = self._model_key(lease.model, "slots")
        # Tasks queued ahead hold slots too, counted across every worker.
        capacity = spec.max_in_progress if lease.model in self._queue_ahead_stopped else spec.slots
        args = [lease.token, capacity, round(self.lease_ttl * 1000)]
        queue = self._slot_queues.setdefault(lease.model, anyio.Lock())
        async with queue:
            while wait_ms := await self._call(self._acquire, [key], args):
                freed = self._slot_freed.setdefault(lease.model, anyio.Event())
                # Ask again when a slot frees here, when the earliest lease would expire, or
                # after the poll interval (a slot freed by another worker).
                with anyio.move_on_after(min(wait_ms / 1000, self.slot_poll_interval)):
                    await freed.wait()

    async def _keep_alive(self, lease: RedisSlotLease) -> None:
        key = self._model_key(lease.model, "slots")
        args = [lease.token, round(self.lease_ttl * 1000)]
        deadline = anyio.current_time() + self.lease_ttl
        while True:
            await anyio.sleep(self.heartbeat)
            try:
                # One attempt: the heartbeat's own deadline (the lease's life) decides.
                renewed = await self._call(self._renew, [key], args, patient=False)
            except LimiterUnavailableError as exc:
                if anyio.current_time() >= deadline:
                    lease.mark_lost(f"Redis unreachable for longer than the lease ({exc})")
                    return
                logger.warning("could not renew the %s slot lease: %s", lease.model, exc)
                continue
            if not renewed:
                lease.mark_lost("it expired before the heartbeat renewed it")
                return
            deadline = anyio.current_time() + self.lease_ttl

    async def _give_back(self, lease: RedisSlotLease) -> None:
        key = self._model_key(lease.model, "slots")
        # Release even when the holder is being cancelled, or the slot idles until it expires.
        with anyio.move_on_after(_RELEASE_TIMEOUT, shield=True):
            try:
                held = await self._call(self._release, [key], [lease.token])
            except LimiterUnavailableError as exc:
                logger.warning(
                    "could not release the %s slot lease; it frees when it expires in "
                    "at most %.1f s: %s",
                    lease.model,
                    self.lease_ttl,
                    exc,
                )
            else:
                if not held:
                    lease.mark_lost("it had expired before the task ended")
        freed = self._slot_freed.pop(lease.model, None)
        if freed is not None:
            freed.set()


class RedisSubmitRecord:
    """The ``SubmitRecord`` of every worker sharing a ``RedisLimiter``: unanswered submits and known
    tasks, per model, in Redis. Each answer and each screening is one Lua script (atomic).

    Times are the workers' wall clocks (a lost submit's window is in wall time anyway); ids and
    tickets are kept ``RECORD_MEMORY`` (an hour).
    """

    def __init__(self, limiter: RedisLimiter) -> None:
        self._limiter = limiter
        self._answer = limiter._redis.register_script(ANSWER_SCRIPT)
        self._screen = limiter._redis.register_script(SCREEN_SCRIPT)

    def _keys(self, model: str) -> list[str]:
        limiter = self._limiter
        return [limiter._model_key(model, "known"), limiter._model_key(model, "unanswered")]

    async def sent(self, model: str, sent_at: datetime, token: str | None = None) -> SubmitTicket:
        ticket = (
            SubmitTicket(model, sent_at) if token is None else SubmitTicket(model, sent_at, token)
        )
        key = self._keys(model)[1]
        redis = self._limiter._redis

        async def write() -> None:
            # One round trip: this stands between the submit turn and the send.
            async with redis.pipeline(transaction=True) as pipe:
                pipe.zadd(key, {ticket.token: _ms(sent_at)})
                pipe.pexpire(key, _MEMORY_MS)
                await pipe.execute()

        # Raised (after the outage grace) before the submit is sent: nothing goes unrecorded.
        await self._limiter._with_retries(write)
        return ticket

    async def answered(self, ticket: SubmitTicket, task_id: str | None) -> None:
        try:
            await self._limiter._call(
                self._answer,
                self._keys(ticket.model),
                [ticket.token, task_id or "", _ms(datetime.now(UTC)), _MEMORY_MS],
            )
        except LimiterUnavailableError as exc:
            # The ticket stays unanswered, which only ever blocks adoption of tasks around it
            # (the safe side): the job goes on with its task, which is still collected.
            logger.warning(
                "could not record the answer to a %s submit (task %s): %s",
                ticket.model,
                task_id,
                exc,
            )

    async def remember(self, model: str, task_ids: Iterable[str]) -> None:
        ids = list(task_ids)
        if not ids:
            return
        key = self._keys(model)[0]
        now = _ms(datetime.now(UTC))
        redis = self._limiter._redis

        async def write() -> None:
            await redis.zadd(key, dict.fromkeys(ids, now))
            await redis.pexpire(key, _MEMORY_MS)

        await self._limiter._with_retries(write)

    async def screen(
        self,
        ticket: SubmitTicket,
        candidates: Sequence[str],
        *,
        others_from: datetime,
        others_until: datetime,
    ) -> Screening:
        try:
            answer = await self._limiter._with_retries(
                lambda: self._screen(
                    keys=self._keys(ticket.model),
                    args=[
                        ticket.token,
                        _ms(others_from),
                        _ms(others_until),
                        _ms(datetime.now(UTC)),
                        _MEMORY_MS,
                        *candidates,
                    ],
                )
            )
        except LimiterUnavailableError as exc:
            # Without the record nothing can be proven ours: every candidate stays a candidate
            # and another unanswered submit cannot be ruled out, so none is adopted (a lost
            # submit ends ambiguous, unless the list itself shows no task at all).
            logger.warning("could not screen a lost %s submit's candidates: %s", ticket.model, exc)
            return Screening(unknown=tuple(candidates), others_unanswered=1)
        others, *unknown = answer
        return Screening(
            unknown=tuple(
                item.decode() if isinstance(item, bytes) else str(item) for item in unknown
            ),
            others_unanswered=int(others),
        )


def _ms(moment: datetime) -> int:
    return math.floor(moment.timestamp() * 1000 + 0.5)


_MEMORY_MS: Final = round(RECORD_MEMORY.total_seconds() * 1000)
