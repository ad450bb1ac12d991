"""The shared job store: one journal in Redis for every worker of an account (extra ``redis``).

Owns ``RedisJournal`` (the ``JobStore`` a fleet of runners shares: intents, task ids, outcomes,
lookups by job key), the claims that let one worker at a time run a job key, and
``RedisSpending``, the budget every worker reserves against. Every write is one Lua script, so a
record is never half written and two workers never both pass a check. It records what runners
tell it; it never sends a request, never decides whether a job runs, and stores no credential.

Keys (``ns`` is the namespace; every key shares the hash tag ``{ns:journal}``, so the scripts
touch one cluster slot):

```
{ns:journal}:job:KEY      hash    one job's record (the fields of a JournalEntry)
{ns:journal}:jobs         zset    job keys, scored by when their record expires (ms, Redis time)
{ns:journal}:tasks        zset    task ids recorded, scored likewise
{ns:journal}:spent        hash    images billed, by model
{ns:journal}:claim:KEY    string  the token of the worker running the job (expires: a lease)
{ns:journal}:budget       hash    spent_images, spent_ucny, reserved_images, reserved_ucny
{ns:journal}:budget:held  hash    job key -> "IMAGES:UCNY" reserved, or "billed" once settled
{ns:journal}:budget:until zset    job key -> when its reservation is dropped (ms, Redis time)
```

Records live ``ttl`` (default 48 hours) from their last write: past the service's 24-hour task
retention, after which a task id leads nowhere. Money is kept as whole micro-CNY, so Lua's
numbers add it exactly.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import anyio
import attrs

from ._budget import Budget
from ._errors import JournalError, ValidationError
from ._journal import (
    JobState,
    JournalEntry,
    _aware,
    _now,
    _result_from_json,
    _result_json,
    billed_images,
)
from ._logging import get_logger, redact
from ._models import TaskResult
from ._redis_common import Outage, beside, check_namespace, connect, require_asyncio

try:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - _redis_common raises first
    raise ImportError("dashscope_async.redis needs redis-py") from exc

__all__ = ["RETENTION", "BudgetTotals", "RedisJournal", "RedisSpending"]

logger = get_logger("redis")

#: The service keeps task ids and results this long; records must outlive it.
RETENTION: Final = timedelta(hours=24)
#: Keys per pipelined read.
READ_CHUNK: Final = 500
#: How long a release may take when the claim's holder is being cancelled.
_RELEASE_TIMEOUT: Final = 5.0
_MICRO: Final = Decimal(1_000_000)

#: Lua prelude: Redis's clock in ms, and keeping an index zset to the records still alive.
_INDEX = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local function index(zset, member, ttl)
  redis.call('ZREMRANGEBYSCORE', zset, '-inf', now)
  redis.call('ZADD', zset, string.format('%.0f', now + ttl), member)
  redis.call('PEXPIRE', zset, ttl)
end
"""

#: KEYS: job, jobs, claim. ARGV: key, index, model, fingerprint, sent_at, updated_at, ttl,
#: claim token ('' = none). Answers 'ok', 'lost' (the claim is someone else's now), or
#: 'STATE:TASK' when the job already has a task (a new submit would pay twice).
INTENT_SCRIPT: Final = (
    _INDEX
    + """
if ARGV[8] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[8] then return 'lost' end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'submitted' or state == 'succeeded' then
  return state .. ':' .. (redis.call('HGET', KEYS[1], 'task_id') or '')
end
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0') + 1
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'index', ARGV[2], 'model', ARGV[3], 'fingerprint', ARGV[4],
           'state', 'intent', 'sent_at', ARGV[5], 'attempts', attempts, 'files', '[]',
           'updated_at', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
index(KEYS[2], ARGV[1], tonumber(ARGV[7]))
return 'ok'
"""
)

