"""Local files in and images out, end to end over loopback: the client against the emulator's
API, upload and result hosts, each on its own port.

Each test serves a fresh emulator (tasks 100 times faster than the service), so its records
(requests per route, uploads, downloads, credential leaks) belong to that test alone. The server
runs in its own thread, so the tests themselves run on asyncio and trio.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from PIL import Image

from dashscope_async._client import AsyncDashScope
from dashscope_async._errors import ResultExpiredError, ValidationError
from dashscope_async._models import SketchToImage, StyleRepaint, TaskResult
from dashscope_async._wire import RepaintBody
from dashscope_async.testing import Emulator, EmulatorConfig, RunningServer
from tests.images_util import make_image

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

REPAINT = "wanx-style-repaint-v1"

Serve = Callable[..., AbstractAsyncContextManager[tuple[RunningServer, AsyncDashScope]]]


@pytest.fixture
def served() -> Serve:
    """Serve an emulator (``EmulatorConfig`` overrides as keywords) and give a client for it.

    The client sends a workspace header too, so a leak of either credential would show.
    """

    @asynccontextmanager
    async def serve(**overrides: Any) -> AsyncIterator[tuple[RunningServer, AsyncDashScope]]:
        emulator = Emulator(EmulatorConfig(time_scale=0.01, seed=5), **overrides)
        async with (
            emulator.serve() as server,
            AsyncDashScope(
                api_key=server.api_key, base_url=server.base_url, workspace="ws-e2e"
            ) as client,
        ):
            yield server, client

    return serve


async def generate(client: AsyncDashScope, request: StyleRepaint | SketchToImage) -> TaskResult:
    """Submit and wait, polling often: the tasks take about 0.2 s here."""
    task = await client.submit(request)
    return await client.wait(task.task_id, poll_interval=0.05)


def image_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


# --- a local file in --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_local_file_is_uploaded_and_the_task_sees_it(served: Serve, tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(make_image("JPEG", 400, 500))
    async with served() as (server, client):
        result = await generate(client, StyleRepaint(photo, style=2))
        emulator = server.emulator
        task = emulator.task(result.task_id)
        assert isinstance(task.body, RepaintBody)
        image_url = task.body.input.image_url
        assert image_url.startswith("oss://")
        assert task.oss_resolve  # the submit carried X-DashScope-OssResourceResolve: enable
        assert emulator.stored_object(image_url) == photo.read_bytes()
        assert task.failure is None  # the service fetched the upload and found it a fine image
        # The repaint is drawn from the input: its 4:5 shape, short side 1536.
        async with httpx.AsyncClient() as raw:
            drawn = (await raw.get(result.images[0].url)).content
        assert image_size(drawn) == (1536, 1920)
        assert emulator.stats.uploads == 1
        assert emulator.stats.requests["upload_policy"] == 1
        assert emulator.stats.credential_leaks == []


@pytest.mark.anyio
async def test_two_files_with_the_same_name_are_two_objects(served: Serve, tmp_path: Path) -> None:
    photo_a, photo_b = tmp_path / "a" / "photo.jpg", tmp_path / "b" / "photo.jpg"
    for side, photo in enumerate((photo_a, photo_b)):
        photo.parent.mkdir()
        photo.write_bytes(make_image("JPEG", 400 + side, 500))
    async with served() as (server, client):
        first = await client.submit(StyleRepaint(photo_a, style=2))
        second = await client.submit(StyleRepaint(str(photo_b), style_ref=photo_a))
        emulator = server.emulator
        body_a, body_b = emulator.task(first.task_id).body, emulator.task(second.task_id).body
        assert isinstance(body_a, RepaintBody) and isinstance(body_b, RepaintBody)
        key_a, key_b = body_a.input.image_url, body_b.input.image_url
        assert key_a != key_b  # same file name, two keys: nothing overwritten
        assert emulator.stored_object(key_a) == photo_a.read_bytes()
        assert emulator.stored_object(key_b) == photo_b.read_bytes()
        assert body_b.input.style_ref_url == key_a  # the same bytes again: the upload is reused
        assert emulator.stats.uploads == 2
        assert emulator.stats.requests["upload_policy"] == 1  # the policy is cached per model
        await client.wait(second.task_id, poll_interval=0.05)
        assert emulator.task(second.task_id).failure is None
        assert emulator.stats.credential_leaks == []


# --- rejected before anything is sent ---------------------------------------------------------

#: (case, model, field, image (format, width, height), what the error says)
INVALID = [
    ("repaint-format", "repaint", "image", ("TIFF", 512, 512), "is TIFF"),
    ("sketch-format", "sketch", "sketch", ("BMP", 512, 512), "is BMP"),
    ("style-ref-format", "repaint", "style_ref", ("GIF", 512, 512), "is GIF"),
    ("too-small", "repaint", "image", ("PNG", 255, 400), "at least 256"),
    ("repaint-too-large", "repaint", "image", ("PNG", 3300, 3300), "at most 5760x3240"),
    ("sketch-too-large", "sketch", "sketch", ("PNG", 2100, 1500), "at most 2048x2048"),
    ("aspect", "repaint", "image", ("PNG", 1100, 520), "2.12:1"),
]


def request_for(model: str, field: str, path: Path, good: Path) -> StyleRepaint | SketchToImage:
    if model == "sketch":
        return SketchToImage(path, prompt="a towering tree")
    if field == "style_ref":
        return StyleRepaint(good, style_ref=path)
    return StyleRepaint(path, style=2)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("model", "field", "image", "fragment"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
async def test_a_rejected_file_sends_no_request(
    served: Serve,
    tmp_path: Path,
    model: str,
    field: str,
    image: tuple[str, int, int],
    fragment: str,
) -> None:
    good = tmp_path / "good.png"
    good.write_bytes(make_image("PNG", 512, 512))
    bad = tmp_path / "bad-input.img"
    bad.write_bytes(make_image(*image))
    async with served() as (server, client):
        with pytest.raises(ValidationError) as caught:
            await client.submit(request_for(model, field, bad, good))
        assert caught.value.field == field
        assert str(bad) in caught.value.rule and fragment in caught.value.rule
        # Not even the upload policy (a credentialed call) was asked for.
        assert server.emulator.stats.requests == {}


@pytest.mark.anyio
async def test_a_file_over_10_mb_and_a_non_image_send_no_request(
    served: Serve, tmp_path: Path
) -> None:
    huge, text = tmp_path / "huge.png", tmp_path / "notes.png"
    with huge.open("wb") as file:
        file.write(make_image("PNG", 512, 512))
        file.truncate(11 * 1024 * 1024)
    text.write_text("not a picture\n")
    async with served() as (server, client):
        with pytest.raises(ValidationError, match=r"huge\.png: is 11,534,336 bytes"):
            await client.submit(SketchToImage(huge, prompt="a towering tree"))
        with pytest.raises(ValidationError, match=r"notes\.png: is not an image"):
            await client.submit(StyleRepaint(text, style=2))
        with pytest.raises(ValidationError, match="no such file"):
            await client.submit(StyleRepaint(tmp_path / "missing.jpg", style=2))
        assert server.emulator.stats.requests == {}


# --- images out -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_downloads_equal_what_the_result_host_serves(served: Serve, tmp_path: Path) -> None:
    sketch = tmp_path / "tree.png"
    sketch.write_bytes(make_image("PNG", 512, 512))
    async with served() as (server, client):
        result = await generate(client, SketchToImage(sketch, prompt="a towering tree", n=2))
        saved = [
            await client.download(image, tmp_path / "out" / f"tree-{image.index}")
            for image in result.images
        ]
        assert [path.name for path in saved] == ["tree-0.png", "tree-1.png"]
        async with httpx.AsyncClient() as raw:
            for image, path in zip(result.images, saved, strict=True):
                served_bytes = (await raw.get(image.url)).content
                assert await anyio.Path(path).read_bytes() == served_bytes
        assert image_size(served_bytes) == (768, 768)
        assert server.emulator.stats.downloads == 4  # two by the client, two raw
        # Only the finished files: no temporary file left beside them.
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["tree-0.png", "tree-1.png"]
        assert server.emulator.stats.credential_leaks == []


@pytest.mark.anyio
async def test_a_result_url_the_host_calls_expired_is_result_expired(
    served: Serve, tmp_path: Path
) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(make_image("PNG", 512, 512))
    # URLs expire as their task ends: the result host answers 403 AccessDenied, as OSS does.
    async with served(result_url_lifetime=0.0) as (server, client):
        result = await generate(client, StyleRepaint(photo, style=2))
        with pytest.raises(ResultExpiredError, match="HTTP 403") as caught:
            await client.download(result.images[0], tmp_path / "out" / "late.png")
        assert caught.value.url == result.images[0].url.split("?", 1)[0]
        assert server.emulator.stats.requests["result"] == 1
        assert server.emulator.stats.downloads == 0
        assert list((tmp_path / "out").iterdir()) == []  # no partial file left behind
        assert server.emulator.stats.credential_leaks == []


@pytest.mark.anyio
async def test_a_result_url_long_past_its_expiry_is_refused_without_a_request(
    served: Serve, tmp_path: Path
) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(make_image("PNG", 512, 512))
    # The service's clock two days back: its 24-hour URLs expired a day ago by our clock.
    two_days_ago = datetime.now(UTC) - timedelta(days=2)
    async with served(wall_start=two_days_ago) as (server, client):
        result = await generate(client, StyleRepaint(photo, style=2))
        with pytest.raises(ResultExpiredError, match="24 hours"):
            await client.download(result.images[0], tmp_path / "old.png")
        assert server.emulator.stats.requests["result"] == 0
        assert server.emulator.stats.credential_leaks == []


@pytest.fixture(autouse=True)
def _no_stray_files(tmp_path: Path) -> Iterator[None]:
    yield
    assert not list(tmp_path.rglob(".*.part"))
