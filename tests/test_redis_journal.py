"""The shared job store against a real redis-server: records, claims, TTLs and the shared budget.

Several ``RedisJournal`` instances, each with its own connection pool, stand in for several
worker processes. redis-py is asyncio-only: the tests run on asyncio, except the one proving
the clear error under trio. Claims are waited out in real time, with leases of tenths of a
second.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dashscope_async as ds
from dashscope_async._journal import JobState
from dashscope_async._store import JobStore
from dashscope_async.redis import RedisJournal
from tests.redis_server import RedisServer, free_port, redis_server

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

MODEL = "wanx-style-repaint-v1"
SENT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_server() as running:
        yield running


@asynccontextmanager
async def journals(
    server: RedisServer, count: int = 1, **options: Any
) -> AsyncIterator[list[RedisJournal]]:
    """``count`` journals on one fresh namespace, each with its own connections, like processes."""
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    async with AsyncExitStack() as stack:
        made = [
            await stack.enter_async_context(
                RedisJournal(server.url, namespace=namespace, **options)
            )
            for _ in range(count)
        ]
        yield made


def a_result(task_id: str = "t-1", images: int = 1) -> ds.TaskResult:
    return ds.TaskResult(
        task_id=task_id,
        status=ds.TaskStatus.SUCCEEDED,
        images=tuple(ds.GeneratedImage(url=f"https://r.example/{i}.png") for i in range(images)),
    )


async def intent(journal: RedisJournal, key: str, index: int = 0) -> None:
    await journal.record_intent(key, index=index, model=MODEL, fingerprint="f" * 64, sent_at=SENT)


async def test_both_journals_are_job_stores(server: RedisServer, tmp_path: Path) -> None:
    async with journals(server) as (shared,), await ds.Journal.open(tmp_path / "j.sqlite") as local:
        assert isinstance(shared, JobStore)
        assert isinstance(local, JobStore)
        assert local.spending(ds.Budget(images=1)) is None  # type: ignore[func-returns-value]
        assert shared.spending(ds.Budget(images=1)) is not None


async def test_a_job_recorded_by_one_worker_is_read_by_another(server: RedisServer) -> None:
    async with journals(server, 2) as (first, second):
        await intent(first, "job-a", index=3)
        entry = await second.lookup("job-a")
        assert entry is not None
        assert (entry.state, entry.index, entry.sent_at, entry.attempts) == (
            JobState.INTENT,
            3,
            SENT,
            1,
        )
        assert entry.task_id is None
        await first.record_submitted("job-a", "t-1")
        assert await second.task_ids() == {"t-1"}
        await first.record_succeeded("job-a", a_result("t-1", images=2), ["out/a.png"])
        entry = await second.lookup("job-a")
        assert entry is not None
        assert entry.state is JobState.SUCCEEDED
        assert entry.result == a_result("t-1", images=2)
        assert entry.files == ("out/a.png",)
        assert await second.spent() == {MODEL: 2}
        # Recording the same success again (a retried write) does not bill twice.
        await second.record_succeeded("job-a", a_result("t-1", images=2))
        assert await first.spent() == {MODEL: 2}
        counts = await second.counts()
        assert counts[JobState.SUCCEEDED] == 1
        assert sum(counts.values()) == 1


async def test_a_job_with_a_task_refuses_a_new_intent(server: RedisServer) -> None:
    async with journals(server) as (journal,):
        await intent(journal, "job")
        await journal.record_submitted("job", "t-9")
        with pytest.raises(ds.JournalError, match=r"t-9.*twice"):
            await intent(journal, "job")
        await journal.record_succeeded("job", a_result("t-9"))
        with pytest.raises(ds.JournalError, match="twice"):
            await intent(journal, "job")


async def test_a_new_attempt_clears_what_the_last_one_left(server: RedisServer) -> None:
    async with journals(server) as (journal,):
        await intent(journal, "job")
        await journal.record_failed("job", ds.APIConnectionError("reset"))
        await journal.record_canceled("job")
        await intent(journal, "job", index=5)
        entry = await journal.lookup("job")
        assert entry is not None
        assert (entry.state, entry.attempts, entry.index, entry.error_type) == (
            JobState.INTENT,
            2,
            5,
            None,
        )


async def test_writes_need_an_intent_first(server: RedisServer) -> None:
    async with journals(server) as (journal,):
        with pytest.raises(ds.JournalError, match="not in the journal"):
            await journal.record_submitted("never-seen", "t-1")
        assert await journal.lookup("never-seen") is None


async def test_failures_are_recorded_with_credentials_masked(server: RedisServer) -> None:
    secret = "sk-" + "a1b2c3d4" * 4
    async with journals(server) as (journal,):
        await intent(journal, "job")
        await journal.record_failed(
            "job",
            ds.RecordedFailureError(
                f"bad input near {secret}",
                error_type="TaskFailedError",
                code="InvalidParameter",
                task_id="t-3",
            ),
        )
        entry = await journal.lookup("job")
        assert entry is not None
        assert (entry.state, entry.error_type, entry.error_code, entry.task_id) == (
            JobState.FAILED,
            "RecordedFailureError",
            "InvalidParameter",
            "t-3",
        )
        async with aioredis.Redis.from_url(server.url) as admin:
            record = await admin.hgetall(journal.key("job:job"))
            assert record
            assert secret.encode() not in b"".join(record.values())


async def test_records_outlive_the_services_retention(server: RedisServer) -> None:
    async with journals(server) as (journal,), aioredis.Redis.from_url(server.url) as admin:
        await intent(journal, "job")
        await journal.record_submitted("job", "t-1")
        for what in ("job:job", "jobs", "tasks"):
            left = await admin.pttl(journal.key(what))
            assert 24 * 3600 * 1000 < left <= 48 * 3600 * 1000, what


@pytest.mark.parametrize("ttl", [timedelta(hours=24), 3600.0, 0, -1.0])
def test_a_ttl_inside_the_retention_is_refused(ttl: float | timedelta) -> None:
    with pytest.raises(ValueError, match="ttl"):
        RedisJournal("redis://127.0.0.1:1/0", ttl=ttl)


@pytest.mark.parametrize("namespace", ["", "a{b", "c}"])
def test_a_bad_namespace_is_refused(namespace: str) -> None:
    with pytest.raises(ValueError, match="namespace"):
        RedisJournal("redis://127.0.0.1:1/0", namespace=namespace)


async def test_namespaces_keep_fleets_apart(server: RedisServer) -> None:
    async with journals(server) as (one,), journals(server) as (other,):
        await intent(one, "job")
        assert await other.lookup("job") is None
        assert await other.entries() == []


async def test_entries_list_the_fleet_in_batch_order(server: RedisServer) -> None:
    async with journals(server, 3) as workers:
        for number in (4, 0, 2):
            await intent(workers[number % 3], f"job-{number}", index=number)
        await workers[0].record_submitted("job-2", "t-2")
        listed = await workers[1].entries()
        assert [entry.key for entry in listed] == ["job-0", "job-2", "job-4"]
        assert [e.key for e in await workers[2].entries(JobState.INTENT)] == ["job-0", "job-4"]


# --- claims -----------------------------------------------------------------------------------


async def test_a_second_worker_waits_for_the_first_and_gets_its_outcome(
    server: RedisServer,
) -> None:
    async with journals(server, 2, claim_ttl=1.0, claim_poll_interval=0.02) as (first, second):
        seen: list[JobState | None] = []
        first_holds = anyio.Event()

        async def second_worker() -> None:
            await first_holds.wait()
            async with second.claim("job") as entry:
                seen.append(None if entry is None else entry.state)

        async with anyio.create_task_group() as group:
            group.start_soon(second_worker)
            async with first.claim("job") as entry:
                assert entry is None
                first_holds.set()
                await intent(first, "job")
                # Longer than the lease: the heartbeat keeps it, so the second worker still waits.
                await anyio.sleep(1.5)
                assert seen == []
                await first.record_submitted("job", "t-1")
                await first.record_succeeded("job", a_result("t-1"))
        assert seen == [JobState.SUCCEEDED]


async def test_a_dead_workers_claim_expires_and_the_job_is_taken_up(server: RedisServer) -> None:
    async with (
        journals(server, 1, claim_poll_interval=0.02) as (survivor,),
        aioredis.Redis.from_url(server.url) as admin,
    ):
        await intent(survivor, "job")
        # A worker that died holding the claim: its lease runs out, nobody renews it.
        await admin.set(survivor.key("claim:job"), "dead-worker", px=300)
        started = anyio.current_time()
        async with survivor.claim("job") as entry:
            waited = anyio.current_time() - started
            assert entry is not None
            assert entry.state is JobState.INTENT
        assert 0.2 <= waited < 2.0
        assert await admin.exists(survivor.key("claim:job")) == 0


async def test_an_intent_needs_the_claim_to_still_be_ours(server: RedisServer) -> None:
    async with (
        journals(server, 1, claim_ttl=5.0) as (journal,),
        aioredis.Redis.from_url(server.url) as admin,
    ):
        async with journal.claim("job"):
            await admin.set(journal.key("claim:job"), "another-worker")
            with pytest.raises(ds.JournalError, match="claim"):
                await intent(journal, "job")
        assert await journal.lookup("job") is None
        # Releasing never deletes another worker's claim.
        assert await admin.get(journal.key("claim:job")) == b"another-worker"


# --- the shared budget ------------------------------------------------------------------------


async def test_concurrent_workers_never_reserve_past_the_cap(server: RedisServer) -> None:
    budget = ds.Budget(images=7)
    async with journals(server, 5) as workers:
        granted: list[str] = []

        async def reserve(number: int) -> None:
            spending = workers[number % 5].spending(budget)
            if await spending.try_reserve(f"job-{number}", MODEL, 1):
                granted.append(f"job-{number}")

        async with anyio.create_task_group() as group:
            for number in range(40):
                group.start_soon(reserve, number)
        assert len(granted) == 7
        totals = await workers[0].spending(budget).totals()
        assert (totals.reserved_images, totals.spent_images) == (7, 0)


async def test_a_job_holds_one_reservation_and_is_billed_once(server: RedisServer) -> None:
    budget = ds.Budget(images=3)
    async with journals(server, 2) as (first, second):
        one, two = first.spending(budget), second.spending(budget)
        assert await one.try_reserve("job", MODEL, 2)
        # Taken up again by another worker (the first died): the same reservation.
        assert await two.try_reserve("job", MODEL, 2)
        assert (await one.totals()).reserved_images == 2
        assert not await two.try_reserve("other", MODEL, 2)
        await two.settle("job", MODEL, 2, 1)
        await one.settle("job", MODEL, 2, 1)  # settled twice: billed once
        totals = await one.totals()
        assert (totals.spent_images, totals.reserved_images) == (1, 0)
        assert await two.try_reserve("other", MODEL, 2)
        assert not await two.could_afford(MODEL, 3)
        assert await two.could_afford(MODEL, 2)
        assert not await two.fits_now(MODEL, 1)


async def test_a_job_found_finished_settles_what_its_dead_worker_left_reserved(
    server: RedisServer,
) -> None:
    budget = ds.Budget(images=3)
    async with journals(server, 2) as (first, second):
        one, two = first.spending(budget), second.spending(budget)
        assert await one.try_reserve("job", MODEL, 2)
        # The first worker recorded the outcome and died before settling: the job replays.
        await two.settle_replayed("job", MODEL, 1)
        totals = await two.totals()
        assert (totals.spent_images, totals.reserved_images) == (1, 0)
        await two.settle_replayed("job", MODEL, 1)  # replayed again: billed once
        await one.settle("job", MODEL, 2, 1)  # or settled after all: still once
        totals = await two.totals()
        assert (totals.spent_images, totals.reserved_images) == (1, 0)


async def test_a_failed_job_gives_its_reservation_back(server: RedisServer) -> None:
    budget = ds.Budget(images=1)
    async with journals(server) as (journal,):
        spending = journal.spending(budget)
        assert await spending.try_reserve("job", MODEL, 1)
        await spending.settle("job", MODEL, 1, 0)
        assert await spending.try_reserve("job", MODEL, 1)  # run again later: reserves again
        assert (await spending.totals()).reserved_images == 1


async def test_money_is_counted_exactly(server: RedisServer) -> None:
    budget = ds.Budget(cny="0.36")  # three repaints at CNY 0.12
    async with journals(server) as (journal,):
        spending = journal.spending(budget)
        for number in range(3):
            assert await spending.try_reserve(f"job-{number}", MODEL, 1)
            await spending.settle(f"job-{number}", MODEL, 1, 1)
        assert not await spending.try_reserve("job-3", MODEL, 1)
        totals = await spending.totals()
        assert totals.spent_cny == Decimal("0.36")
        assert totals.reserved_cny == 0


async def test_a_dead_workers_reservation_lapses_with_the_records(server: RedisServer) -> None:
    budget = ds.Budget(images=1)
    async with journals(server) as (journal,), aioredis.Redis.from_url(server.url) as admin:
        spending = journal.spending(budget)
        assert await spending.try_reserve("abandoned", MODEL, 1)
        assert not await spending.try_reserve("next", MODEL, 1)
        # Its time is up (the journal's ttl, shortened here by hand).
        await admin.zadd(journal.key("budget:until"), {"abandoned": 0})
        assert await spending.try_reserve("next", MODEL, 1)
        assert (await spending.totals()).reserved_images == 1


# --- faults -----------------------------------------------------------------------------------


async def test_an_unreachable_redis_is_a_journal_error_without_the_password() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    async with RedisJournal(url, outage_grace=0.3) as journal:
        with pytest.raises(ds.JournalError, match="unavailable") as caught:
            await intent(journal, "job")
        assert "hunter2" not in str(caught.value)
        assert "hunter2" not in repr(journal)


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_gets_a_clear_error() -> None:
    journal = RedisJournal("redis://127.0.0.1:1/0")
    with pytest.raises(RuntimeError, match="asyncio"):
        await journal.lookup("job")


async def test_a_redis_restart_is_waited_out_and_keeps_the_records() -> None:
    with redis_server(appendonly=True) as own_server:
        async with journals(own_server, 1, outage_grace=10.0) as (journal,):
            await intent(journal, "job")
            own_server.stop()
            async with anyio.create_task_group() as group:
                group.start_soon(anyio.to_thread.run_sync, own_server.restart, 0.5)
                with anyio.fail_after(8):
                    await journal.record_submitted("job", "t-1")
            entry = await journal.lookup("job")
    assert entry is not None
    assert (entry.state, entry.task_id, entry.sent_at) == (JobState.SUBMITTED, "t-1", SENT)


@pytest.mark.parametrize("option", ["outage_grace", "claim_ttl", "claim_poll_interval"])
def test_bad_timings_are_refused(option: str) -> None:
    options: dict[str, Any] = {option: -1.0}
    with pytest.raises(ValueError, match=option):
        RedisJournal("redis://127.0.0.1:1/0", **options)


# --- the shared budget, against a model ---------------------------------------------------------


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cap=st.integers(0, 6),
    steps=st.lists(
        st.tuples(
            st.sampled_from(["reserve", "settle"]),
            st.integers(0, 4),  # which job
            st.integers(0, 3),  # images asked for / billed
            st.integers(0, 2),  # which worker
        ),
        max_size=25,
    ),
)
def test_the_shared_budget_keeps_its_model(
    server: RedisServer, cap: int, steps: list[tuple[str, int, int, int]]
) -> None:
    """Reservations and settlements in any order, from any worker: a reservation is granted only
    if it fits, a job holds at most one, and what a job was billed counts once. (A job settled
    without a reservation, a task re-attached after its reservation lapsed, is billed all the
    same: the service ran it, as are images billed beyond a reservation. Only such images can take
    the total past the cap.)"""

    async def run() -> None:
        budget = ds.Budget(images=cap)
        held: dict[str, int] = {}
        billed: dict[str, int] = {}
        unreserved = 0
        async with journals(server, 3) as workers:
            for action, number, images, worker in steps:
                job = f"job-{number}"
                spending = workers[worker].spending(budget)
                if action == "reserve":
                    fits = sum(held.values()) + sum(billed.values()) + images <= cap
                    granted = await spending.try_reserve(job, MODEL, images)
                    expected = job in held or job in billed or fits
                    assert granted == expected
                    if granted and job not in held and job not in billed:
                        held[job] = images
                else:
                    await spending.settle(job, MODEL, held.get(job, 0), images)
                    if job not in billed:
                        # Billed beyond its reservation (or with none): the service ran it.
                        unreserved += max(0, images - held.get(job, 0))
                        held.pop(job, None)
                        if images:
                            billed[job] = images
                totals = await spending.totals()
                assert totals.reserved_images == sum(held.values())
                assert totals.spent_images == sum(billed.values())
                assert totals.spent_images + totals.reserved_images <= cap + unreserved

    anyio.run(run, backend="asyncio")


async def test_an_error_redis_answers_is_raised_at_once_not_waited_out(server: RedisServer) -> None:
    async with (
        journals(server, outage_grace=30.0) as (journal,),
        aioredis.Redis.from_url(server.url) as admin,
    ):
        await admin.set(journal.key("job:broken"), "not a hash")  # a wrong type: WRONGTYPE
        with anyio.fail_after(5), pytest.raises(ds.JournalError):
            await journal.lookup("broken")