#: KEYS: job, jobs, tasks, spent. ARGV: key, ttl, task id ('' = none), billed images ('' = not
#: a success), number of fields to delete, those fields, then field/value pairs to set.
#: Answers 'ok' or 'missing' (no intent was recorded for the job).
UPDATE_SCRIPT: Final = (
    _INDEX
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
local ttl = tonumber(ARGV[2])
if ARGV[4] ~= '' and redis.call('HGET', KEYS[1], 'state') ~= 'succeeded' then
  redis.call('HINCRBY', KEYS[4], redis.call('HGET', KEYS[1], 'model'), tonumber(ARGV[4]))
  redis.call('PEXPIRE', KEYS[4], ttl)
end
local deletes = tonumber(ARGV[5])
for i = 6, 5 + deletes do redis.call('HDEL', KEYS[1], ARGV[i]) end
for i = 6 + deletes, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[1], ttl)
index(KEYS[2], ARGV[1], ttl)
if ARGV[3] ~= '' then index(KEYS[3], ARGV[3], ttl) end
return 'ok'
"""
)

#: KEYS: claim. ARGV: token, lease ms. Take the claim if free or already ours. Answers 1 or 0.
CLAIM_SCRIPT: Final = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

#: KEYS: claim. ARGV: token. Compare-and-delete. Answers 1 if it was ours, else 0.
UNCLAIM_SCRIPT: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

#: KEYS: budget, held, until. ARGV: job, images, ucny, cap images (-1 none), cap ucny (-1 none),
#: reservation ttl ms. Drops reservations past their time, then reserves if the job fits.
#: Answers 1 (reserved now, or already: a job holds one reservation) or 0 (would pass the cap).
RESERVE_SCRIPT: Final = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
for _, job in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
  local held = redis.call('HGET', KEYS[2], job)
  if held and held ~= 'billed' then
    local images, ucny = string.match(held, '^(%d+):(%d+)$')
    redis.call('HINCRBY', KEYS[1], 'reserved_images', 0 - tonumber(images))
    redis.call('HINCRBY', KEYS[1], 'reserved_ucny', 0 - tonumber(ucny))
  end
  redis.call('HDEL', KEYS[2], job)
  redis.call('ZREM', KEYS[3], job)
end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 1 end
local b = redis.call('HMGET', KEYS[1], 'spent_images', 'reserved_images', 'spent_ucny',
                     'reserved_ucny')
local images, ucny = tonumber(ARGV[2]), tonumber(ARGV[3])
local cap_images, cap_ucny = tonumber(ARGV[4]), tonumber(ARGV[5])
if cap_images >= 0 and tonumber(b[1] or '0') + tonumber(b[2] or '0') + images > cap_images then
  return 0
end
if cap_ucny >= 0 and tonumber(b[3] or '0') + tonumber(b[4] or '0') + ucny > cap_ucny then
  return 0
end
redis.call('HINCRBY', KEYS[1], 'reserved_images', images)
redis.call('HINCRBY', KEYS[1], 'reserved_ucny', ucny)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. ':' .. ARGV[3])
redis.call('ZADD', KEYS[3], string.format('%.0f', now + tonumber(ARGV[6])), ARGV[1])
return 1
"""

#: KEYS: budget, held, until. ARGV: job, billed images, billed ucny, ttl ms. Gives the job's
#: reservation back and counts what was billed, once per job. Answers 1 (counted) or 0 (the job
#: was settled before).
SETTLE_SCRIPT: Final = """
local held = redis.call('HGET', KEYS[2], ARGV[1])
if held == 'billed' then return 0 end
if held then
  local images, ucny = string.match(held, '^(%d+):(%d+)$')
  redis.call('HINCRBY', KEYS[1], 'reserved_images', 0 - tonumber(images))
  redis.call('HINCRBY', KEYS[1], 'reserved_ucny', 0 - tonumber(ucny))
end
local billed = tonumber(ARGV[2])
if billed > 0 then
  redis.call('HINCRBY', KEYS[1], 'spent_images', billed)
  redis.call('HINCRBY', KEYS[1], 'spent_ucny', tonumber(ARGV[3]))
  local clock = redis.call('TIME')
  local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
  redis.call('HSET', KEYS[2], ARGV[1], 'billed')
  redis.call('ZADD', KEYS[3], string.format('%.0f', now + tonumber(ARGV[4])), ARGV[1])
else
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
end
return 1
"""


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _seconds(name: str, value: float | timedelta) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not seconds > 0:
        raise ValueError(f"{name} must be positive: {value!r}")
    return seconds


