"""Runners sharing a ``RedisJournal`` (and a ``RedisLimiter``): a fleet never pays for a job twice.

Each runner has its own journal and limiter objects (own connections), as worker processes do;
they share one scripted service (``FakeClient``) and one real redis-server. What a crashed
worker leaves behind is written straight into the journal, the way the crash would have left it.
Real time, asyncio only (redis-py), with short tasks.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import pytest

import dashscope_async as ds
from dashscope_async._journal import JobState, fingerprint
from dashscope_async._runner._journaling import ticket_token
from dashscope_async.redis import RedisJournal, RedisLimiter
from tests.fake_service import FakeClient
from tests.redis_server import RedisServer, redis_server

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

MODEL = ds.STYLE_REPAINT.name
LIMITS = ds.Limits.default().with_model(MODEL, submit_rate=50, max_in_progress=3)
POLL = ds.PollPolicy(min_interval=0.01, run_time_priors={MODEL: 0.1})


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_server() as running:
        yield running


def request(number: int) -> ds.StyleRepaint:
    return ds.StyleRepaint(f"https://example.com/{number}.jpg", style=ds.RepaintStyle.ANIME)


def tasks_per_image(fake: FakeClient) -> dict[str, int]:
    counts: dict[str, int] = {}
    for task in fake.tasks.values():
        image = str(getattr(task.request, "image", ""))
        counts[image] = counts.get(image, 0) + 1
    return counts


@asynccontextmanager
async def fleet(
    server: RedisServer, fake: FakeClient, count: int, **options: Any
) -> AsyncIterator[list[ds.AsyncTaskRunner]]:
    """``count`` runners on one namespace, each with its own journal and limiter."""
    namespace = f"fleet-{uuid.uuid4().hex[:8]}"
    async with AsyncExitStack() as stack:
        runners = []
        for _ in range(count):
            journal = await stack.enter_async_context(
                RedisJournal(server.url, namespace=namespace, claim_poll_interval=0.02)
            )
            limiter = await stack.enter_async_context(
                RedisLimiter(server.url, namespace=namespace, limits=LIMITS)
            )
            runner = ds.AsyncTaskRunner(
                fake.as_client(),
                journal=journal,
                limiter=limiter,
                poll=POLL,
                reconcile_grace=0.05,
                **options,
            )
            runners.append(await stack.enter_async_context(runner))
        yield runners


async def died_after_sending(
    runner: ds.AsyncTaskRunner, key: str, sent: ds.Request, fake: FakeClient
) -> None:
    """What a worker leaves behind when it dies with a submit sent and its answer not read:
    the job's intent in the store, and the submit's ticket in the limiter's record."""
    journal = runner.journal
    assert journal is not None
    sent_at = fake.clock.wall()
    await journal.record_intent(
        key, index=0, model=MODEL, fingerprint=fingerprint(sent), sent_at=sent_at
    )
    await runner.limiter.submits.sent(MODEL, sent_at, ticket_token(key, sent_at))


async def test_two_workers_given_the_same_job_at_once_make_one_task(server: RedisServer) -> None:
    fake = FakeClient(run_seconds=0.2)
    async with fleet(server, fake, 2) as (first, second):
        results: list[ds.TaskResult] = []

        async def run(runner: ds.AsyncTaskRunner) -> None:
            results.append(await runner.run(request(1), key="order-1"))

        async with anyio.create_task_group() as group:
            group.start_soon(run, first)
            group.start_soon(run, second)
    assert len(fake.tasks) == 1
    assert len(results) == 2
    assert results[0].task_id == results[1].task_id


async def test_a_job_another_worker_finished_is_replayed(server: RedisServer) -> None:
    fake = FakeClient(run_seconds=0.05)
    async with fleet(server, fake, 2) as (first, second):
        done = await first.run(request(1), key="order-1")
        polls = fake.polls
        again = await second.run(request(1), key="order-1")
    assert again == done
    assert len(fake.tasks) == 1
    assert fake.polls == polls  # no request at all


