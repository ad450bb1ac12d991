"""The examples run against the emulator: the FastAPI app through httpx's ASGI transport, the
bot, the bulk script.

Each example takes its client from the caller, so here it gets ``Emulator.client()``: the
emulator in-process on the test's virtual clock, where a 15-second repaint takes no real time.
The checks look at what the emulator saw (tasks in progress, submissions, uploads, downloads) as
well as at what the example answered. One test runs the FastAPI app's own emulator mode, served
on loopback.
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
from fastapi import FastAPI

import dashscope_async as ds
from dashscope_async._wire import RepaintBody
from dashscope_async.testing import Emulator, EmulatorConfig
from examples import bot as bot_example
from examples import bulk as bulk_example
from examples import fastapi_app
from tests.images_util import make_image
from tests.virtual_time import VirtualTimeEventLoop

pytestmark = pytest.mark.timeout(30)

REPAINT = ds.STYLE_REPAINT.name
SKETCH = ds.SKETCH_TO_IMAGE.name


@pytest.fixture
def anyio_backend(virtual_anyio_backend: tuple[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    return virtual_anyio_backend


@pytest.fixture
def emulator() -> Emulator:
    """The service in-process, at its own pace (virtual time makes that free)."""
    return Emulator(EmulatorConfig(seed=3))


@asynccontextmanager
async def app_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    # httpx's ASGI transport does not run the lifespan; enter it as the server would.
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            yield http


def emulated_app(emulator: Emulator, **options: Any) -> FastAPI:
    return fastapi_app.create_app(lambda: emulator.client(allow_local_files=False), **options)


# --- FastAPI ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_fastapi_concurrent_requests_share_one_runner_and_keep_the_limit(
    emulator: Emulator,
) -> None:
    portrait = emulator.sample_image_url("portrait")
    async with app_client(emulated_app(emulator)) as http:
        responses: list[httpx.Response] = []

        async def call(style: str) -> None:
            body = {"image_url": portrait, "style": style}
            responses.append(await http.post("/repaint", json=body))

        async with anyio.create_task_group() as group:
            for style in ("anime", "clay_world", "2", "pixel_world"):
                group.start_soon(call, style)

    assert [r.status_code for r in responses] == [200] * 4
    task_ids = {r.json()["task_id"] for r in responses}
    assert task_ids == set(emulator.tasks)
    assert all(emulator.status(task_id) is ds.TaskStatus.SUCCEEDED for task_id in task_ids)
    assert all(len(r.json()["image_urls"]) == 1 for r in responses)
    stats = emulator.stats
    # Four requests at once, one account: one task in progress, at most 2 submits a second,
    # so the service never had to queue or throttle anything.
    assert stats.peak_in_progress[REPAINT] == 1
    assert stats.max_submits_in_any_window(REPAINT, 1.0) <= 2
    assert stats.throttled == 0


@pytest.mark.anyio
async def test_fastapi_bad_input_is_a_422_and_sends_nothing(emulator: Emulator) -> None:
    sketch = emulator.sample_image_url("sketch")
    async with app_client(emulated_app(emulator)) as http:
        bad_style = await http.post(
            "/repaint", json={"image_url": emulator.sample_image_url(), "style": "nope"}
        )
        bad_n = await http.post("/sketch", json={"sketch_url": sketch, "prompt": "a tree", "n": 9})
        # A path would have the server read and upload its own file: refused, and with the
        # same answer whether the file exists or not (no probing of the server's disk).
        answers = [
            await http.post("/repaint", json={"image_url": path})
            for path in ("/etc/hostname", "/no/such/file.png", "file:///etc/hostname")
        ]
    assert bad_style.status_code == 422
    assert "style" in bad_style.json()["detail"]
    assert bad_n.status_code == 422
    assert [answer.status_code for answer in answers] == [422] * 3
    details = {answer.json()["detail"] for answer in answers}
    assert len(details) == 1 and "local paths and file:// URLs are refused" in details.pop()
    assert emulator.stats.requests == {}


@pytest.mark.anyio
async def test_fastapi_app_refuses_a_client_that_reads_local_files(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = fastapi_app.create_app(emulator.client)
    with pytest.raises(RuntimeError, match="allow_local_files=False"):
        async with app_client(app):
            pass
    monkeypatch.setenv("DASHSCOPE_API_KEY", emulator.api_key)
    async with fastapi_app.untrusted_input_client() as default:
        assert default.allow_local_files is False


@pytest.mark.anyio
async def test_fastapi_failed_task_answers_with_its_code(emulator: Emulator) -> None:
    sketch = emulator.sample_image_url("sketch")
    emulator.faults.fail_tasks(code="InternalError.Algo")  # the next task fails
    async with app_client(emulated_app(emulator)) as http:
        failed = await http.post("/sketch", json={"sketch_url": sketch, "prompt": "a broken tree"})
        good = await http.post("/sketch", json={"sketch_url": sketch, "prompt": "a tree", "n": 2})
    assert failed.status_code == 422
    assert "InternalError.Algo" in failed.json()["detail"]
    assert good.status_code == 200
    assert len(good.json()["image_urls"]) == 2
    assert emulator.stats.submissions[SKETCH] == 2


@pytest.mark.anyio
async def test_fastapi_over_budget_is_a_402(emulator: Emulator) -> None:
    body = {"image_url": emulator.sample_image_url(), "style": "anime"}
    async with app_client(emulated_app(emulator, budget=ds.Budget(images=1))) as http:
        first = await http.post("/repaint", json=body)
        second = await http.post("/repaint", json=body)
    assert (first.status_code, second.status_code) == (200, 402)
    assert emulator.stats.submissions[REPAINT] == 1


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # real time: FastAPI apps run on asyncio
async def test_fastapi_emulator_mode_serves_the_emulator_for_the_apps_lifetime(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The emulator mode as ``uvicorn examples.fastapi_app:emulated_app`` runs it, only faster.
    monkeypatch.setattr("examples._emulated.TIME_SCALE", 0.005)
    app = fastapi_app.create_app(fastapi_app.connect_to_emulator)
    async with app_client(app) as http:
        ready = capsys.readouterr().err
        sample = ready.split("image_url=", 1)[1].split(",", 1)[0]
        answer = await http.post("/repaint", json={"image_url": sample, "style": "anime"})
        assert answer.status_code == 200, answer.text
        async with httpx.AsyncClient() as raw:
            image = await raw.get(answer.json()["image_urls"][0])
        assert image.headers["content-type"] == "image/png"
    # Leaving the lifespan stopped the emulator's server.
    async with httpx.AsyncClient() as raw:
        with pytest.raises(httpx.ConnectError):
            await raw.get(sample)


# --- the bot ----------------------------------------------------------------------------------


def test_bot_gives_every_user_a_fair_turn_and_progress() -> None:
    # The bot is plain asyncio, as bot frameworks are: run it on a virtual-time asyncio loop.
    sent: list[tuple[str, str]] = []
    emulator = Emulator(EmulatorConfig(seed=4))
    portrait = emulator.sample_image_url("portrait")

    async def send(user: str, text: str) -> None:
        sent.append((user, text))

    async def scenario() -> None:
        # Users choose the inputs: the bot's client reads no local file.
        async with ds.AsyncTaskRunner(emulator.client(allow_local_files=False)) as runner:
            bot = bot_example.Bot(runner, send, in_flight=1)
            serving = asyncio.ensure_future(bot.serve())
            for _ in range(4):
                await bot.handle("ann", ds.StyleRepaint(portrait, style=ds.RepaintStyle.ANIME))
            await bot.handle("bob", ds.StyleRepaint(portrait, style=ds.RepaintStyle.CLAY_WORLD))
            await bot.handle("cy", ds.StyleRepaint(portrait, style=ds.RepaintStyle.PIXEL_WORLD))
            await bot.handle("eve", ds.StyleRepaint("/etc/hostname", style="anime"))
            async with asyncio.timeout(600):
                await bot.drained()
            serving.cancel()
            with pytest.raises(asyncio.CancelledError):
                await serving

    with asyncio.Runner(loop_factory=VirtualTimeEventLoop) as runner:
        runner.run(scenario())

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
    # The order the emulator saw matches the order the users were answered.
    bodies = [task.body for task in emulator.tasks.values()]
    styles = [body.input.style_index for body in bodies if isinstance(body, RepaintBody)]
    assert styles[:3] == [
        ds.RepaintStyle.ANIME,
        ds.RepaintStyle.CLAY_WORLD,
        ds.RepaintStyle.PIXEL_WORLD,
    ]
    assert emulator.stats.peak_in_progress[REPAINT] == 1
    # A path in a message is refused, never read: eve is told, and nothing was sent for her.
    (refusal,) = [text for user, text in sent if user == "eve" and "will not work" in text]
    assert "local paths and file:// URLs are refused" in refusal
    assert len(emulator.tasks) == 6


def test_fair_queue_hands_out_round_robin() -> None:
    async def scenario() -> list[str]:
        queue = bot_example.FairQueue()
        request = ds.StyleRepaint("https://images.example/me.jpg", style=ds.RepaintStyle.ANIME)
        for user, count in (("ann", 3), ("bob", 2), ("cy", 1)):
            for number in range(1, count + 1):
                await queue.put(bot_example.PhotoRequest(user, number, request))
        assert queue.ahead_of("cy") == 2
        return [(await queue.get()).key for _ in range(6)]

    assert asyncio.run(scenario()) == ["ann#1", "bob#1", "cy#1", "ann#2", "bob#2", "ann#3"]


# --- the bulk script --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_bulk_keeps_input_order_stops_at_the_cap_and_saves_images(
    tmp_path: Path,
) -> None:
    emulator = Emulator(EmulatorConfig(seed=5, render_results=False))
    photos = tmp_path / "photos"
    photos.mkdir()
    sources = []
    for i in range(5):
        photo = photos / f"person-{i}.jpg"
        photo.write_bytes(make_image("JPEG", 512 + i, 640))
        sources.append(str(photo))
    # Three repaints fit in CNY 0.36 at CNY 0.12 each; the other two are never submitted.
    summary = await bulk_example.repaint_all(
        emulator.client(),
        sources,
        style=ds.RepaintStyle.ANIME,
        out=tmp_path / "out",
        budget_cny=Decimal("0.36"),
    )

    assert (summary.succeeded, summary.failed, summary.over_budget) == (3, 0, 2)
    assert summary.spent_cny == Decimal("0.36")
    stats = emulator.stats
    assert stats.submissions[REPAINT] == 3
    assert stats.downloads == 3
    assert stats.credential_leaks == []
    assert [row["index"] for row in summary.rows] == ["0", "1", "2", "3", "4"]
    assert [row["key"] for row in summary.rows][:2] == ["00000-person-0", "00001-person-1"]
    statuses = [row["status"] for row in summary.rows]
    assert statuses.count("ok") == 3 and statuses.count("over budget") == 2
    async with httpx.AsyncClient(transport=emulator.transport()) as raw:
        for row in summary.rows:
            if row["status"] != "ok":
                continue
            (saved,) = row["files"].split()
            assert Path(saved).name.startswith(row["key"])
            task = emulator.task(row["task_id"])
            # Each job's own photo went into its task, and its file is that task's image.
            sent = await anyio.Path(sources[int(row["index"])]).read_bytes()
            assert isinstance(task.body, RepaintBody)
            assert emulator.stored_object(task.body.input.image_url) == sent
            info = await emulator.client().get_task(row["task_id"])
            served = (await raw.get(info.images[0].url)).content
            assert await anyio.Path(saved).read_bytes() == served
    report = await anyio.Path(tmp_path / "out" / "report.csv").read_text(encoding="utf-8")
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