def _micro_cny(amount: Decimal) -> int:
    micro = amount * _MICRO
    if micro != micro.to_integral_value():
        raise ValidationError("budget.prices", f"{amount} CNY is finer than a micro-CNY")
    return int(micro)


def _entry(key: str, fields: dict[str, str]) -> JournalEntry:
    def optional(name: str) -> str | None:
        value = fields.get(name)
        return value if value else None

    try:
        sent_at = optional("sent_at")
        result = optional("result")
        return JournalEntry(
            key=key,
            index=int(fields["index"]),
            model=fields["model"],
            fingerprint=fields["fingerprint"],
            state=JobState(fields["state"]),
            sent_at=None if sent_at is None else datetime.fromisoformat(sent_at),
            task_id=optional("task_id"),
            result=None if result is None else _result_from_json(result),
            error_type=optional("error_type"),
            error_code=optional("error_code"),
            error_message=optional("error_message"),
            files=tuple(json.loads(fields.get("files") or "[]")),
            attempts=int(fields.get("attempts") or 0),
            updated_at=datetime.fromisoformat(fields["updated_at"]),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise JournalError(f"the record of job {key!r} cannot be read: {exc!r}") from None


class RedisJournal:
    """A journal in Redis, shared by every worker of an account: no job paid for twice, fleet-wide.

    Give each worker process its own ``RedisJournal`` on the same Redis and namespace (the
    limiter's, typically), and pass it as ``journal=``. Together the workers then:

    - run each job key once at a time: a worker given a job another worker is running waits for
      it and returns the same outcome (a dead worker's claim expires after ``claim_ttl``);
    - never submit a job recorded before: a finished job replays its outcome, a job with a task
      id re-attaches and polls, and a job whose submit went out unanswered is reconciled against
      the account's task list (resubmitted only on proof that no task exists);
    - keep one ``budget`` across all of them (``AsyncTaskRunner(budget=...)``, the same cap in
      every worker).

    Asyncio only (redis-py is built on asyncio). Records expire ``ttl`` after their last write
    (default 48 hours, past the service's 24-hour retention). No credential is stored. A Redis
    that goes away is waited for (``outage_grace``); one gone for longer ends the jobs
    that need it with ``JournalError``, before anything new is submitted for them.

    Args:
        url_or_client: a Redis URL (``redis://host:6379/0``), or a ``redis.asyncio.Redis``
            client you own (not closed by ``aclose``).
        namespace: the prefix of every key; workers of one fleet use the same one.
        ttl: how long a record outlives its last write (more than 24 hours).
        claim_ttl: seconds a job's claim lasts without a heartbeat: how long a dead worker's job
            waits before another worker takes it up.
        claim_poll_interval: seconds between looks while waiting for another worker's job.
        outage_grace: seconds of a Redis outage (a restart, a failover) every call rides out,
            retrying with backoff, before the job meets ``JournalError``; the limiter's retry
            loop (``RedisLimiter(outage_grace=...)``).

    Example:
        ```python
        import dashscope_async as ds
        from dashscope_async.redis import RedisJournal, RedisLimiter

        url = "redis://127.0.0.1:6379/0"
        async with (
            RedisLimiter(url, namespace="acme") as limiter,
            RedisJournal(url, namespace="acme") as journal,
            ds.AsyncDashScope() as client,
            ds.AsyncTaskRunner(client, limiter=limiter, journal=journal) as runner,
        ):
            result = await runner.run(request, key="order-1234")  # once, whichever worker
        ```
    """

    def __init__(
        self,
        url_or_client: str | aioredis.Redis[Any],
        *,
        namespace: str = "dashscope",
        ttl: float | timedelta = timedelta(hours=48),
        claim_ttl: float = 30.0,
        claim_poll_interval: float = 0.25,
        outage_grace: float = 30.0,
    ) -> None:
        check_namespace(namespace)
        self._outage = Outage(outage_grace, "the job store's Redis")
        self.outage_grace = outage_grace
        self.ttl = _seconds("ttl", ttl)
        if self.ttl <= RETENTION.total_seconds():
            raise ValueError(
                f"ttl must be more than the service's 24-hour task retention, not {ttl!r}:"
                " a record that expires first lets a lost submit be sent again"
            )
        self.claim_ttl = _seconds("claim_ttl", claim_ttl)
        self.claim_poll_interval = _seconds("claim_poll_interval", claim_poll_interval)
        self.namespace = namespace
        self._redis, self._owns_client, self._address = connect(url_or_client)
        self._intent = self._redis.register_script(INTENT_SCRIPT)
        self._update = self._redis.register_script(UPDATE_SCRIPT)
        self._claim = self._redis.register_script(CLAIM_SCRIPT)
        self._unclaim = self._redis.register_script(UNCLAIM_SCRIPT)
        self._reserve = self._redis.register_script(RESERVE_SCRIPT)
        self._settle = self._redis.register_script(SETTLE_SCRIPT)
        # Claims held here, by job key: an intent is recorded only while its claim is ours.
        self._claims: dict[str, str] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"RedisJournal({self._address!r}, namespace={self.namespace!r})"

    @property
    def shared(self) -> bool:
        """True: every worker on the namespace writes to it."""
        return True

    # --- keys ---------------------------------------------------------------------------------

    def key(self, what: str) -> str:
        """The Redis key of ``what`` (``"jobs"``, ``"job:KEY"``...) in this namespace."""
        return f"{{{self.namespace}:journal}}:{what}"

    @property
    def _ttl_ms(self) -> int:
        return round(self.ttl * 1000)

    # --- calls --------------------------------------------------------------------------------

    async def _call(self, operation: str, command: Callable[[], Awaitable[Any]]) -> Any:
        require_asyncio("RedisJournal", operation)
        if self._closed:
            raise JournalError(f"the journal at {self._address} is closed")
        try:
            return await self._outage.call(command)
        except (RedisError, OSError) as exc:
            raise JournalError(
                f"the job store's Redis at {self._address} is unavailable ({exc}); nothing"
                " new is submitted while it is"
            ) from exc

    async def _script(self, operation: str, script: Any, keys: list[str], args: list[Any]) -> Any:
        answer = await self._call(operation, lambda: script(keys=keys, args=args))
        return _text(answer) if isinstance(answer, bytes | str) else answer

    async def _write(self, operation: str, script: Any, keys: list[str], args: list[Any]) -> Any:
        # A fact the runner asked to record lands even if its job is being cancelled.
        with anyio.CancelScope(shield=True):
            return await self._script(operation, script, keys, args)

    # --- claims -------------------------------------------------------------------------------

    @asynccontextmanager
    async def claim(self, key: str) -> AsyncIterator[JournalEntry | None]:
        """Hold the job ``key`` while the block runs (see ``JobStore.claim``).

        Raises:
            JournalError: Redis could not be reached.
        """
        token = secrets.token_hex(16)
        claim_key = self.key(f"claim:{key}")
        lease_ms = round(self.claim_ttl * 1000)
        while not await self._script("claim", self._claim, [claim_key], [token, lease_ms]):
            entry = await self.lookup(key)
            if entry is not None and entry.state.is_final:
                yield entry  # another worker finished it: its outcome, nothing held
                return
            await anyio.sleep(self.claim_poll_interval)
        self._claims[key] = token
        try:
            async with beside(lambda: self._keep_claim(key, claim_key, token)):
                yield await self.lookup(key)
        finally:
            if self._claims.get(key) == token:
                del self._claims[key]
            with anyio.move_on_after(_RELEASE_TIMEOUT, shield=True):
                try:
                    await self._script("claim", self._unclaim, [claim_key], [token])
                except JournalError as exc:
                    logger.warning("could not release the claim of job %r: %s", key, exc)

    async def _keep_claim(self, key: str, claim_key: str, token: str) -> None:
        lease_ms = round(self.claim_ttl * 1000)
        while True:
            await anyio.sleep(self.claim_ttl / 3)
            try:
                held = await self._script("claim", self._claim, [claim_key], [token, lease_ms])
            except JournalError as exc:
                logger.warning("could not renew the claim of job %r: %s", key, exc)
                continue
            if not held:
                logger.warning("lost the claim of job %r: another worker may run it", key)
                return

    # --- reads --------------------------------------------------------------------------------

    async def lookup(self, key: str) -> JournalEntry | None:
        """The entry of one job, or None if no worker recorded it (or its record expired)."""
        return (await self.lookup_many((key,))).get(key)

    async def lookup_many(self, keys: Sequence[str]) -> dict[str, JournalEntry]:
        """The entries of many jobs at once, by key; keys never seen are left out."""
        unique = list(dict.fromkeys(keys))
        found: dict[str, JournalEntry] = {}
        for start in range(0, len(unique), READ_CHUNK):
            chunk = unique[start : start + READ_CHUNK]
            pipe = self._redis.pipeline(transaction=False)
            for key in chunk:
                pipe.hgetall(self.key(f"job:{key}"))
            rows = await self._call("lookup", pipe.execute)
            for key, row in zip(chunk, rows, strict=True):
                if row:
                    found[key] = _entry(key, {_text(k): _text(v) for k, v in row.items()})
        return found

    async def _live(self, index: str) -> list[str]:
        since = "(" + await self._now_ms()
        members = await self._call(
            "entries", lambda: self._redis.zrangebyscore(self.key(index), since, "+inf")
        )
        return [_text(member) for member in members]

    async def _now_ms(self) -> str:
        seconds, micros = await self._call("time", self._redis.time)
        return str(int(seconds) * 1000 + int(micros) // 1000)

    async def entries(self, state: JobState | None = None) -> list[JournalEntry]:
        """Every entry of the fleet (or those in ``state``), by index, then key."""
        found = await self.lookup_many(await self._live("jobs"))
        chosen = [e for e in found.values() if state is None or e.state is state]
        return sorted(chosen, key=lambda entry: (entry.index, entry.key))

    async def counts(self) -> dict[JobState, int]:
        """How many of the fleet's jobs are in each state (every state present)."""
        counted = dict.fromkeys(JobState, 0)
        for entry in await self.entries():
            counted[entry.state] += 1
        return counted

    async def spent(self) -> dict[str, int]:
        """Images billed so far, by model, over every worker."""
        totals = await self._call("spent", lambda: self._redis.hgetall(self.key("spent")))
        return {_text(model): int(count) for model, count in sorted(totals.items())}

    async def claimed(self, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` a live worker holds now (a job in flight, not one left behind)."""
        unique = list(dict.fromkeys(keys))
        held: set[str] = set()
        for start in range(0, len(unique), READ_CHUNK):
            chunk = unique[start : start + READ_CHUNK]
            pipe = self._redis.pipeline(transaction=False)
            for key in chunk:
                pipe.exists(self.key(f"claim:{key}"))
            flags = await self._call("claimed", pipe.execute)
            held.update(key for key, flag in zip(chunk, flags, strict=True) if flag)
        return held

    async def task_ids(self) -> set[str]:
        """Every task id the fleet recorded (never adopted for another job's lost submit)."""
        return set(await self._live("tasks"))

    # --- writes -------------------------------------------------------------------------------

    async def record_intent(
        self, key: str, *, index: int, model: str, fingerprint: str, sent_at: datetime
    ) -> None:
        """Record that a submit is about to be sent (call it before sending).

        Raises:
            JournalError: the job already has a task (a new submit would pay twice), this
                worker's claim on it was lost (another worker may run it), or Redis is down.
            ValueError: ``sent_at`` has no time zone.
        """
        sent = _aware("sent_at", sent_at)
        keys = [self.key(f"job:{key}"), self.key("jobs"), self.key(f"claim:{key}")]
        args = [key, index, model, fingerprint, sent, _now(), self._ttl_ms]
        answer = await self._write(
            "record_intent", self._intent, keys, [*args, self._claims.get(key, "")]
        )
        if answer == "lost":
            raise JournalError(
                f"job {key!r}: this worker's claim on it expired and another worker may run it;"
                " not submitted, to avoid paying twice"
            )
        if answer != "ok":
            state, _, task_id = str(answer).partition(":")
            raise JournalError(
                f"job {key!r} already has task {task_id} ({state}); submitting it again would"
                " pay for it twice"
            )

    async def _record(
        self,
        key: str,
        values: Mapping[str, object],
        *,
        clear: Sequence[str] = (),
        task_id: str | None = None,
        billed: int | None = None,
    ) -> None:
        pairs = [item for name, value in values.items() for item in (name, str(value))]
        keys = [self.key(f"job:{key}"), self.key("jobs"), self.key("tasks"), self.key("spent")]
        args = [
            key,
            self._ttl_ms,
            task_id or "",
            "" if billed is None else billed,
            len(clear),
            *clear,
            *pairs,
            "updated_at",
            _now(),
        ]
        if await self._write("record", self._update, keys, args) == "missing":
            raise JournalError(
                f"job {key!r} is not in the journal; record its intent before anything else"
            )

    async def record_submitted(self, key: str, task_id: str) -> None:
        """Record that the service accepted the job's submit as task ``task_id``."""
        values = {"state": JobState.SUBMITTED.value, "task_id": task_id}
        await self._record(key, values, task_id=task_id)

    async def record_succeeded(
        self, key: str, result: TaskResult, files: Sequence[str | os.PathLike[str]] = ()
    ) -> None:
        """Record the job's result (and the images saved for it); counts its billed images."""
        values = {
            "state": JobState.SUCCEEDED.value,
            "task_id": result.task_id,
            "result": _result_json(result),
            "billed_images": billed_images(result),
            "files": json.dumps([os.fspath(path) for path in files]),
        }
        await self._record(
            key,
            values,
            clear=("error_type", "error_code", "error_message"),
            task_id=result.task_id,
            billed=billed_images(result),
        )

    async def record_failed(self, key: str, error: BaseException) -> None:
        """Record the error the job ended with (its text with credentials masked)."""
        code = getattr(error, "code", None)
        task_id = getattr(error, "task_id", None)
        values: dict[str, object] = {
            "state": JobState.FAILED.value,
            "error_type": type(error).__name__,
            "error_message": redact(str(error)),
        }
        if code is not None:
            values["error_code"] = code
        if isinstance(task_id, str) and task_id:
            values["task_id"] = task_id
        await self._record(
            key,
            values,
            clear=() if code is not None else ("error_code",),
            task_id=task_id if isinstance(task_id, str) else None,
        )

    async def record_canceled(self, key: str) -> None:
        """Record that the job was cancelled before it ran (not billed; run again later)."""
        await self._record(key, {"state": JobState.CANCELED.value})

    async def record_files(self, key: str, files: Sequence[str | os.PathLike[str]]) -> None:
        """Record the images saved for the job (replacing any recorded before)."""
        await self._record(key, {"files": json.dumps([os.fspath(path) for path in files])})

    # --- the shared budget --------------------------------------------------------------------

    def spending(self, budget: Budget) -> RedisSpending:
        """The fleet's ``Spending`` against ``budget`` (every worker must give the same cap)."""
        return RedisSpending(self, budget)

    # --- life ---------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the Redis connections, if this journal opened them. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            await self._redis.aclose()  # type: ignore[attr-defined]

    @property
    def closed(self) -> bool:
        """True once ``aclose`` was called."""
        return self._closed

    async def __aenter__(self) -> RedisJournal:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


@attrs.frozen
class BudgetTotals:
    """What the fleet has spent and reserved against its budget, as Redis holds it now."""

    spent_images: int
    spent_cny: Decimal
    reserved_images: int
    reserved_cny: Decimal


@attrs.define
class RedisSpending:
    """The budget every worker on a ``RedisJournal`` reserves against (``Spending``).

    A job reserves its worst case before it is submitted, under its job key: one reservation
    per job however many workers take it up, dropped when the job settles (what was billed
    counts, once) or, for a worker that died and whose job was never taken up again, after the
    journal's ``ttl``. The check and the reservation are one script, so concurrent workers never
    pass the cap together.

    Example:
        ```python
        runner = ds.AsyncTaskRunner(client, journal=journal, budget=ds.Budget(cny="50"))
        totals = await journal.spending(ds.Budget(cny="50")).totals()
        ```
    """

    journal: RedisJournal
    _budget: Budget = attrs.field(alias="budget")

    @property
    def budget(self) -> Budget:
        return self._budget

    def _keys(self) -> list[str]:
        return [self.journal.key(k) for k in ("budget", "budget:held", "budget:until")]

    async def totals(self) -> BudgetTotals:
        """What is spent and reserved now, over every worker."""
        fields = ("spent_images", "spent_ucny", "reserved_images", "reserved_ucny")
        values = await self.journal._call(
            "budget", lambda: self.journal._redis.hmget(self.journal.key("budget"), fields)
        )
        spent_images, spent_ucny, reserved_images, reserved_ucny = (int(v or 0) for v in values)
        return BudgetTotals(
            spent_images=spent_images,
            spent_cny=Decimal(spent_ucny) / _MICRO,
            reserved_images=reserved_images,
            reserved_cny=Decimal(reserved_ucny) / _MICRO,
        )

    def _fits(self, model: str, images: int, spent_images: int, spent_cny: Decimal) -> bool:
        cap = self._budget
        if cap.images is not None and spent_images + images > cap.images:
            return False
        return cap.cny is None or spent_cny + cap.cost(model, images) <= cap.cny

    async def could_afford(self, model: str, images: int) -> bool:
        totals = await self.totals()
        return self._fits(model, images, totals.spent_images, totals.spent_cny)

    async def fits_now(self, model: str, images: int) -> bool:
        totals = await self.totals()
        return self._fits(
            model,
            images,
            totals.spent_images + totals.reserved_images,
            totals.spent_cny + totals.reserved_cny,
        )

    async def try_reserve(self, job: str, model: str, images: int) -> bool:
        cap = self._budget
        args = [
            job,
            images,
            _micro_cny(cap.cost(model, images)),
            -1 if cap.images is None else cap.images,
            -1 if cap.cny is None else _micro_cny(cap.cny),
            self.journal._ttl_ms,
        ]
        answer = await self.journal._write("reserve", self.journal._reserve, self._keys(), args)
        return bool(answer)

    async def settle(self, job: str, model: str, reserved: int, billed: int) -> None:
        args = [job, billed, _micro_cny(self._budget.cost(model, billed)), self.journal._ttl_ms]
        await self.journal._write("settle", self.journal._settle, self._keys(), args)

    async def settle_replayed(self, job: str, model: str, billed: int) -> None:
        # The settle script counts a job once: a no-op when its worker settled it.
        await self.settle(job, model, 0, billed)
