"""The job-queue module: how requests travel, and a worker's job run against a real Redis.

The broker itself (taskiq on Redis streams) is exercised end to end by
``tests/e2e/test_queue_example.py`` and the crash tests; here the worker's side of a job runs
in-process, with a scripted service, so each rule is checked on its own. Asyncio only.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

import dashscope_async as ds
from dashscope_async.queue import JobQueue, _outcome_from_json, decode_request, encode_request
from dashscope_async.queue import _WorkerResources as WorkerResources
from dashscope_async.redis import RedisJournal, RedisLimiter
from tests.fake_service import FakeClient
from tests.redis_server import RedisServer, redis_server

MODEL = ds.STYLE_REPAINT.name


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_server() as running:
        yield running


@given(
    style=st.sampled_from(list(ds.RepaintStyle)),
    number=st.integers(0, 10**6),
)
def test_a_repaint_travels_unchanged(style: ds.RepaintStyle, number: int) -> None:
    request = ds.StyleRepaint(f"https://example.com/{number}.jpg", style=style)
    assert decode_request(encode_request(request)) == request


@given(
    # Any prompt a request accepts (control characters and lone surrogates are refused).
    prompt=st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=50).filter(
        str.strip
    ),
    n=st.integers(1, 4),
    weight=st.integers(0, 10),
    colors=st.lists(st.tuples(*[st.integers(0, 255)] * 3), max_size=3),
)
def test_a_sketch_travels_unchanged(
    prompt: str, n: int, weight: int, colors: list[tuple[int, int, int]]
) -> None:
    request = ds.SketchToImage(
        "oss://bucket/sketch.png",
        prompt=prompt,
        n=n,
        sketch_weight=weight,
        style=ds.SketchStyle.WATERCOLOR,
        sketch_color=tuple(colors),
    )
    assert decode_request(encode_request(request)) == request


@pytest.mark.parametrize("image", [b"\x89PNG...", "portrait.jpg"])
def test_a_local_image_cannot_be_queued(image: Any, tmp_path: Path) -> None:
    with pytest.raises(ds.ValidationError, match="URL") as caught:
        encode_request(ds.StyleRepaint(image, style=ds.RepaintStyle.ANIME))
    assert caught.value.field == "image"


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"model": "no-such-model", "fields": {}},
        {"model": MODEL, "fields": "x"},
        {"model": MODEL, "fields": {"image": "https://e.com/a.jpg", "colour": 1}},
        {"model": MODEL, "fields": {"image": "https://e.com/a.jpg", "style": 99}},
    ],
)
def test_a_bad_document_is_a_validation_error(document: dict[str, Any]) -> None:
    with pytest.raises(ds.ValidationError):
        decode_request(document)


def test_a_failed_outcome_raises_its_recorded_error() -> None:
    outcome = _outcome_from_json(
        {
            "key": "k",
            "error_type": "TaskFailedError",
            "error_code": "DataInspectionFailed",
            "error_message": "refused",
            "task_id": "t-1",
            "worker": "h:1",
        }
    )
    assert not outcome.ok
    with pytest.raises(ds.RecordedFailureError) as caught:
        outcome.unwrap()
    assert (caught.value.error_type, caught.value.code) == (
        "TaskFailedError",
        "DataInspectionFailed",
    )


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="redelivery_after"):
        JobQueue("redis://127.0.0.1:1/0", redelivery_after=0)


@asynccontextmanager
async def worker(server: RedisServer, namespace: str, fake: FakeClient) -> AsyncIterator[Any]:
    limits = ds.Limits.default().with_model(MODEL, submit_rate=50)
    async with (
        RedisLimiter(server.url, namespace=namespace, limits=limits) as limiter,
        RedisJournal(server.url, namespace=namespace, claim_poll_interval=0.02) as journal,
    ):
        yield WorkerResources(client=fake.as_client(), limiter=limiter, journal=journal)


@pytest.mark.anyio
@pytest.mark.redis
async def test_a_job_delivered_to_two_workers_at_once_runs_once(server: RedisServer) -> None:
    namespace = f"queue-{uuid.uuid4().hex[:8]}"
    queue = JobQueue(
        server.url,
        namespace=namespace,
        poll=ds.PollPolicy(min_interval=0.01, run_time_priors={MODEL: 0.1}),
    )
    fake = FakeClient(run_seconds=0.2)
    document = encode_request(ds.StyleRepaint("https://e.com/a.jpg", style=ds.RepaintStyle.ANIME))
    answers: list[dict[str, Any]] = []
    async with worker(server, namespace, fake) as first, worker(server, namespace, fake) as second:

        async def deliver(resources: Any) -> None:
            answers.append(await queue.run_job(resources, "order-1", document))

        async with anyio.create_task_group() as group:
            group.start_soon(deliver, first)
            group.start_soon(deliver, second)
        # Delivered again later (the queue redelivers): the recorded outcome, no request.
        polls = fake.polls
        answers.append(await queue.run_job(first, "order-1", document))
        bad = await queue.run_job(second, "order-2", {"model": "nope"})
    assert len(fake.tasks) == 1
    assert fake.polls == polls
    outcomes = [_outcome_from_json(answer) for answer in answers]
    assert all(o.ok for o in outcomes)
    assert len({o.unwrap().task_id for o in outcomes}) == 1
    assert _outcome_from_json(bad).error_type == "ValidationError"