async def test_a_job_whose_task_id_was_recorded_is_re_attached(server: RedisServer) -> None:
    fake = FakeClient(run_seconds=0.2)
    async with fleet(server, fake, 1) as (runner,):
        journal = runner.journal
        assert isinstance(journal, RedisJournal)
        # A worker died after recording the service's answer, while polling.
        task = fake._create(request(1))
        await journal.record_intent(
            "order-1",
            index=0,
            model=MODEL,
            fingerprint=fingerprint(request(1)),
            sent_at=fake.clock.wall(),
        )
        await journal.record_submitted("order-1", task.task_id)
        result = await runner.run(request(1), key="order-1")
    assert result.task_id == task.task_id
    assert len(fake.tasks) == 1
    assert fake.submit_times == []


@pytest.mark.parametrize("task_exists", [True, False])
async def test_an_intent_without_a_task_id_is_reconciled(
    server: RedisServer, task_exists: bool
) -> None:
    fake = FakeClient(run_seconds=0.1)
    async with fleet(server, fake, 2) as (other, runner):
        # Another worker's finished job: its task is in the list but never a candidate.
        await other.run(request(0), key="order-0")
        journal = runner.journal
        assert isinstance(journal, RedisJournal)
        # A worker died after sending the submit, before its answer was recorded.
        await died_after_sending(runner, "order-1", request(1), fake)
        if task_exists:
            fake._create(request(1))
        result = await runner.run(request(1), key="order-1")
        entry = await journal.lookup("order-1")
    assert entry is not None
    assert entry.state is JobState.SUCCEEDED
    assert entry.task_id == result.task_id
    assert tasks_per_image(fake) == {str(request(0).image): 1, str(request(1).image): 1}
    assert len(fake.submit_times) == (1 if task_exists else 2)


async def test_a_task_is_not_adopted_while_another_workers_submit_is_unanswered(
    server: RedisServer,
) -> None:
    fake = FakeClient(run_seconds=0.1)
    async with fleet(server, fake, 1) as (runner,):
        journal = runner.journal
        assert isinstance(journal, RedisJournal)
        for key, number in (("order-1", 1), ("order-2", 2)):
            await died_after_sending(runner, key, request(number), fake)
        fake._create(request(2))  # made by order-2's submit, but the list cannot say so
        outcome = await runner.submit(request(1), key="order-1").wait()
    assert isinstance(outcome.error, ds.AmbiguousSubmitError)
    assert len(fake.tasks) == 1


async def test_the_budget_holds_across_workers(server: RedisServer) -> None:
    fake = FakeClient(run_seconds=0.05)
    budget = ds.Budget(images=5)
    async with fleet(server, fake, 3, budget=budget) as runners:
        outcomes: list[ds.Outcome] = []

        async def run(worker: int) -> None:
            jobs = [ds.Job(request(n), key=f"order-{n}") for n in range(worker * 4, worker * 4 + 4)]
            outcomes.extend([o async for o in runners[worker].map(jobs)])

        async with anyio.create_task_group() as group:
            for worker in range(3):
                group.start_soon(run, worker)
        journal = runners[0].journal
        assert isinstance(journal, RedisJournal)
        totals = await journal.spending(budget).totals()
    assert len(outcomes) == 12
    assert sum(o.ok for o in outcomes) == 5
    assert all(isinstance(o.error, ds.BudgetExceededError) for o in outcomes if not o.ok)
    assert len(fake.tasks) == 5
    assert (totals.spent_images, totals.reserved_images) == (5, 0)


async def test_a_store_that_is_gone_stops_submissions_with_a_clear_error(
    server: RedisServer,
) -> None:
    fake = FakeClient(run_seconds=0.05)
    async with fleet(server, fake, 1) as (runner,):
        journal = runner.journal
        assert isinstance(journal, RedisJournal)
        await journal.aclose()  # as good as Redis gone, for this worker
        outcome = await runner.submit(request(1), key="order-1").wait()
    assert isinstance(outcome.error, ds.JournalError)
    assert fake.tasks == {}
