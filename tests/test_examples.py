"""The examples run: the FastAPI app through httpx's ASGI transport, the bot, the bulk script.

Each example takes its client from the caller, so here it gets a stand-in service on the test's
virtual clock: jobs that take seconds on the service take no real time, and the checks can look
at what the service saw (tasks in progress, submissions) as well as at what the example answered.
"""

from __future__ import annotations

import asyncio
import csv
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import dashscope_async as ds
from examples import bot as bot_example
from examples import bulk as bulk_example
from examples import fastapi_app
from tests.fake_service import FakeClient
from tests.images_util import make_image
from tests.virtual_time import VirtualTimeEventLoop

pytestmark = pytest.mark.timeout(30)

PORTRAIT = "https://images.example/portrait.jpg"
SKETCH = "https://images.example/tree.png"
PNG = make_image("PNG", 16, 16)


@pytest.fixture
def anyio_backend(virtual_anyio_backend: tuple[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    return virtual_anyio_backend


def _serve_png(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=PNG, headers={"content-type": "image/png"})


@pytest.fixture
async def service() -> AsyncIterator[FakeClient]:
    """The service: tasks run 1 s (virtual), results are served as PNGs with no sockets."""
    fake = FakeClient(run_seconds=1.0)
    async with httpx.AsyncClient(transport=httpx.MockTransport(_serve_png)) as http:
        fake.http = http  # type: ignore[assignment]
        yield fake


def peak_in_progress(fake: FakeClient, model: str) -> int:
    """The most tasks of ``model`` the service ever had in progress at once."""
    starts = [task.created for task in fake.tasks.values() if task.request.model == model]
    return max((fake.in_progress(model, at) for at in starts), default=0)


@asynccontextmanager
async def app_client(fake: FakeClient, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    @asynccontextmanager
    async def connect() -> AsyncIterator[ds.AsyncDashScope]:
        yield fake.as_client()

    app = fastapi_app.create_app(lambda: connect(), **options)  # type: ignore[arg-type, return-value]
    # httpx's ASGI transport does not run the lifespan; enter it as the server would.
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            yield http


# --- FastAPI ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_fastapi_concurrent_requests_share_one_runner_and_keep_the_limit(
    service: FakeClient,
) -> None:
    async with app_client(service) as http:
        responses: list[httpx.Response] = []

        async def call(style: str) -> None:
            body = {"image_url": PORTRAIT, "style": style}
            responses.append(await http.post("/repaint", json=body))

        async with anyio.create_task_group() as group:
            for style in ("anime", "clay_world", "2", "pixel_world"):
                group.start_soon(call, style)

    assert [r.status_code for r in responses] == [200] * 4
    task_ids = {r.json()["task_id"] for r in responses}
    assert len(task_ids) == 4
    assert all(r.json()["image_urls"] for r in responses)
    # Four requests at once, one account: never more than one task in progress.
    assert peak_in_progress(service, ds.STYLE_REPAINT.name) == 1


@pytest.mark.anyio
async def test_fastapi_bad_input_is_a_422_and_sends_nothing(service: FakeClient) -> None:
    async with app_client(service) as http:
        bad_style = await http.post("/repaint", json={"image_url": PORTRAIT, "style": "nope"})
        bad_n = await http.post("/sketch", json={"sketch_url": SKETCH, "prompt": "a tree", "n": 9})
    assert bad_style.status_code == 422
    assert "style" in bad_style.json()["detail"]
    assert bad_n.status_code == 422
    assert service.submit_times == []


@pytest.mark.anyio
async def test_fastapi_failed_task_answers_with_its_code(service: FakeClient) -> None:
    service.failing_prompts.add("a broken tree")
    async with app_client(service) as http:
        failed = await http.post("/sketch", json={"sketch_url": SKETCH, "prompt": "a broken tree"})
        good = await http.post("/sketch", json={"sketch_url": SKETCH, "prompt": "a tree", "n": 2})
    assert failed.status_code == 422
    assert "InternalError.Algo" in failed.json()["detail"]
    assert good.status_code == 200


@pytest.mark.anyio
async def test_fastapi_over_budget_is_a_402(service: FakeClient) -> None:
    async with app_client(service, budget=ds.Budget(images=1)) as http:
        first = await http.post("/repaint", json={"image_url": PORTRAIT, "style": "anime"})
        second = await http.post("/repaint", json={"image_url": PORTRAIT, "style": "anime"})
    assert (first.status_code, second.status_code) == (200, 402)
    assert len(service.submit_times) == 1


# --- the bot ----------------------------------------------------------------------------------


def test_bot_gives_every_user_a_fair_turn_and_progress() -> None:
    # The bot is plain asyncio, as bot frameworks are: run it on a virtual-time asyncio loop.
    sent: list[tuple[str, str]] = []

    async def send(user: str, text: str) -> None:
        sent.append((user, text))

    async def scenario() -> FakeClient:
        service = FakeClient(run_seconds=15.0)
        async with ds.AsyncTaskRunner(service.as_client()) as runner:
            bot = bot_example.Bot(runner, send, in_flight=1)
            serving = asyncio.ensure_future(bot.serve())
            for _ in range(4):
                await bot.handle("ann", ds.StyleRepaint(PORTRAIT, style=ds.RepaintStyle.ANIME))
            await bot.handle("bob", ds.StyleRepaint(PORTRAIT, style=ds.RepaintStyle.CLAY_WORLD))
            await bot.handle("cy", ds.StyleRepaint(PORTRAIT, style=ds.RepaintStyle.PIXEL_WORLD))
            async with asyncio.timeout(600):
                await bot.drained()
            serving.cancel()
            with pytest.raises(asyncio.CancelledError):
                await serving
        return service

    with asyncio.Runner(loop_factory=VirtualTimeEventLoop) as runner:
        service = runner.run(scenario())

    done = [(user, text) for user, text in sent if "done!" in text]
    assert len(done) == 6
    # Bob and Cy, who each sent one photo after Ann's four, wait for one of hers, not four.
    order = [user for user, _ in done]
    assert order[:3] == ["ann", "bob", "cy"]
    assert order.count("ann") == 4
    for user, photos in (("ann", 4), ("bob", 1), ("cy", 1)):
        own = [text for who, text in sent if who == user]
        for number in range(1, photos + 1):
            steps = [text for text in own if text.startswith(f"Photo {number}:")]
            kinds = [step.split(": ", 1)[1].split(" ")[0] for step in steps]
            # Each photo's messages arrive in order: queued, started, painting, done.
            assert kinds == ["queued,", "started.", "painting...", "done!"], steps
    assert peak_in_progress(service, ds.STYLE_REPAINT.name) == 1


def test_fair_queue_hands_out_round_robin() -> None:
    async def scenario() -> list[str]:
        queue = bot_example.FairQueue()
        request = ds.StyleRepaint(PORTRAIT, style=ds.RepaintStyle.ANIME)
        for user, count in (("ann", 3), ("bob", 2), ("cy", 1)):
            for number in range(1, count + 1):
                await queue.put(bot_example.PhotoRequest(user, number, request))
        assert queue.ahead_of("cy") == 2
        return [(await queue.get()).key for _ in range(6)]

    assert asyncio.run(scenario()) == ["ann#1", "bob#1", "cy#1", "ann#2", "bob#2", "ann#3"]


# --- the bulk script --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_bulk_keeps_input_order_stops_at_the_cap_and_saves_images(
    service: FakeClient, tmp_path: Path
) -> None:
    sources = [f"https://images.example/person-{i}.jpg" for i in range(5)]
    # Three repaints fit in CNY 0.36 at CNY 0.12 each; the other two are never submitted.
    summary = await bulk_example.repaint_all(
        service.as_client(),
        sources,
        style=ds.RepaintStyle.ANIME,
        out=tmp_path,
        budget_cny=Decimal("0.36"),
    )

    assert (summary.succeeded, summary.failed, summary.over_budget) == (3, 0, 2)
    assert summary.spent_cny == Decimal("0.36")
    assert len(service.submit_times) == 3
    assert [row["index"] for row in summary.rows] == ["0", "1", "2", "3", "4"]
    assert [row["key"] for row in summary.rows][:2] == ["00000-person-0", "00001-person-1"]
    statuses = [row["status"] for row in summary.rows]
    assert statuses.count("ok") == 3 and statuses.count("over budget") == 2
    for row in summary.rows:
        if row["status"] == "ok":
            (saved,) = row["files"].split()
            assert await anyio.Path(saved).read_bytes() == PNG
            assert Path(saved).name.startswith(row["key"])
    report = await anyio.Path(tmp_path / "report.csv").read_text(encoding="utf-8")
    assert list(csv.DictReader(report.splitlines())) == list(summary.rows)


def test_bulk_jobs_are_keyed_by_file_name_and_pulled_lazily() -> None:
    sources = iter(["https://x.example/a/ann.jpg?sig=1", "photos/bob.png", "https://x.example/"])
    jobs = bulk_example.jobs_from(sources, ds.RepaintStyle.ANIME)
    first = next(jobs)
    assert first.key == "00000-ann"
    assert next(sources) == "photos/bob.png"  # the generator has not read ahead
    assert next(jobs).key == "00001-x"  # a bare host: its name, without the "extension"


# --- the API reference ------------------------------------------------------------------------


def test_api_reference_documents_every_public_name() -> None:
    reference = (Path(__file__).parents[1] / "docs" / "reference" / "api.md").read_text("utf-8")
    documented = {
        line.removeprefix("::: dashscope_async.").strip()
        for line in reference.splitlines()
        if line.startswith("::: dashscope_async.")
    }
    assert set(ds.__all__) - documented == set()
